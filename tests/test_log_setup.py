"""Log lines: dated outside the journal, the journal's own format under systemd, and
libraries that log every byte they move held at WARNING."""
from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from chargepoint.log_setup import setup_logging, writes_to_journal

ROOT = Path(__file__).resolve().parents[1]
DATED = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} WARNING chargepoint\.test: hello$")

LOG_ONE_LINE = ("import logging; from chargepoint.log_setup import setup_logging; "
                "setup_logging('info'); logging.getLogger('chargepoint.test').warning('hello')")


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    saved = root.handlers[:], root.level, logging.getLogger("pymodbus").level
    yield
    root.handlers[:], _, _ = saved
    root.setLevel(saved[1])
    logging.getLogger("pymodbus").setLevel(saved[2])


def _run_logging_process(stderr_path: Path, journal_stream: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    if journal_stream is not None:
        env["JOURNAL_STREAM"] = journal_stream
    with open(stderr_path, "wb") as err:
        subprocess.run([sys.executable, "-c", LOG_ONE_LINE], cwd=ROOT, env=env, stderr=err,
                       check=True, timeout=60)
    return stderr_path.read_text()


def test_a_line_outside_the_journal_carries_the_date(tmp_path):
    assert DATED.match(_run_logging_process(tmp_path / "err", None).rstrip("\n"))


def test_under_systemd_the_journal_gets_the_priority_and_adds_the_time_itself(tmp_path):
    path = tmp_path / "err"
    path.touch()
    st = os.stat(path)                     # the process's stderr is this very file
    assert _run_logging_process(path, f"{st.st_dev}:{st.st_ino}") == \
        "<4>chargepoint.test: hello\n"


def test_journal_stream_naming_another_stream_is_not_the_journal(tmp_path):
    """A child of the service whose stderr was redirected inherits $JOURNAL_STREAM: its
    lines still need their date."""
    other = tmp_path / "other"
    other.touch()
    st = os.stat(other)
    text = _run_logging_process(tmp_path / "err", f"{st.st_dev}:{st.st_ino}")
    assert DATED.match(text.rstrip("\n")), text


def test_writes_to_journal_reads_device_and_inode(tmp_path):
    with open(tmp_path / "f", "w") as stream:
        st = os.fstat(stream.fileno())
        assert writes_to_journal(stream, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
        assert not writes_to_journal(stream, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"})
        for junk in ("", "8", "a:b", ":"):
            assert not writes_to_journal(stream, {"JOURNAL_STREAM": junk})
    assert not writes_to_journal(io.StringIO(), {"JOURNAL_STREAM": "1:2"})


def test_pymodbus_stays_at_warning_whatever_the_level(restore_logging):
    from pymodbus.logging import Log

    out = io.StringIO()
    setup_logging("debug", out)
    Log.debug("a frame {}", 1)
    Log.info("a retry {}", 2)
    Log.warning("the meter bus is gone {}", 3)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].endswith("pymodbus.logging: the meter bus is gone 3")
    logging.getLogger("chargepoint.test").debug("ours")
    assert out.getvalue().splitlines()[-1].endswith("chargepoint.test: ours")
    setup_logging("error", out)
    assert not logging.getLogger("pymodbus.logging").isEnabledFor(logging.WARNING)
