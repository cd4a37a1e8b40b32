"""Frame arithmetic of speech SSL models' convolutional feature encoders.

wav2vec2, HuBERT, WavLM and data2vec-audio share a stack of 1-D convolutions without
padding; the number of output frames of an utterance follows from their kernels and
strides alone. Every stage that puts something on the model's frame grid uses
:func:`num_model_frames`, so frame counts agree by construction; features computed on a
finer grid (openSMILE's 10 ms frames) reach the model grid through
:func:`pool_to_model_frames` alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

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


def model_frame_centers(
    num_samples: int,
    conv_kernel: Sequence[int] = WAV2VEC2_CONV_KERNEL,
    conv_stride: Sequence[int] = WAV2VEC2_CONV_STRIDE,
) -> np.ndarray:
    """Centres of the model frames' receptive fields, in samples.

    Frame ``j`` sees samples ``[j * hop, j * hop + field)``, so its centre is
    ``j * hop + field / 2``. Returns a (num_model_frames(num_samples),) float64 array.
    """
    count = num_model_frames(num_samples, conv_kernel, conv_stride)
    hop = hop_samples(conv_stride)
    field = receptive_field_samples(conv_kernel, conv_stride)
    return np.arange(count, dtype=np.float64) * hop + field / 2


def pool_to_model_frames(
    values: np.ndarray,
    frame_centers: np.ndarray,
    num_samples: int,
    conv_kernel: Sequence[int] = WAV2VEC2_CONV_KERNEL,
    conv_stride: Sequence[int] = WAV2VEC2_CONV_STRIDE,
) -> np.ndarray:
    """Put frame-level features of a finer grid (e.g. openSMILE's 10 ms) on the model's grid.

    Model frame ``j`` owns the half-open span of one hop centred on its receptive field,
    ``[c_j - hop / 2, c_j + hop / 2)`` with ``c_j`` from :func:`model_frame_centers`
    (``[320 j + 40, 320 j + 360)`` samples for wav2vec2). The spans tile the time axis, so
    every source frame counts towards at most one model frame and each model frame averages
    the same stretch of time: a source frame is *covered* by model frame ``j`` when its
    centre lies in ``j``'s span, and row ``j`` is the mean of the covered source rows. A
    model frame that covers no source centre (at the edges, where the source analysis
    windows do not reach) takes the row of the source frame whose centre is nearest to
    ``c_j`` (the earlier one on a tie). Source frames beyond every span are ignored.

    Parameters
    ----------
    values
        (K, C) finite source features, rows in time order.
    frame_centers
        (K,) non-decreasing centres of the source frames' analysis windows, in samples
        (a window over samples ``[a, a + n)`` has centre ``a + n / 2``).
    num_samples
        Length of the utterance in samples; fixes the number of model frames.
    conv_kernel, conv_stride
        The model's convolutional feature encoder (default wav2vec2).

    Returns
    -------
    np.ndarray
        (num_model_frames(num_samples), C) float64.
    """
    values = np.asarray(values, dtype=np.float64)
    centers = np.asarray(frame_centers, dtype=np.float64)
    if values.ndim != 2 or centers.shape != (values.shape[0],):
        raise ValueError(f"values must be (K, C) and frame_centers (K,); got {values.shape} and {centers.shape}")
    if values.shape[0] == 0:
        raise ValueError("no source frames to pool")
    if np.any(np.diff(centers) < 0):
        raise ValueError("frame_centers must be non-decreasing")
    # The cumulative sums below would spread one NaN over every later model frame.
    if not np.all(np.isfinite(values)):
        raise ValueError("values contain NaN or infinity; replace them before pooling")

    model_centers = model_frame_centers(num_samples, conv_kernel, conv_stride)
    span_start = model_centers - hop_samples(conv_stride) / 2
    span_stop = span_start + hop_samples(conv_stride)
    first = np.searchsorted(centers, span_start, side="left")
    stop = np.searchsorted(centers, span_stop, side="left")
    covered = stop - first

    cumulative = np.zeros((values.shape[0] + 1, values.shape[1]))
    np.cumsum(values, axis=0, out=cumulative[1:])
    pooled = (cumulative[stop] - cumulative[first]) / np.maximum(covered, 1)[:, None]

    empty = covered == 0
    if np.any(empty):
        targets = model_centers[empty]
        after = np.clip(np.searchsorted(centers, targets, side="left"), 0, centers.size - 1)
        before = np.clip(after - 1, 0, centers.size - 1)
        earlier_is_nearer = np.abs(targets - centers[before]) <= np.abs(centers[after] - targets)
        pooled[empty] = values[np.where(earlier_is_nearer, before, after)]
    return pooled
