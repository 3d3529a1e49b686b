"""Flow matching (labkit.flow): exact on Gaussian data, the 2D toy's exact velocity, the loss, guidance, seeds.

For data x_0 ~ N(mu, s^2) per dimension and x_t = (1 - t) x_0 + t eps, x_t ~ N(a mu, V) with a = 1 - t,
V = a^2 s^2 + t^2, and the exact velocity is

    v*(x, t) = E[eps - x_0 | x_t = x] = (t - a s^2) / V (x - a mu) - mu

Its ODE maps x_1 = z to x_t = a mu + sqrt(V) z, so x_0 = mu + s z: a correct solver turns N(0, 1) noise into
samples of mean mu and std s, up to its discretisation error, and a wrong coefficient shows in the moments.
"""

import math

import pytest
import torch

from labkit import flow, toy2d
from labkit.errors import LabkitValueError

MU, SD = 0.7, 0.3


def gaussian_velocity(mu=MU, s=SD):
    def model(x, t, y):
        tt = t.double().view(-1, *([1] * (x.dim() - 1)))
        a = 1 - tt
        V = a**2 * s**2 + tt**2
        return ((tt - a * s**2) / V * (x.double() - a * mu) - mu).to(x.dtype)
    return model


def standard_normal(n, seed=0, dtype=torch.float64):
    """Rescaled to sample mean 0 and std 1 exactly: the solvers are affine maps here, so the output's mean
    and std are the map's intercept and slope."""
    z = torch.randn(n, 1, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return ((z - z.mean()) / z.std()).to(dtype)


def moments(solver, steps, n=2000):
    y = torch.zeros(n, dtype=torch.long)
    x = flow.sample(gaussian_velocity(), (n, 1), y, steps=steps, solver=solver, x_1=standard_normal(n))
    return float(x.mean()), float(x.std())


def test_euler_with_many_steps_reaches_the_data():
    m, s = moments("euler", 1000)
    assert abs(m - MU) < 2e-3 and abs(s - SD) < 2e-3


@pytest.mark.parametrize("steps, tol", [(4, 2e-2), (8, 5e-3), (32, 5e-4)])
def test_heun_with_few_steps_reaches_the_data(steps, tol):
    m, s = moments("heun", steps)
    assert abs(m - MU) < tol and abs(s - SD) < tol


def test_heun_beats_euler_at_the_same_number_of_evaluations_and_is_second_order():
    for evals in (8, 16, 32):
        _, s_e = moments("euler", evals)
        _, s_h = moments("heun", evals // 2)
        assert abs(s_h - SD) < abs(s_e - SD)
    errs = [abs(moments("heun", n)[1] - SD) for n in (8, 16)]
    assert errs[1] < errs[0] / 3  # second order: about 4x smaller per halving of the step
    errs = [abs(moments("euler", n)[1] - SD) for n in (64, 128)]
    assert errs[1] > errs[0] / 3  # first order: about 2x


def test_one_euler_step_gives_the_mean():
    """At t = 1, v* = x - mu: one step lands every sample on the data mean (the blur of 1-step flows)."""
    m, s = moments("euler", 1)
    assert abs(m - MU) < 1e-12 and s < 1e-12


def test_time_grid():
    assert flow.time_grid(4).tolist() == [1.0, 0.75, 0.5, 0.25, 0.0]
    with pytest.raises(LabkitValueError):
        flow.time_grid(0)


def test_evaluations():
    assert [flow.evaluations("euler", 4), flow.evaluations("heun", 4), flow.evaluations("heun", 4, 1.0)] == [4, 8, 16]
    calls = []

    def model(x, t, y):
        calls.append(len(x))
        return gaussian_velocity()(x, t, y)

    flow.sample(model, (3, 1), torch.zeros(3, dtype=torch.long), steps=4, solver="heun", guidance=1.0, null_class=1)
    assert sum(calls) == 3 * flow.evaluations("heun", 4, 1.0)


def test_loss_is_the_mse_to_eps_minus_x0_and_the_exact_velocity_minimises_it():
    g = torch.Generator().manual_seed(0)
    x0 = MU + SD * torch.randn(4000, 1, generator=g, dtype=torch.float64)
    noise = torch.randn(4000, 1, generator=g, dtype=torch.float64)
    t = torch.rand(4000, generator=g, dtype=torch.float64)
    y = torch.zeros(4000, dtype=torch.long)
    model = gaussian_velocity()
    loss = flow.flow_matching_loss(model, x0, y, t, noise)
    x_t = (1 - t[:, None]) * x0 + t[:, None] * noise
    assert torch.allclose(loss, ((model(x_t, t, y) - (noise - x0)) ** 2).mean())
    for wrong in (lambda x, t, y: 1.05 * model(x, t, y), lambda x, t, y: model(x, t, y) + 0.05):
        assert flow.flow_matching_loss(wrong, x0, y, t, noise) > loss


def test_flow_loss_takes_a_generator():
    model = gaussian_velocity()
    x0, y = torch.randn(8, 1, 4, 4), torch.zeros(8, dtype=torch.long)
    a = flow.flow_loss(model, x0, y, generator=torch.Generator().manual_seed(3))
    b = flow.flow_loss(model, x0, y, generator=torch.Generator().manual_seed(3))
    c = flow.flow_loss(model, x0, y, generator=torch.Generator().manual_seed(4))
    assert a == b and a != c


def test_time_scaled_feeds_the_network_t_times_999():
    seen = []

    class Net(torch.nn.Module):
        def forward(self, x, t, y):
            seen.append(t)
            return x

    flow.TimeScaled(Net())(torch.zeros(2, 1, 4, 4), torch.tensor([0.0, 1.0]), torch.zeros(2, dtype=torch.long))
    assert seen[0].tolist() == [0.0, 999.0]


def test_time_scaled_unet_trains_on_the_flow_loss():
    from labkit.unet import UNet, UNetConfig

    torch.manual_seed(0)
    net = flow.TimeScaled(UNet(UNetConfig(base_channels=8, channel_mults=(1, 2), blocks_per_level=1, groups=4,
                                          attention=False, patch=2)))
    x0, y = torch.rand(4, 1, 8, 8) * 2 - 1, torch.arange(4)
    loss = flow.flow_loss(net, x0, y, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert loss.ndim == 0 and all(p.grad is not None for p in net.parameters() if p.requires_grad)


def test_guidance_on_velocities_is_eq_6():
    model = lambda x, t, y: x * (y.double() + 1).view(-1, 1)  # noqa: E731
    x, t, y = torch.randn(3, 2, dtype=torch.float64), torch.rand(3, dtype=torch.float64), torch.tensor([0, 1, 2])
    out = flow.cfg_velocity(model, x, t, y, 2.0, 5)
    assert torch.allclose(out, 3 * model(x, t, y) - 2 * model(x, t, torch.full_like(y, 5)))
    assert flow.GuidedVelocity(model, 0.0, 5)(x, t, y).equal(model(x, t, y))


def test_sample_is_seeded_and_checks_the_solver():
    y = torch.zeros(4, dtype=torch.long)
    a = flow.sample(gaussian_velocity(), (4, 1), y, steps=3, generator=torch.Generator().manual_seed(1))
    b = flow.sample(gaussian_velocity(), (4, 1), y, steps=3, generator=torch.Generator().manual_seed(1))
    assert a.equal(b)
    with pytest.raises(LabkitValueError):
        flow.sample(gaussian_velocity(), (4, 1), y, steps=3, solver="rk4")


# --- the 2D toy ------------------------------------------------------------------------------------------


def test_toy_velocity_of_one_component_is_the_gaussian_formula():
    mix = toy2d.GaussianMixture(torch.tensor([[MU, -MU]]), SD, torch.tensor([1.0]))
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(50, 2, generator=g, dtype=torch.float64), torch.rand(50, generator=g, dtype=torch.float64)
    ref = torch.cat([gaussian_velocity(MU)(x[:, :1], t, None), gaussian_velocity(-MU)(x[:, 1:], t, None)], 1)
    assert torch.allclose(toy2d.flow_velocity(mix, x, t), ref, atol=1e-12)


def test_toy_velocity_is_the_conditional_expectation():
    """v* minimises the flow-matching loss on the mixture: regressing on it beats any nudge of it."""
    mix = toy2d.three_blobs()
    g = torch.Generator().manual_seed(1)
    x0, _ = toy2d.sample(mix, 40000, g)
    noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    t = torch.rand(40000, generator=g, dtype=torch.float64)
    x_t = flow.interpolate(x0, noise, t)
    v = toy2d.flow_velocity(mix, x_t, t)
    best = ((v - (noise - x0)) ** 2).mean()
    for nudge in (0.98 * v, 1.02 * v, v + 0.02, v.flip(1) * 0.02 + v):
        assert ((nudge - (noise - x0)) ** 2).mean() > best


@pytest.mark.parametrize("solver, steps", [("euler", 200), ("heun", 10)])
def test_exact_toy_flow_draws_the_mixture(solver, steps):
    mix = toy2d.three_blobs()
    g = torch.Generator().manual_seed(2)
    n = 6000
    x = flow.sample(toy2d.exact_flow_model(mix), (n, 2), torch.full((n,), mix.K), steps=steps, solver=solver,
                    null_class=mix.K, x_1=torch.randn(n, 2, generator=g, dtype=torch.float64))
    share = toy2d.responsibilities(mix, x, 1.0).argmax(1).bincount(minlength=3).double() / n
    assert (share - mix.weights).abs().max() < 0.03  # 3 standard errors at n = 6000
    nearest = mix.means[share.new_zeros(n).long() + toy2d.responsibilities(mix, x, 1.0).argmax(1)]
    assert abs(float((x - nearest).std()) - mix.std) < 0.02
    # class-conditional: component 1 only
    x1 = flow.sample(toy2d.exact_flow_model(mix), (500, 2), torch.ones(500, dtype=torch.long), steps=steps,
                     solver=solver, null_class=mix.K, x_1=torch.randn(500, 2, generator=g, dtype=torch.float64))
    assert (x1.mean(0) - mix.means[1]).norm() < 0.03
    assert math.isfinite(float(x1.std()))


@pytest.mark.parametrize("solver", flow.SOLVERS)
def test_sample_runs_through_euler_step(solver, monkeypatch):
    """One formula: both solvers step with flow.euler_step (lab 10's exercise); spoil it and sampling changes."""
    y = torch.zeros(4, dtype=torch.long)
    x_1 = standard_normal(4)
    before = flow.sample(gaussian_velocity(), (4, 1), y, steps=3, solver=solver, x_1=x_1)
    step = flow.euler_step
    monkeypatch.setattr(flow, "euler_step", lambda *a: step(*a) + 0.25)
    after = flow.sample(gaussian_velocity(), (4, 1), y, steps=3, solver=solver, x_1=x_1)
    assert (after - before).abs().min() > 0.2


# --- reflow and straightness (Liu et al. 2023) -------------------------------------------------------------


def straight_gaussian_velocity(mu=MU, s=SD):
    """The flow after one reflow of the Gaussian flow, exactly: its pairs are (x_0, x_1) = (mu + s z, z), the line
    between them is x_t = (1 - t) mu + ((1 - t) s + t) z, and its velocity z - (mu + s z) is constant along it."""
    def model(x, t, y):
        tt = t.double().view(-1, *([1] * (x.dim() - 1)))
        z = (x.double() - (1 - tt) * mu) / ((1 - tt) * s + tt)
        return ((1 - s) * z - mu).to(x.dtype)
    return model


def test_straightness_of_the_gaussian_flow_is_the_closed_form():
    """x_t = a mu + sqrt(V) z, so v - (x_1 - x_0) = z ((sqrt V)' - (1 - s)) and S = E z^2 * int ((sqrt V)' - (1 - s))^2."""
    z = standard_normal(4000)
    y = torch.zeros(len(z), dtype=torch.long)
    t = (torch.arange(200000, dtype=torch.float64) + 0.5) / 200000  # midpoints
    a = 1 - t
    slope = (t - a * SD**2) / (a**2 * SD**2 + t**2).sqrt()  # d sqrt(V) / dt
    exact = float((z**2).mean()) * float(((slope - (1 - SD)) ** 2).mean())
    got = float(flow.straightness(gaussian_velocity(), z, y, flow.time_grid(2000)))
    assert exact > 0.05 and abs(got - exact) < 0.01 * exact


def test_straight_flows_have_straightness_zero_and_one_step_is_exact():
    z = standard_normal(500)
    y = torch.zeros(len(z), dtype=torch.long)
    uneven = torch.tensor([1.0, 0.9, 0.5, 0.45, 0.1, 0.0], dtype=torch.float64)
    for times in (flow.time_grid(7), uneven):
        assert float(flow.straightness(straight_gaussian_velocity(), z, y, times)) < 1e-20
        assert float(flow.straightness(gaussian_velocity(0.7, 0.0), z, y, times)) < 1e-20  # data = one point
    one = flow.euler_loop(straight_gaussian_velocity(), z, y, flow.time_grid(1))
    assert (one - (MU + SD * z)).abs().max() < 1e-12
    # one step: the chord is the only velocity, for any model
    assert float(flow.straightness(gaussian_velocity(), z, y, flow.time_grid(1))) == 0.0


def test_reflow_pairs_are_the_flow_map_of_one_draw_of_noise():
    y = torch.zeros(300, dtype=torch.long)
    x_0, x_1 = flow.reflow_pairs(gaussian_velocity(), y, flow.time_grid(1000), (1,), 64, torch.Generator().manual_seed(3))
    assert torch.equal(x_1, torch.randn((300, 1), generator=torch.Generator().manual_seed(3)))
    assert (x_0 - (MU + SD * x_1)).abs().max() < 2e-3  # the exact flow map mu + s z, up to Euler's error
    whole, _ = flow.reflow_pairs(gaussian_velocity(), y, flow.time_grid(1000), (1,), 300, torch.Generator().manual_seed(3))
    assert (whole - x_0).abs().max() < 1e-6  # batching changes nothing


def test_reflow_train_is_seeded_and_trains_on_the_pairs():
    torch.manual_seed(0)
    x_0, x_1, y = torch.randn(50, 2, 1, 1), torch.randn(50, 2, 1, 1), torch.zeros(50, dtype=torch.long)
    runs = []
    for _ in range(2):
        model = toy2d.VelocityMLP(hidden=16, seed=1)
        losses = flow.reflow_train(model, torch.optim.SGD(model.parameters(), lr=0.01), x_0, x_1, y, 5, 8,
                                   torch.Generator().manual_seed(7))
        runs.append((losses, torch.cat([p.detach().flatten() for p in model.parameters()])))
    assert len(runs[0][0]) == 5 and all(isinstance(v, float) for v in runs[0][0])
    assert runs[0][0] == runs[1][0] and torch.equal(runs[0][1], runs[1][1])


def test_one_reflow_straightens_the_toy_and_one_step_lands_on_the_blobs():
    """The exact first flow v* of the three blobs, one reflow with a small network: S falls by more than 10x, and
    one Euler step, which sends every point of v* to the mixture's mean, lands most of them on a blob."""
    mix = toy2d.three_blobs()
    exact = toy2d.exact_flow_model(mix)
    first = lambda x, t, y: exact(x[:, :, 0, 0], t, y)[:, :, None, None]  # noqa: E731
    y = torch.full((2000,), mix.K)
    x_0, x_1 = flow.reflow_pairs(first, y, flow.time_grid(100), (2, 1, 1), 1000, torch.Generator().manual_seed(4))
    model = toy2d.VelocityMLP(seed=0)
    flow.reflow_train(model, torch.optim.Adam(model.parameters(), lr=3e-3), x_0, x_1, y, 1500, 256,
                      torch.Generator().manual_seed(5))
    model.eval()
    z = torch.randn(1000, 2, 1, 1, generator=torch.Generator().manual_seed(6))
    grid = flow.time_grid(50)
    before, after = (float(flow.straightness(m, z, y[:1000], grid)) for m in (first, model))
    assert after < before / 10

    def on_blob(x):
        return float((torch.cdist(x[:, :, 0, 0].double(), mix.means).min(1).values < 3 * mix.std).double().mean())

    assert on_blob(flow.euler_loop(first, z, y[:1000], flow.time_grid(1))) == 0.0
    assert on_blob(flow.euler_loop(model, z, y[:1000], flow.time_grid(1))) > 0.6


def test_shifted_time_grid_is_eq_23():
    assert torch.equal(flow.shifted_time_grid(5, 1.0), flow.time_grid(5))
    for s in (0.25, 3.0):
        g = flow.shifted_time_grid(6, s)
        assert g[0] == 1.0 and g[-1] == 0.0 and bool((g[1:] < g[:-1]).all())
        back = (1 / s) * g / (1 + (1 / s - 1) * g)  # the shift 1/s undoes the shift s
        assert (back - flow.time_grid(6)).abs().max() < 1e-15
    assert float(flow.shifted_time_grid(2, 3.0)[1]) == pytest.approx(0.75)  # 3 * 0.5 / (1 + 2 * 0.5)
    with pytest.raises(LabkitValueError):
        flow.shifted_time_grid(4, 0.0)


def test_on_the_toy_steps_near_the_data_beat_the_uniform_grid_at_two_steps():
    """The exact mixture flow bends late (near the data): 2 Euler steps crowded towards t = 0 land more points on
    the blobs than uniform ones, and crowded towards t = 1 fewer."""
    mix = toy2d.three_blobs()
    z = torch.randn(2000, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    y = torch.full((2000,), mix.K)

    def on_blob(shift):
        x = flow.euler_loop(toy2d.exact_flow_model(mix), z, y, flow.shifted_time_grid(2, shift))
        return float((torch.cdist(x, mix.means).min(1).values < 3 * mix.std).double().mean())

    assert on_blob(1 / 3) > on_blob(1.0) + 0.2 > on_blob(3.0) + 0.4
