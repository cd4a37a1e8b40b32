"""Run the workflow itself on the embedded demo, as a user would."""

import subprocess
import sys
from pathlib import Path

import pytest

from paraprobe.io import read_tsv

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.workflow


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir), *args],
        capture_output=True, text=True, timeout=1800,
    )


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """One complete demo run, shared by the tests that read its outputs."""
    workdir = tmp_path_factory.mktemp("demo")
    result = snakemake(workdir, "--cores", "2")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return workdir / "results"


def test_demo_writes_the_manifest(demo_run):
    manifest = read_tsv(demo_run / "demo" / "manifest.tsv")
    assert len(manifest) == 4 * 60
    assert set(manifest["fold"]) == {1, 2, 3, 4}
    assert manifest["utt_id"].is_unique and list(manifest["utt_id"]) == sorted(manifest["utt_id"])
    assert (manifest["duration_s"] > 0.5).all()
    assert read_tsv(demo_run / "demo" / "excluded.tsv").empty
