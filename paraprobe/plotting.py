"""Shared figure style: colour-blind-safe palette, print-sized fonts, PNG + SVG output."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from paraprobe.io import atomic_path  # noqa: E402

#: Okabe & Ito (2008) palette, distinguishable under the common colour-vision deficiencies;
#: without its yellow, which is hard to see on white.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000")
#: Perceptually uniform, colour-blind-safe colour map for heat maps.
SEQUENTIAL_CMAP = "cividis"
#: The x-axis label of every per-layer figure (hidden state 0 is the CNN encoder's output).
LAYER_AXIS_LABEL = "Layer (0 = CNN encoder output)"

STYLE = {
    "figure.dpi": 100,
    "savefig.dpi": 300,
    "savefig.bbox": "tight",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.prop_cycle": matplotlib.cycler(color=PALETTE),
    "svg.fonttype": "none",  # keep text as text in SVG, editable in a paper's figure
}


def apply_style() -> None:
    """Set paraprobe's matplotlib defaults for every figure made after the call."""
    plt.rcParams.update(STYLE)


def save_figure(figure: plt.Figure, png_path: str | Path) -> None:
    """Write ``figure`` as ``png_path`` and the same stem with ``.svg``, atomically, then close it."""
    png_path = Path(png_path)
    for path in (png_path, png_path.with_suffix(".svg")):
        with atomic_path(path) as temporary:
            figure.savefig(temporary, format=path.suffix.lstrip("."))
    plt.close(figure)
