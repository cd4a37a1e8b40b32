"""Any corpus listed in a CSV: ``path,label,speaker[,fold][,utt_id]``, paths relative to the CSV."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from paraprobe.corpora import CANDIDATE_COLUMNS, CorpusError, CorpusListing, assign_speaker_folds

REQUIRED_COLUMNS = ("path", "label", "speaker")


#: Columns stripped of surrounding whitespace (``"neu "`` and ``"neu"`` are one class) and
#: refused when empty; ``utt_id`` only where the CSV has it.
_STRIPPED_COLUMNS = (*REQUIRED_COLUMNS, "utt_id")


def read_listing_table(manifest: str | Path) -> pd.DataFrame:
    """The CSV as strings, indexed by line number; its required columns checked and stripped of
    surrounding whitespace."""
    manifest = Path(manifest)
    try:
        table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
        lines = [number for number, line in enumerate(manifest.read_text().splitlines(), start=1) if line.strip()]
    except Exception as error:
        raise CorpusError(f"{manifest}: cannot be read as CSV ({error})") from error
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise CorpusError(f"{manifest}: missing column(s) {', '.join(missing)}; need path,label,speaker[,fold]")
    # pandas skips blank lines: number the rows by the file's other lines (the first is the
    # header), unless quoted line breaks make the counts differ.
    table.index = lines[1:] if len(lines) == len(table) + 1 else table.index + 2
    for column in _STRIPPED_COLUMNS:
        if column in table.columns:
            table[column] = table[column].str.strip()
            empty = table.index[table[column] == ""]
            if len(empty):
                raise CorpusError(f"{manifest}: empty {column!r} on line {empty[0]}")
    return table


def _fold_numbers(table: pd.DataFrame, manifest: Path, num_folds: int, seed: int) -> list[int]:
    if "fold" not in table.columns:
        fold_of = assign_speaker_folds(table["speaker"], num_folds, seed)
        return [fold_of[s] for s in table["speaker"]]
    folds = pd.to_numeric(table["fold"], errors="coerce")
    bad = folds.index[folds.isna() | (folds != folds.round())]
    if len(bad):
        raise CorpusError(f"{manifest}: fold {table['fold'][bad[0]]!r} on line {bad[0]} is not an integer")
    below_one = folds.index[folds < 1]
    if len(below_one):
        values = sorted({int(f) for f in folds[below_one]})
        raise CorpusError(
            f"{manifest}: column 'fold' has value(s) {values} below 1 (first on line {below_one[0]}); "
            "folds are numbered from 1"
        )
    return [int(f) for f in folds]


def list_utterances(manifest: str | Path, *, num_folds: int = 5, seed: int = 0) -> CorpusListing:
    """Candidates from the CSV; without a fold column speakers go to ``num_folds`` folds by ``seed``."""
    manifest = Path(manifest)
    table = read_listing_table(manifest)
    if "utt_id" not in table.columns:
        table["utt_id"] = [str(Path(p).with_suffix("")) for p in table["path"]]
    table["fold"] = _fold_numbers(table, manifest, num_folds, seed)
    table["path"] = [str(audio_path(manifest, p)) for p in table["path"]]
    check_distinct_files(table, manifest)
    extra = [c for c in table.columns if c not in CANDIDATE_COLUMNS]
    listing = CorpusListing(source=str(manifest))
    for line, row in zip(table.index, table[[*CANDIDATE_COLUMNS, *extra]].to_dict("records")):
        listing.add(row, listed_at=f"{manifest} line {line}")
    return listing


def audio_path(manifest: Path, listed: str) -> Path:
    """The absolute path of an audio file the CSV lists (relative to the CSV's folder), with
    symlinks kept, so that messages and the manifest show the path as the user wrote it."""
    return Path(os.path.abspath(manifest.parent / listed))


def check_distinct_files(table: pd.DataFrame, manifest: Path) -> None:
    """Raise :class:`CorpusError` naming both lines when two rows list one audio file (after
    following symlinks): one recording under two ids could be trained and tested on."""
    first_line: dict[str, int] = {}
    for line, path in zip(table.index, table["path"]):
        real = os.path.realpath(path)
        if real in first_line:
            raise CorpusError(
                f"{manifest}: lines {first_line[real]} and {line} list the same audio file {path}; "
                "list each recording once"
            )
        first_line[real] = line


def folds(manifest: str | Path, num_folds: int = 5, seed: int = 0) -> list[int]:
    """The folds the CSV yields (its fold column, or the speaker grouping)."""
    manifest = Path(manifest)
    table = read_listing_table(manifest)
    return sorted(set(_fold_numbers(table, manifest, num_folds, seed)))


def input_files(manifest: str | Path) -> list[Path]:
    """The CSV and every audio file it lists."""
    manifest = Path(manifest)
    table = read_listing_table(manifest)
    return [manifest, *(audio_path(manifest, p) for p in table["path"])]
