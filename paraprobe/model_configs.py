"""What the workflow knows about a model config without loading the model (no torch, no transformers).

Snakemake imports this module while it parses the workflow, so it stays light: planning a
DAG (``snakemake -n``) must not pay for importing torch and transformers. Loading a model
is :mod:`paraprobe.models`, which uses these helpers too.
"""

from __future__ import annotations

import json
from pathlib import Path

from huggingface_hub import constants as hub_constants
from huggingface_hub.errors import EntryNotFoundError

#: The file of a checkpoint that holds its architecture (``transformers.utils.CONFIG_NAME``).
CHECKPOINT_CONFIG_FILE = "config.json"


class CheckpointNotAvailableError(RuntimeError):
    """A checkpoint that cannot be loaded; the message says which and how to provide it."""


class UnsupportedModelError(ValueError):
    """A checkpoint that is not a raw-waveform speech encoder paraprobe can frame."""


class InvalidCheckpointError(ValueError):
    """A checkpoint whose files are unreadable, unsafe to load, or do not fit its architecture;
    the message names the file or checkpoint and the reason."""


def is_random_init(model_cfg: dict) -> bool:
    return model_cfg.get("init", "pretrained") == "random"


def checkpoint_source(model_cfg: dict) -> tuple[str, str | None]:
    """(hub id or absolute local directory, revision or None) of a pretrained model config."""
    model_id = str(model_cfg["id"])
    expanded = Path(model_id).expanduser()
    if expanded.is_dir():
        return str(expanded.resolve()), None
    if model_id.startswith(("/", "./", "../", "~")):
        raise CheckpointNotAvailableError(f"model checkpoint directory {model_id} does not exist")
    return model_id, model_cfg.get("revision")


def unavailable_message(model_cfg: dict, error: Exception, planning: bool = False) -> str:
    """One line: which checkpoint is missing and how to provide it."""
    model_id = model_cfg["id"]
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    local = Path(str(model_id)).expanduser()
    if local.is_dir():
        # Neither the Hugging Face cache nor `hf download` has anything to do with a local directory.
        return f"model checkpoint directory {local.resolve()} could not be loaded: {reason}"
    revision = f" (revision {model_cfg['revision']})" if model_cfg.get("revision") else ""
    download = f"hf download {model_id}" + (f" --revision {model_cfg['revision']}" if revision else "")
    how = (
        f"download it ahead with `{download}` (or `huggingface-cli download {model_id}`), "
        "or set the model's `id` to a local directory holding it"
    )
    if planning:
        how += ", or give the model's `num_layers` to plan the workflow without it"
    if hub_constants.is_offline_mode():
        return (
            f"model checkpoint {model_id}{revision} is not in the local Hugging Face cache and HF_HUB_OFFLINE=1: {how}"
        )
    return f"model checkpoint {model_id}{revision} could not be loaded ({reason}): {how}"


def checkpoint_config_json(model_cfg: dict) -> dict:
    """A pretrained checkpoint's ``config.json`` as a dict: from its local directory, else the
    Hugging Face cache (downloading that one file when online, as ``AutoConfig`` would).

    Raises :class:`CheckpointNotAvailableError` saying how to provide the checkpoint, or
    :class:`InvalidCheckpointError` naming a ``config.json`` that is not a JSON object.
    """
    source, revision = checkpoint_source(model_cfg)
    if Path(source).is_dir():
        path = Path(source) / CHECKPOINT_CONFIG_FILE
        if not path.is_file():
            raise CheckpointNotAvailableError(f"model checkpoint directory {source} has no {CHECKPOINT_CONFIG_FILE}")
    else:
        # Imported here: the download machinery is the slow part of huggingface_hub to import.
        from huggingface_hub import hf_hub_download

        try:
            path = hf_hub_download(source, CHECKPOINT_CONFIG_FILE, revision=revision)
        except (OSError, EntryNotFoundError) as error:
            raise CheckpointNotAvailableError(unavailable_message(model_cfg, error, planning=True)) from error
    try:
        config = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InvalidCheckpointError(f"{path}: not a valid JSON file ({error})") from error
    if not isinstance(config, dict):
        raise InvalidCheckpointError(f"{path}: holds a JSON {type(config).__name__}, not an object of config keys")
    return config


def num_transformer_layers(model_cfg: dict) -> int:
    """Transformer layers L of a model (it yields L + 1 hidden states), cheaply, for planning.

    Reads ``num_layers`` if given, else the random-init config, else the checkpoint's
    ``config.json`` (local directory or Hugging Face cache; no weights are read).
    """
    if "num_layers" in model_cfg:
        configured = model_cfg.get("config", {}).get("num_hidden_layers") if is_random_init(model_cfg) else None
        if configured is not None and int(configured) != int(model_cfg["num_layers"]):
            raise UnsupportedModelError(
                f"num_layers is {model_cfg['num_layers']} but config.num_hidden_layers is {configured}; "
                "leave num_layers out for a random-init model"
            )
        return int(model_cfg["num_layers"])
    if is_random_init(model_cfg):
        # The architecture's defaults are transformers' knowledge: only this case imports it.
        from paraprobe.models import random_init_config

        return int(random_init_config(model_cfg).num_hidden_layers)
    config = checkpoint_config_json(model_cfg)
    if "num_hidden_layers" in config:
        return int(config["num_hidden_layers"])
    # A config.json that leaves the layer count to its architecture's default.
    from paraprobe.models import pretrained_config

    return int(pretrained_config(model_cfg, planning=True).num_hidden_layers)
