"""Benchmark: the batched probe trainers against training the same probes one at a time.

RAVDESS-sized synthetic embeddings (1,440 utterances, 24 speakers in 4 folds, 8 classes,
13 hidden states of 768 dims, so 17 probe inputs), the paper's probe and settings. For every
fold all trainers start from the same initial weights and see the same minibatches; the
script prints each trainer's wall-clock and CPU time, the ratios, and the largest difference
in test UA and in epochs trained against each batched trainer. The batched trainers:

``compiled``
    (CPU only; the workflow's trainer there) fold by fold, 17 probes at a time, as the
    workflow's fold jobs train (each job's seeds are its runs): each epoch of every probe still
    training is one compiled call, the probes in parallel. numba compiles it on first use (or
    loads it from its cache); that is done, and timed, before the rest.
``batched``
    the same fold by fold in one PyTorch computation with a leading probe axis (the workflow's
    trainer on a GPU);
``together``
    the device's trainer (compiled on the CPU) with the 4 folds as runs of one computation
    (68 probes in the first epoch).

The sequential trainers, fold by fold:

``sequential``
    the batched trainer's own code with a probe axis of length one, probe after probe: what
    training the probes together saves. Same rounding per probe, so the same results.
``reference``
    each probe as ``torch.nn`` modules with autograd and torch's default AdamW: the loop one
    would write without batching. In float32 the trainers' rounding differs, and over hundreds
    of epochs that can move an early stop by a few epochs; ``--dtype float64`` shows they agree.

    PYTHONPATH=. python bench/probe.py [--threads 1] [--folds 4] [--dtype float32] [--device cpu]

The probe rule runs ``probe.threads`` threads per fold job (default 1).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np
import torch

from paraprobe.probe.crossval import configure_torch
from paraprobe.probe.inputs import build_probe_inputs
from paraprobe.probe.metrics import classification_scores, confusion_matrix
from paraprobe.probe.names import probe_input_names
from paraprobe.probe.settings import ProbeSettings
from paraprobe.probe.splits import fold_split
from paraprobe.probe.training import TRAINERS, train_probes

NUM_UTTERANCES, NUM_SPEAKERS, NUM_FOLDS, NUM_CLASSES = 1440, 24, 4, 8
NUM_LAYERS, DIM = 12, 768


def synthetic_embeddings(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Labels (N,), speakers (N,), folds (N,) and layers (13, N, 768) float32.

    Every layer is a class mean plus a speaker offset plus unit noise; the class signal peaks at
    layer 5 and fades towards both ends, so the probes reach different UAs and stop at
    different epochs, as on real embeddings.
    """
    rng = np.random.default_rng(seed)
    speakers = np.repeat(np.arange(NUM_SPEAKERS), NUM_UTTERANCES // NUM_SPEAKERS)
    folds = 1 + rng.permutation(np.repeat(np.arange(NUM_FOLDS), NUM_SPEAKERS // NUM_FOLDS))[speakers]
    labels = rng.integers(0, NUM_CLASSES, NUM_UTTERANCES)
    layers = np.empty((NUM_LAYERS + 1, NUM_UTTERANCES, DIM), dtype=np.float32)
    for index in range(NUM_LAYERS + 1):
        strength = 0.12 * np.exp(-((index - 5) ** 2) / 18)
        class_means = rng.normal(scale=strength, size=(NUM_CLASSES, DIM))
        speaker_offsets = rng.normal(scale=0.3, size=(NUM_SPEAKERS, DIM))
        noise = rng.normal(size=(NUM_UTTERANCES, DIM))
        layers[index] = class_means[labels] + speaker_offsets[speakers] + noise
    return labels, speakers.astype(str), folds, layers


def test_ua(results, labels: np.ndarray, test_rows: np.ndarray) -> np.ndarray:
    """(P,) test UA of each probe."""
    return np.array(
        [
            classification_scores(confusion_matrix(labels[test_rows], predicted, NUM_CLASSES))["ua"]
            for predicted in results.predictions
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (as probe.device)")
    parser.add_argument("--max-epochs", type=int, default=ProbeSettings.max_epochs)
    parser.add_argument("--patience", type=int, default=ProbeSettings.patience)
    parser.add_argument("--folds", type=int, default=NUM_FOLDS, help="how many of the 4 folds to run")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    args = parser.parse_args()
    device = configure_torch(args.device, args.threads)  # as the probe rule's jobs run
    settings = ProbeSettings(learning_rate=2e-4, patience=args.patience, max_epochs=args.max_epochs)
    labels, speakers, folds, layers = synthetic_embeddings()
    names = probe_input_names(NUM_LAYERS)
    print(
        f"{len(names)} inputs x {DIM} dims, {NUM_UTTERANCES} utterances, {NUM_CLASSES} classes, "
        f"{NUM_SPEAKERS} speakers, {args.folds} of {NUM_FOLDS} folds; {device}, {args.threads} threads; {args.dtype}; "
        f"{settings}"
    )
    splits = [fold_split(speakers, folds, k, validation_share=0.15, seed=0) for k in range(1, args.folds + 1)]
    seeds = [0] * len(splits)
    inputs = build_probe_inputs(
        layers, [split.train for split in splits], names, dtype=getattr(torch, args.dtype), device=device
    )
    # "together": the device's default trainer with the folds as runs of one computation; the
    # others fold by fold, as the workflow's fold jobs run. Fold by fold, the trainers alternate,
    # and the folds-together run is timed before and after them, so that a machine whose speed
    # drifts (shared hosts) weighs on every trainer alike.
    default = "compiled" if device.type == "cpu" else "batched"
    fold_trainers = [name for name in TRAINERS if name != "compiled" or device.type == "cpu"]
    trainers = ["together", *fold_trainers]
    wall, cpu = dict.fromkeys(trainers, 0.0), dict.fromkeys(trainers, 0.0)
    results = {name: [] for name in fold_trainers}
    start = time.perf_counter()  # numba compiles (or loads from its cache) on first use: not timed
    train_probes(inputs.run(0), labels, splits[:1], [0], NUM_CLASSES, replace(settings, max_epochs=1), default)
    print(f"{default} trainer ready in {time.perf_counter() - start:.1f} s (first use compiles)")

    def timed(name: str, run_inputs, run_splits, trainer: str, share: float = 1.0):
        wall_start, cpu_start = time.perf_counter(), time.process_time()
        runs = train_probes(run_inputs, labels, run_splits, [0] * len(run_splits), NUM_CLASSES, settings, trainer)
        wall[name] += share * (time.perf_counter() - wall_start)
        cpu[name] += share * (time.process_time() - cpu_start)
        return runs

    results["together"] = timed("together", inputs, splits, default, share=0.5)
    for fold, split in enumerate(splits):
        for name in fold_trainers:
            results[name] += timed(name, inputs.run(fold), [split], name)
        print(
            f"fold {fold + 1}: " + ", ".join(f"{name} {wall[name]:.1f} s" for name in fold_trainers) + " so far",
            flush=True,
        )
    again = timed("together", inputs, splits, default, share=0.5)
    assert all((a.predictions == b.predictions).all() for a, b in zip(again, results["together"])), "not deterministic"
    uas = {name: [test_ua(run, labels, split.test) for run, split in zip(results[name], splits)] for name in trainers}
    epochs = {name: [run.epochs for run in results[name]] for name in trainers}
    for fold, (fold_uas, fold_epochs) in enumerate(zip(uas[default], epochs[default]), start=1):
        print(
            f"fold {fold}: epochs per probe {fold_epochs.tolist()}; {default} UA {fold_uas.min():.3f}..{fold_uas.max():.3f}"
        )
    total_epochs = sum(run.sum() for run in epochs[default])
    longest = {"together": max(run.max() for run in epochs[default])}
    longest[default] = sum(run.max() for run in epochs[default])
    # Batched, every epoch of the longest-training probe is a pass, however few probes are left:
    # the ratio bounds what batching can save of costs per pass (Python, kernel launches), while
    # the arithmetic per probe-epoch is the same either way.
    for name, passes in longest.items():
        print(
            f"{name}: {total_epochs} probe-epochs in {passes} batched epochs "
            f"(at most {total_epochs / passes:.1f} probes per pass on average)"
        )
    print(f"{'trainer':<12s} {'wall s':>8s} {'CPU s':>8s}")
    for name in trainers:
        print(f"{name:<12s} {wall[name]:8.1f} {cpu[name]:8.1f}")
    for fast in dict.fromkeys(("together", default, "batched")):
        for slow in ("sequential", "reference"):
            ua_difference = max(np.abs(a - b).max() for a, b in zip(uas[slow], uas[fast]))
            epoch_difference = max(np.abs(a - b).max() for a, b in zip(epochs[slow], epochs[fast]))
            print(
                f"speed-up of {fast} over {slow}: {wall[slow] / wall[fast]:.1f}x wall, "
                f"{cpu[slow] / cpu[fast]:.1f}x CPU; largest |UA difference| {ua_difference:.2e}, "
                f"largest difference in epochs trained {epoch_difference}"
            )


if __name__ == "__main__":
    main()
