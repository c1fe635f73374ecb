"""Torture, reduced: the benchmarks bench/torture_link.py and bench/fuzz_frames.py in a
few seconds each, asserting what their full runs report (docs/performance.md, "Torture").

- Link drops: the bundled CSMS restarted or the connection aborted 5 times while the
  real firmware runs sessions on 2 connectors: no transaction message lost or reordered,
  a repeat only of the message in flight at a drop, the energy billed, no process death,
  every CSMS CALL answered unless a drop cut it.
- Frames: 2,000 random and mutated frames from the CSMS side over a real WebSocket: every
  well-formed CALL answered exactly once with its id, nothing else answered, the process
  alive, the link up unless a frame had to end it, a session and a heartbeat afterwards.

The seeds are random and printed (fixed under CI: tests/seeds.py); TORTURE_SEED=<n>
repeats one. The frames that broke
something, and the firmware's logs, stay in the test's tmp_path. The tests at the bottom
are the frames the fuzzing found answered wrongly or not at all, each as it was fixed.
"""
from __future__ import annotations

import json

import pytest

from bench.fuzz_frames import fuzz
from bench.torture_link import torture
from chargepoint.protocol import ocppj
from tests.seeds import seed

SEED = seed("TORTURE_SEED")


@pytest.mark.timeout(120)
def test_link_drops_lose_nothing_reorder_nothing_repeat_only_in_flight_messages(tmp_path):
    print(f"link torture: seed {SEED} (TORTURE_SEED={SEED} to repeat)")
    res = torture(sessions=6, seed=SEED, workdir=tmp_path, connectors=2, up_min=0.4,
                  up_max=1.2, down_max=0.3, max_drops=5, min_drops=5)
    print(res.report())
    assert res.ok, (f"seed {SEED}: {res.report()}\n" + "\n".join(res.problems[:20])
                    + f"\nlogs in {tmp_path}")
    assert res.drops == 5 and res.deaths == 0 and res.exit_code == 0
    assert res.sessions >= 6 and res.transactions == sum(res.episodes.values())
    assert res.duplicates <= res.drops and not res.unanswered


@pytest.mark.timeout(120)
def test_fuzzed_frames_get_one_answer_each_and_the_charger_keeps_working(tmp_path):
    print(f"frame fuzzing: seed {SEED} (TORTURE_SEED={SEED} to repeat)")
    res = fuzz(2000, SEED, tmp_path)
    print(res.summary())
    assert res.ok, (f"seed {SEED}: {res.summary()}\n" + "\n".join(res.problems[:20])
                    + f"\nframes and logs in {tmp_path}")
    assert res.frames == 2000 and res.classes["expect"] > 500
    assert res.answered + res.excused == res.classes["expect"]
    assert res.deaths == 0 and res.drops_unexpected == 0
    assert res.final_session and res.heartbeat


# ---------------------------------------------------------------------------- found by fuzzing
PROFILE = ('{"connectorId":1,"csChargingProfiles":{"chargingProfileId":1,"stackLevel":0,'
           '"chargingProfilePurpose":"TxDefaultProfile","chargingProfileKind":"Absolute",'
           '"chargingSchedule":{"chargingRateUnit":"A","chargingSchedulePeriod":'
           '[{"startPeriod":0,"limit":LIMIT}]}}}')


def _refusal(text: str) -> tuple[str, str]:
    """(code, id) of the CALLERROR the charger answers `text` with."""
    try:
        frame = ocppj.parse_frame(text)
        ocppj.validate_payload(ocppj.CALL, frame.action, frame.payload)
    except ocppj.FrameError as exc:
        assert exc.answerable
        return exc.code, exc.unique_id
    except ocppj.OcppError as exc:
        return exc.code, frame.unique_id
    raise AssertionError(f"accepted: {text}")


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_numbers_json_cannot_carry_are_refused_not_left_unanswered(number):
    """Once a TypeError inside the core (float % Decimal in multipleOf): no answer."""
    text = '[2,"n1","SetChargingProfile",' + PROFILE.replace("LIMIT", number) + "]"
    assert _refusal(text) == ("FormationViolation", "n1")


@pytest.mark.parametrize("number", ["1e27", "1e308", "1.5e300"])
def test_a_limit_too_large_for_multiple_of_is_a_property_violation(number):
    """Once decimal.InvalidOperation inside the core: no answer."""
    text = '[2,"n2","SetChargingProfile",' + PROFILE.replace("LIMIT", number) + "]"
    assert _refusal(text) == ("PropertyConstraintViolation", "n2")
    ok = '[2,"n3","SetChargingProfile",' + PROFILE.replace("LIMIT", "16.5") + "]"
    frame = ocppj.parse_frame(ok)
    ocppj.validate_payload(ocppj.CALL, frame.action, frame.payload)


@pytest.mark.parametrize("text", [
    '[2,"s1","GetConfiguration",{"key":["\\udfff"]}]',
    '[2,"s1","SendLocalList",{"listVersion":1,"updateType":"Full",'
    '"localAuthorizationList":[{"idTag":"\\ud800"}]}]',
    '[2,"s1","DataTransfer",{"vendorId":"x","\\udc00":"y"}]',
])
def test_strings_with_an_unpaired_surrogate_are_refused(text):
    """Once echoed (the send failed, the link dropped) or stored (SQLite raised)."""
    assert _refusal(text) == ("FormationViolation", "s1")


def test_surrogate_pairs_are_text():
    frame = ocppj.parse_frame('[2,"p1","DataTransfer",{"vendorId":"\\ud83d\\udd0c"}]')
    assert frame.payload == {"vendorId": "🔌"}


def test_an_id_with_an_unpaired_surrogate_is_answered_in_json_escapes():
    """Once the CALLERROR could not be encoded as UTF-8 and the link was dropped."""
    text = '[2,"\\ud800x","Heartbeat",{}]'
    code, uid = _refusal(text)
    answer = ocppj.encode_error(uid, code, "")
    answer.encode("utf-8")
    assert json.loads(answer)[1] == "\ud800x"
    assert ocppj.encode_result("é", {"a": "日本"}) == '[3,"é",{"a":"日本"}]'


@pytest.mark.parametrize("text", ['[3,"r1",{', '[4,"r2","GenericError","x",{', "[4,\"r3\",\"X\",\""
                                  + "a" * 300_000 + '",{}]'])
def test_broken_answers_are_not_answered(text):
    """Once a broken or oversized CALLRESULT/CALLERROR got a CALLERROR back."""
    with pytest.raises(ocppj.FrameError) as caught:
        ocppj.parse_frame(text)
    assert not (caught.value.answerable and caught.value.unique_id)


@pytest.mark.parametrize("uid", ['a\\"b', "a\\u0000b", "\\u00e9t\\u00e9", "a\\\\b"])
def test_an_oversized_call_is_refused_under_its_id_even_when_the_id_has_escapes(uid):
    """Once such a CALL got no answer: its id was only looked for without escapes."""
    text = '[2,"' + uid + '","DataTransfer",{"vendorId":"' + "A" * 300_000 + '"}]'
    assert _refusal(text) == ("FormationViolation", json.loads('"' + uid + '"'))


@pytest.mark.parametrize("number", ["9223372036854775808", "-9223372036854775809",
                                    "18446744073709551616", "1" + "0" * 400])
def test_integers_beyond_64_bits_are_refused(number):
    """Once stored as they came: SQLite raised OverflowError, answered InternalError."""
    text = ('[2,"i1","ReserveNow",{"connectorId":1,"expiryDate":"2030-01-01T00:00:00Z",'
            '"idTag":"T","reservationId":' + number + "}]")
    assert _refusal(text) == ("PropertyConstraintViolation", "i1")
    frame = ocppj.parse_frame(text.replace(number, "9223372036854775807"))
    ocppj.validate_payload(ocppj.CALL, frame.action, frame.payload)
