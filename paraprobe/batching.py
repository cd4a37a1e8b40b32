"""Exact padded batching of speech encoders, and length-bucketed batch plans.

A batch pads its utterances with zeros to the longest one. For every valid frame of
every utterance to equal what a one-utterance pass computes, each operation that mixes
time steps must see exactly what it would see alone.

The convolutional feature encoder (CNN) runs in one of two exact ways:

- ``per_utterance``: each utterance's own samples go through the CNN alone (the very
  computation of a one-utterance pass) and the outputs are zero-padded to the batch's
  frame count. Fastest on a CPU, where the CNN gains nothing from batching and its
  large first-layer activations stay in cache one utterance at a time.
- ``batched``: the padded batch goes through the CNN at once, which suits a GPU. Its
  convolutions have no padding, so an output frame whose receptive field ends inside
  the utterance reads only the utterance's samples
  (:func:`paraprobe.framing.num_model_frames` counts exactly those frames). But a
  GroupNorm (``feat_extract_norm == "group"``: wav2vec2-base, HuBERT-base) normalises
  each channel over *all* time steps, padding included; Hugging Face's model does not
  pass the attention mask to it, which is why its docs advise against batching these
  models. :class:`ValidStepsGroupNorm` applies the same GroupNorm to each utterance's
  valid steps instead.

In the transformer:

- self-attention gets the attention mask, from which Hugging Face derives the frame mask;
- its convolutions (the positional convolution; data2vec-audio stacks five, each
  followed by a LayerNorm that makes padded positions non-zero) get their input zeroed
  beyond each utterance's end by a forward pre-hook: exactly the zero padding the
  convolution adds after a lone utterance;
- everything else acts on one frame at a time (linear layers, LayerNorm over channels).

:class:`ExactBatching` installs these on a model; the tests compare batched with
one-at-a-time extraction for every model type in :data:`EXACT_BATCHING_MODEL_TYPES`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from paraprobe.framing import num_model_frames

#: Model types whose every time-mixing operation is covered above, checked by the tests.
EXACT_BATCHING_MODEL_TYPES = ("wav2vec2", "hubert", "wavlm", "data2vec-audio", "unispeech", "unispeech-sat")
#: How the feature encoder sees a padded batch (see the module docstring).
FEATURE_ENCODER_MODES = ("per_utterance", "batched")


class ValidStepsGroupNorm(nn.Module):
    """A GroupNorm whose statistics cover each sequence's valid time steps only.

    While :attr:`valid_steps` is ``None`` it is the wrapped GroupNorm. While it holds
    one length per sequence, sequence b is normalised by the GroupNorm of its first
    ``valid_steps[b]`` steps alone (the very operation a one-utterance pass runs) and
    its padded steps are set to zero.
    """

    def __init__(self, group_norm: nn.GroupNorm):
        super().__init__()
        self.group_norm = group_norm
        self.valid_steps: Sequence[int] | None = None

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, C, T) -> (B, C, T); float32 under autocast, as GroupNorm itself."""
        if self.valid_steps is None:
            return self.group_norm(hidden)
        return zero_padded([self.group_norm(hidden[b : b + 1, :, :steps]) for b, steps in enumerate(self.valid_steps)])


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
        self.group_norms: list[tuple[int, ValidStepsGroupNorm]] = []
        if feature_encoder == "per_utterance":
            self.per_utterance = PerUtteranceFeatureEncoder(model.feature_extractor)
            model.feature_extractor = self.per_utterance
        else:
            for index, conv_layer in enumerate(model.feature_extractor.conv_layers):
                for name, child in conv_layer.named_children():
                    if isinstance(child, nn.GroupNorm):
                        wrapper = ValidStepsGroupNorm(child)
                        setattr(conv_layer, name, wrapper)
                        self.group_norms.append((index, wrapper))
        self.frame_mask: torch.Tensor | None = None
        for module in model.encoder.modules():
            if isinstance(module, nn.Conv1d):
                if module.stride != (1,):
                    raise ValueError(
                        f"{model_type}: a strided convolution in the transformer cannot be batched exactly"
                    )
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
        for index, group_norm in self.group_norms:
            group_norm.valid_steps = [
                num_model_frames(n, self.conv_kernel[: index + 1], self.conv_stride[: index + 1]) for n in num_samples
            ]
        self.frame_mask = length_mask(frames, max(frames), device)
        try:
            yield length_mask(num_samples, max(num_samples), device).to(torch.int32)
        finally:
            self.frame_mask = None
            if self.per_utterance is not None:
                self.per_utterance.valid_samples = None
            for _, group_norm in self.group_norms:
                group_norm.valid_steps = None


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
