"""Classification metrics of a probe's test predictions, computed from one confusion matrix."""

from __future__ import annotations

import numpy as np


def confusion_matrix(true: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts of (true, predicted) class pairs.

    Parameters
    ----------
    true, predicted : (n,) int arrays
        Class indices in ``0 .. num_classes - 1``.
    num_classes : int

    Returns
    -------
    (num_classes, num_classes) int64 array; rows are true classes, columns predicted ones.
    """
    true = np.asarray(true, dtype=np.int64)
    predicted = np.asarray(predicted, dtype=np.int64)
    if true.shape != predicted.shape or true.ndim != 1:
        raise ValueError(f"true and predicted must be 1-D of one length, got {true.shape} and {predicted.shape}")
    for name, values in (("true", true), ("predicted", predicted)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"{name} class indices must lie in 0..{num_classes - 1}")
    return np.bincount(true * num_classes + predicted, minlength=num_classes**2).reshape(num_classes, num_classes)


def classification_scores(confusion: np.ndarray) -> dict[str, float]:
    """Unweighted accuracy, weighted accuracy and macro F1 from a confusion matrix.

    Parameters
    ----------
    confusion : (C, C) array of counts, rows true, columns predicted.

    Returns
    -------
    dict with
        ``ua``: unweighted accuracy, the mean recall over the classes present in the test set
        (what speech-emotion papers call UA; scikit-learn's ``balanced_accuracy_score``);
        ``wa``: weighted accuracy, i.e. plain accuracy;
        ``macro_f1``: mean F1 over the classes that are true or predicted at least once
        (scikit-learn's ``f1_score(average="macro")``; F1 is 0 for a class with no hit).
        All three lie in [0, 1].
    """
    confusion = np.asarray(confusion, dtype=np.float64)
    support = confusion.sum(axis=1)
    predicted_count = confusion.sum(axis=0)
    hits = np.diag(confusion)
    if support.sum() == 0:
        raise ValueError("empty confusion matrix: no test predictions to score")
    present = support > 0
    recall = hits[present] / support[present]
    # F1 = 2 TP / (2 TP + FP + FN) = 2 TP / (support + predicted count), defined as 0 when TP = 0.
    scored = present | (predicted_count > 0)
    f1 = 2 * hits[scored] / (support[scored] + predicted_count[scored])
    return {
        "ua": float(recall.mean()),
        "wa": float(hits.sum() / support.sum()),
        "macro_f1": float(f1.mean()),
    }
