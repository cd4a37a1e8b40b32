"""Canonical correlation analysis and its relatives (SVCCA, PWCCA, linear CKA), in memory or streamed.

Every method here is a function of second-order statistics alone: the covariance of each
view and their cross-covariance. The in-memory functions (:func:`canonical_correlations`,
:func:`similarity`) compute those from arrays; :class:`MomentAccumulator` and
:class:`StreamingSimilarity` accumulate them chunk by chunk, in memory that grows with the
number of columns squared and never with the number of rows, and give the same numbers.

Conventions shared by all methods:

- Rows are observations (frames), columns are dimensions (neurons, features).
- CCA is computed on standardized columns (CCA is invariant to per-column scale, so this
  changes nothing but the meaning of the ridge) with ``ridge`` added to the diagonal of
  each view's correlation matrix. The ridge keeps constant, duplicated and otherwise
  rank-deficient columns finite: such a direction has a canonical correlation near 0
  instead of an undefined one. A column with zero variance is left at scale 1 (it is all
  zeros once centred), so it contributes exactly nothing.
- Every result is finite; degenerate input (a constant view) gives 0, never NaN.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

METHODS = ("cca", "svcca", "pwcca", "cka")
#: Added to the diagonal of each view's correlation matrix (so: relative to unit variance).
#: It only needs to make degenerate directions finite: float32 accumulation agrees with
#: float64 to about 1e-5 even without it. A direction of the correlation matrix with
#: eigenvalue λ keeps about a fraction λ / (λ + ridge) of its correlation, so 1e-6 leaves every
#: direction holding more than 1e-4 of a column's variance within 1 % of its value. The frame
#: subset is stored in float16 (the file contract), whose rounding adds noise of about 1e-7 of a
#: value's square, i.e. of (mean^2 + variance): far below the ridge for centred columns, but a
#: column whose mean is 100x its spread gets noise of about 1e-3 of its variance, and its weaker
#: directions are then blurred by storage, not by the ridge.
DEFAULT_RIDGE = 1e-6
#: SVCCA keeps the leading principal directions holding this fraction of a view's variance.
DEFAULT_SVCCA_VARIANCE = 0.99


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown similarity method {method!r}; expected one of {', '.join(METHODS)}")


@dataclass(frozen=True)
class Covariances:
    """Covariance blocks of two views ``x`` (p columns) and ``y`` (q columns).

    Attributes
    ----------
    xx : (p, p) float64 covariance of x.
    yy : (q, q) float64 covariance of y.
    xy : (p, q) float64 cross-covariance, ``cov(x_i, y_j)``.
    """

    xx: np.ndarray
    yy: np.ndarray
    xy: np.ndarray

    @classmethod
    def of(cls, x: np.ndarray, y: np.ndarray) -> Covariances:
        """Covariances of two in-memory views (n, p) and (n, q), in float64 (two-pass, centred)."""
        x, y = _check_views(x, y)
        x = x - x.mean(axis=0)
        y = y - y.mean(axis=0)
        scale = 1.0 / (x.shape[0] - 1)
        return cls(x.T @ x * scale, y.T @ y * scale, x.T @ y * scale)


def _check_views(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2:
        raise ValueError(f"views must be 2-D (rows, columns); got shapes {x.shape} and {y.shape}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"views must have the same number of rows; got {x.shape[0]} and {y.shape[0]}")
    if x.shape[0] < 2 or x.shape[1] == 0 or y.shape[1] == 0:
        raise ValueError(f"need at least 2 rows and 1 column per view; got shapes {x.shape} and {y.shape}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("views contain NaN or infinite values")
    return x, y


@dataclass(frozen=True)
class Whitening:
    """How to whiten one view: standardize, then rotate and rescale by the ridged correlation matrix.

    ``((x - mean) / scale) @ basis`` has covariance ``diag(λ / (λ + ridge))`` where λ are the
    eigenvalues of the view's correlation matrix: the identity up to the ridge.

    Attributes
    ----------
    scale : (p,) standard deviation of each column; 1 for a column with zero variance.
    basis : (p, p) ``E diag(1 / sqrt(λ + ridge))``, E the correlation matrix's eigenvectors.
    """

    scale: np.ndarray
    basis: np.ndarray


def _symmetric_eigen(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (descending, clipped at 0: a covariance has no negative ones) and eigenvectors."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return np.clip(values[::-1], 0.0, None), vectors[:, ::-1]


def whitening(covariance: np.ndarray, ridge: float = DEFAULT_RIDGE) -> Whitening:
    """The :class:`Whitening` of a view with covariance ``covariance`` (p, p).

    With ``ridge`` = 0 the inverse square root is a pseudo-inverse: directions with
    eigenvalue below the usual rank tolerance (p · machine epsilon · largest) get weight 0.
    """
    if ridge < 0:
        raise ValueError(f"ridge must be >= 0; got {ridge}")
    variance = np.clip(np.diag(covariance), 0.0, None)
    scale = np.where(variance > 0, np.sqrt(variance), 1.0)
    values, vectors = _symmetric_eigen(covariance / np.outer(scale, scale))
    regularized = values + ridge
    tolerance = len(values) * np.finfo(np.float64).eps * max(values[0], ridge)
    inverse_sqrt = np.zeros_like(values)
    usable = regularized > tolerance
    inverse_sqrt[usable] = 1.0 / np.sqrt(regularized[usable])
    return Whitening(scale, vectors * inverse_sqrt)


def principal_basis(covariance: np.ndarray, variance_kept: float = DEFAULT_SVCCA_VARIANCE) -> np.ndarray:
    """Leading principal directions holding ``variance_kept`` of a view's total variance.

    Parameters
    ----------
    covariance : (p, p) covariance of the view (raw, not standardized: SVCCA's SVD step
        sees the data as they are).
    variance_kept : fraction in (0, 1]; the smallest k whose top-k eigenvalues sum to it.

    Returns
    -------
    (p, k) orthonormal columns, leading first. A view without variance keeps 1 direction.
    """
    if not 0 < variance_kept <= 1:
        raise ValueError(f"svcca variance fraction must be in (0, 1]; got {variance_kept}")
    values, vectors = _symmetric_eigen(covariance)
    total = values.sum()
    if total <= 0:
        return vectors[:, :1]
    # A relative slack of 1e-12 so that 1.0 means "all directions with any variance", not "p".
    kept = int(np.searchsorted(np.cumsum(values) / total, variance_kept - 1e-12)) + 1
    return vectors[:, : min(kept, len(values))]


class View:
    """One view's covariance with its decompositions computed once and reused.

    An analysis that compares one layer with many others builds the layer's ``View`` once;
    its whitening and its SVCCA reduction are then shared by every comparison.

    Parameters
    ----------
    covariance : (p, p) float64 covariance.
    ridge, svcca_variance : see :data:`DEFAULT_RIDGE`, :data:`DEFAULT_SVCCA_VARIANCE`.
    """

    def __init__(
        self,
        covariance: np.ndarray,
        ridge: float = DEFAULT_RIDGE,
        svcca_variance: float = DEFAULT_SVCCA_VARIANCE,
    ):
        covariance = np.asarray(covariance, dtype=np.float64)
        if covariance.ndim != 2 or covariance.shape[0] != covariance.shape[1] or covariance.shape[0] == 0:
            raise ValueError(f"a view's covariance must be a non-empty square matrix; got {covariance.shape}")
        self.covariance = covariance
        self.ridge = ridge
        self.svcca_variance = svcca_variance

    @property
    def dims(self) -> int:
        return self.covariance.shape[0]

    @functools.cached_property
    def whitening(self) -> Whitening:
        return whitening(self.covariance, self.ridge)

    @functools.cached_property
    def principal_basis(self) -> np.ndarray:
        """(p, k): see :func:`principal_basis`."""
        return principal_basis(self.covariance, self.svcca_variance)

    @functools.cached_property
    def principal(self) -> View:
        """The view in the coordinates of its :attr:`principal_basis` (SVCCA's reduced view)."""
        basis = self.principal_basis
        return View(basis.T @ self.covariance @ basis, self.ridge, self.svcca_variance)


@dataclass(frozen=True)
class CanonicalFit:
    """Canonical correlations and the directions that attain them.

    Attributes
    ----------
    correlations : (k,) descending, in [0, 1], k = min(p, q).
    x_weights : (p, k) the canonical variates of x are ``(x - mean) @ x_weights`` (unit
        variance, up to the ridge); in the coordinates the fit was given.
    y_weights : (q, k) likewise for y.
    """

    correlations: np.ndarray
    x_weights: np.ndarray
    y_weights: np.ndarray


def fit_canonical(x: View, y: View, cross: np.ndarray) -> CanonicalFit:
    """Ridge CCA of two views from their covariances and cross-covariance ``cross`` (p, q)."""
    if cross.shape != (x.dims, y.dims):
        raise ValueError(f"cross-covariance shape {cross.shape} does not match views ({x.dims}, {y.dims})")
    wx, wy = x.whitening, y.whitening
    correlation = cross / np.outer(wx.scale, wy.scale)
    left, singular, right_t = np.linalg.svd(wx.basis.T @ correlation @ wy.basis, full_matrices=False)
    return CanonicalFit(
        correlations=np.clip(singular, 0.0, 1.0),
        x_weights=(wx.basis @ left) / wx.scale[:, None],
        y_weights=(wy.basis @ right_t.T) / wy.scale[:, None],
    )


def pwcca_weights(x: View, y: View, fit: CanonicalFit) -> np.ndarray:
    """Projection weights of Morcos et al. (2018) for the canonical correlations of ``fit``.

    As in the reference implementation (google/svcca ``pwcca.py``), the weights come from
    the view with fewer dimensions (x when p <= q): canonical variate i weighs
    ``Σ_j |<h_i, x_j>|``, the summed absolute projection of each original column x_j on
    the normalised variate h_i, then the weights are normalised to sum to 1. From second-order
    statistics, ``<h_i, x_j> ∝ cov(h_i, x_j) / std(h_i) = (Σ_xx w_i)_j / sqrt(w_i' Σ_xx w_i)``.

    Two deliberate differences from that file, both following the paper: the variates are
    those of the fitted CCA, ``x @ w_i`` (``pwcca.py`` projects the activations with the SVD's
    rotation alone, leaving out the whitening ``Σ_xx^{-1/2}`` that its own ``cca_core`` applies
    to form directions), and everything is centred (``pwcca.py`` adds the means back, which
    makes its weights depend on where the data sit, not on how they vary). The variates of an
    exact CCA are mutually uncorrelated, so ``pwcca.py``'s QR step reduces to this normalisation.

    Returns
    -------
    (k,) non-negative weights summing to 1 (uniform if every variate is degenerate).
    """
    view, weights = (x, fit.x_weights) if x.dims <= y.dims else (y, fit.y_weights)
    projection = view.covariance @ weights
    variate_variance = np.einsum("ik,ik->k", weights, projection)
    alpha = np.zeros(weights.shape[1])
    usable = variate_variance > 0
    alpha[usable] = np.abs(projection[:, usable]).sum(axis=0) / np.sqrt(variate_variance[usable])
    total = alpha.sum()
    return alpha / total if total > 0 else np.full(len(alpha), 1.0 / len(alpha))


def linear_cka(xx: np.ndarray, yy: np.ndarray, xy: np.ndarray) -> float:
    """Linear CKA (Kornblith et al. 2019) from covariances: ``‖Σ_xy‖² / (‖Σ_xx‖ ‖Σ_yy‖)`` (Frobenius).

    Equal to ``HSIC(XX', YY') / sqrt(HSIC(XX', XX') HSIC(YY', YY'))`` on centred data. 0 when a
    view is constant.
    """
    denominator = np.linalg.norm(xx) * np.linalg.norm(yy)
    return float(np.linalg.norm(xy) ** 2 / denominator) if denominator > 0 else 0.0


def svcca_fit(x: View, y: View, cross: np.ndarray) -> CanonicalFit:
    """CCA of the views reduced to their :attr:`View.principal_basis` (Raghu et al. 2017).

    The weights are mapped back to the views' own coordinates, so the fit can be scored on
    other statistics like any :class:`CanonicalFit`.
    """
    bx, by = x.principal_basis, y.principal_basis
    reduced = fit_canonical(x.principal, y.principal, bx.T @ cross @ by)
    return CanonicalFit(reduced.correlations, bx @ reduced.x_weights, by @ reduced.y_weights)


def canonical_directions(x: View, y: View, cross: np.ndarray, method: str) -> tuple[CanonicalFit, np.ndarray]:
    """The fitted canonical directions behind a CCA-family method, and how it averages them.

    Parameters
    ----------
    x, y : the two views.
    cross : (p, q) cross-covariance.
    method : ``cca``, ``svcca`` or ``pwcca``.

    Returns
    -------
    fit : :class:`CanonicalFit` with weights in the views' own coordinates.
    averaging : (k,) weights summing to 1; the method's value is ``averaging @ correlations``.
    """
    _check_method(method)
    if method == "cka":
        raise ValueError("cka has no canonical directions")
    fit = svcca_fit(x, y, cross) if method == "svcca" else fit_canonical(x, y, cross)
    return fit, averaging_weights(x, y, fit, method)


def averaging_weights(x: View, y: View, fit: CanonicalFit, method: str) -> np.ndarray:
    """(k,) weights turning ``fit``'s correlations into ``method``'s value: PWCCA's, else uniform."""
    if method == "pwcca":
        return pwcca_weights(x, y, fit)
    return np.full(len(fit.correlations), 1.0 / len(fit.correlations))


def compare(x: View, y: View, cross: np.ndarray, method: str) -> float:
    """``method``'s similarity of two views given their covariances and cross-covariance (p, q)."""
    _check_method(method)
    if method == "cka":
        return linear_cka(x.covariance, y.covariance, cross)
    fit, averaging = canonical_directions(x, y, cross, method)
    return float(averaging @ fit.correlations)


def variate_correlations(fit: CanonicalFit, covariances: Covariances) -> np.ndarray:
    """Correlation of each pair of canonical variates of ``fit`` under other statistics.

    Used for held-out estimates: directions fitted on some rows, scored on others. Signed
    (a direction that does not generalise can correlate negatively); 0 where a variate is
    constant.

    Returns
    -------
    (k,) correlations in [-1, 1].
    """
    wx, wy = fit.x_weights, fit.y_weights
    # diag(A' S B) as column sums of A * (S B): one matrix product each, not a triple loop.
    cross = np.sum(wx * (covariances.xy @ wy), axis=0)
    variance_x = np.sum(wx * (covariances.xx @ wx), axis=0)
    variance_y = np.sum(wy * (covariances.yy @ wy), axis=0)
    denominator = np.sqrt(np.clip(variance_x, 0, None) * np.clip(variance_y, 0, None))
    correlations = np.zeros(len(cross))
    usable = denominator > 0
    correlations[usable] = cross[usable] / denominator[usable]
    return np.clip(correlations, -1.0, 1.0)


def compare_held_out(x: View, y: View, cross: np.ndarray, score: Covariances, method: str) -> float:
    """Held-out ``method`` similarity: directions (and PWCCA weights) fitted on the statistics
    behind ``x``, ``y``, ``cross``; correlations measured under ``score``, other rows' statistics.

    Not defined for ``cka``, which fits nothing.
    """
    fit, averaging = canonical_directions(x, y, cross, method)
    return float(averaging @ variate_correlations(fit, score))


def covariance_similarity(
    covariances: Covariances,
    method: str,
    ridge: float = DEFAULT_RIDGE,
    svcca_variance: float = DEFAULT_SVCCA_VARIANCE,
) -> float:
    """``method``'s similarity from the covariance blocks of two views."""
    return compare(
        View(covariances.xx, ridge, svcca_variance),
        View(covariances.yy, ridge, svcca_variance),
        covariances.xy,
        method,
    )


def canonical_correlations(x: np.ndarray, y: np.ndarray, ridge: float = DEFAULT_RIDGE) -> np.ndarray:
    """Canonical correlations of two views (n, p) and (n, q): (min(p, q),) descending, in [0, 1]."""
    covariances = Covariances.of(x, y)
    return fit_canonical(View(covariances.xx, ridge), View(covariances.yy, ridge), covariances.xy).correlations


def similarity(
    x: np.ndarray,
    y: np.ndarray,
    method: str,
    ridge: float = DEFAULT_RIDGE,
    svcca_variance: float = DEFAULT_SVCCA_VARIANCE,
) -> float:
    """Similarity of two views (n, p) and (n, q) of the same n observations.

    Parameters
    ----------
    method : ``cca`` (mean canonical correlation), ``svcca`` (mean canonical correlation of
        the views reduced to their principal directions holding ``svcca_variance`` of the
        variance; Raghu et al. 2017), ``pwcca`` (projection-weighted mean; Morcos et al. 2018,
        see :func:`pwcca_weights`) or ``cka`` (linear CKA; Kornblith et al. 2019).
    ridge : see :data:`DEFAULT_RIDGE`; no effect on ``cka``.

    Returns
    -------
    A float in [0, 1]; 1 for a view against itself (up to the ridge; ``cka`` exactly).
    """
    _check_method(method)
    return covariance_similarity(Covariances.of(x, y), method, ridge, svcca_variance)


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; ``cpu`` and ``cuda`` pass through."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda; got {device!r}")
    if device == "cpu":
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if device == "cuda":
        raise ValueError("device 'cuda' requested but torch sees no CUDA device")
    return "cpu"


def _add_outer(matrix: np.ndarray, scale: float, vector: np.ndarray, rows_per_block: int = 1024) -> None:
    """``matrix += scale * outer(vector, vector)`` in place, a block of rows at a time.

    A 10,000-column outer product would otherwise need an 800 MB temporary.
    """
    for start in range(0, len(vector), rows_per_block):
        stop = start + rows_per_block
        matrix[start:stop] += (scale * vector[start:stop])[:, None] * vector[None, :]


class MomentAccumulator:
    """Streamed count, mean and covariance of d columns: memory O(d²), never O(rows).

    Numerics ("shifted data" algorithm, then Chan et al.'s pairwise merge):

    - Every chunk is shifted by one fixed reference, the first chunk's column means, before
      its sums and Gram matrix are taken. The covariance is recovered at the end as
      ``(G - n m m') / (n - 1)`` with m the mean of the shifted data; since the reference is
      close to the true mean, m is small and the subtraction cancels almost nothing.
    - The chunk's Gram matrix is one matrix product in the chunk's own precision, at least
      float32 (float16 embeddings are widened exactly): a chunk's sum of products then carries
      a relative error of about sqrt(rows per chunk) · 6e-8, around 1e-6 of a column's
      variance. Totals across chunks are float64, so that error does not grow with the
      number of chunks. Float64 chunks are multiplied in float64.
    - On ``cuda`` the product runs on the GPU (TF32 disabled, so float32 stays float32).
      On ``cpu`` numpy's ``a.T @ a`` dispatches to BLAS ``syrk``, half the work of a general
      product.

    Parameters
    ----------
    num_columns : d.
    device : ``auto``, ``cpu`` or ``cuda`` (see :func:`resolve_device`).
    """

    def __init__(self, num_columns: int, device: str = "cpu"):
        if num_columns < 1:
            raise ValueError(f"num_columns must be >= 1; got {num_columns}")
        self.num_columns = int(num_columns)
        self.device = resolve_device(device)
        self.count = 0
        self._shift: np.ndarray | None = None  # (d,) float64
        self._sum = np.zeros(self.num_columns)  # (d,) float64 sum of shifted rows
        self._gram = self._zeros_gram()  # (d, d) float64 sum of shifted outer products
        self._product: np.ndarray | None = None  # (d, d) reused for each CPU chunk's product

    def _zeros_gram(self):
        if self.device == "cuda":
            import torch

            return torch.zeros((self.num_columns, self.num_columns), dtype=torch.float64, device="cuda")
        return np.zeros((self.num_columns, self.num_columns))

    def update(self, chunk: np.ndarray, overwrite_chunk: bool = False) -> None:
        """Add rows: ``chunk`` (m, d), any float dtype (m may be 0).

        With ``overwrite_chunk``, a writable C-contiguous float32 (float64) chunk is shifted in
        place instead of into a new array: a 10,000-column chunk's temporary costs as much
        time in fresh pages as a tenth of its product.
        """
        chunk = np.asarray(chunk)
        if chunk.ndim != 2 or chunk.shape[1] != self.num_columns:
            raise ValueError(f"chunk must have shape (rows, {self.num_columns}); got {chunk.shape}")
        if chunk.shape[0] == 0:
            return
        work_dtype = np.float64 if chunk.dtype == np.float64 else np.float32
        if self._shift is None:
            self._shift = chunk.mean(axis=0, dtype=np.float64)
        in_place = overwrite_chunk and chunk.dtype == work_dtype and chunk.flags.writeable and chunk.flags.c_contiguous
        with np.errstate(invalid="ignore", over="ignore"):  # non-finite input is reported just below
            if in_place:
                shifted = np.subtract(chunk, self._shift.astype(work_dtype), out=chunk)
            else:
                shifted = np.subtract(chunk, self._shift.astype(work_dtype), dtype=work_dtype)
            column_sums = shifted.sum(axis=0, dtype=np.float64)
        if not np.isfinite(column_sums).all():
            raise ValueError("chunk contains NaN or infinite values")
        self._sum += column_sums
        self._add_gram(shifted)
        self.count += chunk.shape[0]

    def _add_gram(self, shifted: np.ndarray) -> None:
        if self.device == "cuda":
            import torch

            rows = torch.from_numpy(shifted).to("cuda", non_blocking=True)
            previous = torch.backends.cuda.matmul.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = False
            try:
                self._gram += (rows.T @ rows).to(torch.float64)
            finally:
                torch.backends.cuda.matmul.allow_tf32 = previous
        else:
            if self._product is None or self._product.dtype != shifted.dtype:
                self._product = np.empty((self.num_columns, self.num_columns), dtype=shifted.dtype)
            np.matmul(shifted.T, shifted, out=self._product)
            self._gram += self._product

    def _host_gram(self) -> np.ndarray:
        return self._gram.cpu().numpy() if self.device == "cuda" else self._gram

    def mean(self) -> np.ndarray:
        """(d,) float64 column means."""
        self._require_rows(1)
        return self._shift + self._sum / self.count

    def covariance(
        self, rows: Sequence[int] | np.ndarray | None = None, columns: Sequence[int] | np.ndarray | None = None
    ) -> np.ndarray:
        """Sample covariance (divisor n - 1), float64, of the given row and column indices.

        Parameters
        ----------
        rows, columns : column indices (or None for all) selecting the block ``cov[rows][:, columns]``;
            ``columns`` defaults to ``rows``.
        """
        self._require_rows(2)
        rows = np.arange(self.num_columns) if rows is None else np.asarray(rows)
        columns = rows if columns is None else np.asarray(columns)
        shifted_mean = self._sum / self.count
        if self.device == "cuda":
            import torch

            block = self._gram[torch.as_tensor(rows, device="cuda")][:, torch.as_tensor(columns, device="cuda")]
            block = block.cpu().numpy()
        else:
            block = self._gram[np.ix_(rows, columns)]
        return (block - self.count * np.outer(shifted_mean[rows], shifted_mean[columns])) / (self.count - 1)

    def _require_rows(self, minimum: int) -> None:
        if self.count < minimum:
            raise ValueError(f"need at least {minimum} rows of statistics; have {self.count}")

    @classmethod
    def merged(cls, parts: Sequence[MomentAccumulator]) -> MomentAccumulator:
        """One accumulator holding the statistics of all ``parts`` (Chan et al.'s pairwise update).

        Each part's co-moment about its own mean is combined with
        ``M = M_a + M_b + (n_a n_b / n) δ δ'``, δ the difference of means, all in float64;
        the result is on the CPU. Empty parts are skipped.
        """
        parts = [part for part in parts if part.count > 0]
        if not parts:
            raise ValueError("nothing to merge: every part is empty")
        result = cls(parts[0].num_columns, device="cpu")
        count, mean, comoment = 0, np.zeros(result.num_columns), np.zeros((result.num_columns,) * 2)
        for part in parts:
            if part.num_columns != result.num_columns:
                raise ValueError("cannot merge accumulators of different widths")
            shifted_mean = part._sum / part.count
            comoment += part._host_gram()
            _add_outer(comoment, -part.count, shifted_mean)  # the part's co-moment about its mean
            delta = part._shift + shifted_mean - mean
            total = count + part.count
            _add_outer(comoment, count * part.count / total, delta)
            mean = mean + delta * (part.count / total)
            count = total
        result.count, result._shift, result._gram = count, mean, comoment
        return result


class StreamingSimilarity:
    """Streamed version of :func:`similarity` for two views seen chunk by chunk.

    ``update(x_chunk, y_chunk)`` adds rows; ``similarity(method)`` equals ``similarity(x, y,
    method)`` on all rows seen (to float32 accumulation error for float32 chunks).

    Parameters
    ----------
    x_dims, y_dims : p and q.
    ridge, svcca_variance : as for :func:`similarity`.
    device : ``auto``, ``cpu`` or ``cuda``.
    """

    def __init__(
        self,
        x_dims: int,
        y_dims: int,
        ridge: float = DEFAULT_RIDGE,
        svcca_variance: float = DEFAULT_SVCCA_VARIANCE,
        device: str = "cpu",
    ):
        self.x_dims, self.y_dims = int(x_dims), int(y_dims)
        self.ridge, self.svcca_variance = ridge, svcca_variance
        self.moments = MomentAccumulator(self.x_dims + self.y_dims, device)

    def update(self, x_chunk: np.ndarray, y_chunk: np.ndarray) -> None:
        """Add m rows: ``x_chunk`` (m, p) and ``y_chunk`` (m, q)."""
        x_chunk, y_chunk = np.asarray(x_chunk), np.asarray(y_chunk)
        if x_chunk.ndim != 2 or y_chunk.ndim != 2 or x_chunk.shape[0] != y_chunk.shape[0]:
            raise ValueError(f"chunks must be 2-D with equal rows; got {x_chunk.shape} and {y_chunk.shape}")
        self.moments.update(np.concatenate([x_chunk, y_chunk], axis=1))

    def covariances(self) -> Covariances:
        x = np.arange(self.x_dims)
        y = np.arange(self.x_dims, self.x_dims + self.y_dims)
        cov = self.moments.covariance()
        return Covariances(cov[np.ix_(x, x)], cov[np.ix_(y, y)], cov[np.ix_(x, y)])

    def canonical_correlations(self) -> np.ndarray:
        cov = self.covariances()
        return fit_canonical(View(cov.xx, self.ridge), View(cov.yy, self.ridge), cov.xy).correlations

    def similarity(self, method: str) -> float:
        _check_method(method)
        return covariance_similarity(self.covariances(), method, self.ridge, self.svcca_variance)
