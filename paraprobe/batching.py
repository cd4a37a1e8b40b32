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
  models. :func:`group_normalised_kernels` takes each utterance's statistics over its
  valid steps instead. What padded steps hold afterwards no valid frame ever reads.

In the transformer:

- self-attention gets the attention mask, from which Hugging Face derives the frame mask;
- its convolutions (the positional convolution; data2vec-audio stacks five, each
  followed by a LayerNorm that makes padded positions non-zero) get their input zeroed
  beyond each utterance's end by a forward pre-hook: exactly the zero padding the
  convolution adds after a lone utterance;
- everything else acts on one frame at a time (linear layers, LayerNorm over channels).

In ``batched`` mode, meant for a GPU, the CNN's convolutions run as matrix products over
strided views of the input (:func:`conv1d_as_matmul`), its GroupNorm folded into the
first one, and the transformer's convolutions through FFTs (:class:`FourierConv1d`):
cuDNN's own choices for these shapes (one input channel in the first layer; 16 groups
and 128 taps in the positional convolution) do not use the tensor cores and took most
of a GPU's time. (On a CPU the FFT of the positional kernel alone, 36,864 transforms,
costs more than the direct convolution of a short batch.)

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


#: Narrower windows (taps x input channels) are copied into a window matrix: one product with a
#: reduction dimension of a multiple of 8 keeps fast tensor-core kernels (wav2vec2's first layer: 10).
WINDOW_MATRIX_MAX_WIDTH = 64
#: Time steps per partial sum of the window statistics: parallel work for long sequences.
STATISTICS_CHUNK_STEPS = 4096


def conv1d_as_matmul(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int
) -> torch.Tensor:
    """A 1-D convolution without padding, dilation or groups, of channels-last input, as matrix products.

    Parameters
    ----------
    hidden : (B, T, C_in) tensor
    weight : (C_out, C_in, k) tensor (an ``nn.Conv1d`` weight), or (B, C_out, C_in, k): one kernel per sequence
    bias : (C_out,) or (B, C_out) tensor, or None
    stride : int

    Returns
    -------
    (B, (T - k) // stride + 1, C_out) tensor
        In the dtype autocast gives a matrix product (float16 under CUDA autocast).

    Narrow windows (k * C_in <= :data:`WINDOW_MATRIX_MAX_WIDTH`) are copied into a window
    matrix with a column of ones for the bias, one product. Otherwise the input is read
    in blocks of ``stride`` consecutive steps: output step t takes its taps
    ``[m * stride, (m + 1) * stride)`` from block ``t + m``, and each block of taps is one
    batched product over a strided view of the input (rows ``stride * C_in`` elements
    apart), accumulated in place; no window is copied (two products for wav2vec2's (3, 2)
    layers, one for its (2, 2) layers).
    """
    if torch.is_autocast_enabled(hidden.device.type):
        hidden = hidden.to(torch.get_autocast_dtype(hidden.device.type))  # read the windows in the product's dtype
    hidden = hidden.contiguous()
    batch, steps, in_channels = hidden.shape
    kernels = weight if weight.dim() == 4 else weight[None]  # (1 or B, C_out, C_in, k)
    taps = kernels.shape[-1]
    if taps * in_channels <= WINDOW_MATRIX_MAX_WIDTH:
        windows = window_matrix(hidden, taps, stride, with_ones=bias is not None)
        kernel = flat_kernel(kernels, 0, taps)
        if bias is not None:
            kernel = torch.cat([kernel, (bias if bias.dim() == 2 else bias[None])[:, None, :]], dim=1)
        kernel = nn.functional.pad(kernel, (0, 0, 0, windows.shape[-1] - kernel.shape[1])).to(windows.dtype)
        return torch.matmul(windows, kernel[0]) if len(kernel) == 1 else torch.bmm(windows, kernel)
    out_steps = (steps - taps) // stride + 1
    out = None
    for first in range(0, taps, stride):
        used = min(stride, taps - first)
        view = hidden.as_strided(
            (batch, out_steps, used * in_channels),
            (steps * in_channels, stride * in_channels, 1),
            hidden.storage_offset() + first * in_channels,
        )
        kernel = flat_kernel(kernels, first, used).to(view.dtype).expand(batch, -1, -1)
        out = torch.bmm(view, kernel) if out is None else out.baddbmm_(view, kernel)
    if bias is not None:
        out += (bias[:, None, :] if bias.dim() == 2 else bias).to(out.dtype)
    return out


def flat_kernel(kernels: torch.Tensor, first: int, taps: int) -> torch.Tensor:
    """(n, taps * C_in, C_out) matrices of taps ``[first, first + taps)`` of (n, C_out, C_in, k) kernels.

    Row ``j * C_in + c`` holds tap ``first + j`` of input channel c: the order of a
    channels-last window.
    """
    return kernels[..., first : first + taps].permute(0, 3, 2, 1).reshape(len(kernels), taps * kernels.shape[2], -1)


def window_matrix(hidden: torch.Tensor, taps: int, stride: int, with_ones: bool) -> torch.Tensor:
    """(B, T_out, W) windows of channels-last (B, T, C_in) input; W a multiple of 8.

    Columns ``[0, taps * C_in)`` hold each output step's window (channels-last order),
    then a column of ones if ``with_ones``, then zeros.
    """
    batch, steps, in_channels = hidden.shape
    out_steps = (steps - taps) // stride + 1
    width = taps * in_channels
    windows = hidden.new_zeros((batch, out_steps, -(-(width + with_ones) // 8) * 8))
    windows[..., :width] = hidden.as_strided((batch, out_steps, width), (steps * in_channels, stride * in_channels, 1))
    if with_ones:
        windows[..., width] = 1
    return windows


def group_normalised_kernels(
    hidden: torch.Tensor, conv: nn.Conv1d, norm: nn.GroupNorm, valid_steps: Sequence[int] | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sequence kernels and biases that compute ``norm(conv(x))`` in one convolution.

    Each sequence's GroupNorm statistics cover its first ``valid_steps[b]`` output steps
    (all of them for None). The convolution is linear, so the mean and variance of output
    channel o follow from the input windows' mean m and covariance S (windows of k * C_in
    values, 10 for wav2vec2's first layer). With a one appended to each window and w_o the
    flattened kernel with the bias b_o appended,

        E[y_o] = w_o . m,    Var[y_o] = w_o S w_o^T,

    and a group's variance is the mean of its channels' variances plus the variance of
    their means.

    The normalisation's scale and shift then fold into the kernel and bias, and a padded
    batch's largest activation (the first layer's output) is written once, instead of
    being read and rewritten for masking, two reductions and the normalisation.

    Parameters
    ----------
    hidden : (B, T, C_in) tensor, channels-last input of ``conv``
    conv : nn.Conv1d without padding, dilation or groups
    norm : nn.GroupNorm over ``conv``'s output channels
    valid_steps : sequence of int, or None

    Returns
    -------
    weight : (B, C_out, C_in, k) float32 tensor
    bias : (B, C_out) float32 tensor
        For :func:`conv1d_as_matmul`.

    Statistics are computed in float32 (partial sums over :data:`STATISTICS_CHUNK_STEPS`
    steps), from windows centred on their mean: E[y^2] - E[y]^2 would lose a quiet input's
    variance to rounding when the waveform has an offset (un-normalised models).
    """
    batch = hidden.shape[0]
    out_channels, _, taps = conv.weight.shape
    with torch.autocast(hidden.device.type, enabled=False):
        windows = window_matrix(hidden.float(), taps, conv.stride[0], with_ones=True)  # (B, T_out, W)
        out_steps, width = windows.shape[1:]
        if valid_steps is None:
            counts = torch.full((batch,), float(out_steps), device=hidden.device)
            mask = None
        else:
            mask = length_mask(valid_steps, out_steps, hidden.device)[:, :, None]
            windows *= mask
            counts = torch.as_tensor(valid_steps, device=hidden.device, dtype=torch.float32)
        window_mean = windows.sum(dim=1) / counts[:, None]  # (B, W), 1 in the column of ones
        windows -= window_mean[:, None]
        if mask is not None:
            windows *= mask
        chunks = nn.functional.pad(windows, (0, 0, 0, -out_steps % STATISTICS_CHUNK_STEPS))
        chunks = chunks.view(batch, -1, STATISTICS_CHUNK_STEPS, width)
        covariance = (chunks.transpose(2, 3) @ chunks).sum(dim=1) / counts[:, None, None]  # (B, W, W)
        flat = flat_kernel(conv.weight.float()[None], 0, taps)[0].T  # (C_out, k * C_in)
        ones = flat.shape[1]  # the column of ones
        bias = conv.bias.float() if conv.bias is not None else flat.new_zeros(out_channels)
        augmented = nn.functional.pad(torch.cat([flat, bias[:, None]], dim=1), (0, width - ones - 1))
        mean = window_mean @ augmented.T  # (B, C_out)
        variance = torch.einsum("ok,bkl,ol->bo", augmented, covariance, augmented)
        per_group = out_channels // norm.num_groups
        channel_means = mean.view(batch, norm.num_groups, per_group)
        group_mean = channel_means.mean(dim=2)
        group_variance = variance.view(batch, norm.num_groups, per_group).mean(dim=2) + (
            channel_means - group_mean[:, :, None]
        ).square().mean(dim=2)
        scale = torch.rsqrt(group_variance.clamp_min(0) + norm.eps).repeat_interleave(per_group, dim=1)  # (B, C)
        shift = -group_mean.repeat_interleave(per_group, dim=1) * scale
        if norm.affine:
            scale, shift = scale * norm.weight.float(), shift * norm.weight.float() + norm.bias.float()
        return conv.weight.float()[None] * scale[:, :, None, None], scale * bias + shift


class MatmulFeatureEncoder(nn.Module):
    """A Hugging Face CNN feature encoder run channels-last, its convolutions as matrix products.

    Each conv layer (``conv``, an optional ``layer_norm`` that is a GroupNorm or a
    LayerNorm over channels, ``activation``) computes what the wrapped one does; a
    GroupNorm is folded into its convolution (:func:`group_normalised_kernels`). While
    :attr:`valid_steps` holds, per conv layer, one valid length per utterance, GroupNorm
    statistics cover each utterance's valid steps only.

    Input (B, N) samples; output (B, C, T) like the wrapped encoder (a transposed view of
    channels-last frames, which the model transposes back for free).
    """

    def __init__(self, encoder: nn.Module):
        super().__init__()
        for layer in encoder.conv_layers:
            conv = layer.conv
            if conv.groups != 1 or conv.dilation != (1,) or conv.padding not in ((0,), "valid"):
                raise ValueError(
                    f"the feature encoder runs as matrix products for plain strided convolutions; got {conv}"
                )
        self.encoder = encoder
        self.valid_steps: list[Sequence[int]] | None = None

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        hidden = input_values[:, :, None]
        for index, layer in enumerate(self.encoder.conv_layers):
            conv, norm = layer.conv, getattr(layer, "layer_norm", None)
            if isinstance(norm, nn.GroupNorm):
                valid_steps = None if self.valid_steps is None else self.valid_steps[index]
                weight, bias = group_normalised_kernels(hidden, conv, norm, valid_steps)
                hidden = conv1d_as_matmul(hidden, weight, bias, conv.stride[0])
            else:
                hidden = conv1d_as_matmul(hidden, conv.weight, conv.bias, conv.stride[0])
                if norm is not None:
                    hidden = norm(hidden)
            hidden = layer.activation(hidden)
        return hidden.transpose(1, 2)


class FourierConv1d(nn.Module):
    """An ``nn.Conv1d`` of stride 1 (zero padding, no dilation) computed through real FFTs; (B, C, T) in and out.

    The positional convolution of wav2vec2-style models (128 taps, 16 groups) costs a
    GPU more than all transformer layers together as a direct convolution, and would
    need 128 copies of every frame as a matrix product; in the frequency domain it is a
    (C_out / G) x (C_in / G) complex product per group and frequency. Computed in
    float32 whatever the input dtype; returns float32. The weight is read once, here: a
    weight-normalised convolution (wav2vec2's) would recompute it at every pass.
    """

    def __init__(self, conv: nn.Conv1d):
        super().__init__()
        zero_padded = conv.padding_mode == "zeros" and not isinstance(conv.padding, str)
        if conv.stride != (1,) or conv.dilation != (1,) or not zero_padded:
            raise ValueError(f"only zero-padded convolutions of stride 1 run through FFTs; got {conv}")
        self.conv = conv
        with torch.no_grad():
            self.weight = conv.weight.detach().float().clone()

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        conv = self.conv
        batch, in_channels, steps = hidden.shape
        out_channels, group_in, taps = self.weight.shape
        groups, padding = conv.groups, conv.padding[0]
        out_steps = steps + 2 * padding - taps + 1
        length = scipy.fft.next_fast_len(steps + taps - 1, real=True)  # no circular wrap-around
        with torch.autocast(hidden.device.type, enabled=False):
            spectrum = torch.fft.rfft(hidden.float(), n=length).view(batch, groups, group_in, -1)
            # A correlation is a convolution with the reversed kernel.
            kernel = torch.fft.rfft(self.weight.flip(-1), n=length)
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
