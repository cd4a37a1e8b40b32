"""Layer extraction: the naive Hugging Face loop against paraprobe's extractor, in one run.

Run: ``python bench/extract.py [--utterances 48] [--device cpu|cuda|auto] [--threads N]``;
on an H100: ``python bench/extract.py --device cuda --utterances 10000 --naive-utterances 200 --threads 16``.

Both read the same synthetic utterances from WAV files (log-normal lengths, median
3.5 s, clipped to 0.6-30 s) with a wav2vec2-base-sized random-init model (12 layers,
768 wide, GroupNorm feature encoder) saved to and loaded from a temporary directory.

* naive: ``AutoFeatureExtractor`` + ``AutoModel`` called on one utterance at a time in
  float32 with ``output_hidden_states``; every hidden state copied to the host and
  pooled there with numpy (frames kept for the frame subset);
* paraprobe: :class:`paraprobe.embeddings.EmbeddingExtractor` writing the HDF5 file with
  the default settings (length-bucketed exact batches, pooling on the device, decoding
  in worker processes; float16 autocast on a GPU) and the default frame subset's share
  of utterances (500 of IEMOCAP's 5,531, about 9 %).

Prints audio seconds per second of each and their ratio (with ``--rounds R``, the two
alternate R times and the median ratio is printed, with the ratio of process CPU time,
which a busy shared machine disturbs less than wall time), the lowest cosine per layer
between paraprobe's pooled vectors and the naive loop's (the exactness bar is 0.999), on
a GPU the lowest cosine per layer of float16 autocast against float32 and the rate of the
forward passes alone (every batch decoded beforehand: what decoding and writing cost),
and the peak resident memory of the process after paraprobe's run (it runs first) and
at the end. Model loading is outside both timings. ``--naive-utterances K`` runs the
naive loop on the first K utterances only (rates are per audio second, so they compare;
on a GPU the corpus must be large enough to time paraprobe, the naive loop need not be).
On a GPU a first paraprobe run on a few utterances warms up CUDA and is not timed.
"""

from __future__ import annotations

import argparse
import functools
import os
import resource
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import soundfile
import torch
from transformers import AutoFeatureExtractor, AutoModel, Wav2Vec2Config, Wav2Vec2FeatureExtractor
from transformers.utils import logging as transformers_logging

from paraprobe.audio import load_audio
from paraprobe.embeddings import (
    BatchInputs,
    EmbeddingExtractor,
    decoded_batches,
    ExtractionSettings,
    frame_subset,
    layer_names,
    manifest_num_samples,
    shard_batches,
)
from paraprobe.io import write_tsv
from paraprobe.manifest import file_sha1, read_manifest
from paraprobe.models import resolve_device

RATE = 16_000
MEDIAN_SECONDS, SIGMA, SHORTEST, LONGEST = 3.5, 0.6, 0.6, 30.0
#: The default frame subset's share of a corpus: 500 of IEMOCAP's 5,531 utterances.
FRAME_SHARE = 500 / 5531


def write_utterance(directory: Path, seed: int, index: int) -> dict:
    """One synthetic utterance (a vibrato tone in noise, log-normal length) as a WAV file; its manifest row."""
    rng = np.random.default_rng([seed, index])
    duration = np.clip(rng.lognormal(np.log(MEDIAN_SECONDS), SIGMA), SHORTEST, LONGEST)
    t = np.arange(int(duration * RATE)) / RATE
    pitch = 100 + 150 * rng.random()
    signal = 0.2 * np.sin(2 * np.pi * pitch * t * (1 + 0.05 * np.sin(2 * np.pi * 3 * t)))
    signal += 0.02 * rng.standard_normal(t.size)
    path = directory / f"utt{index:05d}.wav"
    soundfile.write(path, signal.astype(np.float32), RATE, subtype="PCM_16")
    return {
        "utt_id": f"utt{index:05d}",
        "path": str(path),
        "label": ["ang", "hap", "neu", "sad"][index % 4],
        "speaker": f"s{index % 10}",
        "fold": 1 + index % 5,
        "duration_s": round(load_audio(path).size / RATE, 6),
        "sha1": file_sha1(path),
    }


def write_corpus(directory: Path, count: int, seed: int) -> Path:
    """``count`` synthetic utterances as 16 kHz WAV files and their manifest; returns the manifest path."""
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        rows = list(pool.map(functools.partial(write_utterance, directory, seed), range(count)))
    manifest = directory / "manifest.tsv"
    write_tsv(pd.DataFrame(rows), manifest)
    return manifest


def save_base_sized_model(directory: Path, seed: int) -> None:
    torch.manual_seed(seed)
    AutoModel.from_config(Wav2Vec2Config()).save_pretrained(directory)
    Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(directory)


class Clock:
    """Wall and process CPU seconds (all threads) of a ``with`` block."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self) -> Clock:
        synchronize(self.device)
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc_info) -> None:
        synchronize(self.device)
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def naive_loop(
    extractor, model: torch.nn.Module, manifest: pd.DataFrame, keep_frames: np.ndarray, device: torch.device
) -> tuple[np.ndarray, Clock]:
    """Pooled (L + 1, N, D) and the clock of the one-utterance-at-a-time Hugging Face loop.

    Frames of the subset are kept in memory (converted to float16), as a user of this
    loop would keep them to store them.
    """
    pooled, frames = [], []
    with Clock(device) as clock:
        for path, keep in zip(manifest["path"], keep_frames, strict=True):
            inputs = extractor(load_audio(path), sampling_rate=RATE, return_tensors="pt").to(device)
            with torch.no_grad():
                outputs = model(**inputs, output_hidden_states=True)
            states = [state[0].cpu().numpy() for state in outputs.hidden_states]
            pooled.append(np.stack([state.mean(axis=0) for state in states]))
            if keep:
                frames.append([state.astype(np.float16) for state in states])
    return np.stack(pooled, axis=1), clock


def forward_passes_only(extractor: EmbeddingExtractor, manifest: pd.DataFrame, keep_frames: np.ndarray) -> Clock:
    """Clock of paraprobe's forward passes (pooling and host copies included) over batches decoded beforehand."""
    num_samples = manifest_num_samples(manifest)
    batches = shard_batches(num_samples, extractor.budget_samples, 0, 1)
    dataset = BatchInputs(manifest["path"].to_numpy(), num_samples, extractor.inputs, batches)
    padded = [
        values.pin_memory() if extractor.device.type == "cuda" else values
        for values in decoded_batches(dataset, os.cpu_count(), pin_memory=False)
    ]
    with Clock(extractor.device) as clock:
        for batch, values in zip(batches, padded, strict=True):
            extractor.pooler(values, num_samples[batch].tolist(), keep_frames[batch].tolist())
    return clock


def paraprobe_run(extractor: EmbeddingExtractor, manifest_path: Path, output: Path) -> tuple[np.ndarray, Clock]:
    """Pooled (L + 1, N, D) read back from the file, and the clock of writing it.

    A previous round's file is removed first, as Snakemake removes a job's outputs before it runs.
    """
    output.unlink(missing_ok=True)
    with Clock(extractor.device) as clock:
        extractor.extract(manifest_path, output)
    with h5py.File(output, "r") as handle:
        pooled = np.stack([handle[f"pooled/{name}"][:] for name in layer_names(extractor.info.num_layers)])
    return pooled, clock


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def min_cosine_per_layer(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(L + 1,) lowest cosine over utterances between (L + 1, N, D) arrays."""
    cosine = np.sum(a * b, axis=-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    return cosine.min(axis=1)


def peak_memory_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def format_layers(values: np.ndarray) -> str:
    return " ".join(f"{value:.5f}" for value in values)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utterances", type=int, default=48, help="synthetic utterances (default 48)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    parser.add_argument("--batch-seconds", default="auto", help="paraprobe's extraction.batch_seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=1, help="alternate paraprobe and naive runs; median ratio")
    parser.add_argument("--naive-utterances", type=int, default=None, help="naive loop on the first K utterances only")
    args = parser.parse_args(argv)
    transformers_logging.disable_progress_bar()
    device = resolve_device(args.device)
    torch.set_num_threads(args.threads)
    batch_seconds = args.batch_seconds if args.batch_seconds == "auto" else float(args.batch_seconds)

    with tempfile.TemporaryDirectory() as root:
        root = Path(root)
        manifest_path = write_corpus(root, args.utterances, args.seed)
        manifest = read_manifest(manifest_path)
        audio_seconds = float(manifest["duration_s"].sum())
        frame_utterances = max(1, round(FRAME_SHARE * len(manifest)))
        keep_frames = frame_subset(manifest, frame_utterances, 0)
        model_dir = root / "model"
        save_base_sized_model(model_dir, args.seed)
        print(
            f"{len(manifest)} utterances, {audio_seconds:.0f} s of audio "
            f"(median {manifest['duration_s'].median():.1f} s, "
            f"{manifest['duration_s'].min():.1f}-{manifest['duration_s'].max():.1f} s), frames of {frame_utterances}; "
            f"wav2vec2-base-sized random init (12 layers, 768); {device}, {args.threads} threads",
            flush=True,
        )
        settings = ExtractionSettings(
            batch_seconds=batch_seconds,
            device=str(device),
            frame_utterances=frame_utterances,
            threads=args.threads,
        )
        extractor = EmbeddingExtractor({"id": str(model_dir)}, settings)
        naive_extractor = AutoFeatureExtractor.from_pretrained(model_dir)
        naive_model = AutoModel.from_pretrained(model_dir).to(device).eval()
        naive_count = min(args.naive_utterances or len(manifest), len(manifest))
        naive_manifest = manifest.iloc[:naive_count]
        naive_seconds = float(naive_manifest["duration_s"].sum())
        if device.type == "cuda":
            write_tsv(manifest.iloc[:16], root / "warm_up.tsv")
            extractor.extract(root / "warm_up.tsv", root / "warm_up.h5")
        walls, cpus = [], []
        for round_index in range(args.rounds):
            pooled, clock = paraprobe_run(extractor, manifest_path, root / "paraprobe.h5")
            print(
                f"round {round_index + 1}: paraprobe ({extractor.pooler.precision}, "
                f"batches of {extractor.budget_samples / RATE:.0f} s): {clock.wall:.1f} s, "
                f"{audio_seconds / clock.wall:.2f} audio s/s; peak host memory so far {peak_memory_mb():.0f} MB",
                flush=True,
            )
            naive_pooled, naive_clock = naive_loop(
                naive_extractor, naive_model, naive_manifest, keep_frames[:naive_count], device
            )
            # Ratios of rates (per audio second), as the naive loop may see fewer utterances.
            walls.append((naive_clock.wall / naive_seconds) / (clock.wall / audio_seconds))
            cpus.append((naive_clock.cpu / naive_seconds) / (clock.cpu / audio_seconds))
            print(
                f"round {round_index + 1}: naive loop (float32, {naive_count} utterances): {naive_clock.wall:.1f} s, "
                f"{naive_seconds / naive_clock.wall:.2f} audio s/s; ratio {walls[-1]:.2f}x "
                f"(CPU time ratio {cpus[-1]:.2f}x)",
                flush=True,
            )
        print(
            f"ratio paraprobe / naive, median of {args.rounds} rounds: {np.median(walls):.2f}x wall, "
            f"{np.median(cpus):.2f}x CPU time"
        )
        naive_cosines = min_cosine_per_layer(pooled[:, :naive_count], naive_pooled)
        print(f"lowest cosine to the naive loop per layer: {format_layers(naive_cosines)}")
        if device.type == "cuda":
            forward_clock = forward_passes_only(extractor, manifest, keep_frames)
            print(
                "paraprobe forward passes alone (audio decoded beforehand, nothing written): "
                f"{audio_seconds / forward_clock.wall:.1f} audio s/s",
                flush=True,
            )
            full = EmbeddingExtractor(
                {"id": str(model_dir)}, ExtractionSettings(**{**settings.__dict__, "half_precision": False})
            )
            full_pooled, full_clock = paraprobe_run(full, manifest_path, root / "float32.h5")
            print(f"paraprobe float32: {audio_seconds / full_clock.wall:.1f} audio s/s")
            print(
                "float16 autocast vs float32, lowest cosine per layer: "
                f"{format_layers(min_cosine_per_layer(pooled, full_pooled))}"
            )
        print(f"peak host memory (whole run): {peak_memory_mb():.0f} MB")


if __name__ == "__main__":
    sys.exit(main())
