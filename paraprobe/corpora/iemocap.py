"""IEMOCAP (``IEMOCAP_full_release``): the 4-class set of the paper, folds by session.

Layout read:
  ``Session{1..5}/dialog/EmoEvaluation/<dialog>.txt``: label lines
  ``[START - END]<TAB>utt_id<TAB>code<TAB>[V, A, D]``; evaluator lines (``C-...``, ``A-...``),
  headers and the ``Attribute``/``Categorical``/``Self-evaluation`` subfolders are not labels.
  ``Session*/sentences/wav/<dialog>/<utt_id>.wav``: 16 kHz audio.
  ``Session*/dialog/transcriptions/<dialog>.txt``: ``utt_id [start-end]: text``.
macOS ``._*`` resource-fork files are ignored everywhere.
"""

from __future__ import annotations

import re
from pathlib import Path

from paraprobe.corpora import CorpusError, CorpusListing

#: IEMOCAP code -> label; happy and excited are merged as in the paper and prior work.
LABELS = {"neu": "neutral", "hap": "happy", "exc": "happy", "ang": "angry", "sad": "sad"}

_LABEL_LINE = re.compile(r"^\[\s*[\d.]+\s*-\s*[\d.]+\s*\]\t(?P<utt_id>\S+)\t(?P<code>\S+)\t\[")
_TRANSCRIPT_LINE = re.compile(r"^(?P<utt_id>Ses\d\d[FM]_\S+)\s+\[[^\]]*\]:\s?(?P<text>.*)$")
_SESSION_DIR = re.compile(r"^Session(\d+)$")


def session_dirs(root: Path) -> dict[int, Path]:
    """Session number -> folder, for the ``Session<N>`` folders directly under ``root``; raises
    :class:`CorpusError` when there is none (while planning, so a wrong root stops ``snakemake -n``)."""
    sessions: dict[int, Path] = {}
    for child in sorted(root.iterdir()):
        match = _SESSION_DIR.match(child.name)
        if match and child.is_dir():
            number = int(match.group(1))
            if number in sessions:
                raise CorpusError(f"{root}: folders {sessions[number].name} and {child.name} are both session {number}")
            sessions[number] = child
    if not sessions:
        raise CorpusError(f"{root}: no Session<N> folders; is this IEMOCAP_full_release?")
    return dict(sorted(sessions.items()))


def speaker_of(utt_id: str) -> str:
    """``Ses01F_impro01_M003`` -> ``Ses01M``: session plus the gender letter of the last part.

    The dialog name's letter says who wore the markers, not who speaks this turn.
    """
    session = utt_id[:5]
    return f"{session}{utt_id.rsplit('_', 1)[-1][0]}"


def _visible_txt_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.txt") if p.is_file() and not p.name.startswith("._"))


def read_transcripts(session_dir: Path) -> dict[str, str]:
    """utt_id -> transcript text, from every dialog's transcription file in a session."""
    transcripts = {}
    for path in _visible_txt_files(session_dir / "dialog" / "transcriptions"):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            match = _TRANSCRIPT_LINE.match(line.strip())
            if match:
                transcripts[match.group("utt_id")] = match.group("text").strip()
    return transcripts


def read_label_file(path: Path) -> list[tuple[int, str, str]]:
    """(line number, utt_id, code) for every label line of one ``EmoEvaluation/<dialog>.txt``."""
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    matches = ((number, _LABEL_LINE.match(line)) for number, line in enumerate(lines, start=1))
    return [(number, m.group("utt_id"), m.group("code")) for number, m in matches if m]


def list_utterances(root: str | Path, require_transcript: bool = True) -> CorpusListing:
    """Candidates of the 4-class set; other labels and untranscribed utterances are excluded."""
    root = Path(root).resolve()
    sessions = session_dirs(root)
    listing = CorpusListing(source=str(root))
    for session, session_dir in sessions.items():
        labelled = set()
        transcripts = read_transcripts(session_dir)
        label_files = _visible_txt_files(session_dir / "dialog" / "EmoEvaluation")
        if not label_files:
            raise CorpusError(f"{session_dir / 'dialog' / 'EmoEvaluation'}: no label files")
        for label_file in label_files:
            dialog = label_file.stem
            for number, utt_id, code in read_label_file(label_file):
                labelled.add(utt_id)
                wav = session_dir / "sentences" / "wav" / dialog / f"{utt_id}.wav"
                where = f"{label_file} line {number}"
                if code not in LABELS:
                    reason = f"label {code!r} not in the 4-class set"
                    listing.exclude(reason, utt_id=utt_id, path=wav, listed_at=where)
                elif require_transcript and utt_id not in transcripts:
                    listing.exclude("no transcript", utt_id=utt_id, path=wav, listed_at=where)
                else:
                    listing.add(
                        {
                            "utt_id": utt_id,
                            "path": str(wav),
                            "label": LABELS[code],
                            "speaker": speaker_of(utt_id),
                            "fold": session,
                            "transcript": transcripts.get(utt_id, ""),
                        },
                        listed_at=where,
                    )
        for wav in session_wavs(session_dir):
            if wav.stem not in labelled:
                listing.exclude("no label line in the session's EmoEvaluation files", utt_id=wav.stem, path=wav)
    return listing


def session_wavs(session_dir: Path) -> list[Path]:
    """The utterance audio files of a session: ``sentences/wav/<dialog>/*.wav``."""
    return sorted(p for p in (session_dir / "sentences" / "wav").glob("*/*.wav") if not p.name.startswith("._"))


def folds(root: str | Path) -> list[int]:
    """The folds a tree yields: one per session present."""
    return list(session_dirs(Path(root)))


def input_files(root: str | Path) -> list[Path]:
    """Files whose change changes the manifest: label files, transcripts and audio."""
    files = []
    for session_dir in session_dirs(Path(root)).values():
        files += _visible_txt_files(session_dir / "dialog" / "EmoEvaluation")
        files += _visible_txt_files(session_dir / "dialog" / "transcriptions")
        files += session_wavs(session_dir)
    return files
