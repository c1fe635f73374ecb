"""Every config.toml example in docs/hardware.md is valid configuration."""
import re
import sys
from pathlib import Path

import pytest

from chargepoint.config import parse_settings

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DOC = (Path(__file__).resolve().parents[1] / "docs" / "hardware.md").read_text()
BLOCKS = re.findall(r"```toml\n(.*?)```", DOC, re.S)
SIM_CONNECTOR = {"id": 1, "meter": {"type": "sim"}, "contactor": {"type": "sim"},
                 "pilot": {"type": "sim"}}


def test_there_are_examples():
    assert len(BLOCKS) >= 10


@pytest.mark.parametrize("block", BLOCKS, ids=[f"example{i}" for i in range(len(BLOCKS))])
def test_example_parses(block):
    data = tomllib.loads(block)
    if isinstance(data.get("connectors"), dict):
        # A fragment: device tables of one connector, e.g. [connectors.lock] alone.
        data["connectors"] = [{**SIM_CONNECTOR, "fixed_cable": "lock" not in data["connectors"],
                               **data["connectors"]}]
    if "connectors" not in data:
        if not data.get("readers"):
            pytest.skip("a fragment without connectors or readers")
        data["connectors"] = [SIM_CONNECTOR]
    parse_settings(data, "<docs/hardware.md>")
