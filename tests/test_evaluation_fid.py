"""Frechet distance maths against closed forms, and classifier FID on synthetic digits (no real data)."""

import math
from functools import partial

import pytest
import torch

from labkit.data import synthetic_digits
from labkit.errors import LabkitValueError
from labkit.evaluation import fid as FID
from labkit.evaluation.classifier import load_classifier


def test_one_dimensional_closed_form():
    # N(m1, s1^2) vs N(m2, s2^2): d^2 = (m1 - m2)^2 + (s1 - s2)^2
    d = FID.frechet_distance(torch.tensor([1.0]), torch.tensor([[4.0]]), torch.tensor([-2.0]), torch.tensor([[9.0]]))
    assert d == pytest.approx(3.0**2 + (2.0 - 3.0) ** 2, rel=1e-12)


def test_diagonal_closed_form():
    g = torch.Generator().manual_seed(0)
    mu1, mu2 = torch.randn(6, generator=g, dtype=torch.float64), torch.randn(6, generator=g, dtype=torch.float64)
    v1 = torch.rand(6, generator=g, dtype=torch.float64) + 0.1
    v2 = torch.rand(6, generator=g, dtype=torch.float64) + 0.1
    expected = float(((mu1 - mu2) ** 2).sum() + ((v1.sqrt() - v2.sqrt()) ** 2).sum())
    assert FID.frechet_distance(mu1, torch.diag(v1), mu2, torch.diag(v2)) == pytest.approx(expected, rel=1e-9)


def _random_cov(d, g):
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    return a @ a.T / d + 0.01 * torch.eye(d, dtype=torch.float64)


def test_full_covariance_matches_scipy_sqrtm():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    g = torch.Generator().manual_seed(1)
    mu1, mu2 = torch.randn(16, generator=g), torch.randn(16, generator=g)
    s1, s2 = _random_cov(16, g), _random_cov(16, g)
    covmean = scipy_linalg.sqrtm((s1 @ s2).numpy()).real
    expected = float(((mu1 - mu2) ** 2).sum()) + float(torch.trace(s1) + torch.trace(s2)) - 2 * covmean.trace()
    assert FID.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-7)
    # numpy inputs are accepted too
    assert FID.frechet_distance(mu1.numpy(), s1.numpy(), mu2.numpy(), s2.numpy()) == pytest.approx(expected, rel=1e-7)


def test_symmetric_zero_on_identity_and_rotation_invariant():
    g = torch.Generator().manual_seed(2)
    mu1, mu2 = torch.randn(8, generator=g, dtype=torch.float64), torch.randn(8, generator=g, dtype=torch.float64)
    s1, s2 = _random_cov(8, g), _random_cov(8, g)
    d = FID.frechet_distance(mu1, s1, mu2, s2)
    assert d > 0
    assert FID.frechet_distance(mu2, s2, mu1, s1) == pytest.approx(d, rel=1e-9)
    assert FID.frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-9)
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=g, dtype=torch.float64))
    assert FID.frechet_distance(q @ mu1, q @ s1 @ q.T, q @ mu2, q @ s2 @ q.T) == pytest.approx(d, rel=1e-8)


def test_singular_covariances_stay_real_and_finite():
    # Rank-deficient covariances (fewer samples than dimensions) are the usual case with small sets.
    g = torch.Generator().manual_seed(3)
    f1, f2 = torch.randn(5, 32, generator=g), torch.randn(5, 32, generator=g) + 1
    d = FID.frechet_distance(*FID.feature_stats(f1), *FID.feature_stats(f2))
    assert math.isfinite(d) and d > 0


def test_feature_stats_match_torch_cov():
    f = torch.randn(50, 4, generator=torch.Generator().manual_seed(4))
    mu, sigma = FID.feature_stats(f)
    assert mu.dtype == torch.float64 and sigma.shape == (4, 4)
    assert torch.allclose(mu, f.double().mean(0))
    assert torch.allclose(sigma, torch.cov(f.double().T))


def test_shape_errors():
    with pytest.raises(LabkitValueError):
        FID.feature_stats(torch.randn(1, 4))
    with pytest.raises(LabkitValueError):
        FID.frechet_distance(torch.zeros(3), torch.eye(3), torch.zeros(4), torch.eye(4))


@pytest.fixture(scope="module")
def real():
    """Synthetic stand-in for MNIST: a training pool for the floor and a reference ("test") set."""
    pool = synthetic_digits(600, generator=torch.Generator().manual_seed(10))
    ref = synthetic_digits(600, generator=torch.Generator().manual_seed(11))
    return FID.RealReference.from_digits(pool, ref)


@pytest.fixture(scope="module")
def other():
    return (synthetic_digits(300, generator=torch.Generator().manual_seed(12)).images + 1) / 2


def test_fid_of_a_set_against_itself_is_zero(other):
    clf = load_classifier()
    assert FID.classifier_fid(other, other, clf) == pytest.approx(0.0, abs=1e-6)


def test_same_distribution_near_floor_noise_and_blur_far(real, other):
    clf = load_classifier()
    g = torch.Generator().manual_seed(0)
    floor = FID.real_floor(300, clf, real=real, generator=g)
    fid = lambda x: FID.fid_vs_test(x, clf, real=real)  # noqa: E731
    same = fid(other)
    noise = fid(torch.rand(300, 1, 28, 28, generator=g))
    blurred = fid(torch.nn.functional.avg_pool2d(other, 5, stride=1, padding=2))
    assert 0 < floor and 0.5 * floor < same < 2 * floor
    assert noise > 20 * floor
    assert blurred > 3 * floor
    # the reference statistics are computed once per classifier
    assert len(real._stats) == 1 and real.test_stats(clf) is real.test_stats(clf)


def test_floor_shrinks_with_more_samples(real):
    # FID is biased upwards for small sets (Chong & Forsyth 2020): the reason a floor of the same count is needed.
    clf = load_classifier()
    g = torch.Generator().manual_seed(1)
    small = FID.real_floor(30, clf, real=real, generator=g)
    large = FID.real_floor(600, clf, real=real, generator=g)
    assert small > 2 * large


def test_floor_repeats_average_independent_draws(real):
    clf = load_classifier()
    g = torch.Generator().manual_seed(7)
    draws = [FID.real_floor(50, clf, real=real, generator=g) for _ in range(3)]
    assert len(set(draws)) == 3  # independent draws differ
    averaged = FID.real_floor(50, clf, real=real, generator=torch.Generator().manual_seed(7), repeats=3)
    assert averaged == pytest.approx(sum(draws) / 3)


def test_real_floor_checks_n(real):
    with pytest.raises(LabkitValueError, match="n="):
        FID.real_floor(1, load_classifier(), real=real)
    with pytest.raises(LabkitValueError, match="n="):
        FID.real_floor(601, load_classifier(), real=real)


# --- the percentile bootstrap (Efron 1979), lab 06's exercise ----------------------------------------------


def _mean(v):
    return v.mean()


def test_bootstrap_interval_golden_values():
    """Hand-checkable: seed 1 draws four resamples of 0..9 with means 4.5, 4.0, 4.1, 4.5; the 25th and 75th
    percentiles of (4.0, 4.1, 4.5, 4.5) with linear interpolation are 4.0 + 0.75 * 0.1 = 4.075 and 4.5."""
    x = torch.arange(10, dtype=torch.float64)
    idx = torch.randint(0, 10, (4, 10), generator=torch.Generator().manual_seed(1))
    assert x[idx].mean(dim=1).tolist() == pytest.approx([4.5, 4.0, 4.1, 4.5])
    out = FID.bootstrap_interval(x, _mean, 4, 0.5, torch.Generator().manual_seed(1))
    assert out.dtype == torch.float64 and out.tolist() == pytest.approx([4.075, 4.5], abs=1e-12)
    out = FID.bootstrap_interval(x, _mean, 1000, 0.9, torch.Generator().manual_seed(0))
    assert out.tolist() == pytest.approx([3.1, 6.0], abs=1e-12)


def test_bootstrap_interval_properties():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, generator=g, dtype=torch.float64)
    narrow = FID.bootstrap_interval(x, _mean, 500, 0.5, torch.Generator().manual_seed(3))
    wide = FID.bootstrap_interval(x, _mean, 500, 0.95, torch.Generator().manual_seed(3))
    assert wide[0] <= narrow[0] <= narrow[1] <= wide[1]
    # the mean of 200 standard normals: a 95% interval about +-1.96 / sqrt(200) = +-0.139 around the sample mean
    assert float(wide[1] - wide[0]) == pytest.approx(2 * 1.96 / 200 ** 0.5, rel=0.2)
    assert float(wide[0]) < float(x.mean()) < float(wide[1])
    same = FID.bootstrap_interval(torch.full((7,), 2.5), _mean, 50, 0.9, g)
    assert same.tolist() == [2.5, 2.5]  # no spread to resample
    again = FID.bootstrap_interval(x, _mean, 500, 0.95, torch.Generator().manual_seed(3))
    assert torch.equal(again, wide)  # replayed from the seed


def test_fid_of_features_is_the_fid_formula():
    g = torch.Generator().manual_seed(4)
    a, b = torch.randn(30, 5, generator=g), torch.randn(50, 5, generator=g) + 1
    mu, sigma = FID.feature_stats(b)
    assert FID.fid_of_features(mu, sigma, a) == pytest.approx(FID.frechet_distance(*FID.feature_stats(a), mu, sigma))


# --- an interval for FID that is not biased (issue 26 item 4) ----------------------------------------------


def _gaussian_pair(D: int, shift: float):
    """A reference N(0, I) known exactly and a "generator" N(shift e_1, diag(scales^2)): the true squared
    Frechet distance is shift^2 + sum (scale - 1)^2 (both covariances diagonal)."""
    scales = torch.linspace(0.6, 1.4, D, dtype=torch.float64)
    mu_g = torch.zeros(D, dtype=torch.float64)
    mu_g[0] = shift
    truth = shift**2 + float(((scales - 1) ** 2).sum())
    return mu_g, scales, truth


def _coverage(method: str, *, trials=100, n=100, D=8, shift=0.3, level=0.9, seed=0):
    """Share of ``trials`` independent sample sets of n whose interval holds the true distance."""
    g = torch.Generator().manual_seed(seed)
    mu_g, scales, truth = _gaussian_pair(D, shift)
    mu_r, sigma_r = torch.zeros(D, dtype=torch.float64), torch.eye(D, dtype=torch.float64)
    assert FID.frechet_distance(mu_g, torch.diag(scales**2), mu_r, sigma_r) == pytest.approx(truth)
    hits, widths = 0, []
    for _ in range(trials):
        x = mu_g + torch.randn(n, D, generator=g, dtype=torch.float64) * scales  # [n, D] one sample set
        if method == "halves":
            iv = FID.fid_interval(x, mu_r, sigma_r, level=level, halves=100, generator=g)
            low, high = iv.low, iv.high
        else:
            low, high = FID.bootstrap_interval(x, partial(FID.fid_of_features, mu_r, sigma_r), 100, level, g).tolist()
        hits += low <= truth <= high
        widths.append(high - low)
    return hits / trials, truth, sum(widths) / trials


@pytest.mark.parametrize("n, shift", [(100, 0.3), (400, 0.3), (100, 0.0)])
def test_half_sampling_interval_covers_the_true_distance(n, shift):
    """90% intervals on 100 independent sample sets: the true distance inside in at least 85 of them, where the
    plain percentile bootstrap of FID (biased upwards: a resample holds ~63% distinct samples) misses it."""
    covered, truth, width = _coverage("halves", n=n, shift=shift)
    assert covered >= 0.85, f"half-sampling covered the truth {truth:.3f} in {covered:.0%} of trials"
    plain, _, _ = _coverage("bootstrap", n=n, shift=shift)
    assert plain < 0.85, f"the plain bootstrap covered the truth in {plain:.0%}: the test cannot tell them apart"


def test_fid_interval_fields_and_replay():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(60, 4, generator=g, dtype=torch.float64) + 0.5
    mu, sigma = torch.zeros(4, dtype=torch.float64), torch.eye(4, dtype=torch.float64)
    iv = FID.fid_interval(x, mu, sigma, level=0.9, halves=50, generator=torch.Generator().manual_seed(1))
    assert iv.fid == pytest.approx(FID.fid_of_features(mu, sigma, x)) and iv.n == 60 and iv.level == 0.9
    assert iv.bias > 0  # FID overstates the distance with few samples
    assert iv.low < iv.corrected < iv.high and iv.corrected == iv.fid - iv.bias
    again = FID.fid_interval(x, mu, sigma, level=0.9, halves=50, generator=torch.Generator().manual_seed(1))
    assert again == iv
    wider = FID.fid_interval(x, mu, sigma, level=0.99, halves=50, generator=torch.Generator().manual_seed(1))
    assert wider.low <= iv.low and iv.high <= wider.high
    assert iv.overlaps(iv) and not iv.overlaps(FID.FidInterval(9.0, 0.0, iv.high + 1, iv.high + 2, 0.9, 60))
    with pytest.raises(LabkitValueError):
        FID.fid_interval(x[:3], mu, sigma, generator=g)
