"""RAVDESS speech set: ``Actor_XX/MM-VV-EE-II-SS-RR-AA.wav``, 8 emotions, folds by actor group.

File-name fields: modality (03 audio-only), vocal channel (01 speech, 02 song), emotion,
intensity (01 normal, 02 strong), statement, repetition, actor (odd male, even female).
"""

from __future__ import annotations

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
AUDIO_ONLY, SPEECH = "03", "01"
_NAME = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")


def audio_files(root: Path) -> list[Path]:
    """Every ``.wav`` below ``root`` (any depth: unzipped copies nest differently), no ``._*``."""
    return sorted(p for p in root.rglob("*.wav") if not p.name.startswith("._"))


def actor_of(path: Path) -> str | None:
    """``.../03-01-05-02-01-01-12.wav`` -> ``'12'``; None when the name is not RAVDESS's."""
    match = _NAME.match(path.stem)
    return match.group(7) if match else None


def list_utterances(
    root: str | Path, *, num_folds: int = 4, seed: int = 0, merge_calm: bool = False
) -> CorpusListing:
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
        modality, channel, emotion, intensity, statement, repetition, actor = match.groups()
        if modality != AUDIO_ONLY:
            listing.exclude(f"modality {modality} is not audio-only (03)", utt_id=path.stem, path=path)
        elif channel != SPEECH:
            listing.exclude("song (vocal channel 02), not speech", utt_id=path.stem, path=path)
        elif emotion not in EMOTIONS:
            listing.exclude(f"unknown emotion code {emotion}", utt_id=path.stem, path=path)
        else:
            label = EMOTIONS[emotion]
            listing.add(
                {
                    "utt_id": path.stem,
                    "path": str(path),
                    "label": "neutral" if merge_calm and label == "calm" else label,
                    "speaker": f"Actor_{actor}",
                    "gender": "male" if int(actor) % 2 else "female",
                    "intensity": "strong" if intensity == "02" else "normal",
                    "statement": int(statement),
                    "repetition": int(repetition),
                }
            )
    fold_of = assign_speaker_folds((row["speaker"] for row in listing.candidates), num_folds, seed)
    for row in listing.candidates:
        row["fold"] = fold_of[row["speaker"]]
    return listing


def folds(root: str | Path, num_folds: int = 4) -> list[int]:
    """The folds a tree yields: ``num_folds``, or fewer when it has fewer actors."""
    actors = {actor_of(p) for p in audio_files(Path(root))} - {None}
    return list(range(1, min(num_folds, len(actors)) + 1))
