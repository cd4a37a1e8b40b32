"""Training the paper's probe on many inputs at once, and one input at a time as references.

The probe (Li et al., SLT 2022) is an MLP: input -> dense 128 -> ReLU -> dense 16 -> ReLU ->
dense to the classes, trained with softmax cross-entropy and AdamW until the validation loss
stops improving; the weights of the best validation epoch are kept.

:func:`train_probes` trains every input of a fold in one computation (``trainer="batched"``):
each dense layer's weights are stacked on a leading probe axis and applied with
``torch.baddbmm`` (the weighted-average probe on the same axis as the fixed-input ones, after
them), every probe sees the same minibatches, and each probe's gradient, that of its own mean
cross-entropy, is written by hand into one buffer kept across steps, which one call of the
fused AdamW kernel then applies. A probe whose validation loss has not improved for
``patience`` epochs stops: it leaves the stack (its parameters and AdamW state are frozen
where they were, its best weights kept), so later epochs cost only what the probes still
training need.

Two references train the same probes one by one from the same initial weights and
minibatches: ``"sequential"`` runs the batched code with a probe axis of length one (what
batching saves), ``"reference"`` uses ``torch.nn`` modules, autograd and torch's default AdamW
(an independent check of the hand-written gradients). Tests and ``bench/probe.py`` compare them.
"""

from __future__ import annotations

import copy
import functools
import logging
import math
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


#: AdamW's other hyper-parameters: torch's defaults, which the reference trainer uses.
_ADAM_BETAS, _ADAM_EPS = (0.9, 0.999), 1e-8


def _views(flat: torch.Tensor, shapes: list[tuple[int, ...]]) -> list[torch.Tensor]:
    """Consecutive views of the 1-D ``flat`` with the given shapes."""
    sizes = [math.prod(shape) for shape in shapes]
    return [part.view(shape) for part, shape in zip(flat.split(sizes), shapes)]


class _ProbeStack:
    """The probes of a fold trained together: each dense layer's weights on a leading probe axis.

    The fixed-input probes come first, each reading its own input; the weighted-average probe, if
    any, comes last and reads the softmax-weighted mix of the layers. All parameters live in one
    flat buffer (each layer's weights and biases, and the mix logits, are views of it), and so do
    their gradients and AdamW's two moments: a training step writes the hand-derived gradients in
    place with a few batched products, then makes one call of the fused AdamW kernel.
    """

    def __init__(self, inputs: ProbeInputs, initial: list[list[torch.Tensor]], settings: ProbeSettings):
        self.settings = settings
        like = inputs.features
        # (N * R, D), utterance-major: row n * R + r is utterance n's input r. A minibatch's inputs
        # are one index_select, which reads each utterance's rows from one stretch of memory.
        self.features = like.transpose(0, 1).reshape(-1, like.shape[-1])
        self.num_rows = like.shape[0]
        self.layer_rows = torch.arange(inputs.num_layer_rows, device=like.device)
        self.all_fixed_rows = torch.tensor(inputs.rows, dtype=torch.int64, device=like.device)
        self.all_ids = np.arange(len(inputs.names))  # a probe's id is its position in ``inputs.names``
        self.had_mix = inputs.has_weighted_average
        # W (P, in, out) and b (P, 1, out) per dense layer, so that a layer is one baddbmm.
        dense = [torch.stack(tensors).view(len(initial), -1, tensors[0].shape[-1]) for tensors in zip(*initial)]
        self.num_dense = len(dense)
        mix = [torch.zeros(1, inputs.num_layer_rows)] if self.had_mix else []
        self.best = [parameter.to(like) for parameter in dense + mix]
        self.restore_best()  # every probe, at its initial weights ...
        self._place(self.best, moments=None)  # ... copied into the training buffers
        self.step = torch.zeros((), dtype=torch.float32, device=like.device)  # AdamW's, shared by all probes

    def _place(self, parameters: list[torch.Tensor], moments: list[list[torch.Tensor]] | None) -> None:
        """Copy ``parameters`` and AdamW's two moments of each (zeros if None) into fresh flat buffers."""
        shapes = [tuple(parameter.shape) for parameter in parameters]
        self.flat = torch.cat([parameter.reshape(-1) for parameter in parameters])
        self.flat_grad = torch.empty_like(self.flat)
        self.flat_moments = (
            [torch.cat([tensor.reshape(-1) for tensor in moment]) for moment in moments]
            if moments
            else [torch.zeros_like(self.flat), torch.zeros_like(self.flat)]
        )
        self.parameters = _views(self.flat, shapes)
        self.gradients = _views(self.flat_grad, shapes)

    @property
    def mix_logits(self) -> torch.Tensor | None:
        """(1, L + 1) logits of the weighted-average probe's layer weights; None when it is not here."""
        return self.parameters[-1] if self.has_mix else None

    def _forward(
        self, rows: torch.Tensor
    ) -> tuple[list[torch.Tensor], tuple[torch.Tensor, torch.Tensor] | None, torch.Tensor]:
        """Each dense layer's input (P, B, in); if the mix trains, the mixed layers (L + 1, B, D) and
        their softmax weights (1, L + 1); logits (P, B, C)."""
        num_fixed, dim = len(self.fixed_rows), self.features.shape[-1]
        x = torch.empty(num_fixed + self.has_mix, len(rows), dim, dtype=self.features.dtype, device=rows.device)
        first_rows = rows * self.num_rows  # of each utterance's inputs in ``features``
        fixed_inputs = (self.fixed_rows[:, None] + first_rows).view(-1)
        torch.index_select(self.features, 0, fixed_inputs, out=x[:num_fixed].view(-1, dim))
        mix = None
        if self.has_mix:
            layers = self.features.index_select(0, (self.layer_rows[:, None] + first_rows).view(-1))
            # (1, L + 1) weights times the (L + 1, B * D) layers: the last probe's input
            weights = torch.softmax(self.mix_logits, dim=1)
            torch.mm(weights, layers.view(len(self.layer_rows), -1), out=x[-1].view(1, -1))
            mix = layers.view(len(self.layer_rows), len(rows), dim), weights
        layer_inputs = []
        for index in range(0, self.num_dense, 2):
            if index:
                x = torch.relu(x)
            layer_inputs.append(x)
            x = torch.baddbmm(self.parameters[index + 1], x, self.parameters[index])
        return layer_inputs, mix, x

    def train_step(self, rows: torch.Tensor, one_hot: torch.Tensor) -> None:
        """One AdamW step of every probe on the minibatch ``rows`` (B,) with targets ``one_hot`` (B, C).

        Each probe's gradient is that of its own mean cross-entropy over the minibatch.
        """
        layer_inputs, mix, logits = self._forward(rows)
        # d(mean cross-entropy)/d(logits) = (softmax - one-hot) / B
        upstream = torch.softmax(logits, dim=-1).sub_(one_hot).div_(len(rows))
        for index in range(self.num_dense - 2, -1, -2):
            layer_input = layer_inputs[index // 2]
            torch.bmm(layer_input.transpose(1, 2), upstream, out=self.gradients[index])
            torch.sum(upstream, dim=1, keepdim=True, out=self.gradients[index + 1])
            if index:  # on to the layer's input, through the ReLU whose output it is
                upstream = torch.bmm(upstream, self.parameters[index].transpose(1, 2))
                upstream = torch.ops.aten.threshold_backward(upstream, layer_input, 0)
        if mix is not None:
            # The mix's gradient (B, D) is the last probe's upstream (B, H) times its W^T (H, D);
            # dLoss/dw_l sums layer_l times it over b and d; then through the softmax, whose
            # Jacobian is diag(w) - w w^T.
            layers, weights = mix
            mix_gradient = torch.mm(upstream[-1], self.parameters[0][-1].T)
            by_weight = torch.mv(layers.view(len(self.layer_rows), -1), mix_gradient.view(-1))[None]
            torch.mul(weights, by_weight - (weights * by_weight).sum(), out=self.gradients[-1])
        self.step += 1
        # The kernel of torch.optim.AdamW(fused=True), called once for the whole buffer: the
        # optimiser's own per-step bookkeeping cost more than the update itself.
        torch._fused_adamw_(
            [self.flat],
            [self.flat_grad],
            [self.flat_moments[0]],
            [self.flat_moments[1]],
            [],
            [self.step],
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
            selected = torch.from_numpy(local).to(self.flat.device)
            ids = torch.from_numpy(self.probe_ids[local]).to(self.flat.device)
            for best, parameter in zip(self.best[: self.num_dense], self.parameters):
                best[ids] = parameter[selected]
            if self.has_mix and local[-1]:
                self.best[-1].copy_(self.mix_logits)

    def keep_only(self, active: np.ndarray) -> None:
        """Keep training the probes whose id is True in ``active`` (at least one); the others leave
        with their AdamW state, so that later steps cost only what the probes still training need."""
        local = active[self.probe_ids]
        selected = torch.from_numpy(local).to(self.flat.device)
        keeps_mix = self.has_mix and bool(local[-1])
        shapes = [tuple(parameter.shape) for parameter in self.parameters]

        def kept(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
            return [tensor[selected] for tensor in tensors[: self.num_dense]] + (tensors[-1:] if keeps_mix else [])

        moments = [kept(_views(moment, shapes)) for moment in self.flat_moments]
        self._place(kept(self.parameters), moments)
        self.fixed_rows = self.fixed_rows[selected[: len(self.fixed_rows)]]
        self.has_mix = keeps_mix
        self.probe_ids = self.probe_ids[local]

    def restore_best(self) -> None:
        """Every probe, with its best-epoch parameters (not a training state: for predicting)."""
        self.probe_ids = self.all_ids
        self.fixed_rows = self.all_fixed_rows
        self.has_mix = self.had_mix
        self.parameters = self.best

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
    stack = _ProbeStack(inputs, initial, settings)
    stopping = EarlyStopping(len(inputs.names), settings.patience)
    for epoch in range(1, settings.max_epochs + 1):
        for batch in epoch_batches(seed, epoch, fold.train, settings.batch_size):
            stack.train_step(batch, one_hot.index_select(0, batch))
        losses = np.full(len(inputs.names), np.nan)
        losses[stack.probe_ids] = stack.evaluate(fold.validation, fold.targets)[0]
        improved = stopping.update(epoch, losses)
        stack.remember_best(improved)
        stopped = stack.probe_ids[~stopping.active[stack.probe_ids]]
        if stopped.size:
            logger.info(
                "epoch %d: stopped %s; %d probes still training",
                epoch,
                ", ".join(inputs.names[i] for i in stopped),
                stopping.active.sum(),
            )
            if not stopping.active.any():
                break
            stack.keep_only(stopping.active)
    stack.restore_best()
    best_dense = stack.best[: stack.num_dense]
    return ProbeResults(
        names=inputs.names,
        predictions=stack.evaluate(fold.test, fold.targets)[1],
        epochs=stopping.epochs,
        best_epoch=stopping.best_epoch,
        best_validation_loss=stopping.best_loss,
        layer_weights=torch.softmax(stack.best[-1][0], dim=0).cpu().numpy() if stack.had_mix else None,
        parameters=[p.squeeze(1).cpu().numpy() if i % 2 else p.cpu().numpy() for i, p in enumerate(best_dense)],
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
