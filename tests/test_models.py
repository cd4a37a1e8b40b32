"""Model loading: random init, local directories, the Hugging Face cache, and the offline error."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModel, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC

from paraprobe.model_configs import (
    CHECKPOINT_CONFIG_FILE,
    CheckpointNotAvailableError,
    InvalidCheckpointError,
    UnsupportedModelError,
    num_transformer_layers,
)
from paraprobe.models import InputSettings, load_model

REPO = Path(__file__).resolve().parents[1]
TINY = {
    "num_hidden_layers": 3,
    "hidden_size": 32,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "conv_dim": [32] * 7,
}
RANDOM = {"init": "random", "architecture": "wav2vec2", "seed": 0, "config": TINY}


def test_random_init_is_a_function_of_the_seed():
    torch.manual_seed(123)  # the global RNG state must not matter
    _, _, first = load_model(RANDOM)
    torch.rand(10)
    model, inputs, again = load_model(RANDOM)
    _, _, other_seed = load_model({**RANDOM, "seed": 1})
    assert first.fingerprint == again.fingerprint != other_seed.fingerprint
    assert (again.name, again.revision, again.model_type) == ("random-init wav2vec2", "", "wav2vec2")
    assert (again.num_layers, again.hidden_size, again.frame_rate_hz) == (3, 32, 50.0)
    assert model.config.conv_dim == [32] * 7 and not model.training
    assert inputs == InputSettings(16_000, True)


def test_unknown_config_override_is_named():
    with pytest.raises(UnsupportedModelError, match=r"\['num_hidden_layer'\] are not fields of the wav2vec2 config"):
        load_model({**RANDOM, "config": {"num_hidden_layer": 2}})
    with pytest.raises(UnsupportedModelError, match="'wav2vec3' is not a transformers model_type"):
        num_transformer_layers({**RANDOM, "architecture": "wav2vec3"})
    # refused while the workflow plans (it reads the layer count), not when the extraction job loads it
    with pytest.raises(UnsupportedModelError, match="architecture 'bert': model_type 'bert' has no convolutional"):
        num_transformer_layers({**RANDOM, "architecture": "bert", "config": {}})


def test_num_transformer_layers_from_override_random_config_and_local_directory(tmp_path):
    assert num_transformer_layers({"id": "facebook/wav2vec2-base", "num_layers": 12}) == 12
    assert num_transformer_layers(RANDOM) == 3
    assert num_transformer_layers({**RANDOM, "num_layers": 3}) == 3
    with pytest.raises(UnsupportedModelError, match="^num_layers is 5 but config.num_hidden_layers is 3; leave"):
        num_transformer_layers({**RANDOM, "num_layers": 5})  # refused while planning, not in the extraction job
    assert num_transformer_layers({**RANDOM, "config": {}}) == AutoConfig.for_model("wav2vec2").num_hidden_layers
    config = AutoConfig.for_model("hubert", **TINY)
    config.save_pretrained(tmp_path)  # config.json only: planning reads no weights
    assert num_transformer_layers({"id": str(tmp_path)}) == 3


def test_planning_reads_config_json_without_importing_torch_or_transformers(tmp_path):
    from transformers.utils import CONFIG_NAME

    assert CHECKPOINT_CONFIG_FILE == CONFIG_NAME
    AutoConfig.for_model("wavlm", **TINY).save_pretrained(tmp_path)
    script = (
        "import sys; from paraprobe.model_configs import num_transformer_layers; "
        f"print(num_transformer_layers({{'id': {str(tmp_path)!r}}}), 'torch' in sys.modules, 'transformers' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.stdout.split() == ["3", "False", "False"], result.stderr[-2000:]


def test_checkpoint_directory_without_config_json_is_named(tmp_path):
    with pytest.raises(CheckpointNotAvailableError, match=f"directory {tmp_path} has no config.json"):
        num_transformer_layers({"id": str(tmp_path)})


def test_local_directory_round_trip_keeps_the_fingerprint(tmp_path):
    model, _, random_info = load_model(RANDOM)
    model.save_pretrained(tmp_path)
    Wav2Vec2FeatureExtractor(do_normalize=False).save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    loaded, inputs, info = load_model({"id": str(tmp_path)})
    assert info.fingerprint == random_info.fingerprint
    assert info.name == str(tmp_path.resolve()) and info.revision == ""
    assert inputs == InputSettings(16_000, False)


def save_checkpoint(directory: Path) -> Path:
    """A tiny random wav2vec2 checkpoint (model.safetensors, config.json, preprocessor config) in ``directory``."""
    model, _, _ = load_model(RANDOM)
    model.save_pretrained(directory)
    Wav2Vec2FeatureExtractor().save_pretrained(directory)
    return directory


def edit_config_json(directory: Path, edit) -> None:
    config = json.loads((directory / "config.json").read_text())
    edit(config)
    (directory / "config.json").write_text(json.dumps(config))


def test_checkpoint_missing_weights_the_model_uses_is_refused(tmp_path, caplog):
    prefixed = save_checkpoint(tmp_path / "prefixed")
    weights = load_file(prefixed / "model.safetensors")
    save_file({f"encoder_model.{k}": v for k, v in weights.items()}, prefixed / "model.safetensors", {"format": "pt"})
    with pytest.raises(InvalidCheckpointError) as refused:
        load_model({"id": str(prefixed)})
    message = str(refused.value)
    assert message.startswith(f"model checkpoint directory {prefixed.resolve()}: ")
    assert f"{len(weights) - 1} of the {len(weights)} weights of its wav2vec2 model are missing" in message
    assert "encoder.layer_norm.bias, encoder.layer_norm.weight, encoder.layers.0." in message
    assert "such as encoder_model." in message

    # config.json without num_hidden_layers: the default 12 layers, of which the checkpoint has 3.
    no_layers = save_checkpoint(tmp_path / "no-layers")
    edit_config_json(no_layers, lambda config: config.pop("num_hidden_layers"))
    with pytest.raises(InvalidCheckpointError, match=r"are missing from the checkpoint .*: encoder\.layers\.3\."):
        load_model({"id": str(no_layers)})

    # Legitimately absent: masked_spec_embed (training-time masking only); unused: a CTC head.
    no_mask = save_checkpoint(tmp_path / "no-mask")
    weights = load_file(no_mask / "model.safetensors")
    del weights["masked_spec_embed"]
    save_file(weights, no_mask / "model.safetensors", {"format": "pt"})
    assert load_model({"id": str(no_mask)})[2].num_layers == 3
    ctc = tmp_path / "ctc"
    Wav2Vec2ForCTC(AutoConfig.for_model("wav2vec2", vocab_size=8, **TINY)).save_pretrained(ctc)
    Wav2Vec2FeatureExtractor().save_pretrained(ctc)
    assert "lm_head.weight" in load_file(ctc / "model.safetensors")
    caplog.clear()
    with caplog.at_level("INFO"):
        assert load_model({"id": str(ctc)})[2].num_layers == 3
    assert [record.getMessage() for record in caplog.records] == [
        f"model checkpoint directory {ctc}: 2 checkpoint weights not used by the base model: lm_head.bias, lm_head.weight"
    ]


def touch(path: str) -> None:
    Path(path).touch()


class PicklePayload:
    """Runs ``touch(marker)`` when unpickled without ``weights_only``."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return touch, (self.marker,)


def test_pickled_weights_file_is_refused_naming_the_file(tmp_path):
    checkpoint = save_checkpoint(tmp_path / "checkpoint")
    weights = load_file(checkpoint / "model.safetensors")
    (checkpoint / "model.safetensors").unlink()
    marker = tmp_path / "code-ran"
    torch.save({**weights, "payload": PicklePayload(marker)}, checkpoint / "pytorch_model.bin")
    with pytest.raises(InvalidCheckpointError) as refused:
        load_model({"id": str(checkpoint)})
    message = str(refused.value)
    assert message.startswith(
        f"model checkpoint directory {checkpoint}: its pytorch_model.bin weights hold Python objects other than tensors"
    )
    assert "refuses to unpickle for safety" in message and "safetensors (model.safetensors)" in message
    assert "weights_only" not in message and "\n" not in message
    assert not marker.exists()


def test_corrupt_config_json_is_named(tmp_path):
    checkpoint = save_checkpoint(tmp_path)
    (checkpoint / "config.json").write_text("{not json")
    expected = f"{checkpoint.resolve() / 'config.json'}: not a valid JSON file (Expecting property name"
    for call in (num_transformer_layers, load_model):
        with pytest.raises(InvalidCheckpointError) as refused:
            call({"id": str(checkpoint)})
        assert str(refused.value).startswith(expected)


def test_local_directory_without_weights_is_named(tmp_path):
    checkpoint = save_checkpoint(tmp_path)
    (checkpoint / "model.safetensors").unlink()
    with pytest.raises(CheckpointNotAvailableError) as refused:
        load_model({"id": str(checkpoint)})
    message = str(refused.value)
    assert message.startswith(f"model checkpoint directory {checkpoint.resolve()} has no weights: none of ")
    assert "model.safetensors" in message and "pytorch_model.bin" in message
    assert "hf download" not in message and "cache" not in message


def test_config_json_that_does_not_fit_the_weights_is_refused(tmp_path):
    checkpoint = save_checkpoint(tmp_path)
    edit_config_json(checkpoint, lambda config: config.update(hidden_size=48))
    with pytest.raises(InvalidCheckpointError) as refused:
        load_model({"id": str(checkpoint)})
    message = str(refused.value)
    assert message.startswith(f"model checkpoint directory {checkpoint.resolve()}: ")
    assert "weights have other shapes than its config.json describes: " in message
    assert "encoder.layer_norm.bias (checkpoint [32], config [48])" in message
    assert "ignore_mismatched_sizes" not in message


def test_planning_layer_count_must_match_the_checkpoint():
    with pytest.raises(UnsupportedModelError, match="num_layers is 12 in the config, but the checkpoint has 3"):
        load_model({**RANDOM, "num_layers": 12})


def test_missing_local_directory_is_named():
    with pytest.raises(CheckpointNotAvailableError, match="directory /no/such/checkpoint does not exist"):
        load_model({"id": "/no/such/checkpoint"})


def test_non_waveform_model_is_refused(tmp_path):
    config = AutoConfig.for_model(
        "bert", num_hidden_layers=1, hidden_size=32, num_attention_heads=2, intermediate_size=64
    )
    AutoModel.from_config(config).save_pretrained(tmp_path)
    Wav2Vec2FeatureExtractor().save_pretrained(tmp_path)
    with pytest.raises(UnsupportedModelError, match="no convolutional feature encoder"):
        load_model({"id": str(tmp_path)})


def test_input_normalisation_matches_the_hugging_face_feature_extractor():
    samples = np.random.default_rng(0).normal(0.3, 0.2, 12_345).astype(np.float32)
    expected = Wav2Vec2FeatureExtractor(do_normalize=True)(samples, sampling_rate=16_000)["input_values"][0]
    np.testing.assert_array_equal(InputSettings(16_000, True).prepare(samples), expected)
    np.testing.assert_array_equal(InputSettings(16_000, False).prepare(samples), samples)


OFFLINE_SCRIPT = """
import json
from paraprobe.model_configs import CheckpointNotAvailableError, num_transformer_layers
from paraprobe.models import load_model
report = {}
_, _, info = load_model({"id": "org/tiny"})
report["revision"] = info.revision
report["layers"] = num_transformer_layers({"id": "org/tiny"})
_, inputs, _ = load_model({"id": "org/known-without-preprocessor"})
report["known_without"] = inputs.do_normalize
try:
    load_model({"id": "org/unknown-preprocessor"})
except CheckpointNotAvailableError as error:
    report["unknown"] = str(error)
for call in (load_model, num_transformer_layers):
    try:
        call({"id": "facebook/wav2vec2-base"})
    except CheckpointNotAvailableError as error:
        report[call.__name__] = str(error)
print(json.dumps(report))
"""


def test_offline_hub_models_come_from_the_cache_or_a_one_line_error(tmp_path):
    """With HF_HUB_OFFLINE=1, a cached checkpoint loads with its commit; a missing one says how to get it."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    model, _, _ = load_model(RANDOM)
    for name in ("tiny", "known-without-preprocessor", "unknown-preprocessor"):
        repo = tmp_path / "hub" / f"models--org--{name}"
        snapshot = repo / "snapshots" / commit
        model.save_pretrained(snapshot)
        if name == "tiny":
            Wav2Vec2FeatureExtractor().save_pretrained(snapshot)
        elif name == "known-without-preprocessor":  # the cache's record of a file the hub does not have
            (repo / ".no_exist" / commit).mkdir(parents=True)
            (repo / ".no_exist" / commit / "preprocessor_config.json").touch()
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(commit)
    environment = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "home"),
        "HF_HUB_CACHE": str(tmp_path / "hub"),
        "PYTHONPATH": str(REPO),
    }
    result = subprocess.run(
        [sys.executable, "-c", OFFLINE_SCRIPT], env=environment, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["revision"] == commit and report["layers"] == 3
    assert report["known_without"] is True  # Wav2Vec2FeatureExtractor's default, with a warning
    assert report["unknown"] == (
        "preprocessor_config.json of org/unknown-preprocessor is not in the local Hugging Face cache and "
        "HF_HUB_OFFLINE=1: it says whether the model expects normalised audio: download it with "
        "`hf download org/unknown-preprocessor preprocessor_config.json`, or set the model's `id` to a local "
        "directory holding the checkpoint"
    )
    for call in ("load_model", "num_transformer_layers"):
        message = report[call]
        assert "\n" not in message
        assert message.startswith(
            "model checkpoint facebook/wav2vec2-base is not in the local Hugging Face cache and HF_HUB_OFFLINE=1"
        )
        assert "`hf download facebook/wav2vec2-base`" in message and "local directory" in message
    assert "num_layers" in report["num_transformer_layers"] and "num_layers" not in report["load_model"]
