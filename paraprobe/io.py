"""Atomic output: nothing half-written is ever left where a later job would trust it."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    The rename is atomic on POSIX file systems, so readers see either the old file
    or the complete new one. The file's data reach the disk before the rename, and the rename
    before the return, so that after a crash of the machine a file under its final name is
    complete. On an exception the temporary file is removed.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    temporary = final.with_name(f".{final.name}.partial-{os.getpid()}")
    try:
        yield temporary
        _fsync(temporary)
        os.replace(temporary, final)
        with contextlib.suppress(OSError):  # some network file systems cannot sync a folder
            _fsync(final.parent)
    finally:
        temporary.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    """Flush a file's (or a folder's entries') data to the disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_tsv(frame: pd.DataFrame, path: str | Path) -> None:
    """Write a tab-separated table atomically, without the index."""
    with atomic_path(path) as temporary:
        frame.to_csv(temporary, sep="\t", index=False)


def read_tsv(path: str | Path) -> pd.DataFrame:
    """Read a table written by :func:`write_tsv`, numbers parsed as numbers (manifests, whose ids
    must stay strings, have :func:`paraprobe.manifest.read_manifest`)."""
    return pd.read_csv(path, sep="\t", keep_default_na=False, na_values=[""])
