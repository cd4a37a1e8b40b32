"""paraprobe.cca against planted structure, invariances and straightforward data-space implementations."""

import numpy as np
import pytest

from paraprobe import cca

PLANTED = np.array([0.9, 0.7, 0.5, 0.3])


def planted_views(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """x (n, 6) and y (n, 7) whose canonical correlations are PLANTED then zeros, hidden by mixing."""
    rng = np.random.default_rng(seed)
    latent_x = rng.standard_normal((n, 6))
    noise = rng.standard_normal((n, len(PLANTED)))
    paired = PLANTED * latent_x[:, : len(PLANTED)] + np.sqrt(1 - PLANTED**2) * noise
    latent_y = np.concatenate([paired, rng.standard_normal((n, 3))], axis=1)
    x = latent_x @ rng.standard_normal((6, 6)) + rng.standard_normal(6) * 10
    y = latent_y @ rng.standard_normal((7, 7)) - 3.0
    return x, y


def correlated_views(n: int = 3000, p: int = 12, q: int = 9, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Generic views sharing a few latent factors, with unequal column scales and offsets."""
    rng = np.random.default_rng(seed)
    shared = rng.standard_normal((n, 4))
    x = shared @ rng.standard_normal((4, p)) + rng.standard_normal((n, p)) * rng.uniform(0.2, 3, p)
    y = shared @ rng.standard_normal((4, q)) + rng.standard_normal((n, q)) * rng.uniform(0.2, 3, q)
    return x * rng.uniform(0.1, 50, p) + 7, y - 100


# -- independent, data-space implementations (QR and SVD of the centred data; no covariances) --


def orthonormal_basis(data: np.ndarray) -> np.ndarray:
    """(n, rank) orthonormal basis of the centred columns' span."""
    q, _ = np.linalg.qr(data - data.mean(axis=0))
    return q


def reference_canonical(x: np.ndarray, y: np.ndarray):
    """Björck & Golub (1973): canonical correlations are the singular values of Qx' Qy."""
    qx, qy = orthonormal_basis(x), orthonormal_basis(y)
    left, singular, _ = np.linalg.svd(qx.T @ qy, full_matrices=False)
    return singular, qx @ left  # correlations and x's canonical variates (orthonormal columns)


def reference_svcca(x: np.ndarray, y: np.ndarray, variance_kept: float) -> float:
    def reduce(data):
        centred = data - data.mean(axis=0)
        u, s, _ = np.linalg.svd(centred, full_matrices=False)
        keep = np.argmax(np.cumsum(s**2) / np.sum(s**2) >= variance_kept) + 1
        return u[:, :keep] * s[:keep]

    return float(np.mean(reference_canonical(reduce(x), reduce(y))[0]))


def reference_pwcca(x: np.ndarray, y: np.ndarray) -> float:
    """Morcos et al. 2018 on data: weights from the smaller view's variates against its own columns."""
    if x.shape[1] > y.shape[1]:
        x, y = y, x
    correlations, variates = reference_canonical(x, y)
    orthonormal, _ = np.linalg.qr(variates)
    weights = np.abs(orthonormal.T @ (x - x.mean(axis=0))).sum(axis=1)
    return float(weights @ correlations / weights.sum())


def reference_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA from the n x n kernel matrices and the centring matrix H."""
    n = x.shape[0]
    centring = np.eye(n) - 1.0 / n
    kx, ky = centring @ x @ x.T @ centring, centring @ y @ y.T @ centring
    return float(np.sum(kx * ky) / np.sqrt(np.sum(kx * kx) * np.sum(ky * ky)))


# -- tests --


def test_planted_canonical_correlations_are_recovered():
    x, y = planted_views(20_000)
    found = cca.canonical_correlations(x, y)
    assert found.shape == (6,)
    assert np.all(np.diff(found) <= 0)
    np.testing.assert_allclose(found[:4], PLANTED, atol=0.02)
    assert np.all(found[4:] < 0.03)
    assert cca.similarity(x, y, "cca") == pytest.approx(np.mean(found))


def test_canonical_correlations_match_the_data_space_computation():
    x, y = correlated_views()
    np.testing.assert_allclose(cca.canonical_correlations(x, y, ridge=0.0), reference_canonical(x, y)[0], atol=1e-10)


def test_cca_is_invariant_to_invertible_linear_maps():
    x, y = correlated_views()
    rng = np.random.default_rng(5)
    mapped_x = x @ rng.standard_normal((x.shape[1], x.shape[1])) + 3.0
    mapped_y = y @ rng.standard_normal((y.shape[1], y.shape[1])) * 1e3
    np.testing.assert_allclose(
        cca.canonical_correlations(mapped_x, mapped_y, ridge=0.0),
        cca.canonical_correlations(x, y, ridge=0.0),
        atol=1e-9,
    )


def test_cka_is_invariant_to_orthogonal_maps_and_isotropic_scaling_only():
    x, y = correlated_views()
    rng = np.random.default_rng(6)
    rotation, _ = np.linalg.qr(rng.standard_normal((x.shape[1], x.shape[1])))
    original = cca.similarity(x, y, "cka")
    assert cca.similarity(x @ rotation * 0.01, y * 40.0, "cka") == pytest.approx(original, abs=1e-12)
    stretched = x * np.linspace(0.1, 10, x.shape[1])
    assert abs(cca.similarity(stretched, y, "cka") - original) > 1e-3  # not invariant to anisotropic scaling


@pytest.mark.parametrize("method", cca.METHODS)
def test_a_representation_against_itself_gives_one(method):
    x, _ = correlated_views()
    assert cca.similarity(x, x, method, ridge=0.0) == pytest.approx(1.0, abs=1e-9)
    assert cca.similarity(x, x, method) == pytest.approx(1.0, abs=1e-4)


def test_svcca_matches_a_data_space_implementation():
    x, y = correlated_views(p=20, q=15)
    for kept in (0.5, 0.9, 0.99):
        assert cca.similarity(x, y, "svcca", ridge=0.0, svcca_variance=kept) == pytest.approx(
            reference_svcca(x, y, kept), abs=1e-9
        )
    # The reduction must actually bite at 0.5, or this test would not tell svcca from cca.
    assert abs(reference_svcca(x, y, 0.5) - cca.similarity(x, y, "cca", ridge=0.0)) > 0.01


def test_principal_basis_keeps_the_directions_holding_the_requested_variance():
    covariance = np.diag([5.0, 3.0, 1.5, 0.5])  # cumulative fractions 0.5, 0.8, 0.95, 1
    assert cca.principal_basis(covariance, 0.8).shape == (4, 2)
    assert cca.principal_basis(covariance, 0.81).shape == (4, 3)
    assert cca.principal_basis(covariance, 1.0).shape == (4, 4)
    with pytest.raises(ValueError, match="svcca variance"):
        cca.principal_basis(covariance, 1.5)


@pytest.mark.parametrize("p, q", [(5, 9), (9, 5), (7, 7)])
def test_pwcca_matches_a_data_space_implementation(p, q):
    x, y = correlated_views(p=p, q=q)
    assert cca.similarity(x, y, "pwcca", ridge=0.0) == pytest.approx(reference_pwcca(x, y), abs=1e-9)


def test_pwcca_weights_come_from_the_view_with_fewer_dimensions():
    x, y = correlated_views(p=5, q=9)
    # Weights from x whichever argument it is: the two orders give the same number...
    assert cca.similarity(x, y, "pwcca") == pytest.approx(cca.similarity(y, x, "pwcca"), abs=1e-10)
    # ...and it is not the plain mean, so the weights do something.
    assert abs(cca.similarity(x, y, "pwcca") - cca.similarity(x, y, "cca")) > 1e-3


def test_cka_matches_the_kernel_definition():
    x, y = correlated_views(n=300)
    assert cca.similarity(x, y, "cka") == pytest.approx(reference_cka(x, y), abs=1e-12)


def degenerate_views(n: int = 2000):
    x, y = correlated_views(n=n, p=6, q=5)
    constant = np.full((n, 1), 3.5)
    x = np.concatenate([x, constant, x[:, :2], 2 * x[:, :1] + 1], axis=1)  # constant, duplicates, collinear
    return x, y


@pytest.mark.parametrize("method", cca.METHODS)
def test_constant_and_duplicated_columns_give_finite_results(method):
    x, y = degenerate_views()
    for ridge in (0.0, cca.DEFAULT_RIDGE, 1e-2):
        value = cca.similarity(x, y, method, ridge=ridge)
        assert np.isfinite(value) and 0.0 <= value <= 1.0
    # The redundant columns add nothing: the non-degenerate directions keep their correlations.
    clean = cca.canonical_correlations(x[:, :6], y, ridge=0.0)
    np.testing.assert_allclose(cca.canonical_correlations(x, y, ridge=0.0)[:5], clean, atol=1e-6)
    constant_view = np.ones((x.shape[0], 3))
    assert cca.similarity(constant_view, y, method) == 0.0


def test_stream_of_constant_columns_stays_finite_and_equals_in_memory():
    x, y = degenerate_views()
    stream = cca.StreamingSimilarity(x.shape[1], y.shape[1])
    for start in range(0, len(x), 700):
        stream.update(x[start : start + 700].astype(np.float32), y[start : start + 700].astype(np.float32))
    for method in cca.METHODS:
        streamed = stream.similarity(method)
        assert np.isfinite(streamed) and streamed == pytest.approx(cca.similarity(x, y, method), abs=1e-5), method


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
def test_streamed_equals_in_memory_for_every_method(dtype):
    x, y = correlated_views(n=5000, p=12, q=9)
    x, y = x.astype(dtype), y.astype(dtype)
    stream = cca.StreamingSimilarity(x.shape[1], y.shape[1])
    bounds = [0, 1, 1, 2, 700, 701, 3000, 5000]  # ragged chunks, a 1-row one and an empty one
    for start, stop in zip(bounds, bounds[1:]):
        stream.update(x[start:stop], y[start:stop])
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    np.testing.assert_allclose(stream.canonical_correlations(), cca.canonical_correlations(x64, y64), atol=1e-4)
    for method in cca.METHODS:
        assert stream.similarity(method) == pytest.approx(cca.similarity(x64, y64, method), abs=1e-4), method


def test_accumulator_covariance_and_merge_match_numpy():
    rng = np.random.default_rng(9)
    data = rng.standard_normal((3000, 6)) * [1, 10, 100, 0.1, 1, 1] + [1e4, -5, 0, 3, 0, 1]
    parts = [cca.MomentAccumulator(6) for _ in range(3)]
    for index, chunk in enumerate(np.array_split(data, 12)):
        parts[index % 3].update(chunk)  # each part sees an interleaved third, with its own shift
    merged = cca.MomentAccumulator.merged(parts)
    assert merged.count == 3000
    np.testing.assert_allclose(merged.mean(), data.mean(axis=0), rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(merged.covariance(), np.cov(data, rowvar=False), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(merged.covariance([0, 2], [1]), np.cov(data, rowvar=False)[np.ix_([0, 2], [1])])


def test_shifting_chunks_in_place_gives_the_same_statistics():
    rng = np.random.default_rng(4)
    data = (rng.standard_normal((2000, 5)) * [1, 2, 3, 4, 5] + 50).astype(np.float32)
    kept, overwritten = cca.MomentAccumulator(5), cca.MomentAccumulator(5)
    for chunk in np.array_split(data, 4):
        kept.update(chunk)
        scratch = chunk.copy()
        overwritten.update(scratch, overwrite_chunk=True)
        assert not np.array_equal(scratch, chunk)  # it really was used as scratch space
    np.testing.assert_array_equal(overwritten.covariance(), kept.covariance())
    np.testing.assert_array_equal(overwritten.mean(), kept.mean())


def test_held_out_estimate_removes_the_small_sample_bias():
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((400, 60)), rng.standard_normal((400, 60))  # independent: true CCA is 0
    fit, score = cca.Covariances.of(x[:200], y[:200]), cca.Covariances.of(x[200:], y[200:])
    views = cca.View(fit.xx), cca.View(fit.yy)
    in_sample = cca.compare(*views, fit.xy, "cca")
    held_out = cca.compare_held_out(*views, fit.xy, score, "cca")
    assert in_sample > 0.4  # 200 frames for 120 dimensions: heavily inflated
    assert abs(held_out) < 0.05
    # Scored on its own rows, the held-out estimate is the in-sample one.
    for method in ("cca", "svcca", "pwcca"):
        assert cca.compare_held_out(*views, fit.xy, fit, method) == pytest.approx(
            cca.compare(*views, fit.xy, method), abs=1e-6
        )
    with pytest.raises(ValueError, match="cka has no canonical directions"):
        cca.compare_held_out(*views, fit.xy, score, "cka")


def test_bad_input_is_rejected_with_a_reason():
    x, y = correlated_views(n=100)
    with pytest.raises(ValueError, match="unknown similarity method 'cc'"):
        cca.similarity(x, y, "cc")
    with pytest.raises(ValueError, match="same number of rows"):
        cca.similarity(x, y[:50], "cca")
    with pytest.raises(ValueError, match="NaN"):
        cca.similarity(np.where(x > 1e9, 0, np.nan), y, "cca")
    stream = cca.StreamingSimilarity(x.shape[1], y.shape[1])
    with pytest.raises(ValueError, match="NaN"):
        stream.update(np.full_like(x, np.inf), y)
    with pytest.raises(ValueError, match="at least 2 rows"):
        stream.similarity("cca")


@pytest.mark.gpu
def test_gpu_accumulation_equals_cpu():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    x, _ = correlated_views(n=4000, p=40)
    on_gpu, on_cpu = cca.MomentAccumulator(40, device="cuda"), cca.MomentAccumulator(40, device="cpu")
    for chunk in np.array_split(x.astype(np.float32), 5):
        on_gpu.update(chunk)
        on_cpu.update(chunk)
    gpu_covariance, cpu_covariance = on_gpu.covariance(), on_cpu.covariance()
    # float32 products on both sides: an entry's error scales with sqrt(var_i var_j), not with
    # the entry (off-diagonal entries can be near zero). TF32 would give errors near 1e-3.
    scale = np.sqrt(np.outer(np.diag(cpu_covariance), np.diag(cpu_covariance)))
    assert (np.abs(gpu_covariance - cpu_covariance) / scale).max() < 1e-5
