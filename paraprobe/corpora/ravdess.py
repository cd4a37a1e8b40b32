"""RAVDESS speech set: ``Actor_XX/MM-VV-EE-II-SS-RR-AA.wav``, 8 emotions, folds by actor group.

File-name fields: modality (03 audio-only), vocal channel (01 speech, 02 song), emotion,
intensity (01 normal, 02 strong), statement, repetition, actor (odd male, even female).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from paraprobe.corpora import CorpusError, CorpusListing, assign_speaker_folds

EMOTIONS = {
    "01": "neutral",
    "02": "calm",
    "03": "happy",
    "04": "sad",
    "05": "angry",
    "06": "fearful",
    "07": "disgust",
    "08": "surprised",
}
INTENSITIES = {"01": "normal", "02": "strong"}
AUDIO_ONLY, SPEECH = "03", "01"
_NAME = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")


def audio_files(root: Path) -> list[Path]:
    """Every ``.wav`` (any case) below ``root``, no ``._*``: at any depth, since unzipped copies nest
    differently, and through symlinked folders (a corpus linked into place), each folder once."""
    files, seen = [], set()
    for folder, subfolders, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:  # a link back up the tree, or a second link to the same folder
            subfolders.clear()
            continue
        seen.add(real)
        files += [Path(folder, name) for name in names if name.lower().endswith(".wav") and not name.startswith("._")]
    return sorted(files)


def actor_of(path: Path) -> str | None:
    """``.../03-01-05-02-01-01-12.wav`` -> ``'12'``; None when the name is not that of a speech file
    the reader takes (so planning counts the actors the manifest will have)."""
    match = _NAME.match(path.stem)
    return match.group(7) if match and not exclusion_reason(*match.groups()) else None


def exclusion_reason(
    modality: str, channel: str, emotion: str, intensity: str, statement: str, repetition: str, actor: str
) -> str | None:
    """Why the file with these name fields is not a speech candidate; None when it is."""
    if modality != AUDIO_ONLY:
        return f"modality {modality} is not audio-only (03)"
    if channel != SPEECH:
        return "song (vocal channel 02), not speech"
    if emotion not in EMOTIONS:
        return f"unknown emotion code {emotion}"
    if intensity not in INTENSITIES:
        return f"unknown intensity code {intensity} (01 normal, 02 strong)"
    if actor == "00":
        return "actor 00 (RAVDESS numbers its actors from 01)"
    return None


def list_utterances(root: str | Path, *, num_folds: int = 4, seed: int = 0, merge_calm: bool = False) -> CorpusListing:
    """Speech candidates with emotion names; folds: actors split at random into ``num_folds`` groups."""
    root = Path(root).resolve()
    files = audio_files(root)
    if not files:
        raise CorpusError(f"{root}: no .wav files; expected Actor_XX/MM-VV-EE-II-SS-RR-AA.wav")
    listing = CorpusListing(source=str(root))
    for path in files:
        match = _NAME.match(path.stem)
        if not match:
            listing.exclude("file name is not MM-VV-EE-II-SS-RR-AA", path=path)
            continue
        reason = exclusion_reason(*match.groups())
        if reason:
            listing.exclude(reason, utt_id=path.stem, path=path)
            continue
        _, _, emotion, intensity, statement, repetition, actor = match.groups()
        label = EMOTIONS[emotion]
        listing.add(
            {
                "utt_id": path.stem,
                "path": str(path),
                "label": "neutral" if merge_calm and label == "calm" else label,
                "speaker": f"Actor_{actor}",
                "gender": "male" if int(actor) % 2 else "female",
                "intensity": INTENSITIES[intensity],
                "statement": int(statement),
                "repetition": int(repetition),
            }
        )
    fold_of = assign_speaker_folds((row["speaker"] for row in listing.candidates), num_folds, seed)
    for row in listing.candidates:
        row["fold"] = fold_of[row["speaker"]]
    return listing


def folds(root: str | Path, num_folds: int = 4) -> list[int]:
    """The folds a tree yields: ``num_folds``, or fewer when it has fewer actors; raises
    :class:`CorpusError` when it has no speech file (while planning, so a wrong root stops
    ``snakemake -n``)."""
    actors = {actor_of(p) for p in audio_files(Path(root))} - {None}
    if not actors:
        raise CorpusError(
            f"{Path(root).resolve()}: no RAVDESS speech file (Actor_XX/03-01-EE-II-SS-RR-AA.wav) below it"
        )
    return list(range(1, min(num_folds, len(actors)) + 1))
