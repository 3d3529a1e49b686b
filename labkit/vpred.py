"""A v-predicting network as a noise predictor (Salimans & Ho 2022, "Progressive Distillation", section 4).

With alpha = sqrt(alpha_bar_t), sigma = sqrt(1 - alpha_bar_t) and x_t = alpha x_0 + sigma eps, the velocity is
v = alpha eps - sigma x_0. A network that predicts v gives x0_hat = alpha x_t - sigma v, well conditioned at the
noisiest steps, where an eps-predictor's x0_hat = (x_t - sigma eps) / alpha divides by alpha ~ 0.007.
``VStudent`` hands such a network to every labkit sampler as a noise predictor; the few-step model of
``labkit.distill`` is one.
"""

from __future__ import annotations

import torch
from torch import nn

from labkit.diffusion import gather
from labkit.schedules import Schedule


def alpha_sigma(alpha_bar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha, sigma) = (sqrt(alpha_bar), sqrt(1 - alpha_bar)): the signal and noise scales of x_t."""
    return alpha_bar.sqrt(), (1 - alpha_bar).sqrt()


def x0_from_v(x_t, v, alpha_bar_t) -> torch.Tensor:
    """x0_hat = alpha_t x_t - sigma_t v (Salimans & Ho 2022, section 4, with v = alpha_t eps - sigma_t x_0).
    x_t, v: [B, C, H, W]; alpha_bar_t: [B, 1, 1, 1]."""
    alpha, sigma = alpha_sigma(alpha_bar_t)
    return (alpha * x_t - sigma * v).to(x_t.dtype)


def eps_from_v(x_t, v, alpha_bar_t) -> torch.Tensor:
    """eps_hat = sigma_t x_t + alpha_t v (the same v, solved for the noise; Salimans & Ho 2022). Then the
    samplers' x0_hat = (x_t - sigma_t eps_hat) / alpha_t is ``x0_from_v`` exactly (alpha^2 + sigma^2 = 1)."""
    alpha, sigma = alpha_sigma(alpha_bar_t)
    return (sigma * x_t + alpha * v).to(x_t.dtype)


class VStudent(nn.Module):
    """A noise predictor made of a v-predicting network: ``VStudent(net, schedule)(x, t, y) = eps_from_v``.

    x: [B, C, H, W]; t: int64 [B]; y: int64 [B] -> eps_hat [B, C, H, W]. Every labkit sampler takes it as
    it takes the DDPM model; ``x0(x, t, y)`` is its clean-digit prediction. ``config`` is the network's."""

    def __init__(self, net: nn.Module, schedule: Schedule):
        super().__init__()
        self.net = net
        self.config = getattr(net, "config", None)
        self.register_buffer("alpha_bars", schedule.alpha_bars.float().clone(), persistent=False)  # [T]

    def x0(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x0_from_v(x, self.net(x, t, y), gather(self.alpha_bars, t, x))

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return eps_from_v(x, self.net(x, t, y), gather(self.alpha_bars, t, x))
