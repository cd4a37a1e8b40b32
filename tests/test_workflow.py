"""Run the workflow itself on the embedded demo, as a user would."""

import pytest

from conftest import snakemake
from paraprobe.io import read_tsv

pytestmark = pytest.mark.workflow


def test_demo_writes_the_manifest(demo_run):
    manifest = read_tsv(demo_run / "demo" / "manifest.tsv")
    assert len(manifest) == 4 * 60
    assert set(manifest["fold"]) == {1, 2, 3, 4}
    assert manifest["utt_id"].is_unique and list(manifest["utt_id"]) == sorted(manifest["utt_id"])
    assert (manifest["duration_s"] > 0.5).all()
    assert read_tsv(demo_run / "demo" / "excluded.tsv").empty


def test_demo_writes_acoustic_features_on_the_model_grid(demo_run):
    import h5py
    import numpy as np

    manifest = read_tsv(demo_run / "demo" / "manifest.tsv")
    frame_counts = []
    for feature_set, width in (("egemaps", 25), ("mfcc", 13)):
        with h5py.File(demo_run / "demo" / "acoustic" / f"{feature_set}.h5") as features:
            assert [utt_id.decode() for utt_id in features["utt_id"][:]] == list(manifest["utt_id"])
            offsets = features["frame_offsets"][:]
            assert features["values"].shape == (offsets[-1], width) and features["voiced"].shape == (offsets[-1],)
            assert np.all(np.isfinite(features["values"][:]))
            # 50 frames a second (wav2vec2's 20 ms hop), within one frame of the duration.
            assert np.all(np.abs(np.diff(offsets) - manifest["duration_s"].to_numpy() * 50) < 1.5)
            frame_counts.append(np.diff(offsets))
    np.testing.assert_array_equal(*frame_counts)


def test_demo_writes_every_layer_of_the_random_model(demo_run):
    import h5py
    import numpy as np

    manifest = read_tsv(demo_run / "demo" / "manifest.tsv")
    with h5py.File(demo_run / "demo" / "embeddings" / "RAND.h5", "r") as embeddings:
        assert list(embeddings["utt_id"].asstr()[:]) == list(manifest["utt_id"])
        assert sorted(embeddings["pooled"]) == [f"layer_{layer:02d}" for layer in range(5)]  # 4 layers + input
        assert embeddings["pooled/layer_04"].shape == (240, 256)
        offsets = embeddings["frame_offsets"][:]
        assert (np.diff(offsets) > 0).sum() == 120  # extraction.frames.utterances in config.yaml
        assert embeddings["frames/layer_04"].shape == (offsets[-1], 256)
        assert embeddings.attrs["model"] == "random-init wav2vec2" and embeddings.attrs["num_layers"] == 4


def test_demo_writes_the_similarity_tables_figures_and_table3(demo_run):
    folder = demo_run / "demo" / "similarity" / "RAND"
    hidden_states = set(range(4 + 1))  # the demo model: 4 transformer layers
    features = read_tsv(folder / "features.tsv")
    assert set(features["layer"]) == hidden_states
    assert {"energy", "frequency", "spectral", "voice_quality", "egemaps_all", "mfcc"} <= set(features["feature_group"])
    layers = read_tsv(folder / "layers.tsv")
    assert len(layers) == len(hidden_states) ** 2 * 3  # every ordered pair x cca, pwcca, cka
    hierarchy = read_tsv(folder / "hierarchy.tsv")
    assert set(hierarchy["level"]) == {"frame", "phoneme", "word"}
    emotion = read_tsv(folder / "emotion.tsv")
    assert set(emotion["label"]) == set(read_tsv(demo_run / "demo" / "manifest.tsv")["label"])
    for table in (features, layers, hierarchy, emotion):
        assert table["value"].between(0, 1).all()
        fitted = table[table["method"] != "cka"]
        assert fitted["held_out"].notna().all()  # the demo config enables held-out estimates
    for name in ("fig2_feature_cca", "fig3_layer_cca", "fig4_hierarchy", "fig5_emotion_cca"):
        assert (demo_run / "figures" / f"{name}.png").stat().st_size > 0
        assert (demo_run / "figures" / f"{name}.svg").stat().st_size > 0
    assert "| layer | model | L2 |" in (demo_run / "tables" / "table3_layer_cca.md").read_text()


def test_demo_writes_every_probe_fold_and_the_probe_tables_and_figures(demo_run):
    import json

    from paraprobe.probe.names import probe_input_names

    inputs = probe_input_names(4)  # the demo model: 4 transformer layers
    for name in inputs:
        for fold in (1, 2, 3, 4):
            record = json.loads((demo_run / "demo" / "probes" / "RAND" / name / f"fold{fold}.json").read_text())
            assert (record["input"], record["fold"], record["seed"]) == (name, fold, [0, 1])  # config.yaml seeds
            assert len(record["labels"]) == 8 and 0 <= record["ua"] <= 1
            assert sum(map(sum, record["confusion"])) == 2 * record["n_test"] == 2 * 60  # one actor per fold
    summary = read_tsv(demo_run / "tables" / "probe_ua.tsv")
    assert list(summary["input"]) == inputs and (summary["n"] == 4 * 2).all()
    table1 = read_tsv(demo_run / "tables" / "table1_probe_ua.tsv")
    assert list(table1["input"]) == ["best_layer", "last", "average", "average_wo_last2", "weighted_average"]
    weights = read_tsv(demo_run / "tables" / "probe_layer_weights.tsv")
    assert list(weights["layer"]) == list(range(5)) and abs(weights["weight_mean"].sum() - 1) < 1e-6
    for name in ("fig1_probe_ua", "probe_layer_weights"):
        for suffix in (".png", ".svg"):
            assert (demo_run / "figures" / f"{name}{suffix}").stat().st_size > 0


def test_demo_report_groups_every_figure_by_experiment(demo_run):
    workdir = demo_run.parent
    comparison = (demo_run / "tables" / "paper_comparison.md").read_text()
    assert "corpus 'demo' (synthetic) is not read as the paper's" in comparison
    assert "model 'RAND' (random init)" in comparison
    result = snakemake(workdir, "--report", "results/report.html")
    assert result.returncode == 0, result.stderr[-3000:]
    html = (demo_run / "report.html").read_text(errors="replace")
    for category in ("Probing", "Feature similarity", "Layer similarity", "Hierarchy", "Emotion", "Paper comparison"):
        assert category in html
    assert "fig1_probe_ua.png" in html and "fig5_emotion_cca.png" in html


def test_workflow_passes_snakemake_lint_and_snakefmt(tmp_path):
    import subprocess
    import sys

    from conftest import REPO

    lint = snakemake(tmp_path, "--lint", "--configfile", str(REPO / "config.yaml"))
    assert lint.returncode == 0 and "Congratulations" in lint.stdout + lint.stderr, lint.stdout + lint.stderr
    workflow_files = [str(REPO / "Snakefile"), str(REPO / "rules")]
    formatting = subprocess.run(
        [sys.executable, "-m", "snakefmt", "--check", *workflow_files], capture_output=True, text=True
    )
    assert formatting.returncode == 0, formatting.stderr
