"""Benchmark: the similarity stage's one pass over frames, against a bare Gram-matrix product.

The pass (:meth:`paraprobe.similarity.PassStatistics.add_chunk`) accumulates, chunk by
chunk, the statistics of 13 hidden states x 768 dims + 25 acoustic columns (9,984 columns):
the joint Gram matrix of every column, plus the small per-layer ones of the hierarchy
windows and the per-emotion analysis. At heart it is the Gram matrix, so its lower bound
is a plain BLAS ``x.T @ x`` of the same chunk shape, timed in the same process: on every
k-th chunk, just before the pass handles that chunk, so both see the same machine state.
The script prints:

- the pass's time, the bound (chunks x the bare product's median time) and their ratio,
  and the ratio on the chunks timed back to back (goal: <= 1.5), for 100k and 1M
  synthetic frames;
- peak resident memory of each size, each in its own process (goal: equal: the
  statistics take O(columns²), never O(frames));
- the time to derive every table from the statistics (independent of the frame count).

Usage: ``python bench/cca.py [--frames 100000 1000000] [--threads 2] [--device cpu]``
(about 2.5 minutes per 100k frames on 2 otherwise idle CPU cores, plus a minute to derive).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

LAYERS, DIMS, FEATURES = 13, 768, 25
LABELS = ("ang", "hap", "neu", "sad")
UTTERANCE_FRAMES = 250  # 5 s at 50 frames/s


def feature_groups() -> dict[str, list[str]]:
    """25 synthetic acoustic columns: 12 eGeMAPS-like ones in the paper's four groups, 13 MFCC-like ones."""
    names = [f"egemaps_{i:02d}" for i in range(FEATURES - 13)]
    mfcc = [f"mfcc_{i:02d}" for i in range(13)]
    return {
        "energy": names[0:2],
        "frequency": names[2:7],
        "spectral": names[7:10],
        "voice_quality": names[10:12],
        "egemaps_all": names,
        "mfcc": mfcc,
    }


def bare_product_seconds(chunk: np.ndarray, device: str) -> float:
    """Seconds of one plain ``chunk.T @ chunk`` (float32 BLAS on CPU, cuBLAS on GPU)."""
    if device == "cuda":
        import torch

        rows = torch.from_numpy(chunk).to("cuda")
        torch.cuda.synchronize()
        start = time.perf_counter()
        rows.T @ rows
        torch.cuda.synchronize()
        return time.perf_counter() - start
    start = time.perf_counter()
    chunk.T @ chunk
    return time.perf_counter() - start


def run_one_size(frames: int, chunk_frames: int, device: str, derive: bool, baseline_every: int) -> dict:
    """The pass over ``frames`` synthetic frames, in this process; returns the measurements."""
    from paraprobe.similarity import ColumnLayout, PassStatistics, SimilaritySettings

    settings = SimilaritySettings(device=device, chunk_frames=chunk_frames)
    layout = ColumnLayout.build(LAYERS, DIMS, feature_groups(), "egemaps_all")
    assert layout.num_columns == LAYERS * DIMS + FEATURES
    statistics = PassStatistics(layout, settings)
    rng = np.random.default_rng(0)
    # Two distinct chunks reused in turn: generating 1M x 9,984 random numbers would cost more than
    # it measures, and the arithmetic does not depend on the values.
    pool = [
        rng.standard_normal((chunk_frames, layout.num_columns), dtype=np.float32)
        + rng.standard_normal(layout.num_columns, dtype=np.float32)
        for _ in range(2)
    ]
    work = np.empty_like(pool[0])
    pass_seconds, bound_seconds, bare_samples, paired_pass = 0.0, 0.0, [], []
    sizes = [chunk_frames] * (frames // chunk_frames) + ([frames % chunk_frames] if frames % chunk_frames else [])
    for index, size in enumerate(sizes):
        chunk = work[:size]
        np.copyto(chunk, pool[index % 2][:size])  # the pass uses its chunk as scratch space
        offsets = np.append(np.arange(0, size, UTTERANCE_FRAMES), size)
        utterances = len(offsets) - 1
        labels = [LABELS[(index + u) % len(LABELS)] for u in range(utterances)]
        scored = np.zeros(utterances, dtype=bool)
        # Chunk 0 also allocates every accumulator (the pass's one-time cost, in its total), so
        # the back-to-back pairs start at chunk 1.
        paired = size == chunk_frames and index >= 1 and (index % baseline_every == 1 or len(bare_samples) < 3)
        if paired:
            bare_samples.append(bare_product_seconds(chunk, statistics.device))
        elif size != chunk_frames or index == 0:
            bound_seconds += bare_product_seconds(chunk, statistics.device)
        start = time.perf_counter()
        statistics.add_chunk(chunk, offsets, labels, scored)
        if statistics.device == "cuda":
            import torch

            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        pass_seconds += seconds
        if paired:
            paired_pass.append(seconds)
    bound_seconds += float(np.median(bare_samples)) * sum(size == chunk_frames for size in sizes[1:])
    result = {
        "frames": frames,
        "columns": layout.num_columns,
        "chunks": len(sizes),
        "device": statistics.device,
        "pass_s": pass_seconds,
        "bound_s": bound_seconds,
        "ratio": pass_seconds / bound_seconds,
        # The same chunks timed back to back, bare product then pass: robust to the machine's
        # load changing during a long run.
        "paired_ratio": sum(paired_pass) / sum(bare_samples),
        "paired_chunks": len(bare_samples),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if derive:
        start = time.perf_counter()
        tables = statistics.tables()
        result["derive_s"] = time.perf_counter() - start
        result["derived_values"] = sum(len(table) for table in tables.values())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--chunk-frames", type=int, default=8192)
    parser.add_argument("--threads", type=int, default=2, help="BLAS threads (the goal is stated for 2 cores)")
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--baseline-every", type=int, default=8, help="time the bare product every k-th chunk")
    parser.add_argument("--one-size", type=int, help=argparse.SUPPRESS)  # internal: child process
    parser.add_argument("--derive", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if min(args.frames + ([args.one_size] if args.one_size else [])) < 2 * args.chunk_frames:
        parser.error("every --frames must hold at least two chunks (--chunk-frames), so that one is timed warm")
    if args.one_size is not None:
        result = run_one_size(args.one_size, args.chunk_frames, args.device, args.derive, args.baseline_every)
        print(json.dumps(result))
        return

    environment = {**os.environ, **{name: str(args.threads) for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}}
    print(
        f"pass over {LAYERS} x {DIMS} + {FEATURES} columns, chunks of {args.chunk_frames} frames, "
        f"{args.threads} BLAS threads, device {args.device}",
        flush=True,
    )
    results = []
    for position, frames in enumerate(args.frames):
        command = [
            sys.executable,
            __file__,
            "--one-size",
            str(frames),
            "--chunk-frames",
            str(args.chunk_frames),
            "--device",
            args.device,
            "--baseline-every",
            str(args.baseline_every),
        ]
        if position == 0:
            command.append("--derive")
        child = subprocess.run(command, env=environment, capture_output=True, text=True)
        if child.returncode != 0:
            sys.exit(f"benchmark of {frames} frames failed:\n{child.stderr}")
        result = json.loads(child.stdout.strip().splitlines()[-1])
        results.append(result)
        print(
            f"{frames:>9,} frames: pass {result['pass_s']:8.1f} s, bare x.T @ x bound {result['bound_s']:8.1f} s, "
            f"ratio {result['ratio']:.3f}; back to back on {result['paired_chunks']} chunks "
            f"{result['paired_ratio']:.3f} (goal <= 1.5); peak RSS {result['peak_rss_mib']:,.0f} MiB "
            f"[{result['device']}]",
            flush=True,
        )
        if "derive_s" in result:
            print(f"           deriving all {result['derived_values']} table values: {result['derive_s']:.1f} s")
    peaks = [result["peak_rss_mib"] for result in results]
    print(f"peak memory ratio, largest / smallest size: {max(peaks) / min(peaks):.3f} (goal: 1)")


if __name__ == "__main__":
    main()
