"""Checks for lab 07 (improvements). References: ``labkit.guidance.cfg_combine``, ``labkit.samplers.ddim_step``
and ``labkit.samplers.dpmpp_2m_step`` (the steps of ``sample_ddim`` and ``sample_dpmpp_2m``), in float64. Each
known mistake is the library's own step on perturbed inputs (eta squared, x0_hat scaled, two arguments
swapped...) or the step plus the one term that differs: the formulas live once, in ``labkit.samplers``.

    check_cfg_combine(cfg_combine)      (1 + w) eps_cond - w eps_uncond          Ho & Salimans 2022, eq. 6
    check_ddim_sigma(ddim_sigma)        the noise scale of a DDIM step           Song et al. 2021, eq. 16
    check_ddim_step(ddim_step)          DDIM update with eta                     Song et al. 2021, eqs. 12 and 16
    check_dpmpp_2m_step(dpmpp_2m_step)  DPM-Solver++(2M), data prediction        Lu et al. 2022, Algorithm 2

    check_cfg_eps(cfg_eps)              guidance around a model: cfg_combine(model(x,t,y), model(x,t,null), w)
    check_ddim_loop(ddim_loop)          DDIM down a grid of time steps, on given noise
    check_dpmpp_2m_loop(dpmpp_2m_loop)  DPM-Solver++(2M) down a grid, carrying the previous x0_hat

    check_spaced_timesteps(spaced_timesteps)    the "linspace" / "leading" / "trailing" grids, Lin et al. 2024, table 2
    check_enforce_zero_terminal_snr(enforce_zero_terminal_snr)
                                                betas rescaled to SNR 0 at T-1, Lin et al. 2024, Algorithm 1
    check_dynamic_threshold(dynamic_threshold)  Imagen's dynamic thresholding of x0_hat, Saharia et al. 2022, sec. 2.3
    check_fewest_evaluations(fewest_evaluations)  each sampler's fewest NFE within a margin of its best (the knee)

For the two steps, alpha_bar values arrive per image, already shaped [B, 1, 1, 1] (float64), so that
they broadcast against x; ``alpha_bar_prev = 1`` means the step to clean data. The loops get the whole
schedule alpha_bars [T] and a descending grid of time steps, and run on lab 05's ``SamplingModel``.
"""

from __future__ import annotations

import copy
import math

import torch

from labkit import guidance, samplers, schedules
from labkit.evaluation import measures
from labkit.checks._common import (
    call,
    compare,
    deterministic,
    expect_tensor,
    fail,
    generator,
    passed,
    spread_steps,
    yours_or_labkit,  # noqa: F401  (the lab's cells: the student's function if it passes, else labkit's)
)
from labkit.checks.fixtures import DigitJudge, lab_model, trained_model  # noqa: F401  (the lab's model and judge)
from labkit.checks.lab05_sampling import SamplingModel, compare_loop

# --- classifier-free guidance ----------------------------------------------------------------------


def check_cfg_combine(student_fn, *, seed: int = 0, sizes=((3, 1, 8, 8), (2, 1, 28, 28)), ws=(3.0, 0.5, 0.0)) -> None:
    """student_fn(eps_cond [B,C,H,W], eps_uncond [B,C,H,W], w: float) -> guided eps [B,C,H,W]."""
    name = "check_cfg_combine"
    g = generator(seed)
    for shape in sizes:
        shape = tuple(int(s) for s in shape)
        for w in ws:
            c = torch.randn(shape, generator=g)
            u = torch.randn(shape, generator=g)
            out = expect_tensor(name, call(name, student_fn, c, u, float(w), names=["eps_cond", "eps_uncond"]), shape)
            cd, ud = c.double(), u.double()
            ref = guidance.cfg_combine(cd, ud, float(w))
            mistakes = {
                "the 'scale' convention s * eps_cond - (s - 1) * eps_uncond with s = w (the same as the "
                "interpolation (1 - w) eps_uncond + w eps_cond): in this lab (and in the paper's eq. 6) w = 0 is "
                "the plain conditional model, so use (1 + w) eps_cond - w eps_uncond": w * cd - (w - 1) * ud,
                "conditional and unconditional swapped: (1 + w) multiplies eps_cond": (1 + w) * ud - w * cd,
                "the '1 +' is missing: w * eps_cond - w * eps_uncond is only the guidance direction": w * (cd - ud),
                "the guidance direction has the wrong sign: eps_cond + w * (eps_cond - eps_uncond)": cd - w * (cd - ud),
                "eps_uncond was added: (1 + w) eps_cond - w eps_uncond subtracts it": (1 + w) * cd + w * ud,
                "the unconditional term is missing: guidance moves away from eps_uncond, by w times it": (1 + w) * cd,
                "eps_cond plus w times eps_uncond: guidance adds w times the *difference* eps_cond - eps_uncond": cd
                + w * ud,
                "the guidance direction without the conditional prediction itself: eps_cond + w (eps_cond - "
                "eps_uncond) keeps eps_cond": cd - w * ud,
                "operator precedence: 1 + w * eps_cond - w * eps_uncond adds the number 1; (1 + w) multiplies "
                "eps_cond": 1 + w * cd - w * ud,
                "an average of the two predictions: guidance extrapolates past eps_cond, it does not interpolate": (
                    cd + ud
                )
                / 2
                if w != 0
                else None,
            }
            compare(
                name,
                out,
                ref,
                mistakes,
                tol=1e-5,
                context=f" for w={w:g}, shape {list(shape)}",
                reference=guidance.cfg_combine,
                args=(c, u, float(w)),
            )
    passed(name, f"w in {list(ws)}, seed {seed}")


# --- DDIM --------------------------------------------------------------------------------------------


def _alpha_bar_pairs(B: int, g: torch.Generator, nd: int):
    """alpha_bar_t < alpha_bar_prev per image, [B, 1, 1, 1] float64; image 0 steps to clean data (prev = 1)."""
    ab_t = 0.02 + 0.9 * torch.rand(B, generator=g, dtype=torch.float64)
    ab_prev = ab_t + (1 - ab_t) * (0.1 + 0.8 * torch.rand(B, generator=g, dtype=torch.float64))
    ab_prev[0] = 1.0
    shape = (B,) + (1,) * (nd - 1)
    return ab_t.view(shape), ab_prev.view(shape)


def check_ddim_sigma(student_fn, *, seed: int = 0, sizes=((6, 1, 1, 1), (3, 1, 1, 1)), etas=(0.0, 0.5, 1.0)) -> None:
    """student_fn(alpha_bar_t [B,1,1,1], alpha_bar_prev [B,1,1,1], eta: float) -> sigma [B,1,1,1]: the noise scale
    of a DDIM step, eta * sqrt((1 - abar_prev) / (1 - abar_t)) * sqrt(1 - abar_t / abar_prev) (Song et al. 2021,
    eq. 16). Image 0 of each batch steps to clean data (abar_prev = 1, sigma = 0)."""
    name = "check_ddim_sigma"
    g = generator(seed)
    for shape in sizes:
        shape = tuple(int(v) for v in shape)
        for eta in etas:
            ab_t, ab_prev = _alpha_bar_pairs(shape[0], g, len(shape))
            args = (ab_t, ab_prev, float(eta))
            out = call(name, student_fn, *args, names=["alpha_bar_t", "alpha_bar_prev", "eta"])
            out = expect_tensor(name, out, shape, what=f"sigma for eta={eta:g}")
            ref = samplers.ddim_sigma(*args)
            one = samplers.ddim_sigma(ab_t, ab_prev, 1.0)  # eta = 1: DDPM's posterior standard deviation
            mistakes = {
                "sigma ignores eta: it is eta times the square roots": one,
                "eta was squared: sigma = eta * sqrt(...) (eta^2 scales the variance, not the std)": float(eta) ** 2
                * one,
                "a variance where the standard deviation belongs: both square roots are missing": float(eta) * one**2,
                "the first ratio is inverted: sqrt((1 - abar_prev) / (1 - abar_t))": float(eta)
                * ((1 - ab_t) / (1 - ab_prev).clamp(min=1e-300)).sqrt()
                * (1 - ab_t / ab_prev).sqrt(),
                "the second factor is sqrt(1 - abar_t / abar_prev) (the later alpha_bar over the earlier)": float(eta)
                * ((1 - ab_prev) / (1 - ab_t)).sqrt()
                * (1 - ab_prev / ab_t).abs().sqrt(),
                "the second factor is missing: sigma = eta * sqrt((1 - abar_prev) / (1 - abar_t)) * sqrt(1 - abar_t "
                "/ abar_prev)": float(eta) * ((1 - ab_prev) / (1 - ab_t)).sqrt(),
            }
            compare(
                name,
                out,
                ref,
                mistakes,
                tol=1e-6,  # a few float32 steps on values up to 1
                context=f" for eta={eta:g}",
                reference=samplers.ddim_sigma,
                args=args,
            )
    passed(name, f"eta in {list(etas)}, seed {seed}")


def check_ddim_step(student_fn, *, seed: int = 0, sizes=((4, 1, 8, 8), (3, 2, 5, 7)), etas=(0.0, 0.5, 1.0)) -> None:
    """student_fn(x_t, eps_hat, alpha_bar_t, alpha_bar_prev, eta, z) -> x_prev, all tensors [B,C,H,W] except
    alpha_bar_* [B,1,1,1] float64 and eta a float (DDIM, Song et al. 2021, eqs. 12 and 16)."""
    name = "check_ddim_step"
    g = generator(seed)
    for shape in sizes:
        shape = tuple(int(s) for s in shape)
        for eta in etas:
            ab_t, ab_prev = _alpha_bar_pairs(shape[0], g, len(shape))
            x = torch.randn(shape, generator=g)
            eps = torch.randn(shape, generator=g)
            z = torch.randn(shape, generator=g)
            args = (x, eps, ab_t, ab_prev, float(eta), z)
            out = expect_tensor(
                name,
                call(name, student_fn, *args, names=["x_t", "eps_hat", "alpha_bar_t", "alpha_bar_prev", "eta", "z"]),
                shape,
            )
            xd, ed, zd = x.double(), eps.double(), z.double()

            def D(**change):  # labkit's DDIM step, with some of its inputs changed
                kw = dict(x_t=xd, eps_hat=ed, alpha_bar_t=ab_t, alpha_bar_prev=ab_prev, eta=float(eta), z=zd)
                return samplers.ddim_step(**{**kw, **change})

            ref = D()
            noise = ref - D(z=torch.zeros_like(zd))  # sigma * z
            x0_hat = D(alpha_bar_prev=torch.ones_like(ab_prev), eta=0.0)  # the step to clean data is x0_hat
            sigma = samplers.ddim_sigma(ab_t, ab_prev, float(eta))
            c_dir = (1 - ab_prev - sigma**2).clamp(min=0)  # the direction's variance
            mistakes = {
                "the noise term sigma * z is missing (for eta > 0 DDIM adds fresh noise)": D(z=torch.zeros_like(zd)),
                "sigma ignores eta: sigma = eta * sqrt((1 - abar_prev)/(1 - abar_t)) * sqrt(1 - abar_t/abar_prev)": D(
                    eta=1.0
                ),
                "sigma was squared (a variance where the standard deviation belongs): the noise is sigma * z": D(
                    eta=float(eta) * samplers.ddim_sigma(ab_t, ab_prev, 1.0)
                ),
                "eta was squared: sigma = eta * sqrt(...) (eta^2 scales the variance, not the std)": D(
                    eta=float(eta) ** 2
                ),
                "the 'direction pointing to x_t' forgets sigma: its coefficient is sqrt(1 - abar_prev - sigma^2)": D(
                    eta=0.0
                )
                + noise,
                "the 'direction pointing to x_t' uses abar_t; it is scaled by sqrt(1 - abar_prev - sigma^2)": ref
                + ((1 - ab_t).sqrt() - c_dir.sqrt()) * ed,
                "the direction coefficient lacks its sqrt: sqrt(1 - abar_prev - sigma^2) * eps_hat": ref
                + (c_dir - c_dir.sqrt()) * ed,
                "x0_hat uses variances: x0_hat = (x_t - sqrt(1 - abar_t) eps_hat) / sqrt(abar_t)": ref
                + ab_prev.sqrt() * ((xd - (1 - ab_t) * ed) / ab_t - x0_hat),
                "x0_hat is not scaled by sqrt(abar_prev): the predicted x0 enters x_prev as sqrt(abar_prev) x0_hat": ref
                + (1 - ab_prev.sqrt()) * x0_hat,
                "the direction term is eps_hat itself: it is scaled by sqrt(1 - abar_prev - sigma^2)": ref
                + (1 - c_dir.sqrt()) * ed,
                "x0_hat divides by abar_t without the sqrt: x0_hat = (x_t - sqrt(1 - abar_t) eps_hat) / sqrt(abar_t)": ref
                + ab_prev.sqrt() * (x0_hat * ab_t.sqrt() / ab_t - x0_hat),
                "x0_hat multiplies by sqrt(abar_t); it divides: x0_hat = (x_t - sqrt(1 - abar_t) eps_hat) / sqrt(abar_t)": ref
                + ab_prev.sqrt() * (x0_hat * ab_t - x0_hat),
                "sigma is not squared in the direction: its coefficient is sqrt(1 - abar_prev - sigma^2)": ref
                + ((1 - ab_prev - sigma).clamp(min=0).sqrt() - c_dir.sqrt()) * ed,
            }
            context = f" for eta={eta:g}, shape {list(shape)}"
            try:
                compare(name, out, ref, mistakes, tol=1e-4, context=context, reference=samplers.ddim_step, args=args)
            except AssertionError:
                deterministic(name, student_fn, args, out)
                raise
    passed(name, f"eta in {list(etas)}, seed {seed}")


# --- DPM-Solver++(2M) --------------------------------------------------------------------------------


def _lam(ab):
    return 0.5 * torch.log(schedules.snr(ab))  # DPM-Solver's lambda = log(alpha / sigma), half the log-SNR


def check_dpmpp_2m_step(student_fn, *, seed: int = 0, sizes=((4, 1, 8, 8), (2, 3, 4, 4))) -> None:
    """student_fn(x_t, x0_hat, x0_prev, alpha_bar_t, alpha_bar_prev, alpha_bar_last) -> x_prev.

    x0_prev / alpha_bar_last: the previous step's x0_hat and its alpha_bar, or None on the first step
    (then the update is first order, D = x0_hat). All alpha_bar_* are [B,1,1,1] float64 in (0, 1), with
    alpha_bar_last < alpha_bar_t < alpha_bar_prev (noise decreases step by step)."""
    name = "check_dpmpp_2m_step"
    g = generator(seed)
    for shape in sizes:
        shape = tuple(int(s) for s in shape)
        B, sh = shape[0], (shape[0],) + (1,) * (len(shape) - 1)
        lam = torch.sort(-3 + 6 * torch.rand(B, 3, generator=g, dtype=torch.float64), dim=1).values  # last < t < prev
        lam = lam + torch.tensor([-0.3, 0.0, 0.3], dtype=torch.float64)  # keep the steps apart
        ab_last, ab_t, ab_prev = (torch.sigmoid(2 * lam[:, k]).view(sh) for k in range(3))  # lambda -> alpha_bar
        x = torch.randn(shape, generator=g)
        d0 = torch.randn(shape, generator=g)
        d1 = torch.randn(shape, generator=g)
        for first in (True, False):
            args = (x, d0, None, ab_t, ab_prev, None) if first else (x, d0, d1, ab_t, ab_prev, ab_last)
            out = expect_tensor(
                name,
                call(
                    name,
                    student_fn,
                    *args,
                    names=["x_t", "x0_hat", "x0_prev", "alpha_bar_t", "alpha_bar_prev", "alpha_bar_last"],
                ),
                shape,
            )
            xd, d0d, d1d = x.double(), d0.double(), (None if first else d1.double())

            def S(x_t=xd, x0_hat=d0d, x0_prev=d1d, alpha_bar_last=None if first else ab_last):
                """labkit's step with some of its inputs changed (the step is linear in x_t and in D)."""
                return samplers.dpmpp_2m_step(x_t, x0_hat, x0_prev, ab_t, ab_prev, alpha_bar_last)

            def scaled_D(k):  # the same step with D scaled by k per image (both x0 estimates scaled)
                return S(x0_hat=k * d0d, x0_prev=None if first else k * d1d)

            ref = S()
            h = _lam(ab_prev) - _lam(ab_t)
            sig_t, sig_p = (1 - ab_t).sqrt(), (1 - ab_prev).sqrt()
            mistakes = {
                "exp(-h) - 1 has the wrong sign in the exponent: the factor is (e^{-h} - 1) with "
                "h = lambda_prev - lambda_t > 0": scaled_D(torch.expm1(h) / torch.expm1(-h)),
                "the x_t coefficient is inverted: sigma_prev / sigma_t (it shrinks the noise)": S(
                    x_t=xd * (sig_t / sig_p) ** 2
                ),
                "the D term is scaled by sigma_prev; in the data-prediction form it is alpha_prev = sqrt(abar_prev)": scaled_D(
                    sig_p / ab_prev.sqrt()
                ),
                "the D term has the wrong sign: x_prev = (sigma_prev/sigma_t) x_t - alpha_prev (e^{-h} - 1) D": scaled_D(
                    -torch.ones_like(h)
                ),
                "lambda is the full log-SNR; DPM-Solver's lambda = log(alpha / sigma) is half of it": scaled_D(
                    torch.expm1(-2 * h) / torch.expm1(-h)
                ),
                "e^{-h} where the factor is e^{-h} - 1 (expm1): the D term is alpha_prev (e^{-h} - 1) D": scaled_D(
                    torch.exp(-h) / torch.expm1(-h)
                ),
                "the x_t coefficient is missing: x_prev starts from (sigma_prev / sigma_t) x_t": S(
                    x_t=xd * sig_t / sig_p
                ),
                "the x_t coefficient lacks its sqrt: sigma_prev / sigma_t = sqrt((1 - abar_prev) / (1 - abar_t))": S(
                    x_t=xd * sig_p / sig_t
                ),
                "the D term uses abar_prev without the sqrt: alpha_prev = sqrt(abar_prev)": scaled_D(ab_prev.sqrt()),
                "the x_t coefficient is alpha_prev / alpha_t; in the data-prediction form it is sigma_prev / sigma_t": S(
                    x_t=xd * (ab_prev / ab_t).sqrt() * sig_t / sig_p
                ),
            }
            if not first:
                h_last = _lam(ab_t) - _lam(ab_last)
                lam_last_inverted = _lam(ab_t) - h * h / h_last  # makes r = h_last / h into h / h_last
                mistakes.update(
                    {
                        "the second-order correction is missing: with a previous x0_hat use "
                        "D = (1 + 1/(2r)) x0_hat - 1/(2r) x0_prev": S(x0_prev=None, alpha_bar_last=None),
                        "r is inverted: r = h_last / h with h_last = lambda_t - lambda_last": S(
                            alpha_bar_last=torch.sigmoid(2 * lam_last_inverted)
                        ),
                        "x0_hat and x0_prev are swapped in D = (1 + 1/(2r)) x0_hat - 1/(2r) x0_prev": S(
                            x0_hat=d1d, x0_prev=d0d
                        ),
                    }
                )
            context = " on the first step (x0_prev is None)" if first else " on a later step"
            compare(
                name,
                out,
                ref,
                mistakes,
                tol=1e-4,
                context=context + f", shape {list(shape)}",
                reference=samplers.dpmpp_2m_step,
                args=args,
            )
    passed(name, f"first and later steps, shapes {[list(s) for s in sizes]}, seed {seed}")


# --- the loops: guidance as a wrapper, DDIM and DPM-Solver++(2M) down a grid ---------------------------
#
# Graded on a model the check names (lab 05's ``SamplingModel``, strict about its inputs), with fixed noise
# and grids the check draws: only tensors come back. Each known mistake is labkit's loop with one thing
# changed, run on labkit's steps.


def check_cfg_eps(
    student_fn, *, seed: int = 0, sizes=((3, 1, 6, 6), (2, 2, 5, 4)), ws=(2.0, 0.5, 0.0), classes=(10, 4)
) -> None:
    """student_fn(model, x [B,C,H,W], t int64 [B], y int64 [B], w: float, null_class: int) -> guided eps [B,C,H,W]:
    cfg_combine(model(x, t, y), model(x, t, null), w) with every image's label replaced by null_class in the
    unconditional prediction. ``classes``: models with that many classes (null_class = that number)."""
    name = "check_cfg_eps"
    g = generator(seed)
    for n, shape in enumerate(sizes):
        shape = tuple(int(s) for s in shape)
        B = shape[0]
        for classes_n in classes:
            model = SamplingModel(shape[1], 50, num_classes=classes_n, seed=seed * 100 + n).requires_grad_(False)
            model64 = copy.deepcopy(model).double()
            for w in ws:
                x = torch.randn(shape, generator=g)
                t = spread_steps(B, 50, g)
                y = torch.randint(0, classes_n, (B,), generator=g)
                args = (model, x, t, y, float(w), classes_n)
                out = expect_tensor(
                    name,
                    call(
                        name,
                        student_fn,
                        *args,
                        names=["model", "x", "t", "y"],
                        hints={
                            "must be in 0..": "a label is outside the model's classes: the unconditional prediction uses "
                            "the class null_class, the argument (models differ in their number of classes)"
                        },
                    ),
                    shape,
                )
                xd = x.double()
                cond, uncond = model64(xd, t, y), model64(xd, t, torch.full_like(y, classes_n))
                ref = guidance.cfg_eps(model64, xd, t, y, float(w), classes_n)
                mistakes = {
                    "the unconditional prediction was given the real labels y: it needs 'no class', y = null_class "
                    "for every image (torch.full_like(y, null_class))": cond,
                    "the 'scale' convention w * eps_cond - (w - 1) * eps_uncond: here w = 0 is the plain "
                    "conditional model, (1 + w) eps_cond - w eps_uncond": w * cond - (w - 1) * uncond,
                    "conditional and unconditional predictions swapped: (1 + w) multiplies model(x, t, y)": guidance.cfg_combine(
                        uncond, cond, float(w)
                    ),
                    "only the unconditional prediction: guidance combines it with the conditional one": uncond,
                    "the unconditional term is missing: (1 + w) eps_cond - w eps_uncond": (1 + w) * cond,
                    **{
                        f"the unconditional prediction used the real class {c} as 'no class': use null_class, the "
                        f"argument": guidance.cfg_combine(cond, model64(xd, t, torch.full_like(y, c)), float(w))
                        for c in range(classes_n)
                    },
                }
                compare(
                    name,
                    out,
                    ref,
                    mistakes,
                    tol=1e-5,
                    context=f" for w={w:g}, {classes_n} classes (null_class={classes_n}), shape {list(shape)}",
                    reference=guidance.cfg_eps,
                    args=args,
                )
    passed(name, f"w in {list(ws)}, null_class in {list(classes)}, seed {seed}")


def grid_case(shape, T: int, S: int, seed: int, g: torch.Generator, *, first: bool):
    """(model, x_T, y, grid, alpha_bars, noises): a descending grid of S distinct steps of a linear T-step
    schedule, ending at t = 0 and, with ``first``, starting at T - 1 (where alpha_bar is smallest)."""
    alpha_bars = schedules.make_schedule("linear", T).alpha_bars  # [T] float64
    keep = [0] + ([T - 1] if first and S > 1 else [])
    rest = [int(v) for v in 1 + torch.randperm(T - 2, generator=g) if int(v) not in keep][: S - len(keep)]
    grid = torch.tensor(sorted(keep + rest, reverse=True))  # [S], descending
    model = SamplingModel(shape[1], T, seed=seed).requires_grad_(False)
    x_T = torch.randn(shape, generator=g)
    y = torch.randint(0, 11, (shape[0],), generator=g)
    noises = torch.randn((S,) + tuple(shape), generator=g)
    return model, x_T, y, grid, alpha_bars, noises


def _ab(alpha_bars, t, x):  # alpha_bar at step t (an int; -1 = clean data, 1), [1, 1, 1, 1] in x's dtype
    return (alpha_bars[t] if t >= 0 else alpha_bars.new_ones(())).to(x.dtype).view(1, 1, 1, 1)


@torch.no_grad()
def _walk(
    model,
    x_T,
    y,
    grid,
    alpha_bars,
    step,
    *,
    order=None,
    last=-1,
    prev_of=None,
    model_t=None,
    from_x_T=False,
    eps_once=False,
):
    """A grid loop with one thing changed (the catalogue of loop mistakes): ``step(i, x, eps, t, t_prev)`` does
    the maths with labkit's steps. ``last``: where the final step goes (-1 = clean data); ``prev_of(i, t)``: the
    step after t."""
    ts = [int(v) for v in grid] if order is None else order
    x, eps = x_T, None
    for i, t in enumerate(ts):
        t_prev = (ts[i + 1] if i + 1 < len(ts) else last) if prev_of is None else prev_of(i, t)
        source = x_T if from_x_T else x
        if eps is None or not eps_once:
            eps = model(source, torch.full((x_T.shape[0],), t if model_t is None else model_t(i, t)), y)
        x = step(i, source, eps, t, t_prev).to(x_T.dtype)
    return x


_GRID_INDEX = (
    "an index is out of range: the step after grid[i] is grid[i + 1] only while i + 1 < len(grid); after "
    "the last grid step comes clean data, where alpha_bar = 1 (alpha_bars has T entries, one per time step)"
)
GRID_HINTS = {"out of bounds for dimension": _GRID_INDEX, "index out of range in self": _GRID_INDEX}


def _grid_mistakes(walk, grid, T):
    """The mistakes every grid loop can make (``walk(**change)`` runs the loop with that change)."""
    ts = [int(v) for v in grid]
    return {
        "the grid was walked backwards (from its smallest step up): sampling starts at grid[0], the noisiest "
        "step, and goes down": walk(order=ts[::-1]),
        "the last step does not go to clean data: the loop ends with the step from grid[-1] to alpha_bar = 1 (it "
        "must not stop one step early, nor step to alpha_bars[0])": (walk(last=0), walk(order=ts[:-1], last=ts[-1])),
        "the next alpha_bar was taken at t - 1; the next step is the next grid entry, grid[i + 1]": walk(
            prev_of=lambda i, t: t - 1
        ),
        "every step starts again from x_T: update x at every step": walk(from_x_T=True),
        "the model was called once, before the loop: call it at every step, on the current x": walk(eps_once=True),
        "the model was given the loop index i; it must see the time step t = grid[i]": walk(
            model_t=lambda i, t: min(i, T - 1)
        ),
    }


def _check_grid_loop(name, student_fn, extra, reference, step_of, own, *, seed, sizes, T, steps, nan_hint):
    """Run ``student_fn(model, x_T, y, grid, alpha_bars, *extra(noises))`` on each shape x grid length; compare
    with ``reference`` (labkit's loop, in float64) and name the mistakes of ``_grid_mistakes`` plus ``own``."""
    g = generator(seed)
    for n, shape in enumerate(sizes):
        shape = tuple(int(s) for s in shape)
        for k, S in enumerate(steps):
            for more in extra:
                model, x_T, y, grid, alpha_bars, noises = grid_case(shape, T, S, seed * 100 + n, g, first=k == 0)
                args = (model, x_T, y, grid, alpha_bars, *more(noises))
                context = (
                    f" for x_T of shape {list(shape)}, grid {[int(v) for v in grid]} of a T={T} schedule"
                    + "".join(f", eta={a:g}" for a in args[5:6] if isinstance(a, float))
                )
                out = call(
                    name,
                    student_fn,
                    *args,
                    hints=GRID_HINTS,
                    names=["model", "x_T", "y", "grid", "alpha_bars", "eta", "noises"][: len(args)],
                )
                if isinstance(out, torch.Tensor) and out.is_floating_point() and not bool(torch.isfinite(out).all()):
                    fail(name, f"the result holds NaN or infinity{context}. " + nan_hint)
                out = expect_tensor(name, out, shape)
                wide = (
                    copy.deepcopy(model).double(),
                    x_T.double(),
                    y,
                    grid,
                    alpha_bars,
                    *[a.double() if isinstance(a, torch.Tensor) else a for a in args[5:]],
                )
                ref = reference(*wide)
                step = step_of(wide)

                def walk(**change):
                    return _walk(*wide[:5], step(), **change)

                try:
                    compare_loop(
                        name,
                        out,
                        ref,
                        lambda: {**_grid_mistakes(walk, grid, T), **own(wide, walk, step)},
                        context=context,
                        reference=reference,
                        args=args,
                    )
                except AssertionError as exc:
                    if getattr(exc, "mistake", None):  # a named mistake says it all
                        raise
                    deterministic(name, student_fn, args, out)
                    fail(
                        name,
                        f"{str(exc).split(': ', 1)[1]}\n  (your loop runs your step: if its check failed "
                        "above, fix that first)",
                    )
    return g


BACKWARDS = (
    "Was the grid walked backwards? Sampling starts at grid[0], the noisiest step, and goes down, so that "
    "alpha_bar grows from step to step"
)
DDIM_NAN = BACKWARDS + " (else sigma takes the square root of a negative number)."
DPM_NAN = (
    "Does the last step go to clean data with the step formula? There alpha_bar = 1 and lambda = infinity: "
    "DPM-Solver++'s last step returns x0_hat itself. Are x0_prev and alpha_bar_last updated after the step "
    "(before it, h_last = 0)? " + BACKWARDS + "."
)


def check_ddim_loop(
    student_fn, *, seed: int = 0, sizes=((3, 1, 6, 6), (2, 2, 5, 4)), T: int = 40, steps=(6, 3, 1), etas=(0.0, 1.0)
) -> None:
    """student_fn(model, x_T [B,C,H,W], y int64 [B], grid int64 [S] descending, alpha_bars [T], eta: float,
    noises [S,B,C,H,W]) -> x_0 [B,C,H,W]: DDIM down the grid with the student's ddim_step, noises[i] at step i,
    alpha_bar = 1 after the last grid step. The first grid of each shape starts at T - 1."""
    name = "check_ddim_loop"

    def step_of(wide):
        alpha_bars, eta, noises = wide[4], wide[5], wide[6]

        def make(eta=eta, noise_of=None):
            def step(i, x, eps, t, t_prev):
                z = noises[i if noise_of is None else noise_of(i)]
                return samplers.ddim_step(x, eps, _ab(alpha_bars, t, x), _ab(alpha_bars, t_prev, x), eta, z)

            return step

        return make

    def own(wide, walk, step):
        S, eta = len(wide[3]), wide[5]
        return (
            {
                "eta was not passed on to ddim_step (it was 0): use the loop's eta": _walk(*wide[:5], step(eta=0.0)),
                "the same noise at every step (noises[0]): step i uses noises[i]": _walk(
                    *wide[:5], step(noise_of=lambda i: 0)
                ),
                "the noise was taken in reverse order: step i (at t = grid[i]) uses noises[i]": _walk(
                    *wide[:5], step(noise_of=lambda i: S - 1 - i)
                ),
            }
            if eta > 0
            else {}
        )

    _check_grid_loop(
        name,
        student_fn,
        [lambda z, e=float(e): (e, z) for e in etas],
        samplers.ddim_loop,
        step_of,
        own,
        seed=seed,
        sizes=sizes,
        T=T,
        steps=steps,
        nan_hint=DDIM_NAN,
    )
    passed(name, f"grids of {list(steps)} steps, eta in {list(etas)}, shapes {[list(s) for s in sizes]}, seed {seed}")


def check_dpmpp_2m_loop(
    student_fn, *, seed: int = 0, sizes=((3, 1, 6, 6), (2, 2, 5, 4)), T: int = 40, steps=(6, 3, 1)
) -> None:
    """student_fn(model, x_T [B,C,H,W], y int64 [B], grid int64 [S] descending, alpha_bars [T]) -> x_0: DPM-Solver++(2M)
    down the grid with the student's dpmpp_2m_step, carrying the previous step's x0_hat and its alpha_bar; the
    last step returns x0_hat. The first grid of each shape starts at T - 1."""
    name = "check_dpmpp_2m_loop"

    def step_of(wide):
        alpha_bars = wide[4]

        def make(carry=True, keep_first_last=False, x0_of=None):
            state = {}

            def step(i, x, eps, t, t_prev):
                if i == 0:
                    state.clear()
                ab_t, ab_prev = _ab(alpha_bars, t, x), _ab(alpha_bars, t_prev, x)
                x0_hat = (x - (1 - ab_t).sqrt() * eps) / ab_t.sqrt() if x0_of is None else x0_of(x, eps, ab_t)
                if t_prev < 0:
                    new = x0_hat
                else:
                    new = samplers.dpmpp_2m_step(x, x0_hat, state.get("x0"), ab_t, ab_prev, state.get("ab"))
                if carry and not (keep_first_last and "ab" in state):
                    state.update(x0=x0_hat, ab=ab_t)
                elif carry:
                    state.update(x0=x0_hat)
                return new

            return step

        return make

    def own(wide, walk, step):
        return {
            "x0_prev was not carried from step to step (every step was first order, D = x0_hat): keep each step's "
            "x0_hat and alpha_bar for the next one": _walk(*wide[:5], step(carry=False)),
            "alpha_bar_last stayed at the first step's value: update it with x0_prev after every step": _walk(
                *wide[:5], step(keep_first_last=True)
            ),
            "x0_hat uses variances: x0_hat = (x_t - sqrt(1 - abar_t) eps_hat) / sqrt(abar_t)": _walk(
                *wide[:5], step(x0_of=lambda x, e, a: (x - (1 - a) * e) / a)
            ),
            "x0_hat divides by abar_t without the sqrt: x0_hat = (x_t - sqrt(1 - abar_t) eps_hat) / sqrt(abar_t)": _walk(
                *wide[:5], step(x0_of=lambda x, e, a: (x - (1 - a).sqrt() * e) / a)
            ),
        }

    _check_grid_loop(
        name,
        student_fn,
        [lambda z: ()],
        samplers.dpmpp_2m_loop,
        step_of,
        own,
        seed=seed,
        sizes=sizes,
        T=T,
        steps=steps,
        nan_hint=DPM_NAN,
    )
    passed(name, f"grids of {list(steps)} steps, shapes {[list(s) for s in sizes]}, seed {seed}")


# --- The sampling grid and the end of the schedule (Lin et al. 2024) --------------------------------------


def _ambiguous(T: int, S: int) -> bool:
    """True when float32 arithmetic could round one of the three spacings differently from float64 (a value
    within a hair of a .5 tie that float32 misses): such a (T, S) is not a fair test of rounding."""
    i64 = torch.arange(S, dtype=torch.float64)
    i32 = i64.float()
    exact = {
        "linspace": torch.linspace(T - 1, 0, S, dtype=torch.float64),
        "trailing": T - i64 * T / S,
    }
    variants = {
        "linspace": [
            torch.linspace(T - 1, 0, S),
            (T - 1) * (1 - i32 / max(S - 1, 1)),
            (T - 1) - i32 * (T - 1) / max(S - 1, 1),
        ],
        "trailing": [T - i32 * T / S, T - i32 * (T / S), T * (1 - i32 / S), torch.arange(T, 0, -T / S)[:S]],
    }
    return any(
        len(v) != S or bool((v.double().round() != exact[k].round()).any()) for k in variants for v in variants[k]
    )


def _grid_cases(cases, g: torch.Generator, extra: int):
    """The given (T, steps) pairs plus ``extra`` random ones, none ambiguous in float32 (see ``_ambiguous``)."""
    out = [(int(T), int(S)) for T, S in cases]
    while extra > 0:
        T = int(torch.randint(20, 1500, (1,), generator=g))
        S = int(torch.randint(2, min(T, 60) + 1, (1,), generator=g))
        if not _ambiguous(T, S):
            out.append((T, S))
            extra -= 1
    return out


def check_spaced_timesteps(
    student_fn,
    *,
    seed: int = 0,
    cases=((1000, 10), (1000, 6), (50, 8)),
    spacings=("linspace", "leading", "trailing"),
) -> None:
    """student_fn(T: int, steps: int, spacing: str) -> int64 [steps], descending: the "linspace", "leading" and
    "trailing" grids of Lin et al. 2024, table 2 (0-based t). Besides ``cases``, two random (T, steps) per seed."""
    name = "check_spaced_timesteps"
    g = generator(seed)
    for T, S in _grid_cases(cases, g, extra=2):
        for spacing in spacings:
            ref = samplers.spaced_timesteps(T, S, spacing)  # [S] int64
            out = call(name, student_fn, T, S, spacing, names=["T", "steps", "spacing"])
            context = f" for T={T}, steps={S}, spacing={spacing!r}"
            hints = {
                (S + k,): f"{k} more than steps: arange(0, T, T // steps) has more than `steps` entries when steps "
                "does not divide T; count the steps i = 0 .. steps-1 instead"
                for k in (1, 2, 3)
            }
            out = expect_tensor(name, out, (S,), what=f"the grid{context}", floating=False, shape_hints=hints)
            if out.is_floating_point() or out.dtype == torch.bool:
                fail(
                    name,
                    f"the grid{context} has dtype {out.dtype}: time steps are whole numbers that index "
                    "alpha_bars: round to the nearest integer and return int64",
                )
            i = torch.arange(S, dtype=torch.float64)
            others = {o: samplers.spaced_timesteps(T, S, o) for o in UNIFORM if o != spacing}
            mistakes = {
                "the grid is ascending: sampling starts at the noisiest step, so the grid is descending "
                "(largest t first)": ref.flip(0),
                "the paper counts t from 1 to T; in code t = 0 .. T-1: subtract 1 from the paper's steps": ref + 1,
                **{
                    f"this is the {o!r} spacing, but spacing={spacing!r} was asked: check the spacing argument": v
                    for o, v in others.items()
                },
            }
            if spacing == "linspace":
                mistakes.update(
                    {
                        "the values were truncated (.long() rounds down): round to the nearest step first": (
                            torch.linspace(T - 1, 0, S, dtype=torch.float64).long(),
                            torch.linspace(T - 1, 0, S).long(),
                        ),
                        "the grid starts at t = T, which is out of range: the noisiest step is T-1": torch.linspace(
                            T, 0, S, dtype=torch.float64
                        ).round(),
                    }
                )
            elif spacing == "trailing":
                mistakes.update(
                    {
                        "the values were truncated (.long() rounds down): round to the nearest step first, then "
                        "subtract 1": (T - i * T / S).long() - 1,
                    }
                )
            else:  # leading
                k_round = (T / S + 0.5) // 1
                mistakes.update(
                    {
                        "the step of 'leading' is the whole number T // steps (rounded down), not T / steps": (
                            ((S - 1 - i) * T / S).round(),
                            (S - 1 - i) * k_round,
                            ((S - 1 - i) * T / S).long(),
                        ),
                    }
                )
            compare(name, out.double(), ref.double(), mistakes, tol=0.1, context=context)
    passed(name, f"spacings {list(spacings)}, seed {seed}")


UNIFORM = samplers.UNIFORM_SPACINGS


def _test_betas(T: int, kind: str, g: torch.Generator) -> torch.Tensor:
    """[T] float64 betas in (0, 1): a linear or cosine schedule of T steps, or random increasing betas."""
    if kind == "linear":
        return schedules.linear_betas(T)
    if kind == "cosine":
        return schedules.cosine_betas(T)
    return torch.sort(1e-4 + 0.06 * torch.rand(T, generator=g, dtype=torch.float64)).values


def _zsnr_variant(betas, *, root_of=True, scale=True, square=True, first_alpha=None, out="betas", shift_after=False):
    """Algorithm 1 of Lin et al. 2024 with one thing changed (the catalogue of mistakes), in float64."""
    ab = torch.cumprod(1 - betas.double(), dim=0)
    s = ab.sqrt() if root_of else ab
    first, last = s[0], s[-1]
    if shift_after:
        s = s * first / (first - last) - last
    else:
        s = s - last
        s = s * first / (first - last) if scale else s
    ab_new = s**2 if (square and root_of) else s
    if out == "alpha_bars":
        return ab_new
    if out == "root":
        return ab_new.sqrt()
    head = ab_new[:1] if first_alpha is None else torch.full_like(ab_new[:1], first_alpha)
    alphas = torch.cat([head, ab_new[1:] / ab_new[:-1]])
    return alphas if out == "alphas" else 1 - alphas


def check_enforce_zero_terminal_snr(
    student_fn, *, seed: int = 0, sizes=((1000, "linear"), (1000, "cosine"), (40, "random"))
) -> None:
    """student_fn(betas [T] float64) -> betas [T]: the schedule rescaled to zero terminal SNR, Algorithm 1 of
    Lin et al. 2024 (sqrt(alpha_bar) shifted to 0 at T-1 and scaled back to its value at t = 0)."""
    name = "check_enforce_zero_terminal_snr"
    g = generator(seed)
    for T, kind in sizes:
        betas = _test_betas(int(T), kind, g)
        out = call(name, student_fn, betas, names=["betas"])
        context = f" for the {kind} betas of T={T}"
        out = expect_tensor(
            name,
            out,
            (int(T),),
            what=f"the betas{context}",
            floating=False,
            shape_hints={
                (int(T) - 1,): "one entry short: alpha_0 = alpha_bar_0 comes first, then the T-1 ratios "
                "alpha_bar_t / alpha_bar_{t-1}"
            },
        )
        if out.is_floating_point() and not bool(torch.isfinite(out).all()):
            fail(
                name,
                f"the result holds NaN or infinity{context}: alpha_t = alpha_bar_t / alpha_bar_{{t-1}} divides the "
                "later alpha_bar by the earlier one; after the rescaling alpha_bar_{T-1} = 0, so it must never be "
                "a denominator",
            )
        out = expect_tensor(name, out, (int(T),), what=f"the betas{context}")
        ref = schedules.enforce_zero_terminal_snr(betas)
        mistakes = {
            "alpha_bar itself was shifted and scaled: Algorithm 1 rescales sqrt(alpha_bar), then squares it": (
                _zsnr_variant(betas, root_of=False)
            ),
            "only shifted: after subtracting sqrt(alpha_bar_{T-1}), scale by s_0 / (s_0 - s_{T-1}) so that the first "
            "step keeps its alpha_bar": _zsnr_variant(betas, scale=False),
            "scaled before the shift: shift first (s - s_{T-1}), then scale, else the last step is not 0": (
                _zsnr_variant(betas, shift_after=True)
            ),
            "the rescaled sqrt(alpha_bar) was not squared back: alpha_bar = s^2": _zsnr_variant(betas, square=False),
            "beta_0 is 0: the first alpha is alpha_bar_0 itself (nothing comes before step 0), not 1": _zsnr_variant(
                betas, first_alpha=1.0
            ),
            "the result is alpha_bar (or its square root): return the betas, beta_t = 1 - alpha_bar_t / "
            "alpha_bar_{t-1}": (_zsnr_variant(betas, out="alpha_bars"), _zsnr_variant(betas, out="root")),
            "the result is alpha_t: return beta_t = 1 - alpha_t": _zsnr_variant(betas, out="alphas"),
            "the betas you were given came back unchanged: rescale them": betas,
        }
        compare(
            name,
            out,
            ref,
            mistakes,
            tol=1e-6,  # a few float32 steps on betas up to 1
            context=context,
            reference=schedules.enforce_zero_terminal_snr,
            args=(betas,),
        )
    passed(name, f"schedules {[f'{k} T={T}' for T, k in sizes]}, seed {seed}")


def check_dynamic_threshold(
    student_fn, *, seed: int = 0, sizes=((4, 1, 8, 8), (3, 2, 5, 7)), percentiles=(0.995, 0.9)
) -> None:
    """student_fn(x0_hat [B,C,H,W], percentile: float) -> [B,C,H,W]: Imagen's dynamic thresholding (Saharia et al.
    2022, section 2.3), s = max(1, quantile(|x0_hat|, percentile)) per image, then clamp to [-s, s] and divide by s.
    Image 0 lies within [-1, 1] (s = 1), the others reach far outside, as under strong guidance."""
    name = "check_dynamic_threshold"
    g = generator(seed)
    for shape in sizes:
        shape = tuple(int(v) for v in shape)
        for pct in percentiles:
            scale = torch.cat([torch.tensor([0.3]), 1.2 + 4 * torch.rand(shape[0] - 1, generator=g)])
            x0 = torch.randn(shape, generator=g) * scale.view(-1, *([1] * (len(shape) - 1)))  # [B, C, H, W]
            out = call(
                name,
                student_fn,
                x0,
                float(pct),
                names=["x0_hat"],
                hints={
                    "must be in the range [0, 1]": "the percentile is a fraction (0.995), as torch.quantile takes it"
                },
            )
            out = expect_tensor(name, out, shape)
            xd = x0.double()
            view = (-1,) + (1,) * (len(shape) - 1)
            flat = xd.flatten(1)
            s_img = torch.quantile(flat.abs(), pct, dim=1).view(view)  # [B, 1, 1, 1], before max(1, .)
            s_one = s_img.clamp(min=1)
            ref = samplers.dynamic_threshold(xd, float(pct))
            s_all = torch.quantile(flat.abs().flatten(), pct).clamp(min=1)
            s_signed = torch.quantile(flat, pct, dim=1).view(view).clamp(min=1)
            mistakes = {
                "s was not kept at least 1: an image within [-1, 1] must stay as it is (s = max(1, quantile))": xd.clamp(
                    -s_img, s_img
                )
                / s_img,
                "one s for the whole batch: take the quantile per image (over its pixels, dim=1 after flatten(1))": xd.clamp(
                    -s_all, s_all
                )
                / s_all,
                "the quantile of the signed values: s is a percentile of the *absolute* pixel values": xd.clamp(
                    -s_signed, s_signed
                )
                / s_signed,
                "clamped to [-s, s] but not divided by s: the result must lie in [-1, 1]": xd.clamp(-s_one, s_one),
                "divided by s without clamping to [-s, s] first: the pixels beyond the percentile stay outside [-1, 1]": xd
                / s_one,
                "static thresholding (clamp to [-1, 1]): dynamic thresholding divides by a per-image s": xd.clamp(
                    -1, 1
                ),
                "s is the largest |x0_hat| (the 100th percentile): use the given percentile": xd
                / flat.abs().max(1).values.view(view).clamp(min=1),
            }
            compare(
                name,
                out,
                ref,
                mistakes,
                tol=1e-6,
                context=f" for percentile {pct:g}, shape {list(shape)}",
                reference=samplers.dynamic_threshold,
                args=(x0, float(pct)),
            )
    passed(name, f"percentiles {list(percentiles)}, seed {seed}")


def _knee_table(S: int, K: int, margin: float, g: torch.Generator):
    """nfes int64 [K] shuffled, quality [S, K] float32 on a grid of 1/64 (exact in float32 and float64): each row
    rises to a plateau, with values within ``margin`` of the row's best (one exactly ``margin`` below it, at
    the knee) and tops that differ between rows by less than ``margin``."""
    unit = 1 / 64
    m = round(margin / unit)  # the margin in grid units
    nfes = torch.tensor([5, 10, 20, 50, 100, 250, 1000][:K])
    rows = []
    for _ in range(S):
        knee = int(torch.randint(0, max(1, K - 2), (1,), generator=g))  # room for two columns after it
        top = 64 - int(torch.randint(0, m // 2 + 1, (1,), generator=g))
        jitter = torch.randint(min(1, m), m + 1, (K,), generator=g)  # below the top by at most the margin
        jitter[knee] = m  # exactly best - margin at the knee: it counts
        if knee + 1 < K and m >= 2:
            jitter[knee + 1] = int(torch.randint(1, m, (1,), generator=g))  # strictly within the margin
        best = int(torch.randint(min(knee + 2, K - 1), K, (1,), generator=g))  # the row's top, after those
        jitter[best] = 0
        units = [top - 8 * (knee - r) if r < knee else top - int(jitter[r]) for r in range(K)]
        rows.append(torch.tensor(units, dtype=torch.float32).clamp(min=0) * unit)
    order = torch.randperm(K, generator=g)  # the columns in no particular order...
    if K > 1 and int(order[0]) == K - 1:  # ...but not the largest NFE first
        order = torch.cat([order[1:2], order[:1], order[2:]])
    return nfes[order], torch.stack(rows)[:, order]


def check_fewest_evaluations(
    student_fn, *, seed: int = 0, sizes=((3, 6), (2, 4), (4, 7)), margins=(0.0625, 0.09375)
) -> None:
    """student_fn(nfes int64 [K], quality [S, K], margin: float) -> int64 [S]: per sampler (row) the smallest NFE
    whose quality is at least that row's best minus margin. The NFE columns come in shuffled order; margins are
    multiples of 1/64 (exact ties at best - margin are part of the test)."""
    name = "check_fewest_evaluations"
    g = generator(seed)
    for S, K in sizes:
        S, K = int(S), int(K)
        for margin in margins:
            nfes, quality = _knee_table(S, K, float(margin), g)
            out = call(name, student_fn, nfes, quality, float(margin), names=["nfes", "quality"])
            out = expect_tensor(
                name,
                out,
                (S,),
                floating=False,
                shape_hints={(K,): "one number per setting: return one per sampler (row)"},
            )
            if out.is_floating_point() or out.dtype == torch.bool:
                fail(name, f"wrong dtype {out.dtype}: return the numbers of evaluations, int64 like nfes")
            ref = measures.fewest_evaluations(nfes, quality, float(margin))
            q = quality.double()
            n = nfes[None, :].expand(S, K).double()
            inf = torch.full_like(n, math.inf)

            def pick(good, how="min"):
                return (
                    torch.where(good, n, inf).min(1).values
                    if how == "min"
                    else torch.where(good, n, -inf).max(1).values
                )

            best = q.max(1, keepdim=True).values
            good = q >= best - margin
            first_col = good.double().argmax(1)  # the first good column in column order
            mistakes = {
                "the largest good-enough NFE: the fewest evaluations is the smallest NFE within the margin": pick(
                    good, "max"
                ),
                "the first good-enough column: the columns are in no particular order, so take the smallest NFE "
                "among the good-enough ones": n.gather(1, first_col[:, None])[:, 0],
                "the column index: return the number of evaluations, nfes[k]": torch.where(
                    good, torch.arange(K, dtype=torch.float64)[None, :].expand(S, K), inf
                )
                .min(1)
                .values,
                "one best for all samplers: each sampler (row) is compared with its own best": pick(
                    q >= q.max() - margin
                ),
                "strictly within the margin: a quality of exactly best - margin counts (>=)": pick(q > best - margin),
                "the margin was ignored: the NFE of the best quality is not where the curve flattens": pick(q >= best),
            }
            compare(
                name,
                out.double(),
                ref.double(),
                mistakes,
                tol=0.1,
                context=f" for {S} samplers x {K} settings, nfes {nfes.tolist()}, margin {margin:g}",
            )
    passed(name, f"sizes {[list(s) for s in sizes]}, margins {list(margins)}, seed {seed}")
