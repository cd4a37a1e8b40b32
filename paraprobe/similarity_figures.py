"""The paper's similarity figures (Fig. 2-5) and Table 3, from every (corpus, model)'s tables.

Each figure has one panel per (corpus, model): corpora in rows, models in columns, layer
indices on the x axis. Lines are told apart by colour (Okabe-Ito), marker and dash, so
they survive colour-vision deficiencies and grey-scale printing.

Where the tables have held-out estimates (``similarity.held_out.enabled``), the figures show
those: in-sample CCA grows with dimensions per observation, and Fig. 4 and 5 compare values
computed on very different numbers of observations (windows of each length; frames of each
emotion), so in-sample differences there are partly sample size. Table 3, set beside the
paper's, keeps the in-sample values the paper reports.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from paraprobe.io import atomic_path, read_tsv, write_tsv
from paraprobe.plotting import LAYER_AXIS_LABEL, PALETTE, SEQUENTIAL_CMAP, apply_style, save_figure

# Cycle lengths 7 (PALETTE), 8 and 3 share no factor: the first 168 lines all differ.
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
DASHES = ("-", "--", ":")
METHOD_NAMES = {"cca": "CCA", "svcca": "SVCCA", "pwcca": "PWCCA", "cka": "linear CKA"}


def collect(paths: Sequence[str | Path], corpora: Sequence[str], models: Sequence[str]) -> pd.DataFrame:
    """Concatenate per-(corpus, model) tables, adding ``corpus`` and ``model`` columns.

    ``paths[i]`` holds the table of ``corpora[i]`` and ``models[i]``.
    """
    if not len(paths) == len(corpora) == len(models):
        raise ValueError(f"collect: {len(paths)} paths for {len(corpora)} corpora and {len(models)} models")
    frames = [read_tsv(path).assign(corpus=corpus, model=model) for path, corpus, model in zip(paths, corpora, models)]
    return pd.concat(frames, ignore_index=True)


def _select(table: pd.DataFrame, method: str) -> pd.DataFrame:
    selected = table[table["method"] == method]
    if selected.empty:
        raise ValueError(
            f"no {method!r} rows in the similarity tables (methods present: {sorted(set(table['method']))})"
        )
    return selected


def _panels(table: pd.DataFrame, width: float = 3.2, height: float = 2.4, **subplots):
    """Figure with a panel per (corpus, model), in order of first appearance; yields the panels too."""
    corpora = list(dict.fromkeys(table["corpus"]))
    models = list(dict.fromkeys(table["model"]))
    apply_style()
    figure, axes = plt.subplots(
        len(corpora), len(models), figsize=(width * len(models), height * len(corpora)), squeeze=False, **subplots
    )
    panels = []
    for row, corpus in enumerate(corpora):
        for column, model in enumerate(models):
            axis = axes[row][column]
            data = table[(table["corpus"] == corpus) & (table["model"] == model)]
            axis.set_title(f"{model} · {corpus}")
            if data.empty:
                axis.set_axis_off()
                continue
            panels.append((axis, data))
    return figure, axes, panels


def _layer_axis(axis, layers) -> None:
    layers = sorted(set(int(layer) for layer in layers))
    axis.set_xticks(layers)
    axis.set_xlabel(LAYER_AXIS_LABEL)


def plotted_column(table: pd.DataFrame) -> str:
    """``"held_out"`` where ``table`` has held-out estimates for every row, else ``"value"``
    (in-sample): a row whose held-out or fitting part is too small has none, and one figure
    does not mix the two."""
    return "held_out" if "held_out" in table and table["held_out"].notna().all() else "value"


def _value_label(column: str, method: str, what: str = "") -> str:
    """What the values are, for an axis label: e.g. ``"held-out CCA with features"``."""
    return f"{'held-out ' if column == 'held_out' else ''}{METHOD_NAMES[method]} {what}".strip()


#: Axis labels longer than this wrap, so that they fit beside a panel's height.
_LABEL_LINE_CHARACTERS = 28


def _sentence_case(label: str) -> str:
    """``label`` with its first letter capitalised, as every axis label is."""
    return label[:1].upper() + label[1:]


def _line_plot(
    table: pd.DataFrame, series: str, order: Sequence[str], ylabel: str, png_path, zero_line=False, column="value"
):
    """A line per value of column ``series`` (y: ``column``) against ``layer``, in every panel, one
    shared legend of every line drawn."""
    figure, axes, panels = _panels(table, sharey=True)
    legend = {}
    for axis, data in panels:
        for position, name in enumerate(order):
            line = data[data[series] == name].sort_values("layer")
            if line.empty:
                continue
            legend[name] = axis.plot(
                line["layer"],
                line[column],
                color=PALETTE[position % len(PALETTE)],
                marker=MARKERS[position % len(MARKERS)],
                linestyle=DASHES[position % len(DASHES)],
                markersize=3.5,
                linewidth=1.2,
                label=name,
            )[0]
        if zero_line:
            axis.axhline(0.0, color="0.5", linewidth=0.8, zorder=0)
        _layer_axis(axis, data["layer"])
    for row in axes:
        row[0].set_ylabel(textwrap.fill(_sentence_case(ylabel), _LABEL_LINE_CHARACTERS))
    names = [name for name in order if name in legend]
    figure.legend([legend[name] for name in names], names, loc="center left", bbox_to_anchor=(1.0, 0.5))
    figure.tight_layout()
    save_figure(figure, png_path)


def plot_feature_similarity(features: pd.DataFrame, png_path: str | Path, method: str = "cca") -> None:
    """Fig. 2: similarity of each layer with each acoustic feature group."""
    data = _select(features, method).rename(columns={"feature_group": "group"})
    order = list(dict.fromkeys(data["group"]))
    column = plotted_column(data)
    _line_plot(data, "group", order, _value_label(column, method, "with features"), png_path, column=column)


def plot_layer_similarity(layers: pd.DataFrame, png_path: str | Path, method: str = "cca") -> None:
    """Fig. 3: layer x layer similarity heat maps, one colour scale [0, 1] for every panel.

    Cell (a, b) is ``similarity(layer a, layer b)``: for PWCCA the weights come from layer a.
    """
    data = _select(layers, method)
    column = plotted_column(data)
    figure, axes, panels = _panels(data, width=3.0, height=2.8)
    image = None
    for axis, panel in panels:
        matrix = panel.pivot(index="layer_b", columns="layer_a", values=column).sort_index().sort_index(axis=1)
        image = axis.imshow(matrix.to_numpy(), origin="lower", cmap=SEQUENTIAL_CMAP, vmin=0.0, vmax=1.0)
        axis.set_xticks(np.arange(len(matrix.columns)), [str(layer) for layer in matrix.columns])
        axis.set_yticks(np.arange(len(matrix.index)), [str(layer) for layer in matrix.index])
        axis.set_xlabel("Layer a")
        axis.tick_params(labelsize=7)
        axis.spines[["top", "right"]].set_visible(True)
    for row in axes:
        row[0].set_ylabel("Layer b")
    figure.tight_layout()
    figure.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label=_sentence_case(_value_label(column, method)))
    save_figure(figure, png_path)


def reference_group_label(group: str) -> str:
    """How axis labels name the acoustic group ``group`` (``similarity.reference_group``)."""
    return "eGeMAPS" if group == "egemaps_all" else f"'{group}'"


def plot_hierarchy(
    hierarchy: pd.DataFrame, png_path: str | Path, method: str = "cca", reference_group: str = "egemaps_all"
) -> None:
    """Fig. 4: per layer, CCA(phoneme) - CCA(frame) and CCA(word) - CCA(phoneme), each with the
    acoustic group ``reference_group``."""
    data = _select(hierarchy, method)
    column = plotted_column(data)
    wide = data.pivot_table(index=["corpus", "model", "layer"], columns="level", values=column, sort=False)
    wide = wide.reset_index()
    missing = {"frame", "phoneme", "word"} - set(wide.columns)
    if missing:
        raise ValueError(f"hierarchy tables lack the level(s) {', '.join(sorted(missing))}")
    differences = pd.concat(
        [
            wide.assign(step="phoneme − frame", value=wide["phoneme"] - wide["frame"]),
            wide.assign(step="word − phoneme", value=wide["word"] - wide["phoneme"]),
        ],
        ignore_index=True,
    )[["corpus", "model", "layer", "step", "value"]]
    ylabel = "Difference in " + _value_label(column, method, f"with {reference_group_label(reference_group)}")
    _line_plot(differences, "step", ["phoneme − frame", "word − phoneme"], ylabel, png_path, zero_line=True)


def plot_emotion_similarity(
    emotion: pd.DataFrame, png_path: str | Path, method: str = "cca", reference_group: str = "egemaps_all"
) -> None:
    """Fig. 5: similarity of each layer with the acoustic group ``reference_group`` (by default all
    eGeMAPS descriptors), on the frames of each emotion."""
    data = _select(emotion, method)
    order = sorted(set(data["label"]))
    column = plotted_column(data)
    label = _value_label(column, method, f"with {reference_group_label(reference_group)}")
    _line_plot(data, "label", order, label, png_path, column=column)


#: Figure name -> the function drawing it.
FIGURES = {
    "fig2_feature_cca": plot_feature_similarity,
    "fig3_layer_cca": plot_layer_similarity,
    "fig4_hierarchy": plot_hierarchy,
    "fig5_emotion_cca": plot_emotion_similarity,
}


def draw_figure(
    figure: str,
    paths: Sequence[str | Path],
    corpora: Sequence[str],
    models: Sequence[str],
    png_path: str | Path,
    **options,
) -> None:
    """Draw figure ``figure`` (a key of :data:`FIGURES`) from every (corpus, model)'s table.

    ``paths[i]`` is the table of ``corpora[i]`` and ``models[i]``; the PNG and an SVG beside it are
    written. ``options`` go to the figure's function (``method``; ``reference_group`` for Fig. 4 and 5).
    """
    if figure not in FIGURES:
        raise ValueError(f"unknown similarity figure {figure!r}; expected one of {', '.join(FIGURES)}")
    FIGURES[figure](collect(paths, corpora, models), png_path, **options)


def table3_layers(last_layer: int) -> tuple[list[int], list[int]]:
    """Rows and columns of Table 3 for hidden states 0..``last_layer``.

    The paper (12 layers) compares the last two layers, 11 and 12, with layers 6-10: from
    the middle layer to the one before the last two. The same rule for any depth:
    rows ``[L-1, L]``, columns ``L//2 .. L-2``; with too few layers for that (L < 3),
    every layer before the last two.
    """
    rows = [layer for layer in (last_layer - 1, last_layer) if layer >= 0]
    columns = list(range(last_layer // 2, last_layer - 1)) or list(range(0, max(last_layer - 1, 0)))
    return rows, columns


def _layer_columns(table: pd.DataFrame) -> list[str]:
    return [column for column in table.columns if re.fullmatch(r"L\d+", column)]


def layer_table(layers: pd.DataFrame) -> pd.DataFrame:
    """Table 3: similarity of each model's last two layers with its middle layers.

    Returns
    -------
    Columns ``corpus, method, layer, model, L<i>...``; a cell is empty where a model has
    no such comparison (models of different depths in one table).
    """
    records = []
    for (corpus, model, method), data in layers.groupby(["corpus", "model", "method"], sort=False):
        values = data.set_index(["layer_a", "layer_b"])["value"]
        rows, columns = table3_layers(int(data["layer_a"].max()))
        for row in rows:
            record = {"corpus": corpus, "method": method, "layer": row, "model": model}
            record.update({f"L{column}": values.get((row, column), np.nan) for column in columns})
            records.append(record)
    table = pd.DataFrame.from_records(records)
    layer_columns = sorted(_layer_columns(table), key=lambda column: int(column[1:]))
    return table.sort_values(["corpus", "method", "layer"], kind="stable")[
        ["corpus", "method", "layer", "model"] + layer_columns
    ]


def layer_table_markdown(table: pd.DataFrame) -> str:
    """Table 3 as Markdown: one table per corpus and method, values to 2 decimals."""
    sections = []
    layer_columns = _layer_columns(table)
    for (corpus, method), data in table.groupby(["corpus", "method"], sort=False):
        lines = [
            f"### {METHOD_NAMES.get(method, method)} between the last two and earlier layers ({corpus})",
            "",
            "| layer | model | " + " | ".join(layer_columns) + " |",
            "| --- | --- | " + " | ".join("---" for _ in layer_columns) + " |",
        ]
        for _, row in data.iterrows():
            cells = ["" if pd.isna(row[c]) else f"{row[c]:.2f}" for c in layer_columns]
            lines.append(f"| {row['layer']} | {row['model']} | " + " | ".join(cells) + " |")
        sections.append("\n".join(lines))
    return "\n\n".join(sections) + "\n"


def write_layer_table(layers: pd.DataFrame, tsv_path: str | Path, markdown_path: str | Path) -> pd.DataFrame:
    """Write Table 3 as TSV and Markdown; returns it."""
    table = layer_table(layers)
    write_tsv(table, tsv_path)
    with atomic_path(markdown_path) as temporary:
        Path(temporary).write_text(layer_table_markdown(table))
    return table
