"""Any corpus listed in a CSV: ``path,label,speaker[,fold][,utt_id]``, paths relative to the CSV."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from paraprobe.corpora import CorpusError, CorpusListing, assign_speaker_folds

REQUIRED_COLUMNS = ("path", "label", "speaker")


def read_listing_table(manifest: str | Path) -> pd.DataFrame:
    """The CSV as strings, with its required columns checked and ``label``/``speaker`` stripped of
    surrounding whitespace (``"neu "`` and ``"neu"`` are one class)."""
    manifest = Path(manifest)
    try:
        table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    except Exception as error:
        raise CorpusError(f"{manifest}: cannot be read as CSV ({error})") from error
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise CorpusError(f"{manifest}: missing column(s) {', '.join(missing)}; need path,label,speaker[,fold]")
    for column in ("label", "speaker"):
        table[column] = table[column].str.strip()
    for column in REQUIRED_COLUMNS:
        empty = table.index[table[column].str.strip() == ""]
        if len(empty):
            raise CorpusError(f"{manifest}: empty {column!r} on line {empty[0] + 2}")
    return table


def _fold_numbers(table: pd.DataFrame, manifest: Path, num_folds: int, seed: int) -> list[int]:
    if "fold" not in table.columns:
        fold_of = assign_speaker_folds(table["speaker"], num_folds, seed)
        return [fold_of[s] for s in table["speaker"]]
    folds = pd.to_numeric(table["fold"], errors="coerce")
    bad = folds.index[folds.isna() | (folds != folds.round())]
    if len(bad):
        raise CorpusError(f"{manifest}: fold {table['fold'][bad[0]]!r} on line {bad[0] + 2} is not an integer")
    below_one = folds.index[folds < 1]
    if len(below_one):
        values = sorted({int(f) for f in folds[below_one]})
        raise CorpusError(
            f"{manifest}: column 'fold' has value(s) {values} below 1 (first on line {below_one[0] + 2}); "
            "folds are numbered from 1"
        )
    return [int(f) for f in folds]


def list_utterances(manifest: str | Path, *, num_folds: int = 5, seed: int = 0) -> CorpusListing:
    """Candidates from the CSV; without a fold column speakers go to ``num_folds`` folds by ``seed``."""
    manifest = Path(manifest)
    table = read_listing_table(manifest)
    base = manifest.parent
    paths = [(base / p).resolve() for p in table["path"]]
    if "utt_id" in table.columns:
        utt_ids = list(table["utt_id"])
    else:
        utt_ids = [str(Path(p).with_suffix("")) for p in table["path"]]
    folds = _fold_numbers(table, manifest, num_folds, seed)
    extra = [c for c in table.columns if c not in (*REQUIRED_COLUMNS, "fold", "utt_id")]
    listing = CorpusListing(source=str(manifest))
    for i, path in enumerate(paths):
        row = {
            "utt_id": utt_ids[i],
            "path": str(path),
            "label": table["label"][i],
            "speaker": table["speaker"][i],
            "fold": folds[i],
        }
        row.update({c: table[c][i] for c in extra})
        listing.add(row, listed_at=f"{manifest} line {i + 2}")
    return listing


def folds(manifest: str | Path, num_folds: int = 5, seed: int = 0) -> list[int]:
    """The folds the CSV yields (its fold column, or the speaker grouping)."""
    manifest = Path(manifest)
    table = read_listing_table(manifest)
    return sorted(set(_fold_numbers(table, manifest, num_folds, seed)))


def input_files(manifest: str | Path) -> list[Path]:
    """The CSV and every audio file it lists."""
    manifest = Path(manifest)
    table = read_listing_table(manifest)
    return [manifest, *((manifest.parent / p).resolve() for p in table["path"])]
