"""Speed of the acoustic stage: audio seconds per second, and what it adds to openSMILE.

Writes a synthetic corpus (voiced harmonic vowels in noise, 16 kHz WAV) and a manifest
to a temporary folder, then, in this one process:

1. baseline: openSMILE's eGeMAPSv02 LLDs of every file, read with the project's loader
   (what any use of openSMILE costs);
2. the stage in one process (``extract_acoustic(threads=1)``), with the time spent
   inside openSMILE and in the MFCCs recorded, so the rest is the project's own work
   (loading, pooling onto the model grid, checks, HDF5 writing);
3. the stage on ``--threads`` worker processes: audio seconds per wall-clock second.

Steps 1 and 2 alternate ``--repeats`` times and the fastest round of each counts, so
that other load on the machine falls on neither side alone; CPU times are of this
process only (steps 1 and 2). Run: ``python bench/acoustic.py [--utterances 40]``.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile
from threadpoolctl import threadpool_limits

import paraprobe.acoustic as acoustic
from paraprobe.acoustic_columns import FEATURE_SETS
from paraprobe.audio import TARGET_SAMPLE_RATE, load_audio
from paraprobe.io import write_tsv
from paraprobe.manifest import read_manifest


def synthetic_corpus(folder: Path, utterances: int, seed: int = 0) -> tuple[Path, float]:
    """Write ``utterances`` WAVs of 2-8 s and their manifest; return it and the total seconds."""
    rng = np.random.default_rng(seed)
    rows = []
    for index in range(utterances):
        seconds = rng.uniform(2.0, 8.0)
        time_s = np.arange(int(seconds * TARGET_SAMPLE_RATE)) / TARGET_SAMPLE_RATE
        # A vowel whose F0 glides around a speaker's mean, with syllable-rate amplitude
        # modulation and background noise: voiced and unvoiced stretches for openSMILE.
        f0 = rng.uniform(90, 250) * (1 + 0.1 * np.sin(2 * np.pi * 0.5 * time_s))
        phase = 2 * np.pi * np.cumsum(f0) / TARGET_SAMPLE_RATE
        voice = sum(np.sin(harmonic * phase) / harmonic for harmonic in range(1, 30))
        envelope = np.clip(np.sin(2 * np.pi * 2.5 * time_s), 0, None)
        samples = 0.1 * voice * envelope + 0.005 * rng.standard_normal(time_s.size)
        path = folder / f"utt{index:04d}.wav"
        soundfile.write(path, samples.astype(np.float32), TARGET_SAMPLE_RATE, subtype="PCM_16")
        rows.append({"utt_id": path.stem, "path": str(path), "duration_s": seconds})
    manifest = folder / "manifest.tsv"
    write_tsv(pd.DataFrame(rows), manifest)
    return manifest, float(sum(row["duration_s"] for row in rows))


class CpuStopwatch:
    """Accumulated CPU seconds of the calls of one function."""

    def __init__(self, function):
        self.function = function
        self.cpu = 0.0

    def __call__(self, *args, **kwargs):
        cpu = time.process_time()
        try:
            return self.function(*args, **kwargs)
        finally:
            self.cpu += time.process_time() - cpu


def timed(function) -> tuple[float, float]:
    """(wall-clock, CPU) seconds of one call of ``function``."""
    wall, cpu = time.perf_counter(), time.process_time()
    function()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utterances", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    arguments = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        manifest, audio_seconds = synthetic_corpus(folder, arguments.utterances)
        paths = list(read_manifest(manifest)["path"])
        outputs = {name: folder / f"{name}.h5" for name in FEATURE_SETS}
        extractor = acoustic._egemaps_extractor()  # built (configuration parsed) before timing
        print(f"{len(paths)} utterances, {audio_seconds:.0f} s of audio")

        def opensmile_only():
            with threadpool_limits(1):  # as in the stage's workers
                for path in paths:
                    extractor.process_signal(load_audio(path), TARGET_SAMPLE_RATE)

        def stage_in_one_process():
            acoustic.extract_acoustic(manifest, outputs, threads=1)

        baseline, stage, parts = [], [], []
        for _ in range(arguments.repeats):
            baseline.append(timed(opensmile_only))
            inside_opensmile = CpuStopwatch(extractor.process_signal)
            inside_mfcc = CpuStopwatch(acoustic.mfcc)
            extractor.process_signal, acoustic.mfcc = inside_opensmile, inside_mfcc
            try:
                stage.append(timed(stage_in_one_process))
            finally:
                del extractor.process_signal  # back to the class's method
                acoustic.mfcc = inside_mfcc.function
            parts.append((inside_opensmile.cpu, inside_mfcc.cpu, stage[-1][1]))
        parallel = []
        for _ in range(arguments.repeats):
            children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
            wall, _ = timed(lambda: acoustic.extract_acoustic(manifest, outputs, threads=arguments.threads))
            children = resource.getrusage(resource.RUSAGE_CHILDREN)
            workers_cpu = sum(
                getattr(children, field) - getattr(children_before, field) for field in ("ru_utime", "ru_stime")
            )
            parallel.append((wall, workers_cpu / wall))

    baseline_wall, baseline_cpu = min(baseline)
    stage_wall, stage_cpu = min(stage)
    opensmile_cpu, mfcc_cpu, total_cpu = min(parts, key=lambda part: part[2])
    own_cpu = total_cpu - opensmile_cpu - mfcc_cpu
    print(
        f"openSMILE alone (load + eGeMAPS), 1 process: {audio_seconds / baseline_wall:7.1f} audio s/s wall, "
        f"{audio_seconds / baseline_cpu:7.1f} audio s per CPU s"
    )
    print(
        f"stage (eGeMAPS + MFCC + grid + HDF5), 1 process: {audio_seconds / stage_wall:7.1f} audio s/s wall, "
        f"{audio_seconds / stage_cpu:7.1f} audio s per CPU s"
    )
    parallel_wall, cores_obtained = min(parallel)
    print(
        f"stage, {arguments.threads} worker processes: {audio_seconds / parallel_wall:7.1f} audio s/s wall "
        f"({baseline_wall / parallel_wall:.2f}x the 1-process openSMILE baseline; the workers got "
        f"{cores_obtained:.2f} cores of CPU time: below {arguments.threads}, the machine was busy)"
    )
    print(
        f"CPU time of the 1-process stage: openSMILE {opensmile_cpu:.2f} s, MFCC {mfcc_cpu:.2f} s, "
        f"the project's own work around them {own_cpu:.2f} s"
    )
    print(
        f"stage / openSMILE-alone CPU time: {stage_cpu / baseline_cpu:.3f} "
        f"(project adds {100 * (stage_cpu / baseline_cpu - 1):.1f} %, MFCCs included; goal <= 10 %)"
    )
    print(
        f"project's own work / time inside openSMILE: {100 * own_cpu / opensmile_cpu:.1f} % (MFCCs excluded), "
        f"{100 * (own_cpu + mfcc_cpu) / opensmile_cpu:.1f} % (included)"
    )


if __name__ == "__main__":
    main()
