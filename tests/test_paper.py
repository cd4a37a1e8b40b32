import pandas as pd
import pytest

from paraprobe.paper import compare_layer_cca, compare_probe_ua, setting_differences

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
    assert compared.loc["last", "paper_layer"] == ""
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
    notes = setting_differences(
        {
            **CORPORA,
            "rav_calm": {"format": "ravdess", "root": "/y", "folds": 4, "merge_calm": True},
            "iem_all": {"format": "iemocap", "root": "/x", "require_transcript": False},
        },
        MODELS,
        ["cca", "cka"],
    )
    paper = "(4-class IEMOCAP of the transcribed utterances; 8-class RAVDESS with 4 folds)"
    assert notes == [
        f"corpus 'demo' (synthetic) is not read as the paper's IEMOCAP or RAVDESS {paper}",
        f"corpus 'rav_calm' (ravdess) is not read as the paper's IEMOCAP or RAVDESS {paper}",
        f"corpus 'iem_all' (iemocap) is not read as the paper's IEMOCAP or RAVDESS {paper}",
        "model 'RAND' (random init) is not one of facebook/wav2vec2-base, facebook/wav2vec2-base-100h, "
        "facebook/wav2vec2-base-960h",
    ]


def test_a_run_without_cca_is_told_table3_has_nothing_to_compare():
    (note,) = setting_differences({}, {}, ["pwcca", "cka"])
    assert note == "similarity.methods (pwcca, cka) leaves out cca: Table 3 has nothing to compare"
