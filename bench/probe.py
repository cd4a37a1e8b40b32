"""Benchmark: the batched probe trainer against training the same probes one at a time.

RAVDESS-sized synthetic embeddings (1,440 utterances, 24 speakers in 4 folds, 8 classes,
13 hidden states of 768 dims, so 17 probe inputs), the paper's probe and settings. For every
fold both trainers start from the same initial weights and see the same minibatches; the
script prints each trainer's time, the ratio, and the largest difference in test UA and in
epochs trained between them.

    PYTHONPATH=. python bench/probe.py [--threads 1] [--folds 4] [--dtype float32] [--fused-reference]

``--fused-reference`` also times the sequential trainer with PyTorch's fused AdamW kernel (the
batched trainer always uses it), which separates the optimizer's share of the speed-up.
In float32 the two trainers round differently (batched against single matrix products, fused
against multi-tensor AdamW), and over hundreds of epochs that can move an early stop by a few
epochs; ``--dtype float64`` shows that they then agree exactly.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from paraprobe.probe.inputs import build_probe_inputs
from paraprobe.probe.metrics import classification_scores, confusion_matrix
from paraprobe.probe.names import probe_input_names
from paraprobe.probe.settings import ProbeSettings
from paraprobe.probe.splits import fold_split
from paraprobe.probe.training import train_probes_batched, train_probes_sequential

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
    parser.add_argument("--max-epochs", type=int, default=ProbeSettings.max_epochs)
    parser.add_argument("--patience", type=int, default=ProbeSettings.patience)
    parser.add_argument("--folds", type=int, default=NUM_FOLDS, help="how many of the 4 folds to run")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--fused-reference", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    settings = ProbeSettings(learning_rate=2e-4, patience=args.patience, max_epochs=args.max_epochs)
    labels, speakers, folds, layers = synthetic_embeddings()
    names = probe_input_names(NUM_LAYERS)
    print(
        f"{len(names)} inputs x {DIM} dims, {NUM_UTTERANCES} utterances, {NUM_CLASSES} classes, "
        f"{NUM_SPEAKERS} speakers, {args.folds} of {NUM_FOLDS} folds; {args.threads} threads; {args.dtype}; {settings}"
    )
    trainers = {"batched": train_probes_batched, "sequential": train_probes_sequential}
    if args.fused_reference:
        trainers["sequential, fused AdamW"] = lambda *a: train_probes_sequential(*a, fused_optimizer=True)
    seconds = dict.fromkeys(trainers, 0.0)
    largest_ua_difference, largest_epoch_difference, total_epochs = 0.0, 0, 0
    for test_fold in range(1, args.folds + 1):
        split = fold_split(speakers, folds, test_fold, validation_share=0.15, seed=0)
        inputs = build_probe_inputs(layers, split.train, names, dtype=getattr(torch, args.dtype))
        uas = {}
        for name, train in trainers.items():
            start = time.perf_counter()
            results = train(inputs, labels, split, NUM_CLASSES, settings, 0)
            seconds[name] += time.perf_counter() - start
            uas[name] = test_ua(results, labels, split.test)
            if name == "batched":
                batched_epochs = results.epochs
            else:
                largest_ua_difference = max(largest_ua_difference, np.abs(uas[name] - uas["batched"]).max())
                largest_epoch_difference = max(largest_epoch_difference, np.abs(results.epochs - batched_epochs).max())
        total_epochs += batched_epochs.sum()
        print(
            f"fold {test_fold}: epochs per probe {batched_epochs.tolist()}; batched UA "
            f"{uas['batched'].min():.3f}..{uas['batched'].max():.3f}; "
            + ", ".join(f"{name} {seconds[name]:.1f} s so far" for name in trainers)
        )
    print(f"probe-epochs trained: {total_epochs}")
    for name, value in seconds.items():
        print(f"{name:<24s} {value:8.1f} s")
    for name in list(trainers)[1:]:
        print(f"speed-up of batched over {name}: {seconds[name] / seconds['batched']:.1f}x")
    print(f"largest |UA difference| batched vs sequential: {largest_ua_difference:.2e}")
    print(f"largest difference in epochs trained: {largest_epoch_difference}")


if __name__ == "__main__":
    main()
