"""Where the firmware looks for its files when nothing says otherwise (the places the
unit and the install guide use), in a module cheap enough for `--help` to import."""

#: The configuration file of the service.
DEFAULT_CONFIG = "/etc/chargepoint/config.toml"
#: The state directory: systemd's StateDirectory=chargepoint.
DEFAULT_STATE_DIR = "/var/lib/chargepoint"
