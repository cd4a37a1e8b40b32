"""Benchmark: how long ``snakemake -n`` of configs/paper.yaml takes to plan the full study.

Writes IEMOCAP (5,531 utterances) and RAVDESS (1,440) trees of the real sizes into a temporary
folder, with empty files where the WAVs go (planning reads names only), using the tests' own
helper (tests/corpus_trees.py, as tests/test_paper_plan.py does). Then runs, alternately,
``snakemake -n`` of the paper config against them (offline, as on a cluster node) and of an
empty workflow (one rule, no imports): the empty one is Snakemake's own start-up on this
machine (the interpreter, Snakemake, its plugins), which the workflow cannot change. Where
SLURM's client tools are installed but no controller answers, that start-up includes the
SLURM executor plugin's ``scontrol show config`` probe, which waits about 9 s.

Prints the best of ``--repeats`` runs of each, the workflow's own planning time (the
difference), the job count per rule, and both times against the 5 s goal.

    PYTHONPATH=. python bench/plan.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from conftest import REPO, planned_jobs, snakemake  # noqa: E402
from corpus_trees import write_paper_trees  # noqa: E402

GOAL_SECONDS = 5.0
EMPTY_WORKFLOW = 'rule all:\n    output:\n        "done",\n    shell:\n        "touch {output}"\n'


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(*args, **kwargs):
    """(wall seconds, CPU seconds, completed process) of one :func:`conftest.snakemake` call.

    The CPU time (user + system) hardly moves when other processes share the cores; the
    wall time does. Raises if the call failed.
    """
    started, cpu_started = time.perf_counter(), children_cpu_seconds()
    result = snakemake(*args, **kwargs)
    seconds, cpu_seconds = time.perf_counter() - started, children_cpu_seconds() - cpu_started
    if result.returncode != 0:
        raise RuntimeError(f"snakemake {' '.join(args[1:])} failed:\n{result.stderr[-3000:]}")
    return seconds, cpu_seconds, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    arguments = parser.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"  # paper.yaml gives the layer counts: no checkpoint is looked up

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        _, _, roots = write_paper_trees(folder / "corpora")
        empty = folder / "empty"
        empty.mkdir()
        (empty / "Snakefile").write_text(EMPTY_WORKFLOW)
        paper_runs, empty_runs = [], []
        for _ in range(arguments.repeats):
            *times, result = timed(folder / "paper", "-n", "--configfile", str(REPO / "configs" / "paper.yaml"),
                                   str(roots))
            paper_runs.append(times)
            empty_runs.append(timed(empty, "-n", snakefile=empty / "Snakefile")[:2])

    jobs = Counter(job.rule for job in planned_jobs(result.stdout + result.stderr))
    (paper, paper_cpu), (start_up, start_up_cpu) = min(paper_runs), min(empty_runs)
    planning, planning_cpu = paper - start_up, paper_cpu - start_up_cpu
    print(f"best of {arguments.repeats} runs, wall (CPU user + system) seconds")
    print(f"  snakemake -n of configs/paper.yaml:         {paper:6.2f} ({paper_cpu:.2f})")
    print(f"  Snakemake's start-up (an empty workflow):   {start_up:6.2f} ({start_up_cpu:.2f})")
    print(f"  the workflow's own parsing and planning:    {planning:6.2f} ({planning_cpu:.2f})")
    print(f"{sum(jobs.values())} jobs:")
    for rule, count in sorted(jobs.items(), key=lambda item: (-item[1], item[0])):
        print(f"  {rule:<24} {count:>3}")
    print(f"goal {GOAL_SECONDS:.0f} s / whole snakemake -n:      {GOAL_SECONDS / paper:.2f} (1 or more meets the goal)")
    print(f"goal {GOAL_SECONDS:.0f} s / the workflow's planning: {GOAL_SECONDS / planning:.2f}")


if __name__ == "__main__":
    main()
