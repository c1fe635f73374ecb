"""Telling a damaged database from a sound one, and reading what can still be read.

Python's sqlite3 has no `.recover`, and the sqlite3 shell is not on a Raspberry Pi OS
image, so the salvage reads table by table and rowid range by rowid range: a query that
meets a bad page is resumed past it (found by exponential steps, then halving back), so
one bad page costs the rows on it, not the table. It works on a private copy of the
file and its -wal, in memory where possible: the damaged file itself is never written
(it is kept for forensics) and a read-only filesystem does not stop it. A copy whose
100-byte header is destroyed gets a fresh one: the header holds no data, only where
SQLite should look (page size, encoding), and the firmware knows its own file.

Every saved row must fit the current schema's column types and the JSON columns must
parse, so a garbled row is dropped here rather than crashing the firmware at start.
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import struct
import tempfile
from dataclasses import dataclass, field
from typing import Optional

from chargepoint.store import PAGE_SIZE

MAGIC = b"SQLite format 3\x00"

#: Columns holding JSON text, and what each must parse to.
JSON_COLUMNS: dict[str, dict[str, type]] = {
    "state": {"value": object},
    "transactions": {"info": dict},
    "outbox": {"payload": dict},
    "outbox_dead": {"payload": dict},
    "auth_cache": {"info": dict},
    "tx_stop_data": {"meter_value": dict},
    "local_list": {"info": dict},
    "charging_profiles": {"body": dict},
}


#: Scratch space for the copy: RAM first (a failing card should not be written more),
#: then the system's temporary directory.
SCRATCH_DIRS = ("/dev/shm", None)

MAX_ROWID = 2**63 - 1

#: What reading a damaged file raises: SQLite's errors, and a UnicodeDecodeError when the
#: error message itself quotes broken text (a damaged schema entry).
READ_ERRORS = (sqlite3.DatabaseError, UnicodeError)


def header_problem(path: str) -> Optional[str]:
    """What is wrong with the file's size or 100-byte header, or None. Cheap: reads 100
    bytes. Raises OSError if the file cannot be read at all."""
    size = os.path.getsize(path)
    if size == 0:
        return "empty file (0 bytes)"
    with open(path, "rb") as f:
        header = f.read(100)
    if len(header) < 100:
        return f"truncated to {size} bytes (no complete header)"
    if header[:16] != MAGIC:
        return "not an SQLite database (bad header)"
    page_size = _page_size(header)
    if page_size is None:
        return "bad header (invalid page size)"
    if size % page_size:
        return f"truncated or padded ({size} bytes is not a whole number of " \
               f"{page_size}-byte pages)"
    return None


def _page_size(header: bytes) -> Optional[int]:
    raw = struct.unpack(">H", header[16:18])[0]
    size = 65536 if raw == 1 else raw
    return size if 512 <= size <= 65536 and size & (size - 1) == 0 else None


def integrity_problem(db: sqlite3.Connection) -> Optional[str]:
    """What `PRAGMA integrity_check` finds wrong (its first complaint), or None.

    integrity_check rather than quick_check: it also finds an index that disagrees with
    its table (a local-list lookup would then answer wrongly), for about 1.5 times the
    cost (docs/performance.md). Raises sqlite3.DatabaseError if the file cannot be read."""
    rows = db.execute("PRAGMA integrity_check(5)").fetchall()
    if rows and rows[0][0] == "ok":
        return None
    lines = [line.strip() for (text,) in rows for line in str(text).splitlines()]
    found = "; ".join(line for line in lines if line and not line.startswith("***"))
    return "integrity check: " + (found[:200] or "not ok")


#: Tables the firmware reads whole when it starts: a row of them that cannot be used would
#: stop every start, so each must decode and fit (`content_problem`).
LOADED_AT_START = ("ocpp_config", "state", "transactions", "outbox", "tx_stop_data",
                   "reservations", "charging_profiles")


def content_problem(db: sqlite3.Connection,
                    schema: dict[str, dict[str, tuple[str, bool]]]) -> Optional[str]:
    """What is wrong with the content of a database migrated to `schema`, or None: a table
    or column the schema has and the file lacks (a damaged schema entry), or a row the
    firmware loads at start that does not decode as UTF-8 or breaks its JSON. Damage inside
    a record passes integrity_check but would fail every start. The rule for rows is the
    one the salvage keeps them by."""
    present = {name for (name,) in db.execute(
        "SELECT name FROM sqlite_master WHERE type='table'").fetchall()}
    for table, columns in schema.items():          # a damaged schema entry loses columns
        if table not in present:
            return f"table {table} is missing"
        theirs = {row[1] for row in db.execute(f'PRAGMA table_info("{table}")')}
        if set(columns) - theirs:
            return f"table {table} lacks {', '.join(sorted(set(columns) - theirs))}"
    for table in LOADED_AT_START:
        names = list(schema[table])
        # Each text column is decoded in one piece (a text that is not UTF-8 fails here; the
        # line breaks keep two broken ends from making one valid character); only the rows
        # SQL does not find plainly fine are fetched for the full check.
        texts = [c for c in names if schema[table][c][0].upper() == "TEXT"]
        try:
            for name in texts:
                db.execute(f"SELECT group_concat(coalesce({name}, ''), char(10)) "
                           f'FROM "{table}"').fetchone()
            suspects = db.execute(
                f'SELECT {", ".join(names)} FROM "{table}" '
                f'WHERE NOT coalesce({_plainly_fine(table, names, schema[table])}, 0)'
            ).fetchall()
        except READ_ERRORS as exc:
            return f"rows of {table} cannot be read ({exc})"
        unfit = sum(not _fits(table, dict(zip(names, r)), schema[table]) for r in suspects)
        if unfit:
            return f"{unfit} row(s) of {table} hold broken text or values"
    return None


@dataclass
class Salvage:
    """What could be read: rows by table (column name -> value, in rowid order)."""

    rows: dict[str, list[dict]] = field(default_factory=dict)
    #: Damaged spans skipped, by table.
    skipped: dict[str, int] = field(default_factory=dict)
    #: Rows read but not fit to keep (wrong types, broken JSON), by table.
    dropped: dict[str, int] = field(default_factory=dict)
    #: Tables that could not be read at all, with the reason.
    unreadable: dict[str, str] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return {table: len(rows) for table, rows in self.rows.items()}

    def summary(self) -> str:
        """`outbox 6, transactions 1, ...; damaged parts skipped in local_list (2); ...`"""
        text = ", ".join(f"{t} {n}" for t, n in self.counts().items()) or "nothing"
        notes = []
        if any(self.skipped.values()):
            notes.append("damaged parts skipped in " + ", ".join(
                f"{t} ({n})" for t, n in self.skipped.items() if n))
        if any(self.dropped.values()):
            notes.append("garbled rows dropped in " + ", ".join(
                f"{t} ({n})" for t, n in self.dropped.items() if n))
        if self.unreadable:
            notes.append("unreadable: " + ", ".join(self.unreadable))
        return "; ".join([text, *notes])


def read(path: str, schema: dict[str, dict[str, tuple[str, bool]]]) -> Salvage:
    """Read every table of `schema` (table -> column -> (declared type, not null)) that can
    be read from the database at `path` and its -wal, without writing to either."""
    out = Salvage()
    with _ReadableCopy(path) as db:
        if db is None:
            out.unreadable["*"] = "no readable copy could be made"
            return out
        try:
            present = {name for (name,) in db.execute(
                "SELECT name FROM sqlite_master WHERE type='table'").fetchall()}
        except READ_ERRORS as exc:
            out.unreadable["*"] = f"schema unreadable: {exc}"
            return out
        for table, columns in schema.items():
            if table not in present:
                continue
            try:
                theirs = {row[1] for row in db.execute(f'PRAGMA table_info("{table}")')}
            except READ_ERRORS as exc:
                out.unreadable[table] = str(exc)
                continue
            names = [c for c in columns if c in theirs]
            if not names:
                continue
            raw, skipped = _read_table(db, table, names)
            kept = [row for row in (dict(zip(names, values)) for values in raw)
                    if _fits(table, row, columns)]
            out.rows[table] = kept
            out.skipped[table] = skipped
            out.dropped[table] = len(raw) - len(kept)
    return out


def _read_table(db: sqlite3.Connection, table: str, names: list[str]) -> tuple[list, int]:
    """Rows of `table` in rowid order, resuming past damaged pages; (rows, spans skipped).

    One scan when it works. Otherwise row by row (one LIMIT 1 query each): Python's
    cursor steps to the next row before it hands out the current one, so in a scan an
    error loses the row read just before it, and a probe that worked would not promise
    that a scan from there moves on."""
    select = f'SELECT rowid, {", ".join(names)} FROM "{table}" WHERE rowid >= ? ORDER BY rowid'
    try:
        rows = db.execute(select, (-MAX_ROWID - 1,)).fetchall()
        if all(a[0] < b[0] for a, b in zip(rows, rows[1:])):
            return [row[1:] for row in rows], 0
    except READ_ERRORS:
        pass
    one = select + " LIMIT 1"
    rows, start, skipped = [], -MAX_ROWID - 1, 0
    while True:
        try:
            found = db.execute(one, (start,)).fetchall()
            if found and found[0][0] < start:        # a damaged tree can lead back
                raise sqlite3.DatabaseError(f"rowid {found[0][0]} before {start}")
        except READ_ERRORS:
            skipped += 1
            start = _next_readable(db, one, start)
            if start is None:
                return rows, skipped
            continue
        if not found:
            return rows, skipped
        rows.append(found[0][1:])
        if found[0][0] >= MAX_ROWID:
            return rows, skipped
        start = found[0][0] + 1


def _next_readable(db: sqlite3.Connection, one: str, bad: int) -> Optional[int]:
    """The lowest rowid after `bad` from which the one-row read `one` works again (a guess
    to within the damaged span), or None if nothing after it can be read."""

    def works(rowid: int) -> bool:
        try:
            found = db.execute(one, (rowid,)).fetchall()
        except READ_ERRORS:
            return False
        return not found or found[0][0] >= rowid

    step = 1
    while True:
        if bad + step > MAX_ROWID:
            return None
        if works(bad + step):
            good = bad + step
            break
        bad, step = bad + step, step * 2
    while good - bad > 1:
        middle = (bad + good) // 2
        if works(middle):
            good = middle
        else:
            bad = middle
    return good


def _plainly_fine(table: str, names: list[str],
                  columns: dict[str, tuple[str, bool]]) -> str:
    """An SQL expression true for rows that certainly pass `_fits` (for speed: a row it
    does not pass is judged by `_fits`). SQLite's json_valid is RFC 8259, which json.loads
    accepts too."""
    kinds = {"INTEGER": "'integer','real'", "REAL": "'integer','real'", "TEXT": "'text'"}
    terms = []
    for name in names:
        declared, not_null = columns[name]
        allowed = kinds.get(declared.upper())
        if allowed:
            if not not_null:
                allowed += ",'null'"
            terms.append(f"typeof({name}) IN ({allowed})")
        elif not_null:
            terms.append(f"{name} IS NOT NULL")
    for name, shape in JSON_COLUMNS.get(table, {}).items():
        if name in names:
            # Valid JSON that starts with "{" is an object (cheaper than json_type).
            terms.append(f"({name} IS NULL OR json_valid({name})"
                         + (f" AND substr(ltrim({name}), 1, 1) = '{{')" if shape is dict
                            else ")"))
    return " AND ".join(terms) or "1"


def _fits(table: str, row: dict, columns: dict[str, tuple[str, bool]]) -> bool:
    """The row can be used: types as the column's affinity stores them, JSON columns parse.
    Nothing stricter: a rule that a sound row could break would cost that row."""
    for name, value in row.items():
        declared, not_null = columns[name]
        if value is None:
            if not_null:
                return False
            continue
        kind = declared.upper()
        if kind == "INTEGER" and not isinstance(value, (int, float)):
            # An integer beyond 64 bits becomes REAL by the column's affinity, or stays text.
            if not (isinstance(value, str) and value.lstrip("-").isdigit()):
                return False
        elif kind == "REAL" and not isinstance(value, (int, float)):
            return False
        elif kind == "TEXT" and not isinstance(value, str):
            return False
    for name, shape in JSON_COLUMNS.get(table, {}).items():
        if name in row and row[name] is not None:
            try:
                parsed = json.loads(row[name])
            except (ValueError, TypeError, RecursionError):
                return False
            if shape is not object and not isinstance(parsed, shape):
                return False
    return True


class _ReadableCopy:
    """`with _ReadableCopy(path) as db:` a read-only connection to a private copy of the
    database and its -wal (header repaired if need be), or to the file itself opened
    immutable when no copy fits anywhere; None if neither can be read."""

    def __init__(self, path: str):
        self.path = path
        self.scratch: Optional[str] = None
        self.db: Optional[sqlite3.Connection] = None

    def __enter__(self) -> Optional[sqlite3.Connection]:
        copy = self._copy()
        if copy is not None:
            self.db = _open_repaired(copy)
        if self.db is None:
            try:
                self.db = sqlite3.connect(f"file:{self.path}?mode=ro&immutable=1", uri=True)
            except sqlite3.Error:
                self.db = None
        return self.db

    def _copy(self) -> Optional[str]:
        for base in SCRATCH_DIRS:
            try:
                self.scratch = tempfile.mkdtemp(prefix="chargepoint-salvage-", dir=base)
            except OSError:
                continue
            target = os.path.join(self.scratch, "copy.db")
            try:
                shutil.copyfile(self.path, target)
                if os.path.exists(self.path + "-wal"):
                    shutil.copyfile(self.path + "-wal", target + "-wal")
                return target
            except OSError:
                self._drop_scratch()
        return None

    def _drop_scratch(self) -> None:
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None

    def __exit__(self, *exc) -> None:
        if self.db is not None:
            self.db.close()
        self._drop_scratch()


def _open_repaired(copy: str) -> Optional[sqlite3.Connection]:
    """Open the private copy; if its header is bad, write a fresh one for the first page
    size under which the schema reads."""
    try:
        with open(copy, "rb") as f:
            header = f.read(100)
    except OSError:
        return None
    if len(header) == 100 and header[:16] == MAGIC and _page_size(header) is not None:
        return _connect(copy)
    size = os.path.getsize(copy)
    wal_page = _wal_page_size(copy + "-wal")
    candidates = [p for p in (wal_page, PAGE_SIZE, 4096, 512, 2048, 8192, 16384, 32768, 65536)
                  if p]
    for page_size in dict.fromkeys(candidates):
        if size < page_size:
            continue
        with open(copy, "r+b") as f:
            f.write(fresh_header(page_size, size // page_size))
        db = _connect(copy)
        if db is None:
            continue
        try:
            db.execute("SELECT name FROM sqlite_master").fetchall()
            return db
        except READ_ERRORS:
            db.close()
    return None


def _connect(copy: str) -> Optional[sqlite3.Connection]:
    try:
        db = sqlite3.connect(copy)
        db.execute("PRAGMA query_only=1")
        # Trust the file's size over a header that claims more pages (a truncated file),
        # and skip schema entries that no longer parse, instead of refusing the file.
        db.execute("PRAGMA writable_schema=ON")
        return db
    except (sqlite3.Error, UnicodeError):
        return None


def _wal_page_size(wal: str) -> Optional[int]:
    try:
        with open(wal, "rb") as f:
            head = f.read(32)
    except OSError:
        return None
    if len(head) < 32 or struct.unpack(">I", head[:4])[0] not in (0x377F0682, 0x377F0683):
        return None
    size = struct.unpack(">I", head[8:12])[0]
    return size if 512 <= size <= 65536 and size & (size - 1) == 0 else None


def fresh_header(page_size: int, pages: int) -> bytes:
    """A valid 100-byte database header (sqlite.org/fileformat2.html, section 1.3): UTF-8,
    no free-list (its pages are merely orphaned), user_version 0."""
    return b"".join([
        MAGIC,
        struct.pack(">H", 1 if page_size == 65536 else page_size),
        bytes([1, 1, 0, 64, 32, 32]),       # rollback-journal versions, no reserved bytes
        struct.pack(">I", 1),                # file change counter
        struct.pack(">I", pages),            # database size in pages
        struct.pack(">II", 0, 0),            # free-list trunk page, free-list page count
        struct.pack(">I", 1),                # schema cookie
        struct.pack(">I", 4),                # schema format number
        struct.pack(">I", 0),                # default page cache size
        struct.pack(">I", 0),                # largest root page (no auto-vacuum)
        struct.pack(">I", 1),                # text encoding: UTF-8
        struct.pack(">I", 0),                # user_version
        struct.pack(">I", 0),                # incremental vacuum
        struct.pack(">I", 0),                # application id
        bytes(20),                           # reserved for expansion
        struct.pack(">I", 1),                # version-valid-for (= change counter)
        struct.pack(">I", sqlite3.sqlite_version_info[0] * 1000000
                    + sqlite3.sqlite_version_info[1] * 1000 + sqlite3.sqlite_version_info[2]),
    ])


def seed(store, salvage: Salvage) -> dict[str, int]:
    """Insert the salvaged rows into the (fresh) `store` in one commit, keeping their
    rowids (outbox order, transaction ids); returns the rows saved per table."""
    saved: dict[str, int] = {}
    with store.transaction():
        for table, rows in salvage.rows.items():
            count = 0
            for row in rows:
                names = list(row)
                cur = store.execute(
                    f'INSERT OR IGNORE INTO "{table}"({", ".join(names)}) '
                    f'VALUES({", ".join("?" * len(names))})', tuple(row.values()))
                count += max(cur.rowcount, 0)
            saved[table] = count
    return saved


def schema_of(db: sqlite3.Connection) -> dict[str, dict[str, tuple[str, bool]]]:
    """table -> column -> (declared type, not null) of a sound database (the fresh one)."""
    tables = [name for (name,) in db.execute(
        "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' "
        "ORDER BY rowid").fetchall()]
    return {t: {row[1]: (row[2], bool(row[3]) or bool(row[5]))
                for row in db.execute(f'PRAGMA table_info("{t}")')} for t in tables}

