"""The checks behind labs 04-08: the labkit reference passes, plausible wrong answers fail with a message
that names the mistake, the checks agree with labkit's own samplers, and they are fast."""

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from labkit import diffusion, guidance, samplers, schedules
from labkit.checks import lab04_training as c04
from labkit.checks import lab05_sampling as c05
from labkit.checks import lab06_clip as c06
from labkit.checks import lab07_improvements as c07
from labkit.checks import lab08_beyond as c08
from labkit.clip_guidance import ClipGuidance, guided_eps, optimise_for_clip



# An independent copy of Algorithm 2, so that the tests build the answer without the check's reference.

def reference_p_sample_step(x_t, t, eps_hat, betas, alpha_bars, z):
    """The answer (float64): Algorithm 2 of Ho et al. 2020 with sigma_t^2 = beta_tilde_t."""
    x, eps, zz = x_t.double(), eps_hat.double(), z.double()
    betas, ab = betas.double(), alpha_bars.double()
    ab_prev = torch.where(t > 0, ab[(t - 1).clamp(min=0)], torch.ones_like(ab[t]))  # alpha_bar_{t-1}, 1 at t = 0
    var = (1 - ab_prev) / (1 - ab[t]) * betas[t]
    return c05._step(x, t, eps, zz, betas, ab, ab_prev, var)


def _b(v, x):
    return v.view(-1, *([1] * (x.dim() - 1)))


def _raises(check, fn, phrase):
    with pytest.raises(AssertionError, match=phrase):
        check(fn)


# --- lab 05: the ancestral step ------------------------------------------------------------------

def p_sample_ok(x, t, eps, betas, ab, z):
    """What a student writes: Algorithm 2 with sigma^2 = beta_tilde and alpha_bar_{-1} = 1."""
    b, a = _b(betas[t], x), _b(ab[t], x)
    a_prev = _b(torch.where(t > 0, ab[(t - 1).clamp(min=0)], torch.ones_like(ab[t])), x)
    mean = (x - b / (1 - a).sqrt() * eps) / (1 - b).sqrt()
    var = (1 - a_prev) / (1 - a) * b
    return (mean + var.sqrt() * z).float()


def p_sample_via_posterior(x, t, eps, betas, ab, z):
    """The same step written as the posterior q(x_{t-1} | x_t, x0_hat) of eqs. 6-7 at the predicted x0."""
    s = schedules.Schedule("test", betas)
    mean, var = diffusion.posterior_between(diffusion.predict_x0_from_eps(x, t, eps, s), x, t, t - 1, s)
    return mean + var.sqrt() * z


def _ps(var_fn=None, mean_fn=None, prev_fn=None, zero_at_0=True):
    def fn(x, t, eps, betas, ab, z):
        b, a = _b(betas[t], x), _b(ab[t], x)
        a_prev = _b(prev_fn(ab, t) if prev_fn else torch.where(t > 0, ab[(t - 1).clamp(min=0)], torch.ones_like(ab[t])), x)
        mean = mean_fn(x, eps, b, a) if mean_fn else (x - b / (1 - a).sqrt() * eps) / (1 - b).sqrt()
        std = var_fn(b, a, a_prev) if var_fn else ((1 - a_prev) / (1 - a) * b).sqrt()
        if zero_at_0:
            std = torch.where(_b(t, x) == 0, torch.zeros_like(std), std)
        return mean + std * z
    return fn


@pytest.mark.parametrize("fn", [p_sample_ok, p_sample_via_posterior, samplers.p_sample_step])
def test_p_sample_accepts_correct(fn, capsys):
    c05.check_p_sample_step(fn)
    c05.check_p_sample_step(fn, seed=3, sizes=((10, 1, 28, 28),), T=1000)
    assert "passed" in capsys.readouterr().out


@pytest.mark.parametrize("fn, phrase", [
    (_ps(var_fn=lambda b, a, ap: (1 - ap) / (1 - a) * b), "variance was used as the standard deviation"),
    (_ps(prev_fn=lambda ab, t: ab[t - 1], zero_at_0=False), r"alpha_bars\[-1\]"),
    (_ps(prev_fn=lambda ab, t: ab[t]), "off by one"),
    (_ps(var_fn=lambda b, a, ap: b.sqrt()), "sigma_t\\^2 = beta_t"),
    (_ps(var_fn=lambda b, a, ap: b.sqrt(), zero_at_0=False), r"noise at t = 0"),
    (_ps(var_fn=lambda b, a, ap: torch.where(ap == 1, b.sqrt(), ((1 - ap) / (1 - a) * b).sqrt()), zero_at_0=False),
     "noise was added at t = 0"),
    (_ps(var_fn=lambda b, a, ap: 0 * b), "no noise was added"),
    (_ps(mean_fn=lambda x, e, b, a: (x - b / (1 - a).sqrt() * e) / a.sqrt()), "sqrt\\(alpha_bar_t\\) instead"),
    (_ps(mean_fn=lambda x, e, b, a: (x - b / (1 - a) * e) / (1 - b).sqrt()), "lacks its sqrt"),
    (_ps(mean_fn=lambda x, e, b, a: (x + b / (1 - a).sqrt() * e) / (1 - b).sqrt()), "subtracted"),
    (lambda x, t, e, b, ab, z: p_sample_ok(x, t, e, b, ab, torch.randn_like(z)), "drawing new random numbers"),
    (lambda x, t, e, b, ab, z: p_sample_ok(x, t, e, b, ab, z)[:, None], "shape"),
    (lambda x, t, e, b, ab, z: x.sub_(e), "in place"),
])
def test_p_sample_names_mistakes(fn, phrase):
    _raises(c05.check_p_sample_step, fn, phrase)


def test_labkit_p_sample_step_is_algorithm_2():
    """labkit's step (the check's reference) equals this file's own formula and the posterior form."""
    s = schedules.make_schedule("linear", 50)
    x, eps = torch.randn(3, 1, 4, 4, dtype=torch.float64), torch.randn(3, 1, 4, 4, dtype=torch.float64)
    z = torch.randn(x.shape, dtype=torch.float64)
    t = torch.tensor([0, 1, 30])
    out = samplers.p_sample_step(x, t, eps, s.betas, s.alpha_bars, z)
    assert (out - reference_p_sample_step(x, t, eps, s.betas, s.alpha_bars, z)).abs().max() < 1e-9
    assert (out - p_sample_via_posterior(x, t, eps, s.betas, s.alpha_bars, z)).abs().max() < 1e-9


@pytest.mark.parametrize("steps", [50, 7])
def test_sample_ddpm_walks_the_posterior_between_grid_steps(steps):
    """sample_ddpm (p_sample_step on the respaced schedule) = the posterior between visited steps (Nichol &
    Dhariwal 2021, section 4), with the same noise; on the full grid it is Algorithm 2 itself."""
    s = schedules.make_schedule("cosine", 50)
    model = lambda x, t, y: 0.3 * x + t.view(-1, 1, 1, 1).to(x.dtype) / 100  # noqa: E731
    x_T = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    grid = samplers.timestep_grid(s, steps)
    got = samplers.sample_ddpm(model, x_T, None, grid, s, generator=torch.Generator().manual_seed(3))
    g, x = torch.Generator().manual_seed(3), x_T
    for i in range(len(grid)):
        t = grid[i].expand(2)
        t_prev = (grid[i + 1] if i + 1 < len(grid) else torch.tensor(-1)).expand(2)
        x0_hat = diffusion.predict_x0_from_eps(x, t, model(x, t, None), s)
        mean, var = diffusion.posterior_between(x0_hat, x, t, t_prev, s)
        x = mean + var.sqrt() * torch.randn(x.shape, generator=g, dtype=x.dtype) if i + 1 < len(grid) else mean
    assert (got - x).abs().max() < 1e-9


# --- lab 05: the sampling loop (wrong loops, each named: tests/mistake_suite.py) -----------------------

def sample_loop_ok(model, x_T, y, timesteps, betas, alpha_bars, noises):
    """What a student writes: Algorithm 2 around their step (here this file's), k counting down."""
    x = x_T
    for k in reversed(range(len(timesteps))):
        t = torch.full((len(x),), int(timesteps[k]))
        x = p_sample_ok(x, torch.full((len(x),), k), model(x, t, y), betas, alpha_bars, noises[k]).to(x_T.dtype)
    return x


@pytest.mark.parametrize("fn", [samplers.sample_loop, sample_loop_ok])
def test_sample_loop_accepts_correct(fn, capsys):
    c05.check_sample_loop(fn)
    c05.check_sample_loop(fn, seed=4, sizes=((2, 1, 28, 28),), T=100, steps=(None, 3))
    assert capsys.readouterr().out.count("passed") == 2


def test_sample_loop_check_names_a_wrong_step_as_the_cause():
    """A right loop around a wrong step fails, and the message sends the student to the step's check."""
    def loop_with_wrong_step(model, x_T, y, timesteps, betas, alpha_bars, noises):
        x = x_T
        for k in reversed(range(len(timesteps))):
            kk = torch.full((len(x),), k)
            x = (1.01 * p_sample_ok(x, kk, model(x, timesteps[k].expand(len(x)), y), betas, alpha_bars, noises[k]))
        return x.float()
    _raises(c05.check_sample_loop, loop_with_wrong_step, "fix that first")


def test_sampling_model_says_which_input_is_wrong():
    model = c05.SamplingModel(1, 10)
    x, t, y = torch.randn(2, 1, 4, 4), torch.tensor([3, 4]), torch.tensor([1, 10])
    assert model(x, t, y).shape == x.shape
    for bad, phrase in [((x.double(), t, y), "float64"), ((x, 3, y), "t must be an int64 tensor"),
                        ((x, t.float(), y), "shape \\[B\\]"), ((x, t[:1], y), "\\[B\\] = \\[2\\]"),
                        ((x, t + 7, y), "t must be in 0..9"), ((x, t, y + 1), "y must be in 0..10")]:
        with pytest.raises(ValueError, match=phrase):
            model(*bad)


def test_yours_or_labkit_picks_what_passes(capsys):
    assert c05.yours_or_labkit(c05.check_sample_loop, sample_loop_ok, samplers.sample_loop, "loop") is sample_loop_ok
    assert "Using your loop" in capsys.readouterr().out
    stub = lambda *a: (_ for _ in ()).throw(NotImplementedError())  # noqa: E731
    assert c05.yours_or_labkit(c05.check_sample_loop, stub, samplers.sample_loop, "loop") is samplers.sample_loop
    assert capsys.readouterr().out.strip() == "Using labkit's loop: yours does not pass its check yet (see the test cell above)."


# --- lab 07: guidance and fast samplers -------------------------------------------------------------

@pytest.mark.parametrize("fn", [guidance.cfg_combine, lambda c, u, w: c + w * (c - u)])
def test_cfg_accepts_correct(fn):
    c07.check_cfg_combine(fn)
    c07.check_cfg_combine(fn, seed=4, ws=(7.5, 1.0, 0.0))


@pytest.mark.parametrize("fn, phrase", [
    (lambda c, u, w: w * c - (w - 1) * u, "scale' convention"),
    (lambda c, u, w: (1 + w) * u - w * c, "swapped"),
    (lambda c, u, w: w * (c - u), "'1 \\+' is missing"),
    (lambda c, u, w: c - w * (c - u), "wrong sign"),
    (lambda c, u, w: (1 - w) * u + w * c, "interpolation"),
    (lambda c, u, w: (1 + w) * c + w * u, "was added"),
    (lambda c, u, w: ((1 + w) * c - w * u).numpy(), "numpy"),
])
def test_cfg_names_mistakes(fn, phrase):
    _raises(c07.check_cfg_combine, fn, phrase)


def ddim_ok(x, eps, ab_t, ab_prev, eta, z):
    x0 = (x - (1 - ab_t).sqrt() * eps) / ab_t.sqrt()
    sigma = eta * ((1 - ab_prev) / (1 - ab_t)).sqrt() * (1 - ab_t / ab_prev).sqrt()
    return ab_prev.sqrt() * x0 + (1 - ab_prev - sigma ** 2).sqrt() * eps + sigma * z


@pytest.mark.parametrize("fn", [ddim_ok])
def test_ddim_accepts_correct(fn):
    c07.check_ddim_step(fn)
    c07.check_ddim_step(fn, seed=9, etas=(0.3,))


# The named DDIM and DPM-Solver++ mistakes, written as students write them: tests/mistake_suite.py
# (tests/test_mistake_naming.py runs them).


def test_labkit_ddim_step_is_eq_12():
    s = schedules.make_schedule("cosine", 100)
    x, eps = torch.randn(2, 1, 4, 4, dtype=torch.float64), torch.randn(2, 1, 4, 4, dtype=torch.float64)
    t, tp = torch.tensor([80, 40]), torch.tensor([50, -1])
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ab_t, ab_p = _b(s.alpha_bars[t], x), _b(s.alpha_bars_prev[tp + 1], x)
    out = samplers.ddim_step(x, eps, ab_t, ab_p, 0.7, z)
    ref = ddim_ok(x, eps, ab_t, ab_p, 0.7, z)
    assert (out - ref).abs().max() < 1e-9
    assert (out[1] - (x[1] - (1 - ab_t[1]).sqrt() * eps[1]) / ab_t[1].sqrt()).abs().max() < 1e-9  # to clean data: x0_hat


def test_sample_ddim_with_eta_1_on_the_full_grid_is_ddpm():
    """Song et al. 2021, section 4.1: eta = 1 over all T steps is the DDPM ancestral sampler (same noise)."""
    s = schedules.make_schedule("linear", 40)
    model = lambda x, t, y: 0.2 * x - t.view(-1, 1, 1, 1).to(x.dtype) / 200  # noqa: E731
    x_T, grid = torch.randn(3, 1, 4, 4, dtype=torch.float64), samplers.timestep_grid(s, 40)
    ddim = samplers.sample_ddim(model, x_T, None, grid, s, eta=1.0, generator=torch.Generator().manual_seed(2))
    ddpm = samplers.sample_ddpm(model, x_T, None, grid, s, generator=torch.Generator().manual_seed(2))
    assert (ddim - ddpm).abs().max() < 1e-9


def dpmpp_ok(x, d0, d1, ab_t, ab_prev, ab_last):
    lam = lambda a: 0.5 * torch.log(a / (1 - a))  # noqa: E731
    h = lam(ab_prev) - lam(ab_t)
    D = d0
    if d1 is not None:
        r = (lam(ab_t) - lam(ab_last)) / h
        D = (1 + 1 / (2 * r)) * d0 - 1 / (2 * r) * d1
    return ((1 - ab_prev) / (1 - ab_t)).sqrt() * x - ab_prev.sqrt() * (torch.exp(-h) - 1) * D


def test_dpmpp_accepts_correct():
    c07.check_dpmpp_2m_step(dpmpp_ok)
    c07.check_dpmpp_2m_step(dpmpp_ok, seed=2, sizes=((8, 1, 28, 28),))


def test_labkit_dpmpp_2m_step_is_algorithm_2():
    s = schedules.make_schedule("cosine", 100)
    x, d0, d1 = (torch.randn(2, 1, 4, 4, dtype=torch.float64) for _ in range(3))
    ab_t, ab_p, ab_l = (_b(s.alpha_bars[torch.tensor([k, k])], x) for k in (60, 30, 90))
    for prev, last in ((None, None), (d1, ab_l)):
        out = samplers.dpmpp_2m_step(x, d0, prev, ab_t, ab_p, last)
        assert (out - dpmpp_ok(x, d0, prev, ab_t, ab_p, last)).abs().max() < 1e-9


def cfg_eps_two_calls(model, x, t, y, w, null_class):
    return guidance.cfg_combine(model(x, t, y), model(x, t, torch.full_like(y, null_class)), w)


@pytest.mark.parametrize("fn", [guidance.cfg_eps, cfg_eps_two_calls])
def test_cfg_eps_accepts_correct(fn, capsys):
    c07.check_cfg_eps(fn)
    c07.check_cfg_eps(fn, seed=2, ws=(7.5,), classes=(3,))
    assert capsys.readouterr().out.count("passed") == 2


def test_classifier_free_guidance_runs_cfg_eps(monkeypatch):
    """labkit's guided model is cfg_eps around the model: one formula, in one place."""
    model = c05.SamplingModel(1, 10).requires_grad_(False)
    x, t, y = torch.randn(2, 1, 4, 4), torch.tensor([3, 4]), torch.tensor([1, 2])
    assert (guidance.guided(model, 2.0, 10)(x, t, y) - guidance.cfg_eps(model, x, t, y, 2.0, 10)).abs().max() == 0
    monkeypatch.setattr(guidance, "cfg_eps", lambda *a: torch.zeros(2, 1, 4, 4))
    assert guidance.guided(model, 2.0, 10)(x, t, y).abs().max() == 0


def ddim_loop_ok(model, x_T, y, grid, alpha_bars, eta, noises):
    x = x_T
    for i, t in enumerate(grid):
        ab_t = alpha_bars[t]
        ab_prev = alpha_bars[grid[i + 1]] if i + 1 < len(grid) else torch.tensor(1.0, dtype=torch.float64)
        x = ddim_ok(x, model(x, t.repeat(len(x)), y), ab_t, ab_prev, eta, noises[i])
    return x


def dpmpp_2m_loop_ok(model, x_T, y, grid, alpha_bars):
    x, prev, last = x_T, None, None
    for i, t in enumerate(grid.tolist()):
        ab_t = alpha_bars[t].float()
        x0 = (x - (1 - ab_t).sqrt() * model(x, torch.full((len(x),), t), y)) / ab_t.sqrt()
        x = dpmpp_ok(x, x0, prev, ab_t, alpha_bars[grid[i + 1]].float(), last) if i + 1 < len(grid) else x0
        prev, last = x0, ab_t
    return x


@pytest.mark.parametrize("check, fn", [(c07.check_ddim_loop, samplers.ddim_loop), (c07.check_ddim_loop, ddim_loop_ok),
                                       (c07.check_dpmpp_2m_loop, samplers.dpmpp_2m_loop),
                                       (c07.check_dpmpp_2m_loop, dpmpp_2m_loop_ok)])
def test_grid_loops_accept_correct(check, fn, capsys):
    check(fn)
    check(fn, seed=8, sizes=((2, 1, 28, 28),), T=200, steps=(12, 1))
    assert capsys.readouterr().out.count("passed") == 2


def test_grid_loop_grids_start_at_T_minus_1_and_end_at_0():
    g = torch.Generator().manual_seed(0)
    for S, first in ((6, True), (3, False), (1, True)):
        grid = c07.grid_case((2, 1, 4, 4), 40, S, 0, g, first=first)[3]
        assert len(grid) == S and int(grid[-1]) == 0 and bool((grid[:-1] > grid[1:]).all())
        assert (int(grid[0]) == 39) == (first and S > 1)


# --- lab 06: CLIP scores ------------------------------------------------------------------------------

def cos_ok(i, t):
    return F.normalize(i, dim=-1) @ F.normalize(t, dim=-1).T


@pytest.mark.parametrize("fn", [cos_ok, lambda i, t: (i / i.norm(dim=1, keepdim=True)) @ (t / t.norm(dim=1, keepdim=True)).T])
def test_cosine_accepts_correct(fn):
    c06.check_cosine_similarity(fn)
    c06.check_cosine_similarity(fn, seed=1, sizes=((20, 10, 512),))


@pytest.mark.parametrize("fn, phrase", [
    (lambda i, t: i @ t.T, "no normalisation"),
    (lambda i, t: F.normalize(i, dim=-1) @ t.T, "only the image"),
    (lambda i, t: F.normalize(i, dim=0) @ F.normalize(t, dim=0).T, "wrong dimension"),
    (lambda i, t: cos_ok(i, t).T, "transposed"),
    (lambda i, t: cos_ok(i, t).softmax(1), "softmax"),
    (lambda i, t: cos_ok(i, t).numpy(), "numpy"),
    (lambda i, t: i.div_(i.norm(dim=1, keepdim=True)) @ t.T, "in place"),
])
def test_cosine_names_mistakes(fn, phrase):
    _raises(c06.check_cosine_similarity, fn, phrase)


@pytest.mark.parametrize("fn", [lambda c, s: (s * c).softmax(dim=-1), lambda c, s: torch.exp(s * c) / torch.exp(s * c).sum(1, keepdim=True)])
def test_zero_shot_accepts_correct(fn):
    c06.check_zero_shot_probs(fn)


@pytest.mark.parametrize("fn, phrase", [
    (lambda c, s: (s * c).softmax(dim=0), "dim=0"),
    (lambda c, s: c.softmax(dim=1), "logit_scale is missing"),
    (lambda c, s: (c / s).softmax(dim=1), "divided by logit_scale"),
    (lambda c, s: (s * c).log_softmax(dim=1), "log-probabilities"),
    (lambda c, s: torch.sigmoid(s * c), "sigmoid"),
    (lambda c, s: (s * c).softmax(1).argmax(1), "one number per image"),
])
def test_zero_shot_names_mistakes(fn, phrase):
    _raises(c06.check_zero_shot_probs, fn, phrase)


def test_zero_shot_matches_clip_scorer():
    from labkit.evaluation import tiny_clip_scorer
    from labkit.data import synthetic_digits

    scorer = tiny_clip_scorer()
    d = synthetic_digits(6, generator=torch.Generator().manual_seed(0))
    img01 = (d.images + 1) / 2
    scores = scorer.score(img01, d.labels)
    img = scorer.encode_images(img01)
    txt = scorer.ensemble(scorer.prompts.digit)
    probs = (scorer.logit_scale * cos_ok(img, txt)).softmax(1)
    assert (probs - scores.probs).abs().max() < 1e-5


# --- lab 04: loss and training step ------------------------------------------------------------------

def loss_ok(model, x0, y, t, noise, ab):
    a = _b(ab[t], x0).to(x0.dtype)
    return F.mse_loss(model(a.sqrt() * x0 + (1 - a).sqrt() * noise, t, y), noise)


def loss_via_labkit(model, x0, y, t, noise, ab):
    s = schedules.Schedule("s", 1 - ab / torch.cat([torch.ones(1, dtype=ab.dtype), ab[:-1]]))
    return F.mse_loss(model(diffusion.q_sample(x0, t, noise, s), t, y), noise)


@pytest.mark.parametrize("fn", [loss_ok, loss_via_labkit])
def test_loss_accepts_correct(fn):
    c04.check_noise_prediction_loss(fn)
    c04.check_noise_prediction_loss(fn, seed=7, sizes=((2, 1, 28, 28),))


def _loss(xt_fn=None, target=None, reduce=None, model_input=None):
    def fn(model, x0, y, t, noise, ab):
        a = _b(ab[t], x0).to(x0.dtype)
        xt = xt_fn(a, x0, noise) if xt_fn else a.sqrt() * x0 + (1 - a).sqrt() * noise
        eps = model(model_input(x0, xt) if model_input else xt, t, y)
        tgt = target(x0, xt, noise) if target else noise
        return reduce(eps, tgt) if reduce else F.mse_loss(eps, tgt)
    return fn


@pytest.mark.parametrize("fn, phrase", [
    (_loss(model_input=lambda x0, xt: x0), "model was given x0"),
    (_loss(target=lambda x0, xt, n: x0), "target is x0"),
    (_loss(target=lambda x0, xt, n: xt), "target is x_t"),
    (_loss(xt_fn=lambda a, x0, n: a * x0 + (1 - a) * n), "variances"),
    (_loss(reduce=lambda e, n: F.mse_loss(e, n, reduction="sum")), "a sum instead of a mean"),
    (_loss(reduce=lambda e, n: ((e - n) ** 2).flatten(1).sum(1).mean()), "summed over pixels"),
    (_loss(reduce=lambda e, n: (e - n).abs().mean()), "L1"),
    (_loss(reduce=lambda e, n: ((e - n) ** 2).flatten(1).mean(1)), "single number"),
    (_loss(reduce=lambda e, n: F.mse_loss(e, n).item()), "Python float"),
    (_loss(reduce=lambda e, n: F.mse_loss(e, n).detach()), "no gradient"),
])
def test_loss_names_mistakes(fn, phrase):
    _raises(c04.check_noise_prediction_loss, fn, phrase)


def step_ok(model, optimizer, compute_loss):
    optimizer.zero_grad()
    loss = compute_loss()
    loss.backward()
    optimizer.step()
    return loss.item()


def step_no_zero(model, optimizer, compute_loss):
    loss = compute_loss()
    loss.backward()
    optimizer.step()
    return loss.item()


def step_zero_after_backward(model, optimizer, compute_loss):
    loss = compute_loss()
    loss.backward()
    optimizer.zero_grad()
    optimizer.step()
    return loss.item()


def step_before_backward(model, optimizer, compute_loss):
    loss = compute_loss()
    optimizer.step()
    optimizer.zero_grad()
    loss.backward()
    return loss.item()


def step_twice(model, optimizer, compute_loss):
    optimizer.zero_grad()
    loss = compute_loss()
    loss.backward()
    optimizer.step()
    optimizer.step()
    return loss.item()


def step_loss_twice(model, optimizer, compute_loss):
    optimizer.zero_grad()
    compute_loss().backward()
    optimizer.step()
    return compute_loss().item()


def step_no_return(model, optimizer, compute_loss):
    step_ok(model, optimizer, compute_loss)


def step_no_step(model, optimizer, compute_loss):
    optimizer.zero_grad()
    loss = compute_loss()
    loss.backward()
    return loss.item()


@pytest.mark.parametrize("fn", [step_ok, lambda m, o, c: torch.tensor(step_ok(m, o, c))])
def test_train_step_accepts_correct(fn):
    c04.check_train_step(fn)
    c04.check_train_step(fn, seed=5, lr=0.01)


@pytest.mark.parametrize("fn, phrase", [
    (step_no_zero, "zero_grad"),
    (step_zero_after_backward, "did not move"),
    (step_no_step, "did not move"),
    (step_before_backward, "before loss.backward"),
    (step_twice, "called twice"),
    (step_loss_twice, "called 2 times"),
    (step_no_return, "return the loss"),
])
def test_train_step_names_mistakes(fn, phrase):
    _raises(c04.check_train_step, fn, phrase)


# --- lab 04: label dropout, EMA, the training loop ------------------------------------------------------

def test_new_lab04_checks_accept_labkit():
    from labkit import training

    c04.check_drop_labels(training.drop_labels)
    c04.check_drop_labels(training.drop_labels, seed=2, sizes=(3,), p=0.9)
    c04.check_ema_update(training.ema_update)
    c04.check_ema_update(training.ema_update, seed=1, decay=0.5)
    c04.check_train_loop(training.train_loop)
    c04.check_train_loop(training.train_loop, seed=2, shape=(2, 4, 6), first_step=30, p=0.0, steps=2)


@pytest.mark.parametrize("exercise", ["drop_labels", "ema_update", "train_loop"])
def test_new_lab04_checks_name_the_suites_mistakes(exercise):
    """Every wrong answer of tests/mistake_suite.py fails with its phrase (also run by test_mistake_naming)."""
    import re

    import mistake_suite

    for label, fn, phrase in mistake_suite.SUITE[("lab04_training", exercise)]:
        text = mistake_suite.message("lab04_training", exercise, fn)
        assert text is not None and re.search(phrase, text), f"{label}: {text}"


def test_check_side_loop_is_labkits_train_loop():
    """The check's own loop (used for its named mistakes) without a mistake is labkit.training.train_loop."""
    from labkit import training

    for seed, first in ((0, 0), (1, 12)):
        setup = c04._LoopSetup(seed, (2, 6, 6), 20, 30)
        data = (setup.images, setup.labels, setup.alpha_bars)
        m1, e1, o1 = setup.fresh()
        l1 = training.train_loop(m1, e1, o1, *data, 5, 4, c04.generator(seed), 0.4, 0.9, first)
        m2, e2, o2 = setup.fresh()
        l2 = c04._loop(m2, e2, o2, *data, 5, 4, c04.generator(seed), 0.4, 0.9, first)
        assert c04.max_abs_diff(c04._state(m1, e1), c04._state(m2, e2)) < 1e-6
        assert max(abs(a - b) for a, b in zip(l1, l2)) < 1e-6
        m3, e3, o3 = setup.fresh()  # the draws are all there is to it: same generator state, same numbers
        training.train_loop(m3, e3, o3, *data, 5, 4, c04.generator(seed), 0.4, 0.9, first)
        assert torch.equal(c04._state(m1, e1), c04._state(m3, e3))


def test_every_loop_mistake_is_far_from_the_reference():
    """Each named loop mistake moves the weights by much more than the pass tolerance (so none passes)."""
    from labkit import training

    setup = c04._LoopSetup(0, (1, 8, 8), 20, 40)
    data = (setup.images, setup.labels, setup.alpha_bars)
    m, e, o = setup.fresh()
    training.train_loop(m, e, o, *data, 4, 6, c04.generator(0), 0.3, 0.9, 0)
    ref = c04._state(m, e)
    for mistake in c04.LOOP_MISTAKES:
        if mistake in ("t_to_T", "ema_first_step_ignored"):  # crashes on these inputs / needs first_step > 0
            continue
        wm, we, wo = setup.fresh()
        c04._loop(wm, we, wo, *data, 4, 6, c04.generator(0), 0.3, 0.9, 0, mistake=mistake)
        assert c04.max_abs_diff(c04._state(wm, we), ref) > 1e-3, mistake


def test_loop_to_use_falls_back_to_labkits_loop():
    from labkit import training

    def stub(*args):
        raise NotImplementedError()

    assert c04.loop_to_use(stub)[0] is training.train_loop
    assert c04.loop_to_use(training.train_loop)[1] == "your train_loop"


# --- lab 08: CLIP guidance -----------------------------------------------------------------------------

def test_guided_eps_accepts_reference():
    c08.check_guided_eps(guided_eps)


@pytest.mark.parametrize("fn, phrase", [
    (lambda e, g, a, s: e + s * (1 - a).sqrt() * g, "added"),
    (lambda e, g, a, s: e - s * g, "sqrt\\(1 - alpha_bar_t\\) is missing"),
    (lambda e, g, a, s: e - s * a.sqrt() * g, "sqrt\\(alpha_bar_t\\) was used"),
    (lambda e, g, a, s: e - s * (1 - a) * g, "without the sqrt"),
])
def test_guided_eps_names_mistakes(fn, phrase):
    _raises(c08.check_guided_eps, fn, phrase)


def test_clip_guidance_wrapper_pushes_clip_score_up():
    from labkit.evaluation import tiny_clip_scorer

    scorer = tiny_clip_scorer()
    s = schedules.make_schedule("cosine", 100)
    model = lambda x, t, y: torch.zeros_like(x)  # noqa: E731
    g = ClipGuidance(model, scorer, s, scale=1.0)
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    t, y = torch.tensor([10, 50, 90]), torch.tensor([1, 2, 10])
    eps = g(x, t, y)
    assert eps.shape == x.shape and torch.isfinite(eps).all()
    assert eps[2].abs().max() == 0  # the null class is not guided
    # a small step along -eps (towards the data) raises CLIP's logit for the guided rows
    ab = _b(s.alpha_bars[t], x).float()
    before = g.clip_logits((x / ab.sqrt() + 1) / 2, g.text_embeddings(y))
    x_new = x - 1e-3 * eps
    after = g.clip_logits((x_new / ab.sqrt() + 1) / 2, g.text_embeddings(y))
    assert bool((after[:2] > before[:2]).all())
    # a whole sampling loop runs with it, and scale=0 is the model itself
    out = samplers.sample(ClipGuidance(model, scorer, s, scale=0.5), (2, 1, 28, 28), torch.tensor([3, 4]), s, steps=3,
                          generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 1, 28, 28)
    assert ClipGuidance(model, scorer, s, scale=0.0)(x, t, y).abs().max() == 0


def test_optimise_for_clip_raises_the_score():
    from labkit.evaluation import tiny_clip_scorer

    scorer = tiny_clip_scorer()
    start = torch.full((2, 1, 28, 28), 0.5)
    _, before, after = optimise_for_clip(scorer, start, torch.tensor([3, 7]), steps=5)
    assert bool((after > before).all())


def test_new_lab08_checks_accept_labkits_functions(capsys):
    c08.check_classifier_grad(guidance.classifier_grad)
    c08.check_classifier_guided_loop(samplers.classifier_guided_loop)
    assert capsys.readouterr().out.count("passed") == 2


def test_guided_loop_check_names_a_plain_loop():
    def plain(model, classifier, x_T, y, scale, timesteps, betas, alpha_bars, noises):
        return samplers.sample_loop(model, x_T, y, timesteps, betas, alpha_bars, noises)

    _raises(c08.check_classifier_guided_loop, plain, "no guidance")


def test_classifier_grad_check_names_the_logit_gradient():
    def logit(classifier, x_t, t, y):
        x = x_t.detach().requires_grad_(True)
        return torch.autograd.grad(classifier(x, t)[torch.arange(len(y)), y].sum(), x)[0]

    _raises(c08.check_classifier_grad, logit, "logit of class y")


@pytest.mark.parametrize("check", [c08.check_classifier_grad, c08.check_classifier_guided_loop])
def test_new_lab08_checks_fail_stubs_and_patched_allclose(check, monkeypatch):
    with pytest.raises(AssertionError, match="not implemented yet"):
        check(lambda *a: (_ for _ in ()).throw(NotImplementedError()))
    monkeypatch.setattr(torch, "allclose", lambda *a, **k: True)
    with pytest.raises(AssertionError):
        check(lambda *a: torch.zeros_like(next(v for v in a if isinstance(v, torch.Tensor) and v.dim() >= 2)) + 0.1)


# --- all checks: stubs, patched allclose, speed ---------------------------------------------------------

ALL = [
    (c04.check_noise_prediction_loss, loss_ok), (c04.check_train_step, step_ok),
    (c05.check_p_sample_step, p_sample_ok), (c06.check_cosine_similarity, cos_ok),
    (c06.check_zero_shot_probs, lambda c, s: (s * c).softmax(1)), (c07.check_cfg_combine, guidance.cfg_combine),
    (c07.check_ddim_step, ddim_ok), (c07.check_dpmpp_2m_step, dpmpp_ok), (c08.check_guided_eps, guided_eps),
    (c04.check_drop_labels, __import__("labkit.training").training.drop_labels),
    (c04.check_ema_update, __import__("labkit.training").training.ema_update),
    (c04.check_train_loop, __import__("labkit.training").training.train_loop),
    (c05.check_sample_loop, sample_loop_ok), (c07.check_cfg_eps, cfg_eps_two_calls),
    (c07.check_ddim_loop, ddim_loop_ok), (c07.check_dpmpp_2m_loop, dpmpp_2m_loop_ok),
    (c06.check_feature_stats, __import__("labkit.evaluation.fid").evaluation.fid.feature_stats),
    (c06.check_frechet_distance, __import__("labkit.evaluation.fid").evaluation.fid.frechet_distance),
    (c06.check_bootstrap_interval, __import__("labkit.evaluation.fid").evaluation.fid.bootstrap_interval),
    # labs 05 and 06, the exercises added together
    (c05.check_respaced, samplers.respaced), (c05.check_sigma_squared, samplers.sigma_squared),
    (c05.check_total_variation, __import__("labkit.evaluation.measures").evaluation.measures.total_variation),
    (c05.check_t_from, __import__("labkit.evaluation.measures").evaluation.measures.t_from),
    (c06.check_clip_preprocess, __import__("labkit.evaluation.clip").evaluation.clip.clip_preprocess),
    (c06.check_prompt_ensemble, __import__("labkit.evaluation.clip").evaluation.clip.prompt_ensemble),
    (c06.check_clear_probability, __import__("labkit.evaluation.clip").evaluation.clip.clear_probability),
    (c06.check_clip_score, __import__("labkit.evaluation.clip").evaluation.clip.clip_score),
    (c06.check_confusion_matrix, __import__("labkit.evaluation.measures").evaluation.measures.confusion_matrix),
    (c06.check_pearson_r, __import__("labkit.evaluation.measures").evaluation.measures.pearson_r),
]


@pytest.mark.parametrize("check", [c for c, _ in ALL], ids=[c.__name__ for c, _ in ALL])
def test_not_implemented_is_a_clear_failure(check):
    def stub(*args):
        raise NotImplementedError()

    with pytest.raises(AssertionError, match="not implemented yet"):
        check(stub)


@pytest.mark.parametrize("check", [c for c, _ in ALL], ids=[c.__name__ for c, _ in ALL])
def test_patched_allclose_does_not_fool_the_checks(check, monkeypatch):
    monkeypatch.setattr(torch, "allclose", lambda *a, **k: True)
    monkeypatch.setattr(np, "allclose", lambda *a, **k: True)
    monkeypatch.setattr(torch, "isclose", lambda a, b, **k: torch.ones_like(a, dtype=torch.bool))

    def wrong(*args):
        for a in args:
            if isinstance(a, torch.Tensor) and a.is_floating_point() and a.dim() >= 2:
                return torch.zeros_like(a) + 0.123
        return 0.123

    with pytest.raises(AssertionError):
        check(wrong)


@pytest.mark.parametrize("check, fn", ALL, ids=[c.__name__ for c, _ in ALL])
def test_checks_are_fast(check, fn):
    start = time.perf_counter()
    check(fn)
    assert time.perf_counter() - start < 1.0


# --- labs 04-08 end to end through nbgrader (solution = full marks, untouched release = zero) -----------

LABS_0408 = [lab for lab in __import__("labkit.course", fromlist=["discover_labs"]).discover_labs(
    __import__("pathlib").Path(__file__).resolve().parents[1]) if lab[:5] in ("lab04", "lab05", "lab06", "lab07", "lab08")]


@pytest.fixture(scope="module")
def graded_0408(tmp_path_factory):
    from conftest import copy_solution_and_release, grade_folder

    tmp = tmp_path_factory.mktemp("grading0408")
    copy_solution_and_release(tmp / "subs", LABS_0408)
    results = grade_folder(tmp / "subs", tmp / "out", LABS_0408, timeout=300, verbose=False)
    return {(r.student, r.lab): r for r in results}, tmp / "out"


def _autograded_0408(out, student, lab):
    """The autograded notebook, wherever grade_submissions keeps its nbgrader course(s)."""
    import nbformat

    found = sorted(out.glob(f"nbgrader/**/autograded/{student}/{lab}/{lab}.ipynb"))
    assert found, f"no autograded notebook for {student}/{lab} under {out}"
    return nbformat.read(str(found[0]), as_version=4)


def _nb_errors(cell):
    return [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]


@pytest.mark.nbgrader
@pytest.mark.slow
@pytest.mark.parametrize("lab", LABS_0408)
def test_lab_solution_full_marks_and_blank_zero(graded_0408, lab):
    results, out = graded_0408
    sol, blank = results[("solution", lab)], results[("blank", lab)]
    assert sol.status == "graded" and sol.max_score > 0 and sol.score == sol.max_score, sol.notes
    assert blank.status == "graded" and blank.score == 0, blank.notes
    nb = _autograded_0408(out, "solution", lab)
    assert [(i, e["evalue"][:200]) for i, c in enumerate(nb.cells) for e in _nb_errors(c)] == []
    nb = _autograded_0408(out, "blank", lab)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        if cell.metadata.get("nbgrader", {}).get("grade"):
            assert _nb_errors(cell) and "not implemented yet" in _nb_errors(cell)[0]["evalue"], f"test cell {i}"
        else:
            assert not _nb_errors(cell), f"cell {i} crashed in the untouched notebook: {_nb_errors(cell)[0]['evalue'][:200]}"
    html = (out / "feedback" / "blank" / f"{lab}.html").read_text()
    assert "HIDDEN TESTS" not in html


@pytest.mark.nbgrader
@pytest.mark.slow
@pytest.mark.parametrize("lab", LABS_0408)
def test_lab_outputs_hold_no_stray_reprs(graded_0408, lab):
    """No cell prints ``<matplotlib.legend.Legend at 0x...>`` and the like (fast mode, solution and untouched)."""
    from test_notebook_hygiene import stray_reprs

    _, out = graded_0408
    assert stray_reprs(_autograded_0408(out, "solution", lab)) == []
    assert stray_reprs(_autograded_0408(out, "blank", lab), skip_test_cells=True) == []
