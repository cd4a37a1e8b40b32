"""Checks of a validated config that a JSON schema cannot express (paths that must exist)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import jsonschema
import yaml


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key."""


def apply_user_config(config: dict, user_config: dict, user_configfiles: Sequence) -> None:
    """Give a user's config the last word over the demo's config.yaml, which Snakemake loads first.

    A ``--configfile`` that names ``corpora`` describes a study: its files (and any ``--config``
    values) are the whole config, as with Snakemake's ``--replace-workflow-config``, so the demo's
    own settings (two seeds, 120 utterances with frames, held-out estimates) do not leak into a
    study such as configs/paper.yaml; every key it leaves out takes its schema default. Any other
    user config changes the demo key by key (Snakemake's merge, DESIGN.md's rule), except that
    ``corpora`` and ``models``, which say what to run, replace the demo's.

    Parameters
    ----------
    config : the config Snakemake built (config.yaml, then the user's values merged over it); changed in place
    user_config : the user's values alone (``--configfile`` files merged, then ``--config``)
    user_configfiles : the ``--configfile`` paths, empty without any
    """
    if user_configfiles and "corpora" in user_config:
        config.clear()
        config.update(copy.deepcopy(user_config))
        return
    for key in ("corpora", "models"):
        if user_config.get(key):
            config[key] = copy.deepcopy(user_config[key])


#: Mappings whose key order is meaningful: feature groups are reported in the order given.
ORDERED_MAPPINGS = (("acoustic", "groups"),)


def sort_mapping_keys(config: dict) -> None:
    """Put the keys of every mapping in ``config`` in sorted order, except :data:`ORDERED_MAPPINGS`.

    Snakemake's params trigger compares a param by its ``repr``, in which a dict's keys
    keep their insertion order: the same settings written in another order (or by a
    YAML writer that sorts keys) would rerun every job they reach. Lists keep their order.
    """
    kept = {path: _lookup(config, path) for path in ORDERED_MAPPINGS if _lookup(config, path) is not None}
    sorted_config = _keys_sorted(config)
    config.clear()
    config.update(sorted_config)
    for (*parents, key), mapping in kept.items():
        _lookup(config, parents)[key] = mapping


def _keys_sorted(value):
    if isinstance(value, dict):
        return {key: _keys_sorted(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_keys_sorted(item) for item in value]
    return value


def _lookup(config: dict, path):
    for key in path:
        if not isinstance(config, dict) or key not in config:
            return None
        config = config[key]
    return config


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses a mapping naming a key twice (PyYAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(
                    f"{key_node.start_mark.name}, line {key_node.start_mark.line + 1}: key {key!r} appears twice "
                    "in one mapping (YAML would keep only the last)"
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def check_unique_keys(paths: Sequence[str | Path]) -> None:
    """Raise :class:`ConfigError` naming the file and line of a key given twice in one mapping of a
    YAML config file (a second ``probe:`` section would silently replace the first)."""
    for path in paths:
        with open(path) as handle:
            yaml.load(handle, Loader=_UniqueKeyLoader)


def check_schema(config: dict, schema_path: str | Path) -> None:
    """Raise :class:`ConfigError` naming the key and the reason of the first way ``config`` breaks the
    JSON schema at ``schema_path`` (Snakemake's own validation prints the whole schema and config)."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(config))
    if errors:
        error = jsonschema.exceptions.best_match(errors)
        key = ".".join(map(str, error.absolute_path)) or "the config's top level"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        hint = _text_value_hint(error) if error.validator == "type" and isinstance(error.instance, str) else ""
        raise ConfigError(f"{key}: {error.message}{more}{hint}")


def _text_value_hint(error: jsonschema.exceptions.ValidationError) -> str:
    """Why a value meant as a number or mapping may have arrived as text (``error.instance``), or ""."""
    try:
        parsed = yaml.safe_load(error.instance)
    except yaml.YAMLError:
        parsed = error.instance
    if not isinstance(parsed, str) and len(error.absolute_path) > 1:
        return (
            "; Snakemake reads values nested in --config (e.g. probe={patience: 5}) as text: "
            "give nested values in a --configfile"
        )
    try:
        number = float(error.instance)
    except ValueError:
        return ""
    # YAML 1.1 (PyYAML) reads an exponent without a decimal point, as in 2e-4, as text.
    return f"; YAML reads {error.instance} as text: write {number!r}" if "number" in error.validator_value else ""


def check_names(config: dict) -> None:
    """Raise :class:`ConfigError` for a name the config refers to that it does not define: a
    ``probe.learning_rate_by_corpus`` key that is no corpus (a typo would silently train at
    another rate), or a ``similarity.reference_group`` that is no ``acoustic.groups`` entry."""
    for corpus in config["probe"]["learning_rate_by_corpus"]:
        if corpus not in config["corpora"]:
            raise ConfigError(
                f"probe.learning_rate_by_corpus.{corpus}: no corpus of that name (corpora: {', '.join(config['corpora'])})"
            )
    reference = config["similarity"]["reference_group"]
    if reference not in config["acoustic"]["groups"]:
        raise ConfigError(
            f"similarity.reference_group: {reference!r} is not one of acoustic.groups ({', '.join(config['acoustic']['groups'])})"
        )


def check_combinations(config: dict) -> None:
    """Raise :class:`ConfigError` for settings that are each valid but do not work together:

    * ``extraction.shards`` > 1 with ``batch_seconds: auto`` on a GPU (``device`` cuda or auto): each shard job would size
      its batches from its own GPU's free memory, but the shards share one plan of the corpus's
      batches, so their parts would not fit together (the merge would refuse them, after all the
      extraction);
    * a ``revision`` on a model whose ``id`` is a local directory: a revision selects a commit of
      a Hugging Face hub repository, and a directory has one version only.
    """
    extraction = config["extraction"]
    if extraction["shards"] > 1 and extraction["batch_seconds"] == "auto" and extraction["device"] != "cpu":
        raise ConfigError(
            f"extraction.batch_seconds: 'auto' sizes batches from each job's free GPU memory when it runs on a GPU "
            f"(extraction.device: {extraction['device']}), and the {extraction['shards']} extraction.shards must "
            "plan the same batches; give a number of seconds, or extraction.device: cpu"
        )
    for name, model in config["models"].items():
        if model.get("revision") and "id" in model and Path(str(model["id"])).expanduser().is_dir():
            raise ConfigError(
                f"models.{name}.revision: {model['id']} is a local directory, which has no revisions "
                "(a revision selects a commit of a Hugging Face hub id); remove the revision or use the hub id"
            )


#: The path key each corpus format reads, and whether it names a folder.
CORPUS_PATH_KEYS = {"iemocap": ("root", True), "ravdess": ("root", True), "csv": ("manifest", False)}


def check_paths(config: dict) -> None:
    """Raise :class:`ConfigError` for a corpus root or CSV that does not exist."""
    for name, corpus in config["corpora"].items():
        if corpus["format"] not in CORPUS_PATH_KEYS:
            continue
        key, is_folder = CORPUS_PATH_KEYS[corpus["format"]]
        path = Path(corpus[key])
        if not (path.is_dir() if is_folder else path.is_file()):
            raise ConfigError(f"corpora.{name}.{key}: {'folder' if is_folder else 'file'} {path} does not exist")
