"""Checks for lab 08 (CLIP in the loop). Reference: ``labkit.clip_guidance.guided_eps``.

    check_guided_eps(guided_eps)
        eps_guided = eps_hat - scale * sqrt(1 - alpha_bar_t) * grad
    where grad is the gradient of the CLIP score (a log-probability-like quantity) with respect to x_t.
    This is the classifier-guidance rule of Dhariwal & Nichol 2021 (Algorithm 2 / eq. 14, "score-based
    conditioning"): since eps = -sqrt(1 - alpha_bar) * grad log p(x_t), adding grad log p(c | x_t) to the
    score subtracts sqrt(1 - alpha_bar_t) * grad from eps.
"""

from __future__ import annotations

import torch

from labkit import clip_guidance
from labkit.checks._common import call, compare, expect_tensor, generator, passed


def check_guided_eps(student_fn, *, seed: int = 0, sizes=((4, 1, 8, 8), (2, 1, 28, 28)), scales=(2.0, 0.0)) -> None:
    """student_fn(eps_hat [B,C,H,W], grad [B,C,H,W], alpha_bar_t [B,1,1,1] float64, scale: float) -> [B,C,H,W]."""
    name = "check_guided_eps"
    g = generator(seed)
    for shape in sizes:
        shape = tuple(int(s) for s in shape)
        for scale in scales:
            eps = torch.randn(shape, generator=g)
            grad = torch.randn(shape, generator=g)
            ab = (0.05 + 0.9 * torch.rand(shape[0], generator=g, dtype=torch.float64)).view(-1, 1, 1, 1)
            out = call(name, student_fn, eps, grad, ab, float(scale), names=["eps_hat", "grad", "alpha_bar_t"])
            out = expect_tensor(name, out, shape)
            e, gr, s = eps.double(), grad.double(), float(scale)
            ref = clip_guidance.guided_eps(e, gr, ab, s)
            mistakes = {
                "the gradient was added: to move *towards* higher CLIP scores, subtract it from eps "
                "(eps points towards the noise, away from the data)": e + s * (1 - ab).sqrt() * gr,
                "the factor sqrt(1 - alpha_bar_t) is missing (it turns a score into a noise direction)": e - s * gr,
                "sqrt(alpha_bar_t) was used; the factor is sqrt(1 - alpha_bar_t), the noise std at step t":
                    e - s * ab.sqrt() * gr,
                "1 - alpha_bar_t without the sqrt: the factor is the noise standard deviation sqrt(1 - alpha_bar_t)":
                    e - s * (1 - ab) * gr,
                "the scale is missing": e - (1 - ab).sqrt() * gr,
                "1 - sqrt(alpha_bar_t) where sqrt(1 - alpha_bar_t) belongs (the noise std at step t)":
                    e - s * (1 - ab.sqrt()) * gr,
                "divided by sqrt(1 - alpha_bar_t): it multiplies (eps = -sqrt(1 - alpha_bar_t) * score)":
                    e - s * gr / (1 - ab).sqrt(),
                "sqrt(1 - alpha_bar_t) divides the whole guided eps: only the gradient term is scaled by it":
                    (e - s * gr) * (1 - ab).sqrt(),
                "the gradient replaced eps_hat: guidance adds a correction to the model's eps_hat":
                    -s * (1 - ab).sqrt() * gr,
                "the scale was applied to eps_hat too: eps_hat - scale * sqrt(1 - alpha_bar_t) * grad":
                    s * e - s * (1 - ab).sqrt() * gr,
            }
            compare(name, out, ref, mistakes, tol=1e-5, context=f" for scale={scale:g}, shape {list(shape)}",
                    reference=clip_guidance.guided_eps, args=(eps, grad, ab, float(scale)))
    passed(name, f"scales {list(scales)}, seed {seed}")
