"""The configuration reference names every key the code knows."""
import dataclasses
from pathlib import Path

from chargepoint import config
from chargepoint.ocpp_keys import KEY_SPECS

DOC = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text()


def test_every_ocpp_key_is_documented():
    missing = [name for name in KEY_SPECS if f"`{name}`" not in DOC]
    assert not missing


def test_every_config_key_is_documented():
    classes = [config.CsmsSettings, config.IdentitySettings, config.StorageSettings,
               config.LogSettings, config.SystemSettings, config.ReleaseSettings,
               config.ConnectorSettings, config.GpioSettings]
    missing = [f.name for cls in classes for f in dataclasses.fields(cls) if f"`{f.name}`" not in DOC]
    assert not missing


def test_every_transfers_key_is_documented():
    missing = [f.name for f in dataclasses.fields(config.TransfersSettings)
               if f"`{f.name}`" not in DOC]
    assert not missing and "### `[transfers]`" in DOC
