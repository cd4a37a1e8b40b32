"""The names of the probe inputs: one per hidden state, and the paper's layer combinations.

Kept apart from :mod:`paraprobe.probe.inputs` because Snakemake imports it while it parses
the workflow (the names are in the fold jobs' outputs): planning must not import torch.
"""

from __future__ import annotations

import re

LAST = "last"
AVERAGE = "average"
AVERAGE_WO_LAST2 = "average_wo_last2"
WEIGHTED_AVERAGE = "weighted_average"
#: The four ways of combining layers that the paper compares with single layers, in table order.
COMBINED_INPUTS = (LAST, AVERAGE, AVERAGE_WO_LAST2, WEIGHTED_AVERAGE)

_LAYER_NAME = re.compile(r"layer_(\d{2,})")


def layer_name(index: int) -> str:
    """``5`` -> ``'layer_05'``: the name of hidden state ``index`` (0 = CNN encoder output)."""
    return f"layer_{index:02d}"


def layer_index(name: str) -> int | None:
    """``'layer_05'`` -> ``5``; ``None`` for a combined input such as ``'average'``."""
    match = _LAYER_NAME.fullmatch(name)
    return int(match.group(1)) if match else None


def probe_input_names(num_layers: int) -> list[str]:
    """Every probe input of a model with ``num_layers`` transformer layers L.

    ``layer_00`` .. ``layer_LL`` (L + 1 hidden states), then :data:`COMBINED_INPUTS`.
    """
    if num_layers < 2:
        raise ValueError(f"num_layers must be at least 2 (average_wo_last2 drops two layers), got {num_layers}")
    return [layer_name(index) for index in range(num_layers + 1)] + list(COMBINED_INPUTS)
