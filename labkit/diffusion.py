"""The diffusion maths: forward noising, the posterior, and the noise-prediction loss.

Plain functions over tensors (as in improved-diffusion), one equation each. Shapes: x is [B, C, H, W]
(any number of trailing dims works), t is int64 [B] with values in [0, T).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from labkit.errors import LabkitTypeError, LabkitValueError
from labkit.schedules import Schedule

Model = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # model(x, t, y) -> eps_hat


def gather(values: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """values[t] reshaped to broadcast against x: [T] and [B] -> [B, 1, 1, 1] on x's device.

    Computed in float32 at least (float64 if x is float64), so bf16/fp16 inputs do not round the
    schedule: alpha_bar near 1 would otherwise lose most of its digits.
    """
    if not isinstance(t, torch.Tensor) or not isinstance(x, torch.Tensor):
        bad = "t" if not isinstance(t, torch.Tensor) else "x"
        raise LabkitTypeError(f"{bad} must be a torch.Tensor, got {type(t if bad == 't' else x).__name__}")
    if t.dim() > 1 or (t.dim() == 1 and x.dim() > 0 and t.shape[0] not in (1, x.shape[0])):
        raise LabkitValueError(
            f"t must have shape [B] = [{x.shape[0] if x.dim() else 1}] to match x, got {list(t.shape)}"
        )
    if t.device.type == "cpu" and t.numel():  # a range check on a GPU would stall it: CPU only
        lo, hi = int(t.min()), int(t.max())
        if lo < 0 or hi >= values.shape[0]:
            raise LabkitValueError(f"time steps must be in [0, {values.shape[0]}) (the schedule's T), got {lo}..{hi}")
    dtype = torch.promote_types(x.dtype, torch.float32)
    out = values.to(device=x.device, dtype=dtype)[t.to(x.device).long()]  # [B]
    return out.reshape(-1, *([1] * (x.dim() - 1)))


def q_sample(
    x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, alpha_bars: torch.Tensor | Schedule
) -> torch.Tensor:
    """Sample x_t from q(x_t | x_0) in closed form (Ho et al. 2020, eq. 4):   (lab 01)

        x_t = sqrt(alpha_bar_t) * x_0 + sqrt(1 - alpha_bar_t) * eps,   eps ~ N(0, I)

    The noise is passed in (not drawn here) so the caller controls randomness and can reuse it as the
    regression target. x0, noise: [B, ...]; t: int64 [B]; alpha_bars: [T] (or a Schedule) -> x_t [B, ...]
    in x0's dtype.
    """
    if not isinstance(noise, torch.Tensor) or noise.shape != getattr(x0, "shape", None):
        raise LabkitValueError(
            f"noise must be a tensor of x0's shape {list(getattr(x0, 'shape', []))}, got "
            f"{list(noise.shape) if isinstance(noise, torch.Tensor) else type(noise).__name__}"
        )
    ab = gather(alpha_bars_of(alpha_bars), t, x0)  # [B, 1, 1, 1]
    return (ab.sqrt() * x0 + (1 - ab).sqrt() * noise).to(x0.dtype)


def forward_chain(x0: torch.Tensor, betas: torch.Tensor, noises: torch.Tensor) -> torch.Tensor:
    """Run the forward process step by step (Ho et al. 2020, eq. 2):   (lab 01)

        x_t = sqrt(1 - beta_t) * x_{t-1} + sqrt(beta_t) * eps_t,   eps_t ~ N(0, I),   x_{-1} = x_0

    for t = 0, ..., T-1 with eps_t = noises[t]. Its result has the distribution of q_sample at t = T - 1 (eq. 4):
    the small Gaussian steps compose into one. x0: [B, ...]; betas: [T]; noises: [T, B, ...] -> x_{T-1} [B, ...]
    in x0's dtype.
    """
    x = x0
    for t in range(betas.shape[0]):
        beta = betas[t].to(device=x.device, dtype=torch.promote_types(x.dtype, torch.float32))
        x = ((1 - beta).sqrt() * x + beta.sqrt() * noises[t]).to(x0.dtype)
    return x


def alpha_bars_of(alpha_bars: torch.Tensor | Schedule) -> torch.Tensor:
    """The [T] tensor of alpha_bar values, given either that tensor or a Schedule."""
    if isinstance(alpha_bars, Schedule):
        return alpha_bars.alpha_bars
    if not isinstance(alpha_bars, torch.Tensor) or alpha_bars.dim() != 1:
        raise LabkitTypeError(f"alpha_bars must be a 1-D tensor [T] or a Schedule, got {type(alpha_bars).__name__}")
    return alpha_bars


def q_posterior(x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor, alpha_bars: torch.Tensor | Schedule):
    """Mean and variance of q(x_{t-1} | x_t, x_0) (Ho et al. 2020, eqs. 6-7):   (lab 01)

        mean = sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t) * x_0
             + sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) * x_t
        var  = beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) * beta_t

    with beta_t = 1 - alpha_bar_t / alpha_bar_{t-1} and alpha_bar_{-1} = 1, so alpha_bars [T] (or a Schedule)
    is all it needs. At t = 0 the variance is 0 and the mean is x_0. x0, xt: [B, ...]; t: int64 [B]
    -> (mean [B, ...] in xt's dtype, variance [B, 1, 1, 1]).
    """
    return posterior_between(x0, xt, t, t - 1, alpha_bars)


def posterior_between(x0, xt, t, t_prev, schedule: torch.Tensor | Schedule):
    """q(x_s | x_t, x_0) for any earlier step s = t_prev < t (t_prev = -1 means "clean data").

    The same Gaussian as eqs. 6-7 of Ho et al. 2020 with beta_t replaced by the effective variance
    between the two steps, 1 - alpha_bar_t / alpha_bar_s; this is what a sampler with fewer steps than T
    (a "respaced" schedule, Nichol & Dhariwal 2021, section 4) uses. ``schedule``: a Schedule or its
    alpha_bars [T]. Returns (mean, variance).
    """
    alpha_bars = alpha_bars_of(schedule)  # [T]
    alpha_bars_prev = torch.cat([alpha_bars.new_ones(1), alpha_bars[:-1]])  # [T]: alpha_bar_{t-1}, 1 before step 0
    ab_t = gather(alpha_bars, t, xt)
    ab_s = gather(alpha_bars_prev, t_prev + 1, xt)  # alpha_bars_prev[s + 1] = alpha_bar_s, 1 at s = -1
    alpha = ab_t / ab_s  # effective alpha between s and t
    beta = 1 - alpha
    coef_x0 = ab_s.sqrt() * beta / (1 - ab_t)
    coef_xt = alpha.sqrt() * (1 - ab_s) / (1 - ab_t)
    mean = coef_x0 * x0 + coef_xt * xt
    var = (1 - ab_s) / (1 - ab_t) * beta
    return mean.to(xt.dtype), var


def predict_x0_from_eps(xt, t, eps, alpha_bars: torch.Tensor | Schedule) -> torch.Tensor:
    """Invert eq. 4 of Ho et al. 2020 (the x0 of their eq. 15):   (lab 01)

        x_0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)

    xt, eps: [B, ...]; t: int64 [B]; alpha_bars: [T] (or a Schedule) -> x_0 [B, ...] in xt's dtype."""
    ab = gather(alpha_bars_of(alpha_bars), t, xt)
    return ((xt - (1 - ab).sqrt() * eps) / ab.sqrt()).to(xt.dtype)


def predict_eps_from_x0(xt, t, x0, schedule: Schedule) -> torch.Tensor:
    """Eq. 4 of Ho et al. 2020 solved for the noise: eps = (x_t - sqrt(alpha_bar_t) x_0) / sqrt(1 - alpha_bar_t)."""
    ab = gather(schedule.alpha_bars, t, xt)
    return ((xt - ab.sqrt() * x0) / (1 - ab).sqrt()).to(xt.dtype)


def v_from_eps(x0, t, eps, schedule: Schedule) -> torch.Tensor:
    """The velocity target v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x_0
    (Salimans & Ho 2022, "Progressive Distillation", section 4)."""
    ab = gather(schedule.alpha_bars, t, x0)
    return (ab.sqrt() * eps - (1 - ab).sqrt() * x0).to(x0.dtype)


def eps_from_v(xt, t, v, schedule: Schedule) -> torch.Tensor:
    """eps = sqrt(1 - alpha_bar_t) x_t + sqrt(alpha_bar_t) v   (follows from x_t and v above; Salimans & Ho 2022)."""
    ab = gather(schedule.alpha_bars, t, xt)
    return ((1 - ab).sqrt() * xt + ab.sqrt() * v).to(xt.dtype)


def sample_timesteps(batch: int, schedule: Schedule, *, device=None, generator=None) -> torch.Tensor:
    """t ~ Uniform{0, ..., T-1}, int64 [batch] (Ho et al. 2020, Algorithm 1, line 3)."""
    return torch.randint(0, schedule.T, (batch,), device=device, generator=generator)


def noise_prediction_loss(
    model: Model,
    x0: torch.Tensor,
    y: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    alpha_bars: torch.Tensor | Schedule,
) -> torch.Tensor:
    """The noise-prediction loss for given t and noise (Ho et al. 2020, eq. 14):   (lab 04)

        L = mean over batch and pixels of (noise - model(sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise, t, y))^2

    x0, noise: [B, C, H, W]; y, t: [B]; alpha_bars: [T] (or a Schedule) -> a 0-d tensor that can be
    back-propagated, computed in float32 at least (a bf16 prediction under autocast is widened first).
    """
    x_t = q_sample(x0, t, noise, alpha_bars)  # [B, C, H, W]
    eps_hat = model(x_t, t, y)
    dtype = torch.promote_types(eps_hat.dtype, torch.float32)
    return F.mse_loss(eps_hat.to(dtype), noise.to(dtype))


def diffusion_loss(
    model: Model,
    x0: torch.Tensor,
    y: torch.Tensor,
    schedule: Schedule,
    *,
    generator: torch.Generator | None = None,
    min_snr_gamma: float | None = None,
) -> torch.Tensor:
    """The simplified DDPM objective (Ho et al. 2020, eq. 14 / Algorithm 1):

        L = E_{t, x_0, eps} || eps - eps_theta(sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, t) ||^2

    with t uniform and eps ~ N(0, I), averaged over batch and pixels: ``noise_prediction_loss`` at random
    t and noise. x0: [B, C, H, W] in [-1, 1]; y: [B].
    The generator must live on x0's device (torch draws random numbers where they will be used).

    min_snr_gamma: if set, each example's loss is weighted by min(SNR(t), gamma) / SNR(t) ("Min-SNR-gamma",
    Hang et al. 2023, eq. 10 for noise prediction): nearly-clean steps, whose noise is hard to see and
    matters little for the picture, stop dominating the gradient. gamma = 5 in the paper.
    """
    t = sample_timesteps(x0.shape[0], schedule, device=x0.device, generator=generator)  # [B]
    noise = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)  # [B, C, H, W]
    if min_snr_gamma is None:
        return noise_prediction_loss(model, x0, y, t, noise, schedule)
    eps_hat = model(q_sample(x0, t, noise, schedule), t, y)
    per_example = (eps_hat.float() - noise.float()).pow(2).flatten(1).mean(1)  # [B]
    snr = gather(schedule.snr(), t, per_example).float()  # [B]
    weight = snr.clamp(max=min_snr_gamma) / snr  # [B], 1 at high noise, gamma / SNR when nearly clean
    return (weight * per_example).mean()
