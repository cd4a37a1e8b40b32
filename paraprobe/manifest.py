"""From a corpus config to ``manifest.tsv`` and ``excluded.tsv``.

The readers in :mod:`paraprobe.corpora` list candidate utterances; this module decodes
every candidate once through :func:`paraprobe.audio.load_audio` (so later stages can
trust every row), measures its duration, hashes its bytes, and handles bad audio as the
corpus's ``on_bad_audio`` says: ``error`` stops with the file and the reason, ``skip``
lists the file in ``excluded.tsv``.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from paraprobe.corpora import (
    CANDIDATE_COLUMNS,
    CorpusError,
    CorpusListing,
    check_speaker_independent_folds,
    csv_list,
    iemocap,
    ravdess,
)
from paraprobe.io import write_tsv
from paraprobe.progress import Progress

MANIFEST_COLUMNS = (*CANDIDATE_COLUMNS, "duration_s", "sha1")
EXCLUDED_COLUMNS = ("utt_id", "path", "reason")
#: Manifest columns that are not strings: how :func:`read_manifest` converts them.
NUMERIC_COLUMNS = {"fold": int, "duration_s": float}
#: Exclusion reasons an error about a corpus's usable utterances quotes (the most common first).
QUOTED_REASONS = 3


def synthetic_audio_root(outdir: str | Path, corpus: str) -> Path:
    """Where the ``synthetic`` format's generated RAVDESS-layout audio lives."""
    return Path(outdir) / corpus / "audio"


def list_corpus(corpus_config: dict, audio_root: str | Path | None = None) -> CorpusListing:
    """Run the reader named by ``corpus_config['format']``.

    ``audio_root`` is the generated tree of a ``synthetic`` corpus (read as RAVDESS).
    """
    kind = corpus_config["format"]
    if kind == "iemocap":
        return iemocap.list_utterances(corpus_config["root"], corpus_config["require_transcript"])
    if kind in ("ravdess", "synthetic"):
        root = corpus_config["root"] if kind == "ravdess" else audio_root
        return ravdess.list_utterances(
            root,
            num_folds=corpus_config["folds"],
            seed=corpus_config["seed"],
            merge_calm=corpus_config["merge_calm"],
        )
    if kind == "csv":
        return csv_list.list_utterances(
            corpus_config["manifest"], num_folds=corpus_config["folds"], seed=corpus_config["seed"]
        )
    raise CorpusError(f"unknown corpus format {kind!r}")


def corpus_folds(corpus_config: dict) -> list[int]:
    """The fold numbers a corpus will have, known before its manifest exists (for planning)."""
    kind = corpus_config["format"]
    if kind == "iemocap":
        return iemocap.folds(corpus_config["root"])
    if kind == "ravdess":
        return ravdess.folds(corpus_config["root"], corpus_config["folds"])
    if kind == "synthetic":
        return list(range(1, min(corpus_config["folds"], corpus_config["actors"]) + 1))
    if kind == "csv":
        return csv_list.folds(corpus_config["manifest"], corpus_config["folds"], corpus_config["seed"])
    raise CorpusError(f"unknown corpus format {kind!r}")


def corpus_input_files(corpus_config: dict) -> list[str]:
    """Files whose change changes a corpus's manifest (empty for a generated corpus).

    Under ``on_bad_audio: skip`` a listed file that does not exist is left out, so that the
    manifest job lists it in excluded.tsv (and reruns once it appears: the inputs change);
    otherwise Snakemake stops before any job, naming it.
    """
    kind = corpus_config["format"]
    if kind == "iemocap":
        files = iemocap.input_files(corpus_config["root"])
    elif kind == "ravdess":
        files = ravdess.audio_files(Path(corpus_config["root"]))
    elif kind == "csv":
        files = csv_list.input_files(corpus_config["manifest"])
    else:
        files = []
    if corpus_config.get("on_bad_audio") == "skip":
        files = [f for f in files if Path(f).exists()]
    return [str(f) for f in files]


def file_sha1(path: str | Path) -> str:
    """Hex SHA-1 of a file's bytes: the identity of an utterance's audio for reuse."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha1").hexdigest()


def measure_utterance(row: dict) -> dict:
    """Decode and validate one candidate; add ``duration_s`` and ``sha1``.

    Raises :class:`paraprobe.audio.BadAudioError` naming the file and the reason.
    """
    # Decoding (scipy) is imported where it runs: Snakemake imports this module to plan,
    # and planning reads only file names.
    from paraprobe.audio import TARGET_SAMPLE_RATE, BadAudioError, load_audio

    path = Path(row["path"])
    if not path.is_file():
        raise BadAudioError(path, "file not found")
    samples = load_audio(path)
    return {**row, "duration_s": round(samples.size / TARGET_SAMPLE_RATE, 6), "sha1": file_sha1(path)}


def build_manifest(
    listing: CorpusListing,
    on_bad_audio: str = "error",
    threads: int = 1,
    logger: logging.Logger | None = None,
    planned_folds: Iterable[int] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Measure every candidate; return (manifest, excluded) as data frames, sorted by ``utt_id``.

    With ``on_bad_audio='error'`` the first bad file raises :class:`paraprobe.audio.BadAudioError`;
    with ``'skip'`` it becomes a row of ``excluded``. ``planned_folds`` are the folds the workflow
    planned jobs for (:func:`corpus_folds`; default: the candidates' folds): each must be probeable.
    """
    from paraprobe.audio import BadAudioError  # with the decoding, as in measure_utterance

    logger = logger or logging.getLogger("paraprobe")
    excluded = list(listing.excluded)
    rows = []
    progress = Progress(len(listing.candidates), logger=logger, label="reading audio")

    def measure_or_exclude(row: dict) -> dict | None:
        try:
            return measure_utterance(row)
        except BadAudioError as error:
            if on_bad_audio != "skip":
                raise
            excluded.append({"utt_id": row["utt_id"], "path": row["path"], "reason": error.reason})
            return None
        finally:
            progress.update()

    listing.check_unique_ids()
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        rows = [r for r in pool.map(measure_or_exclude, listing.candidates) if r is not None]
    if not rows:
        raise CorpusError(
            f"{listing.source}: no usable utterances: {len(listing.candidates)} candidate(s), "
            f"{exclusion_summary(excluded)}"
        )
    labels = sorted({row["label"] for row in rows})
    if len(labels) < 2:
        raise CorpusError(
            f"{listing.source}: fewer than 2 labels ({', '.join(map(repr, labels))}) among the {len(rows)} "
            f"usable utterances ({exclusion_summary(excluded)}); probing needs at least 2 classes"
        )
    check_folds(rows, listing, excluded, planned_folds)
    warn_single_fold_labels(rows, listing.source, logger)
    manifest = pd.DataFrame(rows)
    extra = [c for c in manifest.columns if c not in MANIFEST_COLUMNS]
    manifest = manifest[[*MANIFEST_COLUMNS, *extra]].sort_values("utt_id", kind="stable")
    excluded_frame = pd.DataFrame(excluded, columns=EXCLUDED_COLUMNS).sort_values(["utt_id", "path"])
    logger.info(
        "%d utterances (%.1f h of audio), %d excluded",
        len(manifest),
        manifest["duration_s"].sum() / 3600,
        len(excluded_frame),
    )
    return manifest.reset_index(drop=True), excluded_frame.reset_index(drop=True)


def check_folds(
    rows: list[dict], listing: CorpusListing, excluded: list[dict], planned_folds: Iterable[int] | None = None
) -> None:
    """Raise :class:`CorpusError` naming the corpus's source if the folds cannot be probed: a
    speaker lies in two folds, a planned fold (default: every candidate's fold) has no usable
    utterance left (none listed in it, or all excluded), or holding a fold out for testing leaves
    fewer than 2 speakers to train and validate on (validation takes whole speakers).

    Checked here, before any model runs, rather than in a probe job hours later.
    """
    check_speaker_independent_folds([row["speaker"] for row in rows], [row["fold"] for row in rows], listing.source)
    speakers_by_fold: dict[int, set] = {}
    for row in rows:
        speakers_by_fold.setdefault(int(row["fold"]), set()).add(row["speaker"])
    candidate_folds = {int(row["fold"]) for row in listing.candidates}
    for fold in sorted(candidate_folds if planned_folds is None else set(planned_folds)):
        if fold not in candidate_folds:
            raise CorpusError(
                f"{listing.source}: fold {fold} has no utterance: the corpus's layout or config gives this fold, "
                "but the reader listed no candidate in it (for IEMOCAP: its session's label files, transcripts "
                "or 4-class labels)"
            )
        if fold not in speakers_by_fold:
            in_fold = {row["utt_id"] for row in listing.candidates if int(row["fold"]) == fold}
            raise CorpusError(
                f"{listing.source}: fold {fold} has no usable utterance: "
                f"{exclusion_summary([row for row in excluded if row['utt_id'] in in_fold])}"
            )
        others = set().union(*(speakers for other, speakers in speakers_by_fold.items() if other != fold))
        if len(others) < 2:
            raise CorpusError(
                f"{listing.source}: testing on fold {fold} leaves {len(others)} speaker(s) to train and validate on; "
                "speaker-independent validation needs at least 2 (more speakers, or fewer folds)"
            )


def warn_single_fold_labels(rows: list[dict], source: str, logger: logging.Logger) -> None:
    """Log a warning for each label whose utterances all lie in one fold.

    Cross-validation is speaker-independent, so such a label is never trained on when its fold
    is tested (its recall there is 0) and is absent from every other fold's test set: the
    probes' UA for this corpus cannot reach 1. A warning rather than an error, since a corpus
    may have it by design (one speaker acting a rare emotion).
    """
    folds_by_label: dict[str, set] = {}
    speakers_by_label: dict[str, set] = {}
    for row in rows:
        folds_by_label.setdefault(row["label"], set()).add(int(row["fold"]))
        speakers_by_label.setdefault(row["label"], set()).add(row["speaker"])
    for label, folds in sorted(folds_by_label.items()):
        if len(folds) == 1:
            (fold,) = folds
            speakers = sorted(speakers_by_label[label])
            logger.warning(
                "%s: label %r occurs only in fold %d (speaker(s) %s): no training fold has it when fold %d is "
                "tested, so its utterances there are always misclassified",
                source,
                label,
                fold,
                ", ".join(speakers),
                fold,
            )


def exclusion_summary(excluded: list[dict]) -> str:
    """``"5 excluded; most common reasons: 3x file not found, 2x ..."``, or ``"none excluded"``.

    For errors that stop a manifest build, and with it the writing of ``excluded.tsv``. A reason
    quoting its file's path counts with the same reason of other files (the path becomes ``<file>``).
    """
    if not excluded:
        return "none excluded"
    reasons = (row["reason"].replace(row["path"], "<file>") if row["path"] else row["reason"] for row in excluded)
    counts = Counter(reasons).most_common()
    quoted = ", ".join(f"{count}x {reason}" for reason, count in counts[:QUOTED_REASONS])
    more = f" and {len(counts) - QUOTED_REASONS} other reason(s)" if len(counts) > QUOTED_REASONS else ""
    return f"{len(excluded)} excluded; most common reasons: {quoted}{more}"


def write_manifest(
    corpus_config: dict,
    manifest_path: str | Path,
    excluded_path: str | Path,
    audio_root: str | Path | None = None,
    threads: int = 1,
    logger: logging.Logger | None = None,
) -> None:
    """List, measure and write one corpus's ``manifest.tsv`` and ``excluded.tsv``."""
    listing = list_corpus(corpus_config, audio_root)
    manifest, excluded = build_manifest(
        listing, corpus_config["on_bad_audio"], threads, logger, planned_folds=corpus_folds(corpus_config)
    )
    write_tsv(excluded, excluded_path)
    write_tsv(manifest, manifest_path)


def read_manifest(path: str | Path, columns: Iterable[str] = MANIFEST_COLUMNS) -> pd.DataFrame:
    """A ``manifest.tsv`` as written: every column a string, except ``fold`` (int) and ``duration_s`` (float).

    Nothing is inferred, so speakers ``01`` and ``1`` stay two speakers and utt_id ``0001``
    stays ``0001``. ``columns`` are the columns the caller needs. Raises ValueError naming
    the file when one is missing or a numeric column holds something else.
    """
    try:
        manifest = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: cannot be read as a manifest ({error})") from error
    missing = [column for column in columns if column not in manifest.columns]
    if missing:
        raise ValueError(f"{path}: manifest lacks column{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    for column, kind in NUMERIC_COLUMNS.items():
        if column not in manifest.columns:
            continue
        values = pd.to_numeric(manifest[column], errors="coerce")
        bad = ~np.isfinite(values) | ((values != values.round()) if kind is int else False)
        if bad.any():
            row = int(np.argmax(bad))
            number = "an integer" if kind is int else "a number"
            raise ValueError(f"{path}: {column} {manifest[column][row]!r} on line {row + 2} is not {number}")
        manifest[column] = values.astype(kind)
    return manifest


def total_audio_hours(manifest_path: str | Path) -> float:
    """Hours of audio a manifest lists: the sum of its ``duration_s`` over 3600.

    What every per-utterance stage's cost follows (job runtimes are sized from it).
    Raises ValueError naming the file when it has no ``duration_s`` column.
    """
    return float(read_manifest(manifest_path, ["duration_s"])["duration_s"].sum()) / 3600
