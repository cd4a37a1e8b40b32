"""Write tiny corpora in the exact on-disk layouts of the real ones (awkward parts included)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile
import yaml

from conftest import REPO

DEFAULT_SECONDS = 0.5


def write_tone(path: Path, seconds: float = DEFAULT_SECONDS, rate: int = 16_000, channels: int = 1,
               subtype: str = "PCM_16", frequency: float = 220.0) -> Path:
    """A short tone with a little noise, so no check takes it for silence."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(round(seconds * rate))) / rate
    signal = 0.3 * np.sin(2 * np.pi * frequency * t) + 0.01 * np.random.default_rng(0).standard_normal(t.size)
    data = np.repeat(signal[:, None], channels, axis=1) if channels > 1 else signal
    soundfile.write(path, data, rate, subtype=subtype)
    return path


def write_empty(path: Path, *_, **__) -> Path:
    """An empty file where a WAV goes (as :func:`write_tone` is called): planning reads only names."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    return path


# (utt_id, IEMOCAP code, has a transcript line)
IEMOCAP_UTTERANCES = [
    ("Ses01F_impro01_F000", "neu", True),
    ("Ses01F_impro01_M000", "exc", True),
    ("Ses01F_impro01_M001", "fru", True),  # not in the 4-class set
    ("Ses01F_impro01_F001", "hap", False),  # no transcript
    ("Ses01F_script01_1_F000", "ang", True),
    ("Ses01F_script01_1_M000", "sad", True),
    ("Ses01F_script01_1_M001", "xxx", True),  # no agreement
    ("Ses02M_impro03_F000", "sad", True),
    ("Ses02M_impro03_M000", "hap", True),
    ("Ses02M_impro03_M001", "ang", True),
    ("Ses02M_impro03_F001", "neu", True),
]


def write_iemocap(root: Path, utterances=IEMOCAP_UTTERANCES, write_audio=write_tone) -> Path:
    """IEMOCAP_full_release layout with evaluator lines, unlabelled turns and macOS debris.

    ``write_audio(path)`` writes each utterance's WAV (:func:`write_empty` for a tree only planned).
    """
    by_dialog: dict[tuple[str, str], list] = {}
    for utt_id, code, transcribed in utterances:
        session = f"Session{int(utt_id[3:5])}"
        by_dialog.setdefault((session, utt_id.rsplit("_", 1)[0]), []).append((utt_id, code, transcribed))
    for (session, dialog), rows in by_dialog.items():
        base = root / session
        labels = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
        transcripts = []
        for i, (utt_id, code, transcribed) in enumerate(rows):
            start, end = 2.0 * i + 1.2, 2.0 * i + 2.7
            labels += [
                f"[{start:.4f} - {end:.4f}]\t{utt_id}\t{code}\t[2.5000, 3.0000, 2.5000]",
                "C-E1:\tNeutral;\t()",
                "C-E2:\tFrustration; Anger;\t(angry, a bit)",
                "A-E3:\tval 3; act 2; dom  2;\t()",
                "",
            ]
            if transcribed:
                transcripts.append(f"{utt_id} [{start:08.4f}-{end:08.4f}]: Sentence number {i}.")
            write_audio(base / "sentences" / "wav" / dialog / f"{utt_id}.wav")
        transcripts.insert(1, f"{dialog}_MXX0 [000.5000-001.0000]: Unlabelled turn.")
        transcripts.append("M: [LAUGHTER]")
        evaluation = base / "dialog" / "EmoEvaluation"
        (evaluation / "Categorical").mkdir(parents=True, exist_ok=True)
        (evaluation / f"{dialog}.txt").write_text("\n".join(labels) + "\n")
        (evaluation / f"._{dialog}.txt").write_bytes(b"\x00\x05\x16\x07Mac OS X resource fork")
        (evaluation / "Categorical" / f"{dialog}_e1_cat.txt").write_text(
            f"[1.0 - 2.0]\t{rows[0][0]}\tsad\t[1, 1, 1]\n"
        )
        (evaluation / "Attribute").mkdir(exist_ok=True)
        (evaluation / "Attribute" / f"{dialog}_e1_atr.txt").write_text(f"{rows[0][0]} :act 3; val 2;\n")
        transcriptions = base / "dialog" / "transcriptions"
        transcriptions.mkdir(parents=True, exist_ok=True)
        (transcriptions / f"{dialog}.txt").write_text("\n".join(transcripts) + "\n")
        (transcriptions / f"._{dialog}.txt").write_bytes(b"\x00\x05\x16\x07")
    return root


def ravdess_name(emotion: int, intensity: int, statement: int, repetition: int, actor: int,
                 modality: int = 3, channel: int = 1) -> str:
    return f"{modality:02d}-{channel:02d}-{emotion:02d}-{intensity:02d}-{statement:02d}-{repetition:02d}-{actor:02d}.wav"


def ravdess_design(actor: int) -> list[str]:
    """RAVDESS's 60 speech file names of one actor (neutral only at normal intensity)."""
    names = []
    for emotion in range(1, 9):
        for intensity in (1,) if emotion == 1 else (1, 2):
            for statement in (1, 2):
                for repetition in (1, 2):
                    names.append(ravdess_name(emotion, intensity, statement, repetition, actor))
    return names


def write_ravdess(root: Path, actors=(1, 2, 3), seconds: float = DEFAULT_SECONDS, write_audio=write_tone) -> Path:
    """RAVDESS layout at 48 kHz: speech, song files, a stereo and a 24-bit file, macOS debris.

    ``write_audio`` is called as :func:`write_tone` (:func:`write_empty` for a tree only planned).
    """
    for actor in actors:
        folder = root / f"Actor_{actor:02d}"
        for i, name in enumerate(ravdess_design(actor)):
            stereo, deep = i == 1, i == 2
            write_audio(folder / name, seconds, rate=48_000, channels=2 if stereo else 1,
                        subtype="PCM_24" if deep else "PCM_16")
        write_audio(folder / ravdess_name(3, 1, 1, 1, actor, channel=2), seconds, rate=48_000)  # song
        (folder / f"._{ravdess_design(actor)[0]}").write_bytes(b"\x00\x05\x16\x07")
    return root


# The paper's corpora at their real sizes, for planning the full study (tests/test_paper_plan.py,
# bench/plan.py).
#: IEMOCAP's utterances with a transcript and a label in the 4-class set (excited merged
#: into happy), per session: 5,531 in all, as in the paper's setup.
IEMOCAP_SESSION_SIZES = {1: 1085, 2: 1023, 3: 1151, 4: 1031, 5: 1241}
IEMOCAP_CODES = ("neu", "ang", "sad", "hap", "exc")
UTTERANCES_PER_DIALOG = 30
RAVDESS_ACTORS = range(1, 25)  # 24 actors x 60 speech files = 1,440


def paper_iemocap_utterances() -> list[tuple[str, str, bool]]:
    """(utt_id, code, transcribed) of IEMOCAP-sized sessions, in dialogs of 30 turns."""
    utterances = []
    for session, size in IEMOCAP_SESSION_SIZES.items():
        for index in range(size):
            dialog, turn = divmod(index, UTTERANCES_PER_DIALOG)
            speaker = "FM"[dialog % 2]
            utt_id = f"Ses{session:02d}{speaker}_impro{dialog + 1:02d}_{'FM'[turn % 2]}{turn:03d}"
            utterances.append((utt_id, IEMOCAP_CODES[index % len(IEMOCAP_CODES)], True))
    return utterances


def write_paper_trees(folder: Path) -> tuple[Path, Path, Path]:
    """IEMOCAP and RAVDESS trees of the paper's sizes, and a config that points paper.yaml at them.

    The trees hold empty files where the WAVs go: planning reads names, never audio.
    Returns (IEMOCAP root, RAVDESS root, roots config); the roots config replaces
    configs/paper.yaml's ``corpora`` when given after it to ``--configfile``.
    """
    iemocap = write_iemocap(folder / "IEMOCAP_full_release", paper_iemocap_utterances(), write_audio=write_empty)
    ravdess = write_ravdess(folder / "RAVDESS", RAVDESS_ACTORS, write_audio=write_empty)
    corpora = yaml.safe_load((REPO / "configs" / "paper.yaml").read_text())["corpora"]
    corpora["iemocap"]["root"] = str(iemocap)
    corpora["ravdess"]["root"] = str(ravdess)
    roots = folder / "roots.yaml"
    roots.write_text(yaml.safe_dump({"corpora": corpora}))
    return iemocap, ravdess, roots
