"""Exact padded batching of speech encoders, and length-bucketed batch plans.

A batch pads its utterances with zeros to the longest one. For every valid frame of
every utterance to equal what a one-utterance pass computes, each operation that mixes
time steps must see exactly what it would see alone.

The convolutional feature encoder (CNN) runs in one of two exact ways:

- ``per_utterance``: each utterance's own samples go through the CNN alone (the very
  computation of a one-utterance pass) and the outputs are zero-padded to the batch's
  frame count. Fastest on a CPU, where the CNN gains nothing from batching and its
  large first-layer activations stay in cache one utterance at a time.
- ``batched``: the padded batch goes through the CNN at once, which suits a GPU
  (:class:`MatmulFeatureEncoder`). Its convolutions have no padding, so an output frame
  whose receptive field ends inside the utterance reads only the utterance's samples
  (:func:`paraprobe.framing.num_model_frames` counts exactly those frames). But a
  GroupNorm (``feat_extract_norm == "group"``: wav2vec2-base, HuBERT-base) normalises
  each channel over *all* time steps, padding included; Hugging Face's model does not
  pass the attention mask to it, which is why its docs advise against batching these
  models. :func:`valid_steps_group_norm` takes each utterance's statistics over its
  valid steps instead. What padded steps hold afterwards no valid frame ever reads.

In the transformer:

- self-attention gets the attention mask, from which Hugging Face derives the frame mask;
- its convolutions (the positional convolution; data2vec-audio stacks five, each
  followed by a LayerNorm that makes padded positions non-zero) get their input zeroed
  beyond each utterance's end by a forward pre-hook: exactly the zero padding the
  convolution adds after a lone utterance;
- everything else acts on one frame at a time (linear layers, LayerNorm over channels).

In ``batched`` mode, meant for a GPU, the CNN's convolutions run as matrix products over
windows of frames (:func:`conv1d_as_matmul`) and the transformer's through FFTs
(:class:`FourierConv1d`): cuDNN's own choices for these shapes (one input channel in the
first layer; 16 groups and 128 taps in the positional convolution) do not use the tensor
cores and took most of a GPU's time.

:class:`ExactBatching` installs these on a model; the tests compare batched with
one-at-a-time extraction for every model type in :data:`EXACT_BATCHING_MODEL_TYPES`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import numpy as np
import scipy.fft
import torch
from torch import nn

from paraprobe.framing import num_model_frames

#: Model types whose every time-mixing operation is covered above, checked by the tests.
EXACT_BATCHING_MODEL_TYPES = ("wav2vec2", "hubert", "wavlm", "data2vec-audio", "unispeech", "unispeech-sat")
#: How the feature encoder sees a padded batch (see the module docstring).
FEATURE_ENCODER_MODES = ("per_utterance", "batched")


#: Elements of the largest window matrix :func:`conv1d_as_matmul` builds at once (512 MiB in float16).
WINDOW_ELEMENTS = 2**28


def conv1d_as_matmul(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int, groups: int
) -> torch.Tensor:
    """A 1-D convolution without padding or dilation, of channels-last input, as matrix products.

    Parameters
    ----------
    hidden : (B, T, C_in) tensor
    weight : (C_out, C_in / groups, k) tensor
        An ``nn.Conv1d`` weight.
    bias : (C_out,) tensor or None
    stride, groups : int

    Returns
    -------
    (B, (T - k) // stride + 1, C_out) tensor
        In the dtype autocast gives a matrix product (float16 under CUDA autocast).

    The k input frames of each output frame are copied side by side into a window matrix
    (in slices of utterances of at most :data:`WINDOW_ELEMENTS` elements) and multiplied
    by the kernel, one batched product over groups.
    """
    if torch.is_autocast_enabled(hidden.device.type):
        hidden = hidden.to(torch.get_autocast_dtype(hidden.device.type))  # copy windows in the product's dtype
    hidden = hidden.contiguous()
    batch, steps, in_channels = hidden.shape
    out_channels, group_in, taps = weight.shape
    group_out = out_channels // groups
    out_steps = (steps - taps) // stride + 1
    # kernel[g, j * group_in + c, o] = weight[g * group_out + o, c, j]
    kernel = weight.view(groups, group_out, group_in, taps).permute(0, 3, 2, 1).reshape(groups, -1, group_out)
    windows = hidden.as_strided(
        (batch, out_steps, groups, taps, group_in),
        (steps * in_channels, stride * in_channels, group_in, in_channels, 1),
    )
    per_slice = max(1, WINDOW_ELEMENTS // max(1, out_steps * taps * in_channels))
    pieces = []
    for start in range(0, batch, per_slice):
        window_matrix = windows[start : start + per_slice].permute(2, 0, 1, 3, 4).reshape(groups, -1, taps * group_in)
        product = torch.bmm(window_matrix, kernel.to(window_matrix.dtype))  # (G, b T_out, C_out / G)
        product = product.view(groups, -1, out_steps, group_out).permute(1, 2, 0, 3)
        pieces.append(product.reshape(-1, out_steps, out_channels))
    out = pieces[0] if len(pieces) == 1 else torch.cat(pieces)
    return out if bias is None else out + bias.to(out.dtype)


def valid_steps_group_norm(
    hidden: torch.Tensor, norm: nn.GroupNorm, valid_steps: Sequence[int] | None
) -> torch.Tensor:
    """``norm`` of channels-last input, each sequence's statistics over its first ``valid_steps[b]`` steps.

    Parameters
    ----------
    hidden : (B, T, C) tensor
    norm : nn.GroupNorm
        Its groups, epsilon and affine parameters.
    valid_steps : sequence of int, or None for all T steps of every sequence

    Returns
    -------
    (B, T, C) float32 tensor (GroupNorm runs in float32 under autocast too)

    Padded steps are zeroed first, so plain sums over all steps are the valid steps' sums;
    the variance is E[x²] - E[x]² in float32, exact enough for the near-zero-mean outputs of
    a bias-free convolution of a waveform.
    """
    batch, steps, channels = hidden.shape
    per_group = channels // norm.num_groups
    if valid_steps is None:
        counts = torch.full((batch, 1), steps * per_group, device=hidden.device, dtype=torch.float32)
    else:
        hidden = hidden.masked_fill(~length_mask(valid_steps, steps, hidden.device)[:, :, None], 0)
        counts = torch.as_tensor(valid_steps, device=hidden.device, dtype=torch.float32)[:, None] * per_group
    grouped = hidden.view(batch, steps, norm.num_groups, per_group)
    mean = grouped.sum(dim=(1, 3), dtype=torch.float32) / counts  # (B, G)
    mean_square = torch.linalg.vector_norm(grouped, dim=(1, 3), dtype=torch.float32).square() / counts
    scale = torch.rsqrt((mean_square - mean.square()).clamp_min(0) + norm.eps)
    shift = -mean * scale
    scale, shift = scale.repeat_interleave(per_group, dim=1), shift.repeat_interleave(per_group, dim=1)  # (B, C)
    if norm.affine:
        scale, shift = scale * norm.weight, shift * norm.weight + norm.bias
    return torch.addcmul(shift[:, None, :], hidden, scale[:, None, :])


class MatmulFeatureEncoder(nn.Module):
    """A Hugging Face CNN feature encoder run channels-last, its convolutions as matrix products.

    Each conv layer (``conv``, an optional ``layer_norm`` that is a GroupNorm or a
    LayerNorm over channels, ``activation``) computes what the wrapped one does. While
    :attr:`valid_steps` holds, per conv layer, one valid length per utterance, GroupNorm
    statistics cover each utterance's valid steps only (:func:`valid_steps_group_norm`).

    Input (B, N) samples; output (B, C, T) like the wrapped encoder (a transposed view of
    channels-last frames, which the model transposes back for free).
    """

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.valid_steps: list[Sequence[int]] | None = None

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        hidden = input_values[:, :, None]
        for index, layer in enumerate(self.encoder.conv_layers):
            conv, norm = layer.conv, getattr(layer, "layer_norm", None)
            hidden = conv1d_as_matmul(hidden, conv.weight, conv.bias, conv.stride[0], conv.groups)
            if isinstance(norm, nn.GroupNorm):
                valid_steps = None if self.valid_steps is None else self.valid_steps[index]
                hidden = valid_steps_group_norm(hidden, norm, valid_steps)
            elif norm is not None:
                hidden = norm(hidden)
            hidden = layer.activation(hidden)
        return hidden.transpose(1, 2)


class FourierConv1d(nn.Module):
    """An ``nn.Conv1d`` of stride 1 (zero padding, no dilation) computed through real FFTs; (B, C, T) in and out.

    The positional convolution of wav2vec2-style models (128 taps, 16 groups) costs a
    GPU more than all transformer layers together as a direct convolution, and would
    need 128 copies of every frame as a matrix product; in the frequency domain it is a
    (C_out / G) x (C_in / G) complex product per group and frequency. Computed in
    float32 whatever the input dtype; returns float32.
    """

    def __init__(self, conv: nn.Conv1d):
        super().__init__()
        zero_padded = conv.padding_mode == "zeros" and not isinstance(conv.padding, str)
        if conv.stride != (1,) or conv.dilation != (1,) or not zero_padded:
            raise ValueError(f"only zero-padded convolutions of stride 1 run through FFTs; got {conv}")
        self.conv = conv

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        conv = self.conv
        batch, in_channels, steps = hidden.shape
        out_channels, group_in, taps = conv.weight.shape
        groups, padding = conv.groups, conv.padding[0]
        out_steps = steps + 2 * padding - taps + 1
        length = scipy.fft.next_fast_len(steps + taps - 1, real=True)  # no circular wrap-around
        with torch.autocast(hidden.device.type, enabled=False):
            spectrum = torch.fft.rfft(hidden.float(), n=length).view(batch, groups, group_in, -1)
            # A correlation is a convolution with the reversed kernel.
            kernel = torch.fft.rfft(conv.weight.float().flip(-1), n=length)
            kernel = kernel.view(groups, out_channels // groups, group_in, -1)
            mixed = torch.einsum("bgcf,gocf->bgof", spectrum, kernel).reshape(batch, out_channels, -1)
            # Output step t is step t - padding + taps - 1 of the full linear convolution.
            start = taps - 1 - padding
            out = torch.fft.irfft(mixed, n=length)[:, :, start : start + out_steps]
            return out if conv.bias is None else out + conv.bias.float()[:, None]


class PerUtteranceFeatureEncoder(nn.Module):
    """A feature encoder that runs each utterance of a padded batch alone.

    While :attr:`valid_samples` is ``None`` it is the wrapped encoder. While it holds
    one length per utterance, utterance b's first ``valid_samples[b]`` samples go
    through the wrapped encoder alone; the (1, C, T_b) outputs are zero-padded to
    (B, C, max T_b).
    """

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.valid_samples: Sequence[int] | None = None

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        if self.valid_samples is None:
            return self.encoder(input_values)
        return zero_padded([self.encoder(input_values[b : b + 1, :n]) for b, n in enumerate(self.valid_samples)])


def zero_padded(sequences: Sequence[torch.Tensor]) -> torch.Tensor:
    """(1, C, T_b) tensors -> (B, C, max T_b), zero after each one's end."""
    out = sequences[0].new_zeros((len(sequences), sequences[0].shape[1], max(s.shape[-1] for s in sequences)))
    for b, sequence in enumerate(sequences):
        out[b, :, : sequence.shape[-1]] = sequence[0]
    return out


class ExactBatching:
    """Make a model's padded batches compute what one-utterance passes compute.

    Parameters
    ----------
    model : torch.nn.Module
        A Hugging Face raw-waveform encoder (``feature_extractor.conv_layers`` and
        ``encoder``) of a type in :data:`EXACT_BATCHING_MODEL_TYPES`; modified in place.
    conv_kernel, conv_stride : sequence of int
        Its feature encoder, for the valid length after each convolution.
    feature_encoder : {"per_utterance", "batched"}
        How the CNN runs on a padded batch (module docstring).

    Use :meth:`padded` around each forward pass of a padded batch.
    """

    def __init__(self, model: nn.Module, conv_kernel: Sequence[int], conv_stride: Sequence[int], feature_encoder: str):
        model_type = model.config.model_type
        if model_type not in EXACT_BATCHING_MODEL_TYPES:
            raise ValueError(
                f"exact batching is verified for {', '.join(EXACT_BATCHING_MODEL_TYPES)}, not {model_type}; "
                "set extraction.batch_seconds: 0 to run one utterance per forward pass"
            )
        if feature_encoder not in FEATURE_ENCODER_MODES:
            raise ValueError(f"feature_encoder must be one of {FEATURE_ENCODER_MODES}; got {feature_encoder!r}")
        self.conv_kernel = tuple(conv_kernel)
        self.conv_stride = tuple(conv_stride)
        self.per_utterance: PerUtteranceFeatureEncoder | None = None
        self.matmul: MatmulFeatureEncoder | None = None
        if feature_encoder == "per_utterance":
            self.per_utterance = PerUtteranceFeatureEncoder(model.feature_extractor)
            model.feature_extractor = self.per_utterance
        else:
            self.matmul = MatmulFeatureEncoder(model.feature_extractor)
            model.feature_extractor = self.matmul
        self.frame_mask: torch.Tensor | None = None
        for name, module in list(model.encoder.named_modules()):
            if isinstance(module, nn.Conv1d):
                if module.stride != (1,):
                    raise ValueError(
                        f"{model_type}: a strided convolution in the transformer cannot be batched exactly"
                    )
                if self.matmul is not None:
                    parent, _, attribute = name.rpartition(".")
                    module = FourierConv1d(module)
                    setattr(model.encoder.get_submodule(parent), attribute, module)
                module.register_forward_pre_hook(self._zero_padded_frames)

    def _zero_padded_frames(self, module: nn.Module, inputs: tuple[torch.Tensor, ...]):
        if self.frame_mask is None:
            return None
        return (inputs[0] * self.frame_mask[:, None, : inputs[0].shape[-1]].to(inputs[0].dtype), *inputs[1:])

    @contextlib.contextmanager
    def padded(self, num_samples: Sequence[int], device: torch.device) -> Iterator[torch.Tensor]:
        """Within the block, forward passes treat the batch as utterances of ``num_samples``.

        Yields the (B, max(num_samples)) int32 sample attention mask to pass to the model.
        """
        frames = [num_model_frames(n, self.conv_kernel, self.conv_stride) for n in num_samples]
        if self.per_utterance is not None:
            self.per_utterance.valid_samples = list(num_samples)
        if self.matmul is not None:
            self.matmul.valid_steps = [
                [num_model_frames(n, self.conv_kernel[: index + 1], self.conv_stride[: index + 1]) for n in num_samples]
                for index in range(len(self.conv_kernel))
            ]
        self.frame_mask = length_mask(frames, max(frames), device)
        try:
            yield length_mask(num_samples, max(num_samples), device).to(torch.int32)
        finally:
            self.frame_mask = None
            if self.per_utterance is not None:
                self.per_utterance.valid_samples = None
            if self.matmul is not None:
                self.matmul.valid_steps = None


def length_mask(lengths: Sequence[int], width: int, device: torch.device) -> torch.Tensor:
    """(B, width) bool mask, True at positions ``< lengths[b]``."""
    lengths_tensor = torch.as_tensor(list(lengths), device=device)
    return torch.arange(width, device=device)[None, :] < lengths_tensor[:, None]


def plan_batches(num_samples: Sequence[int], budget_samples: int) -> list[np.ndarray]:
    """Group utterances into length-bucketed batches of at most ``budget_samples`` padded samples.

    Utterances are taken longest first (so the largest batch, and any out-of-memory
    error, comes first) and each batch grows while ``size * longest <= budget_samples``.
    An utterance longer than the budget runs alone; ``budget_samples <= 0`` gives one
    utterance per batch. Ties keep index order, so the plan is a pure function of its input.

    Returns
    -------
    list of (b,) int arrays
        Indices into ``num_samples``, the longest first within each batch.
    """
    lengths = np.asarray(num_samples, dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")
    batches, start = [], 0
    while start < len(order):
        longest = lengths[order[start]]
        size = max(1, int(budget_samples // longest)) if budget_samples > 0 else 1
        batches.append(order[start : start + size])
        start += size
    return batches


def assign_to_shards(batch_costs: Sequence[float], num_shards: int) -> np.ndarray:
    """Shard of each batch: the costliest batch goes to the least-loaded shard, and so on.

    Returns a (num_batches,) int array of shard indices in ``[0, num_shards)``; a pure
    function of its input, so every shard's job derives the same assignment.
    """
    loads = np.zeros(num_shards)
    shards = np.zeros(len(batch_costs), dtype=np.int64)
    for batch in np.argsort(-np.asarray(batch_costs, dtype=float), kind="stable"):
        shard = int(np.argmin(loads))
        shards[batch] = shard
        loads[shard] += batch_costs[batch]
    return shards
