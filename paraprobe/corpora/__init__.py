"""Corpus readers: a corpus on disk in, candidate utterances (and what was left out) out.

Each reader returns a :class:`CorpusListing`; :func:`paraprobe.manifest.build_manifest`
then measures and validates the audio and writes ``manifest.tsv`` and ``excluded.tsv``.
"""

from __future__ import annotations

import os
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
    """What a reader found in ``source`` (the corpus root or list file): usable candidates and
    what it left out (with reasons).

    Readers add rows with :meth:`add` and :meth:`exclude`, which record where each ``utt_id``
    was listed (``listed_at``: a file, or a file and line), so :meth:`check_unique_ids` can
    name every place an id occurs.
    """

    source: str = ""
    candidates: list[dict] = field(default_factory=list)
    excluded: list[dict] = field(default_factory=list)
    listed_at: dict[str, list[tuple[str, bool]]] = field(default_factory=dict)

    def add(self, row: dict, *, listed_at: str | Path = "") -> None:
        """A candidate utterance; ``listed_at`` (default: its audio path) is where the reader found it."""
        self.candidates.append(row)
        self.listed_at.setdefault(row["utt_id"], []).append((str(listed_at or row["path"]), True))

    def exclude(self, reason: str, *, utt_id: str = "", path: str | Path = "", listed_at: str | Path = "") -> None:
        """A file or utterance left out, and why."""
        self.excluded.append({"utt_id": utt_id, "path": printable_path(path), "reason": reason})
        if utt_id:
            self.listed_at.setdefault(utt_id, []).append((str(listed_at or path), False))

    def check_unique_ids(self) -> None:
        """Raise :class:`CorpusError` naming ``source``, the id and where it is listed if a
        candidate's ``utt_id`` is listed more than once (as a candidate or excluded, e.g. with a
        second, conflicting label). Ids listed several times but never a candidate are harmless.
        """
        duplicated = {
            utt_id: [where for where, _ in places]
            for utt_id, places in self.listed_at.items()
            if len(places) > 1 and any(is_candidate for _, is_candidate in places)
        }
        if not duplicated:
            return
        utt_id, places = next(iter(duplicated.items()))
        times = "twice" if len(places) == 2 else f"{len(places)} times"
        more = f"; {len(duplicated) - 1} more id(s) occur more than once" if len(duplicated) > 1 else ""
        raise CorpusError(f"{self.source}: utterance id {utt_id!r} occurs {times} ({' and '.join(places)}){more}")


def printable_path(path: str | Path) -> str:
    """``path`` as text that can be written to a UTF-8 file: bytes of a file name that are not
    UTF-8 (as some zip tools leave them) are shown as ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", errors="backslashreplace")


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


def check_speaker_independent_folds(speakers: Iterable[str], folds: Iterable[int], source: str | Path) -> None:
    """Raise :class:`CorpusError` naming ``source`` when a speaker's utterances lie in more than one fold.

    Cross-validation then tests on speakers seen in training, which the study rules out.
    """
    folds_of_speaker: dict[str, set[int]] = {}
    for speaker, fold in zip(speakers, folds, strict=True):
        folds_of_speaker.setdefault(str(speaker), set()).add(int(fold))
    shared = {speaker: sorted(f) for speaker, f in folds_of_speaker.items() if len(f) > 1}
    if shared:
        examples = "; ".join(f"speaker {s!r} in folds {f}" for s, f in sorted(shared.items())[:3])
        raise CorpusError(
            f"{source}: folds are not speaker-independent ({len(shared)} speakers in several folds: "
            f"{examples}); probing needs every speaker in exactly one fold"
        )
