"""Checks for lab 05 (sampling). Reference: ``labkit.samplers.p_sample_step`` (the step of ``sample_ddpm``), in float64.

    check_p_sample_step(p_sample_step)   one ancestral step of Ho et al. 2020, Algorithm 2 (line 4):

        x_{t-1} = 1/sqrt(alpha_t) * (x_t - beta_t / sqrt(1 - alpha_bar_t) * eps_hat) + sigma_t * z
        sigma_t^2 = beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) * beta_t,   alpha_bar_{-1} = 1

    The lab uses sigma_t^2 = beta_tilde_t (the posterior variance, eq. 7; the same as labkit's sampler),
    not the other choice sigma_t^2 = beta_t that the paper also allows. With beta_tilde the variance of
    the last step (t = 0 in code) is exactly 0: no noise is added there.

Also here: ``lab_model`` (from ``labkit.checks.fixtures``), the model labs 05-08 sample from.
"""

from __future__ import annotations

import torch

from labkit import samplers
from labkit.checks._common import (
    call, compare, deterministic, expect_tensor, fail, generator, max_abs_diff, passed, spread_steps,
)
from labkit.checks.fixtures import lab_model  # noqa: F401  (the model labs 05-08 sample from)


def _random_betas(T: int, g: torch.Generator) -> torch.Tensor:
    return 1e-3 + 0.05 * torch.rand(T, generator=g, dtype=torch.float64)  # [T] in (1e-3, 0.051)


def _form(v: torch.Tensor, ndim: int) -> torch.Tensor:
    return v.view(-1, *([1] * (ndim - 1)))  # [B] -> [B, 1, 1, 1]


def _step(x, t, eps, z, betas, ab, ab_prev, var, noise_at_0=False, mean_coef=None):
    """A candidate answer in float64: mean of eq. 11 plus sqrt(var) * z (var [B])."""
    nd = x.dim()
    b, a = _form(betas[t], nd), _form(ab[t], nd)
    alpha = 1 - b
    if mean_coef is None:
        mean = (x - b / (1 - a).sqrt() * eps) / alpha.sqrt()
    else:
        mean = mean_coef(x, eps, b, a, alpha)
    v = _form(var, nd)
    if not noise_at_0:
        v = torch.where(_form(t, nd) == 0, torch.zeros_like(v), v)
    return mean + v.sqrt() * z


def check_p_sample_step(student_fn, *, seed: int = 0, sizes=((6, 1, 28, 28), (4, 2, 5, 3)), T: int = 20) -> None:
    """student_fn(x_t [B,C,H,W], t int64 [B], eps_hat [B,C,H,W], betas [T], alpha_bars [T], z [B,C,H,W])
    -> x_{t-1} [B,C,H,W]. Every batch holds t = 0 (the last step), t = 1 (where beta_tilde and beta differ most), T - 1 and a
    middle step, as far as B allows."""
    def reference(x_t, t, eps_hat, betas, alpha_bars, z):  # labkit's step, in float64
        return samplers.p_sample_step(x_t.double(), t, eps_hat.double(), betas.double(), alpha_bars.double(), z.double())

    name = "check_p_sample_step"
    g = generator(seed)
    for shape in sizes:
        shape = tuple(int(s) for s in shape)
        B = shape[0]
        betas = _random_betas(T, g)
        ab = torch.cumprod(1 - betas, 0)
        t = spread_steps(B, T, g, also=(1,))  # 0 (the last step), 1 (beta_tilde and beta differ most), T - 1, ...
        x = torch.randn(shape, generator=g)
        eps = torch.randn(shape, generator=g)
        z = torch.randn(shape, generator=g)
        out = call(name, student_fn, x, t, eps, betas, ab, z,
                   names=["x_t", "t", "eps_hat", "betas", "alpha_bars", "z"])
        out = expect_tensor(name, out, shape, shape_hints={
            (B,) + shape: "a per-image value was broadcast against the batch the wrong way: reshape "
                          "betas[t] and alpha_bars[t] to [B, 1, 1, 1] with .view(-1, 1, 1, 1)",
        })
        ref = reference(x, t, eps, betas, ab, z)

        xd, ed, zd = x.double(), eps.double(), z.double()
        ab_prev = torch.where(t > 0, ab[(t - 1).clamp(min=0)], torch.ones_like(ab[t]))
        tilde = (1 - ab_prev) / (1 - ab[t]) * betas[t]
        wrap_prev = ab[t - 1]  # t = 0 -> ab[-1], Python's "last element"
        wrap_tilde = (1 - wrap_prev) / (1 - ab[t]) * betas[t]
        nxt_prev = ab[(t + 1).clamp(max=T - 1)]
        S = lambda var, **kw: _step(xd, t, ed, zd, betas, ab, ab_prev, var, **kw)  # noqa: E731
        mistakes = {
            "the variance was used as the standard deviation: the noise term is sigma_t * z with "
            "sigma_t = sqrt(beta_tilde_t), not beta_tilde_t * z":
                _step(xd, t, ed, zd, betas, ab, ab_prev, tilde ** 2),
            "alpha_bar_{t-1} at t = 0 is alpha_bars[-1] in your code (Python wraps negative indices to the "
            "last element); alpha_bar_{-1} = 1 by definition, so the last step adds no noise":
                S(wrap_tilde, noise_at_0=True),
            "sigma_t^2 = beta_t: either alpha_bars[t] was used where alpha_bar_{t-1} = alpha_bars[t-1] belongs "
            "(off by one), or you chose the paper's other variance; this lab uses "
            "beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) * beta_t":
                S(betas[t].clone()),
            "sigma_t^2 = beta_t (and noise at t = 0): either alpha_bars[t] was used where alpha_bar_{t-1} = "
            "alpha_bars[t-1] belongs (off by one), or you chose the paper's other variance; this lab uses "
            "beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) * beta_t, which is 0 at t = 0":
                S(betas[t].clone(), noise_at_0=True),
            "off by one: alpha_bars[t + 1] was used for alpha_bar_{t-1}; the previous step is t - 1":
                S((1 - nxt_prev) / (1 - ab[t]) * betas[t]),
            "noise was added at t = 0: the last step returns the mean only (sigma_0 = 0)":
                S(betas[t].clone().where(t == 0, tilde), noise_at_0=True),
            "no noise was added: x_{t-1} = mean + sigma_t * z for t > 0": S(torch.zeros_like(tilde)),
            "the mean divides by sqrt(alpha_bar_t) instead of sqrt(alpha_t) = sqrt(1 - beta_t)":
                S(tilde, mean_coef=lambda x_, e, b, a, al: (x_ - b / (1 - a).sqrt() * e) / a.sqrt()),
            "the mean divides by alpha_t = 1 - beta_t; it divides by its square root sqrt(alpha_t)":
                S(tilde, mean_coef=lambda x_, e, b, a, al: (x_ - b / (1 - a).sqrt() * e) / al),
            "the mean multiplies by sqrt(alpha_t); it divides: 1/sqrt(alpha_t) * (x_t - ...)":
                S(tilde, mean_coef=lambda x_, e, b, a, al: al.sqrt() * (x_ - b / (1 - a).sqrt() * e)),
            "the eps coefficient lacks its sqrt: beta_t / sqrt(1 - alpha_bar_t), not beta_t / (1 - alpha_bar_t)":
                S(tilde, mean_coef=lambda x_, e, b, a, al: (x_ - b / (1 - a) * e) / al.sqrt()),
            "the eps coefficient is sqrt(1 - alpha_bar_t) (that is the x0 formula); the mean uses "
            "beta_t / sqrt(1 - alpha_bar_t)":
                S(tilde, mean_coef=lambda x_, e, b, a, al: (x_ - (1 - a).sqrt() * e) / al.sqrt()),
            "eps_hat is added to x_t; it is subtracted: x_t - beta_t / sqrt(1 - alpha_bar_t) * eps_hat":
                S(tilde, mean_coef=lambda x_, e, b, a, al: (x_ + b / (1 - a).sqrt() * e) / al.sqrt()),
            "the same step t[0] for every image: index betas / alpha_bars with the whole tensor t":
                reference(x, t[:1].expand(B), eps, betas, ab, z),
            "sigma_t^2 = beta_tilde_t uses alpha_bar_t and alpha_bar_{t-1} the other way round: "
            "(1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) * beta_t":
                S(((1 - ab[t]) / (1 - ab_prev) * betas[t]).where(t > 0, torch.zeros_like(tilde))),
            "the noise is sqrt(1 - alpha_bar_t) * z (the forward process' std); the reverse step adds sigma_t * z "
            "with sigma_t^2 = beta_tilde_t": S(1 - ab[t]),
            "z was added unscaled: the noise term is sigma_t * z": S(torch.ones_like(tilde)),
            "the mean is x0_hat (the prediction of the clean image), not the posterior mean of eq. 11":
                S(tilde, mean_coef=lambda x_, e, b, a, al: (x_ - (1 - a).sqrt() * e) / a.sqrt()),
        }
        context = f" for x_t of shape {list(shape)}"
        try:
            compare(name, out, ref, mistakes, tol=1e-4, context=context, reference=samplers.p_sample_step,
                    args=(x, t, eps, betas, ab, z), where=("t", t))
        except AssertionError as exc:
            if "This looks like" in str(exc) and "edge case" not in str(exc):
                raise  # named; an edge case at t = 0 gets the more precise message below
            deterministic(name, student_fn, (x, t, eps, betas, ab, z), out)
            # Which images are wrong: the last step (t = 0) alone, or the others?
            per = (out.double() - ref).abs().flatten(1).amax(1)  # [B]
            bad0, bad_rest = bool(per[t == 0].max() > 1e-4), bool((per[t > 0] > 1e-4).any()) if B > 1 else False
            if bad0 and not bad_rest:
                diff0 = out.double()[t == 0] - ref[t == 0]
                extra = " (it looks like noise was added there)" if max_abs_diff(diff0, diff0 * 0) > 1e-3 else ""
                fail(name, f"wrong values{context} only at t = 0, the last step{extra}: there "
                           "alpha_bar_{t-1} = 1, so sigma_0 = 0 and the step returns the mean only. "
                           "Beware alpha_bars[t - 1] at t = 0: it is alpha_bars[-1], the *last* element")
            if bad_rest and not bad0:
                fail(name, f"wrong values{context} for t > 0 although t = 0 is right: check sigma_t "
                           "(sqrt of beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) * beta_t) and that "
                           "z, not a new random tensor, is used")
            raise
    passed(name, f"shapes {[list(s) for s in sizes]}, T={T}, seed {seed}")
