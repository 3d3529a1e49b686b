"""Checks for lab 01 (forward noising). References: ``labkit.schedules.alpha_bars_from_betas``,
``labkit.schedules.snr`` and ``labkit.diffusion.q_sample``, evaluated in float64.

    check_alpha_bars(alpha_bars_from_betas)   alpha_bar_t = prod_{s <= t} (1 - beta_s)
    check_snr(snr)                            SNR_t = alpha_bar_t / (1 - alpha_bar_t)
    check_q_sample(q_sample)                  x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps
"""

from __future__ import annotations

import torch

from labkit import diffusion, schedules
from labkit.checks._common import (
    call, compare, deterministic, expect_tensor, fail, generator, passed, spread_steps,
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
            fail(name, "the result is a single number: use the running product torch.cumprod(..., dim=0), "
                       "not torch.prod, so that there is one alpha_bar per step")
        out = expect_tensor(name, out, (int(T),))
        alphas = 1 - betas
        ref = schedules.alpha_bars_from_betas(betas)
        mistakes = {
            "cumprod of the betas; alpha_bar is the product of alpha = 1 - beta": torch.cumprod(betas, 0),
            "1 - cumprod(beta); take the product of (1 - beta) instead": 1 - torch.cumprod(betas, 0),
            "a cumulative sum; alpha_bar is a cumulative *product*": torch.cumsum(alphas, 0),
            "1 - cumsum(beta); that is only the first-order approximation of the product": 1 - torch.cumsum(betas, 0),
            "off by one: alpha_bar_0 already includes step 0 (alpha_bar_0 = 1 - beta_0, not 1)":
                torch.cat([torch.ones(1, dtype=torch.float64), ref[:-1]]),
            "the product of the alphas without the cumulative part (one value repeated)": torch.prod(alphas).expand(int(T)),
            "the square root of alpha_bar; alpha_bar itself is the product of the alphas": ref.sqrt(),
            "alpha_t = 1 - beta_t itself: alpha_bar_t is the running product of the alphas up to step t": alphas,
            "the running product was taken from the last step backwards: alpha_bar_t multiplies steps 0..t":
                torch.cumprod(alphas.flip(0), 0).flip(0),
            "alpha_bar squared: the product of the alphas is alpha_bar itself": ref ** 2,
        }
        compare(name, out, ref, mistakes, tol=1e-5, context=f" for T={T}", reference=schedules.alpha_bars_from_betas,
                args=(betas,), where=("t", torch.arange(int(T))))
    passed(name, f"T in {list(sizes)}, seed {seed}")


def check_snr(student_fn, *, seed: int = 0, sizes=(5, 100)) -> None:
    """student_fn(alpha_bars [T]) -> SNR [T] = alpha_bar / (1 - alpha_bar)."""
    name = "check_snr"
    g = generator(seed)
    for T in sizes:
        ab = torch.sort(1e-4 + (1 - 2e-4) * torch.rand(int(T), generator=g, dtype=torch.float64), descending=True).values
        out = expect_tensor(name, call(name, student_fn, ab, names=["alpha_bars"]), (int(T),))
        ref = schedules.snr(ab)
        mistakes = {
            "inverted: that is the noise-to-signal ratio (1 - alpha_bar) / alpha_bar": (1 - ab) / ab,
            "square root of the SNR: the SNR is a ratio of *variances* (alpha_bar and 1 - alpha_bar), not of std devs":
                (ab / (1 - ab)).sqrt(),
            "log of the SNR: return the SNR itself (the plot uses a log scale)": torch.log(ab / (1 - ab)),
            "alpha_bar / (1 + alpha_bar): the noise variance is 1 - alpha_bar": ab / (1 + ab),
            "1 / (1 - alpha_bar): the signal variance alpha_bar is missing from the numerator": 1 / (1 - ab),
            "alpha_bar / (1 - alpha_bar)^2: the denominator is the noise variance 1 - alpha_bar itself":
                ab / (1 - ab) ** 2,
            "sqrt(alpha_bar) / (1 - alpha_bar): the numerator is the signal variance alpha_bar, not its std":
                ab.sqrt() / (1 - ab),
            "alpha_bar / sqrt(1 - alpha_bar): the denominator is the noise variance, not its std":
                ab / (1 - ab).sqrt(),
            "log10 of the SNR: return the SNR itself (the plot uses a log scale)": torch.log10(ab / (1 - ab)),
            "operator precedence: alpha_bar / 1 - alpha_bar divides by 1 first and is 0; the denominator needs "
            "parentheses": ab / 1 - ab,
        }
        compare(name, out, ref, mistakes, tol=1e-5, relative=True, context=f" for T={T}", reference=schedules.snr,
                args=(ab,))
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
        out = expect_tensor(name, out, shape, shape_hints={
            (shape[0],) + shape: "a per-image value was broadcast against the batch the wrong way: "
                                 "reshape alpha_bars[t] to [B, 1, 1, 1]",
        })

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
            "signal and noise coefficients swapped: x0 gets sqrt(alpha_bar_t), the noise sqrt(1 - alpha_bar_t)":
                (1 - abt).sqrt() * x0d + abt.sqrt() * nd,
            "off by one in t: used alpha_bars[t - 1]; step t uses alpha_bars[t]":
                at(t - 1).sqrt() * x0d + (1 - at(t - 1)).sqrt() * nd,
            "off by one in t: used alpha_bars[t + 1]; step t uses alpha_bars[t]":
                at((t + 1).clamp(max=T - 1)).sqrt() * x0d + (1 - at((t + 1).clamp(max=T - 1))).sqrt() * nd,
            "the same step t[0] for every image: index alpha_bars with the whole tensor t":
                at(t[:1].expand(shape[0])).sqrt() * x0d + (1 - at(t[:1].expand(shape[0]))).sqrt() * nd,
            "the noise term is missing: add sqrt(1 - alpha_bar_t) * noise": abt.sqrt() * x0d,
            "the noise term was subtracted: x_t adds sqrt(1 - alpha_bar_t) * noise": abt.sqrt() * x0d - (1 - abt).sqrt() * nd,
            "off by one in t: used alpha_bars[t - 1] (held at 0 for t = 0); step t uses alpha_bars[t]":
                at((t - 1).clamp(min=0)).sqrt() * x0d + (1 - at((t - 1).clamp(min=0))).sqrt() * nd,
            "the noise is added unscaled: it is multiplied by its std sqrt(1 - alpha_bar_t)": abt.sqrt() * x0d + nd,
            "x0 is not scaled: the signal shrinks with sqrt(alpha_bar_t) as the noise grows":
                x0d + (1 - abt).sqrt() * nd,
            "the noise coefficient is 1 - sqrt(alpha_bar_t); it is sqrt(1 - alpha_bar_t), so that the two "
            "variances add up to 1": abt.sqrt() * x0d + (1 - abt.sqrt()) * nd,
            "alpha_bars were multiplied up again (a cumprod of alpha_bars): they already are the running products":
                form(torch.cumprod(ab, 0)[t]).sqrt() * x0d + (1 - form(torch.cumprod(ab, 0)[t])).sqrt() * nd,
        }
        try:
            compare(name, out, ref, mistakes, tol=1e-4, context=f" for x0 of shape {list(shape)}",
                    reference=diffusion.q_sample, args=(x0, t, noise, ab), where=("t", t))
        except AssertionError:
            deterministic(name, student_fn, (x0, t, noise, ab), out)  # a more precise message when random
            raise
    passed(name, f"shapes {[list(s) for s in sizes]}, seed {seed}")
