"""What several test files share: running the workflow, and the one complete demo run."""

import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
JOB_HEADER = re.compile(r"^(?:local)?rule (\w+):$")


def snakemake(workdir: Path, *args: str, snakefile: Path = REPO / "Snakefile") -> subprocess.CompletedProcess:
    """Run the workflow in ``workdir`` (or another ``snakefile``) with snakemake's command-line ``args``."""
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(snakefile), "-d", str(workdir), *args],
        capture_output=True, text=True, timeout=1800,
    )


@dataclass
class PlannedJob:
    """One job of a dry run's plan, as ``snakemake -n`` prints it."""

    rule: str
    threads: int = 1
    wildcards: dict[str, str] = field(default_factory=dict)
    resources: dict[str, str] = field(default_factory=dict)
    reason: str = ""


def planned_jobs(dry_run_output: str) -> list[PlannedJob]:
    """Every job a ``snakemake -n`` output lists, in its order."""
    jobs = []
    for line in dry_run_output.splitlines():
        header = JOB_HEADER.match(line)
        if header:
            jobs.append(PlannedJob(header.group(1)))
        elif jobs and line.startswith("    threads: "):
            jobs[-1].threads = int(line.removeprefix("    threads: "))
        elif jobs and line.startswith("    reason: "):
            jobs[-1].reason = line.removeprefix("    reason: ")
        elif jobs and line.startswith(("    wildcards: ", "    resources: ")):
            name, _, values = line.strip().partition(": ")
            getattr(jobs[-1], name).update(pair.split("=", 1) for pair in values.split(", "))
    return jobs


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """One complete demo run, shared by the tests that read its outputs or plan on top of it.

    Tests leave it as it is: they only plan on top of it (``snakemake -n``).
    """
    workdir = tmp_path_factory.mktemp("demo")
    result = snakemake(workdir, "--cores", "2")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return workdir / "results"
