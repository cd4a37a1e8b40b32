"""The full study on paper: configs/paper.yaml plans its DAG against corpus trees of the real sizes.

The trees hold empty files where the WAVs go: planning reads names (sessions, actors,
the files each manifest depends on), never audio. Offline (HF_HUB_OFFLINE=1), as on a
cluster node: paper.yaml gives each model's layer count, so no checkpoint is looked up.
How long the planning takes is bench/plan.py's business (no timed tests).
"""

from collections import Counter
from itertools import product

import pytest

from conftest import REPO, planned_jobs, snakemake
from corpus_trees import IEMOCAP_SESSION_SIZES, write_paper_trees
from paraprobe.manifest import corpus_folds, list_corpus

pytestmark = pytest.mark.workflow

PAPER_MODELS = ("FT100", "FT960", "PT")
#: Libraries only the jobs need: parsing the workflow to plan it must not import them.
JOB_ONLY_LIBRARIES = {"torch", "transformers", "opensmile", "sklearn", "scipy", "h5py", "soundfile", "matplotlib"}


@pytest.fixture(scope="module")
def paper_trees(tmp_path_factory):
    return write_paper_trees(tmp_path_factory.mktemp("paper_corpora"))


def test_the_trees_have_the_papers_sizes(paper_trees):
    iemocap, ravdess, _ = paper_trees
    iemocap_listing = list_corpus({"format": "iemocap", "root": str(iemocap), "require_transcript": True})
    assert len(iemocap_listing.candidates) == 5531
    assert Counter(row["fold"] for row in iemocap_listing.candidates) == IEMOCAP_SESSION_SIZES
    ravdess_config = {"format": "ravdess", "root": str(ravdess), "folds": 4, "seed": 0, "merge_calm": False}
    assert len(list_corpus(ravdess_config).candidates) == 1440
    assert corpus_folds(ravdess_config) == [1, 2, 3, 4]


def test_paper_config_plans_every_job_offline(paper_trees, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")  # the planning process lists every import on stderr
    _, _, roots = paper_trees
    result = snakemake(tmp_path, "-n", "--configfile", str(REPO / "configs" / "paper.yaml"), str(roots))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    imported = {
        line.rpartition("|")[2].strip().split(".")[0]
        for line in result.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "paraprobe" in imported
    assert not imported & JOB_ONLY_LIBRARIES, f"planning imported {sorted(imported & JOB_ONLY_LIBRARIES)}"
    jobs = planned_jobs(result.stdout + result.stderr)

    assert Counter(job.rule for job in jobs) == {
        "build_manifest": 2,
        "extract_embeddings": 2 * 3,
        "extract_acoustic": 2,
        "probe_fold_12_layers": 5 * 3 + 4 * 3,  # IEMOCAP's sessions and RAVDESS's folds x 3 models
        "similarity": 2 * 3,
        "probe_summary": 1,
        "probe_table1": 1,
        "probe_figure": 1,
        "probe_layer_weights": 1,
        "similarity_fig2": 1,
        "similarity_fig3": 1,
        "similarity_fig4": 1,
        "similarity_fig5": 1,
        "similarity_table3": 1,
        "paper_comparison": 1,
        "all": 1,
    }
    folds = Counter(
        (job.wildcards["corpus"], job.wildcards["model"]) for job in jobs if job.rule == "probe_fold_12_layers"
    )
    assert folds == {
        **dict.fromkeys(product(["iemocap"], PAPER_MODELS), 5),
        **dict.fromkeys(product(["ravdess"], PAPER_MODELS), 4),
    }
