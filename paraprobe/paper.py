"""The published numbers of Li et al. (SLT 2022) and a side-by-side comparison with a run.

A run's corpus counts as the paper's IEMOCAP or RAVDESS by its reader format (and, for
RAVDESS, the paper's settings: 8 classes, 4 folds); a model counts as PT, FT100 or FT960 by
its checkpoint id, or by the name of the local folder it was downloaded to, whatever the user
named it. Other settings of the paper that a run changes (the probe's, the number of folds
scored) are listed beside the comparison, whose rows are still shown.
"""

from __future__ import annotations

from pathlib import PurePath

import pandas as pd

from paraprobe.probe.names import layer_index, layer_name

#: Checkpoint id -> the paper's model name.
PAPER_MODELS = {
    "facebook/wav2vec2-base": "PT",
    "facebook/wav2vec2-base-100h": "FT100",
    "facebook/wav2vec2-base-960h": "FT960",
}
PAPER_CORPORA = {"iemocap": "IEM", "ravdess": "RAV"}
#: The paper's probe (its Sec. 3.2) per corpus; patience and epochs it leaves open.
PAPER_PROBE = {
    "IEM": {"hidden_sizes": (128, 16), "learning_rate": 1e-4, "weight_decay": 1e-5, "batch_size": 64},
    "RAV": {"hidden_sizes": (128, 16), "learning_rate": 2e-4, "weight_decay": 1e-5, "batch_size": 64},
}
#: Folds of the paper's cross-validation: IEMOCAP's 5 sessions, RAVDESS's 4 groups of 6 actors.
PAPER_FOLDS = {"IEM": 5, "RAV": 4}

#: Table 1, UA (%): (input, model) -> {corpus: value}; "best layer" rows are the best single layer.
TABLE1_UA = {
    ("best layer", "PT"): {"IEM": 65.19, "RAV": 70.62},
    ("best layer", "FT100"): {"IEM": 64.97, "RAV": 68.96},
    ("best layer", "FT960"): {"IEM": 65.61, "RAV": 70.42},
    ("last", "PT"): {"IEM": 59.41, "RAV": 52.85},
    ("last", "FT100"): {"IEM": 60.84, "RAV": 59.51},
    ("last", "FT960"): {"IEM": 51.64, "RAV": 46.56},
    ("average", "PT"): {"IEM": 64.93, "RAV": 67.26},
    ("average", "FT100"): {"IEM": 64.72, "RAV": 67.40},
    ("average", "FT960"): {"IEM": 65.51, "RAV": 64.20},
    ("average_wo_last2", "PT"): {"IEM": 65.11, "RAV": 67.36},
    ("average_wo_last2", "FT100"): {"IEM": 64.90, "RAV": 67.50},
    ("average_wo_last2", "FT960"): {"IEM": 65.87, "RAV": 65.56},
    ("weighted_average", "PT"): {"IEM": 65.28, "RAV": 68.47},
    ("weighted_average", "FT100"): {"IEM": 64.94, "RAV": 68.89},
    ("weighted_average", "FT960"): {"IEM": 65.67, "RAV": 65.11},
}
#: The paper's best single layer per corpus (the same for its three models).
BEST_LAYER = {"IEM": 6, "RAV": 5}
COMPARE_UA_COLUMNS = [
    "corpus",
    "model",
    "paper_corpus",
    "paper_model",
    "input",
    "layer",
    "paper_layer",
    "ours_ua",
    "ours_std",
    "n",
    "paper_ua",
    "difference",
]

#: Table 3, IEMOCAP: CCA between layers 11/12 and layers 6-10: (layer, model) -> {other layer: value}.
TABLE3_CCA = {
    (11, "PT"): dict(zip(range(6, 11), (0.25, 0.24, 0.24, 0.31, 0.45))),
    (11, "FT100"): dict(zip(range(6, 11), (0.29, 0.30, 0.31, 0.38, 0.53))),
    (11, "FT960"): dict(zip(range(6, 11), (0.24, 0.26, 0.27, 0.32, 0.43))),
    (12, "PT"): dict(zip(range(6, 11), (0.26, 0.25, 0.26, 0.31, 0.43))),
    (12, "FT100"): dict(zip(range(6, 11), (0.27, 0.28, 0.29, 0.34, 0.44))),
    (12, "FT960"): dict(zip(range(6, 11), (0.22, 0.22, 0.23, 0.26, 0.32))),
}


def paper_corpus(corpus_config: dict) -> str | None:
    """``'IEM'``/``'RAV'`` if the corpus is read as the paper read it, else None."""
    kind = PAPER_CORPORA.get(corpus_config["format"])
    if kind == "RAV" and (corpus_config.get("merge_calm") or corpus_config.get("folds", 4) != 4):
        return None
    if kind == "IEM" and not corpus_config.get("require_transcript", True):
        return None  # the paper's 5,531 utterances are those with a transcript
    return kind


def paper_checkpoint(model_config: dict) -> str | None:
    """The hub id of the paper's checkpoint that ``model_config`` loads, else None: its ``id``
    itself, or a local folder named after it (``hf download --local-dir .../wav2vec2-base``) or
    in the Hugging Face cache (``.../models--facebook--wav2vec2-base/snapshots/<commit>``)."""
    if model_config.get("init", "pretrained") != "pretrained":
        return None
    model_id = model_config.get("id", "").rstrip("/")
    if model_id in PAPER_MODELS:
        return model_id
    parts = PurePath(model_id).parts
    for hub_id in PAPER_MODELS:
        if parts[-1:] == (hub_id.split("/")[1],) or "models--" + hub_id.replace("/", "--") in parts:
            return hub_id
    return None


def paper_model(model_config: dict) -> str | None:
    """``'PT'``/``'FT100'``/``'FT960'`` for the paper's pretrained checkpoints, else None."""
    checkpoint = paper_checkpoint(model_config)
    return PAPER_MODELS[checkpoint] if checkpoint else None


def setting_differences(
    corpora: dict,
    models: dict,
    similarity_methods: list[str],
    probe_settings: dict[str, dict],
    num_seeds: int,
    probe_ua: pd.DataFrame,
) -> list[str]:
    """One sentence per way the run differs from the paper.

    Corpora and models that are not the paper's (their rows are left out of the comparison); a
    local folder taken as a paper checkpoint by its name; no CCA among ``similarity_methods``
    (Table 3 then has no values); and, for the paper's corpora, probe settings other than the
    paper's (``probe_settings``: corpus -> the fields of its
    :class:`paraprobe.probe.settings.ProbeSettings`), or fewer folds scored in ``probe_ua``
    (``tables/probe_ua.tsv``, whose ``n`` counts folds x ``num_seeds``) than the paper's
    cross-validation.
    """
    notes = []
    if "cca" not in similarity_methods:
        notes.append(
            f"similarity.methods ({', '.join(similarity_methods)}) leaves out cca: Table 3 has nothing to compare"
        )
    scored = probe_ua.groupby("corpus")["n"].min() // num_seeds
    for name, corpus in corpora.items():
        paper_c = paper_corpus(corpus)
        if paper_c is None:
            notes.append(
                f"corpus {name!r} ({corpus['format']}) is not read as the paper's IEMOCAP or RAVDESS "
                "(4-class IEMOCAP of the transcribed utterances; 8-class RAVDESS with 4 folds); "
                "its rows are left out"
            )
            continue
        for key, published in PAPER_PROBE[paper_c].items():
            ours = probe_settings[name][key]
            if (tuple(ours) if key == "hidden_sizes" else ours) != published:
                notes.append(f"corpus {name!r}: probe {key} {ours} (paper: {published})")
        folds = scored.get(name)
        if folds is not None and folds < PAPER_FOLDS[paper_c]:
            notes.append(
                f"corpus {name!r}: {folds} folds scored (paper: {PAPER_FOLDS[paper_c]}); "
                "a corpus with sessions or actors missing is compared with the full corpus's numbers"
            )
    for name, model in models.items():
        checkpoint = paper_checkpoint(model)
        if checkpoint is None:
            what = "random init" if model.get("init") == "random" else model.get("id", "?")
            notes.append(f"model {name!r} ({what}) is not one of {', '.join(PAPER_MODELS)}; its rows are left out")
        elif checkpoint != model["id"].rstrip("/"):
            notes.append(f"model {name!r}: the local folder {model['id']} is taken as {checkpoint} by its name")
    return notes


def compare_probe_ua(probe_ua: pd.DataFrame, corpora: dict, models: dict) -> pd.DataFrame:
    """Each of the run's Table-1 cells next to the paper's, in percent.

    Args:
        probe_ua: ``tables/probe_ua.tsv`` (corpus, model, input, ua_mean, ua_std, n; UA in [0, 1]).
    Returns:
        Columns corpus, model, paper_corpus, paper_model, input, layer and paper_layer (of the best
        layer row), ours_ua, ours_std, paper_ua, difference (ours - paper, percentage points); one
        row per matching cell.
    """
    rows = []
    for (corpus, model), table in probe_ua.groupby(["corpus", "model"], sort=True):
        paper_c = paper_corpus(corpora[corpus]) if corpus in corpora else None
        paper_m = paper_model(models[model]) if model in models else None
        if paper_c is None or paper_m is None:
            continue
        by_input = table.set_index("input")
        layers = table[table["input"].str.startswith("layer_")]
        cells = [("best layer", "best layer", layers.loc[layers["ua_mean"].idxmax(), "input"])]
        if layer_name(BEST_LAYER[paper_c]) in by_input.index:  # ours at the layer the paper found best
            cells.append(("paper's best layer", "best layer", layer_name(BEST_LAYER[paper_c])))
        cells += [
            (name, name, name)
            for name in ("last", "average", "average_wo_last2", "weighted_average")
            if name in by_input.index
        ]
        for row_name, paper_row, input_name in cells:
            cell = by_input.loc[input_name]
            paper_value = TABLE1_UA[(paper_row, paper_m)][paper_c]
            rows.append(
                {
                    "corpus": corpus,
                    "model": model,
                    "paper_corpus": paper_c,
                    "paper_model": paper_m,
                    "input": row_name,
                    "layer": layer_index(input_name) if paper_row == "best layer" else "",
                    "paper_layer": BEST_LAYER[paper_c] if paper_row == "best layer" else "",
                    "ours_ua": round(100 * float(cell["ua_mean"]), 2),
                    "ours_std": round(100 * float(cell["ua_std"]), 2),
                    "n": int(cell["n"]),
                    "paper_ua": paper_value,
                    "difference": round(100 * float(cell["ua_mean"]) - paper_value, 2),
                }
            )
    return pd.DataFrame(rows, columns=COMPARE_UA_COLUMNS)


def compare_layer_cca(
    layers: dict[tuple[str, str], pd.DataFrame], corpora: dict, models: dict, method: str = "cca"
) -> pd.DataFrame:
    """The run's CCA of layers 11 and 12 against 6-10 next to the paper's Table 3 (IEMOCAP).

    Args:
        layers: (corpus, model) -> that pair's ``layers.tsv`` (layer_a, layer_b, method, value).
    Returns:
        Columns corpus, model, paper_model, layer, other_layer, ours, paper, difference.
    """
    rows = []
    for (corpus, model), table in sorted(layers.items()):
        paper_m = paper_model(models[model])
        if paper_corpus(corpora[corpus]) != "IEM" or paper_m is None:
            continue
        values = table[table["method"] == method]
        lookup = {(int(a), int(b)): v for a, b, v in zip(values["layer_a"], values["layer_b"], values["value"])}
        for (layer, name), published in TABLE3_CCA.items():
            if name != paper_m:
                continue
            for other, paper_value in published.items():
                ours = lookup.get((layer, other), lookup.get((other, layer)))
                if ours is None:
                    continue
                rows.append(
                    {
                        "corpus": corpus,
                        "model": model,
                        "paper_model": paper_m,
                        "layer": layer,
                        "other_layer": other,
                        "ours": round(float(ours), 3),
                        "paper": paper_value,
                        "difference": round(float(ours) - paper_value, 3),
                    }
                )
    return pd.DataFrame(
        rows, columns=["corpus", "model", "paper_model", "layer", "other_layer", "ours", "paper", "difference"]
    )


def markdown_table(frame: pd.DataFrame, decimals: dict[str, int]) -> str:
    """A GitHub-flavoured Markdown table of ``frame`` (no index); the columns in ``decimals`` with
    that many decimals, a missing value (an SD of one run) as a dash."""

    def cell(column: str, value) -> str:
        if column in decimals and value != "":
            return "–" if pd.isna(value) else f"{float(value):.{decimals[column]}f}"
        return str(value)

    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    rows = [
        "| " + " | ".join(cell(column, value) for column, value in zip(frame.columns, row)) + " |"
        for row in frame.itertuples(index=False)
    ]
    return "\n".join([header, rule, *rows])


def comparison_markdown(ua: pd.DataFrame, cca: pd.DataFrame, differences: list[str]) -> str:
    """The report's comparison page: both tables, and what of the paper's set-up this run changes."""
    parts = ["# This run against Li et al. (SLT 2022)", ""]
    if differences:
        parts += ["Settings that differ from the paper's:", ""]
        parts += [f"- {note}" for note in differences] + [""]
    parts += ["## Table 1: UA (%) of the probes", ""]
    if len(ua):
        parts += [
            "`ours_ua`, `paper_ua`: UA (%), ours the mean over the `n` runs (folds × seeds); `ours_std` their SD "
            "and `difference` (ours − paper) in percentage points. `best layer` is each side's own best layer, "
            "`paper's best layer` ours at the layer the paper found best.",
            "",
            markdown_table(ua, dict.fromkeys(["ours_ua", "ours_std", "paper_ua", "difference"], 2)),
        ]
    else:
        parts.append("No corpus x model of this run is one of the paper's.")
    parts += ["", "## Table 3: CCA of layers 11 and 12 with layers 6-10 (IEMOCAP)", ""]
    if len(cca):
        parts += [
            "In-sample CCA (mean canonical correlation) over the frames of the frame subset, as the paper "
            "reports it; held-out estimates are in `{corpus}/similarity/{model}/layers.tsv`.",
            "",
            markdown_table(cca, {"ours": 3, "paper": 2, "difference": 3}),  # the paper gives two decimals
        ]
    else:
        parts.append("No IEMOCAP x paper model pair in this run.")
    parts.append("")
    return "\n".join(parts)
