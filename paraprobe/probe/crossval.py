"""One cross-validation fold of the probing experiment: train every input's probe, write its files.

Fold JSON (``{corpus}/probes/{model}/{input}/fold{k}.json``), one per input:

``corpus, model, input, fold, labels``
    what was probed; ``labels`` names the classes in the order of the confusion matrix.
``ua, wa, macro_f1``
    unweighted accuracy (mean per-class recall), accuracy and macro F1 on the test fold, each
    the mean over the seeds; fractions in [0, 1].
``confusion``
    test-fold counts, rows true and columns predicted, summed over the seeds.
``seed, epochs, n_train, n_val``
    with one seed (the default), that seed's numbers; with several, lists with one entry per
    seed, in the order of ``runs``. ``n_test``: the test fold's size.
``runs``
    one object per seed with that seed's ``seed, ua, wa, macro_f1, confusion, epochs,
    best_epoch, best_val_loss, n_train, n_val, validation_speakers``.

The ``weighted_average`` probe's learned layer weights go to
``weighted_average/fold{k}_layer_weights.tsv``: ``corpus, model, fold, seed, layer, weight``
(softmax weights at the best validation epoch, each seed's summing to 1).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from paraprobe.io import atomic_path, write_tsv
from paraprobe.manifest import read_manifest
from paraprobe.probe.inputs import build_probe_inputs, load_pooled_layers
from paraprobe.probe.metrics import classification_scores, confusion_matrix
from paraprobe.probe.names import WEIGHTED_AVERAGE
from paraprobe.probe.settings import ProbeSettings
from paraprobe.probe.splits import FoldSplit, fold_split
from paraprobe.probe.training import ProbeResults, train_probes

logger = logging.getLogger("paraprobe")


def configure_torch(device: str, threads: int | None) -> torch.device:
    """Make training reproducible and pick its device.

    ``device`` is ``"cpu"``, ``"cuda"`` (or ``"cuda:N"``) or ``"auto"`` (CUDA when available).
    Deterministic algorithms are enforced; on the CPU a fixed thread count keeps the order of
    floating-point reductions, so the same config and seed give identical results.
    """
    # cuBLAS is deterministic only with a fixed workspace; it reads this before CUDA starts.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    # Deterministic mode also fills every new tensor's memory before use (against reads of
    # uninitialised memory, which the trainers never make: each buffer is written first); on
    # the CPU that fill cost a tenth of the probe training time.
    torch.utils.deterministic.fill_uninitialized_memory = False
    if threads:
        torch.set_num_threads(threads)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"probe.device is {device!r} but PyTorch sees no CUDA device")
    return torch.device(device)


def warn_missing_classes(
    labels: list[str], targets: np.ndarray, splits: Sequence[FoldSplit], seeds: Sequence[int], fold: int, logger
) -> None:
    """Log a warning for each class absent from the fold's test rows or a seed's training rows.

    A class never trained on is never predicted (recall 0 where it is tested); a class absent
    from the test rows leaves this fold's UA a mean over fewer classes than the other folds'.
    """

    def missing(rows: np.ndarray) -> str:
        return ", ".join(labels[c] for c in sorted(set(range(len(labels))) - set(targets[rows].tolist())))

    if absent := missing(splits[0].test):
        logger.warning(
            "fold %d: no test utterance of class(es) %s: its UA averages the other classes' recall", fold, absent
        )
    for seed, split in zip(seeds, splits, strict=True):
        if absent := missing(split.train):
            logger.warning(
                "fold %d, seed %d: no training utterance of class(es) %s: never predicted, recall 0", fold, seed, absent
            )


def _run_record(
    results: ProbeResults, probe: int, true: np.ndarray, num_classes: int, seed: int, split: FoldSplit
) -> dict:
    """One seed's entry of a fold JSON's ``runs`` for probe number ``probe``."""
    confusion = confusion_matrix(true, results.predictions[probe], num_classes)
    return {
        "seed": seed,
        **classification_scores(confusion),
        "confusion": confusion.tolist(),
        "epochs": int(results.epochs[probe]),
        "best_epoch": int(results.best_epoch[probe]),
        "best_val_loss": float(results.best_validation_loss[probe]),
        "n_train": int(split.train.size),
        "n_val": int(split.validation.size),
        "validation_speakers": list(split.validation_speakers),
    }


def fold_record(
    corpus: str, model: str, input_name: str, fold: int, labels: Sequence[str], runs: list[dict], n_test: int
) -> dict:
    """The fold JSON of one input (see the module docstring) from its per-seed ``runs``."""
    return {
        "corpus": corpus,
        "model": model,
        "input": input_name,
        "fold": fold,
        "labels": list(labels),
        **{key: float(np.mean([run[key] for run in runs])) for key in ("ua", "wa", "macro_f1")},
        "confusion": np.sum([run["confusion"] for run in runs], axis=0).tolist(),
        **{key: per_seed([run[key] for run in runs]) for key in ("seed", "epochs", "n_train", "n_val")},
        "n_test": n_test,
        "runs": runs,
    }


def per_seed(values: list):
    """The one seed's value as it is (DESIGN.md's scalar fields); the list of them with several seeds."""
    return values[0] if len(values) == 1 else values


def run_probe_fold(
    manifest_path: str | Path,
    embeddings_path: str | Path,
    json_paths: Mapping[str, str | Path],
    layer_weights_path: str | Path | None,
    corpus: str,
    model: str,
    fold: int,
    settings: ProbeSettings,
    seeds: Sequence[int],
    validation_share: float,
    device: str = "cpu",
    threads: int | None = None,
) -> None:
    """Train the probes of every input in ``json_paths`` on one fold, for every seed; write the files.

    Parameters
    ----------
    manifest_path : the corpus's ``manifest.tsv`` (labels, speakers, folds)
    embeddings_path : ``{corpus}/embeddings/{model}.h5`` (pooled layers in manifest order)
    json_paths : input name -> path of its fold JSON; the inputs to probe
    layer_weights_path : where the ``weighted_average`` probe's layer weights go (TSV); required
        exactly when ``weighted_average`` is among the inputs
    corpus, model, fold : what the files describe; ``fold`` is the test fold
    settings : probe hyper-parameters
    seeds : each seed repeats the whole fold (validation speakers, initial weights, batch order);
        the seeds train together, as runs of one batched computation
    validation_share : share of training speakers held out for early stopping
    device, threads : see :func:`configure_torch`
    """
    if (WEIGHTED_AVERAGE in json_paths) != (layer_weights_path is not None):
        raise ValueError("layer_weights_path must be given exactly when weighted_average is probed")
    if not seeds:
        raise ValueError("probe.seeds is empty: give at least one seed")
    torch_device = configure_torch(device, threads)
    manifest = read_manifest(manifest_path, ("utt_id", "label", "speaker", "fold"))
    labels = sorted(manifest["label"].unique())
    if len(labels) < 2:
        raise ValueError(f"{manifest_path}: labels {labels}; probing needs at least 2 classes")
    targets = manifest["label"].map({label: i for i, label in enumerate(labels)}).to_numpy()
    layers = load_pooled_layers(embeddings_path, manifest["utt_id"].tolist())
    start = time.perf_counter()
    speakers, folds = manifest["speaker"].to_numpy(), manifest["fold"].to_numpy()
    splits = [fold_split(speakers, folds, fold, validation_share, seed, source=manifest_path) for seed in seeds]
    warn_missing_classes(labels, targets, splits, seeds, fold, logger)
    # every seed is a run of one batched computation, each standardised with its own training rows
    inputs = build_probe_inputs(layers, [split.train for split in splits], list(json_paths), device=torch_device)
    del layers
    runs: dict[str, list[dict]] = {name: [] for name in json_paths}
    weight_rows = []
    for seed, split, results in zip(seeds, splits, train_probes(inputs, targets, splits, seeds, len(labels), settings)):
        diverged = [name for name, loss in zip(results.names, results.best_validation_loss) if not np.isfinite(loss)]
        if diverged:
            raise ValueError(
                f"{corpus}/{model} fold {fold} seed {seed}: the probe(s) on {', '.join(diverged)} never reached a "
                f"finite validation loss (diverged: try a lower learning rate than {settings.learning_rate})"
            )
        for probe, name in enumerate(results.names):
            runs[name].append(_run_record(results, probe, targets[split.test], len(labels), seed, split))
        if results.layer_weights is not None:
            weight_rows += [
                {"corpus": corpus, "model": model, "fold": fold, "seed": seed, "layer": layer, "weight": float(weight)}
                for layer, weight in enumerate(results.layer_weights)
            ]
        best = max(runs, key=lambda name: runs[name][-1]["ua"])
        logger.info(
            "%s/%s fold %d seed %d: %d probes, train/val/test %d/%d/%d; best %s UA %.3f",
            corpus,
            model,
            fold,
            seed,
            len(results.names),
            split.train.size,
            split.validation.size,
            split.test.size,
            best,
            runs[best][-1]["ua"],
        )
    logger.info("%d seeds trained together in %.1f s", len(seeds), time.perf_counter() - start)
    for name, path in json_paths.items():
        record = fold_record(corpus, model, name, fold, labels, runs[name], int(split.test.size))
        with atomic_path(path) as temporary:
            temporary.write_text(json.dumps(record, indent=1, allow_nan=False) + "\n")
    if layer_weights_path is not None:
        write_tsv(pd.DataFrame(weight_rows), layer_weights_path)
