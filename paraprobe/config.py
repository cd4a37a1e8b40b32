"""Checks of a validated config that a JSON schema cannot express (paths that must exist)."""

from __future__ import annotations

import copy
from pathlib import Path


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key."""


def replace_run_lists(config: dict, user_config: dict) -> None:
    """Let a user config's ``corpora`` and ``models`` replace the demo's instead of adding to them.

    Snakemake merges ``--configfile`` over config.yaml key by key; for the two
    sections that say *what* to run, a user naming their own corpora does not want
    the demo's too.
    """
    for key in ("corpora", "models"):
        if user_config.get(key):
            config[key] = copy.deepcopy(user_config[key])


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
