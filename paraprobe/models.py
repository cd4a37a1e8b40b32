"""Speech encoders from a model config: a pretrained Hugging Face checkpoint or a random init.

A model config is one entry of the workflow config's ``models:`` section::

    PT:   {id: facebook/wav2vec2-base}                       # hub id (optionally `revision`)
    MINE: {id: /data/checkpoints/my-wav2vec2}                # local directory (save_pretrained)
    RAND: {init: random, architecture: wav2vec2, seed: 0,    # random-init control
           config: {num_hidden_layers: 4, hidden_size: 256}}

Checkpoints load through ``AutoConfig``/``AutoModel``/``AutoFeatureExtractor``, never with
``trust_remote_code``; transformers takes ``model.safetensors`` when the checkpoint has it
and otherwise reads ``pytorch_model.bin`` with ``torch.load(weights_only=True)``. A checkpoint
whose weights do not fit its architecture (missing or differently shaped weights, which
transformers would leave randomly initialised) is refused.

Only raw-waveform encoders are supported (wav2vec2, HuBERT, WavLM, data2vec-audio,
UniSpeech...): their convolutional feature encoder is described by ``conv_kernel`` and
``conv_stride``, which :mod:`paraprobe.framing` turns into frame counts.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from huggingface_hub import constants as hub_constants
from huggingface_hub import file_exists, try_to_load_from_cache
from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, PretrainedConfig, Wav2Vec2FeatureExtractor
from transformers.utils import (
    FEATURE_EXTRACTOR_NAME,
    SAFE_WEIGHTS_INDEX_NAME,
    SAFE_WEIGHTS_NAME,
    WEIGHTS_INDEX_NAME,
    WEIGHTS_NAME,
)

from paraprobe.audio import TARGET_SAMPLE_RATE
from paraprobe.framing import hop_samples
from paraprobe.model_configs import (
    CHECKPOINT_CONFIG_FILE,
    CheckpointNotAvailableError,
    InvalidCheckpointError,
    UnsupportedModelError,
    checkpoint_config_json,
    checkpoint_source,
    is_random_init,
    unavailable_message,
)

logger = logging.getLogger("paraprobe")

#: Added to the variance before the square root, as in ``Wav2Vec2FeatureExtractor``.
NORMALIZATION_EPSILON = 1e-7

#: Config keys that do not change what the base model computes: provenance, the head class
#: a checkpoint was saved from, and the storage dtype (the weights' dtypes are hashed anyway).
NON_COMPUTATIONAL_CONFIG_KEYS = (
    "_name_or_path",
    "_commit_hash",
    "transformers_version",
    "name_or_path",
    "architectures",
    "dtype",
    "torch_dtype",
)

#: Weights of the supported base models that a faithful checkpoint may lack, because inference
#: never reads them: ``masked_spec_embed`` is the learned vector that replaces masked frames in
#: SpecAugment-style time/feature masking, applied only in training mode or when
#: ``mask_time_indices`` is passed (paraprobe does neither). Any other missing weight would stay
#: randomly initialised and change the embeddings, so it is an error; keep this list to weights
#: the forward pass in eval mode provably does not use.
OPTIONAL_CHECKPOINT_WEIGHTS = frozenset({"masked_spec_embed"})

#: Weight names shown in an error message before "...".
SHOWN_WEIGHT_NAMES = 3


@dataclass(frozen=True)
class InputSettings:
    """How the feature extractor turns a 16 kHz waveform into the model's ``input_values``.

    Attributes
    ----------
    sampling_rate : int
        Hz the model expects (16000 for every supported encoder).
    do_normalize : bool
        Normalise each utterance to zero mean and unit variance over its own samples,
        as ``Wav2Vec2FeatureExtractor(do_normalize=True)`` does.
    """

    sampling_rate: int
    do_normalize: bool

    def prepare(self, samples: np.ndarray) -> np.ndarray:
        """(n,) float32 waveform -> (n,) float32 ``input_values`` of one utterance.

        Normalisation uses the utterance's own samples only, so it must run per
        utterance before any padding (padding would change the mean and variance).
        """
        samples = np.asarray(samples, dtype=np.float32)
        if not self.do_normalize:
            return samples
        return (samples - samples.mean()) / np.sqrt(samples.var() + NORMALIZATION_EPSILON)


@dataclass(frozen=True)
class ModelInfo:
    """What an embeddings file records about the model that made it.

    Attributes
    ----------
    name : str
        Hub id, absolute local directory, or ``random-init <architecture>``.
    revision : str
        Resolved commit hash of a hub checkpoint; ``""`` for a local directory or random init.
    model_type : str
        transformers ``model_type`` (``wav2vec2``, ``hubert``, ...).
    num_layers : int
        Transformer layers L; the model yields L + 1 hidden states (layer 0 = its input).
    hidden_size : int
        Width D of every hidden state.
    conv_kernel, conv_stride : tuple of int
        The convolutional feature encoder, for :func:`paraprobe.framing.num_model_frames`.
    feat_extract_norm : str
        ``group`` (GroupNorm over time in the first convolution, as wav2vec2-base) or
        ``layer`` (LayerNorm per frame).
    fingerprint : str
        SHA-1 over the model's weights and its computation-relevant config: equal
        fingerprints compute equal embeddings, whatever the name or revision says.
    """

    name: str
    revision: str
    model_type: str
    num_layers: int
    hidden_size: int
    conv_kernel: tuple[int, ...]
    conv_stride: tuple[int, ...]
    feat_extract_norm: str
    fingerprint: str

    @property
    def frame_rate_hz(self) -> float:
        """Frames per second of every hidden state (50 Hz for wav2vec2)."""
        return TARGET_SAMPLE_RATE / hop_samples(self.conv_stride)


def load_model(model_cfg: dict, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, InputSettings, ModelInfo]:
    """Build the encoder a model config names, in eval mode on ``device``.

    Parameters
    ----------
    model_cfg : dict
        One entry of the config's ``models:`` (keys ``id``, ``revision``, or ``init:
        random`` with ``architecture``, ``seed``, ``config``).
    device : str or torch.device
        Where the model's weights go.

    Returns
    -------
    model : torch.nn.Module
        The transformers base model (``Wav2Vec2Model``, ``HubertModel``...), eval mode,
        gradients off.
    input_settings : InputSettings
        The feature extractor's sampling rate and normalisation.
    info : ModelInfo
        Identity and geometry of the model, for the embeddings file's attributes.

    Raises
    ------
    CheckpointNotAvailableError
        The checkpoint is neither local nor downloadable (one line saying how to provide it).
    UnsupportedModelError
        The checkpoint is not a 16 kHz raw-waveform encoder.
    InvalidCheckpointError
        A file of the checkpoint is unreadable or unsafe, or its weights do not fit its config.
    """
    if is_random_init(model_cfg):
        config = random_init_config(model_cfg)
        input_settings = InputSettings(TARGET_SAMPLE_RATE, Wav2Vec2FeatureExtractor().do_normalize)
        name, revision = f"random-init {config.model_type}", ""
        check_supported(config, input_settings, name, model_cfg)
        # A forked RNG makes the weights a function of the seed alone, whatever ran before.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(model_cfg.get("seed", 0)))
            model = AutoModel.from_config(config)
    else:
        config = pretrained_config(model_cfg)
        source, revision_request = checkpoint_source(model_cfg)
        input_settings = pretrained_input_settings(source, revision_request)
        check_supported(config, input_settings, source, model_cfg)
        model = pretrained_model(model_cfg)
        name, revision = source, resolved_revision(source, revision_request)

    model.eval().requires_grad_(False)
    info = ModelInfo(
        name=name,
        revision=revision,
        model_type=config.model_type,
        num_layers=int(config.num_hidden_layers),
        hidden_size=int(config.hidden_size),
        conv_kernel=tuple(int(k) for k in config.conv_kernel),
        conv_stride=tuple(int(s) for s in config.conv_stride),
        feat_extract_norm=getattr(config, "feat_extract_norm", "layer"),
        fingerprint=model_fingerprint(model),
    )
    return model.to(device), input_settings, info


def random_init_config(model_cfg: dict) -> PretrainedConfig:
    """The ``architecture``'s default config with the ``config`` overrides applied.

    An override the architecture does not know is an error (a typo would otherwise be
    silently ignored by transformers).
    """
    architecture = model_cfg["architecture"]
    try:
        config = AutoConfig.for_model(architecture)
    except ValueError as error:
        raise UnsupportedModelError(f"architecture {architecture!r} is not a transformers model_type") from error
    check_waveform_encoder(config, f"architecture {architecture!r}")  # refused while planning
    overrides = model_cfg.get("config") or {}
    unknown = sorted(key for key in overrides if not hasattr(config, key))
    if unknown:
        raise UnsupportedModelError(f"config keys {unknown} are not fields of the {architecture} config")
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


def pretrained_config(model_cfg: dict, planning: bool = False) -> PretrainedConfig:
    """The checkpoint's config (config.json only), or :class:`CheckpointNotAvailableError`.

    A local directory's ``config.json`` is read first by :func:`checkpoint_config_json`, so a
    missing or corrupt one is named by its path.
    """
    source, revision = checkpoint_source(model_cfg)
    if Path(source).is_dir():
        checkpoint_config_json(model_cfg)
    try:
        return AutoConfig.from_pretrained(source, revision=revision, trust_remote_code=False)
    except OSError as error:
        raise CheckpointNotAvailableError(unavailable_message(model_cfg, error, planning)) from error


def pretrained_model(model_cfg: dict) -> torch.nn.Module:
    """The checkpoint's base model with every weight it uses loaded from the checkpoint.

    Raises :class:`CheckpointNotAvailableError` for a checkpoint that cannot be found and
    :class:`InvalidCheckpointError` for one whose weights are unsafe or do not fit its config.
    """
    source, revision = checkpoint_source(model_cfg)
    if Path(source).is_dir():
        weight_files = (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, WEIGHTS_NAME, WEIGHTS_INDEX_NAME)
        if not any((Path(source) / name).is_file() for name in weight_files):
            raise CheckpointNotAvailableError(
                f"model checkpoint directory {source} has no weights: none of {', '.join(weight_files)}"
            )
    try:
        # transformers logs a multi-line table of missing and unused weights; check_loaded_weights
        # refuses what matters in one line and report_unused_weights logs the rest.
        with quiet_logger("transformers.modeling_utils"):
            model, loading_info = AutoModel.from_pretrained(
                source,
                revision=revision,
                trust_remote_code=False,
                # float32 whatever the checkpoint was saved in: the forward pass (and a GPU's
                # autocast, if asked for) is set up for float32 weights.
                dtype=torch.float32,
                output_loading_info=True,
                # Shape mismatches come back in loading_info and are refused below, naming the
                # checkpoint and the weights, instead of transformers' generic RuntimeError.
                ignore_mismatched_sizes=True,
            )
    except pickle.UnpicklingError as error:
        raise InvalidCheckpointError(unsafe_weights_message(source, revision, error)) from error
    except OSError as error:
        raise CheckpointNotAvailableError(unavailable_message(model_cfg, error)) from error
    name = checkpoint_name(source, revision)
    check_loaded_weights(model, loading_info, name)
    report_unused_weights(loading_info, name)
    return model


@contextlib.contextmanager
def quiet_logger(name: str):
    """Within the block, the logger ``name`` passes on errors only.

    A filter, not a level: transformers runs extra checks (and logs their warnings) when its
    loggers' levels are raised.
    """
    quieted = logging.getLogger(name)

    def errors_only(record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR

    quieted.addFilter(errors_only)
    try:
        yield
    finally:
        quieted.removeFilter(errors_only)


def unused_weights(loading_info: dict) -> list[str]:
    """The checkpoint's weights the base model does not use (a CTC head, quantizer weights), sorted."""
    return sorted(loading_info["unexpected_keys"], key=natural_order)


def report_unused_weights(loading_info: dict, name: str) -> None:
    """Log the checkpoint weights the base model does not use, if any."""
    unused = unused_weights(loading_info)
    if unused:
        logger.info("%s: %d checkpoint weights not used by the base model: %s", name, len(unused), shown_names(unused))


def checkpoint_name(source: str, revision: str | None) -> str:
    """How error messages name a checkpoint: its directory, or its hub id and revision."""
    if Path(source).is_dir():
        return f"model checkpoint directory {source}"
    return f"model checkpoint {source}" + (f" (revision {revision})" if revision else "")


def check_loaded_weights(model: torch.nn.Module, loading_info: dict, name: str) -> None:
    """Raise :class:`InvalidCheckpointError` if a weight the model uses did not come from the checkpoint.

    ``loading_info`` is ``from_pretrained(..., output_loading_info=True)``'s: weights missing from
    the checkpoint (other than :data:`OPTIONAL_CHECKPOINT_WEIGHTS`) or shaped differently from what
    ``config.json`` describes would be randomly initialised. Unexpected keys (a CTC head
    ``lm_head.*``, pretraining quantizer weights) are fine: the base model does not use them.
    """
    missing = sorted(set(loading_info["missing_keys"]) - OPTIONAL_CHECKPOINT_WEIGHTS, key=natural_order)
    if missing:
        unused = unused_weights(loading_info)
        hint = (
            f"; the checkpoint has {len(unused)} weights the model does not use, such as {shown_names(unused)}"
            if unused
            else ""
        )
        raise InvalidCheckpointError(
            f"{name}: {len(missing)} of the {len(model.state_dict())} weights of its {model.config.model_type} "
            f"model are missing from the checkpoint and would be randomly initialised: {shown_names(missing)}"
            f"{hint}; the weights must be saved under the base model's names (save_pretrained), "
            "with a config.json that describes them (num_hidden_layers, hidden_size, ...)"
        )
    mismatched = sorted(loading_info["mismatched_keys"], key=lambda entry: natural_order(entry[0]))
    if mismatched:
        shapes = [
            f"{key} (checkpoint {list(stored)}, config {list(expected)})"
            for key, stored, expected in mismatched[:SHOWN_WEIGHT_NAMES]
        ]
        more = ", ..." if len(mismatched) > SHOWN_WEIGHT_NAMES else ""
        raise InvalidCheckpointError(
            f"{name}: {len(mismatched)} weights have other shapes than its config.json describes: "
            f"{', '.join(shapes)}{more}; config.json and the weights do not belong together"
        )


def natural_order(key: str) -> list:
    """Sort key putting ``layers.2`` before ``layers.10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", key)]


def shown_names(keys: list[str]) -> str:
    return ", ".join(keys[:SHOWN_WEIGHT_NAMES]) + (", ..." if len(keys) > SHOWN_WEIGHT_NAMES else "")


def unsafe_weights_message(source: str, revision: str | None, error: pickle.UnpicklingError) -> str:
    """One line saying that ``torch.load(weights_only=True)`` refused the checkpoint's pickled weights, and why."""
    found = re.search(r"GLOBAL (\S+)", str(error))
    what = f" (it references {found.group(1)})" if found else ""
    return (
        f"{checkpoint_name(source, revision)}: its {WEIGHTS_NAME} weights hold Python objects other than "
        f"tensors{what}, which paraprobe refuses to unpickle for safety; provide the checkpoint as "
        f"safetensors ({SAFE_WEIGHTS_NAME}) instead"
    )


def resolved_revision(source: str, revision: str | None) -> str:
    """Commit hash of the hub snapshot a checkpoint was loaded from; ``""`` for a local directory.

    Read from the Hugging Face cache, where every loaded file lives under
    ``models--{org}--{name}/snapshots/{commit}/``.
    """
    if Path(source).is_dir():
        return ""
    cached = try_to_load_from_cache(source, CHECKPOINT_CONFIG_FILE, revision=revision or "main")
    return Path(cached).parent.name if isinstance(cached, str) else ""


def has_preprocessor_config(source: str, revision: str | None) -> bool:
    """Whether a checkpoint has a ``preprocessor_config.json``: in its local directory, by the
    Hugging Face cache's record, or by asking the hub.

    Raises :class:`CheckpointNotAvailableError` when that cannot be known (offline, and the cache
    has no record of the file either way), rather than guessing the input normalisation.
    """
    if Path(source).is_dir():
        return (Path(source) / FEATURE_EXTRACTOR_NAME).is_file()
    cached = try_to_load_from_cache(source, FEATURE_EXTRACTOR_NAME, revision=revision or "main")
    if cached is not None:
        return isinstance(cached, str)  # not a path: the cache's record that the hub has no such file
    revision_note = f" --revision {revision}" if revision else ""
    how = (
        f"it says whether the model expects normalised audio: download it with "
        f"`hf download {source} {FEATURE_EXTRACTOR_NAME}{revision_note}`, or set the model's `id` to a local "
        "directory holding the checkpoint"
    )
    if hub_constants.is_offline_mode():
        raise CheckpointNotAvailableError(
            f"{FEATURE_EXTRACTOR_NAME} of {source} is not in the local Hugging Face cache and HF_HUB_OFFLINE=1: {how}"
        )
    try:
        return file_exists(source, FEATURE_EXTRACTOR_NAME, revision=revision)
    except Exception as error:  # noqa: BLE001 - any hub failure means the same to the user
        raise CheckpointNotAvailableError(
            f"could not ask the hub whether {source} has a {FEATURE_EXTRACTOR_NAME} ({type(error).__name__}): {how}"
        ) from error


def pretrained_input_settings(source: str, revision: str | None) -> InputSettings:
    """Sampling rate and normalisation from the checkpoint's ``preprocessor_config.json``.

    A checkpoint without one gets ``Wav2Vec2FeatureExtractor``'s defaults (16 kHz,
    normalised), with a warning: those are what ``pipeline`` would use for it.
    """
    if has_preprocessor_config(source, revision):
        extractor = AutoFeatureExtractor.from_pretrained(source, revision=revision, trust_remote_code=False)
    else:
        logger.warning(
            "%s has no %s; using Wav2Vec2FeatureExtractor defaults (16 kHz, normalised)", source, FEATURE_EXTRACTOR_NAME
        )
        extractor = Wav2Vec2FeatureExtractor()
    if not hasattr(extractor, "do_normalize"):
        raise UnsupportedModelError(
            f"{source}: its feature extractor {type(extractor).__name__} does not take raw waveforms; "
            "paraprobe supports raw-waveform encoders (wav2vec2, HuBERT, WavLM, data2vec-audio, ...)"
        )
    return InputSettings(int(extractor.sampling_rate), bool(extractor.do_normalize))


def check_waveform_encoder(config: PretrainedConfig, name: str) -> None:
    """Raise :class:`UnsupportedModelError` unless ``config`` describes a raw-waveform encoder (a
    convolutional feature encoder paraprobe can frame)."""
    if not (hasattr(config, "conv_kernel") and hasattr(config, "conv_stride")):
        raise UnsupportedModelError(
            f"{name}: model_type {config.model_type!r} has no convolutional feature encoder "
            "(conv_kernel, conv_stride); paraprobe supports wav2vec2, HuBERT, WavLM, data2vec-audio and relatives"
        )


def check_supported(config: PretrainedConfig, input_settings: InputSettings, name: str, model_cfg: dict) -> None:
    """Raise :class:`UnsupportedModelError` unless the model is a 16 kHz convolutional-frontend
    encoder whose layer count agrees with the config's planning override ``num_layers``."""
    check_waveform_encoder(config, name)
    if input_settings.sampling_rate != TARGET_SAMPLE_RATE:
        raise UnsupportedModelError(
            f"{name}: expects {input_settings.sampling_rate} Hz audio; paraprobe feeds {TARGET_SAMPLE_RATE} Hz"
        )
    if "num_layers" in model_cfg and int(model_cfg["num_layers"]) != config.num_hidden_layers:
        raise UnsupportedModelError(
            f"{name}: the model's num_layers is {model_cfg['num_layers']} in the config, "
            f"but the checkpoint has {config.num_hidden_layers} transformer layers"
        )


def model_fingerprint(model: torch.nn.Module) -> str:
    """SHA-1 over every weight (name, dtype, shape, bytes) and the computation-relevant config.

    :data:`NON_COMPUTATIONAL_CONFIG_KEYS` are left out, so a checkpoint saved to a local
    directory, or found under another name, keeps its fingerprint.
    """
    digest = hashlib.sha1()
    config = {key: value for key, value in model.config.to_dict().items() if key not in NON_COMPUTATIONAL_CONFIG_KEYS}
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().data)
    return digest.hexdigest()


def resolve_device(device: str) -> torch.device:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; anything else as torch reads it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"extraction.device is {device!r} but no CUDA device is visible to this job")
    return resolved
