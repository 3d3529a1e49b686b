"""The diffusion maths: q_sample moments, the posterior against Bayes' rule, round trips, gather, the loss."""

import math

import pytest
import torch

from labkit import diffusion as D
from labkit.schedules import make_schedule



SCHEDULES = {name: make_schedule(name, 1000) for name in ("linear", "cosine")}


def _gaussian_product(m1, v1, m2, v2):
    """N(m1, v1) * N(m2, v2) is proportional to N(m, v) with 1/v = 1/v1 + 1/v2 and m = v (m1/v1 + m2/v2)."""
    v = 1.0 / (1.0 / v1 + 1.0 / v2)
    return v * (m1 / v1 + m2 / v2), v


def _bayes_posterior(x0, xt, ab_s, ab_t):
    """q(x_s | x_t, x_0) for scalars, by Bayes' rule, written from scratch.

    prior      q(x_s | x_0) = N(sqrt(ab_s) x_0, 1 - ab_s)
    likelihood q(x_t | x_s) = N(a x_s, 1 - a) with a = ab_t / ab_s (one Gaussian step, eq. 2 of Ho et al.)
    As a function of x_s the likelihood is N(x_t / sqrt(a), (1 - a) / a) up to a constant; the posterior
    is the product of the two Gaussians.
    """
    a = ab_t / ab_s
    return _gaussian_product(math.sqrt(ab_s) * x0, 1 - ab_s, xt / math.sqrt(a), (1 - a) / a)


# ---------------------------------------------------------------------------------------------- q_sample


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_q_sample_moments(name):
    """Mean sqrt(ab) x0 and *variance* 1 - ab, on many draws.

    Checked at t = 0 and 20, where the variance (1e-4 .. 1e-2) and the std (1e-2 .. 1e-1) differ by 10-100x,
    so using (1 - ab) instead of sqrt(1 - ab) as the noise scale (or vice versa) fails by far. 50,000 draws
    per t: the relative standard error of a sample variance is sqrt(2/N) = 0.6%, so rtol = 4% is > 6 sigma.
    """
    sch = SCHEDULES[name]
    g = torch.Generator().manual_seed(0)
    n = 50_000
    x0_value = 0.8
    for t_value in (0, 20, 300, 999):
        x0 = torch.full((n, 1, 1, 1), x0_value, dtype=torch.float64)
        t = torch.full((n,), t_value, dtype=torch.long)
        noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
        xt = D.q_sample(x0, t, noise, sch)
        ab = float(sch.alpha_bars[t_value])
        sem = math.sqrt((1 - ab) / n)
        assert float(xt.mean()) == pytest.approx(math.sqrt(ab) * x0_value, abs=5 * sem)
        assert float(xt.var()) == pytest.approx(1 - ab, rel=0.04)


def test_q_sample_matches_formula_elementwise_and_keeps_dtype(gen):
    sch = SCHEDULES["cosine"]
    x0 = torch.rand(6, 1, 4, 4, generator=gen) * 2 - 1
    noise = torch.randn(6, 1, 4, 4, generator=gen)
    t = torch.tensor([0, 1, 10, 500, 998, 999])
    xt = D.q_sample(x0, t, noise, sch)
    assert xt.shape == x0.shape and xt.dtype == torch.float32
    for i, ti in enumerate(t.tolist()):
        ab = float(sch.alpha_bars[ti])
        expected = math.sqrt(ab) * x0[i].double() + math.sqrt(1 - ab) * noise[i].double()
        # float32: alpha_bar ~ 1 - 4e-5 at t = 0 is stored to ~6e-8, so 1 - alpha_bar (the noise variance)
        # is only good to ~0.2% there; the noise term is ~0.006 * eps, hence atol 1e-5 (a wrong formula is off
        # by > 1e-3). In float64 the match is exact to rounding.
        torch.testing.assert_close(xt[i].double(), expected, rtol=1e-5, atol=1e-5)
    xt64 = D.q_sample(x0.double(), t, noise.double(), sch)
    assert xt64.dtype == torch.float64
    for i, ti in enumerate(t.tolist()):
        ab = float(sch.alpha_bars[ti])
        expected = math.sqrt(ab) * x0[i].double() + math.sqrt(1 - ab) * noise[i].double()
        torch.testing.assert_close(xt64[i], expected, rtol=1e-12, atol=1e-12)
    x16 = D.q_sample(x0.bfloat16(), t, noise.bfloat16(), sch)
    assert x16.dtype == torch.bfloat16


def test_q_sample_any_trailing_dims(gen):
    sch = SCHEDULES["linear"]
    x0 = torch.randn(5, 3, generator=gen)
    noise = torch.randn(5, 3, generator=gen)
    t = torch.tensor([0, 10, 100, 500, 999])
    ab = sch.alpha_bars[t].float()[:, None]
    torch.testing.assert_close(D.q_sample(x0, t, noise, sch), ab.sqrt() * x0 + (1 - ab).sqrt() * noise)


# -------------------------------------------------------------------------------------------- posterior


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_q_posterior_matches_bayes(name, gen):
    sch = SCHEDULES[name]
    ts = [1, 2, 5, 50, 400, 900, 999]
    x0 = torch.randn(len(ts), 1, generator=gen, dtype=torch.float64)
    xt = torch.randn(len(ts), 1, generator=gen, dtype=torch.float64)
    t = torch.tensor(ts)
    mean, var = D.q_posterior(x0, xt, t, sch)
    for i, ti in enumerate(ts):
        m, v = _bayes_posterior(float(x0[i]), float(xt[i]), float(sch.alpha_bars[ti - 1]), float(sch.alpha_bars[ti]))
        assert float(mean[i]) == pytest.approx(m, rel=1e-9, abs=1e-12)
        assert float(var[i]) == pytest.approx(v, rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_q_posterior_variance_is_beta_tilde(name):
    """Ho et al. 2020 eq. 7 written out: beta_tilde_t = (1 - ab_{t-1}) / (1 - ab_t) * beta_t."""
    sch = SCHEDULES[name]
    t = torch.arange(1, 1000)
    x = torch.zeros(999, 1, dtype=torch.float64)
    _, var = D.q_posterior(x, x, t, sch)
    ab, ab_prev, beta = sch.alpha_bars[1:], sch.alpha_bars[:-1], sch.betas[1:]
    torch.testing.assert_close(var.flatten(), (1 - ab_prev) / (1 - ab) * beta, rtol=1e-9, atol=0)
    assert bool((var.flatten() < beta).all()), "the posterior is narrower than the forward step"


def test_q_posterior_at_t0_is_x0_with_zero_variance(gen):
    sch = SCHEDULES["cosine"]
    x0 = torch.randn(4, 1, 3, 3, generator=gen)
    xt = torch.randn(4, 1, 3, 3, generator=gen)
    mean, var = D.q_posterior(x0, xt, torch.zeros(4, dtype=torch.long), sch)
    assert var.shape == (4, 1, 1, 1)
    assert float(var.abs().max()) == 0.0
    torch.testing.assert_close(mean, x0, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("pair", [(999, 941), (500, 250), (100, 0), (60, 59), (30, -1), (999, -1)])
def test_posterior_between_respaced_pair_matches_bayes(name, pair):
    t_value, s_value = pair
    sch = SCHEDULES[name]
    x0 = torch.tensor([[0.3], [-1.2]], dtype=torch.float64)
    xt = torch.tensor([[1.1], [0.4]], dtype=torch.float64)
    t = torch.full((2,), t_value)
    s = torch.full((2,), s_value)
    mean, var = D.posterior_between(x0, xt, t, s, sch)
    ab_t = float(sch.alpha_bars[t_value])
    ab_s = 1.0 if s_value < 0 else float(sch.alpha_bars[s_value])  # s = -1: clean data
    for i in range(2):
        if s_value < 0:  # x_s is x_0 itself: a point mass
            m, v = float(x0[i]), 0.0
        else:
            m, v = _bayes_posterior(float(x0[i]), float(xt[i]), ab_s, ab_t)
        assert float(mean[i]) == pytest.approx(m, rel=1e-9, abs=1e-12)
        assert float(var[i]) == pytest.approx(v, rel=1e-9, abs=1e-15)


def test_posterior_between_adjacent_equals_q_posterior(gen):
    sch = SCHEDULES["linear"]
    x0 = torch.randn(8, 1, 2, 2, generator=gen)
    xt = torch.randn(8, 1, 2, 2, generator=gen)
    t = torch.randint(0, 1000, (8,), generator=gen)
    m1, v1 = D.q_posterior(x0, xt, t, sch)
    m2, v2 = D.posterior_between(x0, xt, t, t - 1, sch)
    torch.testing.assert_close(m1, m2)
    torch.testing.assert_close(v1, v2)


def test_posterior_by_monte_carlo():
    """The posterior also matches conditioning a simulated forward chain: draw (x_{t-1}, x_t) given x_0 many
    times and regress x_{t-1} on x_t; the slope, intercept and residual variance are q(x_{t-1} | x_t, x_0)."""
    sch = SCHEDULES["cosine"]
    t_value, x0_value, n = 200, 0.5, 200_000
    g = torch.Generator().manual_seed(1)
    ab_prev, alpha = float(sch.alpha_bars[t_value - 1]), float(sch.alphas[t_value])
    x_prev = math.sqrt(ab_prev) * x0_value + math.sqrt(1 - ab_prev) * torch.randn(n, generator=g, dtype=torch.float64)
    x_t = math.sqrt(alpha) * x_prev + math.sqrt(1 - alpha) * torch.randn(n, generator=g, dtype=torch.float64)
    cov = torch.cov(torch.stack([x_t, x_prev]))
    slope = float(cov[0, 1] / cov[0, 0])
    intercept = float(x_prev.mean() - slope * x_t.mean())
    resid_var = float(cov[1, 1] - slope * cov[0, 1])
    x0 = torch.tensor([[x0_value], [x0_value]], dtype=torch.float64)
    xt = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    mean, var = D.q_posterior(x0, xt, torch.full((2,), t_value), sch)
    assert float(mean[1] - mean[0]) == pytest.approx(slope, rel=0.01)
    assert float(mean[0]) == pytest.approx(intercept, abs=0.01)
    assert float(var[0]) == pytest.approx(resid_var, rel=0.02)


# ------------------------------------------------------------------------------------------ round trips


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_eps_x0_round_trips(name, gen):
    sch = SCHEDULES[name]
    x0 = torch.rand(16, 1, 5, 5, generator=gen, dtype=torch.float64) * 2 - 1
    eps = torch.randn(16, 1, 5, 5, generator=gen, dtype=torch.float64)
    t = torch.cat([torch.tensor([0, 1, 998, 999]), torch.randint(0, 1000, (12,), generator=gen)])
    xt = D.q_sample(x0, t, eps, sch)
    torch.testing.assert_close(D.predict_x0_from_eps(xt, t, eps, sch), x0, rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(D.predict_eps_from_x0(xt, t, x0, sch), eps, rtol=1e-7, atol=1e-7)
    # float32 at moderate noise levels (at t = T-1 of the cosine schedule sqrt(ab) ~ 5e-5 amplifies rounding)
    tm = torch.randint(50, 950, (16,), generator=gen)
    xt32 = D.q_sample(x0.float(), tm, eps.float(), sch)
    torch.testing.assert_close(D.predict_x0_from_eps(xt32, tm, eps.float(), sch), x0.float(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(D.predict_eps_from_x0(xt32, tm, x0.float(), sch), eps.float(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_v_round_trip_and_identities(name, gen):
    sch = SCHEDULES[name]
    x0 = torch.rand(16, 1, 3, 3, generator=gen, dtype=torch.float64) * 2 - 1
    eps = torch.randn(16, 1, 3, 3, generator=gen, dtype=torch.float64)
    t = torch.cat([torch.tensor([0, 999]), torch.randint(0, 1000, (14,), generator=gen)])
    xt = D.q_sample(x0, t, eps, sch)
    v = D.v_from_eps(x0, t, eps, sch)
    torch.testing.assert_close(D.eps_from_v(xt, t, v, sch), eps, rtol=1e-9, atol=1e-9)
    # independent identities with alpha = sqrt(ab), sigma = sqrt(1 - ab) (Salimans & Ho 2022, section 4):
    ab = sch.alpha_bars[t].reshape(-1, 1, 1, 1)
    alpha, sigma = ab.sqrt(), (1 - ab).sqrt()
    torch.testing.assert_close(v, alpha * eps - sigma * x0)
    torch.testing.assert_close(alpha * xt - sigma * v, x0, rtol=1e-9, atol=1e-9)  # x0 = alpha x_t - sigma v
    # v is a rotation of (x0, eps): it has the same norm as the pair
    torch.testing.assert_close(v**2 + (alpha * x0 + sigma * eps) ** 2, x0**2 + eps**2, rtol=1e-9, atol=1e-9)


# --------------------------------------------------------------------------------------------- gather


def test_gather_shape_and_values():
    sch = SCHEDULES["linear"]
    x = torch.zeros(3, 2, 4, 4)
    t = torch.tensor([0, 7, 999])
    out = D.gather(sch.alpha_bars, t, x)
    assert out.shape == (3, 1, 1, 1) and out.dtype == torch.float32
    torch.testing.assert_close(out.flatten(), sch.alpha_bars[[0, 7, 999]].float())
    assert D.gather(sch.alpha_bars, t, torch.zeros(3, 5)).shape == (3, 1)
    assert D.gather(sch.alpha_bars, t, x.double()).dtype == torch.float64


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_gather_keeps_float32_precision_for_low_precision_inputs(dtype):
    sch = SCHEDULES["cosine"]
    x = torch.zeros(2, 1, 2, 2, dtype=dtype)
    t = torch.tensor([0, 5])
    out = D.gather(sch.alpha_bars, t, x)
    assert out.dtype == torch.float32
    exact = sch.alpha_bars[[0, 5]]
    assert float((out.flatten().double() - exact).abs().max()) < 1e-7
    # 1 - alpha_bar at t = 0 is ~4e-5: bf16/fp16 would round alpha_bar to 1.0 and the noise scale to 0
    assert exact[0].to(dtype).item() == 1.0
    assert float(1 - out[0]) == pytest.approx(float(1 - exact[0]), rel=0.01)


# ----------------------------------------------------------------------------------------------- loss


def test_sample_timesteps_range(gen):
    sch = SCHEDULES["linear"]
    t = D.sample_timesteps(20_000, sch, generator=gen)
    assert t.dtype == torch.int64 and t.shape == (20_000,)
    assert int(t.min()) == 0 and int(t.max()) == 999
    assert float(t.double().mean()) == pytest.approx(499.5, abs=10)  # uniform: sd of the mean ~2


def test_diffusion_loss_equals_hand_computation():
    sch = SCHEDULES["cosine"]
    g_data = torch.Generator().manual_seed(3)
    x0 = torch.rand(6, 1, 4, 4, generator=g_data) * 2 - 1
    y = torch.tensor([0, 1, 2, 3, 4, 5])

    def model(x, t, y):  # any fixed function of all three inputs
        return 0.5 * x + 0.001 * t.float().view(-1, 1, 1, 1) - 0.1 * y.float().view(-1, 1, 1, 1)

    loss = D.diffusion_loss(model, x0, y, sch, generator=torch.Generator().manual_seed(42))
    # re-draw t and the noise with an identical generator, in the same order (Algorithm 1, lines 3-4)
    g = torch.Generator().manual_seed(42)
    t = torch.randint(0, 1000, (6,), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    ab = sch.alpha_bars[t].view(-1, 1, 1, 1)
    xt = (ab.sqrt() * x0.double() + (1 - ab).sqrt() * noise.double()).float()
    expected = ((model(xt, t, y).double() - noise.double()) ** 2).mean()
    assert loss.shape == () and loss.dtype == torch.float32
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_diffusion_loss_perfect_model_is_zero(name):
    """A model that knows x0 recovers the exact noise from x_t: the loss is ~0; a wrong model is far from 0."""
    sch = SCHEDULES[name]
    x0 = torch.rand(32, 1, 4, 4, generator=torch.Generator().manual_seed(5)) * 2 - 1
    y = torch.zeros(32, dtype=torch.long)

    def perfect(x, t, y):  # eps = (x_t - sqrt(ab) x0) / sqrt(1 - ab), from the schedule in float64
        ab = sch.alpha_bars[t].view(-1, 1, 1, 1)
        return ((x.double() - ab.sqrt() * x0.double()) / (1 - ab).sqrt()).float()

    loss = D.diffusion_loss(perfect, x0, y, sch, generator=torch.Generator().manual_seed(0))
    assert float(loss) < 1e-6
    zero = D.diffusion_loss(lambda x, t, y: torch.zeros_like(x), x0, y, sch, generator=torch.Generator().manual_seed(0))
    assert float(zero) == pytest.approx(1.0, abs=0.2)  # E||eps||^2 per pixel = 1


def test_diffusion_loss_backpropagates(gen):
    sch = SCHEDULES["linear"]
    w = torch.zeros(1, requires_grad=True)
    x0 = torch.rand(4, 1, 3, 3, generator=gen)
    loss = D.diffusion_loss(lambda x, t, y: w * x, x0, torch.zeros(4, dtype=torch.long), sch, generator=gen)
    loss.backward()
    assert w.grad is not None and float(w.grad.abs()) > 0


# ------------------------------------------------------------------------------------ docstrings cite


def _public_callables(module):
    """Public functions and classes defined in ``module`` (not imported into it), and the public methods
    of those classes (nn.Module.forward excluded: the class docstring describes it)."""
    import inspect

    out = []
    for name, obj in vars(module).items():
        if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isfunction(obj):
            out.append((name, obj))
        elif inspect.isclass(obj) and not issubclass(obj, tuple):  # NamedTuples are plain records
            out.append((name, obj))
            for meth_name, meth in vars(obj).items():
                if inspect.isfunction(meth) and not meth_name.startswith("_") and meth_name != "forward":
                    out.append((f"{name}.{meth_name}", meth))
    return out


# helpers that implement no equation: an indexing utility
NO_EQUATION = {"gather", "alpha_bars_of", "sample_digits", "check_weight"}  # helpers: indexing, a class grid, a validator


def test_docstrings_name_the_paper():
    """Every public function of the maths modules names the paper (a year or "et al.") it implements."""
    import re

    from labkit import diffusion, embeddings, guidance, samplers, schedules

    missing = []
    for module in (schedules, diffusion, samplers, guidance, embeddings):
        items = _public_callables(module)
        assert len(items) >= 3, module.__name__
        for name, obj in items:
            if name in NO_EQUATION:
                continue
            doc = obj.__doc__ or ""
            if not re.search(r"\b(19|20)\d\d\b|et al", doc):
                missing.append(f"{module.__name__}.{name}")
    assert not missing, f"docstrings without a paper reference: {missing}"


@pytest.mark.parametrize("gamma", [1.0, 5.0])
def test_min_snr_loss_equals_hand_computation(gamma):
    """Min-SNR-gamma (Hang et al. 2023): each example's MSE times min(SNR, gamma) / SNR, then the mean."""
    sch = SCHEDULES["cosine"]
    x0 = torch.rand(64, 1, 4, 4, generator=torch.Generator().manual_seed(3)) * 2 - 1
    y = torch.zeros(64, dtype=torch.long)

    def model(x, t, y):
        return 0.5 * x + 0.001 * t.float().view(-1, 1, 1, 1)

    loss = D.diffusion_loss(model, x0, y, sch, generator=torch.Generator().manual_seed(42), min_snr_gamma=gamma)
    g = torch.Generator().manual_seed(42)
    t = torch.randint(0, 1000, (64,), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    ab = sch.alpha_bars[t]
    xt = (ab.view(-1, 1, 1, 1).sqrt() * x0.double() + (1 - ab).view(-1, 1, 1, 1).sqrt() * noise.double()).float()
    per = ((model(xt, t, y).double() - noise.double()) ** 2).flatten(1).mean(1)
    snr = ab / (1 - ab)
    expected = (torch.minimum(snr, torch.tensor(gamma, dtype=torch.float64)) / snr * per).mean()
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    plain = D.diffusion_loss(model, x0, y, sch, generator=torch.Generator().manual_seed(42))
    assert float(loss) < float(plain)  # weights are <= 1, and < 1 on every nearly-clean step drawn
    assert float(t.min()) < 200  # (so some weights were below 1)


def test_min_snr_weight_is_one_at_high_noise():
    """Where SNR <= gamma (all t drawn noisy) the weighted loss is the plain loss."""
    sch = SCHEDULES["linear"]
    x0 = torch.rand(8, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    y = torch.zeros(8, dtype=torch.long)
    model = lambda x, t, y: 0.3 * x  # noqa: E731
    gen = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    high = D.diffusion_loss(model, x0, y, sch, generator=gen(), min_snr_gamma=1e9)
    plain = D.diffusion_loss(model, x0, y, sch, generator=gen())
    assert float(high) == pytest.approx(float(plain), rel=1e-6)


def test_q_posterior_and_predict_x0_take_alpha_bars_or_a_schedule():
    """Lab 01's signatures: the [T] alpha_bars alone determine eqs. 6-7 and the inverse of eq. 4."""
    sch = make_schedule("cosine", 50)
    g = torch.Generator().manual_seed(0)
    x0, xt = torch.randn(4, 1, 3, 3, generator=g), torch.randn(4, 1, 3, 3, generator=g)
    t = torch.tensor([0, 1, 25, 49])
    for a, b in zip(D.q_posterior(x0, xt, t, sch), D.q_posterior(x0, xt, t, sch.alpha_bars)):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(D.predict_x0_from_eps(xt, t, x0, sch), D.predict_x0_from_eps(xt, t, x0, sch.alpha_bars))
    # golden value at t = 1 by hand: beta_1 = 1 - ab_1 / ab_0, mean coefficients and beta_tilde of eqs. 6-7
    ab0, ab1 = float(sch.alpha_bars[0]), float(sch.alpha_bars[1])
    beta = 1 - ab1 / ab0
    one = torch.ones(1, 1, dtype=torch.float64)
    mean, var = D.q_posterior(one, 2 * one, torch.tensor([1]), sch.alpha_bars)
    want = ab0 ** 0.5 * beta / (1 - ab1) + 2 * (1 - beta) ** 0.5 * (1 - ab0) / (1 - ab1)
    assert abs(float(mean) - want) < 1e-12 and abs(float(var) - (1 - ab0) / (1 - ab1) * beta) < 1e-12
