"""The hostile CSMS's own record is right: tests/test_hostile.py and bench/hostile.py judge
the firmware by its log of connections."""
import threading

import websocket

from tests.hostile_csms import HostileCsms


def test_a_close_is_recorded_while_a_message_taken_just_before_reading_stopped_waits():
    """A flood stops reading just as a frame of the charger's is taken off the connection
    (its start races the charger's MeterValues): that frame waits for reading to resume,
    and when the charger drops the link meanwhile the close must still be recorded,
    or the drop reads as "link kept"."""
    with HostileCsms() as csms:
        ws = websocket.create_connection(csms.url, subprotocols=["ocpp1.6"], timeout=5)
        try:
            csms.wait_connected(1)
            session = csms._current()
            stopped = threading.Event()

            def stop():                      # reading stops, the socket is still read
                session.reading.clear()
                stopped.set()

            csms._loop.call_soon_threadsafe(stop)
            assert stopped.wait(5)
            ws.send('[2,"1","Heartbeat",{}]')
        finally:
            ws.close()
        closed = csms.wait_closed(1, timeout=5)
        assert closed.closed is not None
        assert not csms.received                        # the waiting frame was not handled
