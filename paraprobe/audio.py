"""The one audio loader every stage uses: any WAV/FLAC in, 16 kHz mono float32 out.

Every stage (manifest, embeddings, acoustic features) reads audio through
:func:`load_audio`, so that a file accepted by the manifest reads identically later.
"""

from __future__ import annotations

import functools
import math
import os
import struct
from pathlib import Path

import numpy as np
import soundfile
from scipy.signal import firwin, resample_poly

TARGET_SAMPLE_RATE = 16_000
#: Receptive field of wav2vec2's CNN encoder: shorter input yields no frame at all.
MIN_SAMPLES = 400


class BadAudioError(ValueError):
    """An audio file that no stage can use; the message names the file and the reason."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")

    def __reduce__(self):
        # Rebuild from (path, reason) so the error survives a process pool's pickling.
        return type(self), (self.path, self.reason)


#: The resampling filter's passband edge, as a share of the lower Nyquist frequency (7.36 kHz
#: at 16 kHz), and its Kaiser window's beta (about 80 dB stopband): frequencies above the new
#: Nyquist frequency are removed before they can fold back into the band, where scipy's default
#: (cut-off at the Nyquist frequency itself) lets them through at -6 dB and worse.
RESAMPLING_PASSBAND = 0.92
RESAMPLING_KAISER_BETA = 8.0
#: Filter taps on each side of the centre, per unit of max(up, down).
RESAMPLING_HALF_TAPS = 48
#: What files computed from resampled audio record, so that rows from another resampler are not reused.
RESAMPLING_DESCRIPTION = (
    f"polyphase FIR (scipy resample_poly), Kaiser beta {RESAMPLING_KAISER_BETA}, passband "
    f"{RESAMPLING_PASSBAND} of the lower Nyquist frequency, {RESAMPLING_HALF_TAPS} x max(up, down) taps a side"
)


@functools.cache
def _lowpass_taps(up: int, down: int) -> np.ndarray:
    """The polyphase filter of :func:`resample` for ``up``/``down`` (``resample_poly`` scales it by ``up``)."""
    factor = max(up, down)
    return firwin(
        2 * RESAMPLING_HALF_TAPS * factor + 1, RESAMPLING_PASSBAND / factor, window=("kaiser", RESAMPLING_KAISER_BETA)
    )


def resample(samples: np.ndarray, orig_rate: int, target_rate: int = TARGET_SAMPLE_RATE) -> np.ndarray:
    """Resample a 1-D signal with a polyphase FIR (Kaiser-windowed sinc) low-pass filter.

    Args:
        samples: (n,) float signal at ``orig_rate`` Hz.
    Returns:
        (ceil(n * target_rate / orig_rate),) float32 signal at ``target_rate`` Hz, flat to
        about 7 kHz and free of what lay above 8 kHz (to about -80 dB) for 16 kHz.
    """
    if orig_rate == target_rate:
        return samples.astype(np.float32, copy=False)
    common = math.gcd(int(orig_rate), int(target_rate))
    up, down = target_rate // common, orig_rate // common
    return resample_poly(samples, up, down, window=_lowpass_taps(up, down)).astype(np.float32)


#: A RIFF data chunk length that means "unknown" (streamed or RF64 files), not a promise.
_UNKNOWN_CHUNK_LENGTHS = (0, 0xFFFFFFFF)


def truncated_wav_data(path: str | Path) -> tuple[int, int] | None:
    """(declared, present) bytes of a RIFF WAVE file's ``data`` chunk if the file ends before the
    chunk does (a cut copy: libsndfile reads what is there without a word); None otherwise, and
    for anything that is not RIFF WAVE."""
    with open(path, "rb") as handle:
        header = handle.read(12)
        if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
            return None
        file_size = os.fstat(handle.fileno()).st_size
        while len(chunk := handle.read(8)) == 8:
            length = struct.unpack("<I", chunk[4:])[0]
            if chunk[:4] == b"data":
                present = file_size - handle.tell()
                return (length, present) if length not in _UNKNOWN_CHUNK_LENGTHS and present < length else None
            handle.seek(length + (length & 1), os.SEEK_CUR)  # chunks are padded to even lengths
    return None


def read_audio(path: str | Path, target_rate: int = TARGET_SAMPLE_RATE) -> np.ndarray:
    """Decode ``path`` (WAV of any integer or float depth, FLAC, ...) to mono at ``target_rate``.

    Channels are averaged. Raises :class:`BadAudioError` if the file cannot be decoded.
    Returns a (n,) float32 array in [-1, 1].
    """
    try:
        truncated = truncated_wav_data(path)
    except OSError as error:
        raise BadAudioError(path, f"unreadable ({error})") from error
    if truncated:
        raise BadAudioError(
            path, "truncated: its data chunk declares {:,} bytes, the file holds {:,}".format(*truncated)
        )
    try:
        with soundfile.SoundFile(str(path)) as sound:
            rate = sound.samplerate
            if sound.subtype == "PCM_16":
                # Decoding 16-bit PCM as integers takes less than half the time; scaling by 2^-15 is
                # libsndfile's own float conversion, exactly.
                data = sound.read(dtype="int16", always_2d=True).astype(np.float32)
                data *= 2.0**-15
            else:
                data = sound.read(dtype="float32", always_2d=True)
    except Exception as error:  # soundfile raises LibsndfileError, RuntimeError, TypeError...
        raise BadAudioError(path, f"unreadable ({error})") from error
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    return resample(mono, rate, target_rate)


def check_audio(samples: np.ndarray, path: str | Path) -> None:
    """Raise :class:`BadAudioError` for audio no model can use: empty, all zeros, too short."""
    if samples.size == 0:
        raise BadAudioError(path, "empty (no samples)")
    if not np.any(samples):
        raise BadAudioError(path, "all zeros (digital silence)")
    if samples.size < MIN_SAMPLES:
        raise BadAudioError(
            path,
            f"too short ({samples.size} samples at {TARGET_SAMPLE_RATE} Hz; "
            f"at least {MIN_SAMPLES} needed, the wav2vec2 receptive field)",
        )
    if not np.all(np.isfinite(samples)):
        raise BadAudioError(path, "contains NaN or infinite samples")


def load_audio(path: str | Path) -> np.ndarray:
    """Read, resample to 16 kHz mono and validate; (n,) float32."""
    samples = read_audio(path)
    check_audio(samples, path)
    return samples
