"""Checks for lab 01 (forward noising). References: ``labkit.schedules`` (``alpha_bars_from_betas``, ``snr``,
``linear_betas``, ``cosine_alpha_bars``) and ``labkit.diffusion`` (``q_sample``, ``predict_x0_from_eps``,
``q_posterior``), evaluated in float64.

    check_alpha_bars(alpha_bars_from_betas)   alpha_bar_t = prod_{s <= t} (1 - beta_s)
    check_snr(snr)                            SNR_t = alpha_bar_t / (1 - alpha_bar_t)
    check_linear_betas(linear_betas)          beta_t from beta_start to beta_end, both scaled by 1000 / T
    check_cosine_alpha_bars(cosine_alpha_bars)  Nichol & Dhariwal 2021, eq. 17, betas clipped at 0.999
    check_forward_chain(forward_chain)        x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) eps_t, t = 0..T-1 (eq. 2)
    check_q_sample(q_sample)                  x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps
    check_predict_x0(predict_x0_from_eps)     x_0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)
    check_q_posterior(q_posterior)            mean and variance of q(x_{t-1} | x_t, x_0), Ho et al. 2020, eqs. 6-7
"""

from __future__ import annotations

import math

import torch

from labkit import diffusion, schedules
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


def _random_betas(T: int, g: torch.Generator) -> torch.Tensor:
    return 1e-4 + 0.05 * torch.rand(T, generator=g, dtype=torch.float64)  # [T] in (1e-4, 0.05)


def _linear_betas(T: int) -> torch.Tensor:
    """Ho et al.'s linear schedule (1e-4 .. 0.02 over 1000 steps) stretched to T steps, as improved DDPM does
    (Nichol & Dhariwal 2021: multiply by 1000 / T), capped so every beta stays in (0, 0.5] for small T."""
    scale = min(1000 / T, 25.0)
    return torch.linspace(1e-4, 0.02, T, dtype=torch.float64) * scale  # [T] in (0, 0.5]


def check_alpha_bars(student_fn, *, seed: int = 0, sizes=(1, 10, 1000)) -> None:
    """student_fn(betas [T] float64) -> alpha_bars [T]: the running product of (1 - beta)."""
    name = "check_alpha_bars"
    g = generator(seed)
    for T in sizes:
        betas = _random_betas(int(T), g)
        out = call(name, student_fn, betas, names=["betas"])
        if isinstance(out, torch.Tensor) and out.dim() == 0:
            fail(
                name,
                "the result is a single number: use the running product torch.cumprod(..., dim=0), "
                "not torch.prod, so that there is one alpha_bar per step",
            )
        out = expect_tensor(name, out, (int(T),))
        alphas = 1 - betas
        ref = schedules.alpha_bars_from_betas(betas)
        mistakes = {
            "cumprod of the betas; alpha_bar is the product of alpha = 1 - beta": torch.cumprod(betas, 0),
            "1 - cumprod(beta); take the product of (1 - beta) instead": 1 - torch.cumprod(betas, 0),
            "a cumulative sum; alpha_bar is a cumulative *product*": torch.cumsum(alphas, 0),
            "1 - cumsum(beta); that is only the first-order approximation of the product": 1 - torch.cumsum(betas, 0),
            "off by one: alpha_bar_0 already includes step 0 (alpha_bar_0 = 1 - beta_0, not 1)": torch.cat(
                [torch.ones(1, dtype=torch.float64), ref[:-1]]
            ),
            "the product of the alphas without the cumulative part (one value repeated)": torch.prod(alphas).expand(
                int(T)
            ),
            "the square root of alpha_bar; alpha_bar itself is the product of the alphas": ref.sqrt(),
            "alpha_t = 1 - beta_t itself: alpha_bar_t is the running product of the alphas up to step t": alphas,
            "the running product was taken from the last step backwards: alpha_bar_t multiplies steps 0..t": torch.cumprod(
                alphas.flip(0), 0
            ).flip(0),
            "alpha_bar squared: the product of the alphas is alpha_bar itself": ref**2,
        }
        compare(
            name,
            out,
            ref,
            mistakes,
            tol=1e-5,
            context=f" for T={T}",
            reference=schedules.alpha_bars_from_betas,
            args=(betas,),
            where=("t", torch.arange(int(T))),
        )
    passed(name, f"T in {list(sizes)}, seed {seed}")


def check_snr(student_fn, *, seed: int = 0, sizes=(5, 100)) -> None:
    """student_fn(alpha_bars [T]) -> SNR [T] = alpha_bar / (1 - alpha_bar)."""
    name = "check_snr"
    g = generator(seed)
    for T in sizes:
        ab = torch.sort(
            1e-4 + (1 - 2e-4) * torch.rand(int(T), generator=g, dtype=torch.float64), descending=True
        ).values
        out = expect_tensor(name, call(name, student_fn, ab, names=["alpha_bars"]), (int(T),))
        ref = schedules.snr(ab)
        mistakes = {
            "inverted: that is the noise-to-signal ratio (1 - alpha_bar) / alpha_bar": (1 - ab) / ab,
            "square root of the SNR: the SNR is a ratio of *variances* (alpha_bar and 1 - alpha_bar), not of std devs": (
                ab / (1 - ab)
            ).sqrt(),
            "log of the SNR: return the SNR itself (the plot uses a log scale)": torch.log(ab / (1 - ab)),
            "alpha_bar / (1 + alpha_bar): the noise variance is 1 - alpha_bar": ab / (1 + ab),
            "1 / (1 - alpha_bar): the signal variance alpha_bar is missing from the numerator": 1 / (1 - ab),
            "alpha_bar / (1 - alpha_bar)^2: the denominator is the noise variance 1 - alpha_bar itself": ab
            / (1 - ab) ** 2,
            "sqrt(alpha_bar) / (1 - alpha_bar): the numerator is the signal variance alpha_bar, not its std": ab.sqrt()
            / (1 - ab),
            "alpha_bar / sqrt(1 - alpha_bar): the denominator is the noise variance, not its std": ab / (1 - ab).sqrt(),
            "log10 of the SNR: return the SNR itself (the plot uses a log scale)": torch.log10(ab / (1 - ab)),
            "operator precedence: alpha_bar / 1 - alpha_bar divides by 1 first and is 0; the denominator needs "
            "parentheses": ab / 1 - ab,
        }
        compare(
            name,
            out,
            ref,
            mistakes,
            tol=1e-5,
            relative=True,
            context=f" for T={T}",
            reference=schedules.snr,
            args=(ab,),
        )
    passed(name, f"T in {list(sizes)}, seed {seed}")


def _q_sample_inputs(shape, T, g):
    B = shape[0]
    ab = schedules.alpha_bars_from_betas(_linear_betas(T))
    t = spread_steps(B, T, g)  # distinct steps, so "same t for all" is detectable
    x0 = torch.randn(shape, generator=g)
    noise = torch.randn(shape, generator=g)
    return x0, t, noise, ab


def check_q_sample(student_fn, *, seed: int = 0, sizes=((4, 1, 28, 28), (3, 2, 5, 7)), T: int = 100) -> None:
    """student_fn(x0 [B,C,H,W], t int64 [B], noise [B,C,H,W], alpha_bars [T]) -> x_t [B,C,H,W]."""
    name = "check_q_sample"
    g = generator(seed)
    for shape in sizes:
        shape = tuple(int(s) for s in shape)
        x0, t, noise, ab = _q_sample_inputs(shape, T, g)
        out = call(name, student_fn, x0, t, noise, ab, names=["x0", "t", "noise", "alpha_bars"])
        out = expect_tensor(
            name,
            out,
            shape,
            shape_hints={
                (shape[0],) + shape: "a per-image value was broadcast against the batch the wrong way: "
                "reshape alpha_bars[t] to [B, 1, 1, 1]",
            },
        )

        def form(a):  # per-image coefficient [B] -> [B, 1, 1, 1]
            return a.view(-1, *([1] * (len(shape) - 1)))

        abt = form(ab[t])
        ref = diffusion.q_sample(x0.double(), t, noise.double(), ab)
        x0d, nd = x0.double(), noise.double()
        at = lambda idx: form(ab[idx])  # noqa: E731
        mistakes = {
            "sqrt missing (variance instead of std): the coefficients are sqrt(alpha_bar_t) and "
            "sqrt(1 - alpha_bar_t), not alpha_bar_t and 1 - alpha_bar_t": abt * x0d + (1 - abt) * nd,
            "sqrt missing on the noise term: the noise is scaled by its std sqrt(1 - alpha_bar_t), "
            "not its variance": abt.sqrt() * x0d + (1 - abt) * nd,
            "sqrt missing on the signal term: x0 is scaled by sqrt(alpha_bar_t)": abt * x0d + (1 - abt).sqrt() * nd,
            "signal and noise coefficients swapped: x0 gets sqrt(alpha_bar_t), the noise sqrt(1 - alpha_bar_t)": (
                1 - abt
            ).sqrt()
            * x0d
            + abt.sqrt() * nd,
            "off by one in t: used alpha_bars[t - 1]; step t uses alpha_bars[t]": at(t - 1).sqrt() * x0d
            + (1 - at(t - 1)).sqrt() * nd,
            "off by one in t: used alpha_bars[t + 1]; step t uses alpha_bars[t]": at((t + 1).clamp(max=T - 1)).sqrt()
            * x0d
            + (1 - at((t + 1).clamp(max=T - 1))).sqrt() * nd,
            "the same step t[0] for every image: index alpha_bars with the whole tensor t": at(
                t[:1].expand(shape[0])
            ).sqrt()
            * x0d
            + (1 - at(t[:1].expand(shape[0]))).sqrt() * nd,
            "the noise term is missing: add sqrt(1 - alpha_bar_t) * noise": abt.sqrt() * x0d,
            "the noise term was subtracted: x_t adds sqrt(1 - alpha_bar_t) * noise": abt.sqrt() * x0d
            - (1 - abt).sqrt() * nd,
            "off by one in t: used alpha_bars[t - 1] (held at 0 for t = 0); step t uses alpha_bars[t]": at(
                (t - 1).clamp(min=0)
            ).sqrt()
            * x0d
            + (1 - at((t - 1).clamp(min=0))).sqrt() * nd,
            "the noise is added unscaled: it is multiplied by its std sqrt(1 - alpha_bar_t)": abt.sqrt() * x0d + nd,
            "x0 is not scaled: the signal shrinks with sqrt(alpha_bar_t) as the noise grows": x0d
            + (1 - abt).sqrt() * nd,
            "the noise coefficient is 1 - sqrt(alpha_bar_t); it is sqrt(1 - alpha_bar_t), so that the two "
            "variances add up to 1": abt.sqrt() * x0d + (1 - abt.sqrt()) * nd,
            "alpha_bars were multiplied up again (a cumprod of alpha_bars): they already are the running products": form(
                torch.cumprod(ab, 0)[t]
            ).sqrt()
            * x0d
            + (1 - form(torch.cumprod(ab, 0)[t])).sqrt() * nd,
        }
        try:
            compare(
                name,
                out,
                ref,
                mistakes,
                tol=1e-4,
                context=f" for x0 of shape {list(shape)}",
                reference=diffusion.q_sample,
                args=(x0, t, noise, ab),
                where=("t", t),
            )
        except AssertionError:
            deterministic(name, student_fn, (x0, t, noise, ab), out)  # a more precise message when random
            raise
    passed(name, f"shapes {[list(s) for s in sizes]}, seed {seed}")


# --- the two schedules -----------------------------------------------------------------------------------


def check_linear_betas(
    student_fn, *, seed: int = 0, cases=((1000, 1e-4, 0.02), (250, 1e-4, 0.02), (50, 3e-4, 0.015))
) -> None:
    """student_fn(T: int, beta_start: float, beta_end: float) -> betas [T] float64: evenly spaced from
    beta_start * 1000 / T to beta_end * 1000 / T (Ho et al. 2020, section 4; rescaled as improved DDPM does)."""
    name = "check_linear_betas"
    g = generator(seed)
    for T, lo, hi in cases:
        T, lo, hi = int(T), float(lo), float(hi)
        if seed:  # other endpoints on other seeds (still a valid schedule: beta_end * 1000 / T < 1)
            lo = lo * float(0.5 + torch.rand(1, generator=g, dtype=torch.float64))
            hi = min(hi * float(0.5 + torch.rand(1, generator=g, dtype=torch.float64)), 0.9 * T / 1000)
        out = call(name, student_fn, T, lo, hi)
        out = expect_tensor(
            name,
            out,
            (T,),
            shape_hints={
                (T + 1,): "T + 1 values: there is one beta per step, T in all (torch.linspace(start, end, T))",
                (T - 1,): "T - 1 values: there is one beta per step, T in all (torch.linspace(start, end, T))",
            },
        )
        ref = schedules.linear_betas(T, lo, hi)
        k = 1000 / T
        r = torch.arange(T, dtype=torch.float64)
        mistakes = {
            "the endpoints were not rescaled by 1000 / T: with fewer steps each step must add more noise, so that "
            "the schedule ends as noisy as Ho et al.'s 1000 steps": torch.linspace(lo, hi, T, dtype=torch.float64),
            "rescaled by T / 1000; the factor is 1000 / T (fewer steps, larger betas)": torch.linspace(
                lo * T / 1000, hi * T / 1000, T, dtype=torch.float64
            ),
            "only beta_end was rescaled by 1000 / T; both endpoints are": torch.linspace(
                lo, hi * k, T, dtype=torch.float64
            ),
            "the last beta is missing (T steps of (end - start) / T: the last value is beta_end * 1000 / T itself, "
            "torch.linspace includes both ends)": lo * k + (hi - lo) * k * r / T,
            "the first beta is missing (the values start one step late): the first is beta_start * 1000 / T": lo * k
            + (hi - lo) * k * (r + 1) / T,
            "the schedule runs backwards: beta grows from beta_start to beta_end": torch.linspace(
                hi * k, lo * k, T, dtype=torch.float64
            ),
            "the square root of the betas: the betas themselves are evenly spaced": torch.linspace(
                lo * k, hi * k, T, dtype=torch.float64
            ).sqrt(),
            "these are alphas = 1 - beta: return the betas": 1 - torch.linspace(lo * k, hi * k, T, dtype=torch.float64),
            "the endpoints 1e-4 and 0.02 were written into the function: use the arguments beta_start and beta_end": schedules.linear_betas(
                T
            ),
        }
        compare(
            name,
            out,
            ref,
            mistakes,
            tol=2e-6,
            relative=True,
            context=f" for T={T}, beta_start={lo:.3g}, beta_end={hi:.3g}",
            reference=schedules.linear_betas,
            args=(T, lo, hi),
            where=("t", torch.arange(T)),
        )
    passed(name, f"T in {[c[0] for c in cases]}, seed {seed}")


def _cosine_candidate(
    T,
    s,
    *,
    offset=True,
    normalise=True,
    clip=0.999,
    grid="t+1",
    square=True,
    half_pi=True,
    through_betas=True,
    dtype=torch.float64,
):
    """A candidate cosine schedule in float64 with one thing changed (the catalogue of check_cosine_alpha_bars)."""
    steps = torch.arange(T + 1, dtype=dtype) / (T - 1 if grid == "T-1" else T)  # [T+1]
    ss = s if offset else 0.0
    c = torch.cos((steps + ss) / (1 + ss) * (math.pi / 2 if half_pi else math.pi))
    f = c**2 if square else c
    ab = f / f[0] if normalise else f  # [T+1]: alpha_bar at t/T = 0, 1/T, ..., 1
    if not through_betas:
        return (ab[:-1] if grid == "t" else ab[1:]).double()
    betas = 1 - ab[1:] / ab[:-1]
    if clip is not None:
        betas = betas.clamp(max=clip)
    out = torch.cumprod(1 - betas, 0)
    if grid == "t":  # the step in code is the paper's t + 1: starting at alpha_bar(0) = 1 is one step off
        out = torch.cat([torch.ones(1, dtype=dtype), out[:-1]])
    return out.double()


def check_cosine_alpha_bars(student_fn, *, seed: int = 0, cases=((1000, 0.008), (10, 0.008), (40, 0.02))) -> None:
    """student_fn(T: int, s: float) -> alpha_bars [T] float64, the cosine schedule of Nichol & Dhariwal 2021 (eq. 17)
    with its betas clipped at 0.999, the alpha_bars of ``make_schedule("cosine", T)``. Compared relatively (to a few
    float32 rounding steps of each value): the last steps' alpha_bar is 1e-9 and smaller, where the clipping shows."""
    name = "check_cosine_alpha_bars"
    g = generator(seed)
    for T, s in cases:
        T, s = int(T), float(s)
        if seed:
            s = float(0.002 + 0.03 * torch.rand(1, generator=g, dtype=torch.float64))
        out = call(name, student_fn, T, s)
        out = expect_tensor(
            name,
            out,
            (T,),
            shape_hints={
                (
                    T + 1,
                ): "T + 1 values: alpha_bar at t/T for t = 0..T has T + 1 points; the schedule has one alpha_bar per "
                "step, the T values after the first (step t in code is the paper's t + 1)"
            },
        )
        if out.dtype != torch.float64:
            fail(
                name,
                f"the result is {out.dtype}: compute in float64 (torch.arange(T + 1, dtype=torch.float64)). "
                "Near the end alpha_bar is about 1e-9, where float32's cos has lost most of its digits",
                mistake="float32",
            )
        ref = schedules.cosine_alpha_bars(T, s)
        C = lambda **kw: _cosine_candidate(T, s, **kw)  # noqa: E731
        mistakes = {
            "the offset s is missing: f(t) = cos^2(((t/T + s) / (1 + s)) * pi/2); without s the first betas are "
            "tiny and the model sees almost no noise in its first steps": C(offset=False),
            "not normalised by f(0), and taken straight from f without the betas: alpha_bar(t) = f(t) / f(0), so "
            "that alpha_bar(0) = 1; then clip beta_t = 1 - alpha_bar(t+1) / alpha_bar(t) at 0.999 and multiply the "
            "(1 - beta) up again": C(normalise=False, through_betas=False),
            "the betas were not clipped at 0.999 (or the alpha_bars were taken straight from f(t) / f(0), which is "
            "the same): beta_t = min(1 - alpha_bar(t+1) / alpha_bar(t), 0.999), then multiply the (1 - beta) up "
            "again; without the clip the last alpha_bar is (almost) exactly 0": (C(clip=None), C(through_betas=False)),
            "off by one in t: step 0 in code is the paper's t = 1, so alpha_bar_0 = alpha_bar(1/T) < 1 (drop the "
            "first of the T + 1 values, not the last)": C(grid="t"),
            "the alpha_bars were taken straight from f (off by one: the first of the T + 1 values was kept, the last "
            "dropped), not through the clipped betas": C(through_betas=False, grid="t"),
            "t / (T - 1) where t / T belongs: the T + 1 points t = 0..T are divided by T": C(grid="T-1"),
            "cos is not squared: f(t) = cos^2(...)": C(square=False),
            "pi where pi/2 belongs: f(t) = cos^2(((t/T + s) / (1 + s)) * pi/2)": C(half_pi=False),
            "clipped at 0.02 (the linear schedule's largest beta); the cosine schedule clips at 0.999": C(clip=0.02),
            "the offset was written as 0.008 into the function: use the argument s": _cosine_candidate(T, 0.008),
            "the T + 1 points were made with torch.linspace(0, 1, T) and taken straight from f: there are T + 1 "
            "points t/T for t = 0..T, then T clipped betas between them": (lambda f: f / f[0])(
                torch.cos((torch.linspace(0, 1, T, dtype=torch.float64) + s) / (1 + s) * math.pi / 2) ** 2
            ),
        }
        compare(
            name,
            out,
            ref,
            mistakes,
            tol=2e-6,
            relative=True,
            context=f" for T={T}, s={s:.3g}",
            reference=schedules.cosine_alpha_bars,
            args=(T, s),
            where=("t", torch.arange(T)),
        )
    passed(name, f"T in {[c[0] for c in cases]}, seed {seed}")


# --- the chain, step by step -----------------------------------------------------------------------------


def _chain(x0, betas, noises, *, steps=None, coef_x=None, coef_n=None, z_of=None, from_x0=False):
    """A candidate chain in float64 with one thing changed (the catalogue of check_forward_chain)."""
    T = betas.shape[0]
    x = x0
    for t in range(T) if steps is None else steps(T):
        b = betas[t]
        cx = (1 - b).sqrt() if coef_x is None else coef_x(b, t)
        cn = b.sqrt() if coef_n is None else coef_n(b, t)
        x = cx * (x0 if from_x0 else x) + cn * noises[t if z_of is None else z_of(t)]
    return x


def check_forward_chain(student_fn, *, seed: int = 0, sizes=((3, 1, 5, 5), (2, 2, 4, 3)), T: int = 30) -> None:
    """student_fn(x0 [B,C,H,W], betas [T], noises [T,B,C,H,W]) -> x_{T-1} [B,C,H,W]: eq. 2 of Ho et al. 2020, T times."""
    name = "check_forward_chain"
    g = generator(seed)
    for shape in sizes:
        shape = tuple(int(s) for s in shape)
        betas = _random_betas(T, g)
        x0 = torch.randn(shape, generator=g)
        noises = torch.randn((T,) + shape, generator=g)
        out = call(name, student_fn, x0, betas, noises, names=["x0", "betas", "noises"])
        out = expect_tensor(
            name,
            out,
            shape,
            shape_hints={
                (T,) + shape: "one image per step: return only the last x, x_{T-1}",
                (T + 1,) + shape: "one image per step: return only the last x, x_{T-1}",
            },
        )
        x, n = x0.double(), noises.double()
        ref = diffusion.forward_chain(x, betas, n)
        ab = schedules.alpha_bars_from_betas(betas)
        C = lambda **kw: _chain(x, betas, n, **kw)  # noqa: E731
        mistakes = {
            "the noise was scaled by its variance beta_t; it is scaled by its std sqrt(beta_t)": C(
                coef_n=lambda b, t: b
            ),
            "x was scaled by 1 - beta_t; the factor is sqrt(1 - beta_t), so that the variances add up to 1": C(
                coef_x=lambda b, t: 1 - b
            ),
            "x was not scaled: each step multiplies it by sqrt(1 - beta_t) before adding noise": C(
                coef_x=lambda b, t: torch.ones_like(b)
            ),
            "the noise was added unscaled: it is multiplied by sqrt(beta_t)": C(coef_n=lambda b, t: torch.ones_like(b)),
            "the noise was subtracted: x_t adds sqrt(beta_t) * eps_t": C(coef_n=lambda b, t: -b.sqrt()),
            "alpha_bar_t was used in every step (that is the closed form q(x_t | x_0)); one step uses beta_t only": C(
                coef_x=lambda b, t: ab[t].sqrt(), coef_n=lambda b, t: (1 - ab[t]).sqrt()
            ),
            "the same noise at every step (noises[0]): step t adds its own eps_t = noises[t]": C(z_of=lambda t: 0),
            "the same noise at every step (noises[-1]): step t adds its own eps_t = noises[t]": C(z_of=lambda t: T - 1),
            "the last step is missing: the chain runs t = 0, ..., T-1 (range(T))": C(steps=lambda T_: range(T_ - 1)),
            "the first step is missing: the chain runs t = 0, ..., T-1 (range(T))": C(steps=lambda T_: range(1, T_)),
            "every step starts again from x0: x must be updated, so that each step starts where the last one ended": C(
                from_x0=True
            ),
            "the closed form with the last noise: q_sample gives the same *distribution*, but this exercise runs the "
            "chain, one noise per step": ab[-1].sqrt() * x + (1 - ab[-1]).sqrt() * n[-1],
            "the steps ran backwards (t = T-1 first): the chain starts at t = 0 with noises[0] and betas[0]": C(
                steps=lambda T_: range(T_ - 1, -1, -1)
            ),
        }
        try:
            compare(
                name,
                out,
                ref,
                mistakes,
                tol=1e-5,
                context=f" for x0 of shape {list(shape)}, T={T}",
                reference=diffusion.forward_chain,
                args=(x0, betas, noises),
            )
        except AssertionError:
            deterministic(name, student_fn, (x0, betas, noises), out)  # a more precise message when random
            raise
    passed(name, f"shapes {[list(s) for s in sizes]}, T={T}, seed {seed}")


# --- back from x_t --------------------------------------------------------------------------------------


def check_predict_x0(student_fn, *, seed: int = 0, sizes=((4, 1, 28, 28), (3, 2, 5, 7)), T: int = 100) -> None:
    """student_fn(x_t [B,C,H,W], t int64 [B], eps [B,C,H,W], alpha_bars [T]) -> x_0 [B,C,H,W]: q_sample solved for x_0."""
    name = "check_predict_x0"
    g = generator(seed)
    for shape in sizes:
        shape = tuple(int(s) for s in shape)
        x0, t, eps, ab = _q_sample_inputs(shape, T, g)
        xt = diffusion.q_sample(x0, t, eps, ab) + 0.1 * torch.randn(shape, generator=g)  # not exactly on the line
        out = call(name, student_fn, xt, t, eps, ab, names=["x_t", "t", "eps", "alpha_bars"])
        out = expect_tensor(
            name,
            out,
            shape,
            shape_hints={
                (shape[0],) + shape: "a per-image value was broadcast against the batch the wrong way: "
                "reshape alpha_bars[t] to [B, 1, 1, 1]"
            },
        )
        ref = diffusion.predict_x0_from_eps(xt.double(), t, eps.double(), ab)
        x, e = xt.double(), eps.double()

        def form(idx):
            return ab[idx].view(-1, *([1] * (len(shape) - 1)))

        a = form(t)
        mistakes = {
            "multiplied by sqrt(alpha_bar_t): undoing x_t = sqrt(alpha_bar_t) x_0 + ... divides by it": (
                x - (1 - a).sqrt() * e
            )
            * a.sqrt(),
            "the noise was added: x_0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t) subtracts it": (
                x + (1 - a).sqrt() * e
            )
            / a.sqrt(),
            "variances instead of standard deviations: the coefficients are sqrt(1 - alpha_bar_t) and sqrt(alpha_bar_t)": (
                x - (1 - a) * e
            )
            / a,
            "only x_t was divided (operator precedence): (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t) needs "
            "the parentheses": x - (1 - a).sqrt() * e / a.sqrt(),
            "divided by alpha_bar_t; the signal was scaled by its square root sqrt(alpha_bar_t)": (
                x - (1 - a).sqrt() * e
            )
            / a,
            "the sqrt is missing on the noise coefficient: sqrt(1 - alpha_bar_t)": (x - (1 - a) * e) / a.sqrt(),
            "divided by sqrt(1 - alpha_bar_t): x_0's coefficient in x_t is sqrt(alpha_bar_t)": (x - (1 - a).sqrt() * e)
            / (1 - a).sqrt(),
            "off by one in t: used alpha_bars[t - 1]; step t uses alpha_bars[t]": (x - (1 - form(t - 1)).sqrt() * e)
            / form(t - 1).sqrt(),
            "the same step t[0] for every image: index alpha_bars with the whole tensor t": (
                x - (1 - form(t[:1].expand(shape[0]))).sqrt() * e
            )
            / form(t[:1].expand(shape[0])).sqrt(),
            "the noise was not removed: x_0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)": x / a.sqrt(),
            "that is x_t again (q_sample applied to the arguments): this function undoes q_sample": a.sqrt() * x
            + (1 - a).sqrt() * e,
        }
        compare(
            name,
            out,
            ref,
            mistakes,
            tol=1e-4,
            context=f" for x_t of shape {list(shape)}",
            reference=diffusion.predict_x0_from_eps,
            args=(xt, t, eps, ab),
            where=("t", t),
        )
    passed(name, f"shapes {[list(s) for s in sizes]}, seed {seed}")


def _posterior_candidate(x0, xt, t, ab, *, ab_prev=None, var_of=None, coef=None):
    """A candidate (mean, variance) in float64 with one thing changed (the catalogue of check_q_posterior)."""
    nd = xt.dim()
    ab_t = ab[t].view(-1, *([1] * (nd - 1)))
    if ab_prev is None:
        ab_prev = torch.where(t > 0, ab[(t - 1).clamp(min=0)], torch.ones_like(ab[t]))
    ab_s = ab_prev.view(-1, *([1] * (nd - 1)))
    beta = 1 - ab_t / ab_s
    c0, ct = (
        (ab_s.sqrt() * beta / (1 - ab_t), (1 - beta).sqrt() * (1 - ab_s) / (1 - ab_t))
        if coef is None
        else coef(ab_t, ab_s, beta)
    )
    var = (1 - ab_s) / (1 - ab_t) * beta if var_of is None else var_of(ab_t, ab_s, beta)
    return c0 * x0 + ct * xt, var


def check_q_posterior(student_fn, *, seed: int = 0, sizes=((6, 1, 8, 8), (4, 2, 5, 3)), T: int = 30) -> None:
    """student_fn(x0 [B,C,H,W], xt [B,C,H,W], t int64 [B], alpha_bars [T]) -> (mean [B,C,H,W], variance [B,1,1,1]):
    q(x_{t-1} | x_t, x_0) of Ho et al. 2020, eqs. 6-7, with beta_t = 1 - alpha_bar_t / alpha_bar_{t-1} and
    alpha_bar_{-1} = 1. Every batch holds t = 0 (where the variance is 0), t = 1, T - 1 and a middle step."""
    name = "check_q_posterior"
    g = generator(seed)
    for shape in sizes:
        shape = tuple(int(s) for s in shape)
        B = shape[0]
        ab = schedules.alpha_bars_from_betas(1e-3 + 0.05 * torch.rand(T, generator=g, dtype=torch.float64))
        t = spread_steps(B, T, g, also=(1,))
        x0 = torch.randn(shape, generator=g)
        xt = torch.randn(shape, generator=g)
        out = call(name, student_fn, x0, xt, t, ab, names=["x0", "xt", "t", "alpha_bars"])
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            fail(
                name,
                f"expected two results, (mean, variance), got {type(out).__name__}"
                + (f" of length {len(out)}" if isinstance(out, (tuple, list)) else ""),
            )
        var_shape = (B,) + (1,) * (len(shape) - 1)
        mean = expect_tensor(name, out[0], shape, what="the mean")
        var = expect_tensor(
            name,
            out[1],
            var_shape,
            what="the variance",
            shape_hints={
                (
                    B,
                ): f"the variance has one value per image: shape {list(var_shape)} so that it broadcasts over the image",
                shape: f"the variance is one number per image, shape {list(var_shape)}, the same for every pixel",
            },
        )
        ref_mean, ref_var = diffusion.q_posterior(x0.double(), xt.double(), t, ab)
        x0d, xtd = x0.double(), xt.double()
        P = lambda **kw: _posterior_candidate(x0d, xtd, t, ab, **kw)  # noqa: E731
        wrapped = ab[t - 1]  # t = 0 -> ab[-1], Python's last element
        nxt = ab[(t + 1).clamp(max=T - 1)]
        candidates = {
            "the variance is beta_t (the forward step's); the posterior's is beta_tilde_t = (1 - alpha_bar_{t-1}) / "
            "(1 - alpha_bar_t) * beta_t": P(var_of=lambda a, s, b: b),
            "the variance is the standard deviation sqrt(beta_tilde_t): return beta_tilde_t itself": P(
                var_of=lambda a, s, b: ((1 - s) / (1 - a) * b).sqrt()
            ),
            "beta_tilde_t has alpha_bar_t and alpha_bar_{t-1} the other way round: (1 - alpha_bar_{t-1}) / "
            "(1 - alpha_bar_t) * beta_t": P(
                var_of=lambda a, s, b: torch.where(s < 1, (1 - a) / (1 - s).clamp(min=1e-300) * b, 0 * b)
            ),
            "the variance is 1 - alpha_bar_t, the forward process' q(x_t | x_0); the posterior's is beta_tilde_t": P(
                var_of=lambda a, s, b: 1 - a
            ),
            "alpha_bar_{t-1} at t = 0 is alpha_bars[-1] in your code (Python wraps negative indices to the last "
            "element); alpha_bar_{-1} = 1, so at t = 0 the variance is 0 and the mean is x0": P(ab_prev=wrapped),
            "off by one: alpha_bars[t + 1] was used for alpha_bar_{t-1}; the previous step is t - 1": P(ab_prev=nxt),
            "off by one: alpha_bar_t was used where alpha_bar_{t-1} belongs (so beta_t came out 0)": P(ab_prev=ab[t]),
            "the two coefficients are swapped: x0's is sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t), x_t's "
            "sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t)": P(
                coef=lambda a, s, b: ((1 - b).sqrt() * (1 - s) / (1 - a), s.sqrt() * b / (1 - a))
            ),
            "x_t's coefficient uses alpha_t without the sqrt: sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t)": P(
                coef=lambda a, s, b: (s.sqrt() * b / (1 - a), (1 - b) * (1 - s) / (1 - a))
            ),
            "x0's coefficient uses alpha_bar_{t-1} without the sqrt: sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t)": P(
                coef=lambda a, s, b: (s * b / (1 - a), (1 - b).sqrt() * (1 - s) / (1 - a))
            ),
            "x0's coefficient uses sqrt(alpha_bar_t); it is sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t)": P(
                coef=lambda a, s, b: (a.sqrt() * b / (1 - a), (1 - b).sqrt() * (1 - s) / (1 - a))
            ),
            "beta_t was taken as 1 - alpha_bar_t; the step's own beta_t = 1 - alpha_bar_t / alpha_bar_{t-1}": P(
                coef=lambda a, s, b: (s.sqrt() * (1 - a) / (1 - a), a.sqrt() * (1 - s) / (1 - a)),
                var_of=lambda a, s, b: (1 - s) / (1 - a) * (1 - a),
            ),
        }
        mistakes_mean = {k: v[0] for k, v in candidates.items()}
        mistakes_var = {k: v[1].expand(var_shape) for k, v in candidates.items()}
        context = f" for x_t of shape {list(shape)}"
        compare(
            name,
            var,
            ref_var,
            mistakes_var,
            tol=1e-6,
            context=" in the variance" + context,
            reference=lambda *a: diffusion.q_posterior(*a)[1],
            args=(x0, xt, t, ab),
            where=("t", t),
        )
        compare(
            name,
            mean,
            ref_mean,
            mistakes_mean,
            tol=1e-4,
            context=" in the mean" + context,
            reference=lambda *a: diffusion.q_posterior(*a)[0],
            args=(x0, xt, t, ab),
            where=("t", t),
        )
    passed(name, f"shapes {[list(s) for s in sizes]}, T={T}, seed {seed}")
