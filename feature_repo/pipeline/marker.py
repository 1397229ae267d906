"""The mark that the source tables passed validation: materialization reads it without loading the validator."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from feature_repo.tables import TABLES

MARKER = ".validated.json"


def fingerprint(data_dir: Path) -> str:
    """Identity of the current source files (name, size, mtime): cheap, changes on rewrite."""
    h = hashlib.sha256()
    for table in TABLES:
        p = data_dir / f"{table}.parquet"
        st = p.stat() if p.exists() else None
        h.update(f"{table}:{st.st_size if st else -1}:{st.st_mtime_ns if st else -1};".encode())
    return h.hexdigest()


def mark_valid(data_dir: Path) -> None:
    """Record that the current files passed validation."""
    (data_dir / MARKER).write_text(json.dumps({"fingerprint": fingerprint(data_dir)}))


def is_marked_valid(data_dir: Path) -> bool:
    """True when the files are unchanged since they last passed validation."""
    marker = data_dir / MARKER
    if not marker.exists():
        return False
    try:
        return bool(json.loads(marker.read_text()).get("fingerprint") == fingerprint(data_dir))
    except (ValueError, OSError):
        return False


def clear_mark(data_dir: Path) -> None:
    """Forget an earlier pass (after a failure, or when files change)."""
    (data_dir / MARKER).unlink(missing_ok=True)
