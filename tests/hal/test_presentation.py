"""Folding repeated card sightings into presentations (pure, explicit times)."""
import pytest
from hypothesis import given, strategies as st

from hal.rfid.presentation import PresentationFilter


def test_card_held_in_the_field_is_one_presentation():
    f = PresentationFilter(removal_s=0.5)
    sightings = [f.seen("67003B51C6", t / 10) for t in range(0, 50)]   # 5 s, every 100 ms
    assert sightings[0] is True
    assert not any(sightings[1:])


def test_card_counts_again_only_after_being_absent_for_removal_s():
    f = PresentationFilter(removal_s=0.5)
    assert f.seen("AA", 0.0)
    assert not f.seen("AA", 0.375)       # gaps shorter than removal_s: the same presentation
    assert not f.seen("AA", 0.75)
    assert f.seen("AA", 1.25)            # absent exactly removal_s: a new presentation
    assert not f.seen("AA", 1.5)


def test_cards_are_tracked_separately():
    f = PresentationFilter(removal_s=0.5)
    assert f.seen("AA", 0.0)
    assert f.seen("BB", 0.1)
    assert not f.seen("AA", 0.2)         # two cards alternating do not retrigger
    assert not f.seen("BB", 0.3)
    assert f.present(0.3) == ["AA", "BB"]
    assert f.present(0.75) == ["BB"]
    assert f.present(0.8) == []


def test_removal_must_be_positive():
    with pytest.raises(ValueError):
        PresentationFilter(0)


@given(st.lists(st.floats(min_value=0, max_value=0.49), min_size=1, max_size=50))
def test_gaps_shorter_than_removal_never_make_a_second_presentation(gaps):
    f = PresentationFilter(removal_s=0.5)
    now = 0.0
    assert f.seen("CARD", now)
    for gap in gaps:
        now += gap
        assert not f.seen("CARD", now)


@given(st.lists(st.floats(min_value=0, max_value=2), min_size=1, max_size=50))
def test_a_presentation_starts_exactly_when_the_gap_reaches_removal_s(gaps):
    f = PresentationFilter(removal_s=0.5)
    now = 0.0
    f.seen("CARD", now)
    for gap in gaps:
        now_next = now + gap
        assert f.seen("CARD", now_next) == (now_next - now >= 0.5)
        now = now_next
