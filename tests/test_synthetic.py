"""The synthetic demo corpus: RAVDESS's layout, determinism, and speech openSMILE can measure."""

import dataclasses
import hashlib
import itertools

import numpy as np
import opensmile
import pytest
import soundfile
from scipy.signal import sosfilt

from paraprobe.audio import load_audio
from paraprobe.corpora import ravdess
from paraprobe.corpora.synthetic import (
    EMOTIONS,
    FORMANT_BANDWIDTHS_HZ,
    HIGH_FORMANTS_HZ,
    SPEAKERS,
    SpeakerProfile,
    UtteranceParams,
    _vocal_tract,
    emotion_profile,
    synthesize_corpus,
    synthesize_utterance,
)

RATE = 16_000
EMOTION_ORDER = ["neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"]


def expected_names(actors, repetitions, emotions=EMOTION_ORDER):
    """RAVDESS's design written out independently: neutral has normal intensity only."""
    names = set()
    for actor, emotion, statement, repetition in itertools.product(
        range(1, actors + 1), emotions, (1, 2), range(1, repetitions + 1)
    ):
        code = EMOTION_ORDER.index(emotion) + 1
        for intensity in (1,) if emotion == "neutral" else (1, 2):
            names.add(
                f"Actor_{actor:02d}/03-01-{code:02d}-{intensity:02d}-{statement:02d}-{repetition:02d}-{actor:02d}.wav"
            )
    return names


def digests(paths):
    return {path.name: hashlib.sha1(path.read_bytes()).hexdigest() for path in paths}


@pytest.fixture(scope="module")
def one_actor(tmp_path_factory):
    """RAVDESS's full design for one actor, seed 0: (root, returned paths)."""
    root = tmp_path_factory.mktemp("synthetic")
    return root, synthesize_corpus(root, seed=0, actors=1)


@pytest.fixture(scope="module")
def smile():
    return opensmile.Smile(
        feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=opensmile.FeatureLevel.LowLevelDescriptors
    )


def descriptors(smile, waveform):
    """eGeMAPS low-level descriptors (10 ms frames) of a waveform at 16 kHz."""
    return smile.process_signal(waveform.astype(np.float32), RATE)


def utterance(actor=1, emotion="neutral", intensity=1, statement=1, seed=0):
    params = UtteranceParams(SPEAKERS[actor - 1], emotion_profile(emotion, intensity), statement)
    return synthesize_utterance(params, np.random.default_rng(seed))


# ----------------------------------------------------------------------------- layout


def test_one_actor_has_ravdess_full_design(one_actor):
    root, paths = one_actor
    assert len(paths) == 60
    assert paths == sorted(paths)
    assert {path.relative_to(root).as_posix() for path in paths} == expected_names(actors=1, repetitions=2)
    assert sorted(root.rglob("*")) == sorted([root / "Actor_01", *paths])  # no temporary files left


def test_files_are_16_bit_mono_of_two_to_four_seconds(one_actor):
    _, paths = one_actor
    for path in paths:
        info = soundfile.info(str(path))
        assert (info.samplerate, info.channels, info.subtype, info.format) == (RATE, 1, "PCM_16", "WAV")
        assert 2.0 < info.duration < 4.2, path
        assert np.abs(load_audio(path)).max() < 1.0, path  # loads, and is not clipped


def test_ravdess_reader_reads_it_with_the_emotions_it_was_made_with(one_actor):
    root, _ = one_actor
    rows = ravdess.list_utterances(root).candidates
    counts = {emotion: sum(row["label"] == emotion for row in rows) for emotion in EMOTION_ORDER}
    assert counts == {emotion: 4 if emotion == "neutral" else 8 for emotion in EMOTION_ORDER}
    assert {row["speaker"] for row in rows} == {"Actor_01"}
    assert {row["gender"] for row in rows} == {"male"}


def test_subsets_of_actors_emotions_and_repetitions(tmp_path):
    paths = synthesize_corpus(tmp_path, actors=3, repetitions=1, emotions=["neutral", "angry"])
    assert len(paths) == 3 * (2 + 4)
    expected = expected_names(actors=3, repetitions=1, emotions=["neutral", "angry"])
    assert {path.relative_to(tmp_path).as_posix() for path in paths} == expected


# ----------------------------------------------------------------------------- determinism


def test_same_seed_rewrites_the_same_bytes_whatever_else_is_generated(one_actor):
    root, paths = one_actor
    before = digests(paths)
    again = synthesize_corpus(root, seed=0, actors=1, emotions=["angry", "sad"])
    assert len(again) == 16
    assert digests(again) == {name: before[name] for name in digests(again)}
    assert digests(paths) == before


def test_another_seed_changes_every_file(one_actor, tmp_path):
    _, paths = one_actor
    before = digests(paths)
    other = digests(synthesize_corpus(tmp_path, seed=1, actors=1, emotions=["angry"]))
    assert set(other) <= set(before)
    assert all(other[name] != before[name] for name in other)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"actors": 0}, "actors must be between 1 and 24, got 0"),
        ({"actors": 25}, "actors must be between 1 and 24, got 25"),
        ({"repetitions": 0}, "repetitions must be between 1 and 99, got 0"),
        ({"seed": -1}, "seed must be a non-negative integer, got -1"),
        ({"sample_rate": 8000}, "sample_rate must be at least 16000 Hz, got 8000"),
        ({"emotions": ["angry", "bored"]}, "emotions ['bored'] are not among neutral, calm"),
    ],
)
def test_bad_arguments_are_named(tmp_path, arguments, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        synthesize_corpus(tmp_path, **arguments)
    assert not any(tmp_path.iterdir())


def test_other_sample_rates_keep_the_timing():
    at_16k = utterance(seed=3)
    params = UtteranceParams(SPEAKERS[0], emotion_profile("neutral"), 1, sample_rate=48_000)
    at_48k = synthesize_utterance(params, np.random.default_rng(3))
    assert abs(len(at_48k) - 3 * len(at_16k)) <= 2  # the same durations, rounded to each rate


# ----------------------------------------------------------------------------- the tables


def test_tables_follow_ravdess():
    assert list(EMOTIONS) == list(ravdess.EMOTIONS.values()) == EMOTION_ORDER
    assert len(SPEAKERS) == 24
    assert [speaker.sex for speaker in SPEAKERS] == ["male", "female"] * 12


def test_strong_intensity_moves_further_from_neutral_in_the_same_direction():
    neutral = emotion_profile("neutral")
    for emotion in EMOTION_ORDER[1:]:
        normal, strong = emotion_profile(emotion, 1), emotion_profile(emotion, 2)
        for field in dataclasses.fields(neutral):
            reference = getattr(neutral, field.name)
            normal_shift = getattr(normal, field.name) - reference
            strong_shift = getattr(strong, field.name) - reference
            assert strong_shift == pytest.approx(1.6 * normal_shift), (emotion, field.name)
        assert 0 < strong.closing_quotient < strong.open_quotient < 1, emotion
        assert strong.jitter > 0 and strong.breathiness > 0 and strong.speaking_rate > 0, emotion


# ----------------------------------------------------------------------------- signal processing


def test_vocal_tract_equals_the_fixed_filter_when_formants_do_not_move():
    """With constant formants the overlap-add filter is a plain cascade of Klatt resonators."""
    formants, scale = (500.0, 1500.0, 2500.0), 1.1
    excitation = np.random.default_rng(0).standard_normal(RATE)
    control_times = np.arange(0, 1, 0.001)
    tracks = np.tile(np.asarray(formants)[:, None], len(control_times))
    result = _vocal_tract(excitation, control_times, tracks, scale, RATE)

    centres = np.array([*formants, *(f * scale for f in HIGH_FORMANTS_HZ)])
    radius = np.exp(-np.pi * np.asarray(FORMANT_BANDWIDTHS_HZ) * scale / RATE)
    a1, a2 = -2 * radius * np.cos(2 * np.pi * centres / RATE), radius**2
    sections = np.column_stack([1 + a1 + a2, 0 * a1, 0 * a1, 1 + 0 * a1, a1, a2])
    reference = sosfilt(sections, excitation)
    error = np.sqrt(np.mean((result - reference) ** 2) / np.mean(reference**2))
    assert error < 10 ** (-70 / 20)  # the frame tails cut off after RESONANCE_TAIL_S


# ----------------------------------------------------------------------------- what openSMILE measures


@pytest.mark.parametrize(("sex", "f0_hz", "formant_scale"), [("male", 100.0, 1.0), ("female", 220.0, 1.15)])
def test_opensmile_measures_the_f0_it_was_given(smile, sex, f0_hz, formant_scale):
    flat = dataclasses.replace(emotion_profile("neutral"), f0_range=0.0, final_contour_st=0.0)
    params = UtteranceParams(SpeakerProfile(sex, f0_hz, formant_scale, 1.0), flat, 2)
    frames = descriptors(smile, synthesize_utterance(params, np.random.default_rng(0)))
    f0 = frames["F0semitoneFrom27.5Hz_sma3nz"].to_numpy()
    voiced = f0[f0 > 0]
    assert len(voiced) > 0.3 * len(f0)
    within_a_semitone = np.abs(voiced - 12 * np.log2(f0_hz / 27.5)) < 1.0
    assert within_a_semitone.mean() > 0.95


def test_opensmile_finds_voicing_and_formants(smile):
    frames = descriptors(smile, utterance(actor=1, emotion="happy", statement=1))
    voiced = frames[frames["F0semitoneFrom27.5Hz_sma3nz"] > 0]
    assert len(voiced) > 0.35 * len(frames)
    medians = [voiced[f"F{k}frequency_sma3nz"].median() for k in (1, 2, 3)]
    assert all(np.isfinite(voiced[f"F{k}frequency_sma3nz"]).all() for k in (1, 2, 3))
    assert 300 < medians[0] < 900 < medians[1] < 2200 < medians[2] < 3500, medians
    assert voiced["HNRdBACF_sma3nz"].median() > 0  # more harmonic than noisy


def mean_measures(smile, takes, **kwargs):
    """Mean over ``takes`` seeds of: median voiced F0 (semitones), loudness, voiced alpha ratio (dB), seconds."""
    rows = []
    for seed in range(takes):
        waveform = utterance(seed=seed, **kwargs)
        frames = descriptors(smile, waveform)
        voiced = frames[frames["F0semitoneFrom27.5Hz_sma3nz"] > 0]
        rows.append(
            [
                voiced["F0semitoneFrom27.5Hz_sma3nz"].median(),
                frames["Loudness_sma3"].mean(),
                voiced["alphaRatio_sma3"].mean(),
                len(waveform) / RATE,
            ]
        )
    return dict(zip(["f0", "loudness", "alpha_ratio", "seconds"], np.mean(rows, axis=0)))


def test_angry_and_sad_differ_as_acted_emotions_do(smile):
    angry = mean_measures(smile, 3, emotion="angry", intensity=2)
    neutral = mean_measures(smile, 3, emotion="neutral")
    sad = mean_measures(smile, 3, emotion="sad", intensity=2)
    assert sad["f0"] < neutral["f0"] - 1 and angry["f0"] > neutral["f0"] + 4  # semitones
    assert sad["loudness"] < neutral["loudness"] < angry["loudness"]
    assert sad["alpha_ratio"] < angry["alpha_ratio"] - 3  # dB: angry voice has the flatter spectrum
    assert angry["seconds"] < neutral["seconds"] < sad["seconds"]  # sad speech is slower


def test_strong_intensity_exaggerates_what_openSMILE_measures(smile):
    normal = mean_measures(smile, 3, emotion="happy", intensity=1)
    strong = mean_measures(smile, 3, emotion="happy", intensity=2)
    neutral = mean_measures(smile, 3, emotion="neutral")
    assert neutral["f0"] < normal["f0"] < strong["f0"]
    assert neutral["loudness"] < normal["loudness"] < strong["loudness"]


def test_speakers_differ_in_f0_and_formants(smile):
    male, female = SPEAKERS[0], SPEAKERS[1]  # Actor_01 and Actor_02
    frames = {actor: descriptors(smile, utterance(actor=actor)) for actor in (1, 2)}
    voiced = {actor: f[f["F0semitoneFrom27.5Hz_sma3nz"] > 0] for actor, f in frames.items()}
    f0_gap = voiced[2]["F0semitoneFrom27.5Hz_sma3nz"].median() - voiced[1]["F0semitoneFrom27.5Hz_sma3nz"].median()
    assert f0_gap == pytest.approx(12 * np.log2(female.f0_hz / male.f0_hz), abs=1.0)
    assert voiced[2]["F2frequency_sma3nz"].median() > voiced[1]["F2frequency_sma3nz"].median() * 1.05
