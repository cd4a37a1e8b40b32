"""Layer embeddings: exact batching, the HDF5 contract, shards, reuse and atomic writes.

Tiny random-init checkpoints are written with ``save_pretrained`` and loaded back through
:func:`paraprobe.models.load_model`; the reference is Hugging Face's own feature extractor
and model run one utterance at a time.
"""

from __future__ import annotations

import logging
import os

import h5py
import numpy as np
import pandas as pd
import pytest
import soundfile
import torch
from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, Wav2Vec2FeatureExtractor

from paraprobe.audio import RESAMPLING_DESCRIPTION, BadAudioError, load_audio
from paraprobe import batching
from paraprobe.batching import EXACT_BATCHING_MODEL_TYPES, FEATURE_ENCODER_MODES, assign_to_shards, plan_batches
from paraprobe import embedding_store
from paraprobe.embeddings import (
    BatchInputs,
    batch_budget_samples,
    ExtractionSettings,
    LayerPooler,
    decoded_batches,
    extract_embeddings,
    frame_subset,
    layer_names,
    manifest_num_samples,
    merge_shards,
    pad_batch,
)
from paraprobe.extraction_planning import PLANNING_RATE_PER_GPU, planning_rate
from paraprobe.framing import num_model_frames
from paraprobe.io import write_tsv
from paraprobe.manifest import file_sha1, read_manifest
from paraprobe.models import InputSettings, load_model

RATE = 16_000
TINY = dict(
    num_hidden_layers=2,
    hidden_size=32,
    num_attention_heads=2,
    intermediate_size=64,
    conv_dim=(32,) * 7,
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=4,
)
#: The two kinds of feature encoder: wav2vec2-base (GroupNorm over time) and -large-lv60 (LayerNorm).
KINDS = {
    "group": dict(feat_extract_norm="group", do_stable_layer_norm=False),
    "layer": dict(feat_extract_norm="layer", do_stable_layer_norm=True),
}


def tiny_config(model_type: str, **overrides):
    config = AutoConfig.for_model(model_type)
    for key, value in {**TINY, **overrides}.items():
        setattr(config, key, value)
    return config


def save_checkpoint(directory, config, seed: int = 0, return_attention_mask: bool = False) -> dict:
    """A random-init checkpoint in ``directory`` as ``save_pretrained`` writes it; its model config."""
    torch.manual_seed(seed)
    AutoModel.from_config(config).save_pretrained(directory)
    Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=return_attention_mask).save_pretrained(directory)
    return {"id": str(directory)}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Model configs of a group-norm and a layer-norm tiny wav2vec2 on disk."""
    root = tmp_path_factory.mktemp("checkpoints")
    return {
        kind: save_checkpoint(root / kind, tiny_config("wav2vec2", **norm), return_attention_mask=kind == "layer")
        for kind, norm in KINDS.items()
    }


def write_utterance(path, num_samples: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    t = np.arange(num_samples) / RATE
    signal = 0.3 * np.sin(2 * np.pi * (120 + 40 * seed) * t) + 0.05 * rng.standard_normal(num_samples)
    soundfile.write(path, signal.astype(np.float32), RATE, subtype="FLOAT")


def write_manifest(path, rows: list[dict]) -> None:
    write_tsv(pd.DataFrame(rows).sort_values("utt_id"), path)


def utterance_row(directory, utt_id: str, num_samples: int, label: str, seed: int) -> dict:
    path = directory / f"{utt_id}.wav"
    write_utterance(path, num_samples, seed)
    return {
        "utt_id": utt_id,
        "path": str(path),
        "label": label,
        "speaker": f"s{seed % 3}",
        "fold": 1 + seed % 2,
        "duration_s": round(num_samples / RATE, 6),
        "sha1": file_sha1(path),
    }


#: Lengths from the 400-sample minimum to 2 s, several of them sharing a batch.
LENGTHS = [400, 401, 719, 3_200, 5_000, 8_000, 9_999, 12_345, 16_000, 20_000, 24_321, 32_000]
LABELS = ["ang", "hap", "neu", "sad"]


@pytest.fixture
def corpus(tmp_path):
    """A 12-utterance corpus on disk: (manifest path, its rows)."""
    audio = tmp_path / "audio"
    audio.mkdir()
    rows = [utterance_row(audio, f"u{i:02d}", n, LABELS[i % 4], i) for i, n in enumerate(LENGTHS)]
    write_manifest(tmp_path / "manifest.tsv", rows)
    return tmp_path / "manifest.tsv", rows


def settings(**changes) -> ExtractionSettings:
    """Batches of 1.5 s (several per corpus), every utterance's frames stored."""
    return ExtractionSettings(**{"batch_seconds": 1.5, "device": "cpu", "frame_utterances": "all", **changes})


def hugging_face_states(model_dir: str, path: str) -> np.ndarray:
    """(L + 1, T, D) hidden states of one utterance, the Hugging Face way."""
    extractor = AutoFeatureExtractor.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    inputs = extractor(load_audio(path), sampling_rate=RATE, return_tensors="pt")
    with torch.no_grad():
        states = model(**inputs, output_hidden_states=True).hidden_states
    return torch.stack(states)[:, 0].numpy()


def read_all(path) -> tuple[dict, dict]:
    """Every dataset and attribute of an HDF5 file, as numpy values."""
    datasets = {}
    with h5py.File(path, "r") as handle:
        handle.visititems(
            lambda name, item: datasets.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset) else None
        )
        attributes = {key: handle.attrs[key] for key in handle.attrs}
    return datasets, attributes


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


# ---------------------------------------------------------------------------------------
# Exact batching


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_batched_file_matches_hugging_face_one_utterance_at_a_time(tmp_path, corpus, checkpoints, kind):
    manifest, rows = corpus
    output = tmp_path / "out.h5"
    extract_embeddings(manifest, checkpoints[kind], output, settings())
    data, attributes = read_all(output)
    assert any(size > 1 for size in map(len, plan_batches(LENGTHS, int(1.5 * RATE))))  # really batched
    offsets = data["frame_offsets"]
    for i, row in enumerate(rows):
        states = hugging_face_states(checkpoints[kind]["id"], row["path"])  # (L + 1, T, D)
        assert states.shape[1] == num_model_frames(row["duration_s"] * RATE) == data["num_frames"][i]
        pooled = np.stack([data[f"pooled/{name}"][i] for name in layer_names(2)])
        assert cosines(pooled, states.mean(axis=1)).min() >= 0.999
        np.testing.assert_allclose(pooled, states.mean(axis=1), rtol=1e-4, atol=1e-5)
        frames = np.stack([data[f"frames/{name}"][offsets[i] : offsets[i + 1]] for name in layer_names(2)])
        np.testing.assert_allclose(frames, states.astype(np.float16), rtol=2e-3, atol=2e-3)


# transformers' WavLM attention mixes a boolean padding mask with its float position bias.
@pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask:UserWarning")
@pytest.mark.parametrize("feature_encoder", FEATURE_ENCODER_MODES)
@pytest.mark.parametrize("model_type", EXACT_BATCHING_MODEL_TYPES)
def test_padded_batch_equals_single_passes_for_every_supported_model_type(tmp_path, model_type, feature_encoder):
    config = tiny_config(model_type)
    model_cfg = save_checkpoint(tmp_path, config)
    model, inputs, info = load_model(model_cfg)
    rng = np.random.default_rng(1)
    lengths = [16_000, 9_000, 4_321, 400]
    values = [inputs.prepare(rng.standard_normal(n).astype(np.float32)) for n in lengths]
    singles = [hugging_face_single(model, x) for x in values]
    pooler = LayerPooler(model, info, torch.device("cpu"), half_precision=False, feature_encoder=feature_encoder)
    pooled, frames = pooler(pad_batch(values), lengths, [True] * 4)
    for b, single in enumerate(singles):
        assert cosines(pooled[:, b], single.mean(axis=1)).min() >= 0.999
        np.testing.assert_allclose(pooled[:, b], single.mean(axis=1), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(frames[b], single.astype(np.float16), rtol=2e-3, atol=2e-3)


def hugging_face_single(model, values: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.stack(model(torch.from_numpy(values)[None], output_hidden_states=True).hidden_states)[:, 0].numpy()


# k * C_in <= 64 copies a window matrix, wider windows are read through strided views.
@pytest.mark.parametrize(
    "taps,stride,bias,in_channels",
    [(10, 5, False, 1), (10, 5, True, 1), (10, 5, True, 8), (3, 2, True, 32), (3, 2, False, 8), (2, 2, False, 40),
     (5, 1, True, 8), (4, 3, True, 20)],
)  # fmt: skip
def test_convolution_as_matrix_product_equals_conv1d(taps, stride, bias, in_channels):
    rng = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 41, in_channels, generator=rng)  # (B, T, C) channels-last
    conv = torch.nn.Conv1d(in_channels, 12, kernel_size=taps, stride=stride, bias=bias)
    expected = conv(hidden.transpose(1, 2)).transpose(1, 2)
    torch.testing.assert_close(batching.conv1d_as_matmul(hidden, conv.weight, conv.bias, stride), expected)
    # One kernel per sequence: sequence b convolved with its own kernel.
    weights = torch.randn(3, 12, in_channels, taps, generator=rng)
    biases = torch.randn(3, 12, generator=rng)
    out = batching.conv1d_as_matmul(hidden, weights, biases, stride)
    for b in range(3):
        alone = torch.nn.functional.conv1d(hidden[b : b + 1].transpose(1, 2), weights[b], biases[b], stride=stride)
        torch.testing.assert_close(out[b : b + 1], alone.transpose(1, 2))


@pytest.mark.parametrize("taps,padding,groups", [(128, 64, 4), (19, 9, 2), (4, 0, 1)])
def test_fourier_convolution_equals_conv1d(taps, padding, groups):
    rng = torch.Generator().manual_seed(1)
    conv = torch.nn.Conv1d(8, 8, kernel_size=taps, padding=padding, groups=groups)
    hidden = torch.randn(2, 8, 150, generator=rng)
    torch.testing.assert_close(batching.FourierConv1d(conv)(hidden), conv(hidden), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "groups,bias,offset,spread",
    [
        (6, False, 0.3, 1.0),
        (2, True, 0.3, 1.0),
        (6, True, 1.0, 3e-3),  # a quiet, un-normalised waveform with an offset
    ],
)
def test_group_norm_folded_into_the_kernels_equals_group_norm_of_each_sequence_alone(groups, bias, offset, spread):
    rng = torch.Generator().manual_seed(2)
    conv = torch.nn.Conv1d(2, 6, kernel_size=4, stride=3, bias=bias)
    norm = torch.nn.GroupNorm(groups, 6)
    torch.nn.init.normal_(norm.weight, generator=rng), torch.nn.init.normal_(norm.bias, generator=rng)
    hidden = offset + spread * torch.randn(3, 152, 2, generator=rng)  # (B, T, C_in), padding included
    valid_samples = [152, 95, 22]
    valid_steps = [(n - 4) // 3 + 1 for n in valid_samples]
    out = batching.conv1d_as_matmul(hidden, *batching.group_normalised_kernels(hidden, conv, norm, valid_steps), 3)
    for b, samples in enumerate(valid_samples):
        alone = norm(conv(hidden[b : b + 1, :samples].transpose(1, 2))).transpose(1, 2)[0]
        torch.testing.assert_close(out[b, : valid_steps[b]], alone, rtol=1e-4, atol=1e-4)
    all_steps = norm(conv(hidden.transpose(1, 2))).transpose(1, 2)
    unmasked = batching.group_normalised_kernels(hidden, conv, norm, None)
    torch.testing.assert_close(batching.conv1d_as_matmul(hidden, *unmasked, 3), all_steps, rtol=1e-4, atol=1e-4)


def test_fourier_convolution_equals_a_weight_normalised_conv1d():
    conv = torch.nn.utils.parametrizations.weight_norm(torch.nn.Conv1d(4, 4, kernel_size=8, padding=4, groups=2), dim=2)
    hidden = torch.randn(2, 4, 60, generator=torch.Generator().manual_seed(3))
    fourier = batching.FourierConv1d(conv)
    torch.testing.assert_close(fourier(hidden), conv(hidden), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("model_type,overrides", [("wav2vec2", KINDS["group"]), ("data2vec-audio", {})])
def test_plain_attention_mask_is_not_exact_for_these_models(tmp_path, model_type, overrides):
    """The control: what ExactBatching repairs (GroupNorm over padding; data2vec's positional convolutions)."""
    model, inputs, info = load_model(save_checkpoint(tmp_path, tiny_config(model_type, **overrides)))
    rng = np.random.default_rng(1)
    lengths = [16_000, 4_321]
    values = [inputs.prepare(rng.standard_normal(n).astype(np.float32)) for n in lengths]
    mask = (torch.arange(16_000)[None] < torch.tensor(lengths)[:, None]).int()
    with torch.no_grad():
        states = model(pad_batch(values), attention_mask=mask, output_hidden_states=True).hidden_states
    frames = num_model_frames(4_321, info.conv_kernel, info.conv_stride)
    batched_short = torch.stack(states)[:, 1, :frames].mean(1).numpy()
    assert cosines(batched_short, hugging_face_single(model, values[1]).mean(axis=1)).min() < 0.999


def test_batch_seconds_zero_runs_one_utterance_per_pass(tmp_path, corpus, checkpoints, monkeypatch):
    manifest, _ = corpus
    sizes = count_forward_batch_sizes(monkeypatch)
    extract_embeddings(manifest, checkpoints["group"], tmp_path / "out.h5", settings(batch_seconds=0))
    assert sizes == [1] * len(LENGTHS)


def count_forward_batch_sizes(monkeypatch) -> list[int]:
    """Batch size of every forward pass LayerPooler runs from now on."""
    sizes: list[int] = []
    original = LayerPooler.start

    def counting(self, padded, num_samples, keep_frames):
        sizes.append(len(num_samples))
        return original(self, padded, num_samples, keep_frames)

    monkeypatch.setattr(LayerPooler, "start", counting)
    return sizes


# ---------------------------------------------------------------------------------------
# The file contract


def test_file_contract(tmp_path, corpus, checkpoints):
    manifest, rows = corpus
    output = tmp_path / "out.h5"
    extract_embeddings(manifest, checkpoints["group"], output, settings(frame_utterances=4, frame_seed=3))
    data, attributes = read_all(output)
    names = layer_names(2)
    assert [u.decode() for u in data["utt_id"]] == [row["utt_id"] for row in rows]
    assert [s.decode() for s in data["sha1"]] == [row["sha1"] for row in rows]
    for name in names:
        assert data[f"pooled/{name}"].shape == (12, 32) and data[f"pooled/{name}"].dtype == np.float32
        assert data[f"frames/{name}"].dtype == np.float16
    offsets = data["frame_offsets"]
    assert offsets.dtype == np.int64 and offsets.shape == (13,) and offsets[0] == 0
    stored = np.diff(offsets)
    assert (stored > 0).sum() == 4
    np.testing.assert_array_equal(stored[stored > 0], data["num_frames"][stored > 0])
    assert data[f"frames/{names[0]}"].shape == (offsets[-1], 32)
    for i in np.flatnonzero(stored):
        for name in names:  # the pooled vector is the mean of the stored frames
            frames = data[f"frames/{name}"][offsets[i] : offsets[i + 1]].astype(np.float32)
            np.testing.assert_allclose(data[f"pooled/{name}"][i], frames.mean(axis=0), atol=2e-3)
    assert attributes["model"] == checkpoints["group"]["id"]
    assert attributes["revision"] == ""
    assert attributes["num_layers"] == 2 and attributes["hidden_size"] == 32
    assert attributes["frame_rate_hz"] == 50.0
    # the frame grid, which the similarity job compares with the acoustic files'
    assert attributes["conv_kernel"].tolist() == [10, 3, 3, 3, 3, 2, 2]
    assert attributes["conv_stride"].tolist() == [5, 2, 2, 2, 2, 2, 2]
    assert attributes["resampling"] == RESAMPLING_DESCRIPTION
    assert attributes["do_normalize"] and attributes["precision"] == "float32"
    assert attributes["frames_utterances"] == "4" and attributes["frames_seed"] == 3
    assert len(attributes["model_fingerprint"]) == 40


def test_ids_that_look_like_numbers_are_kept_exactly(tmp_path, checkpoints):
    audio = tmp_path / "audio"
    audio.mkdir()
    rows = [
        utterance_row(audio, utt_id, 3_200, label, i)
        for i, (utt_id, label) in enumerate([("0001", "1"), ("010", "01"), ("1", "1"), ("1e3", "01")])
    ]
    write_manifest(tmp_path / "manifest.tsv", rows)
    single, parts = tmp_path / "single.h5", [tmp_path / f"part{k}.h5" for k in range(2)]
    extract_embeddings(tmp_path / "manifest.tsv", checkpoints["group"], single, settings(batch_seconds=0))
    for k, part in enumerate(parts):
        extract_embeddings(tmp_path / "manifest.tsv", checkpoints["group"], part, settings(batch_seconds=0), k, 2)
    merge_shards(parts, tmp_path / "manifest.tsv", tmp_path / "merged.h5")
    for output in (single, tmp_path / "merged.h5"):
        data, _ = read_all(output)
        assert [u.decode() for u in data["utt_id"]] == ["0001", "010", "1", "1e3"]
        assert [s.decode() for s in data["sha1"]] == [row["sha1"] for row in rows]


def test_an_utterance_shorter_than_the_models_receptive_field_is_named(tmp_path):
    wide = save_checkpoint(tmp_path / "wide", tiny_config("wav2vec2", conv_kernel=(40, 3, 3, 3, 3, 2, 2)))
    audio = tmp_path / "audio"
    audio.mkdir()
    rows = [utterance_row(audio, "long", 3_200, "a", 0), utterance_row(audio, "short", 420, "b", 1)]
    write_manifest(tmp_path / "manifest.tsv", rows)
    with pytest.raises(ValueError) as raised:
        extract_embeddings(tmp_path / "manifest.tsv", wide, tmp_path / "out.h5", settings())
    assert str(raised.value) == (
        f"{tmp_path / 'manifest.tsv'}: utterance short (420 samples) is shorter than {tmp_path / 'wide'}'s "
        "receptive field (430 samples), so it has no frame; 1 such utterance(s)"
    )
    assert not (tmp_path / "out.h5").exists()


def test_a_checkpoint_saved_in_half_precision_extracts_in_float32(tmp_path, corpus, checkpoints):
    manifest, _ = corpus
    torch.manual_seed(0)
    model = AutoModel.from_config(tiny_config("wav2vec2", **KINDS["layer"]))
    model.save_pretrained(tmp_path / "full")
    model.half().save_pretrained(tmp_path / "half")
    for name in ("full", "half"):
        Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(tmp_path / name)
        extract_embeddings(manifest, {"id": str(tmp_path / name)}, tmp_path / f"{name}.h5", settings())
    full, _ = read_all(tmp_path / "full.h5")
    half, _ = read_all(tmp_path / "half.h5")
    assert half["pooled/layer_02"].dtype == np.float32
    # The same weights, rounded to float16 once: close, computed in float32 all the same.
    np.testing.assert_allclose(half["pooled/layer_02"], full["pooled/layer_02"], rtol=0.05, atol=0.05)


def test_frame_subset_is_stratified_deterministic_and_stable_as_the_corpus_grows():
    labels = ["a"] * 50 + ["b"] * 30 + ["c"] * 20
    manifest = pd.DataFrame({"utt_id": [f"u{i:03d}" for i in range(100)], "label": labels})
    chosen = frame_subset(manifest, 10, seed=0)
    assert chosen.sum() == 10
    assert [chosen[manifest["label"] == label].sum() for label in "abc"] == [5, 3, 2]
    np.testing.assert_array_equal(chosen, frame_subset(manifest.copy(), 10, seed=0))
    assert not np.array_equal(chosen, frame_subset(manifest, 10, seed=1))
    assert frame_subset(manifest, "all", seed=0).all() and frame_subset(manifest, 1000, seed=0).all()
    # Five more "a" utterances: of the old subset, at most the quota change moves.
    grown = pd.concat([manifest, pd.DataFrame({"utt_id": [f"v{i}" for i in range(5)], "label": ["a"] * 5})])
    grown_chosen = frame_subset(grown.reset_index(drop=True), 10, seed=0)[:100]
    assert (chosen & grown_chosen).sum() >= 9


def test_frame_subset_splits_remainders_by_largest_fraction():
    manifest = pd.DataFrame({"utt_id": [f"u{i}" for i in range(9)], "label": ["a"] * 4 + ["b"] * 3 + ["c"] * 2})
    chosen = frame_subset(manifest, 4, seed=0)  # quotas 1.78, 1.33, 0.89 -> 2, 1, 1
    assert [chosen[manifest["label"] == label].sum() for label in "abc"] == [2, 1, 1]


def test_batch_plan_respects_the_budget_and_covers_every_utterance_once():
    lengths = np.random.default_rng(0).integers(400, 100_000, size=200)
    budget = 300_000
    batches = plan_batches(lengths, budget)
    np.testing.assert_array_equal(np.sort(np.concatenate(batches)), np.arange(200))
    for batch in batches:
        assert len(batch) * lengths[batch].max() <= budget or len(batch) == 1
        assert lengths[batch[0]] == lengths[batch].max()
    assert [len(b) for b in plan_batches([5, 50, 500], 0)] == [1, 1, 1]
    assert [list(b) for b in plan_batches([10, 400, 20], 100)] == [[1], [2, 0]]  # too long: alone


def test_block_copy_puts_every_utterance_where_the_offsets_say(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    monkeypatch.setattr(embedding_store, "COPY_BLOCK_BYTES", 7 * 3 * 4)  # 7 rows of 3 float32
    lengths = rng.integers(0, 5, size=30)  # some utterances own no rows
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    owner = rng.integers(0, 2, size=30)  # which of two sources holds each utterance
    expected = rng.standard_normal((offsets[-1], 3)).astype(np.float32)
    with h5py.File(tmp_path / "copy.h5", "w") as handle:
        pieces = []
        for source in range(2):
            utterances = np.flatnonzero(owner == source)
            rows = np.concatenate([expected[offsets[u] : offsets[u + 1]] for u in utterances])
            source_offsets = np.concatenate([[0], np.cumsum(lengths[utterances])])
            dataset = handle.create_dataset(f"source{source}", data=rows)
            pieces.append((dataset, source_offsets, np.arange(len(utterances)), utterances))
        destination = handle.create_dataset("destination", shape=expected.shape, dtype=np.float32)
        embedding_store.copy_utterance_rows(destination, offsets, pieces)
        np.testing.assert_array_equal(destination[()], expected)
        # One source alone (extraction copies only reused rows; it computes the rest after).
        embedding_store.copy_utterance_rows(destination, offsets, pieces[:1])
        copied = np.repeat(owner == 0, lengths)
        np.testing.assert_array_equal(destination[()][copied], expected[copied])


def test_rows_written_raw_in_any_order_after_the_file_is_closed_read_back_through_hdf5(tmp_path):
    rng = np.random.default_rng(3)
    num_frames = np.array([3, 5, 2, 4, 6])
    keep = np.array([True, False, True, True, False])
    path = tmp_path / "raw.h5"
    with h5py.File(path, "w") as out:
        offsets = embedding_store.create_layout(
            out, [f"u{i}" for i in range(5)], ["x"] * 5, num_frames, keep, 4, 1, {"model": "m"}
        )
        locations = embedding_store.raw_locations(out, 1)
    pooled = rng.standard_normal((2, 5, 4)).astype(np.float32)  # (states, rows, D)
    frames = rng.standard_normal((2, offsets[-1], 4)).astype(np.float16)
    fd = os.open(path, os.O_WRONLY)
    try:
        rows = {name: embedding_store.RawRows(fd, location) for name, location in locations.items()}
        for row in rng.permutation(5):
            for state, name in enumerate(layer_names(1)):
                rows[f"pooled/{name}"].write(row, pooled[state, row])
                rows[f"frames/{name}"].write(offsets[row], frames[state, offsets[row] : offsets[row + 1]])
        with pytest.raises(IndexError, match=r"do not fit a dataset of shape \(5, 4\)"):
            rows["pooled/layer_00"].write(4, pooled[0, :2])
    finally:
        os.close(fd)
    with h5py.File(path, "r") as handle:
        assert handle.attrs["model"] == "m"
        for state, name in enumerate(layer_names(1)):
            np.testing.assert_array_equal(handle[f"pooled/{name}"][()], pooled[state])
            np.testing.assert_array_equal(handle[f"frames/{name}"][()], frames[state])


def test_planning_rate_scales_with_layers_device_threads_and_shards():
    # 0.5 audio s/s per CPU thread for 12 layers; half as fast with twice the layers.
    assert planning_rate(12, "cpu", 2, 1) == 1.0
    assert planning_rate(24, "auto", 2, 1) == 0.5
    assert planning_rate(12, "cpu", 2, 4) == 4.0  # each shard job covers a quarter of the corpus
    assert planning_rate(12, "cuda", 2, 1) == PLANNING_RATE_PER_GPU == 200.0


def test_auto_batch_budget_follows_free_gpu_memory_up_to_its_cap(monkeypatch):
    config = tiny_config("wav2vec2")
    assert batch_budget_samples(1.5, torch.device("cpu"), config) == 24_000
    assert batch_budget_samples("auto", torch.device("cpu"), config) == 30 * RATE
    free = {"bytes": 0}
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free["bytes"], 80 * 2**30))
    budgets = []
    for gib in (0.1, 0.2, 0.4, 10_000):
        free["bytes"] = int(gib * 2**30)
        budgets.append(batch_budget_samples("auto", torch.device("cuda"), config))
    assert budgets[1] == pytest.approx(2 * budgets[0], abs=1) and budgets[2] == pytest.approx(4 * budgets[0], abs=2)
    assert budgets[3] == 600 * RATE  # the cap
    # a model with wider layers gets fewer seconds from the same memory
    free["bytes"] = int(0.1 * 2**30)
    assert batch_budget_samples("auto", torch.device("cuda"), tiny_config("wav2vec2", hidden_size=64)) < budgets[0]


def test_shards_balance_batch_costs():
    # By hand: 5 -> shard 0, 4 -> 1, 3 -> 1 (4 < 5), 3 -> 0 (5 < 7), 2 -> 1 (7 < 8), 1 -> 0: loads 9 and 9.
    np.testing.assert_array_equal(assign_to_shards([5, 4, 3, 3, 2, 1], 2), [0, 1, 1, 0, 1, 0])
    costs = np.random.default_rng(0).uniform(1, 10, size=40)
    owner = assign_to_shards(costs, 3)
    loads = np.bincount(owner, weights=costs, minlength=3)
    # Largest first to the least loaded: the shards differ by less than one batch.
    assert loads.max() - loads.min() <= costs.max()
    np.testing.assert_array_equal(owner, assign_to_shards(costs, 3))


# ---------------------------------------------------------------------------------------
# Shards, reuse, atomic writes


@pytest.fixture
def small_copy_blocks(monkeypatch):
    """Copy blocks of a few rows, so that copies and merges cross many block boundaries."""
    monkeypatch.setattr(embedding_store, "COPY_BLOCK_BYTES", 1000)


def test_merged_shards_equal_one_shard(tmp_path, corpus, checkpoints, small_copy_blocks):
    manifest, _ = corpus
    single = tmp_path / "single.h5"
    extract_embeddings(manifest, checkpoints["group"], single, settings(frame_utterances=5))
    parts = [tmp_path / f"part{k}.h5" for k in range(3)]
    for k, part in enumerate(parts):
        extract_embeddings(manifest, checkpoints["group"], part, settings(frame_utterances=5), k, 3)
    part_sizes = [len(read_all(part)[0]["utt_id"]) for part in parts]
    assert sum(part_sizes) == 12 and min(part_sizes) > 0
    merged = tmp_path / "merged.h5"
    merge_shards(parts, manifest, merged)
    merged_data, merged_attributes = read_all(merged)
    single_data, single_attributes = read_all(single)
    assert merged_data.keys() == single_data.keys()
    for name, values in single_data.items():
        np.testing.assert_array_equal(merged_data[name], values, err_msg=name)
    assert merged_attributes.keys() == single_attributes.keys()
    for key, value in single_attributes.items():
        np.testing.assert_array_equal(merged_attributes[key], value, err_msg=key)
    with pytest.raises(ValueError, match="shards 0..1 of 2"):
        merge_shards(parts[:2], manifest, tmp_path / "bad.h5")


def test_rerun_computes_only_new_and_changed_utterances_and_equals_a_fresh_run(
    tmp_path, corpus, checkpoints, monkeypatch
):
    manifest, rows = corpus
    output = tmp_path / "out.h5"
    options = settings(frame_utterances=6)
    first = extract_embeddings(manifest, checkpoints["group"], output, options)
    assert (first.reused, first.computed) == (0, 12)
    before = {(row["utt_id"], row["sha1"]): framed for row, framed in zip(rows, frame_subset(pd.DataFrame(rows), 6, 0))}
    # Two new utterances, one whose audio changed, one removed.
    audio = tmp_path / "audio"
    rows = [row for row in rows if row["utt_id"] != "u05"]
    rows[3] = utterance_row(audio, rows[3]["utt_id"], 7_777, rows[3]["label"], 99)
    rows += [utterance_row(audio, "u20", 6_000, "neu", 20), utterance_row(audio, "u21", 26_000, "sad", 21)]
    write_manifest(manifest, rows)

    sizes = count_forward_batch_sizes(monkeypatch)
    rerun = extract_embeddings(manifest, checkpoints["group"], output, options, previous_path=output)
    rows.sort(key=lambda row: row["utt_id"])
    subset_now = frame_subset(pd.DataFrame(rows), 6, 0)
    # New and changed utterances run, and so do unchanged ones that joined the frame subset.
    must_run = [
        (row["utt_id"], row["sha1"]) not in before or (framed and not before[row["utt_id"], row["sha1"]])
        for row, framed in zip(rows, subset_now)
    ]
    assert sum(must_run) >= 3
    assert (rerun.reused, rerun.computed) == (13 - sum(must_run), sum(must_run))
    assert sum(sizes) == sum(must_run)

    fresh = tmp_path / "fresh.h5"
    extract_embeddings(manifest, checkpoints["group"], fresh, options)
    rerun_data, rerun_attributes = read_all(output)
    fresh_data, fresh_attributes = read_all(fresh)
    assert rerun_data.keys() == fresh_data.keys()
    for name in ("utt_id", "sha1", "num_frames", "frame_offsets"):
        np.testing.assert_array_equal(rerun_data[name], fresh_data[name])
    assert (np.diff(fresh_data["frame_offsets"]) > 0).sum() == subset_now.sum()
    for name in layer_names(2):
        np.testing.assert_allclose(rerun_data[f"pooled/{name}"], fresh_data[f"pooled/{name}"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(
            rerun_data[f"frames/{name}"].astype(float), fresh_data[f"frames/{name}"].astype(float), rtol=1e-3, atol=1e-3
        )
    assert rerun_attributes.keys() == fresh_attributes.keys()
    for key, value in fresh_attributes.items():
        np.testing.assert_array_equal(rerun_attributes[key], value, err_msg=key)

    sizes.clear()
    again = extract_embeddings(manifest, checkpoints["group"], output, options, previous_path=output)
    assert (again.reused, again.computed, sizes) == (13, 0, [])


def test_reuse_needs_the_same_model(tmp_path, corpus, checkpoints):
    manifest, _ = corpus
    output = tmp_path / "out.h5"
    extract_embeddings(manifest, checkpoints["group"], output, settings())
    other = save_checkpoint(tmp_path / "other", tiny_config("wav2vec2", **KINDS["group"]), seed=1)
    summary = extract_embeddings(manifest, other, output, settings(), previous_path=output)
    assert (summary.reused, summary.computed) == (0, 12)


def test_reuse_needs_the_same_resampling(tmp_path, corpus, checkpoints):
    manifest, _ = corpus
    output = tmp_path / "out.h5"
    extract_embeddings(manifest, checkpoints["group"], output, settings())
    summary = extract_embeddings(manifest, checkpoints["group"], output, settings(), previous_path=output)
    assert (summary.reused, summary.computed) == (12, 0)
    with h5py.File(output, "a") as h5:
        h5.attrs["resampling"] = "an earlier resampler"
    summary = extract_embeddings(manifest, checkpoints["group"], output, settings(), previous_path=output)
    assert (summary.reused, summary.computed) == (0, 12)


def test_interrupted_job_leaves_the_previous_file_and_nothing_partial(tmp_path, corpus, checkpoints, monkeypatch):
    manifest, rows = corpus
    output = tmp_path / "embeddings" / "out.h5"
    extract_embeddings(manifest, checkpoints["group"], output, settings(frame_utterances=3))
    before = read_all(output)[0]
    audio = tmp_path / "audio"
    rows = [
        utterance_row(audio, row["utt_id"], n, row["label"], 50 + i) for i, (row, n) in enumerate(zip(rows, LENGTHS))
    ]
    write_manifest(manifest, rows)  # every utterance changed: a long job
    decoded = []

    def failing_load(path):
        decoded.append(path)
        if len(decoded) == 5:
            raise BadAudioError(path, "simulated crash")
        return load_audio(path)

    monkeypatch.setattr("paraprobe.embeddings.load_audio", failing_load)
    with pytest.raises(BadAudioError, match="simulated crash"):
        extract_embeddings(manifest, checkpoints["group"], output, settings(frame_utterances=3), previous_path=output)
    assert sorted(p.name for p in output.parent.iterdir()) == ["out.h5"]
    after = read_all(output)[0]
    for name, values in before.items():
        np.testing.assert_array_equal(after[name], values)


def test_unreadable_previous_file_is_not_trusted(tmp_path, corpus, checkpoints, caplog):
    manifest, _ = corpus
    output = tmp_path / "out.h5"
    output.write_bytes(b"\x89HDF\r\n\x1a\n truncated")
    with caplog.at_level(logging.WARNING, logger="paraprobe"):
        summary = extract_embeddings(manifest, checkpoints["group"], output, settings(), previous_path=output)
    assert (summary.reused, summary.computed) == (0, 12)
    assert "unreadable" in caplog.text
    assert read_all(output)[0]["utt_id"].shape == (12,)


def test_audio_that_changed_since_the_manifest_is_an_error(tmp_path, corpus, checkpoints):
    manifest, rows = corpus
    write_utterance(rows[4]["path"], 5_500, seed=4)
    with pytest.raises(ValueError, match=rf"{rows[4]['path']}: decodes to 5500 samples but the manifest says 5000"):
        extract_embeddings(manifest, checkpoints["group"], tmp_path / "out.h5", settings())


@pytest.mark.parametrize(
    "workers, pin_memory",
    [
        (0, False),
        (2, False),
        pytest.param(
            2,
            True,
            marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")],
        ),
    ],
)
def test_decoded_batches_arrive_in_order_and_a_worker_error_is_raised_as_it_is(corpus, workers, pin_memory):
    """Forked decoding workers (as on a GPU) give what decoding in the job's process gives;
    staged in reused page-locked buffers, each batch is intact while it is used."""
    manifest_path, rows = corpus
    manifest = read_manifest(manifest_path)
    num_samples = manifest_num_samples(manifest)
    inputs = InputSettings(sampling_rate=RATE, do_normalize=True)
    batches = plan_batches(num_samples, 20_000)
    dataset = BatchInputs(manifest["path"].to_numpy(), num_samples, inputs, batches)
    assert len(batches) > 3, "more batches than page-locked buffers, for the test to bite"
    for batch, values in zip(batches, decoded_batches(dataset, workers, pin_memory), strict=True):
        expected = pad_batch([inputs.prepare(load_audio(manifest["path"][row])) for row in batch])
        assert values.is_pinned() == pin_memory
        torch.testing.assert_close(values, expected, rtol=0, atol=0)
    write_utterance(rows[3]["path"], 3_000, seed=3)  # the manifest says 3,200 samples
    with pytest.raises(ValueError, match=rf"{rows[3]['path']}: decodes to 3000 samples but the manifest says 3200"):
        list(decoded_batches(dataset, workers, pin_memory))


# ---------------------------------------------------------------------------------------
# GPU


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_gpu_half_precision_is_close_to_cpu_float32(tmp_path, corpus, checkpoints, kind):
    manifest, _ = corpus
    cpu, gpu32, gpu16 = (tmp_path / f"{name}.h5" for name in ("cpu", "gpu32", "gpu16"))
    extract_embeddings(manifest, checkpoints[kind], cpu, settings(batch_seconds=0))
    extract_embeddings(manifest, checkpoints[kind], gpu32, settings(device="cuda", half_precision=False))
    extract_embeddings(manifest, checkpoints[kind], gpu16, settings(device="cuda"))
    reference = read_all(cpu)[0]
    for path, worst in ((gpu32, 0.999), (gpu16, 0.99)):
        data, attributes = read_all(path)
        assert attributes["precision"] == ("float16-autocast" if path == gpu16 else "float32")
        for name in layer_names(2):
            assert cosines(data[f"pooled/{name}"], reference[f"pooled/{name}"]).min() >= worst


def test_a_shard_without_batches_writes_an_empty_part_that_merges(tmp_path, corpus, checkpoints):
    manifest, _ = corpus
    options = settings(batch_seconds=100)  # one batch holds the whole corpus
    parts = [tmp_path / f"part{k}.h5" for k in range(2)]
    for k, part in enumerate(parts):
        extract_embeddings(manifest, checkpoints["layer"], part, options, k, 2)
    sizes = sorted(read_all(part)[0]["pooled/layer_02"].shape[0] for part in parts)
    assert sizes == [0, 12]
    merge_shards(parts, manifest, tmp_path / "merged.h5")
    single = tmp_path / "single.h5"
    extract_embeddings(manifest, checkpoints["layer"], single, options)
    np.testing.assert_array_equal(
        read_all(tmp_path / "merged.h5")[0]["pooled/layer_02"], read_all(single)[0]["pooled/layer_02"]
    )
    with pytest.raises(ValueError, match="shard 2 does not exist among 2 shards"):
        extract_embeddings(manifest, checkpoints["layer"], tmp_path / "bad.h5", options, 2, 2)
