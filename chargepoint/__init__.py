"""OCPP 1.6-J charge-point firmware: the charging logic and its adapters."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("chargepoint")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"
