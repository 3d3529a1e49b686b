"""Checks for lab 07 (improvements). References: ``labkit.guidance.cfg_combine``, ``labkit.samplers.ddim_step``
and ``labkit.samplers.dpmpp_2m_step`` (the steps of ``sample_ddim`` and ``sample_dpmpp_2m``), in float64; the
known mistakes are written out beside them.

    check_cfg_combine(cfg_combine)      (1 + w) eps_cond - w eps_uncond          Ho & Salimans 2022, eq. 6
    check_ddim_step(ddim_step)          DDIM update with eta                     Song et al. 2021, eqs. 12 and 16
    check_dpmpp_2m_step(dpmpp_2m_step)  DPM-Solver++(2M), data prediction        Lu et al. 2022, Algorithm 2

For the two samplers, alpha_bar values arrive per image, already shaped [B, 1, 1, 1] (float64), so that
they broadcast against x; ``alpha_bar_prev = 1`` means the step to clean data.
"""

from __future__ import annotations

import torch

from labkit import guidance, samplers
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
            }
            compare(name, out, ref, mistakes, tol=1e-5, context=f" for w={w:g}, shape {list(shape)}")
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
    def variant(x, eps, ab_t, ab_prev, eta, z, *, sigma_mode="ok", dir_mode="ok", x0_mode="ok", noise=True):
        """DDIM with one named mistake (float64)."""
        x, eps, z = x.double(), eps.double(), z.double()
        if x0_mode == "ok":
            x0 = (x - (1 - ab_t).sqrt() * eps) / ab_t.sqrt()
        elif x0_mode == "variance":
            x0 = (x - (1 - ab_t) * eps) / ab_t
        sigma = ((1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev)).sqrt()
        if sigma_mode == "ok":
            sigma = eta * sigma
        elif sigma_mode == "squared":  # eta * sigma^2 where sigma belongs
            sigma = eta * sigma ** 2
        elif sigma_mode == "eta2":
            sigma = eta ** 2 * sigma
        elif sigma_mode == "noeta":
            pass
        elif sigma_mode == "swapped":
            sigma = eta * ((1 - ab_t) / (1 - ab_prev).clamp(min=1e-12) * (1 - ab_prev / ab_t)).abs().sqrt()
        if dir_mode == "ok":
            direction = (1 - ab_prev - sigma ** 2).clamp(min=0).sqrt() * eps
        elif dir_mode == "nosigma":
            direction = (1 - ab_prev).sqrt() * eps
        elif dir_mode == "ab_t":
            direction = (1 - ab_t).sqrt() * eps
        elif dir_mode == "variance":
            direction = (1 - ab_prev - sigma ** 2).clamp(min=0) * eps
        out = ab_prev.sqrt() * x0 + direction
        return out + sigma * z if noise else out

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
            ref = samplers.ddim_step(x.double(), eps.double(), ab_t, ab_prev, float(eta), z.double())
            R = lambda **kw: variant(x, eps, ab_t, ab_prev, eta, z, **kw)  # noqa: E731
            mistakes = {
                "the noise term sigma * z is missing (for eta > 0 DDIM adds fresh noise)": R(noise=False),
                "sigma ignores eta: sigma = eta * sqrt((1 - abar_prev)/(1 - abar_t)) * sqrt(1 - abar_t/abar_prev)":
                    R(sigma_mode="noeta"),
                "sigma was squared (a variance where the standard deviation belongs): the noise is sigma * z":
                    R(sigma_mode="squared"),
                "eta was squared: sigma = eta * sqrt(...) (eta^2 scales the variance, not the std)": R(sigma_mode="eta2"),
                "abar_t and abar_prev are swapped in sigma (eq. 16): "
                "sigma = eta * sqrt((1 - abar_prev) / (1 - abar_t)) * sqrt(1 - abar_t / abar_prev)": R(sigma_mode="swapped"),
                "the 'direction pointing to x_t' forgets sigma: its coefficient is sqrt(1 - abar_prev - sigma^2)":
                    R(dir_mode="nosigma"),
                "the 'direction pointing to x_t' uses abar_t; it is scaled by sqrt(1 - abar_prev - sigma^2)":
                    R(dir_mode="ab_t"),
                "the direction coefficient lacks its sqrt: sqrt(1 - abar_prev - sigma^2) * eps_hat": R(dir_mode="variance"),
                "x0_hat uses variances: x0_hat = (x_t - sqrt(1 - abar_t) eps_hat) / sqrt(abar_t)": R(x0_mode="variance"),
            }
            context = f" for eta={eta:g}, shape {list(shape)}"
            try:
                compare(name, out, ref, mistakes, tol=1e-4, context=context)
            except AssertionError:
                deterministic(name, student_fn, args, out)
                raise
    passed(name, f"eta in {list(etas)}, seed {seed}")


# --- DPM-Solver++(2M) --------------------------------------------------------------------------------


def _lam(ab):
    return 0.5 * torch.log(ab / (1 - ab))  # lambda = log(alpha / sigma)


def check_dpmpp_2m_step(student_fn, *, seed: int = 0, sizes=((4, 1, 8, 8), (2, 3, 4, 4))) -> None:
    """student_fn(x_t, x0_hat, x0_prev, alpha_bar_t, alpha_bar_prev, alpha_bar_last) -> x_prev.

    x0_prev / alpha_bar_last: the previous step's x0_hat and its alpha_bar, or None on the first step
    (then the update is first order, D = x0_hat). All alpha_bar_* are [B,1,1,1] float64 in (0, 1), with
    alpha_bar_last < alpha_bar_t < alpha_bar_prev (noise decreases step by step)."""
    def variant(x, x0_hat, x0_prev, ab_t, ab_prev, ab_last, *, mode):
        """DPM-Solver++(2M) with one named mistake (float64)."""
        x, d0 = x.double(), x0_hat.double()
        sig_t, sig_p, alpha_p = (1 - ab_t).sqrt(), (1 - ab_prev).sqrt(), ab_prev.sqrt()
        lam_t, lam_p = _lam(ab_t), _lam(ab_prev)
        if mode == "full_logsnr":
            lam_t, lam_p = 2 * lam_t, 2 * lam_p
        h = lam_p - lam_t
        D = d0
        if x0_prev is not None and mode != "first_order":
            lam_l = _lam(ab_last) * (2 if mode == "full_logsnr" else 1)
            r = (lam_t - lam_l) / h
            if mode == "r_inverted":
                r = 1 / r
            c = 1 / (2 * r)
            D = (1 + c) * d0 - c * x0_prev.double()
            if mode == "D_swapped":
                D = (1 + c) * x0_prev.double() - c * d0
        if mode == "exp_sign":
            return sig_p / sig_t * x - alpha_p * torch.expm1(h) * D
        if mode == "ratio_inverted":
            return sig_t / sig_p * x - alpha_p * torch.expm1(-h) * D
        if mode == "sigma_prev":
            return sig_p / sig_t * x - sig_p * torch.expm1(-h) * D
        if mode == "plus":
            return sig_p / sig_t * x + alpha_p * torch.expm1(-h) * D
        return sig_p / sig_t * x - alpha_p * torch.expm1(-h) * D

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
            ref = samplers.dpmpp_2m_step(*(a.double() if isinstance(a, torch.Tensor) else a for a in args))
            R = lambda mode: variant(*args, mode=mode)  # noqa: E731
            mistakes = {
                "exp(-h) - 1 has the wrong sign in the exponent: the factor is (e^{-h} - 1) with "
                "h = lambda_prev - lambda_t > 0": R("exp_sign"),
                "the x_t coefficient is inverted: sigma_prev / sigma_t (it shrinks the noise)": R("ratio_inverted"),
                "the D term is scaled by sigma_prev; in the data-prediction form it is alpha_prev = sqrt(abar_prev)":
                    R("sigma_prev"),
                "the D term has the wrong sign: x_prev = (sigma_prev/sigma_t) x_t - alpha_prev (e^{-h} - 1) D":
                    R("plus"),
                "lambda is the full log-SNR; DPM-Solver's lambda = log(alpha / sigma) is half of it":
                    R("full_logsnr"),
            }
            if not first:
                mistakes.update({
                    "the second-order correction is missing: with a previous x0_hat use "
                    "D = (1 + 1/(2r)) x0_hat - 1/(2r) x0_prev": R("first_order"),
                    "r is inverted: r = h_last / h with h_last = lambda_t - lambda_last": R("r_inverted"),
                    "x0_hat and x0_prev are swapped in D = (1 + 1/(2r)) x0_hat - 1/(2r) x0_prev": R("D_swapped"),
                })
            context = " on the first step (x0_prev is None)" if first else " on a later step"
            compare(name, out, ref, mistakes, tol=1e-4, context=context + f", shape {list(shape)}")
    passed(name, f"first and later steps, shapes {[list(s) for s in sizes]}, seed {seed}")
