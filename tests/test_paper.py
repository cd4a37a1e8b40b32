from dataclasses import asdict

import numpy as np
import pandas as pd
import pytest

from paraprobe.paper import (
    compare_layer_cca,
    compare_probe_ua,
    comparison_markdown,
    paper_model,
    setting_differences,
)
from paraprobe.probe.settings import ProbeSettings

#: The paper's probe for IEMOCAP and for RAVDESS (the default learning rate is RAVDESS's).
IEMOCAP_PROBE, RAVDESS_PROBE = asdict(ProbeSettings(learning_rate=1e-4)), asdict(ProbeSettings())

CORPORA = {
    "iemocap": {"format": "iemocap", "root": "/x"},
    "rav": {"format": "ravdess", "root": "/y", "folds": 4, "merge_calm": False},
    "demo": {"format": "synthetic"},
}
MODELS = {
    "base": {"id": "facebook/wav2vec2-base", "init": "pretrained"},
    "RAND": {"init": "random", "architecture": "wav2vec2"},
}


def probe_table(corpus: str, model: str, best_layer: int) -> pd.DataFrame:
    inputs = [f"layer_{i:02d}" for i in range(13)] + ["last", "average", "average_wo_last2", "weighted_average"]
    ua = [0.50 + (0.10 if i == best_layer else 0.0) for i in range(13)] + [0.40, 0.55, 0.56, 0.57]
    return pd.DataFrame({"corpus": corpus, "model": model, "input": inputs, "ua_mean": ua, "ua_std": 0.01, "n": 5})


def test_probe_comparison_matches_models_by_checkpoint_id_and_reports_differences():
    table = pd.concat([probe_table("iemocap", "base", 7), probe_table("demo", "RAND", 2)])
    compared = compare_probe_ua(table, CORPORA, MODELS).set_index("input")
    assert set(compared["model"]) == {"base"} and set(compared["paper_model"]) == {"PT"}
    best = compared.loc["best layer"]
    assert (best["layer"], best["paper_layer"], best["ours_ua"], best["paper_ua"]) == (7, 6, 60.0, 65.19)
    at_paper_best = compared.loc["paper's best layer"]  # ours at layer 6, against the paper's layer 6
    assert (at_paper_best["layer"], at_paper_best["ours_ua"], at_paper_best["paper_ua"]) == (6, 50.0, 65.19)
    assert compared.loc["last", "paper_layer"] == "" and set(compared["n"]) == {5}
    assert best["difference"] == pytest.approx(60.0 - 65.19)
    assert compared.loc["last", "difference"] == pytest.approx(40.0 - 59.41)
    assert compared.loc["weighted_average", "paper_ua"] == 65.28


def test_layer_comparison_reads_either_orientation_of_a_pair():
    rows = [(11, 6, 0.30), (10, 12, 0.40), (11, 6, 0.9)]
    layers = pd.DataFrame(rows, columns=["layer_a", "layer_b", "value"]).assign(method=["cca", "cca", "cka"])
    compared = compare_layer_cca({("iemocap", "base"): layers}, CORPORA, MODELS)
    assert list(zip(compared["layer"], compared["other_layer"], compared["ours"], compared["paper"])) == [
        (11, 6, 0.30, 0.25),
        (12, 10, 0.40, 0.43),
    ]


def test_settings_that_differ_from_the_paper_are_named():
    corpora = {
        **CORPORA,
        "rav_calm": {"format": "ravdess", "root": "/y", "folds": 4, "merge_calm": True},
        "iem_all": {"format": "iemocap", "root": "/x", "require_transcript": False},
    }
    settings = {"iemocap": IEMOCAP_PROBE, "rav": RAVDESS_PROBE}
    notes = setting_differences(corpora, MODELS, ["cca", "cka"], settings, 1, probe_table("iemocap", "base", 6))
    paper = "(4-class IEMOCAP of the transcribed utterances; 8-class RAVDESS with 4 folds); its rows are left out"
    assert notes == [
        f"corpus 'demo' (synthetic) is not read as the paper's IEMOCAP or RAVDESS {paper}",
        f"corpus 'rav_calm' (ravdess) is not read as the paper's IEMOCAP or RAVDESS {paper}",
        f"corpus 'iem_all' (iemocap) is not read as the paper's IEMOCAP or RAVDESS {paper}",
        "model 'RAND' (random init) is not one of facebook/wav2vec2-base, facebook/wav2vec2-base-100h, "
        "facebook/wav2vec2-base-960h; its rows are left out",
    ]


def test_a_paper_corpus_with_other_probe_settings_or_fewer_folds_is_compared_and_its_differences_named():
    settings = {
        "iemocap": {**RAVDESS_PROBE, "hidden_sizes": (64,)},  # RAVDESS's learning rate on IEMOCAP
        "rav": {**RAVDESS_PROBE, "batch_size": 32},
    }
    # IEMOCAP with 2 sessions, 2 seeds: n = 4 runs per input; RAVDESS's 4 folds, 2 seeds: n = 8
    runs = pd.concat([probe_table("iemocap", "base", 6).assign(n=4), probe_table("rav", "base", 5).assign(n=8)])
    notes = setting_differences(
        {"iemocap": CORPORA["iemocap"], "rav": CORPORA["rav"]}, MODELS, ["cca"], settings, 2, runs
    )
    assert notes == [
        "corpus 'iemocap': probe hidden_sizes (64,) (paper: (128, 16))",
        "corpus 'iemocap': probe learning_rate 0.0002 (paper: 0.0001)",
        "corpus 'iemocap': 2 folds scored (paper: 5); a corpus with sessions or actors missing is compared "
        "with the full corpus's numbers",
        "corpus 'rav': probe batch_size 32 (paper: 64)",
        "model 'RAND' (random init) is not one of facebook/wav2vec2-base, facebook/wav2vec2-base-100h, "
        "facebook/wav2vec2-base-960h; its rows are left out",
    ]
    assert len(compare_probe_ua(runs, CORPORA, MODELS)) == 2 * 6  # still compared


@pytest.mark.parametrize(
    "model_id,expected",
    [
        ("facebook/wav2vec2-base-960h", "FT960"),
        ("/models/wav2vec2-base-960h/", "FT960"),  # hf download --local-dir
        ("/hf/hub/models--facebook--wav2vec2-base-100h/snapshots/22aad52", "FT100"),  # the cache
        ("/models/wav2vec2-base-960h-finetuned", None),
        ("facebook/wav2vec2-large", None),
    ],
)
def test_paper_checkpoints_are_recognised_by_hub_id_or_downloaded_folder(model_id, expected):
    assert paper_model({"id": model_id, "init": "pretrained"}) == expected


def test_a_local_folder_taken_as_a_paper_checkpoint_is_said(tmp_path):
    models = {"FT960": {"id": "/models/wav2vec2-base-960h", "init": "pretrained"}}
    notes = setting_differences({}, models, ["cca"], {}, 1, probe_table("iemocap", "FT960", 6).iloc[:0])
    assert notes == [
        "model 'FT960': the local folder /models/wav2vec2-base-960h is taken as facebook/wav2vec2-base-960h by its name"
    ]


def test_comparison_page_prints_fixed_decimals_and_a_dash_for_the_sd_of_one_run():
    table = probe_table("iemocap", "base", 6).assign(n=1, ua_std=np.nan)
    table.loc[table["input"] == "last", "ua_mean"] = 0.649
    page = comparison_markdown(compare_probe_ua(table, CORPORA, MODELS), compare_layer_cca({}, CORPORA, MODELS), [])
    assert "| iemocap | base | IEM | PT | last |  |  | 64.90 | – | 1 | 59.41 | 5.49 |" in page
    assert "No IEMOCAP x paper model pair in this run." in page


def test_a_run_without_cca_is_told_table3_has_nothing_to_compare():
    (note,) = setting_differences({}, {}, ["pwcca", "cka"], {}, 1, probe_table("iemocap", "base", 6).iloc[:0])
    assert note == "similarity.methods (pwcca, cka) leaves out cca: Table 3 has nothing to compare"
