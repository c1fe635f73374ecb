"""The hold-time debouncer, sample by sample and against a brute-force model."""
import pytest
from hypothesis import given, settings, strategies as st

from hal.debounce import Debouncer


def test_first_sample_is_adopted_without_initial():
    db = Debouncer(0.25)
    assert not db.has_value
    with pytest.raises(LookupError):
        db.value
    assert db.changed("A", 0.0)
    assert db.value == "A"


def test_change_needs_the_hold_time():
    db = Debouncer(0.25, initial="A")
    assert db.update("B", 1.0) is None
    assert db.update("B", 1.2) is None
    assert db.update("B", 1.249) is None
    assert db.update("B", 1.25) == "B"
    assert db.value == "B"
    assert db.update("B", 2.0) is None       # no repeated report


def test_glitch_shorter_than_hold_is_ignored():
    db = Debouncer(0.25, initial="A")
    db.update("B", 0.0)
    db.update("B", 0.2)
    assert db.update("A", 0.21) is None      # back to stable cancels
    assert db.update("B", 0.3) is None       # restarts the hold
    assert db.update("B", 0.54) is None
    assert db.update("B", 0.55) == "B"


def test_another_value_restarts_the_hold():
    db = Debouncer(0.25, initial="A")
    db.update("B", 0.0)
    db.update("C", 0.2)
    assert db.update("C", 0.4) is None       # C since 0.2 only
    assert db.update("C", 0.45) == "C"


def test_asymmetric_hold_per_target():
    db = Debouncer(0.25, {"A": 0.025}, initial="C")
    db.update("A", 0.0)
    assert db.update("A", 0.025) == "A"
    db.update("C", 0.1)
    assert db.update("C", 0.2) is None
    assert db.update("C", 0.36) == "C"


def test_leaving_a_value_can_be_quicker():
    db = Debouncer(0.25, {"A": 0.025}, initial="C", hold_from={"C": 0.04})
    db.update("B", 0.0)
    assert db.update("B", 0.03) is None
    assert db.update("B", 0.04) == "B"               # C -> B: 40 ms, not 250
    db.update("C", 0.1)
    assert db.update("C", 0.2) is None               # B -> C: the full 250 ms
    assert db.update("C", 0.35) == "C"
    db.update("A", 0.4)
    assert db.update("A", 0.425) == "A"              # the shorter of the two applies


def test_none_can_be_a_debounced_value():
    db = Debouncer(0.1, initial="A")
    assert not db.changed(None, 0.0)
    assert db.changed(None, 0.1)
    assert db.value is None


def test_reset_drops_pending_change():
    db = Debouncer(0.1, initial="A")
    db.update("B", 0.0)
    db.reset("A")
    assert db.update("B", 0.1) is None


def test_negative_hold_rejected():
    with pytest.raises(ValueError):
        Debouncer(-1)
    with pytest.raises(ValueError):
        Debouncer(0.1, {"A": -0.1})


def _model(samples, hold, hold_to, hold_from, initial):
    """Brute force: at each sample, look back over the run of equal samples."""
    stable = initial
    out = []
    for i, (t, v) in enumerate(samples):
        j = i
        while j > 0 and samples[j - 1][1] == v:
            j -= 1
        reported = False
        needed = min(hold_to.get(v, hold), hold_from.get(stable, hold_to.get(v, hold)))
        if v != stable and t - samples[j][0] >= needed:
            stable = v
            reported = True
        out.append((reported, stable))
    return out


@settings(max_examples=300, deadline=None)
@given(steps=st.lists(st.tuples(st.integers(0, 120), st.sampled_from("ABC")), max_size=60),
       hold=st.integers(0, 300), hold_a=st.integers(0, 300), from_c=st.integers(0, 300))
def test_matches_brute_force_model(steps, hold, hold_a, from_c):
    t = 0
    samples = []
    for dt, v in steps:
        t += dt
        samples.append((t, v))
    db = Debouncer(hold, {"A": hold_a}, initial="A", hold_from={"C": from_c})
    got = [(db.changed(v, t), db.value) for t, v in samples]
    assert got == _model(samples, hold, {"A": hold_a}, {"C": from_c}, "A")


@settings(max_examples=200, deadline=None)
@given(glitch=st.lists(st.integers(1, 249), min_size=1, max_size=20))
def test_glitches_shorter_than_hold_never_report(glitch):
    """Runs of B each shorter than the hold, separated by A, never change the value."""
    db = Debouncer(250, initial="A")
    t = 0
    for length in glitch:
        for dt in range(0, length, 10):
            assert not db.changed("B", t + dt)
        t += length
        assert not db.changed("A", t)
        t += 1
    assert db.value == "A"
