"""Noise schedules: how much signal survives at each of the T diffusion steps.

Notation (Ho et al. 2020, "Denoising Diffusion Probabilistic Models", section 2):
    beta_t        variance of the noise added at step t           q(x_t | x_{t-1}) = N(sqrt(1-beta_t) x_{t-1}, beta_t I)
    alpha_t       = 1 - beta_t
    alpha_bar_t   = prod_{s<=t} alpha_s                             q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1-alpha_bar_t) I)
    SNR(t)        = alpha_bar_t / (1 - alpha_bar_t)                 signal-to-noise ratio (Kingma et al. 2021, eq. 1)

Steps are indexed t = 0 .. T-1 in code (the paper's t = 1 .. T). All tensors here are float64 on the
CPU: they are tiny, and float64 keeps alpha_bar accurate near 0 and 1. Functions that use them move
and cast them to the data's device and dtype (see ``labkit.diffusion.gather``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from labkit.errors import LabkitTypeError, LabkitValueError


def alpha_bars_from_betas(betas: torch.Tensor) -> torch.Tensor:
    """alpha_bar_t = prod_{s <= t} (1 - beta_s), the signal kept after t + 1 steps (Ho et al. 2020, eq. 4).   (lab 01)

    betas [T] -> alpha_bars [T], in betas' dtype: a running (cumulative) product, so alpha_bar_0 = 1 - beta_0.
    """
    return torch.cumprod(1 - betas, dim=0)


def snr(alpha_bars: torch.Tensor) -> torch.Tensor:
    """SNR_t = alpha_bar_t / (1 - alpha_bar_t), signal variance over noise variance (Kingma et al. 2021, eq. 1).   (lab 01)

    alpha_bars [T] -> SNR [T]: from about 1e4 at t = 0 down to nearly 0 at T - 1.
    """
    return alpha_bars / (1 - alpha_bars)


def linear_betas(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """Linear schedule of Ho et al. 2020 (section 4): beta_t from 1e-4 to 0.02, rescaled for T != 1000.

    The endpoints are scaled by 1000/T so that any T gives the same overall amount of noise
    (the rule used by improved-diffusion's ``get_named_beta_schedule``).   -> [T] float64
    """
    _check_T(T)
    scale = 1000.0 / T
    if beta_end * scale >= 1:
        raise LabkitValueError(
            f"the linear schedule rescaled to T={T} would need beta_end = {beta_end * scale:.2f} >= 1; "
            f"use T >= {int(1000 * beta_end) + 1} or the cosine schedule"
        )
    return torch.linspace(beta_start * scale, beta_end * scale, T, dtype=torch.float64)


def cosine_alpha_bar(t: torch.Tensor, s: float = 0.008) -> torch.Tensor:
    """f(t)/f(0) with f(t) = cos^2(((t/T + s) / (1 + s)) * pi/2), for t already divided by T in [0, 1].

    Nichol & Dhariwal 2021, "Improved Denoising Diffusion Probabilistic Models", eq. 17.
    """
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    f0 = math.cos(s / (1 + s) * math.pi / 2) ** 2
    return f / f0


def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Cosine schedule (Nichol & Dhariwal 2021, eq. 17) as betas, clipped at max_beta.

    beta_t = 1 - alpha_bar(t+1)/alpha_bar(t), clipped to at most 0.999 "to prevent singularities at the
    end of the diffusion process near t = T" (same paper, section 3.2).   -> [T] float64
    """
    _check_T(T)
    steps = torch.arange(T + 1, dtype=torch.float64) / T  # [T+1] in [0, 1]
    abar = cosine_alpha_bar(steps, s)
    betas = 1 - abar[1:] / abar[:-1]
    return betas.clamp(max=max_beta)


def cosine_alpha_bars(T: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """alpha_bar_t of the cosine schedule at the T steps t = 0 .. T-1 (Nichol & Dhariwal 2021, eq. 17):   (lab 01)

        alpha_bar(t) = f(t) / f(0),   f(t) = cos^2(((t/T + s) / (1 + s)) * pi/2)

    taken through the clipped betas beta_t = min(1 - alpha_bar(t+1) / alpha_bar(t), max_beta) (section 3.2) and
    multiplied up again (``alpha_bars_from_betas``), which is what ``make_schedule("cosine", T)`` uses: step t in
    code is the paper's t + 1, so alpha_bar_0 = f(1/T) / f(0) < 1, and the clipping lifts the last step above 0.
    -> [T] float64
    """
    return alpha_bars_from_betas(cosine_betas(T, s, max_beta))


def enforce_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """The same schedule rescaled so that its last step holds no signal at all (SNR = 0 at t = T-1): Algorithm 1
    of Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed":   (lab 07)

        s_t = sqrt(alpha_bar_t)                                          from the betas (Ho et al. 2020, eq. 4)
        s_t <- (s_t - s_{T-1}) * s_0 / (s_0 - s_{T-1})                   shift: s_{T-1} = 0; scale: s_0 unchanged
        alpha_bar_t = s_t^2,   alpha_t = alpha_bar_t / alpha_bar_{t-1} (alpha_0 = alpha_bar_0),   beta_t = 1 - alpha_t

    Sampling starts from pure noise, x_T ~ N(0, I); a schedule whose alpha_bar_{T-1} > 0 trains the network on an
    x_{T-1} that still shows a little of the digit (the linear schedule: sqrt(alpha_bar) = 0.006), a mismatch the
    paper removes. betas [T] (any float dtype) -> betas [T], the last exactly 1 (not a valid ``Schedule``: at
    SNR = 0, x0_hat = (x_t - sqrt(1 - alpha_bar) eps_hat) / sqrt(alpha_bar) is undefined, which is why the paper
    switches to v-prediction). The input is not modified.
    """
    root = torch.cumprod(1 - betas, dim=0).sqrt()  # [T] sqrt(alpha_bar_t)
    first, last = root[0], root[-1]
    root = (root - last) * first / (first - last)  # [T]: 0 at T-1, unchanged at 0
    alpha_bars = root**2
    alphas = torch.cat([alpha_bars[:1], alpha_bars[1:] / alpha_bars[:-1]])  # [T]
    return 1 - alphas


@dataclass(frozen=True)
class Schedule:
    """A noise schedule: the per-step tensors every other module reads (notation of Ho et al. 2020, section 2).

    betas, alphas, alpha_bars, alpha_bars_prev: [T] float64 on the CPU (computed once, here).
    """

    name: str
    betas: torch.Tensor
    alphas: torch.Tensor = field(init=False, repr=False)
    alpha_bars: torch.Tensor = field(init=False, repr=False)
    alpha_bars_prev: torch.Tensor = field(init=False, repr=False)  # alpha_bar_{t-1}, and 1 before step 0

    def __post_init__(self):
        if not isinstance(self.betas, torch.Tensor):
            raise LabkitTypeError(f"betas must be a 1-D torch.Tensor, got {type(self.betas).__name__}")
        betas = self.betas.detach().to("cpu", torch.float64)
        if betas.dim() != 1 or not bool(((betas > 0) & (betas < 1)).all()):
            raise LabkitValueError("betas must be a 1-D tensor with values in (0, 1)")
        alpha_bars = alpha_bars_from_betas(betas)
        object.__setattr__(self, "betas", betas)
        object.__setattr__(self, "alphas", 1.0 - betas)
        object.__setattr__(self, "alpha_bars", alpha_bars)
        object.__setattr__(self, "alpha_bars_prev", torch.cat([torch.ones(1, dtype=torch.float64), alpha_bars[:-1]]))

    @property
    def T(self) -> int:
        return self.betas.shape[0]

    def snr(self) -> torch.Tensor:
        """SNR(t) = alpha_bar_t / (1 - alpha_bar_t)  (Kingma et al. 2021, "Variational Diffusion Models", eq. 1)."""
        return snr(self.alpha_bars)

    def log_snr(self) -> torch.Tensor:
        """log SNR(t) (Kingma et al. 2021); DPM-Solver's lambda_t (Lu et al. 2022) is half of it."""
        return torch.log(self.snr())

    def __repr__(self) -> str:
        ab = self.alpha_bars
        return f"Schedule({self.name!r}, T={self.T}, alpha_bar[0]={ab[0]:.5f}, alpha_bar[T-1]={ab[-1]:.2e})"


def make_schedule(name: str = "cosine", T: int = 1000) -> Schedule:
    """A named schedule: "linear" (Ho et al. 2020) or "cosine" (Nichol & Dhariwal 2021)."""
    if name == "linear":
        return Schedule("linear", linear_betas(T))
    if name == "cosine":
        return Schedule("cosine", cosine_betas(T))
    raise LabkitValueError(f"unknown schedule {name!r}: choose 'linear' or 'cosine'")


def _check_T(T) -> None:
    if not isinstance(T, int) or isinstance(T, bool) or T < 1:
        raise LabkitValueError(f"the number of diffusion steps T must be a positive integer, got {T!r}")
