"""The offline demo corpus: acted-emotion speech synthesised in RAVDESS's layout.

Model of speech (a Klatt-style source-filter synthesiser, vectorised with numpy/scipy):

* **Source.** A train of Rosenberg glottal pulses (flow rises as a half cosine over the
  opening phase, falls as a quarter cosine over the closing phase, is zero while the
  glottis is closed), differentiated analytically (the lip-radiation +6 dB/octave).
  Pulse onsets follow an F0 contour; each period's length is perturbed at random
  (jitter) and each pulse's amplitude too (shimmer). A short closing phase (abrupt
  closure) gives a flat, "pressed" spectrum; a long one a steep spectral tilt.
  Aspiration noise, louder while the glottis is open, adds breathiness.
* **F0 contour.** The speaker's habitual F0 shifted by the emotion, plus, in semitones:
  a Gaussian pitch accent on every stressed vowel (declining over the utterance), a
  linear declination, a final fall or rise over the last stressed syllable, slow random
  drift, and (for fear) a 6 Hz tremor.
* **Filter.** A cascade of five Klatt resonators (unity gain at 0 Hz): F1-F3 follow the
  phone targets, smoothed over 60 ms (coarticulation) and updated every 10 ms; F4 and F5
  are fixed. All formants scale with the speaker's vocal-tract length.
* **Phones.** Each statement is a fixed sequence of phones (ARPAbet-like, stops split
  into closure and burst as in TIMIT). A phone sets formant targets, a voicing gain
  and a frication gain with its noise band; fricatives and bursts are band-passed
  noise added after the vocal tract. Gains are smoothed over 15 ms, so vowels swell and
  fade at the syllable rate; stressed vowels are longer and louder, the last syllable
  is lengthened, and a short pause separates the two phrases. Leading and trailing
  silence carry a faint noise floor.
* **Emotion.** :data:`EMOTIONS` moves F0 level and range, loudness, speaking rate,
  glottal pulse shape (spectral tilt), jitter, shimmer and breathiness away from neutral
  in the directions reported for acted emotions (Banse & Scherer 1996; Juslin & Laukka
  2003). Strong intensity extrapolates every parameter further from neutral
  (:data:`INTENSITY_EXAGGERATION`).
* **Speaker.** :data:`SPEAKERS` gives each of RAVDESS's 24 actors (odd male, even female)
  a habitual F0, a formant scale (vocal-tract length) and a speaking rate.

Every file's randomness comes from its own generator seeded by (seed, actor, emotion,
intensity, statement, repetition), so a file's bytes do not depend on which other files
are generated.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
from scipy.signal import butter, sosfilt

from paraprobe.corpora.ravdess import AUDIO_ONLY, EMOTIONS as EMOTION_NAMES_BY_CODE, SPEECH
from paraprobe.io import atomic_path
from paraprobe.progress import Progress

logger = logging.getLogger("paraprobe")


# --------------------------------------------------------------------------- tables


@dataclass(frozen=True)
class EmotionProfile:
    """How an emotion sets the voice; neutral is the reference.

    Attributes
    ----------
    f0_shift_st : mean F0 shift from the speaker's habitual F0, semitones.
    f0_range : scale of pitch accents, declination and drift (neutral 1).
    final_contour_st : F0 movement over the last stressed syllable, semitones (< 0 falls).
    tremor_st : depth of a 6 Hz F0 tremor, semitones.
    loudness_db : speech level relative to neutral, dB.
    speaking_rate : phone rate relative to neutral (> 1 faster).
    open_quotient : fraction of each period the glottis is open.
    closing_quotient : fraction of each period spent closing; short = abrupt closure =
        flat spectrum (pressed voice), long = steep spectral tilt (lax voice).
    jitter : standard deviation of each period's relative length perturbation.
    shimmer_db : standard deviation of each pulse's amplitude, dB.
    breathiness : aspiration noise level relative to the voiced source (RMS ratio).
    """

    f0_shift_st: float
    f0_range: float
    final_contour_st: float
    tremor_st: float
    loudness_db: float
    speaking_rate: float
    open_quotient: float
    closing_quotient: float
    jitter: float
    shimmer_db: float
    breathiness: float


#: Emotion name -> its normal-intensity profile, in RAVDESS's code order.
EMOTIONS: dict[str, EmotionProfile] = {
    "neutral": EmotionProfile(0.0, 1.0, -2.0, 0.0, 0.0, 1.00, 0.60, 0.16, 0.008, 0.30, 0.04),
    "calm": EmotionProfile(-1.0, 0.7, -2.5, 0.0, -3.0, 0.90, 0.65, 0.20, 0.008, 0.30, 0.08),
    "happy": EmotionProfile(3.0, 1.5, -1.0, 0.0, 3.0, 1.08, 0.55, 0.12, 0.010, 0.40, 0.04),
    "sad": EmotionProfile(-1.5, 0.5, -1.5, 0.0, -6.0, 0.80, 0.72, 0.26, 0.014, 0.70, 0.14),
    "angry": EmotionProfile(4.0, 1.4, -4.0, 0.0, 7.0, 1.10, 0.45, 0.08, 0.012, 0.45, 0.02),
    "fearful": EmotionProfile(5.0, 1.2, 0.5, 0.5, 1.0, 1.15, 0.60, 0.14, 0.014, 0.60, 0.10),
    "disgust": EmotionProfile(-2.0, 0.9, -3.5, 0.0, 0.0, 0.82, 0.50, 0.12, 0.014, 0.60, 0.05),
    "surprised": EmotionProfile(4.0, 1.6, 3.0, 0.0, 3.0, 1.00, 0.58, 0.12, 0.010, 0.40, 0.05),
}
EMOTION_CODES = {name: code for code, name in EMOTION_NAMES_BY_CODE.items()}

#: RAVDESS intensity code -> how far each parameter moves from neutral (neutral has only 1).
INTENSITY_EXAGGERATION = {1: 1.0, 2: 1.6}


@dataclass(frozen=True)
class SpeakerProfile:
    """A voice: habitual F0 (Hz), formant scale (vocal-tract length, male adult = 1), rate."""

    sex: str
    f0_hz: float
    formant_scale: float
    speaking_rate: float


def _male(f0_hz: float, formant_scale: float, rate: float) -> SpeakerProfile:
    return SpeakerProfile("male", f0_hz, formant_scale, rate)


def _female(f0_hz: float, formant_scale: float, rate: float) -> SpeakerProfile:
    return SpeakerProfile("female", f0_hz, formant_scale, rate)


#: RAVDESS's 24 actors in order (Actor_01 is SPEAKERS[0]); odd actors male, even female.
SPEAKERS: tuple[SpeakerProfile, ...] = (
    _male(110, 1.00, 1.00), _female(205, 1.16, 1.02), _male(128, 0.96, 0.95), _female(188, 1.12, 1.06),
    _male(98, 0.94, 1.04), _female(226, 1.20, 0.97), _male(120, 1.03, 0.92), _female(195, 1.18, 1.00),
    _male(136, 0.98, 1.07), _female(230, 1.14, 0.94), _male(104, 1.02, 0.98), _female(214, 1.10, 1.05),
    _male(116, 0.95, 1.02), _female(182, 1.21, 0.99), _male(140, 1.01, 0.96), _female(220, 1.13, 1.08),
    _male(101, 0.97, 1.05), _female(200, 1.19, 0.93), _male(132, 0.99, 1.01), _female(225, 1.11, 1.03),
    _male(113, 1.04, 0.97), _female(192, 1.15, 1.04), _male(124, 0.93, 1.06), _female(210, 1.17, 0.95),
)  # fmt: skip


@dataclass(frozen=True)
class Phone:
    """One phone's targets for an adult male vocal tract.

    Attributes
    ----------
    duration_s : duration at neutral rate, seconds.
    formants_hz : F1, F2, F3 targets (for consonants, the locus the vowels move towards).
    voicing : gain of the glottal source (1 = vowel).
    frication : gain of band-passed noise, relative to a vowel's level.
    noise_band_hz : (low, high) pass band of that noise; None without frication.
    """

    duration_s: float
    formants_hz: tuple[float, float, float]
    voicing: float
    frication: float = 0.0
    noise_band_hz: tuple[float, float] | None = None


_VELAR, _ALVEOLAR, _LABIAL, _NEUTRAL = (300, 2000, 2500), (350, 1800, 2700), (300, 900, 2300), (500, 1500, 2500)
_HIGH_BAND, _MID_BAND, _LOW_BAND = (3500, 7000), (1500, 3500), (600, 2500)

#: Phone inventory; vowel formants after Hillenbrand et al. (1995), adult male.
PHONES: dict[str, Phone] = {
    "sil": Phone(0.0, _NEUTRAL, 0.0),  # leading/trailing silence; duration drawn per file
    "pau": Phone(0.09, _NEUTRAL, 0.0),
    "ih": Phone(0.075, (430, 2020, 2650), 1.0),
    "aa": Phone(0.09, (770, 1330, 2680), 1.0),
    "ao": Phone(0.11, (650, 1000, 2540), 1.0),
    "ay": Phone(0.11, (750, 1400, 2600), 1.0),
    "ax": Phone(0.05, _NEUTRAL, 0.8),
    "y": Phone(0.06, (300, 2200, 2900), 0.8),
    "r": Phone(0.07, (460, 1200, 1650), 0.8),
    "ng": Phone(0.06, (300, 1700, 2600), 0.45),
    "z": Phone(0.08, (400, 1700, 2600), 0.25, 0.35, _HIGH_BAND),
    "dh": Phone(0.045, (400, 1600, 2600), 0.35, 0.12, (1500, 6000)),
    "s": Phone(0.10, (400, 1700, 2600), 0.0, 0.40, _HIGH_BAND),
    "kcl": Phone(0.055, _VELAR, 0.0),
    "tcl": Phone(0.055, _ALVEOLAR, 0.0),
    "gcl": Phone(0.045, _VELAR, 0.1),  # voiced closures carry a weak voice bar
    "dcl": Phone(0.045, _ALVEOLAR, 0.1),
    "bcl": Phone(0.045, _LABIAL, 0.1),
    "k": Phone(0.035, _VELAR, 0.0, 0.45, _MID_BAND),
    "t": Phone(0.035, _ALVEOLAR, 0.0, 0.45, _HIGH_BAND),
    "g": Phone(0.015, _VELAR, 0.2, 0.35, _MID_BAND),
    "d": Phone(0.015, _ALVEOLAR, 0.2, 0.35, _HIGH_BAND),
    "b": Phone(0.012, _LABIAL, 0.2, 0.25, _LOW_BAND),
}

#: RAVDESS statement code -> its phones; "1" marks a stressed vowel (a pitch accent).
STATEMENTS: dict[int, str] = {
    1: "kcl k ih1 dcl d z aa r tcl t ao1 kcl k ih ng pau bcl b ay1 y dh ax dcl d ao1 r",  # Kids are talking by the door
    2: "dcl d ao1 gcl g z aa r s ih1 tcl t ih ng pau bcl b ay1 y dh ax dcl d ao1 r",  # Dogs are sitting by the door
}

# Prosody and rendering constants (neutral speech).
ACCENT_ST = 2.5  # height of the first pitch accent; later ones decline
ACCENT_DECLINE = 0.8  # each accent is this fraction of the previous one
DECLINATION_ST = 2.0  # F0 fall over the utterance
DRIFT_ST = 0.4  # standard deviation of slow random F0 drift
TREMOR_HZ = 6.0
F0_LIMITS_HZ = (55.0, 500.0)  # keeps extreme exaggerations inside openSMILE's pitch search range
STRESS_LENGTHENING = 1.3
STRESS_GAIN = 1.4
FINAL_LENGTHENING = 1.4  # on the phones of the last syllable
DURATION_SPREAD = 0.08  # log-normal standard deviation of each phone's duration
LEADING_SILENCE_S, TRAILING_SILENCE_S = (0.35, 0.55), (0.40, 0.60)
FORMANT_BANDWIDTHS_HZ = (70.0, 100.0, 130.0, 200.0, 250.0)  # F1..F5, male reference
HIGH_FORMANTS_HZ = (3300.0, 4200.0)  # F4, F5, male reference
CLOSED_PHASE_ASPIRATION = 0.3  # aspiration while the glottis is closed, relative to open
FORMANT_SMOOTHING_S, GAIN_SMOOTHING_S = 0.060, 0.015
CONTROL_RATE_HZ = 1000  # articulation and prosody tracks are planned at this rate
FORMANT_UPDATE_S = 0.010
RESONANCE_TAIL_S = 0.04  # F1, the narrowest resonance, decays by ~70 dB within this
SPEECH_RMS = 10 ** (-28 / 20)  # level of neutral speech, full scale = 1
NOISE_FLOOR_RMS = 10 ** (-75 / 20)
PEAK_LIMIT = 0.99
MIN_SAMPLE_RATE = 16_000


def emotion_profile(emotion: str, intensity: int = 1) -> EmotionProfile:
    """The profile of ``emotion`` at RAVDESS ``intensity`` (1 normal, 2 strong).

    Strong intensity moves every parameter ``INTENSITY_EXAGGERATION[2]`` times as far from
    neutral as the normal-intensity profile does.
    """
    if emotion not in EMOTIONS:
        raise ValueError(f"emotion {emotion!r} is not one of {', '.join(EMOTIONS)}")
    if intensity not in INTENSITY_EXAGGERATION:
        raise ValueError(f"intensity {intensity!r} is not 1 (normal) or 2 (strong)")
    neutral, target = EMOTIONS["neutral"], EMOTIONS[emotion]
    factor = INTENSITY_EXAGGERATION[intensity]
    return EmotionProfile(
        **{
            field.name: getattr(neutral, field.name)
            + factor * (getattr(target, field.name) - getattr(neutral, field.name))
            for field in dataclasses.fields(EmotionProfile)
        }
    )


@dataclass(frozen=True)
class UtteranceParams:
    """Everything that defines one utterance except its randomness."""

    speaker: SpeakerProfile
    emotion: EmotionProfile
    statement: int
    sample_rate: int = MIN_SAMPLE_RATE


# --------------------------------------------------------------------------- synthesis


@dataclass(frozen=True)
class _Segment:
    phone: Phone
    start: int  # first sample
    stop: int  # one past the last sample
    stressed: bool


def _plan_segments(params: UtteranceParams, rng: np.random.Generator) -> list[_Segment]:
    """Lay the statement's phones out in time, silences included, in samples."""
    tokens = STATEMENTS[params.statement].split()
    rate = params.emotion.speaking_rate * params.speaker.speaking_rate
    spread = np.exp(DURATION_SPREAD * rng.standard_normal(len(tokens)))
    last_stress = max(i for i, token in enumerate(tokens) if token.endswith("1"))
    durations = [rng.uniform(*LEADING_SILENCE_S)]
    for i, token in enumerate(tokens):
        stressed = token.endswith("1")
        duration = PHONES[token.rstrip("1")].duration_s * spread[i] / rate
        duration *= (STRESS_LENGTHENING if stressed else 1.0) * (FINAL_LENGTHENING if i >= last_stress else 1.0)
        durations.append(duration)
    durations.append(rng.uniform(*TRAILING_SILENCE_S))
    bounds = np.round(np.cumsum([0.0, *durations]) * params.sample_rate).astype(int)
    names = ["sil", *tokens, "sil"]
    return [
        _Segment(PHONES[name.rstrip("1")], int(bounds[i]), int(bounds[i + 1]), name.endswith("1"))
        for i, name in enumerate(names)
    ]


def _smooth(tracks: np.ndarray, width_s: float, sample_rate: float) -> np.ndarray:
    """Triangular-window moving average (two box passes) of (c, n) tracks, edges held.

    ``width_s`` is the window's full support; the output has the input's shape.
    """
    box = max(1, round(width_s * sample_rate / 2))
    for _ in range(2):
        padded = np.pad(tracks, ((0, 0), (box // 2, box - 1 - box // 2)), mode="edge")
        sums = np.cumsum(np.pad(padded, ((0, 0), (1, 0))), axis=1)
        tracks = (sums[:, box:] - sums[:, :-box]) / box
    return tracks


def _f0_contour_hz(
    params: UtteranceParams, segments: list[_Segment], times_s: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """F0 in Hz at ``times_s`` (m,): baseline, accents, declination, final movement, drift, tremor."""
    emotion, rate = params.emotion, params.sample_rate
    speech_start, speech_stop = segments[0].stop / rate, segments[-1].start / rate
    semitones = np.zeros(len(times_s))
    stressed = [s for s in segments if s.stressed]
    for k, segment in enumerate(stressed):
        centre = (segment.start + segment.stop) / 2 / rate
        width = 0.6 * (segment.stop - segment.start) / rate
        semitones += ACCENT_ST * ACCENT_DECLINE**k * np.exp(-0.5 * ((times_s - centre) / width) ** 2)
    semitones -= DECLINATION_ST * np.clip((times_s - speech_start) / (speech_stop - speech_start), 0.0, 1.0)
    # Slow drift: white noise at 20 Hz, smoothed over 0.3 s, normalised to DRIFT_ST.
    knots = rng.standard_normal(int(times_s[-1] * 20) + 2)
    drift = _smooth(knots[None, :], 0.3, 20)[0]
    drift *= DRIFT_ST / max(drift.std(), 1e-9)
    semitones += np.interp(times_s, np.arange(len(drift)) / 20, drift)
    semitones *= emotion.f0_range
    final_start = stressed[-1].start / rate
    final = np.clip((times_s - final_start) / (speech_stop - final_start), 0.0, 1.0)
    semitones += emotion.final_contour_st * final * final * (3 - 2 * final)  # smoothstep
    semitones += emotion.tremor_st * np.sin(2 * np.pi * TREMOR_HZ * times_s + rng.uniform(0, 2 * np.pi))
    f0 = params.speaker.f0_hz * 2 ** ((emotion.f0_shift_st + semitones) / 12)
    return np.clip(f0, *F0_LIMITS_HZ)


def _glottal_source(
    f0_hz: np.ndarray, emotion: EmotionProfile, sample_rate: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Differentiated Rosenberg pulses with jitter and shimmer.

    Returns (n,) source derivative and (n,) bool open-glottis mask.
    """
    n = len(f0_hz)
    phase = np.cumsum(f0_hz) / sample_rate  # glottal cycles elapsed
    onsets = np.interp(np.arange(int(phase[-1]) + 1), phase, np.arange(n, dtype=float))
    periods = np.diff(onsets) * (1 + emotion.jitter * np.clip(rng.standard_normal(len(onsets) - 1), -3, 3))
    onsets = onsets[0] + np.concatenate([[0.0], np.cumsum(periods)])
    amplitudes = 10 ** (emotion.shimmer_db * np.clip(rng.standard_normal(len(periods)), -3, 3) / 20)

    samples = np.arange(n)
    cycle = np.clip(np.searchsorted(onsets, samples, side="right") - 1, 0, len(periods) - 1)
    u = (samples - onsets[cycle]) / periods[cycle]  # position in the cycle, 0..1 while inside
    inside = (u >= 0) & (u < 1)
    closing = emotion.closing_quotient
    opening = emotion.open_quotient - closing
    derivative = np.zeros(n)
    rising = inside & (u < opening)
    derivative[rising] = 0.5 * np.pi / opening * np.sin(np.pi * u[rising] / opening)
    falling = inside & (u >= opening) & (u < opening + closing)
    derivative[falling] = -0.5 * np.pi / closing * np.sin(0.5 * np.pi * (u[falling] - opening) / closing)
    derivative *= amplitudes[cycle] / periods[cycle]  # d(flow)/d(sample)
    return derivative, rising | falling


def _klatt_cascade_response(
    formants_hz: np.ndarray, bandwidths_hz: np.ndarray, sample_rate: int, num_fft: int
) -> np.ndarray:
    """Frequency response of a cascade of Klatt resonators (each with unity gain at 0 Hz).

    Parameters
    ----------
    formants_hz : (frames, k) resonance frequencies, Hz.
    bandwidths_hz : (frames, k) or (k,) their bandwidths, Hz.

    Returns
    -------
    (frames, num_fft // 2 + 1) complex response on the ``rfft`` frequency grid: the
    cascade's gain over its denominator polynomial, the latter evaluated by one FFT.
    """
    formants_hz, bandwidths_hz = np.broadcast_arrays(formants_hz, bandwidths_hz)
    radius = np.exp(-np.pi * bandwidths_hz / sample_rate)
    a1 = -2 * radius * np.cos(2 * np.pi * formants_hz / sample_rate)
    a2 = radius**2
    denominator = np.ones((len(formants_hz), 1))
    for k in range(formants_hz.shape[1]):  # multiply in 1 + a1 z^-1 + a2 z^-2
        product = np.pad(denominator, ((0, 0), (0, 2)))
        product[:, 1:-1] += a1[:, k, None] * denominator
        product[:, 2:] += a2[:, k, None] * denominator
        denominator = product
    gain = np.prod(1 + a1 + a2, axis=1, keepdims=True)
    return gain / np.fft.rfft(denominator, num_fft)


def _vocal_tract(
    excitation: np.ndarray,
    control_times_s: np.ndarray,
    formant_tracks_hz: np.ndarray,
    formant_scale: float,
    sample_rate: int,
) -> np.ndarray:
    """Filter (n,) ``excitation`` through F1-F3 (tracks (3, m) at ``control_times_s``) and fixed F4, F5.

    Time-varying filtering by overlap-add: the excitation is cut into Hann frames (hop
    ``FORMANT_UPDATE_S``, 50 % overlap, summing to one), each frame is filtered in the
    frequency domain by the cascade at its centre's formants, and the filtered frames,
    tails included, are added back. The FFT is long enough for the narrowest resonance's
    tail to decay by ~70 dB before it would wrap around; what is left is cut off. A frame
    rings with its own formants even after they have moved on: an approximation of a
    recursive time-varying filter that bench/synthetic_corpus.py quantifies.
    """
    n = len(excitation)
    hop = round(FORMANT_UPDATE_S * sample_rate)
    num_frames = -(-n // hop) + 1
    num_fft = 1 << int(np.ceil(np.log2(2 * hop + RESONANCE_TAIL_S * sample_rate)))
    window = np.sin(np.pi * np.arange(2 * hop) / (2 * hop)) ** 2
    padded = np.pad(excitation, (hop, (num_frames + 1) * hop - n - hop))
    frames = np.lib.stride_tricks.sliding_window_view(padded, 2 * hop)[::hop][:num_frames] * window

    centres_s = np.minimum(np.arange(num_frames) * hop, n - 1) / sample_rate
    moving = np.stack([np.interp(centres_s, control_times_s, track) for track in formant_tracks_hz], axis=1)
    fixed = np.broadcast_to(np.asarray(HIGH_FORMANTS_HZ) * formant_scale, (num_frames, len(HIGH_FORMANTS_HZ)))
    formants = np.concatenate([moving, fixed], axis=1)
    bandwidths = np.asarray(FORMANT_BANDWIDTHS_HZ) * formant_scale
    response = _klatt_cascade_response(formants, bandwidths, sample_rate, num_fft)
    filtered = np.fft.irfft(np.fft.rfft(frames, num_fft) * response, num_fft)

    hops_per_frame = (2 * hop + round(RESONANCE_TAIL_S * sample_rate)) // hop
    pieces = filtered[:, : hops_per_frame * hop].reshape(num_frames, hops_per_frame, hop)
    output = np.zeros((num_frames + hops_per_frame, hop))
    for k in range(hops_per_frame):  # frame f's k-th hop lands on output hop f + k
        output[k : k + num_frames] += pieces[:, k]
    return output.reshape(-1)[hop : hop + n]


@functools.lru_cache(maxsize=64)
def _band_pass(low_hz: float, high_hz: float, sample_rate: int) -> np.ndarray:
    """Second-order sections of a 4th-order Butterworth band-pass (cached: few bands recur)."""
    return butter(4, (low_hz, high_hz), btype="bandpass", fs=sample_rate, output="sos")


def _frication(
    bands_hz: list[tuple[float, float]],
    gains: np.ndarray,
    formant_scale: float,
    sample_rate: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Noise of fricatives and bursts: the sum over ``bands_hz`` of (b, n) ``gains`` x band-passed noise."""
    noise = rng.standard_normal(gains.shape[1])
    total = np.zeros_like(noise)
    for band, gain in zip(bands_hz, gains):
        low, high = (min(edge * formant_scale, 0.45 * sample_rate) for edge in band)
        total += gain * sosfilt(_band_pass(low, high, sample_rate), noise)
    return total


def _rms(signal: np.ndarray, where: np.ndarray) -> float:
    return float(np.sqrt(np.mean(signal[where] ** 2))) if where.any() else 0.0


def synthesize_utterance(params: UtteranceParams, rng: np.random.Generator) -> np.ndarray:
    """Synthesise one utterance.

    Parameters
    ----------
    params : speaker, emotion (already at its intensity), statement (1 or 2), sample rate.
    rng : the source of every random choice (durations, drift, jitter, shimmer, noise).

    Returns
    -------
    (n,) float64 waveform in [-1, 1] at ``params.sample_rate`` Hz, about 2-4 s long.
    """
    if params.statement not in STATEMENTS:
        raise ValueError(f"statement {params.statement!r} is not 1 or 2")
    if params.sample_rate < MIN_SAMPLE_RATE:
        raise ValueError(f"sample_rate {params.sample_rate} is below {MIN_SAMPLE_RATE} Hz")
    rate, scale, emotion = params.sample_rate, params.speaker.formant_scale, params.emotion
    segments = _plan_segments(params, rng)
    num_samples = segments[-1].stop
    # Articulation and prosody are planned at CONTROL_RATE_HZ, then interpolated.
    control_times = np.arange(0, num_samples / rate, 1 / CONTROL_RATE_HZ)
    segment_stops = [s.stop for s in segments]
    segment_at = np.searchsorted(segment_stops, control_times * rate, side="right")

    def control_tracks(per_segment: list) -> np.ndarray:  # (segments, c) -> (c, control points)
        return np.asarray(per_segment, dtype=float)[segment_at].T

    formant_targets = control_tracks([s.phone.formants_hz for s in segments]) * scale
    formants = _smooth(formant_targets, FORMANT_SMOOTHING_S, CONTROL_RATE_HZ)
    voicing_gain = [s.phone.voicing * (STRESS_GAIN if s.stressed else 1.0) for s in segments]
    bands = sorted({s.phone.noise_band_hz for s in segments if s.phone.noise_band_hz})
    band_gains = [[s.phone.frication * (s.phone.noise_band_hz == band) for s in segments] for band in bands]
    gains = _smooth(control_tracks(list(zip(voicing_gain, *band_gains))), GAIN_SMOOTHING_S, CONTROL_RATE_HZ)
    sample_times = np.arange(num_samples) / rate
    voicing, *frication_gains = (np.interp(sample_times, control_times, track) for track in gains)
    frication_gains = np.reshape(frication_gains, (len(bands), num_samples))
    f0 = np.interp(sample_times, control_times, _f0_contour_hz(params, segments, control_times, rng))

    source, glottis_open = _glottal_source(f0, emotion, rate, rng)
    voiced = voicing > 0.5
    source /= max(_rms(source, voiced), 1e-12)
    aspiration = rng.standard_normal(len(source)) * np.where(glottis_open, 1.0, CLOSED_PHASE_ASPIRATION)
    aspiration *= emotion.breathiness / max(_rms(aspiration, voiced), 1e-12)
    speech = _vocal_tract(voicing * (source + aspiration), control_times, formants, scale, rate)
    speech /= max(_rms(speech, voiced), 1e-12)  # vowels at unit level before frication is added
    speech += _frication(bands, frication_gains, scale, rate, rng)

    active = (voicing + np.sum(frication_gains, axis=0)) > 0.05
    speech *= SPEECH_RMS * 10 ** (emotion.loudness_db / 20) / max(_rms(speech, active), 1e-12)
    speech += NOISE_FLOOR_RMS * rng.standard_normal(len(speech))
    peak = np.max(np.abs(speech))
    if peak > PEAK_LIMIT:  # keep the loudest strong-intensity takes from clipping
        speech *= PEAK_LIMIT / peak
    return speech


# --------------------------------------------------------------------------- corpus


def ravdess_file_name(emotion: str, intensity: int, statement: int, repetition: int, actor: int) -> str:
    """``('angry', 2, 1, 2, 7)`` -> ``'03-01-05-02-01-02-07.wav'`` (audio-only speech)."""
    fields = (AUDIO_ONLY, SPEECH, EMOTION_CODES[emotion], intensity, statement, repetition, actor)
    return "-".join(f"{int(value):02d}" for value in fields) + ".wav"


def _write_pcm16(path: Path, waveform: np.ndarray, sample_rate: int) -> None:
    """Write a [-1, 1] waveform as 16-bit PCM WAV, atomically; same samples, same bytes."""
    pcm = np.round(np.clip(waveform, -1.0, 1.0) * 32767).astype(np.int16)
    with atomic_path(path) as temporary:
        soundfile.write(temporary, pcm, sample_rate, subtype="PCM_16", format="WAV")


def synthesize_corpus(
    root: str | Path,
    *,
    seed: int = 0,
    actors: int = 4,
    repetitions: int = 2,
    sample_rate: int = MIN_SAMPLE_RATE,
    emotions: list[str] | None = None,
) -> list[Path]:
    """Write a RAVDESS-layout speech corpus: ``root/Actor_XX/03-01-EE-II-SS-RR-AA.wav``.

    Every actor speaks both statements ``repetitions`` times in every emotion, at normal
    and strong intensity (neutral: normal only): 60 files per actor with the defaults,
    as RAVDESS. Rerunning with the same arguments rewrites identical bytes.

    Parameters
    ----------
    root : folder to write into (created if missing).
    seed : non-negative integer; with the other arguments it fixes every sample.
    actors : number of actors, 1..24 (Actor_01..); their voices are :data:`SPEAKERS`.
    repetitions : repetitions of each (emotion, intensity, statement), 1..99.
    sample_rate : Hz, at least 16000.
    emotions : subset of :data:`EMOTIONS` names to generate; None for all eight.

    Returns
    -------
    The written paths, sorted.
    """
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not 1 <= actors <= len(SPEAKERS):
        raise ValueError(f"actors must be between 1 and {len(SPEAKERS)}, got {actors}")
    if not 1 <= repetitions <= 99:
        raise ValueError(f"repetitions must be between 1 and 99, got {repetitions}")
    if sample_rate < MIN_SAMPLE_RATE:
        raise ValueError(f"sample_rate must be at least {MIN_SAMPLE_RATE} Hz, got {sample_rate}")
    selected = list(EMOTIONS) if emotions is None else list(emotions)
    unknown = [name for name in selected if name not in EMOTIONS]
    if unknown:
        raise ValueError(f"emotions {unknown} are not among {', '.join(EMOTIONS)}")

    takes = [
        (actor, emotion, intensity, statement, repetition)
        for actor in range(1, actors + 1)
        for emotion in EMOTIONS
        if emotion in selected
        for intensity in ((1,) if emotion == "neutral" else (1, 2))
        for statement in STATEMENTS
        for repetition in range(1, repetitions + 1)
    ]
    progress = Progress(len(takes), unit="utterances", label="synthesize", logger=logger)
    paths = []
    for actor, emotion, intensity, statement, repetition in takes:
        rng = np.random.default_rng([seed, actor, int(EMOTION_CODES[emotion]), intensity, statement, repetition])
        params = UtteranceParams(SPEAKERS[actor - 1], emotion_profile(emotion, intensity), statement, sample_rate)
        waveform = synthesize_utterance(params, rng)
        path = Path(root) / f"Actor_{actor:02d}" / ravdess_file_name(emotion, intensity, statement, repetition, actor)
        _write_pcm16(path, waveform, sample_rate)
        paths.append(path)
        progress.update(1, len(waveform) / sample_rate)
    return sorted(paths)
