"""The 2D toy (labkit.toy2d): exact score, ideal denoiser and the perfect model, against closed forms.

Golden values: the score of one Gaussian in closed form, autograd of the log density, central finite
differences, Tweedie's formula, x0_hat -> x at ab -> 1, and labkit's own samplers on the exact model
reproducing the mixture's weights, means and std within the sampling error of n draws.
"""

import math

import pytest
import torch

from labkit import samplers, toy2d
from labkit.schedules import make_schedule

MIX = toy2d.three_blobs()
COSINE = make_schedule("cosine", 1000)


def points(n=64, seed=0, scale=2.0):
    return scale * torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("ab", [1e-4, 0.1, 0.5, 0.9, 0.999])
def test_score_of_one_gaussian_is_the_closed_form(ab):
    mu, s = torch.tensor([[0.3, -1.2]]), 0.4
    one = toy2d.GaussianMixture(mu, s, torch.tensor([1.0]))
    x = points()
    expected = -(x - math.sqrt(ab) * mu.double()) / (ab * s**2 + 1 - ab)  # grad log N(sqrt(ab) mu, v I)
    torch.testing.assert_close(toy2d.score(one, x, ab), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("ab", [1e-3, 0.3, 0.95, 0.9999])
def test_score_is_the_gradient_of_the_log_density(ab):
    x = points(seed=1).requires_grad_(True)
    (grad,) = torch.autograd.grad(toy2d.log_density(MIX, x, ab).sum(), x)
    torch.testing.assert_close(toy2d.score(MIX, x.detach(), ab), grad, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("ab", [0.2, 0.8])
def test_score_matches_finite_differences(ab):
    x, h = points(seed=2, scale=1.0), 1e-5
    fd = torch.stack([(toy2d.log_density(MIX, x + h * e, ab) - toy2d.log_density(MIX, x - h * e, ab)) / (2 * h)
                      for e in torch.eye(2, dtype=torch.float64)], dim=1)  # [N, 2]
    torch.testing.assert_close(toy2d.score(MIX, x, ab), fd, rtol=1e-6, atol=1e-6)


def test_density_integrates_to_one():
    g = torch.linspace(-4, 4, 401, dtype=torch.float64)
    xx, yy = torch.meshgrid(g, g, indexing="xy")
    grid = torch.stack([xx.flatten(), yy.flatten()], 1)
    for ab in (0.99, 0.5, 0.01):
        mass = toy2d.log_density(MIX, grid, ab).exp().sum() * (g[1] - g[0]) ** 2
        assert abs(float(mass) - 1) < 2e-3, (ab, float(mass))


@pytest.mark.parametrize("ab", [0.01, 0.5, 0.99])
def test_x0_hat_is_tweedie_and_eps_is_the_scaled_score(ab):
    x = points(seed=3)
    s = toy2d.score(MIX, x, ab)
    torch.testing.assert_close(toy2d.x0_hat(MIX, x, ab), (x + (1 - ab) * s) / math.sqrt(ab), rtol=1e-9, atol=1e-9)
    eps = toy2d.eps_from_score(s, ab)
    torch.testing.assert_close(eps, -math.sqrt(1 - ab) * s)
    # x_t = sqrt(ab) x0_hat + sqrt(1 - ab) eps_hat: the two predictions explain x_t together
    torch.testing.assert_close(math.sqrt(ab) * toy2d.x0_hat(MIX, x, ab) + math.sqrt(1 - ab) * eps, x)


def test_x0_hat_limits():
    x = points(seed=4)
    torch.testing.assert_close(toy2d.x0_hat(MIX, x, 1 - 1e-12), x, rtol=1e-6, atol=1e-6)  # no noise: x itself
    data_mean = MIX.weights @ MIX.means
    torch.testing.assert_close(toy2d.x0_hat(MIX, x, 1e-14), data_mean.expand_as(x), rtol=1e-5, atol=1e-5)


def test_labels_select_one_component_and_K_is_the_whole_mixture():
    x, ab = points(seed=5), 0.4
    for k in range(MIX.K):
        alone = toy2d.GaussianMixture(MIX.means[k:k + 1], MIX.std, torch.tensor([1.0]))
        y = torch.full((x.shape[0],), k)
        torch.testing.assert_close(toy2d.score(MIX, x, ab, y), toy2d.score(alone, x, ab))
    torch.testing.assert_close(toy2d.score(MIX, x, ab, torch.full((x.shape[0],), MIX.K)), toy2d.score(MIX, x, ab))


def test_exact_model_is_eps_star_at_each_step():
    model = toy2d.exact_model(MIX, COSINE)
    x, t = points(8, seed=6), torch.tensor([0, 10, 100, 300, 500, 700, 900, 999])
    y = torch.full((8,), MIX.K)
    ab = COSINE.alpha_bars[t]
    torch.testing.assert_close(model(x, t, y), -(1 - ab[:, None]).sqrt() * toy2d.score(MIX, x, ab))


def test_sample_is_deterministic_from_the_generator_and_has_the_mixtures_moments():
    a = toy2d.sample(MIX, 1000, torch.Generator().manual_seed(7))
    b = toy2d.sample(MIX, 1000, torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], toy2d.sample(MIX, 1000, torch.Generator().manual_seed(8))[0])
    n = 20000
    x, k = toy2d.sample(MIX, n, torch.Generator().manual_seed(9))
    freq = torch.bincount(k, minlength=MIX.K).double() / n
    assert ((freq - MIX.weights).abs() <= 5 * (MIX.weights * (1 - MIX.weights) / n).sqrt()).all()


def nearest_component(x):
    return torch.cdist(x.double(), MIX.means).argmin(1)


@pytest.mark.parametrize("sampler, steps", [("ddpm", 1000), ("ddim", 200), ("dpmpp_2m", 50)])
def test_labkit_samplers_on_the_exact_model_reproduce_the_mixture(sampler, steps):
    """Weights within 5 binomial standard errors sqrt(w(1-w)/n), each component's mean within 5 sigma/sqrt(n_k)
    (plus 0.01 for the sampler's discretisation), its std within 5 sigma/sqrt(2 n_k) (plus 5%)."""
    n = 3000
    model = toy2d.exact_model(MIX, COSINE)
    y = torch.full((n,), MIX.K)
    x = samplers.sample(model, (n, 2), y, COSINE, sampler=sampler, steps=steps, null_class=MIX.K,
                        generator=torch.Generator().manual_seed(10), x_T=None).double()
    k = nearest_component(x)
    counts = torch.bincount(k, minlength=MIX.K).double()
    freq = counts / n
    se_w = (MIX.weights * (1 - MIX.weights) / n).sqrt()
    assert ((freq - MIX.weights).abs() <= 5 * se_w).all(), (freq, MIX.weights)
    for j in range(MIX.K):
        xj = x[k == j]
        se_mean = MIX.std / math.sqrt(counts[j])
        assert (xj.mean(0) - MIX.means[j]).abs().max() <= 5 * se_mean + 0.01, (j, xj.mean(0), MIX.means[j])
        se_std = MIX.std / math.sqrt(2 * counts[j])
        assert abs(float(xj.std(0).mean()) - MIX.std) <= 5 * se_std + 0.05 * MIX.std, (j, xj.std(0))


def test_conditional_sampling_stays_in_its_component():
    n = 500
    y = torch.arange(n) % MIX.K
    x = samplers.sample(toy2d.exact_model(MIX, COSINE), (n, 2), y, COSINE, sampler="ddim", steps=50,
                        null_class=MIX.K, generator=torch.Generator().manual_seed(11))
    assert torch.equal(nearest_component(x), y)


def test_trajectory_records_every_step():
    traj = samplers.Trajectory()
    n, steps = 16, 12
    out = samplers.sample(toy2d.exact_model(MIX, COSINE), (n, 2), torch.full((n,), MIX.K), COSINE, sampler="ddim",
                          steps=steps, null_class=MIX.K, generator=torch.Generator().manual_seed(12), callback=traj)
    assert traj.x_t.shape == (steps, n, 2) and traj.x0_hat.shape == (steps, n, 2) and len(traj.ts) == steps
    assert traj.ts == sorted(traj.ts, reverse=True) and traj.ts[-1] == 0
    torch.testing.assert_close(traj.x0_hat[-1], out)  # the last step returns x0_hat


def test_bad_mixtures_are_refused():
    from labkit.errors import LabkitValueError

    with pytest.raises(LabkitValueError):
        toy2d.GaussianMixture(torch.zeros(3), 0.1, torch.ones(3))
    with pytest.raises(LabkitValueError):
        toy2d.GaussianMixture(torch.zeros(3, 2), 0.0, torch.ones(3))
    with pytest.raises(LabkitValueError):
        toy2d.GaussianMixture(torch.zeros(3, 2), 0.1, torch.ones(2))
