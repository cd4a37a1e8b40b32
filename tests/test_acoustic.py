"""Acoustic features: frame grid, pooling, F0, MFCC against openSMILE, groups, HDF5 contract."""

from __future__ import annotations

import functools
import json

import h5py
import numpy as np
import opensmile
import pandas as pd
import pytest
import soundfile
import yaml

from conftest import REPO, snakemake
from paraprobe import acoustic
from paraprobe.acoustic import egemaps_lld, extract_acoustic, mfcc, utterance_features
from paraprobe.acoustic_columns import (
    COLUMNS_BY_SET,
    EGEMAPS,
    EGEMAPS_COLUMNS,
    F0_COLUMN,
    INTRINSIC_GROUPS,
    MFCC,
    MFCC_COLUMNS,
    check_acoustic_config,
    validate_groups,
)
from paraprobe.audio import TARGET_SAMPLE_RATE, BadAudioError
from paraprobe.config import ConfigError
from paraprobe.framing import num_model_frames, pool_to_model_frames
from paraprobe.io import write_tsv

SR = TARGET_SAMPLE_RATE


def harmonic_vowel(f0_hz: float, seconds: float, seed: int = 0) -> np.ndarray:
    """An /a/-like vowel: harmonics of ``f0_hz`` shaped by resonances at 700, 1220, 2600 Hz."""
    time = np.arange(int(seconds * SR)) / SR
    formants = ((700.0, 130.0), (1220.0, 70.0), (2600.0, 160.0))
    signal = np.zeros_like(time)
    for harmonic in np.arange(f0_hz, 7000.0, f0_hz):
        gain = sum(1.0 / (1.0 + ((harmonic - centre) / bandwidth) ** 2) for centre, bandwidth in formants)
        signal += (gain + 0.02) / np.sqrt(harmonic / f0_hz) * np.sin(2 * np.pi * harmonic * time)
    ramp = np.minimum(1.0, np.minimum(time, time[-1] - time) / 0.02)
    signal *= 0.3 * ramp / np.abs(signal).max()
    signal += 1e-4 * np.random.default_rng(seed).standard_normal(time.size)
    return signal.astype(np.float32)


# ---------------------------------------------------------------- alignment


def test_pool_to_model_frames_hand_example():
    # One conv layer, kernel 6, stride 4: 20 samples give frames centred at 3, 7, 11, 15
    # owning [1, 5), [5, 9), [9, 13), [13, 17).
    centers = np.array([0.0, 2.0, 4.0, 5.0, 8.0, 14.0, 30.0])
    values = np.array([[-1.0, 0.0], [1.0, 10.0], [3.0, 30.0], [5.0, 50.0], [7.0, 70.0], [9.0, 90.0], [99.0, 0.0]])
    pooled = pool_to_model_frames(values, centers, 20, conv_kernel=(6,), conv_stride=(4,))
    expected = np.array(
        [
            [2.0, 20.0],  # centres 2 and 4 (0 lies before every span)
            [6.0, 60.0],  # 5 (span start is inclusive) and 8
            [7.0, 70.0],  # no centre in [9, 13): 8 and 14 are equally near 11, the earlier wins
            [9.0, 90.0],  # 14 (30 lies after every span)
        ]
    )
    np.testing.assert_array_equal(pooled, expected)


def test_wav2vec2_grid_pools_two_10ms_frames_per_model_frame():
    num_samples = SR  # 1 s: 49 wav2vec2 frames
    egemaps_like_centers = 160.0 * (np.arange(96) + 1)  # 20 ms frames starting every 10 ms
    index = np.arange(96, dtype=np.float64)[:, None]
    pooled = pool_to_model_frames(index, egemaps_like_centers, num_samples)[:, 0]
    assert pooled.shape == (49,)
    # Model frame j (receptive field [320 j, 320 j + 400)) averages frames 2j and 2j+1.
    np.testing.assert_array_equal(pooled[:47], 2 * np.arange(47) + 0.5)


def test_pool_rejects_nonfinite_values():
    with pytest.raises(ValueError, match="NaN or infinity"):
        pool_to_model_frames(np.array([[1.0], [np.nan]]), np.array([100.0, 260.0]), 1000)


# ---------------------------------------------------------------- frame counts


@functools.cache
def tiny_wav2vec2(conv_kernel: tuple, conv_stride: tuple):
    """A random-init wav2vec2 with this feature encoder and a minimal transformer."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(0)
    config = Wav2Vec2Config(
        conv_dim=(4,) * len(conv_kernel),
        conv_kernel=conv_kernel,
        conv_stride=conv_stride,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=1,
        intermediate_size=8,
        num_conv_pos_embeddings=2,
        num_conv_pos_embedding_groups=1,
    )
    return Wav2Vec2Model(config).eval()


def tiny_wav2vec2_frames(num_samples: int, conv_kernel: tuple, conv_stride: tuple) -> int:
    """Frames (hidden_states[0] rows) the model emits for ``num_samples`` input samples."""
    import torch

    with torch.no_grad():
        output = tiny_wav2vec2(conv_kernel, conv_stride)(torch.full((1, num_samples), 0.01), output_hidden_states=True)
    return output.hidden_states[0].shape[1]


WAV2VEC2 = ((10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2))
TEN_MS_ENCODER = ((10, 3, 3, 3), (5, 2, 2, 4))  # a hypothetical encoder with a 160-sample hop


@pytest.mark.parametrize("conv_kernel, conv_stride", [WAV2VEC2, TEN_MS_ENCODER])
@pytest.mark.parametrize("num_samples", [480, 400, 719, 720, 1039, 1040, 16_000, 16_001, 160_007, 480_000])
def test_frame_counts_match_the_model(num_samples, conv_kernel, conv_stride):
    samples = (0.1 * np.random.default_rng(num_samples).standard_normal(num_samples)).astype(np.float32)
    features = utterance_features(samples, conv_kernel, conv_stride)
    expected = tiny_wav2vec2_frames(num_samples, conv_kernel, conv_stride)
    assert expected == num_model_frames(num_samples, conv_kernel, conv_stride)
    assert features.values[EGEMAPS].shape == (expected, 25)
    assert features.values[MFCC].shape == (expected, 13)
    assert features.voiced.shape == (expected,)


# ---------------------------------------------------------------- feature values


@pytest.mark.parametrize("f0_hz", [110.0, 150.0, 220.0])
def test_egemaps_f0_of_a_synthetic_vowel(f0_hz):
    noise = 1e-4 * np.random.default_rng(6).standard_normal(SR // 4).astype(np.float32)
    features = utterance_features(np.concatenate([noise, harmonic_vowel(f0_hz, 1.0), noise]))
    f0_semitones = features.values[EGEMAPS][:, EGEMAPS_COLUMNS.index(F0_COLUMN)]
    assert features.voiced.sum() >= 48  # of the 50 frames inside the vowel
    expected = 12 * np.log2(f0_hz / 27.5)
    np.testing.assert_allclose(f0_semitones[features.voiced], expected, atol=1.0)


def test_voicing_mask_and_loudness_line_up_with_the_vowel():
    noise = 1e-4 * np.random.default_rng(1).standard_normal(SR // 2).astype(np.float32)
    features = utterance_features(np.concatenate([noise, harmonic_vowel(150.0, 1.0), noise]))
    frame_centres_s = (np.arange(features.voiced.size) * 320 + 200) / SR  # wav2vec2 receptive-field centres
    # The vowel lasts from 0.5 s to 1.5 s. The pitch descriptors come from 60 ms windows;
    # placed at the centre of the 20 ms ones they would turn on 20 ms early, beyond 15 ms.
    voiced_centres = frame_centres_s[features.voiced]
    assert abs(voiced_centres.min() - 0.5) < 0.015 and abs(voiced_centres.max() - 1.5) < 0.015
    assert features.voiced[(frame_centres_s > 0.52) & (frame_centres_s < 1.48)].all()
    loudness = features.values[EGEMAPS][:, EGEMAPS_COLUMNS.index("Loudness_sma3")]
    loud_centres = frame_centres_s[loudness > (loudness.max() + loudness.min()) / 2]
    # Loud frames lie inside the vowel and cover all of it but the 20 ms fades.
    assert 0.5 < loud_centres.min() < 0.53 and 1.47 < loud_centres.max() < 1.5


def test_f0_relative_amplitudes_hold_no_unvoiced_placeholder():
    # openSMILE writes -201 where there is no F0 and smooths it into each voiced stretch's edges.
    noise = 1e-4 * np.random.default_rng(1).standard_normal(SR // 2).astype(np.float32)
    vowels = [harmonic_vowel(150.0, 0.5), noise, harmonic_vowel(200.0, 0.5, seed=1)]
    features = utterance_features(np.concatenate([noise, *vowels, noise]))
    assert features.voiced.sum() >= 45  # of the 50 frames inside the two vowels
    for column in [f"F{n}amplitudeLogRelF0_sma3nz" for n in (1, 2, 3)]:
        values = features.values[EGEMAPS][:, EGEMAPS_COLUMNS.index(column)]
        assert values.min() > -50, column  # nowhere the -201 placeholder, nor a blend of it
        # a voiced frame: no blend of -201 (which gave about -27 dB here); the vowels' own lie above -5 dB
        assert values[features.voiced].min() > -15, column


def test_full_scale_samples_do_not_wrap_around():
    # openSMILE converts samples * 32768 to int16, where +1.0 would wrap to -32768.
    square = np.sign(np.sin(2 * np.pi * 100 * np.arange(SR) / SR)).astype(np.float32)
    loudness = [egemaps_lld(gain * square)[0][:, 0].mean() for gain in (1.0, 0.999)]
    assert loudness[0] == pytest.approx(loudness[1], rel=0.01)


def test_mfcc_in_blocks_equals_mfcc_at_once(monkeypatch):
    samples = harmonic_vowel(150.0, 1.0)
    at_once, centers = mfcc(samples)
    monkeypatch.setattr(acoustic, "MFCC_BLOCK_FRAMES", 7)  # 98 frames: 14 blocks
    in_blocks, block_centers = mfcc(samples)
    assert at_once.shape == (98, 13)
    np.testing.assert_allclose(in_blocks, at_once, rtol=1e-12, atol=1e-9)
    np.testing.assert_array_equal(block_centers, centers)


def test_mfcc_agrees_with_opensmile(tmp_path):
    # openSMILE's HTK-compatible MFCC12_0 chain, the reference the numpy code follows.
    config = tmp_path / "mfcc.conf"
    config.write_text(OPENSMILE_MFCC_CONFIG)
    samples = harmonic_vowel(150.0, 1.0) + (0.02 * np.random.default_rng(2).standard_normal(SR)).astype(np.float32)
    reference = opensmile.Smile(feature_set=str(config), feature_level="lld").process_signal(samples, SR)
    values, centres = mfcc(samples)
    assert values.shape == reference.shape == (98, 13)
    starts = reference.index.get_level_values("start").total_seconds().to_numpy() * SR
    np.testing.assert_allclose(centres, starts + 200)
    # openSMILE quantises to 16 bits first; the coefficients span about +-100.
    np.testing.assert_allclose(values, reference.to_numpy(), atol=0.05)


@pytest.mark.parametrize(
    "name, samples",
    [
        ("low noise", 1e-5 * np.random.default_rng(3).standard_normal(SR)),
        ("one click in silence", np.eye(1, SR, SR // 2)[0]),
        ("400 samples", 0.1 * np.random.default_rng(4).standard_normal(400)),
        ("0.03 s vowel", harmonic_vowel(150.0, 0.03)),
        ("full-scale square wave", np.sign(np.sin(2 * np.pi * 100 * np.arange(SR) / SR))),
    ],
)
def test_output_is_finite_whatever_the_audio(name, samples):
    features = utterance_features(samples.astype(np.float32))
    for values in features.values.values():
        assert values.dtype == np.float32
        assert np.all(np.isfinite(values)), name
    if samples.size < 960:  # shorter than openSMILE's 60 ms pitch window: a NaN row, replaced
        assert features.nonfinite_replaced[EGEMAPS].tolist() == [1] * 25
        assert not features.voiced.any()


# ---------------------------------------------------------------- groups

# PAPER.md, experiment 2 (the paper's feature groups), descriptor by descriptor.
PAPER_GROUPS = {
    "energy": ["loudness", "harmonics-to-noise ratio"],
    "frequency": ["pitch", "formant 1 bandwidth", "formant 1 frequency", "formant 2 frequency", "formant 3 frequency"],
    "spectral": [
        "alpha ratio",
        "Hammarberg index",
        "formant 1 relative energy",
        "formant 2 relative energy",
        "formant 3 relative energy",
        "spectral slope 0-500 Hz",
        "spectral slope 500-1500 Hz",
        "H1-H2",
        "H1-A3",
    ],
    "voice_quality": ["jitter", "shimmer"],
}
# The eGeMAPSv02 descriptor of each (Eyben et al. 2016, Table 1; openSMILE's names).
EGEMAPS_NAME = {
    "loudness": "Loudness_sma3",
    "harmonics-to-noise ratio": "HNRdBACF_sma3nz",
    "pitch": "F0semitoneFrom27.5Hz_sma3nz",
    "formant 1 bandwidth": "F1bandwidth_sma3nz",
    "formant 1 frequency": "F1frequency_sma3nz",
    "formant 2 frequency": "F2frequency_sma3nz",
    "formant 3 frequency": "F3frequency_sma3nz",
    "alpha ratio": "alphaRatio_sma3",
    "Hammarberg index": "hammarbergIndex_sma3",
    "formant 1 relative energy": "F1amplitudeLogRelF0_sma3nz",
    "formant 2 relative energy": "F2amplitudeLogRelF0_sma3nz",
    "formant 3 relative energy": "F3amplitudeLogRelF0_sma3nz",
    "spectral slope 0-500 Hz": "slope0-500_sma3",
    "spectral slope 500-1500 Hz": "slope500-1500_sma3",
    "H1-H2": "logRelF0-H1-H2_sma3nz",
    "H1-A3": "logRelF0-H1-A3_sma3nz",
    "jitter": "jitterLocal_sma3nz",
    "shimmer": "shimmerLocaldB_sma3nz",
}


def schema_acoustic_defaults() -> dict:
    schema = yaml.safe_load((REPO / "schemas" / "config.schema.yaml").read_text())
    return {key: spec["default"] for key, spec in schema["properties"]["acoustic"]["properties"].items()}


def test_column_names_are_opensmiles():
    smile = opensmile.Smile(
        feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=opensmile.FeatureLevel.LowLevelDescriptors
    )
    assert list(EGEMAPS_COLUMNS) == smile.feature_names


def test_default_groups_are_the_papers():
    groups = schema_acoustic_defaults()["groups"]
    for name, descriptors in PAPER_GROUPS.items():
        assert sorted(groups[name]) == sorted(EGEMAPS_NAME[descriptor] for descriptor in descriptors), name
    assert groups["egemaps_all"] == list(EGEMAPS_COLUMNS)  # openSMILE's names, as tested above
    assert groups["mfcc"] == [f"mfcc{index}" for index in range(13)]
    assert list(groups) == [*PAPER_GROUPS, "egemaps_all", "mfcc"]
    sets = {name: feature_set for name, (feature_set, _) in validate_groups(groups).items()}
    assert sets == {**dict.fromkeys(PAPER_GROUPS, EGEMAPS), "egemaps_all": EGEMAPS, "mfcc": MFCC}


@pytest.mark.parametrize("feature_set", [EGEMAPS, MFCC])
def test_intrinsic_groups_cover_every_column_once(feature_set):
    grouped = [column for columns in INTRINSIC_GROUPS[feature_set].values() for column in columns]
    assert sorted(grouped) == sorted(COLUMNS_BY_SET[feature_set])


def test_default_grid_is_wav2vec2s():
    defaults = schema_acoustic_defaults()
    assert (tuple(defaults["conv_kernel"]), tuple(defaults["conv_stride"])) == WAV2VEC2


def test_unknown_group_column_names_the_config_key_and_column():
    groups = {"energy": ["Loudness_sma3", "HNR_sma3nz"]}
    with pytest.raises(ConfigError, match=r"acoustic\.groups\.energy: unknown column 'HNR_sma3nz'"):
        validate_groups(groups)


def test_group_mixing_feature_sets_is_rejected():
    with pytest.raises(ConfigError, match=r"acoustic\.groups\.mixed: column 'mfcc0' is a mfcc column"):
        validate_groups({"mixed": ["Loudness_sma3", "mfcc0"]})


def test_empty_and_repeated_group_columns_are_rejected():
    with pytest.raises(ConfigError, match=r"acoustic\.groups\.none: the group has no columns"):
        validate_groups({"none": []})
    with pytest.raises(ConfigError, match=r"acoustic\.groups\.twice: column 'mfcc1' is listed more than once"):
        validate_groups({"twice": ["mfcc1", "mfcc2", "mfcc1"]})


# ---------------------------------------------------------------- HDF5 files


def test_conv_lists_of_different_lengths_are_a_config_error():
    acoustic = {**schema_acoustic_defaults(), "conv_stride": [5, 2, 2]}
    with pytest.raises(
        ConfigError, match=r"acoustic\.conv_stride: 3 strides for the 7 kernels of acoustic\.conv_kernel"
    ):
        check_acoustic_config(acoustic)


def test_workflow_refuses_an_unknown_group_column_before_any_job(tmp_path):
    configfile = tmp_path / "mine.yaml"
    demo = yaml.safe_load((REPO / "config.yaml").read_text())
    configfile.write_text(yaml.safe_dump({**demo, "acoustic": {"groups": {"pitch": ["F0_sma3nz"]}}}))
    result = snakemake(tmp_path, "--configfile", str(configfile), "-n", "--quiet")
    assert result.returncode != 0
    assert "acoustic.groups.pitch: unknown column 'F0_sma3nz'" in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


def write_corpus(directory, signals: dict[str, np.ndarray]):
    rows = []
    for utt_id, samples in signals.items():
        path = directory / f"{utt_id}.wav"
        soundfile.write(path, samples, SR, subtype="PCM_16")
        rows.append(
            {
                "utt_id": utt_id,
                "path": str(path),
                "label": "neu",
                "speaker": "s1",
                "fold": 1,
                "duration_s": samples.size / SR,
            }
        )
    manifest = directory / "manifest.tsv"
    write_tsv(pd.DataFrame(rows), manifest)
    return manifest


def test_extract_acoustic_writes_the_contract(tmp_path):
    signals = {
        "a_vowel": harmonic_vowel(150.0, 1.2),
        "b_short": harmonic_vowel(200.0, 0.05, seed=1),
        "c_noise": (0.05 * np.random.default_rng(5).standard_normal(SR // 3)).astype(np.float32),
    }
    manifest = write_corpus(tmp_path, signals)
    outputs = {}
    for threads in (1, 2):
        paths = {name: tmp_path / f"threads{threads}" / f"{name}.h5" for name in (EGEMAPS, MFCC)}
        extract_acoustic(manifest, paths, threads=threads)
        outputs[threads] = paths

    for name, columns in ((EGEMAPS, list(EGEMAPS_COLUMNS)), (MFCC, list(MFCC_COLUMNS))):
        with h5py.File(outputs[1][name]) as single, h5py.File(outputs[2][name]) as pooled:
            assert [u.decode() for u in single["utt_id"][:]] == list(signals)
            assert [c.decode() for c in single["columns"][:]] == columns
            offsets = single["frame_offsets"][:]
            assert offsets.dtype == np.int64
            lengths = [num_model_frames(samples.size) for samples in signals.values()]
            np.testing.assert_array_equal(np.diff(offsets), lengths)
            assert single["values"].dtype == np.float32 and single["values"].shape == (offsets[-1], len(columns))
            assert single["voiced"].dtype == bool and single["voiced"].shape == (offsets[-1],)
            assert np.all(np.isfinite(single["values"][:]))
            assert single.attrs["frame_rate_hz"] == 50.0
            # the frame grid, which the similarity job compares with the embeddings'
            assert single.attrs["conv_kernel"].tolist() == [10, 3, 3, 3, 3, 2, 2]
            assert single.attrs["conv_stride"].tolist() == [5, 2, 2, 2, 2, 2, 2]
            assert (single.attrs["hop_samples"], single.attrs["receptive_field_samples"]) == (320, 400)
            groups = json.loads(single.attrs["feature_groups"])
            assert groups == {group: list(cols) for group, cols in INTRINSIC_GROUPS[name].items()}
            # The first utterance's rows are its features; the worker pool changes nothing.
            direct = utterance_features(soundfile.read(tmp_path / "a_vowel.wav", dtype="float32")[0])
            np.testing.assert_array_equal(single["values"][offsets[0] : offsets[1]], direct.values[name])
            np.testing.assert_array_equal(single["voiced"][offsets[0] : offsets[1]], direct.voiced)
            np.testing.assert_array_equal(single["values"][:], pooled["values"][:])
            np.testing.assert_array_equal(single["voiced"][:], pooled["voiced"][:])
    with h5py.File(outputs[1][EGEMAPS]) as egemaps_file:
        # b_short (50 ms) is shorter than openSMILE's 60 ms pitch window: one NaN row replaced.
        assert egemaps_file.attrs["nonfinite_replaced"].tolist() == [1] * 25


@pytest.mark.parametrize("threads", [1, 2])
def test_audio_broken_since_the_manifest_names_the_file(tmp_path, threads):
    manifest = write_corpus(tmp_path, {"a": harmonic_vowel(150.0, 0.5), "b": harmonic_vowel(150.0, 0.5)})
    (tmp_path / "b.wav").write_bytes(b"not audio any more")
    paths = {name: tmp_path / "out" / f"{name}.h5" for name in (EGEMAPS, MFCC)}
    with pytest.raises(BadAudioError, match=r"b\.wav: unreadable"):
        extract_acoustic(manifest, paths, threads=threads)
    assert list((tmp_path / "out").iterdir()) == []


OPENSMILE_MFCC_CONFIG = r"""
[componentInstances:cComponentManager]
instance[dataMemory].type=cDataMemory
\{\cm[source{?}:include external source]}
[componentInstances:cComponentManager]
instance[framer].type=cFramer
instance[preemphasis].type=cVectorPreemphasis
instance[window].type=cWindower
instance[fft].type=cTransformFFT
instance[magnitude].type=cFFTmagphase
instance[melspec].type=cMelspec
instance[mfcc].type=cMfcc

[framer:cFramer]
reader.dmLevel=wave
writer.dmLevel=frames
frameMode=fixed
frameSize=0.025
frameStep=0.010
frameCenterSpecial=left
noPostEOIprocessing=1

[preemphasis:cVectorPreemphasis]
reader.dmLevel=frames
writer.dmLevel=emphasised
k=0.97
de=0

[window:cWindower]
reader.dmLevel=emphasised
writer.dmLevel=windowed
winFunc=ham
gain=1.0

[fft:cTransformFFT]
reader.dmLevel=windowed
writer.dmLevel=complex

[magnitude:cFFTmagphase]
reader.dmLevel=complex
writer.dmLevel=magnitude
magnitude=1
phase=0

[melspec:cMelspec]
reader.dmLevel=magnitude
writer.dmLevel=melspec
htkcompatible=1
nBands=26
usePower=1
lofreq=0
hifreq=8000
specScale=mel

[mfcc:cMfcc]
reader.dmLevel=melspec
writer.dmLevel=lld
firstMfcc=0
lastMfcc=12
cepLifter=22.0
htkcompatible=0
\{\cm[sink{?}:include external sink]}
"""
