"""Samplers: exact on Gaussian data, DDIM(eta=1) = DDPM, the time grid, callbacks, seeds, autocast, clipping.

For data x_0 ~ N(mu, s^2) per dimension, the optimal noise predictor is known in closed form:

    eps*(x_t, t) = sqrt(1 - ab) (x_t - sqrt(ab) mu) / (ab s^2 + 1 - ab)

(E[eps | x_t] for the Gaussian q(x_t) = N(sqrt(ab) mu, ab s^2 + 1 - ab)). With it, a correct sampler must
turn N(0, 1) noise into samples of mean mu and std s, up to its discretisation error; a wrong coefficient
anywhere shows up as a wrong mean or std.
"""

import math

import pytest
import torch

from labkit import samplers as SM
from labkit.diffusion import predict_x0_from_eps
from labkit.errors import LabkitTypeError, LabkitValueError
from labkit.schedules import make_schedule
from labkit.unet import ResBlock, UNet, UNetConfig

SCHEDULES = {name: make_schedule(name, 1000) for name in ("linear", "cosine")}
MU, SD = 0.7, 0.3



def gaussian_eps(schedule, mu, s):
    """model(x, t, y) for x_0 ~ N(mu, s^2); mu may be a [num_classes, D] table of per-class means."""
    mu = torch.as_tensor(mu, dtype=torch.float64)

    def model(x, t, y):
        ab = schedule.alpha_bars[t.cpu()].view(-1, *([1] * (x.dim() - 1)))  # float64
        m = mu[y] if mu.dim() == 2 else mu
        eps = (1 - ab).sqrt() * (x.double() - ab.sqrt() * m) / (ab * s**2 + 1 - ab)
        return eps.to(x.dtype)

    return model


def standard_normal(n, seed=0, dtype=torch.float32):
    """n draws rescaled to sample mean exactly 0 and sample std exactly 1 (no Monte Carlo error in x_T):
    a deterministic sampler is an affine map of x_T here, so its output's mean and std are then exactly the
    map's intercept and slope."""
    z = torch.randn(n, 1, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return ((z - z.mean()) / z.std()).to(dtype)


def run(schedule, sampler, steps, n, *, spacing="logsnr", seed=0, x_T=None, eta=0.0, mu=MU, s=SD, **kw):
    y = torch.zeros(n, dtype=torch.long)
    return SM.sample(
        gaussian_eps(schedule, mu, s), (n, 1), y, schedule, sampler=sampler, steps=steps, spacing=spacing,
        eta=eta, generator=torch.Generator().manual_seed(seed), x_T=x_T, **kw,
    )


def ddpm_exact_moments(schedule, grid, mu, s):
    """Mean and std that DDPM ancestral sampling with the optimal model produces, exactly.

    Each step is linear-Gaussian: x0_hat = k x + m (the Gaussian posterior mean E[x_0 | x_t]), then
    x_prev = c0 x0_hat + c1 x + sqrt(v) z with the posterior q(x_s | x_t, x_0) coefficients of Ho et al. 2020,
    eqs. 6-7 (beta replaced by 1 - ab_t / ab_s between grid points). So the moments follow a recursion
    from N(0, 1). The result is below s: the sampler uses the posterior variance for known x_0 and ignores
    the uncertainty of x0_hat.
    """
    M, V = 0.0, 1.0
    g = grid.tolist() + [-1]
    for t, t_prev in zip(g[:-1], g[1:]):
        ab = float(schedule.alpha_bars[t])
        ab_prev = 1.0 if t_prev < 0 else float(schedule.alpha_bars[t_prev])
        denom = ab * s * s + 1 - ab
        k, m = math.sqrt(ab) * s * s / denom, (1 - ab) * mu / denom
        a = ab / ab_prev
        c0 = math.sqrt(ab_prev) * (1 - a) / (1 - ab)
        c1 = math.sqrt(a) * (1 - ab_prev) / (1 - ab)
        v = (1 - ab_prev) / (1 - ab) * (1 - a)
        A = c0 * k + c1
        M, V = A * M + c0 * m, A * A * V + v
    return M, math.sqrt(V)


def ode_exact(schedule, mu, s, t_start=None):
    """The probability-flow ODE maps x_T to mu + s (x_T - sqrt(ab_T) mu) / sqrt(ab_T s^2 + 1 - ab_T) exactly
    (x_T's quantile under q(x_T) is kept): returns (intercept, slope) for x_T ~ N(0, 1), where T is the
    step the sampler starts from (default the last one)."""
    ab = float(schedule.alpha_bars[-1 if t_start is None else t_start])
    slope = s / math.sqrt(ab * s * s + 1 - ab)
    return mu - slope * math.sqrt(ab) * mu, slope


# ------------------------------------------------------------------------------- Gaussian: distribution


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_ddpm_full_chain_gives_the_target_gaussian(name):
    """DDPM, 1000 steps, 20,000 random samples.

    Tolerances: the sample mean has standard error s/sqrt(N) = 0.0021, the sample std s/sqrt(2N) = 0.0015.
    The exact DDPM output std (recursion above) is 1.25% (linear) / 0.64% (cosine) below s, so we ask for
    |std - s| < 3.5% of s (bias + 4.5 sigma) against the target and 4.5 sigma against the exact value;
    a wrong variance anywhere in the chain misses by far more (50 steps already gives -9%).
    """
    sch = SCHEDULES[name]
    n = 20_000
    out = run(sch, "ddpm", 1000, n, seed=1)
    mean, std = float(out.mean()), float(out.std())
    exact_mean, exact_std = ddpm_exact_moments(sch, SM.timestep_grid(sch, 1000), MU, SD)
    assert abs(exact_std / SD - 1) < 0.015
    assert mean == pytest.approx(MU, abs=4.5 * SD / math.sqrt(n))
    assert std == pytest.approx(SD, rel=0.035)
    assert std == pytest.approx(exact_std, abs=4.5 * SD / math.sqrt(2 * n))
    assert mean == pytest.approx(exact_mean, abs=4.5 * SD / math.sqrt(n))


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_ddpm_respaced_matches_exact_recursion(name):
    """DDPM on a 50-step sub-grid: std ~9% below s, and exactly what the respaced posterior predicts."""
    sch = SCHEDULES[name]
    n = 20_000
    out = run(sch, "ddpm", 50, n, seed=2)
    exact_mean, exact_std = ddpm_exact_moments(sch, SM.timestep_grid(sch, 50), MU, SD)
    assert 0.85 * SD < exact_std < 0.95 * SD
    assert float(out.std()) == pytest.approx(exact_std, abs=4.5 * SD / math.sqrt(2 * n))
    assert float(out.mean()) == pytest.approx(exact_mean, abs=4.5 * SD / math.sqrt(n))


# Deterministic samplers with x_T standardised (see standard_normal): mean and std below are exact, no
# Monte Carlo error, so the tolerances are the discretisation error measured for this 1-D problem:
#   dpmpp_2m 20 steps logsnr: std +1.4% (linear) / +1.5% (cosine)  -> tolerance 2.5%
#   ddim     50 steps logsnr: std -4.8% / -5.0%                    -> tolerance 6.5%
# The mean can only be off by the x_T prior mismatch: sqrt(ab_T) mu s ~ 0.0013 for linear, ~0 for cosine.
DETERMINISTIC = [("dpmpp_2m", 20, 0.025), ("ddim", 50, 0.065)]


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("sampler,steps,tol", DETERMINISTIC)
def test_deterministic_samplers_give_the_target_gaussian(name, sampler, steps, tol):
    sch = SCHEDULES[name]
    out = run(sch, sampler, steps, 4000, x_T=standard_normal(4000))
    assert float(out.mean()) == pytest.approx(MU, abs=0.002)
    assert float(out.std()) == pytest.approx(SD, rel=tol)
    # and from plain random noise too (Monte Carlo: std error of the std ~0.0034 at N = 4000)
    out = run(sch, sampler, steps, 4000, seed=3)
    assert float(out.mean()) == pytest.approx(MU, abs=4.5 * SD / math.sqrt(4000))
    assert float(out.std()) == pytest.approx(SD, rel=tol + 0.05)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_deterministic_samplers_converge_to_the_ode_solution(name):
    """DDIM is first order (doubling the steps halves the error), DPM-Solver++(2M) second order (~4x)."""
    sch = SCHEDULES[name]
    x_T = torch.tensor([[0.0], [1.0]], dtype=torch.float64)

    def slope_error(sampler, steps):
        # the exact answer of the ODE started where this grid starts (logsnr grids skip the clipped end)
        intercept, slope = ode_exact(sch, MU, SD, int(SM.timestep_grid(sch, steps)[0]))
        out = run(sch, sampler, steps, 2, x_T=x_T)
        assert float(out[0]) == pytest.approx(intercept, abs=1e-3)
        return float(out[1] - out[0]) / slope - 1

    ddim = [slope_error("ddim", n) for n in (20, 40, 80)]
    dpm = [slope_error("dpmpp_2m", n) for n in (10, 20, 40)]
    assert all(e < 0 for e in ddim), "DDIM under-disperses"
    for a, b in zip(ddim, ddim[1:]):
        assert 1.6 < a / b < 2.5
    assert 3.0 < dpm[1] / dpm[2], "second order: ~4x smaller error for 2x the steps"
    assert abs(dpm[2]) < 0.005
    assert abs(slope_error("dpmpp_2m", 1000)) < 1e-3 and abs(slope_error("ddim", 1000)) < 6e-3


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_dpmpp_20_steps_is_as_close_as_ddpm_1000(name):
    """DPM-Solver++ with 20 log-SNR-spaced steps lands within 2% of the target std, as DDPM does with all
    1000 steps (exact values from the recursion / the affine map: DDPM -1.25%/-0.64%, DPM++ +1.4%/+1.5%).
    The same 20 steps spaced uniformly in t, or 20 DDIM steps, miss by > 10%: the spacing matters."""
    sch = SCHEDULES[name]
    x_T = standard_normal(2000)
    _, ddpm_std = ddpm_exact_moments(sch, SM.timestep_grid(sch, 1000), MU, SD)
    dpm_std = float(run(sch, "dpmpp_2m", 20, 2000, x_T=x_T).std())
    assert abs(ddpm_std / SD - 1) < 0.02
    assert abs(dpm_std / SD - 1) < 0.02
    assert abs(dpm_std / SD - 1) < abs(ddpm_std / SD - 1) + 0.01
    assert abs(float(run(sch, "dpmpp_2m", 20, 2000, x_T=x_T, spacing="uniform").std()) / SD - 1) > 0.10
    assert abs(float(run(sch, "ddim", 20, 2000, x_T=x_T).std()) / SD - 1) > 0.10


# ------------------------------------------------------------------------------ DDIM(eta = 1) == DDPM


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("steps", [1000, 50])
def test_ddim_eta1_equals_ddpm_sample_by_sample(name, steps):
    """Algebraically identical (Song et al. 2021, eq. 16): with the same generator they draw the same noise
    in the same order and must agree. float64: to 1e-9. float32: to 1e-3, because alpha_bar ~ 1 - 4e-5
    near t = 0 keeps only ~3 digits of 1 - alpha_bar in float32, and DDIM's sqrt(1 - ab_prev - sigma^2)
    is a difference of such numbers (measured: 1.3e-5 linear, 5e-4 cosine over 1000 steps)."""
    sch = SCHEDULES[name]
    x_T = torch.randn(64, 1, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    a = run(sch, "ddpm", steps, 64, x_T=x_T, seed=11)
    b = run(sch, "ddim", steps, 64, x_T=x_T, seed=11, eta=1.0)
    assert a.dtype == torch.float64
    torch.testing.assert_close(a, b, rtol=0, atol=1e-9)
    a32 = run(sch, "ddpm", steps, 64, x_T=x_T.float(), seed=11)
    b32 = run(sch, "ddim", steps, 64, x_T=x_T.float(), seed=11, eta=1.0)
    torch.testing.assert_close(a32, b32, rtol=0, atol=1e-3)
    # a different seed gives different samples (the agreement above is not trivial)
    c = run(sch, "ddim", steps, 64, x_T=x_T, seed=12, eta=1.0)
    assert float((c - a).abs().max()) > 0.05


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_ddim_eta1_matches_ddpm_in_distribution(name):
    sch = SCHEDULES[name]
    n = 20_000
    out = run(sch, "ddim", 1000, n, seed=5, eta=1.0)
    exact_mean, exact_std = ddpm_exact_moments(sch, SM.timestep_grid(sch, 1000), MU, SD)
    assert float(out.std()) == pytest.approx(exact_std, abs=4.5 * SD / math.sqrt(2 * n))
    assert float(out.mean()) == pytest.approx(exact_mean, abs=4.5 * SD / math.sqrt(n))


# ------------------------------------------------------------------------------------- conditioning


@pytest.mark.parametrize("sampler,steps", [("ddpm", 1000), ("ddim", 50), ("dpmpp_2m", 20)])
def test_class_label_chooses_the_mean(sampler, steps):
    """2-D Gaussians with a different mean per class: y must pick the right one.
    1500 samples per class, s = 0.2: standard error of a class mean 0.005, tolerance 0.03 (6 sigma);
    the class means are >= 1 apart, so a mixed-up label fails by far."""
    means = torch.tensor([[-1.0, 0.5], [0.5, 0.5], [1.0, -1.0]], dtype=torch.float64)
    s, per = 0.2, 1500
    sch = SCHEDULES["cosine"]
    y = torch.arange(3).repeat_interleave(per)
    out = SM.sample(gaussian_eps(sch, means, s), (3 * per, 2), y, sch, sampler=sampler, steps=steps,
                    generator=torch.Generator().manual_seed(0))
    for c in range(3):
        group = out[y == c].double()
        torch.testing.assert_close(group.mean(0), means[c], rtol=0, atol=0.03)
        assert bool(((group.std(0) / s - 1).abs() < 0.12).all())  # ddim 50 is ~5% narrow, + MC error


# ------------------------------------------------------------------------------------ timestep grid


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("spacing", ["logsnr", "uniform"])
@pytest.mark.parametrize("steps", [2, 3, 10, 20, 50, 250, 999])
def test_timestep_grid_properties(name, spacing, steps):
    grid = SM.timestep_grid(SCHEDULES[name], steps, spacing)
    assert grid.dtype == torch.int64 and grid.shape == (steps,)
    assert int(grid[-1]) == 0
    if spacing == "uniform":
        assert int(grid[0]) == 999
    else:  # starts at the floor of log-SNR (skipping the cosine schedule's clipped end), or higher if needed
        log_snr = SCHEDULES[name].log_snr()
        assert int(grid[0]) >= 990
        assert float(log_snr[grid[0]]) >= SM.LOGSNR_FLOOR or int(grid[0]) == steps - 1
        assert int(grid[0]) == 999 or float(log_snr[grid[0] + 1]) < SM.LOGSNR_FLOOR or int(grid[0]) == steps - 1
    assert bool((grid[1:] < grid[:-1]).all()), "strictly descending (hence unique)"
    assert len(set(grid.tolist())) == steps


@pytest.mark.parametrize("spacing", ["logsnr", "uniform"])
def test_timestep_grid_all_steps_and_one_step(spacing):
    for name, sch in SCHEDULES.items():
        assert torch.equal(SM.timestep_grid(sch, 1000, spacing), torch.arange(999, -1, -1))
        assert SM.timestep_grid(sch, 1, spacing).tolist() == [999]
    small = make_schedule("cosine", 30)
    assert torch.equal(SM.timestep_grid(small, 30, spacing), torch.arange(29, -1, -1))


def test_timestep_grid_spacings():
    for name, sch in SCHEDULES.items():
        uniform = SM.timestep_grid(sch, 20, "uniform")
        gaps = -torch.diff(uniform)
        assert int(gaps.max() - gaps.min()) <= 1, "uniform: evenly spaced in t"
        logsnr = SM.timestep_grid(sch, 20, "logsnr")
        lam = sch.log_snr()[logsnr]
        # evenly spaced in log-SNR from LOGSNR_FLOOR up; at both ends t are integers whose log-SNR moves
        # fast (cosine near T) or slowly relative to the gap (near 0), where rounding makes gaps uneven
        d = torch.diff(lam[1:15])
        assert float(d.min()) > 0.7 * float(d.mean()) and float(d.max()) < 1.3 * float(d.mean())
        assert float(lam[0]) == pytest.approx(SM.LOGSNR_FLOOR, abs=0.5)
        assert float(lam[0]) >= SM.LOGSNR_FLOOR
        # more steps at low noise than the uniform grid
        assert int((logsnr < 200).sum()) > int((uniform < 200).sum())


@pytest.mark.parametrize("bad", [0, -1, 1001, 2.5, 20.0, True, None, "20"])
def test_timestep_grid_bad_steps(bad):
    with pytest.raises(LabkitValueError):
        SM.timestep_grid(SCHEDULES["cosine"], bad)


def test_timestep_grid_unknown_spacing():
    with pytest.raises(LabkitValueError, match="spacing"):
        SM.timestep_grid(SCHEDULES["cosine"], 20, "quadratic")


# ------------------------------------------------------------------------------------------ sample()


def test_unknown_sampler_and_bad_labels():
    sch = SCHEDULES["cosine"]
    model = gaussian_eps(sch, MU, SD)
    with pytest.raises(LabkitValueError, match="unknown sampler"):
        SM.sample(model, (2, 1), torch.zeros(2, dtype=torch.long), sch, sampler="euler")
    with pytest.raises(LabkitTypeError):
        SM.sample(model, (2, 1), [0, 0], sch)
    with pytest.raises(LabkitValueError):
        SM.sample(model, (3, 1), torch.zeros(2, dtype=torch.long), sch)
    with pytest.raises(LabkitValueError):
        SM.sample(model, (2, 1), torch.zeros(2, dtype=torch.long), sch, steps=0)


@pytest.mark.parametrize("sampler", SM.SAMPLERS)
def test_callback_once_per_step_with_descending_t(sampler):
    sch = SCHEDULES["linear"]
    model = gaussian_eps(sch, MU, SD)
    y = torch.zeros(5, dtype=torch.long)
    x_T = torch.randn(5, 1, generator=torch.Generator().manual_seed(0))
    calls = []

    def callback(step, t, x_t, x0_hat):
        calls.append((step, t, x_t.clone(), x0_hat.clone()))

    out = SM.sample(model, (5, 1), y, sch, sampler=sampler, steps=7, x_T=x_T, callback=callback,
                    generator=torch.Generator().manual_seed(1))
    assert [c[0] for c in calls] == list(range(7))
    ts = [c[1] for c in calls]
    assert all(isinstance(t, int) for t in ts)
    assert ts == SM.timestep_grid(sch, 7).tolist() and ts == sorted(ts, reverse=True)
    assert torch.equal(calls[0][2], x_T), "the first callback sees x_T"
    for step, t, x_t, x0_hat in calls:  # x0_hat is the prediction from the x_t passed alongside it
        tt = torch.full((5,), t)
        torch.testing.assert_close(x0_hat, predict_x0_from_eps(x_t, tt, model(x_t, tt, y), sch))
    # for Gaussian data the last prediction is close to the output
    assert float((calls[-1][3] - out).abs().max()) < 0.05


@pytest.mark.parametrize("sampler", SM.SAMPLERS)
def test_generator_reproducibility(sampler):
    sch = SCHEDULES["cosine"]
    kw = dict(eta=0.5) if sampler == "ddim" else {}
    a = run(sch, sampler, 10, 16, seed=3, **kw)
    b = run(sch, sampler, 10, 16, seed=3, **kw)
    c = run(sch, sampler, 10, 16, seed=4, **kw)
    assert torch.equal(a, b)
    assert float((a - c).abs().max()) > 1e-3


def test_stochastic_samplers_use_the_generator_after_x_T():
    """Given the same x_T, DDPM and DDIM(eta>0) still depend on the seed; DDIM(eta=0) and DPM++ do not."""
    sch = SCHEDULES["cosine"]
    x_T = standard_normal(16)
    cases = [("ddpm", 0.0, True), ("ddim", 0.5, True), ("ddim", 0.0, False), ("dpmpp_2m", 0.0, False)]
    for sampler, eta, random in cases:
        a = run(sch, sampler, 10, 16, x_T=x_T, seed=1, eta=eta)
        b = run(sch, sampler, 10, 16, x_T=x_T, seed=2, eta=eta)
        assert torch.equal(a, b) != random, sampler


def _tiny_unet():
    model = UNet(UNetConfig(base_channels=8, channel_mults=(1, 2), groups=4, patch=2)).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # random weights in the zero-initialised layers, so the output is not just 0
        for conv in [model.out] + [m.block2.conv for m in model.modules() if isinstance(m, ResBlock)]:
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 0.05)
    return model


@pytest.mark.parametrize("sampler", SM.SAMPLERS)
def test_autocast_bf16_with_real_unet(sampler):
    model = _tiny_unet()
    sch = SCHEDULES["cosine"]
    y = torch.tensor([1, 10])
    g = torch.Generator().manual_seed(0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = SM.sample(model, (2, 1, 28, 28), y, sch, sampler=sampler, steps=3, guidance=1.5, clip=1.0, generator=g)
    assert out.dtype == torch.float32 and out.shape == (2, 1, 28, 28)
    assert bool(torch.isfinite(out).all())
    ref = SM.sample(model, (2, 1, 28, 28), y, sch, sampler=sampler, steps=3, guidance=1.5, clip=1.0,
                    generator=torch.Generator().manual_seed(0))
    # an untrained net's clipped predictions sit at +-1, where bf16 rounding can flip a few pixels:
    # compare on average (measured 0.003-0.01) rather than pixel by pixel
    assert float((out - ref).abs().mean()) < 0.05
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the sampler really was fed bf16 predictions
        assert model(out, torch.tensor([5, 5]), y).dtype == torch.bfloat16


@pytest.mark.parametrize("sampler", SM.SAMPLERS)
def test_clip_keeps_x0_hat_in_range(sampler):
    """Data at mean 2.5 predicts x0_hat far above 1; clip=1.0 must clamp every prediction and the output."""
    sch = SCHEDULES["cosine"]
    seen = {None: [], 1.0: []}
    outs = {}
    for clip in (None, 1.0):
        outs[clip] = run(sch, sampler, 10, 64, mu=2.5, s=0.5, clip=clip,
                         callback=lambda i, t, x, x0, c=clip: seen[c].append(x0.clone()))
    assert max(float(x0.abs().max()) for x0 in seen[None]) > 1.5, "without clipping the predictions leave [-1, 1]"
    assert all(float(x0.abs().max()) <= 1.0 for x0 in seen[1.0])
    assert float(outs[1.0].abs().max()) <= 1.0 + 1e-6
    assert float(outs[1.0].mean()) > 0.9, "clamped at the top, not elsewhere"


@pytest.mark.parametrize("sampler", SM.SAMPLERS)
def test_max_batch_chunks_the_model_without_changing_samples(sampler):
    """max_batch evaluates the model on slices of the batch; the noise is drawn for the whole batch."""
    sch = SCHEDULES["cosine"]
    seen = []

    def model(x, t, y):
        seen.append(x.shape[0])
        return gaussian_eps(sch, MU, SD)(x, t, y)

    y = torch.zeros(10, dtype=torch.long)
    kw = dict(sampler=sampler, steps=4, generator=torch.Generator().manual_seed(0))
    whole = SM.sample(model, (10, 3), y, sch, max_batch=None, **kw)
    assert seen == [10] * 4
    seen.clear()
    kw["generator"] = torch.Generator().manual_seed(0)
    parts = SM.sample(model, (10, 3), y, sch, max_batch=4, **kw)
    assert seen == [4, 4, 2] * 4
    assert torch.allclose(whole, parts, atol=1e-6)


@pytest.mark.parametrize("bad", [0, -1, 2.5, "big", True])
def test_max_batch_rejects_bad_values(bad):
    with pytest.raises(LabkitValueError, match="max_batch"):
        SM.sample(gaussian_eps(SCHEDULES["cosine"], MU, SD), (4, 3), torch.zeros(4, dtype=torch.long),
                  SCHEDULES["cosine"], steps=2, max_batch=bad)


# --- the loops the labs ask for (lab 05: sample_loop, lab 07: ddim_loop, dpmpp_2m_loop) -----------------

def _loop_setup(steps):
    s = make_schedule("cosine", 60)
    model = lambda x, t, y: 0.3 * x + t.view(-1, 1, 1, 1).to(x.dtype) / 100  # noqa: E731
    x_T = torch.randn(3, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    return s, model, x_T, SM.timestep_grid(s, steps)


def _drawn(grid, x_T, seed):
    """The noise sample_ddpm / sample_ddim draw, step i of the grid in row i (none on the last step: zeros)."""
    g = torch.Generator().manual_seed(seed)
    rows = [torch.randn(x_T.shape, generator=g, dtype=x_T.dtype) for _ in range(len(grid) - 1)]
    return torch.stack(rows + [torch.zeros_like(x_T)])  # [S, B, C, H, W]


@pytest.mark.parametrize("steps", [60, 7, 1])
def test_sample_loop_is_sample_ddpm_on_the_same_noise(steps):
    """Lab 05's loop (p_sample_step on the chain of the grid, noises[k] at chain step k) = sample_ddpm."""
    s, model, x_T, grid = _loop_setup(steps)
    want = SM.sample_ddpm(model, x_T, None, grid, s, generator=torch.Generator().manual_seed(1))
    betas, alpha_bars = SM.respaced(s, grid)
    noises = _drawn(grid, x_T, 1).flip(0)  # chain step k = S - 1 - i
    got = SM.sample_loop(model, x_T, None, grid.flip(0), betas, alpha_bars, noises)
    assert (got - want).abs().max() < 1e-9 * (1 + want.abs().max())  # x0_hat = x_T / sqrt(abar): large


@pytest.mark.parametrize("steps, eta", [(10, 0.0), (10, 0.7), (2, 1.0), (1, 0.5)])
def test_ddim_loop_is_sample_ddim_on_the_same_noise(steps, eta):
    s, model, x_T, grid = _loop_setup(steps)
    want = SM.sample_ddim(model, x_T, None, grid, s, eta=eta, generator=torch.Generator().manual_seed(2))
    noises = _drawn(grid, x_T, 2) if eta > 0 else torch.zeros((steps,) + tuple(x_T.shape), dtype=x_T.dtype)
    got = SM.ddim_loop(model, x_T, None, grid, s.alpha_bars, eta, noises)
    assert (got - want).abs().max() < 1e-9 * (1 + want.abs().max())  # x0_hat = x_T / sqrt(abar): large


@pytest.mark.parametrize("steps", [10, 2, 1])
def test_dpmpp_2m_loop_is_sample_dpmpp_2m(steps):
    s, model, x_T, grid = _loop_setup(steps)
    want = SM.sample_dpmpp_2m(model, x_T, None, grid, s)
    got = SM.dpmpp_2m_loop(model, x_T, None, grid, s.alpha_bars)
    assert (got - want).abs().max() < 1e-9 * (1 + want.abs().max())  # x0_hat = x_T / sqrt(abar): large


def test_watched_sees_every_call_of_any_loop():
    s, model, x_T, grid = _loop_setup(5)
    seen = []
    out = SM.dpmpp_2m_loop(SM.Watched(model, lambda t, x, eps: seen.append(int(t[0]))), x_T, None, grid,
                                 s.alpha_bars)
    assert seen == grid.tolist() and (out - SM.dpmpp_2m_loop(model, x_T, None, grid, s.alpha_bars)).abs().max() == 0


def test_spaced_timesteps_are_lin_et_al_table_2():
    """The three spacings of Lin et al. 2024 (table 2, 0-based): the values diffusers' schedulers give for T = 1000
    and 10 steps; "leading" never starts at T-1; timestep_grid's "uniform" is "linspace"."""
    assert SM.spaced_timesteps(1000, 10, "linspace").tolist() == [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]
    assert SM.spaced_timesteps(1000, 10, "leading").tolist() == [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]
    assert SM.spaced_timesteps(1000, 10, "trailing").tolist() == [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]
    assert SM.spaced_timesteps(1000, 3, "trailing").tolist() == [999, 666, 332]
    sch = make_schedule("cosine", 1000)
    for steps in (2, 7, 10, 50, 999):
        assert torch.equal(SM.timestep_grid(sch, steps, "uniform"), SM.spaced_timesteps(1000, steps, "linspace"))
        assert int(SM.spaced_timesteps(1000, steps, "leading")[0]) < 999
        for spacing in SM.UNIFORM_SPACINGS:
            grid = SM.spaced_timesteps(1000, steps, spacing)
            assert grid.dtype == torch.int64 and len(grid) == steps and bool((grid[1:] < grid[:-1]).all())


def test_dynamic_threshold_keeps_images_in_range_and_sample_takes_it_as_clip():
    x0 = torch.randn(3, 1, 8, 8) * torch.tensor([0.2, 3.0, 10.0]).view(3, 1, 1, 1)
    out = SM.dynamic_threshold(x0, 0.995)
    assert torch.equal(out[0], x0[0].clamp(-1, 1) / 1)  # within range at that percentile: s = 1, only clamped
    assert float(out.abs().max()) <= 1.0
    sch = make_schedule("cosine", 50)
    y = torch.zeros(4, dtype=torch.long)
    model = lambda x, t, y: -3 * x  # noqa: E731  (x0_hat far outside [-1, 1])
    x = SM.sample(model, (4, 1, 4, 4), y, sch, steps=5, clip=lambda v: SM.dynamic_threshold(v, 0.9),
                  generator=torch.Generator().manual_seed(0))
    assert float(x.abs().max()) <= 1.0 + 1e-6
