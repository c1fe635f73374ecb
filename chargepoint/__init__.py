"""OCPP 1.6-J charge-point firmware: the charging logic and its adapters."""

#: The one place the version is written (pyproject.toml reads it from here): reading it
#: back through importlib.metadata at every start cost 20 ms and 1 MiB.
__version__ = "0.1.0"
