"""Frame arithmetic of speech SSL models' convolutional feature encoders.

wav2vec2, HuBERT, WavLM and data2vec-audio share a stack of 1-D convolutions without
padding; the number of output frames of an utterance follows from their kernels and
strides alone. Every stage that puts something on the model's frame grid uses
:func:`num_model_frames`, so frame counts agree by construction.
"""

from __future__ import annotations

from collections.abc import Sequence

#: wav2vec2-base / HuBERT / WavLM feature encoder (Hugging Face ``conv_kernel``, ``conv_stride``).
WAV2VEC2_CONV_KERNEL = (10, 3, 3, 3, 3, 2, 2)
WAV2VEC2_CONV_STRIDE = (5, 2, 2, 2, 2, 2, 2)


def num_model_frames(
    num_samples: int,
    conv_kernel: Sequence[int] = WAV2VEC2_CONV_KERNEL,
    conv_stride: Sequence[int] = WAV2VEC2_CONV_STRIDE,
) -> int:
    """Frames the encoder emits for ``num_samples`` input samples (0 if too short).

    Each unpadded convolution maps length L to floor((L - kernel) / stride) + 1.
    """
    length = int(num_samples)
    for kernel, stride in zip(conv_kernel, conv_stride, strict=True):
        if length < kernel:
            return 0
        length = (length - kernel) // stride + 1
    return length


def hop_samples(conv_stride: Sequence[int] = WAV2VEC2_CONV_STRIDE) -> int:
    """Samples between consecutive frames (320 at 16 kHz, i.e. 20 ms, for wav2vec2)."""
    hop = 1
    for stride in conv_stride:
        hop *= stride
    return hop


def receptive_field_samples(
    conv_kernel: Sequence[int] = WAV2VEC2_CONV_KERNEL,
    conv_stride: Sequence[int] = WAV2VEC2_CONV_STRIDE,
) -> int:
    """Input samples one output frame sees (400 at 16 kHz, i.e. 25 ms, for wav2vec2)."""
    field, jump = 1, 1
    for kernel, stride in zip(conv_kernel, conv_stride, strict=True):
        field += (kernel - 1) * jump
        jump *= stride
    return field
