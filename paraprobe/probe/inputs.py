"""What a probe sees: one layer, or a combination of layers, standardised with training statistics."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import h5py
import numpy as np
import torch

from paraprobe.probe.names import (
    AVERAGE,
    AVERAGE_WO_LAST2,
    LAST,
    WEIGHTED_AVERAGE,
    layer_index,
    layer_name,
    probe_input_names,
)


@dataclass(frozen=True)
class ProbeInputs:
    """The standardised inputs of every probe trained together, for one or more runs.

    A run is one training of every probe: a fold's split with one seed. Each run standardises
    with its own training rows, so each has its own copy of the features.

    Attributes
    ----------
    names : tuple of str
        Probe order within a run: the fixed inputs first, ``weighted_average`` (if any) last.
    features : (G, N, R, D) tensor
        For each of G runs and N utterances (manifest order), R rows of D dimensions: rows
        ``0 .. L`` are the L + 1 hidden states, each standardised; further rows hold the
        requested fixed combinations (``average``, ``average_wo_last2``), standardised after
        combining. Utterance-major, so that a minibatch's inputs lie in one stretch per utterance.
    rows : tuple of int
        For each fixed-input probe (``names[:len(rows)]``) its row of ``features``.
    num_layer_rows : int
        L + 1, the leading rows of ``features`` that ``weighted_average`` mixes.
    """

    names: tuple[str, ...]
    features: torch.Tensor
    rows: tuple[int, ...]
    num_layer_rows: int

    @property
    def has_weighted_average(self) -> bool:
        return len(self.names) > len(self.rows)

    @property
    def num_runs(self) -> int:
        return self.features.shape[0]

    def run(self, index: int) -> ProbeInputs:
        """Run ``index`` alone (a view, not a copy)."""
        return replace(self, features=self.features[index : index + 1])

    def probe(self, index: int) -> ProbeInputs:
        """The probe at ``index`` of ``names`` alone."""
        return replace(self, names=(self.names[index],), rows=self.rows[index : index + 1])


def _standardise(values: np.ndarray, train_rows: np.ndarray) -> np.ndarray:
    """(N, D) -> (N, D) float32 with zero mean and unit variance over ``train_rows``.

    Dimensions constant over the training rows are only centred (their scale is left at 1).
    """
    train = values[train_rows].astype(np.float64)
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std[std == 0] = 1.0
    return ((values - mean) / std).astype(np.float32)


def build_probe_inputs(
    layers: np.ndarray,
    train_rows: Sequence[np.ndarray],
    names: Sequence[str],
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> ProbeInputs:
    """Standardise the hidden states and combine them into the probes' inputs, for each run.

    Parameters
    ----------
    layers : (L + 1, N, D) float array
        Pooled hidden states of every utterance, layer 0 first.
    train_rows : sequence of G (n_train,) int arrays
        For each run, the rows whose statistics standardise its inputs (never its validation or
        test rows).
    names : sequence of str
        Requested inputs, from :func:`probe_input_names`.
    dtype, device
        Of the returned ``features`` (G, N, R, D).

    Notes
    -----
    ``last`` is ``layer_LL`` under another name: its probe trains on the same row with its own
    initial weights. ``average`` and ``average_wo_last2`` average the raw hidden states and then
    standardise the average, as a single feature vector. ``weighted_average`` mixes the
    *standardised* layers, so its learned weights compare the layers' information rather than
    their scales (wav2vec2's hidden-state norms differ by orders of magnitude across layers).
    """
    num_layer_rows, num_utterances, dim = layers.shape
    valid = probe_input_names(num_layer_rows - 1)
    unknown = [name for name in names if name not in valid]
    if unknown or not names:
        raise ValueError(f"unknown probe inputs {unknown} (none requested?); valid: {valid}")
    if not len(train_rows):
        raise ValueError("no runs: give the training rows of at least one run")
    fixed_names = [name for name in dict.fromkeys(names) if name != WEIGHTED_AVERAGE]
    combinations = {
        AVERAGE: range(num_layer_rows),
        AVERAGE_WO_LAST2: range(num_layer_rows - 2),
    }
    raw_rows = list(layers)
    row_of = {layer_name(index): index for index in range(num_layer_rows)}
    row_of[LAST] = num_layer_rows - 1
    for name, layer_indices in combinations.items():
        if name in fixed_names:
            row_of[name] = len(raw_rows)
            raw_rows.append(layers[list(layer_indices)].mean(axis=0))
    features = torch.empty((len(train_rows), num_utterances, len(raw_rows), dim), dtype=dtype, device=device)
    for run, rows in enumerate(train_rows):
        for row, values in enumerate(raw_rows):
            features[run, :, row] = torch.from_numpy(_standardise(values, rows))
    ordered = fixed_names + ([WEIGHTED_AVERAGE] if WEIGHTED_AVERAGE in names else [])
    return ProbeInputs(
        names=tuple(ordered),
        features=features,
        rows=tuple(row_of[name] for name in fixed_names),
        num_layer_rows=num_layer_rows,
    )


def load_pooled_layers(path: str | Path, utt_ids: Sequence[str]) -> np.ndarray:
    """Read every ``pooled/layer_XX`` of an embeddings file, checked against the manifest.

    Parameters
    ----------
    path : path of ``{corpus}/embeddings/{model}.h5``
    utt_ids : the manifest's ``utt_id`` column, in manifest order

    Returns
    -------
    (L + 1, N, D) float32 array, layer 0 first.
    """
    with h5py.File(path, "r") as h5:
        if "utt_id" not in h5 or "pooled" not in h5:
            raise ValueError(f"{path}: needs datasets 'utt_id' and 'pooled/layer_XX'")
        stored_ids = [u.decode() if isinstance(u, bytes) else str(u) for u in h5["utt_id"][()]]
        if stored_ids != list(utt_ids):
            raise ValueError(
                f"{path}: utt_id ({len(stored_ids)} rows) differs from the manifest's ({len(utt_ids)} rows) "
                "in content or order; rebuild the embeddings from this manifest"
            )
        indices = sorted(i for i in (layer_index(key) for key in h5["pooled"]) if i is not None)
        if indices != list(range(len(indices))) or len(indices) < 3:
            raise ValueError(f"{path}: pooled layers must be layer_00..layer_LL with L >= 2, found {indices}")
        layers = np.stack([h5["pooled"][layer_name(i)][()].astype(np.float32, copy=False) for i in indices])
    bad = ~np.isfinite(layers).all(axis=2)  # (L + 1, N)
    if bad.any():
        layer, row = np.argwhere(bad)[0]
        raise ValueError(
            f"{path}: pooled/{layer_name(int(layer))} of utterance {utt_ids[row]} is not finite (NaN or inf), "
            f"as are {int(bad.sum()) - 1} more (layer, utterance) vectors; a probe cannot learn from them "
            "(half-precision overflow in extraction? try extraction.half_precision: false)"
        )
    return layers
