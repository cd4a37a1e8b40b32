"""The probe's hyper-parameters, and how a corpus's are read from the config's ``probe`` section.

Kept apart from :mod:`paraprobe.probe.training` because Snakemake imports it while it
parses the workflow (the settings are a fold job's params): planning must not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ProbeSettings:
    """Hyper-parameters of the probe and its training (defaults: the paper's, RAVDESS rate).

    ``patience`` and ``max_epochs`` make the paper's "until validation loss converges" concrete.
    """

    learning_rate: float = 2e-4
    hidden_sizes: tuple[int, ...] = (128, 16)
    weight_decay: float = 1e-5
    batch_size: int = 64
    patience: int = 10
    max_epochs: int = 200

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden_sizes", tuple(self.hidden_sizes))  # a config gives a list
        for key in ("learning_rate", "batch_size", "patience", "max_epochs"):
            if not getattr(self, key) > 0:
                raise ValueError(f"probe setting {key} must be positive, got {getattr(self, key)}")
        if self.weight_decay < 0 or not self.hidden_sizes or min(self.hidden_sizes) < 1:
            raise ValueError(f"invalid probe settings: {self}")


def probe_settings(probe_config: dict, corpus: str, corpus_format: str) -> ProbeSettings:
    """The probe settings of one corpus from the config's ``probe`` section.

    The learning rate is ``learning_rate_by_corpus[corpus]`` if given, else
    ``learning_rate_by_format[corpus_format]``, else ``learning_rate`` (the paper: 1e-4 for
    IEMOCAP, 2e-4 for RAVDESS).
    """
    learning_rate = probe_config["learning_rate_by_corpus"].get(
        corpus, probe_config["learning_rate_by_format"].get(corpus_format, probe_config["learning_rate"])
    )
    return ProbeSettings(
        learning_rate=learning_rate,
        hidden_sizes=tuple(probe_config["hidden_sizes"]),
        weight_decay=probe_config["weight_decay"],
        batch_size=probe_config["batch_size"],
        patience=probe_config["patience"],
        max_epochs=probe_config["max_epochs"],
    )
