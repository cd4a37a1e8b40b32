"""Speaker-independent train / validation / test rows for one cross-validation fold."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from paraprobe.corpora import check_speaker_independent_folds


def derive_seed(*keys: int | str) -> int:
    """A 64-bit seed that depends only on ``keys`` (non-negative ints and strings).

    Every random choice of a probe run (validation speakers, initial weights, minibatch order)
    draws from its own seed derived from the user's seed and what the choice is for, so that
    adding an input or a seed never changes the other runs' draws.
    """
    entropy = [zlib.crc32(key.encode()) if isinstance(key, str) else int(key) for key in keys]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0])


@dataclass(frozen=True)
class FoldSplit:
    """Row indices (into the manifest) of one fold's three disjoint sets, each sorted."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    validation_speakers: tuple[str, ...]


def fold_split(
    speakers: np.ndarray,
    folds: np.ndarray,
    test_fold: int,
    validation_share: float,
    seed: int,
    source: str | Path = "manifest.tsv",
) -> FoldSplit:
    """Test on ``test_fold``; hold out whole speakers of the other folds for validation.

    Parameters
    ----------
    speakers, folds : (N,) arrays
        Speaker id (str) and fold number (int) of every manifest row.
    test_fold : int
        The fold to test on; every other fold is training data.
    validation_share : float in (0, 1)
        Share of the training *speakers* held out for validation (early stopping):
        ``max(1, round(share * n))`` of the ``n`` training speakers, at least one left to train on.
    seed : int
        The run's seed; the validation speakers are a deterministic function of
        (seed, test_fold) and the training speakers.
    source : path
        The manifest the rows come from, named in every error.

    Returns
    -------
    FoldSplit
        No speaker appears in two of train, validation and test.
    """
    speakers = np.asarray(speakers).astype(str)
    folds = np.asarray(folds)
    check_speaker_independent_folds(speakers, folds, source)
    if not 0 < validation_share < 1:
        raise ValueError(f"validation_share must lie in (0, 1), got {validation_share}")
    is_test = folds == test_fold
    if not is_test.any():
        raise ValueError(
            f"{source}: fold {test_fold} has no rows (folds present: {sorted(set(folds.tolist()))}); "
            f"its files may all have been excluded: see {Path(source).with_name('excluded.tsv')}"
        )
    training_speakers = np.unique(speakers[~is_test])
    if training_speakers.size < 2:
        raise ValueError(
            f"{source}: fold {test_fold}: {training_speakers.size} training speaker(s); a speaker-independent "
            "validation set needs at least 2"
        )
    num_validation = min(max(1, round(validation_share * training_speakers.size)), training_speakers.size - 1)
    rng = np.random.default_rng(derive_seed(seed, "validation speakers", test_fold))
    validation_speakers = np.sort(rng.permutation(training_speakers)[:num_validation])
    is_validation = ~is_test & np.isin(speakers, validation_speakers)
    return FoldSplit(
        train=np.flatnonzero(~is_test & ~is_validation),
        validation=np.flatnonzero(is_validation),
        test=np.flatnonzero(is_test),
        validation_speakers=tuple(validation_speakers.tolist()),
    )
