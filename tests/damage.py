"""Damage done to real SQLite files, the way a failing SD card does it, for the storage tests.

Where a test must show that what matters survives (queued messages, open transactions,
keys set by the CSMS), the damage is aimed with SQLite's `dbstat` table at pages that
hold none of it (the local authorization list, the cache, free pages): the salvage can
only keep rows whose pages can still be read, and the tests check it keeps all of those.
"""
from __future__ import annotations

import os
import random
import sqlite3
from pathlib import Path

import pytest

PAGE = 1024

#: Tables (and their indexes) whose rows a salvage must keep when their pages are intact.
PRECIOUS = ("sqlite_schema", "sqlite_master", "ocpp_config", "state", "transactions",
            "outbox", "outbox_dead", "tx_stop_data", "reservations", "charging_profiles",
            "sqlite_autoindex_ocpp_config_1", "sqlite_autoindex_state_1")

KINDS = ("truncated", "random pages", "bad header", "bad tail")


def page_owners(path: Path) -> dict[int, str]:
    """page number -> the table or index on it, for a sound database (free pages absent)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {page: name for name, page in db.execute("SELECT name, pageno FROM dbstat")}
    except sqlite3.OperationalError:
        pytest.skip("this SQLite has no dbstat table to aim the damage with")
    finally:
        db.close()


def spare_pages(path: Path) -> list[int]:
    """Pages that hold nothing precious, in order (page 1 never)."""
    owners = page_owners(path)
    total = os.path.getsize(path) // PAGE
    return [p for p in range(2, total + 1) if owners.get(p) not in PRECIOUS]


def damage(path: Path, kind: str, seed: int = 7) -> str:
    """Damage the database at `path` in one of KINDS (only spare pages but for the
    header); returns a description for failure messages."""
    size = os.path.getsize(path)
    pages = size // PAGE
    spare = spare_pages(path)
    rnd = random.Random(seed)
    with open(path, "r+b") as f:
        if kind == "truncated":
            tail = _spare_tail(spare, pages)
            assert len(tail) >= 3, f"too few spare pages at the end to cut: {tail}"
            cut = (tail[len(tail) // 2] - 1) * PAGE + 300      # mid-page: a torn write
            f.truncate(cut)
            return f"truncated from {size} to {cut} bytes"
        if kind == "random pages":
            chosen = sorted(rnd.sample(spare, min(6, len(spare))))
            for page in chosen:
                f.seek((page - 1) * PAGE)
                f.write(rnd.randbytes(PAGE))
            return f"pages {chosen} overwritten"
        if kind == "bad header":
            f.write(rnd.randbytes(100))
            return "header overwritten"
        if kind == "bad tail":
            tail = _spare_tail(spare, pages)[-4:]
            assert len(tail) == 4, f"too few spare pages at the end: {tail}"
            f.seek((tail[0] - 1) * PAGE)
            f.write(rnd.randbytes(len(tail) * PAGE))
            return f"last pages {tail} overwritten"
    raise ValueError(kind)


def _spare_tail(spare: list[int], pages: int) -> list[int]:
    """The run of spare pages that ends the file."""
    tail: list[int] = []
    for page in range(pages, 1, -1):
        if page not in spare:
            break
        tail.insert(0, page)
    return tail
