"""Benchmark: the batched probe trainer against training the same probes one at a time.

RAVDESS-sized synthetic embeddings (1,440 utterances, 24 speakers in 4 folds, 8 classes,
13 hidden states of 768 dims, so 17 probe inputs), the paper's probe and settings. For every
fold all trainers start from the same initial weights and see the same minibatches; the
script prints each trainer's wall-clock and CPU time, the ratios, and the largest difference
in test UA and in epochs trained against the batched trainer. The sequential trainers:

``sequential``
    the batched trainer's own code with a probe axis of length one, probe after probe: what
    training the probes together saves. Same rounding per probe, so the same results.
``reference``
    each probe as ``torch.nn`` modules with autograd and torch's default AdamW: the loop one
    would write without batching. In float32 its rounding differs, and over hundreds of epochs
    that can move an early stop by a few epochs; ``--dtype float64`` shows the trainers agree.

    PYTHONPATH=. python bench/probe.py [--threads 1] [--folds 4] [--dtype float32] [--device cpu]

The probe rule runs one thread per fold job (``probe.threads``), so compare at ``--threads 1``.
"""

from __future__ import annotations

import argparse
import time

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
    trainers = list(TRAINERS)  # "batched" first
    wall, cpu = dict.fromkeys(trainers, 0.0), dict.fromkeys(trainers, 0.0)
    ua_difference, epoch_difference = dict.fromkeys(trainers, 0.0), dict.fromkeys(trainers, 0)
    total_epochs, longest_epochs = 0, 0
    for test_fold in range(1, args.folds + 1):
        split = fold_split(speakers, folds, test_fold, validation_share=0.15, seed=0)
        inputs = build_probe_inputs(layers, split.train, names, dtype=getattr(torch, args.dtype), device=device)
        uas, epochs = {}, {}
        for name in trainers:
            wall_start, cpu_start = time.perf_counter(), time.process_time()
            results = train_probes(inputs, labels, split, NUM_CLASSES, settings, 0, trainer=name)
            wall[name] += time.perf_counter() - wall_start
            cpu[name] += time.process_time() - cpu_start
            uas[name], epochs[name] = test_ua(results, labels, split.test), results.epochs
            ua_difference[name] = max(ua_difference[name], np.abs(uas[name] - uas["batched"]).max())
            epoch_difference[name] = max(epoch_difference[name], np.abs(epochs[name] - epochs["batched"]).max())
        total_epochs += epochs["batched"].sum()
        longest_epochs += epochs["batched"].max()
        print(
            f"fold {test_fold}: epochs per probe {epochs['batched'].tolist()}; batched UA "
            f"{uas['batched'].min():.3f}..{uas['batched'].max():.3f}; "
            + ", ".join(f"{name} {wall[name]:.1f} s so far" for name in trainers)
        )
    # Batched, every epoch of a fold's longest-training probe is a pass, however few probes are
    # left: the ratio bounds what batching can save of costs per pass (Python, kernel launches),
    # while the arithmetic per probe-epoch is the same either way.
    print(
        f"probe-epochs trained: {total_epochs}, in {longest_epochs} batched epochs "
        f"(at most {total_epochs / longest_epochs:.1f} probes per pass on average)"
    )
    print(f"{'trainer':<20s} {'wall s':>8s} {'CPU s':>8s}")
    for name in trainers:
        print(f"{name:<20s} {wall[name]:8.1f} {cpu[name]:8.1f}")
    for name in trainers[1:]:
        print(
            f"speed-up of batched over {name}: {wall[name] / wall['batched']:.1f}x wall, "
            f"{cpu[name] / cpu['batched']:.1f}x CPU; largest |UA difference| {ua_difference[name]:.2e}, "
            f"largest difference in epochs trained {epoch_difference[name]}"
        )


if __name__ == "__main__":
    main()
