"""The full study on paper: configs/paper.yaml plans its DAG against corpus trees of the real sizes.

The trees hold empty files where the WAVs go: planning reads names (sessions, actors,
the files each manifest depends on), never audio. Offline (HF_HUB_OFFLINE=1), as on a
cluster node: paper.yaml gives each model's layer count, so no checkpoint is looked up.
"""

import time
from collections import Counter
from itertools import product

import pytest
import yaml

from conftest import REPO, planned_jobs, snakemake
from corpus_trees import write_empty, write_iemocap, write_ravdess
from paraprobe.manifest import corpus_folds, list_corpus

pytestmark = pytest.mark.workflow

#: IEMOCAP's utterances with a transcript and a label in the 4-class set (excited merged
#: into happy), per session: 5,531 in all, as in the paper's setup.
IEMOCAP_SESSION_SIZES = {1: 1085, 2: 1023, 3: 1151, 4: 1031, 5: 1241}
IEMOCAP_CODES = ("neu", "ang", "sad", "hap", "exc")
UTTERANCES_PER_DIALOG = 30
RAVDESS_ACTORS = range(1, 25)  # 24 actors x 60 speech files = 1,440
PAPER_MODELS = ("FT100", "FT960", "PT")


def iemocap_utterances() -> list[tuple[str, str, bool]]:
    """(utt_id, code, transcribed) of IEMOCAP-sized sessions, in dialogs of 30 turns."""
    utterances = []
    for session, size in IEMOCAP_SESSION_SIZES.items():
        for index in range(size):
            dialog, turn = divmod(index, UTTERANCES_PER_DIALOG)
            speaker = "FM"[dialog % 2]
            utt_id = f"Ses{session:02d}{speaker}_impro{dialog + 1:02d}_{'FM'[turn % 2]}{turn:03d}"
            utterances.append((utt_id, IEMOCAP_CODES[index % len(IEMOCAP_CODES)], True))
    return utterances


@pytest.fixture(scope="module")
def paper_trees(tmp_path_factory):
    folder = tmp_path_factory.mktemp("paper_corpora")
    iemocap = write_iemocap(folder / "IEMOCAP_full_release", iemocap_utterances(), write_audio=write_empty)
    ravdess = write_ravdess(folder / "RAVDESS", RAVDESS_ACTORS, write_audio=write_empty)
    return iemocap, ravdess


def test_the_trees_have_the_papers_sizes(paper_trees):
    iemocap, ravdess = paper_trees
    iemocap_listing = list_corpus({"format": "iemocap", "root": str(iemocap), "require_transcript": True})
    assert len(iemocap_listing.candidates) == 5531
    assert Counter(row["fold"] for row in iemocap_listing.candidates) == IEMOCAP_SESSION_SIZES
    ravdess_config = {"format": "ravdess", "root": str(ravdess), "folds": 4, "seed": 0, "merge_calm": False}
    assert len(list_corpus(ravdess_config).candidates) == 1440
    assert corpus_folds(ravdess_config) == [1, 2, 3, 4]


def test_paper_config_plans_every_job_offline(paper_trees, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    iemocap, ravdess = paper_trees
    paper = yaml.safe_load((REPO / "configs" / "paper.yaml").read_text())
    paper["corpora"]["iemocap"]["root"] = str(iemocap)
    paper["corpora"]["ravdess"]["root"] = str(ravdess)
    roots = tmp_path / "roots.yaml"
    roots.write_text(yaml.safe_dump({"corpora": paper["corpora"]}))  # corpora replace paper.yaml's

    started = time.perf_counter()
    result = snakemake(tmp_path, "-n", "--configfile", str(REPO / "configs" / "paper.yaml"), str(roots))
    # The planning time goes to the README, not into an assertion (no timed tests).
    print(f"snakemake -n of configs/paper.yaml: {time.perf_counter() - started:.1f} s wall, interpreter start included")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
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
