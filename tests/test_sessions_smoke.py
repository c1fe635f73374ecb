"""Smoke: a whole plug-first session on a virtual clock."""


def sns(csms, cid=1):
    return [r["status"] for r in csms.received if r.action == "StatusNotification"
            and r["connectorId"] == cid]


def test_plug_first_session(csms, firmware):
    fw = firmware({"ocpp": {"MeterValueSampleInterval": 60}})
    csms.wait_for("StatusNotification", lambda r: r["connectorId"] == 1)
    fw.sim.plug(1)
    fw.settle()
    fw.sim.tap("TAG1")
    fw.settle()
    start = csms.wait_for("StartTransaction")
    assert start["idTag"] == "TAG1" and start["connectorId"] == 1
    csms.wait_for("StatusNotification", lambda r: r["status"] == "Charging")
    fw.advance(180)
    mvs = [r for r in csms.received if r.action == "MeterValues"]
    assert len(mvs) == 3, mvs
    fw.sim.tap("TAG1")
    fw.settle()
    stop = csms.wait_for("StopTransaction")
    assert stop["reason"] == "Local"
    assert stop["meterStop"] - start["meterStart"] > 0
    fw.sim.unplug(1)
    fw.settle()
    csms.wait_for("StatusNotification", lambda r: r["status"] == "Available"
                  and r["connectorId"] == 1 and len(sns(csms)) > 3)
    print(sns(csms))
    print([r.action for r in csms.received])
    assert sns(csms) == ["Available", "Preparing", "Charging", "Finishing", "Available"]
    assert not csms.violations
