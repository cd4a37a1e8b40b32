"""Compiled (numba) kernels of the CPU probe trainer: a whole epoch of every probe in one call.

Each probe's parameters are one row of a flat (P, n) array: per dense layer ``W`` (in, out)
then ``b`` (out,), in order, and for a weighted-average probe its L + 1 mix logits last. A
probe's epoch (gather its inputs, forward, hand-written backward, AdamW, for every minibatch)
runs in compiled code with its parameters and AdamW moments kept in the core's cache across
the minibatches, and the probes of a call run in parallel (``prange``), each on one core with
single-threaded BLAS: PyTorch's per-operation overhead, which dominated training on small
CPUs, is gone. Probes never share state, so results do not depend on the thread count.

Shapes: ``features`` (G * N * R, D), row ``(g * N + n) * R + r`` being run g's input row r of
utterance n; ``first`` (G, S, B) the first row of each minibatch row's utterance in it;
``counts`` (G, S) real rows per minibatch (0: the run sits the step out); ``targets`` (G, S, B).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numba
import numpy as np
import scipy.linalg.cython_blas  # noqa: F401 (numba's matrix products call this BLAS; loaded now to limit its threads)
from numba import njit, prange
from threadpoolctl import threadpool_limits

_JIT = {"cache": True, "nogil": True, "error_model": "numpy"}  # numpy's error model lets loops vectorise

#: Entries of the ``hyper`` array: AdamW's settings, in the features' dtype.
DECAY, BETA1, BETA2, ONE_MINUS_BETA1, ONE_MINUS_BETA2, EPS = range(6)


@contextlib.contextmanager
def running_on(threads: int) -> Iterator[None]:
    """Run the kernels' probes on ``threads`` threads, each probe's matrix products on its own."""
    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    with threadpool_limits(1, user_api="blas"):
        yield


@njit(**_JIT)
def dense_size(sizes: np.ndarray) -> int:
    """Parameters of the dense layers of widths ``sizes`` (input, hidden..., classes)."""
    total = 0
    for k in range(len(sizes) - 1):
        total += (sizes[k] + 1) * sizes[k + 1]
    return total


@njit(**_JIT)
def _dense_views(flat, sizes):
    """Views ``W`` (in, out) and ``b`` (out,) of each dense layer in the 1-D ``flat``."""
    weights, biases = [], []
    offset = 0
    for k in range(len(sizes) - 1):
        fan_in, fan_out = sizes[k], sizes[k + 1]
        weights.append(flat[offset : offset + fan_in * fan_out].reshape((fan_in, fan_out)))
        offset += fan_in * fan_out
        biases.append(flat[offset : offset + fan_out])
        offset += fan_out
    return weights, biases


@njit(**_JIT)
def _softmax(logits):
    """Row-wise softmax of (B, C), in place."""
    for i in range(logits.shape[0]):
        row = logits[i]
        row -= row.max()
        np.exp(row, row)
        row /= row.sum()
    return logits


@njit(**_JIT)
def _mix_weights(flat, sizes, num_mixed):
    """Softmax weights (L + 1,) of a weighted-average probe's mix logits."""
    start = dense_size(sizes)
    weights = flat[start : start + num_mixed].copy()
    weights -= weights.max()
    np.exp(weights, weights)
    return weights / weights.sum()


@njit(**_JIT)
def _inputs(features, first, input_row, mix_weights):
    """(B, D) probe inputs of the utterances starting at rows ``first`` (B,): row ``input_row``
    of each, or (``input_row`` < 0) the ``mix_weights``-weighted sum of its leading rows."""
    x = np.empty((len(first), features.shape[1]), features.dtype)
    for i in range(len(first)):
        if input_row >= 0:
            x[i] = features[first[i] + input_row]
        else:
            row = x[i]
            row[:] = 0
            for layer in range(len(mix_weights)):
                weight, source = mix_weights[layer], features[first[i] + layer]
                for d in range(len(row)):
                    row[d] += weight * source[d]
    return x


@njit(**_JIT)
def _forward(x, weights, biases):
    """Each dense layer's input (the last ReLU's output) and the logits (B, C)."""
    layer_inputs = [x]
    h = x @ weights[0] + biases[0]
    for k in range(1, len(weights)):
        h = np.maximum(h, 0)
        layer_inputs.append(h)
        h = h @ weights[k] + biases[k]
    return layer_inputs, h


@njit(**_JIT)
def _adamw(parameters, gradients, first_moments, second_moments, hyper, step_size, root_correction2):
    """One AdamW step in place (torch.optim.AdamW's update, decoupled weight decay first)."""
    for i in range(len(parameters)):
        gradient = gradients[i]
        first = hyper[BETA1] * first_moments[i] + hyper[ONE_MINUS_BETA1] * gradient
        second = hyper[BETA2] * second_moments[i] + hyper[ONE_MINUS_BETA2] * gradient * gradient
        first_moments[i] = first
        second_moments[i] = second
        denominator = np.sqrt(second) / root_correction2 + hyper[EPS]
        parameters[i] = parameters[i] * hyper[DECAY] - step_size * first / denominator


@njit(**_JIT)
def _train_probe(features, first, counts, targets, flat, first_moments, second_moments, input_row, num_mixed, sizes,
                 hyper, corrections):  # fmt: skip
    """Every minibatch of one epoch for one probe: ``first``/``counts``/``targets`` are its
    run's (S, B), (S,), (S, B); ``corrections`` (S, 2) AdamW's step size and root of the second
    bias correction at each step."""
    num_dense = dense_size(sizes)
    used = num_dense + (num_mixed if input_row < 0 else 0)
    parameters, gradient = flat[:used], np.empty(used, flat.dtype)
    weights, biases = _dense_views(parameters, sizes)
    gradient_weights, gradient_biases = _dense_views(gradient, sizes)
    for step in range(len(counts)):
        count = counts[step]
        if count == 0:
            continue
        rows = first[step, :count]
        mix_weights = _mix_weights(parameters, sizes, num_mixed) if input_row < 0 else parameters[:0]
        layer_inputs, logits = _forward(_inputs(features, rows, input_row, mix_weights), weights, biases)
        # d(mean cross-entropy)/d(logits) = (softmax - one-hot) / B
        upstream = _softmax(logits)
        for i in range(count):
            upstream[i, targets[step, i]] -= 1
        upstream /= count
        for k in range(len(weights) - 1, -1, -1):
            np.dot(layer_inputs[k].T, upstream, gradient_weights[k])
            gradient_biases[k][:] = upstream.sum(axis=0)
            if k > 0 or input_row < 0:  # on to the layer's input, through the ReLU that made it
                upstream = upstream @ weights[k].T
                if k > 0:
                    upstream *= layer_inputs[k] > 0
        if input_row < 0:
            # upstream is now d/d(mix) (B, D); dLoss/dw_l sums layer l times it, then through the
            # softmax, whose Jacobian is diag(w) - w w^T.
            by_weight = np.zeros(num_mixed, np.float64)
            for i in range(count):
                for layer in range(num_mixed):
                    by_weight[layer] += np.dot(features[rows[i] + layer], upstream[i])
            mean = np.dot(mix_weights.astype(np.float64), by_weight)
            for layer in range(num_mixed):
                gradient[num_dense + layer] = mix_weights[layer] * (by_weight[layer] - mean)
        _adamw(parameters, gradient, first_moments[:used], second_moments[:used], hyper,
               corrections[step, 0], corrections[step, 1])  # fmt: skip


@njit(parallel=True, **_JIT)
def train_epoch(features, first, counts, targets, flat, first_moments, second_moments, probes, input_rows, runs,
                num_mixed, sizes, hyper, corrections):  # fmt: skip
    """One epoch of the probes ``probes`` (ids into ``flat``'s rows), in parallel; probe p reads
    input row ``input_rows[p]`` (-1: the mix of ``num_mixed`` rows) of run ``runs[p]``.
    ``corrections`` (G, S, 2) per run and step."""
    for j in prange(len(probes)):
        p = probes[j]
        g = runs[p]
        _train_probe(features, first[g], counts[g], targets[g], flat[p], first_moments[p], second_moments[p],
                     input_rows[p], num_mixed, sizes, hyper, corrections[g])  # fmt: skip


@njit(parallel=True, **_JIT)
def evaluate(features, first, counts, targets, flat, probes, input_rows, runs, num_mixed, sizes):
    """Mean cross-entropy (P,) in nats and predicted classes (P, B) of ``probes`` on their run's
    rows ``first`` (G, B) with ``counts`` (G,) real rows and ``targets`` (G, B)."""
    losses = np.zeros(len(probes))
    predictions = np.zeros((len(probes), first.shape[1]), np.int64)
    for j in prange(len(probes)):
        p = probes[j]
        g = runs[p]
        count = counts[g]
        weights, biases = _dense_views(flat[p], sizes)
        mix_weights = _mix_weights(flat[p], sizes, num_mixed) if input_rows[p] < 0 else flat[p, :0]
        logits = _forward(_inputs(features, first[g, :count], input_rows[p], mix_weights), weights, biases)[1]
        total = 0.0
        for i in range(count):
            row = logits[i]
            top = row.max()
            total += np.log(np.exp(row - top).sum()) + top - row[targets[g, i]]
            predictions[j, i] = np.argmax(row)
        losses[j] = total / max(count, 1)
    return losses, predictions
