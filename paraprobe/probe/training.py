"""Training the paper's probe on many inputs at once, and one input at a time as references.

The probe (Li et al., SLT 2022) is an MLP: input -> dense 128 -> ReLU -> dense 16 -> ReLU ->
dense to the classes, trained with softmax cross-entropy and AdamW until the validation loss
stops improving; the weights of the best validation epoch are kept.

:func:`train_probes` trains every input of one or more runs (a run: a fold's split with one
seed, its own standardised copy of the features) in one computation (``trainer="batched"``):
each dense layer's weights are stacked on a leading probe axis and applied with
``torch.baddbmm`` (the weighted-average probes on the same axis as the fixed-input ones, after
them), every probe of a run sees that run's minibatches, and each probe's gradient, that of its
own mean cross-entropy, is written by hand into one buffer kept across steps, which the fused
AdamW kernel then applies. Runs whose minibatches run out earlier in an epoch, or whose last
minibatch is shorter, have those rows masked and their AdamW step skipped. A probe whose
validation loss has not improved for ``patience`` epochs stops: it leaves the stack (its
parameters and AdamW state are frozen where they were, its best weights kept), so later epochs
cost only what the probes still training need.

On the CPU the same training runs compiled (``trainer="compiled"``, the default there): one
call per epoch trains every probe still training through all its minibatches, the probes in
parallel, each with the same hand-written gradients and AdamW update in compiled code
(:mod:`paraprobe.probe.compiled`), which spares PyTorch's per-operation cost and keeps each
probe's parameters in cache for the whole epoch. Its results match the batched trainer's up to
rounding (float64: to ~1e-14), and do not depend on the thread count.

Two references train the same probes one by one (and run by run) from the same initial
weights and minibatches: ``"sequential"`` runs the batched code with a probe axis of length one (what
batching saves), ``"reference"`` uses ``torch.nn`` modules, autograd and torch's default AdamW
(an independent check of the hand-written gradients). Tests and ``bench/probe.py`` compare them.
"""

from __future__ import annotations

import copy
import functools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from paraprobe.probe import compiled
from paraprobe.probe.inputs import ProbeInputs
from paraprobe.progress import Progress
from paraprobe.probe.settings import ProbeSettings
from paraprobe.probe.splits import FoldSplit, derive_seed

logger = logging.getLogger("paraprobe")

#: Probe-rows per forward pass when scoring validation or test rows (bounds memory, not results).
_EVALUATION_ROWS = 16384
#: Seconds between progress lines in the log.
_PROGRESS_S = 10.0


@dataclass(frozen=True)
class ProbeResults:
    """What training the probes of one run (a fold split with one seed) yields, probe axis first.

    Attributes
    ----------
    names : input names, the probe order
    predictions : (P, n) int64 array, predicted class of each requested row
    epochs : (P,) int array, epochs trained before stopping
    best_epoch : (P,) int array, the epoch whose weights were kept
    best_validation_loss : (P,) float array, mean cross-entropy on the validation rows (nats)
    layer_weights : (L + 1,) float array of the ``weighted_average`` probe's softmax layer
        weights at its best epoch; ``None`` without that probe
    parameters : the kept weights per dense layer, ``W`` (P, in, out) and ``b`` (P, out)
        alternating, for comparing trainers
    """

    names: tuple[str, ...]
    predictions: np.ndarray
    epochs: np.ndarray
    best_epoch: np.ndarray
    best_validation_loss: np.ndarray
    layer_weights: np.ndarray | None
    parameters: list[np.ndarray]


def initial_parameters(
    seed: int, name: str, input_dim: int, hidden_sizes: tuple[int, ...], num_classes: int
) -> list[torch.Tensor]:
    """Initial weights of the probe on input ``name``: ``W`` (in, out) and ``b`` (out,) per dense layer.

    Drawn like ``torch.nn.Linear``'s defaults (uniform in +-1/sqrt(fan_in)), in float32 on the CPU
    from a generator seeded by (seed, name), so both trainers and every device start alike.
    """
    generator = torch.Generator().manual_seed(derive_seed(seed, "initial weights", name))
    sizes = [input_dim, *hidden_sizes, num_classes]
    parameters = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        bound = fan_in**-0.5
        for shape in ((fan_in, fan_out), (fan_out,)):
            parameters.append((torch.rand(shape, generator=generator) * 2 - 1) * bound)
    return parameters


def epoch_order(seed: int, epoch: int, train_rows: torch.Tensor) -> torch.Tensor:
    """Epoch ``epoch``'s shuffle of ``train_rows``, seeded by (seed, epoch); minibatches are its
    consecutive stretches of the batch size, the last one short."""
    generator = torch.Generator().manual_seed(derive_seed(seed, "minibatch order", epoch))
    return train_rows[torch.randperm(len(train_rows), generator=generator).to(train_rows.device)]


class EarlyStopping:
    """Per-probe early stopping on the validation loss, for P probes at once.

    A probe improves when its loss is strictly below its best so far; it stops once ``patience``
    epochs have passed without improvement.
    """

    def __init__(self, num_probes: int, patience: int):
        self.patience = patience
        self.active = np.ones(num_probes, dtype=bool)
        self.best_loss = np.full(num_probes, np.inf)
        self.best_epoch = np.zeros(num_probes, dtype=np.int64)
        self.epochs = np.zeros(num_probes, dtype=np.int64)

    def update(self, epoch: int, losses: np.ndarray) -> np.ndarray:
        """Record epoch ``epoch``'s (P,) losses (read for active probes only); return who improved."""
        improved = self.active & (losses < self.best_loss)
        self.best_loss[improved] = losses[improved]
        self.best_epoch[improved] = epoch
        self.epochs[self.active] = epoch
        self.active &= epoch - self.best_epoch < self.patience
        return improved


#: AdamW's other hyper-parameters: torch's defaults, which the reference trainer uses.
_ADAM_BETAS, _ADAM_EPS = (0.9, 0.999), 1e-8


def _views(flat: torch.Tensor, shapes: list[tuple[int, ...]]) -> list[torch.Tensor]:
    """Consecutive views of the 1-D ``flat`` with the given shapes."""
    sizes = [math.prod(shape) for shape in shapes]
    return [part.view(shape) for part, shape in zip(flat.split(sizes), shapes)]


def _ranges(positions: np.ndarray) -> list[slice]:
    """The sorted ``positions`` as maximal runs of consecutive integers."""
    breaks = np.flatnonzero(np.diff(positions) != 1) + 1
    return [slice(int(part[0]), int(part[-1]) + 1) for part in np.split(positions, breaks) if part.size]


@dataclass(frozen=True)
class _RunRows:
    """Rows of every run, padded to a common length: what one forward pass over the runs reads.

    Attributes
    ----------
    first : (G, n) int64 tensor, where each row's utterance starts in the stack's features
    targets : (G, n) int64 tensor, the rows' classes
    counts : (G,) int array, each run's real rows (the rest repeat its first row)
    """

    first: torch.Tensor
    targets: torch.Tensor
    counts: np.ndarray

    def padded(self, runs: np.ndarray) -> bool:
        """Whether any of ``runs`` has padding."""
        return bool((self.counts[runs] != self.first.shape[1]).any())

    def valid(self, dtype: torch.dtype) -> torch.Tensor:
        """(G, n) 1 at real rows, 0 at padding."""
        counts = torch.from_numpy(self.counts).to(self.first.device)
        return (torch.arange(self.first.shape[1], device=self.first.device) < counts[:, None]).to(dtype)

    def columns(self, start: int, stop: int) -> _RunRows:
        """Rows ``start:stop`` of every run."""
        return _RunRows(
            first=self.first[:, start:stop],
            targets=self.targets[:, start:stop],
            counts=np.clip(self.counts - start, 0, stop - start),
        )


def _run_of_probe(num_runs: int, num_fixed: int, has_mix: bool) -> np.ndarray:
    """Each probe id's run: the fixed-input probes of run 0, of run 1, ..., then one
    weighted-average probe per run (if any)."""
    return np.concatenate([np.repeat(np.arange(num_runs), num_fixed), np.arange(num_runs if has_mix else 0)])


class _ProbeStack:
    """The probes of all runs trained together: each dense layer's weights on a leading probe axis.

    Probe ids: the fixed-input probes of run 0, of run 1, ..., then the weighted-average probes
    (one per run, if requested); the stack keeps this order as probes leave it. A fixed-input
    probe reads its run's copy of its input; a weighted-average probe reads the softmax-weighted
    mix of its run's layers. All parameters live in one flat buffer (each layer's weights and
    biases, and the mix logits, are views of it), and so do their gradients and AdamW's two
    moments: a training step writes the hand-derived gradients in place with a few batched
    products, then calls the fused AdamW kernel, once for the whole buffer while every run has
    taken as many steps.
    """

    def __init__(self, inputs: ProbeInputs, initial: list[list[torch.Tensor]], settings: ProbeSettings):
        self.settings = settings
        num_runs, num_utterances, self.num_rows, dim = inputs.features.shape
        device = inputs.features.device
        # (G * N * R, D): row (g * N + n) * R + r is run g's input r of utterance n
        self.features = inputs.features.view(-1, dim)
        self.run_starts = torch.arange(num_runs, device=device) * (num_utterances * self.num_rows)
        self.layer_rows = torch.arange(inputs.num_layer_rows, device=device)
        num_fixed = len(inputs.rows)
        self.num_fixed_ids = num_runs * num_fixed
        self.all_fixed_rows = torch.tensor(inputs.rows * num_runs, dtype=torch.int64, device=device)
        self.had_mix = inputs.has_weighted_average
        self.run_of_id = _run_of_probe(num_runs, num_fixed, self.had_mix)
        # W (P, in, out) and b (P, 1, out) per dense layer, so that a layer is one baddbmm.
        dense = [torch.stack(tensors).view(len(initial), -1, tensors[0].shape[-1]) for tensors in zip(*initial)]
        self.num_dense = len(dense)
        mix = [torch.zeros(num_runs, inputs.num_layer_rows)] if self.had_mix else []
        self.best = [parameter.to(inputs.features) for parameter in dense + mix]
        self.restore_best()  # every probe, at its initial weights ...
        self._place(self.best, moments=None)  # ... copied into the training buffers
        # AdamW's step count of each run, on the host (to group runs) and on the device
        self.steps_taken = np.zeros(num_runs, dtype=np.int64)
        self.steps = torch.zeros(num_runs, dtype=torch.float32, device=device)

    def _place(self, parameters: list[torch.Tensor], moments: list[list[torch.Tensor]] | None) -> None:
        """Copy ``parameters`` and AdamW's two moments of each (zeros if None) into fresh flat buffers."""
        self.shapes = [tuple(parameter.shape) for parameter in parameters]
        self.flat = torch.cat([parameter.reshape(-1) for parameter in parameters])
        self.flat_grad = torch.empty_like(self.flat)
        self.flat_moments = (
            [torch.cat([tensor.reshape(-1) for tensor in moment]) for moment in moments]
            if moments
            else [torch.zeros_like(self.flat), torch.zeros_like(self.flat)]
        )
        self.parameters = _views(self.flat, self.shapes)
        self.gradients = _views(self.flat_grad, self.shapes)

    def _set_probes(self, probe_ids: np.ndarray) -> None:
        """Make ``probe_ids`` (sorted) the probes in the stack, in that order."""
        device = self.features.device
        self.probe_ids = probe_ids
        is_fixed = probe_ids < self.num_fixed_ids
        self.num_mix = int((~is_fixed).sum())
        self.fixed_rows = self.all_fixed_rows[torch.from_numpy(probe_ids[is_fixed]).to(device)]
        self.probe_runs = self.run_of_id[probe_ids]
        self.probe_run_index = torch.from_numpy(self.probe_runs).to(device)
        self.active_runs = np.unique(self.probe_runs)

    @property
    def mix_logits(self) -> torch.Tensor | None:
        """(M, L + 1) logits of the weighted-average probes' layer weights; None when none is here."""
        return self.parameters[-1] if self.num_mix else None

    def _forward(
        self, first: torch.Tensor
    ) -> tuple[list[torch.Tensor], tuple[torch.Tensor, torch.Tensor] | None, torch.Tensor]:
        """On the rows ``first`` (G, B) (see :class:`_RunRows`): each dense layer's input (P, B, in);
        if mixes train, the mixed layers (M, L + 1, B * D) and their softmax weights (M, L + 1);
        logits (P, B, C)."""
        num_fixed, dim = len(self.fixed_rows), self.features.shape[-1]
        first = first.index_select(0, self.probe_run_index)  # (P, B): each probe's run's rows
        batch = first.shape[1]
        x = torch.empty(num_fixed + self.num_mix, batch, dim, dtype=self.features.dtype, device=first.device)
        fixed_inputs = (self.fixed_rows[:, None] + first[:num_fixed]).view(-1)
        torch.index_select(self.features, 0, fixed_inputs, out=x[:num_fixed].view(-1, dim))
        mix = None
        if self.num_mix:
            layer_inputs = (first[num_fixed:, None, :] + self.layer_rows[:, None]).view(-1)
            layers = self.features.index_select(0, layer_inputs).view(self.num_mix, len(self.layer_rows), -1)
            # (M, 1, L + 1) weights times the (M, L + 1, B * D) layers: the mix probes' inputs
            weights = torch.softmax(self.mix_logits, dim=1)
            torch.bmm(weights[:, None], layers, out=x[num_fixed:].view(self.num_mix, 1, -1))
            mix = layers, weights
        layer_inputs = []
        for index in range(0, self.num_dense, 2):
            if index:
                x = torch.relu(x)
            layer_inputs.append(x)
            x = torch.baddbmm(self.parameters[index + 1], x, self.parameters[index])
        return layer_inputs, mix, x

    def train_epoch(self, orders: list[torch.Tensor], targets: torch.Tensor, num_classes: int) -> None:
        """One epoch: each run's minibatches are consecutive stretches of its order in ``orders``."""
        batch_size = self.settings.batch_size
        epoch_rows, num_batches = _epoch_rows(self, orders, targets)
        epoch_one_hot = F.one_hot(epoch_rows.targets, num_classes).to(self.features.dtype)
        for start in range(0, num_batches * batch_size, batch_size):
            # as wide as the longest minibatch of a run still training
            stop = start + min(batch_size, max(len(orders[g]) - start for g in self.active_runs))
            self.train_step(epoch_rows.columns(start, stop), epoch_one_hot[:, start:stop])

    def train_step(self, rows: _RunRows, one_hot: torch.Tensor) -> None:
        """One AdamW step of every probe whose run has rows in ``rows``, with targets ``one_hot``
        (G, B, C) of them.

        Each probe's gradient is that of its own mean cross-entropy over its run's minibatch.
        """
        layer_inputs, mix, logits = self._forward(rows.first)
        # d(mean cross-entropy)/d(logits) = (softmax - one-hot) / B
        upstream = torch.softmax(logits, dim=-1).sub_(one_hot.index_select(0, self.probe_run_index))
        if rows.padded(self.active_runs):  # padding gets no gradient; a run's mean is over its real rows
            counts = torch.from_numpy(rows.counts).to(upstream).clamp_(min=1)  # a run without rows: zeros
            upstream.mul_(rows.valid(upstream.dtype).index_select(0, self.probe_run_index)[:, :, None])
            upstream.div_(counts.index_select(0, self.probe_run_index)[:, None, None])
        else:
            upstream.div_(rows.first.shape[1])
        for index in range(self.num_dense - 2, -1, -2):
            layer_input = layer_inputs[index // 2]
            torch.bmm(layer_input.transpose(1, 2), upstream, out=self.gradients[index])
            torch.sum(upstream, dim=1, keepdim=True, out=self.gradients[index + 1])
            if index:  # on to the layer's input, through the ReLU whose output it is
                upstream = torch.bmm(upstream, self.parameters[index].transpose(1, 2))
                upstream = torch.ops.aten.threshold_backward(upstream, layer_input, 0)
        if mix is not None:
            # A mix's gradient (B, D) is its probe's upstream (B, H) times its W^T (H, D);
            # dLoss/dw_l sums layer_l times it over b and d; then through the softmax, whose
            # Jacobian is diag(w) - w w^T.
            layers, weights = mix
            num_fixed = len(self.fixed_rows)
            mix_gradient = torch.bmm(upstream[num_fixed:], self.parameters[0][num_fixed:].transpose(1, 2))
            by_weight = torch.bmm(layers, mix_gradient.view(self.num_mix, -1, 1)).view(self.num_mix, -1)
            torch.mul(weights, by_weight - (weights * by_weight).sum(dim=1, keepdim=True), out=self.gradients[-1])
        self._adam_step(rows.counts > 0)

    def _adam_step(self, has_rows: np.ndarray) -> None:
        """Apply AdamW to the probes of the runs with ``has_rows`` (G,): one fused call per step count."""
        stepping = self.active_runs[has_rows[self.active_runs]]
        self.steps_taken[stepping] += 1
        if len(stepping) == len(self.steps_taken):
            self.steps += 1
        else:
            self.steps[torch.from_numpy(stepping).to(self.steps.device)] += 1
        counts = self.steps_taken[stepping]
        if len(stepping) == len(self.active_runs) and (counts == counts[0]).all():
            self._fused_adamw([self.flat], [self.flat_grad], *([m] for m in self.flat_moments), step=stepping[0])
            return
        # Runs that sat out steps (fewer minibatches per epoch) have their own bias corrections.
        moment_views = [_views(moment, self.shapes) for moment in self.flat_moments]
        for count in np.unique(counts):
            runs = stepping[counts == count]
            positions = np.flatnonzero(np.isin(self.probe_runs, runs))
            parts = []
            for part in _ranges(positions):
                parts += [(index, part) for index in range(self.num_dense)]
                mix_part = slice(max(part.start, len(self.fixed_rows)), part.stop)
                if mix_part.start < mix_part.stop:
                    shift = len(self.fixed_rows)
                    parts.append((self.num_dense, slice(mix_part.start - shift, mix_part.stop - shift)))
            tensors = [
                [views[index][part] for index, part in parts]
                for views in (self.parameters, self.gradients, *moment_views)
            ]
            self._fused_adamw(*tensors, step=runs[0])

    def _fused_adamw(self, parameters, gradients, first_moments, second_moments, step: int) -> None:
        """The kernel of torch.optim.AdamW(fused=True), called directly on lists of tensors (the
        optimiser's own per-step bookkeeping cost more than the update), all at run ``step``'s count."""
        torch._fused_adamw_(
            parameters,
            gradients,
            first_moments,
            second_moments,
            [],
            [self.steps[step]] * len(parameters),
            lr=self.settings.learning_rate,
            beta1=_ADAM_BETAS[0],
            beta2=_ADAM_BETAS[1],
            weight_decay=self.settings.weight_decay,
            eps=_ADAM_EPS,
            amsgrad=False,
            maximize=False,
        )

    def remember_best(self, improved: np.ndarray) -> None:
        """Copy the parameters of the probes whose id is True in ``improved`` (P_all,)."""
        local = improved[self.probe_ids]
        if local.any():
            device = self.flat.device
            ids = self.probe_ids[local]
            selected = torch.from_numpy(local).to(device)
            for best, parameter in zip(self.best[: self.num_dense], self.parameters):
                best[torch.from_numpy(ids).to(device)] = parameter[selected]
            mix_local = local[len(self.fixed_rows) :]
            if mix_local.any():
                mix_ids = torch.from_numpy(ids[ids >= self.num_fixed_ids] - self.num_fixed_ids).to(device)
                self.best[-1][mix_ids] = self.mix_logits[torch.from_numpy(mix_local).to(device)]

    def keep_only(self, active: np.ndarray) -> None:
        """Keep training the probes whose id is True in ``active`` (at least one); the others leave
        with their AdamW state, so that later steps cost only what the probes still training need."""
        local = active[self.probe_ids]
        selected = torch.from_numpy(local).to(self.flat.device)
        mix_selected = selected[len(self.fixed_rows) :]

        def kept(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
            dense = [tensor[selected] for tensor in tensors[: self.num_dense]]
            return dense + ([tensors[-1][mix_selected]] if bool(mix_selected.any()) else [])

        moments = [kept(_views(moment, self.shapes)) for moment in self.flat_moments]
        self._place(kept(self.parameters), moments)
        self._set_probes(self.probe_ids[local])

    def restore_best(self) -> None:
        """Every probe, with its best-epoch parameters (not a training state: for predicting)."""
        self._set_probes(np.arange(len(self.run_of_id)))
        self.parameters = self.best

    def kept_parameters(self) -> tuple[list[np.ndarray], np.ndarray | None]:
        """Every probe's kept ``W`` (P, in, out) and ``b`` (P, out) per dense layer; the
        weighted-average probes' softmax layer weights (G, L + 1), or None."""
        dense = [parameter.cpu().numpy() for parameter in self.best[: self.num_dense]]
        mix = torch.softmax(self.best[-1], dim=1).cpu().numpy() if self.had_mix else None
        return [parameter.squeeze(1) if i % 2 else parameter for i, parameter in enumerate(dense)], mix

    def evaluate(self, rows: _RunRows) -> tuple[np.ndarray, np.ndarray]:
        """Mean cross-entropy (P,) over each probe's run's rows, and predicted classes (P, n)."""
        targets = rows.targets.index_select(0, self.probe_run_index)
        padded = rows.padded(self.active_runs)
        valid = rows.valid(self.features.dtype).index_select(0, self.probe_run_index) if padded else None
        loss_sum = 0.0
        predictions = []
        chunk = max(1, _EVALUATION_ROWS // len(self.probe_ids))
        for start in range(0, targets.shape[1], chunk):
            logits = self._forward(rows.first[:, start : start + chunk])[-1]
            part = targets[:, start : start + chunk]
            losses = F.cross_entropy(logits.flatten(0, 1), part.flatten(), reduction="none").view(part.shape)
            if valid is not None:
                losses = losses * valid[:, start : start + chunk]
            loss_sum = loss_sum + losses.sum(dim=1)
            predictions.append(logits.argmax(dim=-1))
        counts = torch.from_numpy(rows.counts[self.probe_runs]).to(loss_sum)
        return (loss_sum / counts).cpu().numpy(), torch.cat(predictions, dim=1).cpu().numpy()


class _CompiledStack:
    """The probes of all runs for the compiled CPU kernels of :mod:`paraprobe.probe.compiled`,
    with :class:`_ProbeStack`'s probe ids and interface: one epoch of every probe still training
    is one call, its probes in parallel on ``torch.get_num_threads()`` cores.

    Each probe's parameters are one row of a flat (P, n) array (its dense layers, then a
    weighted-average probe's mix logits), and so are AdamW's moments; stopped probes simply
    leave the list of probes the kernels are given.
    """

    def __init__(self, inputs: ProbeInputs, initial: list[list[torch.Tensor]], settings: ProbeSettings):
        self.settings = settings
        num_runs, num_utterances, self.num_rows, dim = inputs.features.shape
        self.features = inputs.features.numpy().reshape(-1, dim)
        self.run_starts = torch.arange(num_runs) * (num_utterances * self.num_rows)
        num_fixed = len(inputs.rows)
        self.num_fixed_ids = num_runs * num_fixed
        self.had_mix = inputs.has_weighted_average
        self.run_of_id = _run_of_probe(num_runs, num_fixed, self.had_mix)
        self.input_rows = np.concatenate([np.tile(inputs.rows, num_runs), -np.ones(num_runs * self.had_mix)])
        self.input_rows = self.input_rows.astype(np.int64)  # -1: the run's weighted-average probe
        self.num_mixed = inputs.num_layer_rows
        self.sizes = np.array([dim, *settings.hidden_sizes, len(initial[0][-1])])
        self.num_dense = compiled.dense_size(self.sizes)
        dtype = self.features.dtype
        self.flat = np.zeros((len(initial), self.num_dense + self.num_mixed * self.had_mix), dtype)
        for row, parameters in zip(self.flat, initial):
            row[: self.num_dense] = torch.cat([parameter.reshape(-1) for parameter in parameters]).numpy()
        self.moments = [np.zeros_like(self.flat), np.zeros_like(self.flat)]
        self.best = self.flat.copy()
        self.parameters = self.flat  # what evaluate reads
        self.steps_taken = np.zeros(num_runs, dtype=np.int64)
        learning_rate, (beta1, beta2) = settings.learning_rate, _ADAM_BETAS
        self.hyper = np.array(
            [1 - learning_rate * settings.weight_decay, beta1, beta2, 1 - beta1, 1 - beta2, _ADAM_EPS], dtype
        )
        self._set_probes(np.arange(len(initial)))

    def _set_probes(self, probe_ids: np.ndarray) -> None:
        self.probe_ids = probe_ids
        self.probe_runs = self.run_of_id[probe_ids]
        self.active_runs = np.unique(self.probe_runs)

    def train_epoch(self, orders: list[torch.Tensor], targets: torch.Tensor, num_classes: int) -> None:
        """One epoch: each run's minibatches are consecutive stretches of its order in ``orders``."""
        batch_size = self.settings.batch_size
        rows, num_batches = _epoch_rows(self, orders, targets)
        counts = np.clip(rows.counts[:, None] - batch_size * np.arange(num_batches), 0, batch_size)
        # AdamW's step count of each run at each step (a run without rows sits the step out)
        steps = self.steps_taken[:, None] + np.cumsum(counts > 0, axis=1)
        self.steps_taken = steps[:, -1]
        (beta1, beta2), learning_rate = _ADAM_BETAS, self.settings.learning_rate
        corrections = np.stack([learning_rate / (1 - beta1**steps), np.sqrt(1 - beta2**steps)], axis=-1)
        shape = (len(orders), num_batches, batch_size)
        compiled.train_epoch(
            self.features,
            rows.first.numpy().reshape(shape),
            counts,
            rows.targets.numpy().reshape(shape),
            self.flat,
            *self.moments,
            self.probe_ids,
            self.input_rows,
            self.run_of_id,
            self.num_mixed,
            self.sizes,
            self.hyper,
            corrections.astype(self.flat.dtype),
        )

    def evaluate(self, rows: _RunRows) -> tuple[np.ndarray, np.ndarray]:
        """Mean cross-entropy (P,) over each probe's run's rows, and predicted classes (P, n)."""
        first, targets = rows.first.numpy(), rows.targets.numpy()
        return compiled.evaluate(
            self.features, first, rows.counts, targets, self.parameters, self.probe_ids, self.input_rows,
            self.run_of_id, self.num_mixed, self.sizes,
        )  # fmt: skip

    def remember_best(self, improved: np.ndarray) -> None:
        """Copy the parameters of the probes whose id is True in ``improved`` (P_all,)."""
        ids = self.probe_ids[improved[self.probe_ids]]
        self.best[ids] = self.flat[ids]

    def keep_only(self, active: np.ndarray) -> None:
        """Keep training the probes whose id is True in ``active``."""
        self._set_probes(self.probe_ids[active[self.probe_ids]])

    def restore_best(self) -> None:
        """Every probe, with its best-epoch parameters (for predicting)."""
        self._set_probes(np.arange(len(self.flat)))
        self.parameters = self.best

    def kept_parameters(self) -> tuple[list[np.ndarray], np.ndarray | None]:
        """As :meth:`_ProbeStack.kept_parameters`."""
        dense, offset = [], 0
        for fan_in, fan_out in zip(self.sizes[:-1], self.sizes[1:]):
            dense.append(self.best[:, offset : offset + fan_in * fan_out].reshape(-1, fan_in, fan_out))
            dense.append(self.best[:, offset + fan_in * fan_out : offset + (fan_in + 1) * fan_out])
            offset += (fan_in + 1) * fan_out
        if not self.had_mix:
            return dense, None
        mix = torch.from_numpy(self.best[self.num_fixed_ids :, self.num_dense :])
        return dense, torch.softmax(mix, dim=1).numpy()


@dataclass(frozen=True)
class _Run:
    """A run's seed and its split's rows as int64 tensors on the training device."""

    seed: int
    train: torch.Tensor
    validation: torch.Tensor
    test: torch.Tensor


def _runs(splits: Sequence[FoldSplit], seeds: Sequence[int], device: torch.device) -> list[_Run]:
    """Each run's rows as tensors on ``device`` (copies: the arrays may be read-only)."""
    return [
        _Run(
            seed,
            *(
                torch.tensor(np.asarray(rows, dtype=np.int64), device=device)
                for rows in (split.train, split.validation, split.test)
            ),
        )
        for split, seed in zip(splits, seeds, strict=True)
    ]


def _run_rows(
    stack: _ProbeStack | _CompiledStack, per_run: list[torch.Tensor], targets: torch.Tensor, length: int
) -> _RunRows:
    """``per_run`` rows (one tensor per run) padded to ``length`` with each run's first row."""
    counts = np.array([min(len(rows), length) for rows in per_run])
    padded = torch.stack(
        [torch.cat([rows[:length], rows[:1].expand(length - count)]) for rows, count in zip(per_run, counts)]
    )
    return _RunRows(first=stack.run_starts[:, None] + padded * stack.num_rows, targets=targets[padded], counts=counts)


def _epoch_rows(
    stack: _ProbeStack | _CompiledStack, orders: list[torch.Tensor], targets: torch.Tensor
) -> tuple[_RunRows, int]:
    """An epoch's rows in every run's order, padded to as many whole minibatches as the longest
    run still training has; and that number of minibatches."""
    batch_size = stack.settings.batch_size
    num_batches = max(math.ceil(len(orders[g]) / batch_size) for g in stack.active_runs)
    return _run_rows(stack, orders, targets, num_batches * batch_size), num_batches


def _train_together(
    inputs: ProbeInputs,
    runs: list[_Run],
    targets: torch.Tensor,
    num_classes: int,
    settings: ProbeSettings,
    stack_type: type[_ProbeStack] | type[_CompiledStack] = _ProbeStack,
) -> list[ProbeResults]:
    """The ``"batched"`` and ``"compiled"`` trainers of :func:`train_probes`."""
    num_fixed = len(inputs.rows)
    fixed_names, mix_names = inputs.names[:num_fixed], inputs.names[num_fixed:]
    ids_of_run = [
        np.concatenate([g * num_fixed + np.arange(num_fixed), [len(runs) * num_fixed + g] * len(mix_names)]).astype(int)
        for g in range(len(runs))
    ]
    dim = inputs.features.shape[-1]
    initial = [
        initial_parameters(run.seed, name, dim, settings.hidden_sizes, num_classes)
        for names in (fixed_names, mix_names)
        for run in runs
        for name in names
    ]
    stack = stack_type(inputs, initial, settings)
    name_of_id = [fixed_names[i % num_fixed] for i in range(stack.num_fixed_ids)] + list(mix_names) * len(runs)
    longest = max(len(run.validation) for run in runs)
    validation = _run_rows(stack, [run.validation for run in runs], targets, longest)
    stopping = EarlyStopping(len(name_of_id), settings.patience)
    progress = Progress(
        settings.max_epochs, "epochs", label="probes (ETA if none stops early)", logger=logger, interval_s=_PROGRESS_S
    )
    for epoch in range(1, settings.max_epochs + 1):
        stack.train_epoch([epoch_order(run.seed, epoch, run.train) for run in runs], targets, num_classes)
        losses = np.full(len(name_of_id), np.nan)
        losses[stack.probe_ids] = stack.evaluate(validation)[0]
        improved = stopping.update(epoch, losses)
        progress.update()
        stack.remember_best(improved)
        stopped = stack.probe_ids[~stopping.active[stack.probe_ids]]
        if stopped.size:
            logger.info(
                "epoch %d: stopped %s; %d probes still training",
                epoch,
                ", ".join(
                    f"{name_of_id[i]} (run {stack.run_of_id[i]})" if len(runs) > 1 else name_of_id[i] for i in stopped
                ),
                stopping.active.sum(),
            )
            if not stopping.active.any():
                break
            stack.keep_only(stopping.active)
    stack.restore_best()
    longest = max(len(run.test) for run in runs)
    predictions = stack.evaluate(_run_rows(stack, [run.test for run in runs], targets, longest))[1]
    dense, layer_weights = stack.kept_parameters()
    return [
        ProbeResults(
            names=inputs.names,
            predictions=predictions[ids, : len(run.test)],
            epochs=stopping.epochs[ids],
            best_epoch=stopping.best_epoch[ids],
            best_validation_loss=stopping.best_loss[ids],
            layer_weights=None if layer_weights is None else layer_weights[g],
            parameters=[parameter[ids] for parameter in dense],
        )
        for g, (run, ids) in enumerate(zip(runs, ids_of_run))
    ]


def _train_compiled(
    inputs: ProbeInputs, runs: list[_Run], targets: torch.Tensor, num_classes: int, settings: ProbeSettings
) -> list[ProbeResults]:
    """The ``"compiled"`` trainer of :func:`train_probes` (CPU only), on torch's thread count."""
    if inputs.features.device.type != "cpu":
        raise ValueError(f"the compiled probe trainer runs on the CPU, not on {inputs.features.device}")
    with compiled.running_on(torch.get_num_threads()):
        return _train_together(inputs, runs, targets, num_classes, settings, _CompiledStack)


def _one_at_a_time(
    train_one, inputs: ProbeInputs, runs: list[_Run], targets: torch.Tensor, num_classes: int, settings: ProbeSettings
) -> list[ProbeResults]:
    """Train each probe of each run alone with ``train_one`` (a trainer's signature); join each run's results."""
    joined = []
    for g, run in enumerate(runs):
        single = [
            train_one(inputs.run(g).probe(index), [run], targets, num_classes, settings)[0]
            for index in range(len(inputs.names))
        ]
        mixes = [results.layer_weights for results in single if results.layer_weights is not None]
        joined.append(
            ProbeResults(
                names=inputs.names,
                predictions=np.concatenate([results.predictions for results in single]),
                **{
                    key: np.concatenate([getattr(results, key) for results in single])
                    for key in ("epochs", "best_epoch", "best_validation_loss")
                },
                layer_weights=mixes[0] if mixes else None,
                parameters=[
                    np.concatenate(per_layer) for per_layer in zip(*(results.parameters for results in single))
                ],
            )
        )
    return joined


class _ReferenceProbe(nn.Module):
    """One probe as plain ``torch.nn`` modules, optionally behind a softmax-weighted layer mix."""

    def __init__(self, initial: list[torch.Tensor], num_mixed_layers: int | None):
        super().__init__()
        modules: list[nn.Module] = []
        for index in range(0, len(initial), 2):
            weight, bias = initial[index], initial[index + 1]
            linear = nn.Linear(*weight.shape)
            with torch.no_grad():
                linear.weight.copy_(weight.T)
                linear.bias.copy_(bias)
            modules += [linear, nn.ReLU()]
        self.mlp = nn.Sequential(*modules[:-1])
        self.mix_logits = nn.Parameter(torch.zeros(num_mixed_layers)) if num_mixed_layers else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B, C); with a layer mix, (L + 1, B, D) -> (B, C)."""
        if self.mix_logits is not None:
            x = (torch.softmax(self.mix_logits, dim=0)[:, None, None] * x).sum(dim=0)
        return self.mlp(x)


def _train_reference_probe(
    inputs: ProbeInputs, runs: list[_Run], targets: torch.Tensor, num_classes: int, settings: ProbeSettings
) -> list[ProbeResults]:
    """The one probe of the one run of ``inputs`` as ``torch.nn`` modules, with autograd and torch's
    default AdamW."""
    (name,), (run,) = inputs.names, runs
    is_mix = not inputs.rows
    features = inputs.features[0]  # (N, R, D)

    def select(rows: torch.Tensor) -> torch.Tensor:
        """(B, D) rows of the probe's input, or (L + 1, B, D) of the layers it mixes."""
        if is_mix:
            return features[rows, : inputs.num_layer_rows].transpose(0, 1)
        return features[rows, inputs.rows[0]]

    initial = initial_parameters(run.seed, name, features.shape[-1], settings.hidden_sizes, num_classes)
    probe = _ReferenceProbe(initial, inputs.num_layer_rows if is_mix else None).to(features)
    optimizer = torch.optim.AdamW(probe.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    best_state = copy.deepcopy(probe.state_dict())
    stopping = EarlyStopping(1, settings.patience)
    for epoch in range(1, settings.max_epochs + 1):
        for batch in epoch_order(run.seed, epoch, run.train).split(settings.batch_size):
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(probe(select(batch)), targets[batch]).backward()
            optimizer.step()
        with torch.no_grad():
            loss = F.cross_entropy(probe(select(run.validation)), targets[run.validation]).item()
        if stopping.update(epoch, np.array([loss]))[0]:
            best_state = copy.deepcopy(probe.state_dict())
        if not stopping.active[0]:
            break
    probe.load_state_dict(best_state)
    with torch.no_grad():
        predictions = probe(select(run.test)).argmax(dim=-1)[None].cpu().numpy()
    linears = [module for module in probe.mlp if isinstance(module, nn.Linear)]
    return [
        ProbeResults(
            names=inputs.names,
            predictions=predictions,
            epochs=stopping.epochs,
            best_epoch=stopping.best_epoch,
            best_validation_loss=stopping.best_loss,
            layer_weights=torch.softmax(probe.mix_logits.detach(), dim=0).cpu().numpy() if is_mix else None,
            parameters=[t.detach()[None].cpu().numpy() for m in linears for t in (m.weight.T, m.bias)],
        )
    ]


#: What :func:`train_probes` can train with, the first being the one the workflow uses.
TRAINERS = {
    "compiled": _train_compiled,
    "batched": _train_together,
    "sequential": functools.partial(_one_at_a_time, _train_together),
    "reference": functools.partial(_one_at_a_time, _train_reference_probe),
}


def train_probes(
    inputs: ProbeInputs,
    labels: np.ndarray,
    splits: Sequence[FoldSplit],
    seeds: Sequence[int],
    num_classes: int,
    settings: ProbeSettings,
    trainer: str | None = None,
) -> list[ProbeResults]:
    """Train one probe per input of ``inputs`` in each run; predict each run's test rows.

    Parameters
    ----------
    inputs : ProbeInputs
        Standardised features (G, N, R, D) of G runs and the probe order; their device and
        dtype are used.
    labels : (N,) int array
        Class index of every row.
    splits : G FoldSplits
        Each run's training rows (minibatches), validation rows (early stopping) and test rows
        (predictions).
    seeds : G ints
        Each run's seed: its initial weights (per input name) and minibatch order (per epoch).
    num_classes : int
    settings : ProbeSettings
    trainer : str or None
        ``"compiled"`` (each epoch of all probes of all runs one compiled call; CPU only),
        ``"batched"`` (all probes of all runs in one PyTorch computation; any device), or a
        one-probe-at-a-time reference: ``"sequential"`` (the batched code, probe axis of length
        one: the same results) or ``"reference"`` (``torch.nn`` and autograd: the same up to
        rounding); see the module docstring. None: compiled on the CPU, batched elsewhere.

    Returns
    -------
    One ProbeResults per run, in the order of ``splits``.
    """
    if trainer is None:
        trainer = "compiled" if inputs.features.device.type == "cpu" else "batched"
    if trainer not in TRAINERS:
        raise ValueError(f"unknown probe trainer {trainer!r}; choose from {sorted(TRAINERS)}")
    if not len(splits) == len(seeds) == inputs.num_runs:
        raise ValueError(
            f"{inputs.num_runs} runs of inputs, {len(splits)} splits and {len(seeds)} seeds: give one each"
        )
    device = inputs.features.device
    targets = torch.tensor(np.asarray(labels, dtype=np.int64), device=device)
    return TRAINERS[trainer](inputs, _runs(splits, seeds, device), targets, num_classes, settings)
