import struct

import numpy as np
import pytest
import soundfile

from paraprobe.audio import MIN_SAMPLES, BadAudioError, load_audio, resample


def dominant_frequency(signal: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(signal.size)))
    return np.fft.rfftfreq(signal.size, 1 / rate)[np.argmax(spectrum)]


@pytest.mark.parametrize("rate", [8_000, 22_050, 44_100, 48_000])
def test_resampled_sine_keeps_its_frequency_and_duration(rate):
    seconds, frequency = 1.3, 440.0
    t = np.arange(int(seconds * rate)) / rate
    out = resample(np.sin(2 * np.pi * frequency * t), rate)
    assert abs(out.size - seconds * 16_000) <= 1
    assert abs(dominant_frequency(out, 16_000) - frequency) < 1.0
    # A proper anti-aliasing filter keeps the amplitude of an in-band tone.
    assert np.max(np.abs(out[1000:-1000])) == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize("rate", [22_050, 44_100, 48_000])
@pytest.mark.parametrize("tone_hz,gain_db", [(1_000, 0.0), (6_500, 0.0), (8_200, None), (9_000, None), (12_000, None)])
def test_resampling_keeps_the_band_and_removes_what_would_fold_into_it(rate, tone_hz, gain_db):
    t = np.arange(rate) / rate
    out = resample(np.sin(2 * np.pi * tone_hz * t), rate)[1000:-1000]
    level_db = 20 * np.log10(np.sqrt(2 * np.mean(out.astype(np.float64) ** 2)))
    if gain_db is None:  # above 8 kHz: would alias to 16 kHz - tone_hz
        assert level_db < -60
    else:
        assert level_db == pytest.approx(gain_db, abs=0.1)


@pytest.mark.parametrize(
    "subtype,suffix",
    [("PCM_16", ".wav"), ("PCM_24", ".wav"), ("PCM_32", ".wav"), ("FLOAT", ".wav"), ("PCM_16", ".flac")],
)
def test_every_depth_and_container_reads_the_same_signal(tmp_path, subtype, suffix):
    t = np.arange(16_000) / 16_000
    signal = 0.5 * np.sin(2 * np.pi * 300 * t)
    path = tmp_path / f"tone{suffix}"
    soundfile.write(path, signal, 16_000, subtype=subtype)
    loaded = load_audio(path)
    assert loaded.dtype == np.float32 and loaded.shape == signal.shape
    np.testing.assert_allclose(loaded, signal, atol=1e-4)


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_16_bit_pcm_decodes_to_exactly_libsndfile_floats(tmp_path, suffix):
    rng = np.random.default_rng(0)
    samples = rng.integers(-(2**15), 2**15, size=(4_000, 2), dtype=np.int16)  # every extreme value possible
    samples[:2] = [[-(2**15), 2**15 - 1], [2**15 - 1, -(2**15)]]
    path = tmp_path / f"noise{suffix}"
    soundfile.write(path, samples, 16_000, subtype="PCM_16")
    expected = soundfile.read(path, dtype="float32")[0].mean(axis=1)
    np.testing.assert_array_equal(load_audio(path), expected)


def test_stereo_is_averaged_to_mono(tmp_path):
    left, right = np.full(8_000, 0.5), np.full(8_000, -0.1)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, np.stack([left, right], axis=1), 16_000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path), 0.2, atol=1e-6)


TOO_SHORT = "too short (399 samples at 16000 Hz; at least 400 needed, the wav2vec2 receptive field)"
NOT_FINITE = "contains NaN or infinite samples"


def write(path, samples, rate=16_000):
    soundfile.write(path, samples, rate, subtype="PCM_16")
    return path


@pytest.mark.parametrize(
    "make,reason",
    [
        (lambda p: p.write_bytes(b"RIFF not really a wave file") and p, "unreadable"),
        (lambda p: write(p, np.zeros(0)), "empty"),
        (lambda p: write(p, np.zeros(16_000)), "all zeros (digital silence)"),
        (lambda p: write(p, np.full(MIN_SAMPLES - 1, 0.1)), TOO_SHORT),
        (lambda p: write(p, np.full(3 * (MIN_SAMPLES - 1), 0.1), 48_000), TOO_SHORT),
        (lambda p: soundfile.write(p, np.r_[np.full(999, 0.1), np.nan], 16_000, subtype="FLOAT"), NOT_FINITE),
    ],
)
def test_bad_audio_message_names_the_file_and_the_reason(tmp_path, make, reason):
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(BadAudioError) as raised:
        load_audio(path)
    assert str(raised.value).startswith(f"{path}: {reason}")
    if reason not in ("unreadable", "empty"):  # libsndfile's own words follow those
        assert str(raised.value) == f"{path}: {reason}"


def test_exactly_the_receptive_field_is_long_enough(tmp_path):
    assert load_audio(write(tmp_path / "ok.wav", np.full(MIN_SAMPLES, 0.1))).size == MIN_SAMPLES


def riff_wave(chunks: list[tuple[bytes, bytes]]) -> bytes:
    """A RIFF WAVE file of (id, payload) chunks, each padded to an even length as the format asks."""
    body = b"".join(name + struct.pack("<I", len(data)) + data + b"\0" * (len(data) & 1) for name, data in chunks)
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WAVE" + body


# 16 kHz mono 16-bit PCM: format 1, channels 1, rate, bytes per second, block align 2, 16 bits.
FMT_PCM16 = struct.pack("<HHIIHH", 1, 1, 16_000, 32_000, 2, 16)


def test_a_wav_cut_short_of_its_data_chunk_is_bad_audio(tmp_path):
    samples = (np.sin(np.arange(16_000) / 5) * 10_000).astype("<i2")
    path = tmp_path / "cut.wav"
    path.write_bytes(riff_wave([(b"fmt ", FMT_PCM16), (b"data", samples.tobytes())])[:1044])  # 1,000 data bytes
    with pytest.raises(
        BadAudioError, match=r"cut\.wav: truncated: its data chunk declares 32,000 bytes, the file holds 1,000$"
    ):
        load_audio(path)


def test_a_whole_wav_with_an_odd_length_chunk_before_its_data_reads_in_full(tmp_path):
    samples = (np.sin(np.arange(16_000) / 5) * 10_000).astype("<i2")
    path = tmp_path / "whole.wav"
    path.write_bytes(riff_wave([(b"fmt ", FMT_PCM16), (b"note", b"odd"), (b"data", samples.tobytes())]))
    np.testing.assert_array_equal(load_audio(path), samples / 2**15)
