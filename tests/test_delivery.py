"""Fair and bounded delivery, end to end against the loopback CSMS on a virtual clock:
transaction messages keep flowing under a TriggerMessage flood."""
from __future__ import annotations

import time

from tests.harness import wait_until
from tests.test_offline import (CP, boot, iso, jump, start_online)



def slow(answer: dict, seconds: float):
    """A CSMS handler that answers `seconds` late (the CSMS's own pace, real time)."""
    def handler(cp_id, payload):
        time.sleep(seconds)
        return answer
    return handler


# -------------------------------------------------------------------- fairness
def test_meter_values_keep_their_rate_under_a_trigger_flood(csms, firmware):
    """The CSMS triggers StatusNotification 200 times a second and answers each 50 ms late:
    every sample of a running transaction still goes out, one per sampling interval; the
    triggers are all Accepted, merged into one waiting StatusNotification."""
    csms.handlers["StatusNotification"] = slow({}, 0.05)
    fw = boot(csms, firmware, {"MeterValueSampleInterval": 1})
    start = start_online(csms, fw)
    t0 = fw.clock.now()
    mark = len(csms.received)
    flood = csms.flood(CP, "TriggerMessage", {"requestedMessage": "StatusNotification",
                                              "connectorId": 1}, per_second=200)
    try:
        assert wait_until(lambda: len(csms.records("StatusNotification", after=mark)) >= 3)
        waiting = []
        for k in range(1, 21):
            jump(fw, 1)                                      # the next sample is due
            csms.wait_for("MeterValues", lambda r, k=k: r["meterValue"][0]["timestamp"] ==
                          iso(t0 + k), after=mark, timeout=10)
            waiting.append((len(fw.station.outbox), len(fw.station.calls)))
    finally:
        flood.stop()
    mvs = csms.records("MeterValues", after=mark)
    assert [m["meterValue"][0]["timestamp"] for m in mvs] == [iso(t0 + k) for k in range(1, 21)]
    assert all(m["transactionId"] == start.reply["transactionId"] for m in mvs)
    assert set(flood.answers) == {"Accepted"} and flood.answered > 20
    # Merged: never more than one StatusNotification waiting, far fewer sent than triggered.
    assert all(queued <= 1 and calls <= 1 for queued, calls in waiting), waiting
    assert len(csms.records("StatusNotification", after=mark)) < flood.answered
    assert not csms.violations
