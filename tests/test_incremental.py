"""Incremental rebuilds: after the complete demo run, one change plans exactly what depends on it.

Each test reads the job list of ``snakemake -n`` (Snakemake's default rerun triggers:
mtime, params, input, code, software-env) against the shared demo run, which the dry
runs leave as it is; the test that edits audio plans a corpus of its own.
"""

import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from snakemake.utils import update_config

from conftest import REPO, PlannedJob, planned_jobs, snakemake
from corpus_trees import write_tone
from paraprobe.io import read_tsv
from paraprobe.manifest import total_audio_hours, write_manifest

pytestmark = pytest.mark.workflow

DEMO_FOLDS = 4  # config.yaml: 4 actors, 4 folds
PROBE_AGGREGATES = {"probe_summary", "probe_table1", "probe_figure", "probe_layer_weights"}
SIMILARITY_AGGREGATES = {f"similarity_fig{n}" for n in (2, 3, 4, 5)} | {"similarity_table3"}


def dry_run(workdir: Path, *args: str) -> list[PlannedJob]:
    result = snakemake(workdir, "-n", *args)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return planned_jobs(result.stdout + result.stderr)


def rule_counts(jobs: list[PlannedJob]) -> dict[str, int]:
    return dict(Counter(job.rule for job in jobs))


def configfile(folder: Path, settings: dict) -> str:
    """A user config: the demo's with ``settings`` changed (``corpora`` and ``models`` replaced, other
    sections merged key by key), since a user's config file replaces config.yaml as a whole."""
    config = demo_config()
    for key, value in settings.items():
        if key in ("corpora", "models"):
            config[key] = value
        else:
            update_config(config, {key: value})
    path = folder / "change.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def demo_config() -> dict:
    return yaml.safe_load((REPO / "config.yaml").read_text())


def test_planner_reads_rules_wildcards_and_resources():
    output = (
        "Building DAG of jobs...\n\n[Wed Nov 25 23:08:32 2026]\nrule similarity:\n"
        "    input: a.h5\n    jobid: 14\n    reason: Missing output files: b.tsv\n"
        "    wildcards: corpus=demo, model=RAND\n"
        "    threads: 2\n    resources: tmpdir=/tmp, runtime=16, gpu=0\nShell command: None\n\n"
        "[Wed Nov 25 23:08:32 2026]\nlocalrule all:\n    input: x\n    jobid: 0\n"
    )
    assert planned_jobs(output) == [
        PlannedJob(
            "similarity",
            2,
            {"corpus": "demo", "model": "RAND"},
            {"tmpdir": "/tmp", "runtime": "16", "gpu": "0"},
            "Missing output files: b.tsv",
        ),
        PlannedJob("all"),
    ]


def test_second_run_plans_nothing(demo_run):
    assert dry_run(demo_run.parent) == []


def test_probe_hyperparameter_plans_the_probes_and_their_aggregates(demo_run, tmp_path):
    jobs = dry_run(demo_run.parent, "--configfile", configfile(tmp_path, {"probe": {"patience": 7}}))
    assert rule_counts(jobs) == {
        "probe_fold_4_layers": DEMO_FOLDS,
        **dict.fromkeys(PROBE_AGGREGATES, 1),
        "paper_comparison": 1,
        "all": 1,
    }
    folds = sorted(int(job.wildcards["fold"]) for job in jobs if job.rule == "probe_fold_4_layers")
    assert folds == list(range(1, DEMO_FOLDS + 1))


def test_probe_jobs_ask_for_memory_for_each_seed_they_train_together(demo_run, tmp_path):
    jobs = dry_run(demo_run.parent, "--configfile", configfile(tmp_path, {"probe": {"seeds": [0, 1, 2]}}))
    fold_jobs = [job for job in jobs if job.rule == "probe_fold_4_layers"]
    assert len(fold_jobs) == DEMO_FOLDS
    inputs_mb = (
        sum(
            path.stat().st_size
            for path in (demo_run / "demo" / "manifest.tsv", demo_run / "demo" / "embeddings" / "RAND.h5")
        )
        / 2**20
    )
    for job in fold_jobs:  # the pooled layers and a standardised copy per seed, bounded by the inputs' size
        assert int(job.resources["mem_mb"]) == pytest.approx(2000 + (2 + 3) * inputs_mb, abs=1)


def test_a_user_config_file_replaces_the_demo_settings_it_leaves_out(demo_run, tmp_path):
    """Without its ``probe`` section, the demo's config as a user file means the schema's probe
    defaults (one seed, not the demo's two): the probes rerun, nothing upstream does."""
    config = demo_config()
    del config["probe"]
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(config))
    jobs = dry_run(demo_run.parent, "--configfile", str(path))
    assert rule_counts(jobs) == {
        "probe_fold_4_layers": DEMO_FOLDS,
        **dict.fromkeys(PROBE_AGGREGATES, 1),
        "paper_comparison": 1,
        "all": 1,
    }


def test_summary_says_which_outputs_are_stale_and_why(demo_run, tmp_path):
    result = snakemake(demo_run.parent, "--summary", "--configfile", configfile(tmp_path, {"probe": {"patience": 7}}))
    assert result.returncode == 0, result.stderr[-3000:]
    header, *rows = [line.split("\t") for line in (result.stdout + result.stderr).splitlines() if "\t" in line]
    assert header == ["output_file", "date", "rule", "log-file(s)", "status", "plan"]
    by_rule: dict[str, set[tuple[str, str]]] = {}
    for row in rows:
        by_rule.setdefault(row[2], set()).add((row[4], row[5]))
    assert by_rule["probe_fold_4_layers"] == {("params changed", "update pending")}
    assert by_rule["extract_embeddings"] == {("ok", "no update")}


def test_new_model_plans_its_own_jobs_and_the_aggregates(demo_run, tmp_path):
    models = demo_config()["models"]
    models["RAND2"] = {**models["RAND"], "seed": 1}  # `models` in a config replaces the demo's
    jobs = dry_run(demo_run.parent, "--configfile", configfile(tmp_path, {"models": models}))
    assert rule_counts(jobs) == {
        "extract_embeddings": 1,
        "probe_fold_4_layers": DEMO_FOLDS,
        "similarity": 1,
        **dict.fromkeys(PROBE_AGGREGATES | SIMILARITY_AGGREGATES, 1),
        "paper_comparison": 1,
        "all": 1,
    }
    assert {job.wildcards["model"] for job in jobs if "model" in job.wildcards} == {"RAND2"}
    # The extraction's runtime follows the manifest's audio: 0.5 audio s/s per thread
    # for a 12-layer model (3x that for the 4-layer demo model) after 10 minutes' loading.
    (extraction,) = [job for job in jobs if job.rule == "extract_embeddings"]
    audio_seconds = total_audio_hours(demo_run / "demo" / "manifest.tsv") * 3600
    planned_seconds = audio_seconds / (0.5 * extraction.threads * 3)
    assert int(extraction.resources["runtime"]) == 10 + int(np.ceil(planned_seconds / 60))


def test_thread_counts_plan_nothing(demo_run, tmp_path):
    threads = {section: {"threads": 1} for section in ("extraction", "acoustic", "probe", "similarity")}
    assert dry_run(demo_run.parent, "--configfile", configfile(tmp_path, threads)) == []


def test_similarity_runtime_follows_the_frames_it_reads(demo_run, tmp_path):
    (job,) = [job for job in dry_run(demo_run.parent, "--forcerun", "similarity") if job.rule == "similarity"]
    manifest = demo_run / "demo" / "manifest.tsv"
    share = demo_config()["extraction"]["frames"]["utterances"] / len(read_tsv(manifest))
    rate = 0.15 * job.threads * (13 / 5) ** 2  # the demo's model: 4 layers, 5 hidden states
    planned_seconds = share * total_audio_hours(manifest) * 3600 / rate
    assert 0 < share < 1 and int(job.resources["runtime"]) == 10 + int(np.ceil(planned_seconds / 60))


def test_feature_group_plans_only_similarity_and_what_reads_it(demo_run, tmp_path):
    groups = yaml.safe_load((REPO / "schemas" / "config.schema.yaml").read_text())
    groups = groups["properties"]["acoustic"]["properties"]["groups"]["default"]
    groups["energy"] = ["Loudness_sma3"]  # groups in a config replace the defaults
    jobs = dry_run(demo_run.parent, "--configfile", configfile(tmp_path, {"acoustic": {"groups": groups}}))
    assert rule_counts(jobs) == {
        "similarity": 1,
        **dict.fromkeys(SIMILARITY_AGGREGATES, 1),
        "paper_comparison": 1,  # reads the similarity jobs' layers.tsv
        "all": 1,
    }


def test_more_demo_speakers_regenerate_the_corpus_and_everything_after(demo_run, tmp_path):
    corpora = demo_config()["corpora"]
    corpora["demo"]["actors"] = 5  # the generated corpus's audio: a new speaker's 60 files
    jobs = dry_run(demo_run.parent, "--configfile", configfile(tmp_path, {"corpora": corpora}))
    assert rule_counts(jobs) == {
        "synthesize_corpus": 1,
        "build_manifest": 1,
        "extract_embeddings": 1,
        "extract_acoustic": 1,
        "probe_fold_4_layers": DEMO_FOLDS,
        "similarity": 1,
        **dict.fromkeys(PROBE_AGGREGATES | SIMILARITY_AGGREGATES, 1),
        "paper_comparison": 1,
        "all": 1,
    }


def test_a_new_demo_seed_regenerates_the_corpus_even_where_another_setting_had_its_value(tmp_path):
    # Snakemake compares a job's params as an unnamed set of values: as three params, seed 1 -> 2
    # beside 2 actors and 1 repetition would leave {1, 2} and the audio of seed 1 in place.
    corpora = demo_config()["corpora"]
    corpora["demo"].update(actors=2, repetitions=1, folds=2, seed=1)
    audio = "results/demo/audio"
    first = snakemake(tmp_path, audio, "--cores", "2", "--configfile", configfile(tmp_path, {"corpora": corpora}))
    assert first.returncode == 0, first.stderr[-3000:]
    corpora["demo"]["seed"] = 2
    jobs = dry_run(tmp_path, audio, "--configfile", configfile(tmp_path, {"corpora": corpora}))
    assert rule_counts(jobs) == {"synthesize_corpus": 1}


def test_added_or_changed_audio_of_a_listed_corpus_rebuilds_its_manifest(tmp_path):
    """A corpus on disk (here a CSV one): every file it lists is an input of its manifest job."""
    audio = tmp_path / "corpus"
    for i in range(4):
        write_tone(audio / f"u{i}.wav", frequency=200.0 + 10 * i)
    listing = audio / "list.csv"
    listing.write_text("path,label,speaker\n" + "".join(f"u{i}.wav,{'ab'[i % 2]},S{i}\n" for i in range(4)))
    corpus = {"format": "csv", "manifest": str(listing), "folds": 2, "seed": 0, "on_bad_audio": "error"}
    # The manifest as build_manifest writes it, newer than the audio (the library, not a
    # workflow run: only the plan is under test).
    outputs = tmp_path / "results" / "mine"
    write_manifest(corpus, outputs / "manifest.tsv", outputs / "excluded.tsv")
    change = configfile(tmp_path, {"corpora": {"mine": {"format": "csv", "manifest": str(listing), "folds": 2}}})
    manifest_target = "results/mine/manifest.tsv"
    assert dry_run(tmp_path, manifest_target, "--configfile", change) == []

    time.sleep(0.01)  # past the manifest's mtime
    write_tone(audio / "u1.wav", frequency=330.0)  # a changed file
    write_tone(audio / "u4.wav")  # an added file, and its line in the listing
    with listing.open("a") as rows:
        rows.write("u4.wav,a,S4\n")
    (job,) = dry_run(tmp_path, manifest_target, "--configfile", change)
    assert job.rule == "build_manifest" and job.reason.startswith("Updated input files: ")
    updated = set(job.reason.removeprefix("Updated input files: ").split(", "))
    assert updated == {str(audio / "u1.wav"), str(audio / "u4.wav"), str(listing)}
