"""Training the paper's probe on many inputs at once, and one input at a time as references.

The probe (Li et al., SLT 2022) is an MLP: input -> dense 128 -> ReLU -> dense 16 -> ReLU ->
dense to the classes, trained with softmax cross-entropy and AdamW until the validation loss
stops improving; the weights of the best validation epoch are kept.

:func:`train_probes` trains every input of a fold in one computation (``trainer="batched"``):
each dense layer's weights are stacked on a leading probe axis and applied with
``torch.baddbmm`` (one stack for the fixed-input probes, one for the weighted-average probe),
every probe sees the same minibatches, and each probe's gradient, that of its own mean
cross-entropy, is written by hand into buffers kept across steps. A probe whose validation
loss has not improved for ``patience`` epochs stops: it leaves its stack (its parameters and
AdamW state are frozen where they were, its best weights kept), so later epochs cost only what
the probes still training need.

Two references train the same probes one by one from the same initial weights and
minibatches: ``"sequential"`` runs the batched code with a probe axis of length one (what
batching saves), ``"reference"`` uses ``torch.nn`` modules, autograd and torch's default AdamW
(an independent check of the hand-written gradients). Tests and ``bench/probe.py`` compare them.
"""

from __future__ import annotations

import copy
import functools
import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from paraprobe.probe.inputs import ProbeInputs
from paraprobe.probe.settings import ProbeSettings
from paraprobe.probe.splits import FoldSplit, derive_seed

logger = logging.getLogger("paraprobe")

#: Rows per forward pass when scoring validation or test rows (bounds memory, not results).
_EVALUATION_CHUNK = 1024


@dataclass(frozen=True)
class ProbeResults:
    """What training the probes of one fold and seed yields, probe axis first.

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


def epoch_batches(seed: int, epoch: int, train_rows: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Epoch ``epoch``'s minibatches of ``train_rows``: a shuffle seeded by (seed, epoch), last batch short."""
    generator = torch.Generator().manual_seed(derive_seed(seed, "minibatch order", epoch))
    order = torch.randperm(len(train_rows), generator=generator).to(train_rows.device)
    return list(train_rows[order].split(batch_size))


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


def _per_probe_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy (P,) of logits (P, B, C) against targets (B,)."""
    num_probes, batch, num_classes = logits.shape
    losses = F.cross_entropy(logits.reshape(-1, num_classes), targets.repeat(num_probes), reduction="none")
    return losses.view(num_probes, batch).sum(dim=1)


class _ProbeStack:
    """Probes of one kind trained together: parameters on a leading probe axis, inputs, AdamW.

    One stack holds the fixed-input probes (each reads its own input), another the
    weighted-average probe (reads the mix of the layers). Gradients are written by hand into
    buffers kept across steps: the MLP's backward pass is a few batched products, with no
    autograd graph to record and no fresh gradient tensors each step.
    """

    def __init__(
        self,
        inputs: ProbeInputs,
        probe_ids: np.ndarray,
        initial: list[list[torch.Tensor]],
        settings: ProbeSettings,
        mixes_layers: bool,
    ):
        self.settings = settings
        self.mixes_layers = mixes_layers
        self.all_ids = probe_ids
        self.probe_ids = probe_ids  # the ones still training
        like = inputs.features
        # W (P, in, out) and b (P, 1, out) per dense layer, so that a layer is one baddbmm.
        self.dense = [
            torch.stack([p[i] for p in initial]).view(len(initial), -1, initial[0][i].shape[-1]).to(like)
            for i in range(len(initial[0]))
        ]
        self.mix_logits = (
            torch.zeros(len(probe_ids), inputs.num_layer_rows, dtype=like.dtype, device=like.device)
            if mixes_layers
            else None
        )
        # An utterance-major copy (N, K, D) of the K inputs the stack reads (the probes' own, or
        # the layers it mixes), flattened to (N * K, D): a minibatch's inputs of the probes in
        # training, ``columns`` of K, are then one index_select of contiguous rows.
        rows = (
            torch.arange(inputs.num_layer_rows)
            if mixes_layers
            else torch.tensor([inputs.rows[i] for i in probe_ids], dtype=torch.int64)
        )
        self.num_columns = len(rows)
        self.features = inputs.features.transpose(0, 1)[:, rows.to(like.device)].reshape(-1, like.shape[-1])
        self.columns = torch.arange(self.num_columns, device=like.device)
        self.best = [parameter.clone() for parameter in self.parameters()]
        self._start_optimizer({})

    def parameters(self) -> list[torch.Tensor]:
        return self.dense + ([self.mix_logits] if self.mix_logits is not None else [])

    def _start_optimizer(self, state: dict) -> None:
        """AdamW over the current parameters (with ``state`` carried over), gradients in buffers."""
        for parameter in self.parameters():
            parameter.grad = torch.empty_like(parameter)
        # The fused kernel does AdamW's elementwise update in one pass over each tensor.
        self.optimizer = torch.optim.AdamW(
            self.parameters(), lr=self.settings.learning_rate, weight_decay=self.settings.weight_decay, fused=True
        )
        self.optimizer.state.update(state)

    def _forward(self, rows: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor | None, torch.Tensor]:
        """Each dense layer's input (P, B, in), the gathered layers (B, L + 1, D) of a mix, logits (P, B, C)."""
        flat_rows = (rows[:, None] * self.num_columns + self.columns).view(-1)
        gathered = self.features.index_select(0, flat_rows).view(len(rows), len(self.columns), -1)
        if self.mix_logits is not None:
            # (P, L + 1) weights times each utterance's (L + 1, D) layers -> (B, P, D)
            x = torch.matmul(torch.softmax(self.mix_logits, dim=1), gathered).transpose(0, 1)
        else:
            x = gathered.transpose(0, 1)
        layer_inputs = []
        for index in range(0, len(self.dense), 2):
            if index:
                x = torch.relu(x)
            layer_inputs.append(x)
            x = torch.baddbmm(self.dense[index + 1], x, self.dense[index])
        return layer_inputs, (gathered if self.mix_logits is not None else None), x

    def train_step(self, rows: torch.Tensor, one_hot: torch.Tensor) -> None:
        """One AdamW step of every probe on the minibatch ``rows`` (B,) with targets ``one_hot`` (B, C).

        Each probe's gradient is that of its own mean cross-entropy over the minibatch.
        """
        layer_inputs, gathered, logits = self._forward(rows)
        # d(mean cross-entropy)/d(logits) = (softmax - one-hot) / B
        upstream = torch.softmax(logits, dim=-1).sub_(one_hot).div_(len(rows))
        for index in range(len(self.dense) - 2, -1, -2):
            weight, bias = self.dense[index], self.dense[index + 1]
            layer_input = layer_inputs[index // 2]
            torch.bmm(layer_input.transpose(1, 2), upstream, out=weight.grad)
            torch.sum(upstream, dim=1, keepdim=True, out=bias.grad)
            if index or gathered is not None:
                upstream = torch.bmm(upstream, weight.transpose(1, 2))
                if index:  # through the ReLU whose output is layer_input
                    upstream = torch.ops.aten.threshold_backward(upstream, layer_input, 0)
        if gathered is not None:
            # dLoss/dw_l = sum over b, d of layer_l * upstream, as (B, L + 1, D) @ (B, D, P) summed over B;
            # then through the softmax, whose Jacobian is diag(w) - w w^T.
            weights = torch.softmax(self.mix_logits, dim=1)
            by_weight = torch.bmm(gathered, upstream.permute(1, 2, 0)).sum(dim=0).T
            torch.mul(weights, by_weight - (weights * by_weight).sum(dim=1, keepdim=True), out=self.mix_logits.grad)
        self.optimizer.step()

    def remember_best(self, improved: np.ndarray) -> None:
        """Copy the parameters of the probes whose global id is True in ``improved`` (P_all,)."""
        local = improved[self.probe_ids]
        if local.any():
            positions = torch.from_numpy(np.searchsorted(self.all_ids, self.probe_ids[local]))
            selected = torch.from_numpy(local)
            for best, parameter in zip(self.best, self.parameters()):
                best[positions.to(best.device)] = parameter[selected.to(best.device)]

    def keep_only(self, active: np.ndarray) -> None:
        """Keep the probes whose global id is True in ``active``; the others leave with their AdamW state,
        so that later steps cost only what the probes still training need."""
        keep = torch.from_numpy(active[self.probe_ids]).to(self.dense[0].device)
        old_state = self.optimizer.state
        kept_state = {}
        kept_parameters = []
        for parameter in self.parameters():
            kept = parameter[keep]
            kept_state[kept] = {
                key: value[keep] if value.ndim > 0 else value.clone() for key, value in old_state[parameter].items()
            }
            kept_parameters.append(kept)
        self.dense = kept_parameters[: len(self.dense)]
        self.mix_logits = kept_parameters[-1] if self.mixes_layers else None
        if not self.mixes_layers:
            self.columns = self.columns[keep]
        self.probe_ids = self.probe_ids[active[self.probe_ids]]
        self._start_optimizer(kept_state)

    def restore_best(self) -> None:
        """Every probe of the stack, with its best-epoch parameters, for predicting."""
        self.probe_ids = self.all_ids
        self.columns = torch.arange(self.num_columns, device=self.columns.device)
        self.dense = self.best[: len(self.dense)]
        self.mix_logits = self.best[-1] if self.mixes_layers else None

    def evaluate(self, rows: torch.Tensor, targets: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Mean cross-entropy (P,) and predicted classes (P, len(rows)) on ``rows``."""
        loss_sum = 0.0
        predictions = []
        for chunk in rows.split(_EVALUATION_CHUNK):
            logits = self._forward(chunk)[-1]
            loss_sum = loss_sum + _per_probe_loss(logits, targets[chunk])
            predictions.append(logits.argmax(dim=-1))
        return (loss_sum / len(rows)).cpu().numpy(), torch.cat(predictions, dim=1).cpu().numpy()


@dataclass(frozen=True)
class _FoldTensors:
    """A fold's index tensors on the training device: targets (N,) and the split's rows."""

    targets: torch.Tensor
    train: torch.Tensor
    validation: torch.Tensor
    test: torch.Tensor


def _fold_tensors(labels: np.ndarray, split: FoldSplit, device: torch.device) -> _FoldTensors:
    """Class and row indices as int64 tensors on ``device`` (copies: the arrays may be read-only)."""
    return _FoldTensors(
        *(
            torch.tensor(np.asarray(indices, dtype=np.int64), device=device)
            for indices in (labels, split.train, split.validation, split.test)
        )
    )


def _train_together(
    inputs: ProbeInputs, fold: _FoldTensors, num_classes: int, settings: ProbeSettings, seed: int
) -> ProbeResults:
    """The ``"batched"`` trainer of :func:`train_probes`."""
    one_hot = F.one_hot(fold.targets, num_classes).to(inputs.features.dtype)
    initial = [
        initial_parameters(seed, name, inputs.features.shape[-1], settings.hidden_sizes, num_classes)
        for name in inputs.names
    ]
    num_fixed = len(inputs.rows)
    groups = [(np.arange(num_fixed), False), (np.arange(num_fixed, len(inputs.names)), True)]
    all_stacks = [
        _ProbeStack(inputs, ids, [initial[i] for i in ids], settings, mixes_layers)
        for ids, mixes_layers in groups
        if ids.size
    ]
    training = list(all_stacks)
    stopping = EarlyStopping(len(inputs.names), settings.patience)
    for epoch in range(1, settings.max_epochs + 1):
        for batch in epoch_batches(seed, epoch, fold.train, settings.batch_size):
            batch_one_hot = one_hot.index_select(0, batch)
            for stack in training:
                stack.train_step(batch, batch_one_hot)
        losses = np.full(len(inputs.names), np.nan)
        for stack in training:
            losses[stack.probe_ids] = stack.evaluate(fold.validation, fold.targets)[0]
        improved = stopping.update(epoch, losses)
        for stack in training:
            stack.remember_best(improved)
        stopped = [i for stack in training for i in stack.probe_ids if not stopping.active[i]]
        if stopped:
            logger.info(
                "epoch %d: stopped %s; %d probes still training",
                epoch,
                ", ".join(inputs.names[i] for i in stopped),
                stopping.active.sum(),
            )
            for stack in training:
                if not stopping.active[stack.probe_ids].all():
                    stack.keep_only(stopping.active)
            training = [stack for stack in training if stack.probe_ids.size]
        if not training:
            break
    predictions = []
    for stack in all_stacks:
        stack.restore_best()
        predictions.append(stack.evaluate(fold.test, fold.targets)[1])
    best = [torch.cat(tensors) for tensors in zip(*(stack.best[: len(stack.dense)] for stack in all_stacks))]
    mix_stack = all_stacks[-1] if all_stacks[-1].mixes_layers else None
    return ProbeResults(
        names=inputs.names,
        predictions=np.concatenate(predictions),
        epochs=stopping.epochs,
        best_epoch=stopping.best_epoch,
        best_validation_loss=stopping.best_loss,
        layer_weights=torch.softmax(mix_stack.best[-1][0], dim=0).cpu().numpy() if mix_stack else None,
        parameters=[p.squeeze(1).cpu().numpy() if i % 2 else p.cpu().numpy() for i, p in enumerate(best)],
    )


def _one_probe(inputs: ProbeInputs, probe_index: int) -> ProbeInputs:
    """The inputs of probe ``probe_index`` alone (the same features tensor, not a copy)."""
    return ProbeInputs(
        names=(inputs.names[probe_index],),
        features=inputs.features,
        rows=inputs.rows[probe_index : probe_index + 1],
        num_layer_rows=inputs.num_layer_rows,
    )


def _one_at_a_time(
    train_one, inputs: ProbeInputs, fold: _FoldTensors, num_classes: int, settings: ProbeSettings, seed: int
) -> ProbeResults:
    """Train each probe of ``inputs`` alone with ``train_one`` (a trainer's signature); join the results."""
    single = [
        train_one(_one_probe(inputs, index), fold, num_classes, settings, seed) for index in range(len(inputs.names))
    ]
    mixes = [results.layer_weights for results in single if results.layer_weights is not None]
    return ProbeResults(
        names=inputs.names,
        predictions=np.concatenate([results.predictions for results in single]),
        **{
            key: np.concatenate([getattr(results, key) for results in single])
            for key in ("epochs", "best_epoch", "best_validation_loss")
        },
        layer_weights=mixes[0] if mixes else None,
        parameters=[np.concatenate(per_layer) for per_layer in zip(*(results.parameters for results in single))],
    )


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
    inputs: ProbeInputs, fold: _FoldTensors, num_classes: int, settings: ProbeSettings, seed: int
) -> ProbeResults:
    """The one probe of ``inputs`` as ``torch.nn`` modules, with autograd and torch's default AdamW."""
    (name,) = inputs.names
    is_mix = not inputs.rows

    def select(rows: torch.Tensor) -> torch.Tensor:
        """(B, D) rows of the probe's input, or (L + 1, B, D) of the layers it mixes."""
        return inputs.features[: inputs.num_layer_rows, rows] if is_mix else inputs.features[inputs.rows[0], rows]

    initial = initial_parameters(seed, name, inputs.features.shape[-1], settings.hidden_sizes, num_classes)
    probe = _ReferenceProbe(initial, inputs.num_layer_rows if is_mix else None).to(inputs.features)
    optimizer = torch.optim.AdamW(probe.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    best_state = copy.deepcopy(probe.state_dict())
    stopping = EarlyStopping(1, settings.patience)
    for epoch in range(1, settings.max_epochs + 1):
        for batch in epoch_batches(seed, epoch, fold.train, settings.batch_size):
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(probe(select(batch)), fold.targets[batch]).backward()
            optimizer.step()
        with torch.no_grad():
            loss = F.cross_entropy(probe(select(fold.validation)), fold.targets[fold.validation]).item()
        if stopping.update(epoch, np.array([loss]))[0]:
            best_state = copy.deepcopy(probe.state_dict())
        if not stopping.active[0]:
            break
    probe.load_state_dict(best_state)
    with torch.no_grad():
        predictions = probe(select(fold.test)).argmax(dim=-1)[None].cpu().numpy()
    linears = [module for module in probe.mlp if isinstance(module, nn.Linear)]
    return ProbeResults(
        names=inputs.names,
        predictions=predictions,
        epochs=stopping.epochs,
        best_epoch=stopping.best_epoch,
        best_validation_loss=stopping.best_loss,
        layer_weights=torch.softmax(probe.mix_logits.detach(), dim=0).cpu().numpy() if is_mix else None,
        parameters=[t.detach()[None].cpu().numpy() for m in linears for t in (m.weight.T, m.bias)],
    )


#: What :func:`train_probes` can train with, the first being the one the workflow uses.
TRAINERS = {
    "batched": _train_together,
    "sequential": functools.partial(_one_at_a_time, _train_together),
    "reference": functools.partial(_one_at_a_time, _train_reference_probe),
}


def train_probes(
    inputs: ProbeInputs,
    labels: np.ndarray,
    split: FoldSplit,
    num_classes: int,
    settings: ProbeSettings,
    seed: int,
    trainer: str = "batched",
) -> ProbeResults:
    """Train one probe per input of ``inputs``; predict the test rows of ``split``.

    Parameters
    ----------
    inputs : ProbeInputs
        Standardised features (R, N, D) and the probe order; their device and dtype are used.
    labels : (N,) int array
        Class index of every row.
    split : FoldSplit
        Training rows (minibatches), validation rows (early stopping), test rows (predictions).
    num_classes : int
    settings : ProbeSettings
    seed : int
        Seeds the initial weights (per input name) and the minibatch order (per epoch).
    trainer : str
        ``"batched"`` (all probes in one computation), or a one-probe-at-a-time reference:
        ``"sequential"`` (the same code, probe axis of length one: the same results) or
        ``"reference"`` (``torch.nn`` and autograd: the same up to rounding); see the module
        docstring.
    """
    if trainer not in TRAINERS:
        raise ValueError(f"unknown probe trainer {trainer!r}; choose from {sorted(TRAINERS)}")
    return TRAINERS[trainer](inputs, _fold_tensors(labels, split, inputs.features.device), num_classes, settings, seed)
