"""chargepoint/durable.py: a file is replaced whole or not at all, with its mode from the
first byte, and a failure leaves the old file and no temporary one."""
from __future__ import annotations

import os
import stat

import pytest

from chargepoint import durable


def test_a_file_is_replaced_whole_with_its_mode(tmp_path):
    path = tmp_path / "key.pem"
    path.write_bytes(b"old")
    durable.write_whole(path, b"new" * 100_000, mode=0o600)
    assert path.read_bytes() == b"new" * 100_000
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(tmp_path) == ["key.pem"]


def test_a_failure_inside_the_block_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "state.json"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with durable.replacing(path) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("cut")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["state.json"]


def test_a_missing_directory_raises_and_creates_nothing(tmp_path):
    with pytest.raises(FileNotFoundError):
        durable.write_whole(tmp_path / "gone" / "state.json", b"new")
    assert os.listdir(tmp_path) == []
