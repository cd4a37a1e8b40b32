"""Tables and figures of the probing experiment: UA per input, the paper's Table 1 and Fig. 1."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from paraprobe.io import atomic_path, read_tsv, write_tsv
from paraprobe.plotting import LAYER_AXIS_LABEL, PALETTE, apply_style, save_figure
from paraprobe.probe.names import COMBINED_INPUTS, layer_index

#: Table 1's rows: (input of probe_ua.tsv, label in the paper); the best layer comes first.
TABLE1_ROWS = (
    ("best_layer", "best layer"),
    ("last", "last layer"),
    ("average", "average"),
    ("average_wo_last2", "avg w/o last two"),
    ("weighted_average", "weighted average"),
)
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "h")


def _input_order(name: str) -> tuple[int, int]:
    """Sort key: layers by index, then the combined inputs in the paper's order."""
    index = layer_index(name)
    return (0, index) if index is not None else (1, COMBINED_INPUTS.index(name))


def collect_probe_runs(json_paths: Sequence[str | Path]) -> pd.DataFrame:
    """One row per (fold JSON, seed): the runs behind every summary.

    Returns
    -------
    DataFrame with ``corpus, model, input, layer`` (index, or -1 for combined inputs),
    ``fold, seed, ua, wa, macro_f1, epochs, n_classes``; UA, WA and F1 as fractions.
    """
    rows = []
    for path in json_paths:
        record = json.loads(Path(path).read_text())
        index = layer_index(record["input"])
        for run in record["runs"]:
            rows.append(
                {
                    "corpus": record["corpus"],
                    "model": record["model"],
                    "input": record["input"],
                    "layer": -1 if index is None else index,
                    "fold": record["fold"],
                    "seed": run["seed"],
                    **{key: run[key] for key in ("ua", "wa", "macro_f1", "epochs")},
                    "n_classes": len(record["labels"]),
                }
            )
    if not rows:
        raise ValueError("no probe runs: the fold JSONs list no runs")
    runs = pd.DataFrame(rows)
    order = runs["input"].map(_input_order)
    return runs.assign(_order=order).sort_values(["corpus", "model", "_order", "fold", "seed"]).drop(columns="_order")


def summarise_probe_ua(runs: pd.DataFrame) -> pd.DataFrame:
    """``corpus, model, input, ua_mean, ua_std, n``: UA (fraction) over all folds x seeds.

    ``ua_std`` is the sample standard deviation (ddof 1) over the ``n`` runs; empty when n = 1.
    """
    grouped = runs.groupby(["corpus", "model", "input"], sort=False)["ua"]
    return grouped.agg(ua_mean="mean", ua_std="std", n="count").reset_index()


def write_probe_summary(json_paths: Sequence[str | Path], runs_path: str | Path, summary_path: str | Path) -> None:
    """Read every fold JSON; write the per-run table and ``tables/probe_ua.tsv``."""
    runs = collect_probe_runs(json_paths)
    write_tsv(runs, runs_path)
    write_tsv(summarise_probe_ua(runs), summary_path)


def table1(summary: pd.DataFrame) -> pd.DataFrame:
    """The paper's Table 1 from ``probe_ua.tsv``: per corpus x model, the best layer and the combinations.

    Returns
    -------
    DataFrame with ``corpus, model, input`` (a :data:`TABLE1_ROWS` key), ``layer`` (the best
    layer's index; -1 for the combinations), ``ua_mean_pct, ua_std_pct`` (UA in %), ``n``.
    """
    rows = []
    for (corpus, model), group in summary.groupby(["corpus", "model"], sort=False):
        layer_rows = group[group["input"].map(layer_index).notna()]
        if layer_rows.empty:
            raise ValueError(f"{corpus}/{model}: no single-layer probes to pick the best layer from")
        best = layer_rows.loc[layer_rows["ua_mean"].idxmax()]
        chosen = {"best_layer": best}
        chosen.update({row["input"]: row for _, row in group.iterrows() if row["input"] in dict(TABLE1_ROWS)})
        for key, _ in TABLE1_ROWS:
            if key in chosen:
                row = chosen[key]
                rows.append(
                    {
                        "corpus": corpus,
                        "model": model,
                        "input": key,
                        "layer": layer_index(row["input"]) if key == "best_layer" else -1,
                        "ua_mean_pct": 100 * row["ua_mean"],
                        "ua_std_pct": 100 * row["ua_std"],
                        "n": int(row["n"]),
                    }
                )
    return pd.DataFrame(rows)


def table1_markdown(table: pd.DataFrame) -> str:
    """Table 1 laid out like the paper: a row per (input, model), a column per corpus, UA % mean +- SD."""
    corpora = list(dict.fromkeys(table["corpus"]))
    models = list(dict.fromkeys(table["model"]))
    cells = {}
    for _, row in table.iterrows():
        spread = "" if np.isnan(row["ua_std_pct"]) else f" ± {row['ua_std_pct']:.2f}"
        layer = f" (layer {row['layer']})" if row["input"] == "best_layer" else ""
        cells[row["input"], row["model"], row["corpus"]] = f"{row['ua_mean_pct']:.2f}{spread}{layer}"
    lines = [
        "| input | model | " + " | ".join(corpora) + " |",
        "| --- | --- | " + " | ".join("---" for _ in corpora) + " |",
    ]
    for key, label in TABLE1_ROWS:
        for model in models:
            values = [cells.get((key, model, corpus), "–") for corpus in corpora]
            if any(value != "–" for value in values):
                lines.append(f"| {label} | {model} | " + " | ".join(values) + " |")
    return "\n".join(lines) + "\n"


def write_table1(summary_path: str | Path, tsv_path: str | Path, markdown_path: str | Path) -> None:
    """Table 1 from ``probe_ua.tsv`` as TSV and Markdown."""
    table = table1(read_tsv(summary_path))
    write_tsv(table, tsv_path)
    with atomic_path(markdown_path) as temporary:
        temporary.write_text(
            "UA (%) of the probe, mean ± SD over folds × seeds; best layer chosen by mean UA.\n\n"
            + table1_markdown(table)
        )


def _panel_grid(num_panels: int) -> tuple[plt.Figure, np.ndarray]:
    """A row of ``num_panels`` axes sharing y, laid out to leave room for a legend on the right."""
    figure, axes = plt.subplots(
        1, num_panels, figsize=(3.4 * num_panels + 1.2, 2.9), sharey=True, squeeze=False, layout="constrained"
    )
    return figure, axes[0]


def _legend_entries(axes: np.ndarray) -> tuple[list, list[str]]:
    """Labelled artists of all panels, once per label (a model may be missing from some corpora)."""
    entries = {}
    for axis in axes:
        for handle, name in zip(*axis.get_legend_handles_labels()):
            entries.setdefault(name, handle)
    return list(entries.values()), list(entries)


def plot_probe_ua(runs_path: str | Path, png_path: str | Path) -> None:
    """Fig. 1: UA (%) per layer, a line per model, a panel per corpus (PNG and SVG).

    Lines join the mean UA over folds x seeds; error bars are +-1 SD; small dots are the single
    runs (one per fold and seed, jittered sideways); a star marks each model's best layer, also
    named in the panel's title; the dashed line is chance (100 / number of classes).
    """
    apply_style()
    runs = read_tsv(runs_path)
    layers = runs[runs["layer"] >= 0].assign(ua_pct=lambda frame: 100 * frame["ua"])
    if layers.empty:
        raise ValueError(f"{runs_path}: no single-layer probes to plot")
    corpora = list(dict.fromkeys(layers["corpus"]))
    models = list(dict.fromkeys(layers["model"]))
    figure, axes = _panel_grid(len(corpora))
    jitter = np.random.default_rng(0)
    for axis, corpus in zip(axes, corpora):
        of_corpus = layers[layers["corpus"] == corpus]
        offsets = np.linspace(-0.12, 0.12, len(models)) if len(models) > 1 else [0.0]
        best_layers = []
        for model_index, model in enumerate(models):
            of_model = of_corpus[of_corpus["model"] == model]
            if of_model.empty:
                continue
            colour, marker = PALETTE[model_index % len(PALETTE)], _MARKERS[model_index % len(_MARKERS)]
            stats = of_model.groupby("layer")["ua_pct"].agg(["mean", "std"]).reset_index()
            x = stats["layer"] + offsets[model_index]
            axis.scatter(
                of_model["layer"] + offsets[model_index] + jitter.uniform(-0.05, 0.05, len(of_model)),
                of_model["ua_pct"],
                s=5,
                color=colour,
                alpha=0.35,
                linewidths=0,
            )
            axis.errorbar(
                x,
                stats["mean"],
                yerr=stats["std"].fillna(0),
                color=colour,
                marker=marker,
                markersize=3.5,
                linewidth=1.2,
                capsize=2,
                label=model,
            )
            best = stats["mean"].idxmax()
            axis.scatter(
                x[best],
                stats["mean"][best],
                marker="*",
                s=130,
                color=colour,
                edgecolors="black",
                linewidths=0.6,
                zorder=5,
            )
            best_layers.append(f"{model} {stats['layer'][best]}")
        chance = 100 / of_corpus["n_classes"].iloc[0]
        axis.axhline(chance, color="grey", linestyle="--", linewidth=0.8)
        num_runs = of_corpus.groupby(["model", "input"]).size().max()
        # Named in the title, where no data point or line can lie under it.
        axis.set_title(f"{corpus} ({num_runs} runs: folds × seeds)\nbest layer: {', '.join(best_layers)}")
        axis.set_xlabel(LAYER_AXIS_LABEL)
        axis.set_xticks(sorted(of_corpus["layer"].unique()))
    axes[0].set_ylabel("UA (%)")
    handles, names = _legend_entries(axes)
    handles += [
        plt.Line2D([], [], marker="*", linestyle="", markersize=9, markerfacecolor="white", markeredgecolor="black"),
        plt.Line2D([], [], color="grey", linestyle="--", linewidth=0.8),
        plt.Line2D([], [], marker="o", linestyle="", markersize=3, color="grey", alpha=0.5),
    ]
    names += ["best layer", "chance", "single run"]
    figure.legend(handles, names, loc="outside right center", frameon=False)
    save_figure(figure, png_path)


def collect_layer_weights(weight_paths: Sequence[str | Path]) -> pd.DataFrame:
    """``corpus, model, layer, weight_mean, weight_std, n`` over folds x seeds from the per-fold TSVs."""
    weights = pd.concat([read_tsv(path) for path in weight_paths], ignore_index=True)
    grouped = weights.groupby(["corpus", "model", "layer"], sort=False)["weight"]
    return grouped.agg(weight_mean="mean", weight_std="std", n="count").reset_index()


def plot_layer_weights(summary: pd.DataFrame, png_path: str | Path) -> None:
    """Learned softmax weights of the weighted-average probe per layer: a line per model, a panel per corpus.

    Mean over folds x seeds with +-1 SD error bars; the dotted line is the uniform weight 1 / (L + 1)
    that training starts from.
    """
    apply_style()
    corpora = list(dict.fromkeys(summary["corpus"]))
    models = list(dict.fromkeys(summary["model"]))
    figure, axes = _panel_grid(len(corpora))
    for axis, corpus in zip(axes, corpora):
        of_corpus = summary[summary["corpus"] == corpus]
        for model_index, model in enumerate(models):
            of_model = of_corpus[of_corpus["model"] == model]
            if of_model.empty:
                continue
            axis.errorbar(
                of_model["layer"],
                of_model["weight_mean"],
                yerr=of_model["weight_std"].fillna(0),
                color=PALETTE[model_index % len(PALETTE)],
                marker=_MARKERS[model_index % len(_MARKERS)],
                markersize=3.5,
                linewidth=1.2,
                capsize=2,
                label=model,
            )
        for num_layers in sorted(of_corpus.groupby("model")["layer"].max().unique() + 1):
            axis.axhline(1 / num_layers, color="grey", linestyle=":", linewidth=0.8)
        axis.set_title(corpus)
        axis.set_xlabel(LAYER_AXIS_LABEL)
        axis.set_xticks(sorted(of_corpus["layer"].unique()))
    axes[0].set_ylabel("Learned layer weight (softmax)")
    handles, names = _legend_entries(axes)
    handles.append(plt.Line2D([], [], color="grey", linestyle=":", linewidth=0.8))
    names.append("uniform 1/(L+1)")
    figure.legend(handles, names, loc="outside right center", frameon=False)
    save_figure(figure, png_path)


def write_layer_weights(weight_paths: Sequence[str | Path], table_path: str | Path, png_path: str | Path) -> None:
    """Summarise the per-fold layer weights into a table and plot them."""
    summary = collect_layer_weights(weight_paths)
    write_tsv(summary, table_path)
    plot_layer_weights(summary, png_path)
