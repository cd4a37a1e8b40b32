"""The demo workflow through a real SLURM cluster, against a local run of it.

Needs the single-node cluster of tests/slurm/cluster.sh (root and apt-get): run
`bash tests/slurm/cluster.sh up`, then the tests with PARAPROBE_SLURM=1 (what .ci/run does).
Without PARAPROBE_SLURM=1 they are skipped, saying why; with it, a cluster that does not
answer is a failure, not a skip.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SLURM_PROFILE = REPO / "profiles" / "slurm"
# Bounds every snakemake run: the SLURM executor can wait forever for a job whose state it
# lost, and then ignores SIGTERM (hence `timeout -k`).
RUN_TIMEOUT_S = 1800
# Output directories whose files hold timings or run-specific text, not results.
RUN_RECORD_DIRS = {"logs", "benchmarks"}


def _why_no_cluster() -> str | None:
    """Why the SLURM tests cannot run here; None when they should."""
    if os.environ.get("PARAPROBE_SLURM") == "1":
        return None
    if os.geteuid() != 0:
        host = "this machine cannot host one (not root)"
    elif shutil.which("apt-get") is None:
        host = "this machine cannot host one (no apt-get)"
    else:
        host = "start one with `bash tests/slurm/cluster.sh up`"
    return f"needs a local SLURM cluster and PARAPROBE_SLURM=1; {host}"


NO_CLUSTER = _why_no_cluster()
pytestmark = [pytest.mark.slurm, pytest.mark.skipif(NO_CLUSTER is not None, reason=str(NO_CLUSTER))]


def snakemake(workdir: Path, outdir: Path, *args: str) -> subprocess.CompletedProcess:
    """The repository's workflow with its demo config, writing into `outdir`."""
    command = [
        "timeout", "-k", "30", str(RUN_TIMEOUT_S),
        sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
        "--configfile", str(REPO / "config.yaml"), "--config", f"outdir={outdir}", *args,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, (
        f"{' '.join(command)} exited {result.returncode}"
        f"{' (timed out)' if result.returncode in (124, 137) else ''}\n"
        f"{result.stdout[-3000:]}{result.stderr[-6000:]}"
    )
    return result


def rules_writing_outputs(workdir: Path, outdir: Path) -> set[str]:
    """Rules of the jobs that wrote the workflow's files, from `snakemake --summary`."""
    summary = snakemake(workdir, outdir, "--summary").stdout.splitlines()
    header = summary[0].split("\t")
    assert header[:3] == ["output_file", "date", "rule"], summary[:3]
    return {line.split("\t")[2] for line in summary[1:] if line.strip()}


def sacct_jobs(run_id: str) -> list[dict[str, str]]:
    """SLURM's accounting records of every job submitted under one Snakemake run ID."""
    output = subprocess.run(
        ["sacct", "-X", "-n", "-P", "--starttime", "now-2days", "--name", run_id,
         "-o", "JobIDRaw,State,Comment"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return [dict(zip(("id", "state", "comment"), line.split("|", 2))) for line in output.splitlines()]


def rule_of_comment(comment: str) -> str:
    """The rule in the plugin's job comment: `rule_<rule>` or `rule_<rule>_wildcards_<values>`."""
    match = re.fullmatch(r"rule_(.+?)(?:_wildcards_.*)?", comment)
    assert match, f"not a job comment of snakemake-executor-plugin-slurm: {comment!r}"
    return match.group(1)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The demo run locally and through SLURM, into the same absolute outdir in turn.

    The manifest records absolute audio paths, so both runs must write to one path for
    their files to be comparable byte for byte: the local run's outdir is moved aside.
    """
    base = tmp_path_factory.mktemp("slurm")
    cluster_state = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True)
    assert cluster_state.returncode == 0 and "idle" in cluster_state.stdout.split(), (
        "PARAPROBE_SLURM=1 but no idle SLURM node answers sinfo "
        f"({cluster_state.stdout.strip() or cluster_state.stderr.strip()}); "
        "run `bash tests/slurm/cluster.sh up` first"
    )
    outdir, local_outdir = base / "results", base / "results-local"

    local_workdir = base / "local"
    snakemake(local_workdir, outdir, "--cores", "2")
    local_rules = rules_writing_outputs(local_workdir, outdir)
    outdir.rename(local_outdir)

    slurm_workdir = base / "slurm"
    # A short first wait before polling sacct: the demo's jobs take seconds, not minutes.
    slurm_run = snakemake(
        slurm_workdir, outdir, "--profile", str(SLURM_PROFILE),
        "--slurm-init-seconds-before-status-checks", "2",
    )  # fmt: skip
    return {
        "log": slurm_run.stdout + slurm_run.stderr,
        "local_rules": local_rules,
        "local_outdir": local_outdir,
        "slurm_outdir": outdir,
    }


def test_every_job_went_through_sbatch_and_completed(runs):
    log = runs["log"]
    run_id = re.search(r"SLURM run ID: (\S+)", log)
    assert run_id, "the slurm executor announced no run ID:\n" + log[-3000:]
    jobs = sacct_jobs(run_id.group(1))

    submitted = set(re.findall(r"submitted with SLURM jobid (\d+)", log))
    assert submitted and {job["id"] for job in jobs} == submitted
    assert [job for job in jobs if job["state"] != "COMPLETED"] == []
    # Every rule that wrote a file ran as a SLURM job, except rules Snakemake runs locally.
    local_rules = set(re.findall(r"^localrule (\w+):", log, flags=re.MULTILINE))
    assert {rule_of_comment(job["comment"]) for job in jobs} == runs["local_rules"] - local_rules


def result_files(outdir: Path) -> set[Path]:
    return {path.relative_to(outdir) for path in outdir.rglob("*") if path.is_file()}


def assert_hdf5_equal(path_a: Path, path_b: Path) -> None:
    """Same groups, datasets (values, dtypes, shapes) and attributes in both files."""

    def contents(handle: h5py.File) -> dict[str, h5py.Dataset | h5py.Group]:
        objects = {"/": handle}

        def collect(name, obj):  # a return value other than None would stop the visit
            objects[name] = obj

        handle.visititems(collect)
        return objects

    with h5py.File(path_a, "r") as file_a, h5py.File(path_b, "r") as file_b:
        objects_a, objects_b = contents(file_a), contents(file_b)
        assert objects_a.keys() == objects_b.keys(), path_a
        for name, obj_a in objects_a.items():
            obj_b = objects_b[name]
            assert dict(obj_a.attrs).keys() == dict(obj_b.attrs).keys(), f"{path_a}:{name}"
            for key, value in obj_a.attrs.items():
                np.testing.assert_array_equal(value, obj_b.attrs[key], err_msg=f"{path_a}:{name}@{key}")
            if isinstance(obj_a, h5py.Dataset):
                assert (obj_a.dtype, obj_a.shape) == (obj_b.dtype, obj_b.shape), f"{path_a}:{name}"
                np.testing.assert_array_equal(obj_a[()], obj_b[()], err_msg=f"{path_a}:{name}")


def test_outputs_equal_a_local_run(runs):
    local_outdir, slurm_outdir = runs["local_outdir"], runs["slurm_outdir"]
    files = result_files(local_outdir)
    assert result_files(slurm_outdir) == files

    compared = 0
    for relative in sorted(files):
        if relative.parts[0] in RUN_RECORD_DIRS:
            continue
        local_file, slurm_file = local_outdir / relative, slurm_outdir / relative
        if relative.suffix in {".tsv", ".json"}:
            assert slurm_file.read_bytes() == local_file.read_bytes(), relative
        elif relative.suffix == ".h5":
            assert_hdf5_equal(local_file, slurm_file)
        else:
            continue
        compared += 1
    assert compared > 0, f"no TSV, JSON or HDF5 result among {sorted(map(str, files))}"
