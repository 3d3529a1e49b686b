"""Checks for lab 07 (improvements). References: ``labkit.guidance.cfg_combine``, ``labkit.samplers.ddim_step``
and ``labkit.samplers.dpmpp_2m_step`` (the steps of ``sample_ddim`` and ``sample_dpmpp_2m``), in float64. Each
known mistake is the library's own step on perturbed inputs (eta squared, x0_hat scaled, two arguments
swapped...) or the step plus the one term that differs: the formulas live once, in ``labkit.samplers``.

    check_cfg_combine(cfg_combine)      (1 + w) eps_cond - w eps_uncond          Ho & Salimans 2022, eq. 6
    check_ddim_step(ddim_step)          DDIM update with eta                     Song et al. 2021, eqs. 12 and 16
    check_dpmpp_2m_step(dpmpp_2m_step)  DPM-Solver++(2M), data prediction        Lu et al. 2022, Algorithm 2

For the two samplers, alpha_bar values arrive per image, already shaped [B, 1, 1, 1] (float64), so that
they broadcast against x; ``alpha_bar_prev = 1`` means the step to clean data.
"""

from __future__ import annotations

import torch

from labkit import guidance, samplers, schedules
from labkit.checks._common import call, compare, deterministic, expect_tensor, generator, passed
from labkit.checks.fixtures import DigitJudge, lab_model  # noqa: F401  (the lab's model and judge)

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
                "the plain conditional model, so use (1 + w) eps_cond - w eps_uncond":
                    w * cd - (w - 1) * ud,
                "conditional and unconditional swapped: (1 + w) multiplies eps_cond": (1 + w) * ud - w * cd,
                "the '1 +' is missing: w * eps_cond - w * eps_uncond is only the guidance direction":
                    w * (cd - ud),
                "the guidance direction has the wrong sign: eps_cond + w * (eps_cond - eps_uncond)":
                    cd - w * (cd - ud),
                "eps_uncond was added: (1 + w) eps_cond - w eps_uncond subtracts it": (1 + w) * cd + w * ud,
                "the unconditional term is missing: guidance moves away from eps_uncond, by w times it":
                    (1 + w) * cd,
                "eps_cond plus w times eps_uncond: guidance adds w times the *difference* eps_cond - eps_uncond":
                    cd + w * ud,
                "the guidance direction without the conditional prediction itself: eps_cond + w (eps_cond - "
                "eps_uncond) keeps eps_cond": cd - w * ud,
                "operator precedence: 1 + w * eps_cond - w * eps_uncond adds the number 1; (1 + w) multiplies "
                "eps_cond": 1 + w * cd - w * ud,
                "an average of the two predictions: guidance extrapolates past eps_cond, it does not interpolate":
                    (cd + ud) / 2 if w != 0 else None,
            }
            compare(name, out, ref, mistakes, tol=1e-5, context=f" for w={w:g}, shape {list(shape)}",
                    reference=guidance.cfg_combine, args=(c, u, float(w)))
    passed(name, f"w in {list(ws)}, seed {seed}")


# --- DDIM --------------------------------------------------------------------------------------------


def _alpha_bar_pairs(B: int, g: torch.Generator, nd: int):
    """alpha_bar_t < alpha_bar_prev per image, [B, 1, 1, 1] float64; image 0 steps to clean data (prev = 1)."""
    ab_t = 0.02 + 0.9 * torch.rand(B, generator=g, dtype=torch.float64)
    ab_prev = ab_t + (1 - ab_t) * (0.1 + 0.8 * torch.rand(B, generator=g, dtype=torch.float64))
    ab_prev[0] = 1.0
    shape = (B,) + (1,) * (nd - 1)
    return ab_t.view(shape), ab_prev.view(shape)


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
            out = expect_tensor(name, call(name, student_fn, *args,
                                           names=["x_t", "eps_hat", "alpha_bar_t", "alpha_bar_prev", "eta", "z"]), shape)
            xd, ed, zd = x.double(), eps.double(), z.double()

            def D(**change):  # labkit's DDIM step, with some of its inputs changed
                kw = dict(x_t=xd, eps_hat=ed, alpha_bar_t=ab_t, alpha_bar_prev=ab_prev, eta=float(eta), z=zd)
                return samplers.ddim_step(**{**kw, **change})

            ref = D()
            noise = ref - D(z=torch.zeros_like(zd))  # sigma * z
            x0_hat = D(alpha_bar_prev=torch.ones_like(ab_prev), eta=0.0)  # the step to clean data is x0_hat
            sigma = samplers.ddim_sigma(ab_t, ab_prev, float(eta))
            c_dir = (1 - ab_prev - sigma ** 2).clamp(min=0)  # the direction's variance
            mistakes = {
                "the noise term sigma * z is missing (for eta > 0 DDIM adds fresh noise)": D(z=torch.zeros_like(zd)),
                "sigma ignores eta: sigma = eta * sqrt((1 - abar_prev)/(1 - abar_t)) * sqrt(1 - abar_t/abar_prev)":
                    D(eta=1.0),
                "sigma was squared (a variance where the standard deviation belongs): the noise is sigma * z":
                    D(eta=float(eta) * samplers.ddim_sigma(ab_t, ab_prev, 1.0)),
                "eta was squared: sigma = eta * sqrt(...) (eta^2 scales the variance, not the std)": D(eta=float(eta) ** 2),
                "the 'direction pointing to x_t' forgets sigma: its coefficient is sqrt(1 - abar_prev - sigma^2)":
                    D(eta=0.0) + noise,
                "the 'direction pointing to x_t' uses abar_t; it is scaled by sqrt(1 - abar_prev - sigma^2)":
                    ref + ((1 - ab_t).sqrt() - c_dir.sqrt()) * ed,
                "the direction coefficient lacks its sqrt: sqrt(1 - abar_prev - sigma^2) * eps_hat":
                    ref + (c_dir - c_dir.sqrt()) * ed,
                "x0_hat uses variances: x0_hat = (x_t - sqrt(1 - abar_t) eps_hat) / sqrt(abar_t)":
                    ref + ab_prev.sqrt() * ((xd - (1 - ab_t) * ed) / ab_t - x0_hat),
                "x0_hat is not scaled by sqrt(abar_prev): the predicted x0 enters x_prev as sqrt(abar_prev) x0_hat":
                    ref + (1 - ab_prev.sqrt()) * x0_hat,
                "the direction term is eps_hat itself: it is scaled by sqrt(1 - abar_prev - sigma^2)":
                    ref + (1 - c_dir.sqrt()) * ed,
                "x0_hat divides by abar_t without the sqrt: x0_hat = (x_t - sqrt(1 - abar_t) eps_hat) / sqrt(abar_t)":
                    ref + ab_prev.sqrt() * (x0_hat * ab_t.sqrt() / ab_t - x0_hat),
                "x0_hat multiplies by sqrt(abar_t); it divides: x0_hat = (x_t - sqrt(1 - abar_t) eps_hat) / sqrt(abar_t)":
                    ref + ab_prev.sqrt() * (x0_hat * ab_t - x0_hat),
                "sigma is not squared in the direction: its coefficient is sqrt(1 - abar_prev - sigma^2)":
                    ref + ((1 - ab_prev - sigma).clamp(min=0).sqrt() - c_dir.sqrt()) * ed,
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
            out = expect_tensor(name, call(name, student_fn, *args, names=[
                "x_t", "x0_hat", "x0_prev", "alpha_bar_t", "alpha_bar_prev", "alpha_bar_last"]), shape)
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
                "the x_t coefficient is inverted: sigma_prev / sigma_t (it shrinks the noise)":
                    S(x_t=xd * (sig_t / sig_p) ** 2),
                "the D term is scaled by sigma_prev; in the data-prediction form it is alpha_prev = sqrt(abar_prev)":
                    scaled_D(sig_p / ab_prev.sqrt()),
                "the D term has the wrong sign: x_prev = (sigma_prev/sigma_t) x_t - alpha_prev (e^{-h} - 1) D":
                    scaled_D(-torch.ones_like(h)),
                "lambda is the full log-SNR; DPM-Solver's lambda = log(alpha / sigma) is half of it":
                    scaled_D(torch.expm1(-2 * h) / torch.expm1(-h)),
                "e^{-h} where the factor is e^{-h} - 1 (expm1): the D term is alpha_prev (e^{-h} - 1) D":
                    scaled_D(torch.exp(-h) / torch.expm1(-h)),
                "the x_t coefficient is missing: x_prev starts from (sigma_prev / sigma_t) x_t":
                    S(x_t=xd * sig_t / sig_p),
                "the x_t coefficient lacks its sqrt: sigma_prev / sigma_t = sqrt((1 - abar_prev) / (1 - abar_t))":
                    S(x_t=xd * sig_p / sig_t),
                "the D term uses abar_prev without the sqrt: alpha_prev = sqrt(abar_prev)":
                    scaled_D(ab_prev.sqrt()),
                "the x_t coefficient is alpha_prev / alpha_t; in the data-prediction form it is sigma_prev / sigma_t":
                    S(x_t=xd * (ab_prev / ab_t).sqrt() * sig_t / sig_p),
            }
            if not first:
                h_last = _lam(ab_t) - _lam(ab_last)
                lam_last_inverted = _lam(ab_t) - h * h / h_last  # makes r = h_last / h into h / h_last
                mistakes.update({
                    "the second-order correction is missing: with a previous x0_hat use "
                    "D = (1 + 1/(2r)) x0_hat - 1/(2r) x0_prev": S(x0_prev=None, alpha_bar_last=None),
                    "r is inverted: r = h_last / h with h_last = lambda_t - lambda_last":
                        S(alpha_bar_last=torch.sigmoid(2 * lam_last_inverted)),
                    "x0_hat and x0_prev are swapped in D = (1 + 1/(2r)) x0_hat - 1/(2r) x0_prev":
                        S(x0_hat=d1d, x0_prev=d0d),
                })
            context = " on the first step (x0_prev is None)" if first else " on a later step"
            compare(name, out, ref, mistakes, tol=1e-4, context=context + f", shape {list(shape)}",
                    reference=samplers.dpmpp_2m_step, args=args)
    passed(name, f"first and later steps, shapes {[list(s) for s in sizes]}, seed {seed}")
