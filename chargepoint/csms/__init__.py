"""The bundled local Central System (OCPP 1.6-J) used by `chargepoint demo` and the tests.

Needs the optional dependency ``websockets`` (``pip install chargepoint[csms]``).
"""
from chargepoint.csms import server as _server
from chargepoint.csms.server import *  # noqa: F401,F403  (the names in server.__all__)

__all__ = list(_server.__all__)
