"""Acoustic features on the model's frame grid: eGeMAPSv02 descriptors and MFCCs.

Two feature sets are computed per utterance, both on openSMILE's 10 ms grid and then
pooled onto the model's frame grid (20 ms for wav2vec2) by
:func:`paraprobe.framing.pool_to_model_frames`, so that row ``f`` of a feature file
lines up with row ``f`` of the model's frame-level hidden states:

``egemaps``
    The 25 eGeMAPSv02 low-level descriptors from the ``opensmile`` package
    (``FeatureSet.eGeMAPSv02``, ``FeatureLevel.LowLevelDescriptors``), with openSMILE's
    values kept as they are but one: F0, jitter, shimmer, HNR, H1-H2 and H1-A3 are 0 on
    unvoiced frames (the formant frequencies and bandwidths, despite their ``_sma3nz``
    names, are not zeroed in openSMILE's LLD output). The formants' amplitudes relative to
    F0 (``F1amplitudeLogRelF0_sma3nz`` ...) are -201 in openSMILE's output where there is no
    F0, and its 3-frame smoothing blends that into the first and last frame of each voiced
    stretch: they are set to 0 on those frames too (:data:`F0_RELATIVE_COLUMNS`).
``mfcc``
    13 MFCCs ``mfcc0`` ... ``mfcc12`` (HTK conventions, as openSMILE's ``MFCC12_0``
    configuration: 25 ms Hamming window every 10 ms, pre-emphasis 0.97, 512-point power
    spectrum, 26 triangular mel bands over 0-8000 Hz, natural log, DCT-II, cepstral
    lifter 22, samples scaled to the 16-bit range) computed here with numpy, which
    agrees with openSMILE's own MFCC component to a few thousandths
    (tests/test_acoustic.py) while giving exact frame positions.

A model frame is voiced when every 10 ms frame it pools has F0 > 0 and is not the first or
last of a voiced stretch (two 10 ms frames for wav2vec2): the pitch descriptors are 0 on
unvoiced frames, and the F0-relative amplitudes on the edges of a voiced stretch, so
requiring all of them, not a majority or any, keeps those zeros out of the averages that
voiced-only analyses use. Values that openSMILE leaves undefined (NaN,
e.g. a file shorter than its 60 ms pitch window) are replaced by 0, as openSMILE itself
does for unvoiced frames, and counted per column in the files' ``nonfinite_replaced``
attribute; no NaN or infinity leaves this module.

File contract (``{outdir}/{corpus}/acoustic/{set}.h5``, one per set): ``utt_id`` (N,)
in manifest order; ``values`` (F, C) float32; ``frame_offsets`` (N + 1,) int64, utterance
``i`` owning rows ``[off[i], off[i + 1])`` with ``off[i + 1] - off[i]`` equal to
:func:`paraprobe.framing.num_model_frames` of its sample count; ``columns`` (C,);
``voiced`` (F,) bool; attributes ``frame_rate_hz``, ``hop_samples``,
``receptive_field_samples``, ``conv_kernel``, ``conv_stride``, ``sample_rate_hz``,
``feature_set``, ``feature_groups`` (JSON: the set's parameter groups, group -> columns, see
:data:`paraprobe.acoustic_columns.INTRINSIC_GROUPS`), ``pooling``, ``voiced_rule`` and
``nonfinite_replaced`` (C,).
"""

from __future__ import annotations

import functools
import json
import logging
import multiprocessing
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import version as package_version
from pathlib import Path

import h5py
import numpy as np
from scipy.fft import rfft
from threadpoolctl import threadpool_limits

from paraprobe.acoustic_columns import (
    COLUMNS_BY_SET,
    EGEMAPS,
    EGEMAPS_COLUMNS,
    F0_COLUMN,
    INTRINSIC_GROUPS,
    MFCC,
    MFCC_NUM_COEFFICIENTS,
)
from paraprobe.audio import RESAMPLING_DESCRIPTION, TARGET_SAMPLE_RATE, load_audio
from paraprobe.framing import (
    WAV2VEC2_CONV_KERNEL,
    WAV2VEC2_CONV_STRIDE,
    hop_samples,
    num_model_frames,
    pool_to_model_frames,
    receptive_field_samples,
)
from paraprobe.io import atomic_path
from paraprobe.manifest import read_manifest
from paraprobe.progress import Progress

#: Both feature sets advance by 10 ms.
SOURCE_HOP_SAMPLES = 160

#: eGeMAPS analyses two windows that start together every 10 ms (openSMILE reports the
#: start): 20 ms for loudness, spectral shape, MFCC 1-4 and the LPC formant frequencies and
#: bandwidths; 60 ms for F0 and what is measured at its harmonics or periods (below).
#: Each descriptor is placed at the centre of its own window, so the 60 ms descriptors
#: sit 20 ms later than the 20 ms ones of the same openSMILE row; placing them at the
#: 20 ms centre would shift pitch one wav2vec2 frame early (tests/test_acoustic.py).
EGEMAPS_SHORT_WINDOW_SAMPLES = 320
EGEMAPS_PITCH_WINDOW_SAMPLES = 960
#: F0 itself, what is measured relative to it (harmonic and formant amplitudes), and what is
#: measured over its periods (jitter, shimmer, HNR).
EGEMAPS_PITCH_WINDOW_COLUMNS = frozenset(
    column for column in EGEMAPS_COLUMNS if "F0" in column or column.startswith(("jitter", "shimmer", "HNR"))
)
#: (25,) analysis window of each eGeMAPS column, in samples.
EGEMAPS_WINDOW_SAMPLES = np.array(
    [
        EGEMAPS_PITCH_WINDOW_SAMPLES if column in EGEMAPS_PITCH_WINDOW_COLUMNS else EGEMAPS_SHORT_WINDOW_SAMPLES
        for column in EGEMAPS_COLUMNS
    ]
)

MFCC_WINDOW_SAMPLES = 400
MFCC_FFT_SIZE = 512
MFCC_NUM_BANDS = 26
MFCC_LOW_HZ = 0.0
MFCC_HIGH_HZ = 8000.0
MFCC_PREEMPHASIS = 0.97
MFCC_CEPSTRAL_LIFTER = 22.0
#: 10 ms frames computed at once (41 s of audio, about 30 MB of intermediate arrays).
MFCC_BLOCK_FRAMES = 4096
#: Floor of the mel band energies before the log (openSMILE's cMelspec default), so that
#: digital silence gives finite coefficients.
MFCC_MEL_FLOOR = 1e-8
#: 16-bit full scale: HTK and openSMILE compute MFCCs of integer-scaled samples.
INT16_SCALE = 32768.0

POOLING_DESCRIPTION = (
    "mean of the 10 ms frames whose centre lies in the model frame's span "
    "[j*hop + (receptive_field - hop)/2, + hop) samples; the nearest 10 ms frame where "
    "none does (paraprobe.framing.pool_to_model_frames)"
)
VOICED_RULE = (
    f"voiced iff every pooled 10 ms frame has {F0_COLUMN} > 0, as do the frames before and after it "
    "(openSMILE's 3-frame smoothing mixes the unvoiced value of the F0-relative amplitudes into the "
    "edges of a voiced stretch)"
)
#: Descriptors relative to F0 that openSMILE sets to -201 where there is no F0 (and smooths
#: into the neighbouring voiced frames); 0 here wherever a frame is not inside a voiced stretch.
F0_RELATIVE_COLUMNS = [f"F{n}amplitudeLogRelF0_sma3nz" for n in (1, 2, 3)]


@dataclass
class UtteranceFeatures:
    """Both feature sets of one utterance on the model grid (F model frames).

    Attributes
    ----------
    values
        set name -> (F, C) float32 features, finite.
    voiced
        (F,) bool voicing mask (see :data:`VOICED_RULE`).
    nonfinite_replaced
        set name -> (C,) int64 count of 10 ms values that were NaN or infinite and
        replaced by 0 before pooling.
    num_samples
        Length of the utterance at 16 kHz.
    """

    values: dict[str, np.ndarray]
    voiced: np.ndarray
    nonfinite_replaced: dict[str, np.ndarray]
    num_samples: int


@functools.cache
def _egemaps_extractor():
    """One openSMILE eGeMAPSv02 LLD extractor per process (its configuration is parsed once)."""
    # Imported here: checking a config at workflow start needs only the column names.
    import opensmile

    extractor = opensmile.Smile(
        feature_set=opensmile.FeatureSet.eGeMAPSv02,
        feature_level=opensmile.FeatureLevel.LowLevelDescriptors,
    )
    if tuple(extractor.feature_names) != EGEMAPS_COLUMNS:
        raise RuntimeError(
            f"opensmile {opensmile.__version__} names the eGeMAPSv02 descriptors {extractor.feature_names}, "
            f"not {list(EGEMAPS_COLUMNS)} as paraprobe.acoustic expects"
        )
    return extractor


def egemaps_lld(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """eGeMAPSv02 low-level descriptors of a 16 kHz signal every 10 ms.

    Parameters
    ----------
    samples
        (n,) float signal at 16 kHz in [-1, 1].

    Returns
    -------
    values
        (K, 25) float64 in :data:`EGEMAPS_COLUMNS` order; openSMILE fills a single row
        with NaN when the signal is shorter than its 60 ms pitch window.
    starts
        (K,) float64 first sample of each row's analysis windows (see
        :data:`EGEMAPS_WINDOW_SAMPLES` for their lengths).
    """
    # openSMILE converts to int16 as samples * 32768, so +1.0 would wrap to -32768.
    clipped = np.clip(samples, -1.0, (INT16_SCALE - 1) / INT16_SCALE).astype(np.float32)
    with warnings.catch_warnings():
        # The NaN row of a too-short signal is replaced and counted by the caller.
        warnings.filterwarnings("ignore", message="Segment too short")
        table = _egemaps_extractor().process_signal(clipped, TARGET_SAMPLE_RATE)
    starts = table.index.get_level_values("start").total_seconds().to_numpy()
    return table.to_numpy(dtype=np.float64, copy=True), np.rint(starts * TARGET_SAMPLE_RATE)


@functools.cache
def _mel_filterbank() -> np.ndarray:
    """(MFCC_NUM_BANDS, MFCC_FFT_SIZE // 2 + 1) HTK triangular filters, peak 1, on the mel scale."""

    def mel(hertz: np.ndarray) -> np.ndarray:
        return 1127.0 * np.log1p(hertz / 700.0)

    bin_mels = mel(np.arange(MFCC_FFT_SIZE // 2 + 1) * TARGET_SAMPLE_RATE / MFCC_FFT_SIZE)
    edges = np.linspace(mel(np.float64(MFCC_LOW_HZ)), mel(np.float64(MFCC_HIGH_HZ)), MFCC_NUM_BANDS + 2)
    lower, center, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bin_mels - lower) / (center - lower)
    falling = (upper - bin_mels) / (upper - center)
    return np.clip(np.minimum(rising, falling), 0.0, None)


@functools.cache
def _cepstral_basis() -> np.ndarray:
    """(MFCC_NUM_BANDS, 13) HTK DCT-II basis sqrt(2/N) cos(pi i (j + 1/2) / N), liftered."""
    band = np.arange(MFCC_NUM_BANDS)[:, None] + 0.5
    order = np.arange(MFCC_NUM_COEFFICIENTS)[None, :]
    basis = np.sqrt(2.0 / MFCC_NUM_BANDS) * np.cos(np.pi * order * band / MFCC_NUM_BANDS)
    lifter = 1.0 + MFCC_CEPSTRAL_LIFTER / 2 * np.sin(np.pi * order / MFCC_CEPSTRAL_LIFTER)
    return basis * lifter


def mfcc(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """13 HTK-style MFCCs (c0..c12) every 10 ms over 25 ms Hamming windows.

    Frame ``k`` analyses samples ``[160 k, 160 k + 400)``; a signal shorter than one
    window is zero-padded to one frame.

    Parameters
    ----------
    samples
        (n,) float signal at 16 kHz in [-1, 1].

    Returns
    -------
    values
        (K, 13) float64 with K = 1 + max(n - 400, 0) // 160.
    centers
        (K,) float64 window centres ``160 k + 200``, in samples.
    """
    signal = np.asarray(samples, dtype=np.float64) * INT16_SCALE
    if signal.size < MFCC_WINDOW_SAMPLES:
        signal = np.pad(signal, (0, MFCC_WINDOW_SAMPLES - signal.size))
    frames = np.lib.stride_tricks.sliding_window_view(signal, MFCC_WINDOW_SAMPLES)[::SOURCE_HOP_SAMPLES]
    values = np.empty((frames.shape[0], MFCC_NUM_COEFFICIENTS))
    # In blocks of frames: memory stays bounded however long the file (a frame is its own computation).
    for start in range(0, frames.shape[0], MFCC_BLOCK_FRAMES):
        block = frames[start : start + MFCC_BLOCK_FRAMES]
        # HTK pre-emphasises each frame on its own, the first sample against itself.
        emphasised = np.empty_like(block)
        emphasised[:, 0] = block[:, 0] * (1.0 - MFCC_PREEMPHASIS)
        emphasised[:, 1:] = block[:, 1:] - MFCC_PREEMPHASIS * block[:, :-1]
        power = np.abs(rfft(emphasised * np.hamming(MFCC_WINDOW_SAMPLES), MFCC_FFT_SIZE)) ** 2
        log_mel = np.log(np.maximum(power @ _mel_filterbank().T, MFCC_MEL_FLOOR))
        values[start : start + len(block)] = log_mel @ _cepstral_basis()
    centers = np.arange(frames.shape[0]) * SOURCE_HOP_SAMPLES + MFCC_WINDOW_SAMPLES / 2
    return values, centers.astype(np.float64)


def _replace_nonfinite(values: np.ndarray) -> np.ndarray:
    """Set NaN and infinite entries of ``values`` (K, C) to 0 in place; return (C,) counts."""
    nonfinite = ~np.isfinite(values)
    values[nonfinite] = 0.0
    return nonfinite.sum(axis=0).astype(np.int64)


def inside_voiced_stretches(voiced: np.ndarray) -> np.ndarray:
    """(K,) bool: the 10 ms frames with F0 > 0 (``voiced``) whose neighbours have F0 > 0 too
    (an utterance's ends count as voiced), i.e. voiced frames that are not the first or last
    of their voiced stretch."""
    padded = np.concatenate([[True], voiced, [True]])
    return voiced & padded[:-2] & padded[2:]


def utterance_features(
    samples: np.ndarray,
    conv_kernel: Sequence[int] = WAV2VEC2_CONV_KERNEL,
    conv_stride: Sequence[int] = WAV2VEC2_CONV_STRIDE,
) -> UtteranceFeatures:
    """eGeMAPS and MFCC features of one 16 kHz utterance on the model's frame grid.

    Parameters
    ----------
    samples
        (n,) float signal at 16 kHz, as :func:`paraprobe.audio.load_audio` returns it.
    conv_kernel, conv_stride
        The model's convolutional feature encoder; every output has
        ``num_model_frames(n, conv_kernel, conv_stride)`` rows.
    """
    num_samples = samples.size
    egemaps_values, starts = egemaps_lld(samples)
    egemaps_replaced = _replace_nonfinite(egemaps_values)
    in_pitch_window = EGEMAPS_WINDOW_SAMPLES == EGEMAPS_PITCH_WINDOW_SAMPLES
    voiced_10ms = inside_voiced_stretches(egemaps_values[:, EGEMAPS_COLUMNS.index(F0_COLUMN)] > 0)
    egemaps_values[np.ix_(~voiced_10ms, [EGEMAPS_COLUMNS.index(c) for c in F0_RELATIVE_COLUMNS])] = 0.0
    pooled_egemaps = np.empty((num_model_frames(num_samples, conv_kernel, conv_stride), in_pitch_window.size))
    pooled_egemaps[:, ~in_pitch_window] = pool_to_model_frames(
        egemaps_values[:, ~in_pitch_window],
        starts + EGEMAPS_SHORT_WINDOW_SAMPLES / 2,
        num_samples,
        conv_kernel,
        conv_stride,
    )
    # The F0 > 0 flag is pooled with F0 itself: its mean is 1 exactly when every pooled
    # 10 ms frame is voiced (sums of 0/1 are exact in float64).
    pooled_pitch = pool_to_model_frames(
        np.column_stack([egemaps_values[:, in_pitch_window], voiced_10ms]),
        starts + EGEMAPS_PITCH_WINDOW_SAMPLES / 2,
        num_samples,
        conv_kernel,
        conv_stride,
    )
    pooled_egemaps[:, in_pitch_window] = pooled_pitch[:, :-1]
    mfcc_values, mfcc_centers = mfcc(samples)
    mfcc_replaced = _replace_nonfinite(mfcc_values)
    pooled_mfcc = pool_to_model_frames(mfcc_values, mfcc_centers, num_samples, conv_kernel, conv_stride)
    return UtteranceFeatures(
        values={EGEMAPS: pooled_egemaps.astype(np.float32), MFCC: pooled_mfcc.astype(np.float32)},
        voiced=pooled_pitch[:, -1] == 1.0,
        nonfinite_replaced={EGEMAPS: egemaps_replaced, MFCC: mfcc_replaced},
        num_samples=int(num_samples),
    )


class _FrameTableWriter:
    """Stream per-utterance (F_i, C) blocks into one acoustic HDF5 file (the module's contract)."""

    def __init__(self, path: Path, utt_ids: Sequence[str], columns: Sequence[str], attrs: Mapping[str, object]):
        self.file = h5py.File(path, "w")
        self.file.create_dataset("utt_id", data=list(utt_ids), dtype=h5py.string_dtype())
        self.file.create_dataset("columns", data=list(columns), dtype=h5py.string_dtype())
        rows_per_chunk = 4096
        self.values = self.file.create_dataset(
            "values",
            shape=(0, len(columns)),
            maxshape=(None, len(columns)),
            dtype=np.float32,
            chunks=(rows_per_chunk, len(columns)),
        )
        self.voiced = self.file.create_dataset(
            "voiced", shape=(0,), maxshape=(None,), dtype=bool, chunks=(rows_per_chunk,)
        )
        # (N + 1) integers: a few bytes per utterance, written once at the end.
        self.offsets = np.zeros(len(utt_ids) + 1, dtype=np.int64)
        self.appended = 0
        self.nonfinite_replaced = np.zeros(len(columns), dtype=np.int64)
        for name, value in attrs.items():
            self.file.attrs[name] = value

    def append(self, values: np.ndarray, voiced: np.ndarray, nonfinite_replaced: np.ndarray) -> None:
        """Add the next utterance's (F_i, C) rows and (F_i,) voicing mask."""
        start = int(self.offsets[self.appended])
        stop = start + values.shape[0]
        self.values.resize(stop, axis=0)
        self.values[start:stop] = values
        self.voiced.resize(stop, axis=0)
        self.voiced[start:stop] = voiced
        self.appended += 1
        self.offsets[self.appended] = stop
        self.nonfinite_replaced += nonfinite_replaced

    def finish(self) -> None:
        """Write the offsets and replacement counts once every utterance has been appended."""
        if self.appended != len(self.offsets) - 1:
            raise RuntimeError(f"{self.appended} of {len(self.offsets) - 1} utterances written")
        self.file.create_dataset("frame_offsets", data=self.offsets)
        self.file.attrs["nonfinite_replaced"] = self.nonfinite_replaced

    def close(self) -> None:
        self.file.close()


def _features_of_file(task: tuple[str, tuple[int, ...], tuple[int, ...]]) -> UtteranceFeatures:
    """Worker: load one manifest file (BadAudioError names it) and compute its features."""
    path, conv_kernel, conv_stride = task
    return utterance_features(load_audio(path), conv_kernel, conv_stride)


def _ordered_map(function, tasks: Iterable, threads: int) -> Iterator:
    """``map(function, tasks)`` in order, over ``threads`` worker processes when above 1.

    Each worker keeps one core busy, so its BLAS runs single-threaded: the MFCCs' small
    matrix products gain nothing from threads, and Snakemake sets OPENBLAS_NUM_THREADS
    to the job's threads, which would put threads x threads busy threads on the cores.
    """
    if threads <= 1:
        with threadpool_limits(1):
            yield from map(function, tasks)
        return
    # fork, not spawn: Snakemake's script files are not import-safe, and spawn would
    # re-execute them in every worker.
    context = multiprocessing.get_context("fork")
    with context.Pool(threads, initializer=threadpool_limits, initargs=(1,)) as pool:
        yield from pool.imap(function, tasks, chunksize=1)


def extract_acoustic(
    manifest_path: str | Path,
    output_paths: Mapping[str, str | Path],
    threads: int = 1,
    conv_kernel: Sequence[int] = WAV2VEC2_CONV_KERNEL,
    conv_stride: Sequence[int] = WAV2VEC2_CONV_STRIDE,
    logger: logging.Logger | None = None,
) -> dict[str, np.ndarray]:
    """Write ``egemaps.h5`` and ``mfcc.h5`` for every utterance of a manifest.

    Utterances are processed by ``threads`` worker processes and written in manifest
    order as they arrive, so memory does not grow with the corpus. Both files are
    written atomically (nothing is left at ``output_paths`` on failure).

    Parameters
    ----------
    manifest_path
        The corpus manifest (``utt_id``, ``path``, ``duration_s`` used).
    output_paths
        ``{"egemaps": path, "mfcc": path}``.
    threads
        Worker processes.
    conv_kernel, conv_stride
        The model's convolutional feature encoder, fixing the frame grid.

    Returns
    -------
    dict
        set name -> (C,) counts of NaN or infinite 10 ms values replaced by 0.

    Raises
    ------
    paraprobe.audio.BadAudioError
        For a manifest file that no longer loads, naming it.
    ValueError
        For a manifest without the needed columns.
    """
    logger = logger or logging.getLogger("paraprobe")
    conv_kernel, conv_stride = tuple(conv_kernel), tuple(conv_stride)
    manifest = read_manifest(manifest_path, ("utt_id", "path", "duration_s"))

    hop = hop_samples(conv_stride)
    shared_attrs = {
        "frame_rate_hz": TARGET_SAMPLE_RATE / hop,
        "hop_samples": hop,
        "receptive_field_samples": receptive_field_samples(conv_kernel, conv_stride),
        "conv_kernel": np.asarray(conv_kernel, dtype=np.int64),
        "conv_stride": np.asarray(conv_stride, dtype=np.int64),
        "sample_rate_hz": TARGET_SAMPLE_RATE,
        "resampling": RESAMPLING_DESCRIPTION,
        "pooling": POOLING_DESCRIPTION,
        "voiced_rule": VOICED_RULE,
    }
    feature_set_description = {
        EGEMAPS: f"eGeMAPSv02 low-level descriptors (opensmile {package_version('opensmile')})",
        MFCC: "MFCC c0-c12, HTK conventions (25 ms Hamming window, 26 mel bands 0-8000 Hz, lifter 22)",
    }
    tasks = [(str(path), conv_kernel, conv_stride) for path in manifest["path"]]
    progress = Progress(
        len(tasks), "utterances", float(manifest["duration_s"].sum()), logger, label="acoustic features"
    )
    logger.info("acoustic features of %d utterances with %d worker(s)", len(tasks), threads)

    with (
        atomic_path(output_paths[EGEMAPS]) as egemaps_temporary,
        atomic_path(output_paths[MFCC]) as mfcc_temporary,
    ):
        writers = {}
        try:
            for name, temporary in ((EGEMAPS, egemaps_temporary), (MFCC, mfcc_temporary)):
                attrs = {
                    **shared_attrs,
                    "feature_set": feature_set_description[name],
                    "feature_groups": json.dumps({group: list(cols) for group, cols in INTRINSIC_GROUPS[name].items()}),
                }
                writers[name] = _FrameTableWriter(temporary, manifest["utt_id"], COLUMNS_BY_SET[name], attrs)
            for features in _ordered_map(_features_of_file, tasks, threads):
                for name, writer in writers.items():
                    writer.append(features.values[name], features.voiced, features.nonfinite_replaced[name])
                progress.update(1, features.num_samples / TARGET_SAMPLE_RATE)
            for writer in writers.values():
                writer.finish()
        finally:
            for writer in writers.values():
                writer.close()

    replaced = {name: writer.nonfinite_replaced for name, writer in writers.items()}
    for name, counts in replaced.items():
        if counts.any():
            detail = ", ".join(f"{column} {count}" for column, count in zip(COLUMNS_BY_SET[name], counts) if count)
            logger.warning("%s: replaced NaN/inf 10 ms values by 0: %s", name, detail)
    return replaced
