"""Corpus readers: a corpus on disk in, candidate utterances (and what was left out) out.

Each reader returns a :class:`CorpusListing`; :func:`paraprobe.manifest.build_manifest`
then measures and validates the audio and writes ``manifest.tsv`` and ``excluded.tsv``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: Columns every reader provides for every candidate utterance (more are allowed).
CANDIDATE_COLUMNS = ("utt_id", "path", "label", "speaker", "fold")


class CorpusError(ValueError):
    """A corpus that cannot be read as configured; the message names the file or key."""


@dataclass
class CorpusListing:
    """What a reader found: usable candidates and what it left out (with reasons)."""

    candidates: list[dict] = field(default_factory=list)
    excluded: list[dict] = field(default_factory=list)

    def exclude(self, reason: str, *, utt_id: str = "", path: str | Path = "") -> None:
        self.excluded.append({"utt_id": utt_id, "path": str(path), "reason": reason})


def assign_speaker_folds(speakers: Iterable[str], num_folds: int, seed: int) -> dict[str, int]:
    """Split speakers at random (from ``seed``) into ``num_folds`` groups of near-equal size.

    The split depends only on the set of speakers and the seed, not on their order.
    Returns speaker -> fold in 1..num_folds (fewer folds when there are fewer speakers).
    """
    unique = sorted(set(speakers))
    if not unique:
        return {}
    num_folds = min(num_folds, len(unique))
    order = np.random.default_rng(seed).permutation(len(unique))
    groups = np.array_split(order, num_folds)
    return {unique[i]: fold for fold, group in enumerate(groups, start=1) for i in group}


def check_unique_ids(candidates: list[dict], source: str | Path) -> None:
    """Raise :class:`CorpusError` naming the clashing files if two candidates share an ``utt_id``."""
    seen: dict[str, str] = {}
    for row in candidates:
        if row["utt_id"] in seen:
            raise CorpusError(
                f"{source}: utterance id {row['utt_id']!r} occurs twice "
                f"({seen[row['utt_id']]} and {row['path']})"
            )
        seen[row["utt_id"]] = row["path"]
