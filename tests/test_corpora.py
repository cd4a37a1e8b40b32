import os
from collections import Counter
from pathlib import Path

import pytest

import pandas as pd

from corpus_trees import ravdess_design, ravdess_name, write_empty, write_iemocap, write_ravdess, write_tone
from paraprobe.audio import BadAudioError
from paraprobe.corpora import CorpusError, assign_speaker_folds
from paraprobe.io import read_tsv, write_tsv
from paraprobe.manifest import (
    MANIFEST_COLUMNS,
    build_manifest,
    corpus_folds,
    corpus_input_files,
    list_corpus,
    read_manifest,
    total_audio_hours,
    write_manifest,
)

IEMOCAP = {"format": "iemocap", "require_transcript": True, "on_bad_audio": "error"}
RAVDESS = {"format": "ravdess", "folds": 4, "seed": 0, "merge_calm": False, "on_bad_audio": "error"}


@pytest.fixture(scope="module")
def iemocap_root(tmp_path_factory):
    return write_iemocap(tmp_path_factory.mktemp("iemocap") / "IEMOCAP_full_release")


@pytest.fixture(scope="module")
def ravdess_root(tmp_path_factory):
    return write_ravdess(tmp_path_factory.mktemp("ravdess"))


def test_iemocap_four_classes_happy_and_excited_merged_folds_by_session(iemocap_root, tmp_path):
    write_manifest({**IEMOCAP, "root": str(iemocap_root)}, tmp_path / "m.tsv", tmp_path / "x.tsv")
    manifest = read_tsv(tmp_path / "m.tsv")
    assert list(manifest.columns[: len(MANIFEST_COLUMNS)]) == list(MANIFEST_COLUMNS)
    assert list(manifest["utt_id"]) == sorted(manifest["utt_id"])
    rows = manifest.set_index("utt_id")
    assert dict(rows["label"]) == {
        "Ses01F_impro01_F000": "neutral",
        "Ses01F_impro01_M000": "happy",  # exc
        "Ses01F_script01_1_F000": "angry",
        "Ses01F_script01_1_M000": "sad",
        "Ses02M_impro03_F000": "sad",
        "Ses02M_impro03_F001": "neutral",
        "Ses02M_impro03_M000": "happy",  # hap
        "Ses02M_impro03_M001": "angry",
    }
    assert rows.loc["Ses01F_impro01_M000", "speaker"] == "Ses01M"
    assert rows.loc["Ses02M_impro03_F000", "speaker"] == "Ses02F"
    assert Counter(rows["fold"]) == {1: 4, 2: 4}
    assert rows.loc["Ses01F_impro01_F000", "transcript"] == "Sentence number 0."
    assert rows["duration_s"].tolist() == [0.5] * 8
    assert all(len(h) == 40 for h in rows["sha1"])
    excluded = read_tsv(tmp_path / "x.tsv").set_index("utt_id")["reason"].to_dict()
    assert excluded == {
        "Ses01F_impro01_M001": "label 'fru' not in the 4-class set",
        "Ses01F_impro01_F001": "no transcript",
        "Ses01F_script01_1_M001": "label 'xxx' not in the 4-class set",
    }
    assert corpus_folds({**IEMOCAP, "root": str(iemocap_root)}) == [1, 2]


def test_iemocap_keeps_untranscribed_utterances_when_asked(iemocap_root):
    listing = list_corpus({**IEMOCAP, "root": str(iemocap_root), "require_transcript": False})
    assert "Ses01F_impro01_F001" in {row["utt_id"] for row in listing.candidates}
    assert len(listing.candidates) == 9


def test_ravdess_speech_only_labels_speakers_and_folds(ravdess_root, tmp_path):
    write_manifest({**RAVDESS, "root": str(ravdess_root)}, tmp_path / "m.tsv", tmp_path / "x.tsv", threads=2)
    manifest = read_tsv(tmp_path / "m.tsv")
    assert len(manifest) == 3 * 60
    assert set(manifest["utt_id"]) == {n[:-4] for a in (1, 2, 3) for n in ravdess_design(a)}
    assert Counter(manifest["label"]) == {
        "neutral": 12,
        **{e: 24 for e in ("calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")},
    }
    assert set(manifest["speaker"]) == {"Actor_01", "Actor_02", "Actor_03"}
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in manifest["path"])
    assert (manifest.groupby("speaker")["fold"].nunique() == 1).all()
    assert sorted(manifest.groupby("speaker")["fold"].first()) == [1, 2, 3]  # 3 actors: 3 folds
    row = manifest.set_index("utt_id").loc["03-01-05-02-01-01-03"]
    assert (row["label"], row["gender"], row["intensity"]) == ("angry", "male", "strong")
    assert manifest["duration_s"].tolist() == [0.5] * 180  # 48 kHz, stereo and 24-bit alike
    excluded = read_tsv(tmp_path / "x.tsv")
    assert Counter(excluded["reason"]) == {"song (vocal channel 02), not speech": 3}


def test_ravdess_names_outside_its_codes_are_excluded_with_the_reason(tmp_path):
    for actor in (1, 2, 3):
        write_tone(tmp_path / f"Actor_{actor:02d}" / ravdess_name(3, 1, 1, 1, actor))
        write_tone(tmp_path / f"Actor_{actor:02d}" / ravdess_name(4, 1, 1, 1, actor))
    write_tone(tmp_path / "Actor_01" / ravdess_name(5, 3, 1, 1, 1))
    write_tone(tmp_path / "Actor_00" / ravdess_name(5, 1, 1, 1, 0))
    listing = list_corpus({**RAVDESS, "root": str(tmp_path)})
    assert len(listing.candidates) == 6
    assert corpus_folds({**RAVDESS, "root": str(tmp_path)}) == [1, 2, 3]  # planned as listed: actor 00 is none
    assert {row["utt_id"]: row["reason"] for row in listing.excluded} == {
        "03-01-05-03-01-01-01": "unknown intensity code 03 (01 normal, 02 strong)",
        "03-01-05-01-01-01-00": "actor 00 (RAVDESS numbers its actors from 01)",
    }


def test_planning_a_tree_without_the_corpus_is_an_error_naming_it(tmp_path):
    write_tone(tmp_path / "Session1" / "sentences" / "wav" / "Ses01F_impro01" / "Ses01F_impro01_F000.wav")
    with pytest.raises(CorpusError, match=rf"^{tmp_path}: no RAVDESS speech file \(Actor_XX/"):
        corpus_folds({**RAVDESS, "root": str(tmp_path)})  # an IEMOCAP tree read as RAVDESS
    with pytest.raises(CorpusError, match=rf"^{tmp_path / 'Session1'}: no Session<N> folders"):
        corpus_folds({**IEMOCAP, "root": str(tmp_path / "Session1")})


def test_ravdess_merge_calm(ravdess_root):
    labels = Counter(
        r["label"] for r in list_corpus({**RAVDESS, "root": str(ravdess_root), "merge_calm": True}).candidates
    )
    assert labels["neutral"] == 36 and "calm" not in labels


def test_ravdess_actors_split_into_four_groups_of_six():
    speakers = [f"Actor_{a:02d}" for a in range(1, 25)]
    folds = assign_speaker_folds(speakers, 4, seed=0)
    assert Counter(folds.values()) == {1: 6, 2: 6, 3: 6, 4: 6}
    assert folds == assign_speaker_folds(reversed(speakers), 4, seed=0)  # order does not matter
    assert folds != assign_speaker_folds(speakers, 4, seed=1)


def test_csv_paths_relative_to_the_csv_and_folds_by_speaker(tmp_path):
    for name in ("a1", "a2", "b1", "c1", "d1"):
        write_tone(tmp_path / "audio" / f"{name}.wav")
    csv = tmp_path / "list.csv"
    csv.write_text(
        "path,label,speaker,session\naudio/a1.wav,happy,A,x\naudio/a2.wav,sad,A,y\n"
        "audio/b1.wav,sad,B,x\naudio/c1.wav,happy,C,z\naudio/d1.wav,sad,D,z\n"
    )
    config = {"format": "csv", "manifest": str(csv), "folds": 2, "seed": 0, "on_bad_audio": "error"}
    write_manifest(config, tmp_path / "m.tsv", tmp_path / "x.tsv")
    manifest = read_tsv(tmp_path / "m.tsv")
    assert list(manifest["utt_id"]) == ["audio/a1", "audio/a2", "audio/b1", "audio/c1", "audio/d1"]
    assert manifest["path"][0] == str((tmp_path / "audio" / "a1.wav").resolve())
    assert list(manifest["session"]) == ["x", "y", "x", "z", "z"]
    assert manifest.groupby("speaker")["fold"].nunique().max() == 1
    assert sorted(set(manifest["fold"])) == corpus_folds(config) == [1, 2]


def test_csv_fold_column_is_used_as_given(tmp_path):
    write_tone(tmp_path / "a.wav")
    csv = tmp_path / "list.csv"
    csv.write_text("path,label,speaker,fold\na.wav,happy,A,3\n")
    listing = list_corpus({"format": "csv", "manifest": str(csv), "folds": 5, "seed": 0})
    assert listing.candidates[0]["fold"] == 3


@pytest.mark.parametrize(
    "content,message",
    [
        ("path,label\na.wav,happy\n", "missing column(s) speaker"),
        ("path,label,speaker\na.wav,,A\n", "empty 'label' on line 2"),
        ("path,label,speaker,fold\na.wav,happy,A,one\n", "fold 'one' on line 2 is not an integer"),
        ("path,label,speaker,fold\na.wav,happy,A,1\nb.wav,sad,B,0\n", "column 'fold' has value(s) [0] below 1"),
        ("path,label,speaker,fold\na.wav,happy,A,-2\nb.wav,sad,B,0\n", "column 'fold' has value(s) [-2, 0] below 1"),
        ("path,label,speaker,utt_id\na.wav,happy,A,u1\nb.wav,sad,B, \n", "empty 'utt_id' on line 3"),
        ("path,label,speaker\n\na.wav,happy,A\n\nb.wav,,B\n", "empty 'label' on line 5"),  # blank lines count
        ("\npath,label,speaker\na.wav,happy,A\n,,\n", "empty 'path' on line 4"),  # a blank line before the header
    ],
)
def test_csv_errors_name_the_file_and_the_problem(tmp_path, content, message):
    csv = tmp_path / "list.csv"
    csv.write_text(content)
    config = {"format": "csv", "manifest": str(csv), "folds": 5, "seed": 0}
    for step in (list_corpus, corpus_folds):  # building the manifest, and planning its folds
        with pytest.raises(CorpusError) as raised:
            step(config)
        assert str(csv) in str(raised.value) and message in str(raised.value)


def test_csv_labels_and_speakers_are_stripped_of_surrounding_whitespace(tmp_path):
    for name in ("a", "b", "c", "d", "e"):
        write_tone(tmp_path / f"{name}.wav")
    csv = tmp_path / "list.csv"
    csv.write_text("path,label,speaker\na.wav,neu ,A\nb.wav, neu, A\nc.wav,sad,B \nd.wav,sad,C\ne.wav,neu,D\n")
    manifest, _ = build_manifest(list_corpus({"format": "csv", "manifest": str(csv), "folds": 2, "seed": 0}))
    assert list(manifest["label"]) == ["neu", "neu", "sad", "sad", "neu"]
    assert list(manifest["speaker"]) == ["A", "A", "B", "C", "D"]
    assert manifest.groupby("speaker")["fold"].nunique().max() == 1


def test_csv_duplicate_utt_id_names_the_id_and_both_lines(tmp_path):
    csv = tmp_path / "list.csv"
    csv.write_text("path,label,speaker,utt_id\na.wav,happy,A,u\nb.wav,sad,B,v\nc.wav,sad,A, u\n")
    with pytest.raises(CorpusError) as raised:
        build_manifest(list_corpus({"format": "csv", "manifest": str(csv), "folds": 5, "seed": 0}))
    assert str(raised.value) == f"{csv}: utterance id 'u' occurs twice ({csv} line 2 and {csv} line 4)"


def test_csv_one_recording_under_two_ids_is_an_error(tmp_path):
    write_tone(tmp_path / "audio" / "a.wav")
    (tmp_path / "linked.wav").symlink_to(tmp_path / "audio" / "a.wav")
    csv = tmp_path / "list.csv"
    for second in ("./audio/a.wav", "linked.wav"):
        csv.write_text(f"path,label,speaker,utt_id\naudio/a.wav,happy,A,u\nb.wav,sad,B,v\n{second},sad,C,w\n")
        with pytest.raises(CorpusError) as raised:
            list_corpus({"format": "csv", "manifest": str(csv), "folds": 5, "seed": 0})
        assert str(raised.value) == (
            f"{csv}: lines 2 and 4 list the same audio file {tmp_path / second.removeprefix('./')}; "
            "list each recording once"
        )


def test_csv_paths_keep_their_symlinks(tmp_path):
    write_tone(tmp_path / "store" / "a.wav")
    (tmp_path / "a.wav").symlink_to(tmp_path / "store" / "a.wav")
    csv = tmp_path / "list.csv"
    csv.write_text("path,label,speaker\n a.wav ,happy,A\n")
    listing = list_corpus({"format": "csv", "manifest": str(csv), "folds": 5, "seed": 0})
    assert [row["path"] for row in listing.candidates] == [str(tmp_path / "a.wav")]


def test_csv_speaker_in_two_folds_is_refused_before_any_model_runs(tmp_path):
    for name in ("a", "b", "c", "d"):
        write_tone(tmp_path / f"{name}.wav")
    csv = tmp_path / "list.csv"
    csv.write_text("path,label,speaker,fold\na.wav,x,A,1\nb.wav,y,A,2\nc.wav,x,C,2\nd.wav,y,D,3\n")
    with pytest.raises(CorpusError) as raised:
        build_manifest(list_corpus({"format": "csv", "manifest": str(csv), "folds": 3, "seed": 0}))
    assert str(raised.value) == (
        f"{csv}: folds are not speaker-independent (1 speakers in several folds: speaker 'A' in folds [1, 2]); "
        "probing needs every speaker in exactly one fold"
    )


@pytest.mark.parametrize("second_code", ["neu", "ang", "fru"])
def test_iemocap_utterance_labelled_twice_is_an_error(tmp_path, second_code):
    # the same turn twice in one EmoEvaluation file: again, with a conflicting label, or one outside the set
    root = write_iemocap(tmp_path / "IEMOCAP_full_release")
    label_file = root / "Session1" / "dialog" / "EmoEvaluation" / "Ses01F_impro01.txt"
    label_file.write_text(label_file.read_text() + f"[9.0 - 10.0]\tSes01F_impro01_F000\t{second_code}\t[1, 1, 1]\n")
    lines = label_file.read_text().splitlines()
    numbers = [i for i, line in enumerate(lines, start=1) if "\tSes01F_impro01_F000\t" in line]
    with pytest.raises(CorpusError) as raised:
        build_manifest(list_corpus({**IEMOCAP, "root": str(root)}))
    assert str(raised.value) == (
        f"{root.resolve()}: utterance id 'Ses01F_impro01_F000' occurs twice "
        f"({label_file.resolve()} line {numbers[0]} and {label_file.resolve()} line {numbers[1]})"
    )


def test_ravdess_same_file_in_two_folders_is_an_error(tmp_path):
    name = ravdess_name(3, 1, 1, 1, 1)
    for folder in ("Actor_01", "copy/Actor_01"):
        write_tone(tmp_path / folder / name)
    write_tone(tmp_path / "Actor_02" / ravdess_name(4, 1, 1, 1, 2))
    with pytest.raises(CorpusError, match=rf"{tmp_path}: utterance id '{name[:-4]}' occurs twice"):
        build_manifest(list_corpus({**RAVDESS, "root": str(tmp_path)}))


def test_ravdess_reads_symlinked_actor_folders_and_upper_case_names(tmp_path):
    store, root = tmp_path / "store", tmp_path / "ravdess"
    write_ravdess(store, actors=(1, 2), write_audio=write_empty)
    root.mkdir()
    for actor in ("Actor_01", "Actor_02"):
        (root / actor).symlink_to(store / actor)
    (root / "Actor_02" / "loop").symlink_to(root)  # a link back up the tree is read once
    write_empty(root / "Actor_03" / ravdess_name(5, 1, 1, 1, 3).replace(".wav", ".WAV"))
    listing = list_corpus({**RAVDESS, "root": str(root)})
    assert Counter(row["speaker"] for row in listing.candidates) == {"Actor_01": 60, "Actor_02": 60, "Actor_03": 1}
    assert corpus_folds({**RAVDESS, "root": str(root)}) == [1, 2, 3]
    assert str(root / "Actor_01" / ravdess_design(1)[0]) in {row["path"] for row in listing.candidates}


def test_a_file_name_that_is_not_utf8_is_excluded_and_written(tmp_path):
    root = write_ravdess(tmp_path / "ravdess", actors=(1, 2, 3))
    (root / "Actor_01" / os.fsdecode(b"notes\xff.wav")).write_bytes(b"")
    write_manifest({**RAVDESS, "root": str(root)}, tmp_path / "m.tsv", tmp_path / "x.tsv")
    excluded = read_tsv(tmp_path / "x.tsv")
    assert excluded["path"].str.endswith("notes\\xff.wav").sum() == 1


def test_iemocap_session_without_candidates_is_refused_when_the_manifest_is_built(tmp_path):
    root = write_iemocap(tmp_path / "IEMOCAP_full_release")
    write_iemocap(root, [("Ses03F_impro01_F000", "fru", True), ("Ses03F_impro01_M000", "xxx", True)])
    with pytest.raises(CorpusError) as raised:
        write_manifest({**IEMOCAP, "root": str(root)}, tmp_path / "m.tsv", tmp_path / "x.tsv")
    assert str(raised.value).startswith(f"{root}: fold 3 has no utterance: the corpus's layout or config gives")


def test_iemocap_two_folders_of_one_session_are_an_error(tmp_path):
    root = write_iemocap(tmp_path / "IEMOCAP_full_release")
    (root / "Session01").mkdir()
    with pytest.raises(CorpusError, match=r"folders Session01 and Session1 are both session 1"):
        list_corpus({**IEMOCAP, "root": str(root)})


def test_iemocap_audio_without_a_label_line_is_listed_as_excluded(tmp_path):
    root = write_iemocap(tmp_path / "IEMOCAP_full_release")
    write_tone(root / "Session1" / "sentences" / "wav" / "Ses01F_impro01" / "Ses01F_impro01_MXX0.wav")
    listing = list_corpus({**IEMOCAP, "root": str(root)})
    assert {"utt_id": "Ses01F_impro01_MXX0", "reason": "no label line in the session's EmoEvaluation files"} in [
        {key: row[key] for key in ("utt_id", "reason")} for row in listing.excluded
    ]


def single_label_corpus(reader: str, folder: Path) -> tuple[dict, Path]:
    """A corpus config of ``reader`` whose every usable utterance is neutral, and the source it names."""
    if reader == "iemocap":
        utterances = [
            ("Ses01F_impro01_F000", "neu", True),
            ("Ses02F_impro01_M000", "neu", True),
            ("Ses02F_impro01_M001", "fru", True),
        ]
        root = write_iemocap(folder / "IEMOCAP_full_release", utterances)
        return {**IEMOCAP, "root": str(root)}, root.resolve()
    if reader == "ravdess":
        for actor in (1, 2):
            write_tone(folder / f"Actor_{actor:02d}" / ravdess_name(1, 1, 1, 1, actor))
        return {**RAVDESS, "root": str(folder)}, folder.resolve()
    for name in ("a", "b"):
        write_tone(folder / f"{name}.wav")
    (folder / "list.csv").write_text("path,label,speaker\na.wav,neutral,A\nb.wav,neutral,B\n")
    return {"format": "csv", "manifest": str(folder / "list.csv"), "folds": 2, "seed": 0}, folder / "list.csv"


@pytest.mark.parametrize("reader", ["iemocap", "ravdess", "csv"])
def test_a_corpus_with_a_single_label_is_refused_naming_its_source(tmp_path, reader):
    config, source = single_label_corpus(reader, tmp_path)
    with pytest.raises(CorpusError) as raised:
        write_manifest({**config, "on_bad_audio": "error"}, tmp_path / "m.tsv", tmp_path / "x.tsv")
    assert str(raised.value).startswith(f"{source}: fewer than 2 labels ('neutral') among the 2 usable utterances")
    assert "probing needs at least 2 classes" in str(raised.value)
    assert not (tmp_path / "m.tsv").exists()


def test_a_single_label_left_after_skipping_bad_audio_is_refused_with_the_reasons(tmp_path):
    write_tone(tmp_path / "a.wav")
    write_tone(tmp_path / "b.wav")
    (tmp_path / "c.wav").write_bytes(b"not audio")
    csv = tmp_path / "list.csv"
    csv.write_text("path,label,speaker\na.wav,neu,A\nb.wav,neu,B\nc.wav,sad,C\n")
    with pytest.raises(CorpusError) as raised:
        build_manifest(list_corpus({"format": "csv", "manifest": str(csv), "folds": 2, "seed": 0}), "skip")
    message = str(raised.value)
    assert message.startswith(f"{csv}: fewer than 2 labels ('neu') among the 2 usable utterances (1 excluded; ")
    assert "most common reasons: 1x unreadable" in message


def test_bad_audio_stops_the_job_or_is_listed_as_excluded(tmp_path):
    write_tone(tmp_path / "good.wav")
    write_tone(tmp_path / "short.wav", seconds=0.01)
    (tmp_path / "broken.wav").write_bytes(b"not audio")
    csv = tmp_path / "list.csv"
    for name in ("good_b", "good_c", "good_d"):
        write_tone(tmp_path / f"{name}.wav")
    csv.write_text(
        "path,label,speaker\ngood.wav,a,A\nshort.wav,a,A\nbroken.wav,b,B\nmissing.wav,b,B\ngood_b.wav,b,B\n"
        "good_c.wav,a,C\ngood_d.wav,b,D\n"
    )
    listing = lambda: list_corpus({"format": "csv", "manifest": str(csv), "folds": 2, "seed": 0})
    with pytest.raises(BadAudioError) as raised:
        build_manifest(listing(), on_bad_audio="error")
    assert str(tmp_path) in str(raised.value)
    manifest, excluded = build_manifest(listing(), on_bad_audio="skip")
    assert list(manifest["utt_id"]) == ["good", "good_b", "good_c", "good_d"]
    reasons = dict(zip(excluded["utt_id"], excluded["reason"]))
    assert reasons["short"].startswith("too short (160 samples")
    assert reasons["broken"].startswith("unreadable")
    assert reasons["missing"] == "file not found"


def test_no_usable_utterance_is_an_error_naming_the_corpus_and_the_commonest_reasons(tmp_path):
    for name in ("b1", "b2", "b3"):
        (tmp_path / f"{name}.wav").write_bytes(b"")
    write_tone(tmp_path / "short.wav", seconds=0.01)
    csv = tmp_path / "list.csv"
    rows = ["b1.wav,a,A", "b2.wav,a,A", "b3.wav,b,B", "gone1.wav,a,A", "gone2.wav,b,B", "short.wav,b,B", "x.mp3,a,A"]
    csv.write_text("path,label,speaker\n" + "\n".join(rows) + "\n")
    (tmp_path / "x.mp3").write_bytes(b"ID3")
    with pytest.raises(CorpusError) as raised:
        build_manifest(list_corpus({"format": "csv", "manifest": str(csv), "folds": 2, "seed": 0}), "skip")
    message = str(raised.value)
    assert message.startswith(
        f"{csv}: no usable utterances: 7 candidate(s), 7 excluded; most common reasons: "
        "3x unreadable (Error opening '<file>': Format not recognised.), 2x file not found, 1x "
    )
    assert message.endswith(" and 1 other reason(s)")


def test_read_manifest_keeps_ids_and_speakers_exactly_as_written(tmp_path):
    written = pd.DataFrame(
        {
            "utt_id": ["0001", "1", "1e3", "010"],
            "path": ["/a/0001.wav", "/a/1.wav", "/a/1e3.wav", "/a/010.wav"],
            "label": ["1", "01", "1.0", "0"],
            "speaker": ["01", "1", "001", "1.0"],
            "fold": [1, 2, 3, 4],
            "duration_s": [0.5, 1.25, 2.0, 3.5],
            "sha1": ["0" * 40, "1" * 40, "0123" * 10, "9e9" + "0" * 37],
            "note": ["NA", "nan", "null", "True"],  # not missing values, nor a boolean
        }
    )
    write_tsv(written, tmp_path / "manifest.tsv")
    manifest = read_manifest(tmp_path / "manifest.tsv")
    pd.testing.assert_frame_equal(manifest, written)
    assert manifest["speaker"].nunique() == 4
    assert manifest["fold"].dtype == "int64" and manifest["duration_s"].dtype == "float64"


def test_write_manifest_keeps_speakers_01_and_1_apart(tmp_path):
    for name in ("a", "b", "c", "d"):
        write_tone(tmp_path / f"{name}.wav")
    csv = tmp_path / "list.csv"
    csv.write_text("path,label,speaker,utt_id\na.wav,x,01,0001\nb.wav,y,1,0002\nc.wav,x,2,1\nd.wav,y,02,10\n")
    config = {"format": "csv", "manifest": str(csv), "folds": 4, "seed": 0, "on_bad_audio": "error"}
    write_manifest(config, tmp_path / "manifest.tsv", tmp_path / "excluded.tsv")
    manifest = read_manifest(tmp_path / "manifest.tsv")
    assert list(manifest["utt_id"]) == ["0001", "0002", "1", "10"]
    assert list(manifest["speaker"]) == ["01", "1", "2", "02"]
    assert manifest["fold"].nunique() == 4  # four speakers, four folds


@pytest.mark.parametrize(
    "content,message",
    [
        ("utt_id\tlabel\nu\tx\n", "manifest lacks columns speaker, fold"),
        ("utt_id\tlabel\tspeaker\tfold\nu\tx\tA\t1.5\n", "fold '1.5' on line 2 is not an integer"),
        ("utt_id\tlabel\tspeaker\tfold\tduration_s\nu\tx\tA\t1\t\n", "duration_s '' on line 2 is not a number"),
    ],
)
def test_read_manifest_names_the_file_and_the_problem(tmp_path, content, message):
    (tmp_path / "manifest.tsv").write_text(content)
    with pytest.raises(ValueError) as raised:
        read_manifest(tmp_path / "manifest.tsv", ("utt_id", "label", "speaker", "fold"))
    assert str(raised.value) == f"{tmp_path / 'manifest.tsv'}: {message}"


def test_ravdess_without_wav_files_is_an_error(tmp_path):
    with pytest.raises(CorpusError, match="no .wav files"):
        list_corpus({**RAVDESS, "root": str(tmp_path)})


def test_total_audio_hours_sums_the_measured_durations(tmp_path):
    for name, seconds in (("a", 0.5), ("b", 1.25), ("c", 2.0), ("d", 0.25)):
        write_tone(tmp_path / f"{name}.wav", seconds=seconds)
    csv = tmp_path / "list.csv"
    csv.write_text("path,label,speaker\na.wav,x,A\nb.wav,x,B\nc.wav,y,C\nd.wav,y,D\n")
    write_manifest(
        {"format": "csv", "manifest": str(csv), "folds": 2, "seed": 0, "on_bad_audio": "error"},
        tmp_path / "manifest.tsv",
        tmp_path / "excluded.tsv",
    )
    assert total_audio_hours(tmp_path / "manifest.tsv") == pytest.approx(4.0 / 3600)


def test_total_audio_hours_names_a_manifest_without_durations(tmp_path):
    (tmp_path / "manifest.tsv").write_text("utt_id\tpath\na\ta.wav\n")
    with pytest.raises(ValueError, match=r"manifest\.tsv: manifest lacks column duration_s"):
        total_audio_hours(tmp_path / "manifest.tsv")


def test_a_missing_listed_file_is_an_input_unless_bad_audio_is_skipped(tmp_path):
    write_tone(tmp_path / "here.wav")
    listing = tmp_path / "list.csv"
    listing.write_text("path,label,speaker\nhere.wav,a,S1\ngone.wav,b,S2\n")
    corpus = {"format": "csv", "manifest": str(listing)}
    listed = [str(listing), str(tmp_path / "here.wav"), str(tmp_path / "gone.wav")]
    # Snakemake then stops before any job, naming gone.wav as a missing input.
    assert corpus_input_files({**corpus, "on_bad_audio": "error"}) == listed
    # The manifest job runs and lists gone.wav in excluded.tsv; its appearing changes the inputs.
    assert corpus_input_files({**corpus, "on_bad_audio": "skip"}) == listed[:2]


def test_a_fold_that_cannot_be_probed_is_refused_when_the_manifest_is_built(tmp_path):
    for name in ("a", "b", "c", "d"):
        write_tone(tmp_path / f"{name}.wav")
    csv = tmp_path / "list.csv"
    csv.write_text("path,label,speaker,fold\na.wav,x,A,1\nb.wav,y,B,2\nc.wav,x,C,2\nd.wav,y,D,3\n")
    corpus = {"format": "csv", "manifest": str(csv), "folds": 3, "seed": 0}
    build_manifest(list_corpus(corpus))  # testing on any fold leaves 2 or 3 speakers
    write_tone(tmp_path / "a.wav", seconds=0.01)  # fold 1's only file, too short
    with pytest.raises(CorpusError) as raised:
        build_manifest(list_corpus(corpus), on_bad_audio="skip")
    assert (
        str(raised.value)
        == f"{csv}: fold 1 has no usable utterance: 1 excluded; most common reasons: 1x too short (160 samples at 16000 Hz; at least 400 needed, the wav2vec2 receptive field)"
    )
    csv.write_text("path,label,speaker,fold\nb.wav,y,B,2\nc.wav,x,C,2\nd.wav,y,D,3\n")
    with pytest.raises(CorpusError) as raised:
        build_manifest(list_corpus(corpus))
    assert str(raised.value) == (
        f"{csv}: testing on fold 2 leaves 1 speaker(s) to train and validate on; "
        "speaker-independent validation needs at least 2 (more speakers, or fewer folds)"
    )


def test_a_label_confined_to_one_fold_is_warned_about(tmp_path, caplog):
    for name in ("a", "b", "c", "d", "e"):
        write_tone(tmp_path / f"{name}.wav")
    csv = tmp_path / "list.csv"
    csv.write_text("path,label,speaker,fold\na.wav,x,A,1\nb.wav,y,B,1\nc.wav,x,C,2\nd.wav,y,D,3\ne.wav,z,E,3\n")
    corpus = {"format": "csv", "manifest": str(csv), "folds": 3, "seed": 0}
    with caplog.at_level("WARNING", logger="paraprobe"):
        build_manifest(list_corpus(corpus))
    assert [record.getMessage() for record in caplog.records if record.levelname == "WARNING"] == [
        f"{csv}: label 'z' occurs only in fold 3 (speaker(s) E): no training fold has it when fold 3 is tested, "
        "so its utterances there are always misclassified"
    ]
