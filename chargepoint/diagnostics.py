"""The diagnostics archive: what someone looking into a charger from afar needs, in one zip.

Built for GetDiagnostics (chargepoint/maintenance.py uploads it) and by
`chargepoint diagnostics --out FILE` for an installer on site. It holds:

- `log.txt`: the firmware's log of the period asked for: the unit's journal through
  `journalctl` under systemd, otherwise the bounded log file the firmware keeps
  beside the database (`keep_log_file`, `[log] file_kb`);
- `frames.jsonl`: the last OCPP frames in and out (`FrameRing`; only in an archive made
  by the running firmware), each redacted as the frame log is;
- `config.toml`: the configuration file with every secret replaced by `***`, and
  `ocpp-keys.json`, the OCPP keys as stored (write-only ones left out);
- `database.json`: the database's health: `PRAGMA integrity_check`, rows per table, the
  outbox's depth and what it gave up, open transactions;
- `facts.json`: version, Python and platform, the release and its trial, the disk.

Nothing in it may be a secret: the AuthorizationKey, passwords in URLs (an FTP location
with its credentials) and keys named like secrets are blanked wherever they appear.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import logging
import logging.handlers
import os
import platform
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Optional

from chargepoint import __version__
from chargepoint.log_setup import writes_to_journal
from chargepoint.ocpp_keys import KEY_SPECS
from chargepoint.protocol.redaction import hide_url_passwords, redact

log = logging.getLogger("chargepoint.diagnostics")

#: Frames kept for the archive (the last this many, in and out together).
FRAMES_KEPT = 500
#: A longer frame is kept cut to this many characters.
FRAME_CHARS = 4096
#: The log of an archive is cut to its last this many bytes.
LOG_BYTES = 8 * 1024 * 1024
#: Longest `journalctl` may take.
JOURNAL_TIMEOUT_S = 60.0

#: Keys whose values are secrets wherever they appear (config.toml, frames, OCPP keys).
_SECRET_NAME = re.compile(r"authorization_?key|password|passwd|secret|token|private",
                          re.IGNORECASE)
_ASSIGNMENT = re.compile(r'^(\s*"?([A-Za-z0-9_.-]+)"?\s*=\s*)(.*)$')

#: `text` with URL passwords replaced by ***.
hide_secrets = hide_url_passwords


def redacted_frame(text: str) -> str:
    """A frame as the archive holds it: as the frame log shows it (no AuthorizationKey, no
    password of a location)."""
    return redact(text)


# ------------------------------------------------------------------------------ the frames
class FrameRing:
    """The last FRAMES_KEPT frames, as (UTC time, "in"/"out", text). Fed by the station
    loop (a deque append: nothing to slow a turn down); redacted only when an archive
    is made."""

    def __init__(self, size: int = FRAMES_KEPT):
        self._frames: collections.deque = collections.deque(maxlen=size)

    def add(self, direction: str, text: str, utc: float) -> None:
        self._frames.append((utc, direction, text[:FRAME_CHARS]))

    def lines(self) -> list[str]:
        out = []
        for utc, direction, text in list(self._frames):
            out.append(json.dumps({"time": _iso(utc), "direction": direction,
                                   "frame": redacted_frame(text)}, ensure_ascii=False))
        return out


# ------------------------------------------------------------------------------ the log file
#: The log file's line: a full UTC timestamp, so that a period can be cut from it.
LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class _UtcFormatter(logging.Formatter):
    converter = time.gmtime

    def formatTime(self, record, datefmt=None):               # noqa: N802 (logging's name)
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + \
            f".{int(record.msecs):03d}Z"


def log_file_path(data_dir: str) -> Path:
    return Path(data_dir) / "log" / "chargepoint.log"


class _LogFile(logging.handlers.RotatingFileHandler):
    """The bounded log file. A line it cannot write (a full or failing disk, which the
    firmware reports and rides out on its own) is dropped without a word: logging's
    default would print a traceback to standard error for every line."""

    def handleError(self, record: logging.LogRecord) -> None:   # noqa: N802 (logging's)
        pass


def keep_log_file(data_dir: str, size_kb: int) -> Optional[logging.Handler]:
    """Add the bounded log file (two files of half `size_kb` each, the older dropped) to
    the root logger; None when `size_kb` is 0 or the file cannot be opened (said once)."""
    if size_kb <= 0:
        return None
    path = log_file_path(data_dir)
    try:
        path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
        # A fuzzed frame may hold lone surrogates: escaped, as on standard error.
        handler = _LogFile(path, maxBytes=max(1, size_kb * 1024 // 2), backupCount=1,
                           encoding="utf-8", errors="backslashreplace")
    except OSError as exc:
        log.warning("no log file for diagnostics: cannot write %s (%s)", path,
                    exc.strerror or exc)
        return None
    handler.setFormatter(_UtcFormatter(LOG_FORMAT))
    logging.getLogger().addHandler(handler)
    return handler


def under_journal() -> bool:
    """Logging goes to the journal: standard error is the stream systemd named."""
    return writes_to_journal(sys.stderr)


def _unit_name() -> str:
    """The systemd unit this process runs in (from its cgroup), or chargepoint.service."""
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            last = line.rsplit("/", 1)[-1]
            if last.endswith(".service"):
                return last
    except OSError:
        pass
    return "chargepoint.service"


def _journal(start: Optional[float], stop: Optional[float]) -> tuple[bytes, str]:
    command = ["journalctl", "--no-pager", "--quiet", "-o", "short-iso-precise", "-u",
               _unit_name()]
    if start is not None:
        command += ["--since", f"@{int(start)}"]
    if stop is not None:
        command += ["--until", f"@{int(stop) + 1}"]
    try:
        result = subprocess.run(command, capture_output=True, timeout=JOURNAL_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError) as exc:
        return b"", f"{' '.join(command)} failed: {exc}"
    note = "" if result.returncode == 0 else (
        f"{' '.join(command)} exited with {result.returncode}: "
        + result.stderr.decode(errors="replace").strip()[:500])
    return result.stdout[-LOG_BYTES:], note


_STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z) ")


def _log_file(data_dir: str, start: Optional[float], stop: Optional[float]) -> tuple[bytes, str]:
    path = log_file_path(data_dir)
    files = [p for p in (path.with_name(path.name + ".1"), path) if p.exists()]
    if not files:
        return b"", f"no log file at {path} ([log] file_kb is 0, or nothing was logged)"
    kept: collections.deque = collections.deque()
    size = 0
    inside = start is None
    for file in files:
        with open(file, encoding="utf-8", errors="replace") as lines:
            for line in lines:
                found = _STAMP.match(line)
                if found:               # a new record; continuation lines follow their own
                    moment = datetime.fromisoformat(found.group(1).replace("Z", "+00:00"))
                    utc = moment.timestamp()
                    inside = (start is None or utc >= start) and (stop is None or utc <= stop)
                if inside:
                    kept.append(line)
                    size += len(line)
                    while size > LOG_BYTES and kept:
                        size -= len(kept.popleft())
    return "".join(kept).encode(), ""


def read_log(data_dir: str, start: Optional[float], stop: Optional[float]) -> tuple[bytes, str]:
    """(the log of the period, a note on where it came from or why it is missing)."""
    if under_journal():
        text, problem = _journal(start, stop)
        return text, problem or f"from the journal of {_unit_name()}"
    text, problem = _log_file(data_dir, start, stop)
    return text, problem or f"from {log_file_path(data_dir)}"


# ------------------------------------------------------------------------------ the rest
def config_without_secrets(path: str, settings: Any = None) -> str:
    """The configuration file, each secret value (keys named like one, URL passwords)
    replaced by "***"; comments and layout kept. Settings made without a file (the demo's,
    a test's) are shown as JSON, blanked the same way."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        if settings is None:
            return f"# cannot read {path}: {exc.strerror or exc}\n"
        shown = json.dumps(_blank(dataclasses.asdict(settings)), indent=1, default=str)
        return f"# settings made without a file ({path}), as JSON\n{shown}\n"
    out = []
    for line in text.splitlines():
        found = _ASSIGNMENT.match(line)
        if found and _SECRET_NAME.search(found.group(2)) \
                and not found.group(2).endswith(("_file", "_path")):
            line = f'{found.group(1)}"***"'
        out.append(hide_secrets(line))
    return "\n".join(out) + "\n"


def _blank(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: "***" if _SECRET_NAME.search(str(k)) and v and not str(k).endswith(
            ("_file", "_path")) else _blank(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_blank(v) for v in node]
    return hide_secrets(node) if isinstance(node, str) else node


def database_health(path: str) -> dict[str, Any]:
    """The database's state, read through a read-only connection of its own."""
    facts: dict[str, Any] = {"path": path}
    try:
        facts["bytes"] = os.path.getsize(path)
        facts["wal_bytes"] = os.path.getsize(path + "-wal") if os.path.exists(
            path + "-wal") else 0
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    except (OSError, sqlite3.Error) as exc:
        facts["error"] = str(exc)
        return facts
    try:
        facts["integrity_check"] = [row[0] for row in
                                    db.execute("PRAGMA integrity_check(20)").fetchall()]
        facts["schema_version"] = db.execute("PRAGMA user_version").fetchone()[0]
        tables = [row[0] for row in db.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' "
            "ORDER BY name")]
        facts["rows"] = {t: db.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0]
                         for t in tables}
        rows = facts["rows"]
        facts["outbox_depth"] = rows.get("outbox", 0)
        facts["outbox_given_up"] = rows.get("outbox_dead", 0)
        if "transactions" in rows:
            facts["open_transactions"] = db.execute(
                "SELECT COUNT(*) FROM transactions WHERE stopped=0").fetchone()[0]
        if "outbox" in rows and rows["outbox"]:
            oldest = db.execute("SELECT MIN(created) FROM outbox").fetchone()[0]
            facts["outbox_oldest"] = _iso(oldest) if oldest else None
    except sqlite3.Error as exc:
        facts["error"] = str(exc)
    finally:
        db.close()
    return facts


def ocpp_keys(path: str) -> dict[str, str]:
    """The OCPP keys the CSMS or [ocpp] changed, as stored; write-only keys left out."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            rows = db.execute("SELECT key, value FROM ocpp_config ORDER BY key").fetchall()
        finally:
            db.close()
    except sqlite3.Error as exc:
        return {"(error)": str(exc)}
    hidden = {name for name, spec in KEY_SPECS.items() if spec.write_only}
    return {k: ("***" if k in hidden or _SECRET_NAME.search(k) else hide_secrets(v))
            for k, v in rows}


def facts(data_dir: str, extra: Optional[dict] = None) -> dict[str, Any]:
    usage = None
    try:
        disk = shutil.disk_usage(data_dir)
        usage = {"total": disk.total, "free": disk.free}
    except OSError:
        pass
    try:
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        uptime = None
    return {"version": __version__, "python": sys.version.split()[0],
            "executable": sys.executable, "platform": platform.platform(),
            "machine": platform.machine(), "host": socket.gethostname(),
            "made": _iso(time.time()), "system_uptime_s": uptime, "data_dir": data_dir,
            "disk": usage, **(extra or {})}


README = """\
Diagnostics of a chargepoint charger.

log.txt          the firmware's log of the period asked for ({log_note})
frames.jsonl     the last OCPP frames, in and out (redacted){frames_note}
config.toml      the configuration file, secrets replaced by ***
ocpp-keys.json   the OCPP keys as stored (write-only keys left out)
database.json    integrity check, rows per table, outbox depth, open transactions
facts.json       version, Python, platform, release, disk
"""


def build_archive(out: Path, *, config_path: str, database: str, data_dir: str,
                  start: Optional[float] = None, stop: Optional[float] = None,
                  frames: Optional[Iterable[str]] = None,
                  extra_facts: Optional[dict] = None, settings: Any = None) -> Path:
    """Write the archive to `out` (whole, or not at all); returns `out`."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    log_text, log_note = read_log(data_dir, start, stop)
    frame_lines = list(frames) if frames is not None else None
    period = {"start": _iso(start) if start is not None else None,
              "stop": _iso(stop) if stop is not None else None}
    tmp = out.with_name(out.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("README.txt", README.format(
            log_note=log_note, frames_note="" if frame_lines is not None else
            " (empty: only the running firmware has them, in GetDiagnostics)"))
        archive.writestr("log.txt", hide_secrets(log_text.decode("utf-8", errors="replace")))
        archive.writestr("frames.jsonl", "\n".join(frame_lines or []) + "\n")
        archive.writestr("config.toml", config_without_secrets(config_path, settings))
        archive.writestr("ocpp-keys.json", json.dumps(ocpp_keys(database), indent=1))
        archive.writestr("database.json", json.dumps(database_health(database), indent=1))
        archive.writestr("facts.json", json.dumps(
            facts(data_dir, {"period": period, "log": log_note, **(extra_facts or {})}),
            indent=1, default=str))
    os.replace(tmp, out)
    return out


def _iso(utc: float) -> str:
    return datetime.fromtimestamp(utc, timezone.utc).isoformat(timespec="milliseconds") \
        .replace("+00:00", "Z")

