"""A 2D toy you can see: a mixture of Gaussians, noised by the DDPM forward process, with its exact score.

Images have 784 dimensions and nobody can draw a vector field in them. In 2D everything is visible, and for a
mixture of Gaussians everything is exact: the noised density q_t, its score grad log q_t, the ideal noise
predictor eps* and the ideal denoiser E[x_0 | x_t]. So labkit's own samplers can run on the *perfect* model,
and what is left to see is the sampler itself.

Data (K components, weights w_k, shared isotropic std s):

    p(x_0) = sum_k w_k N(x_0; mu_k, s^2 I)

Noised by q(x_t | x_0) = N(sqrt(ab_t) x_0, (1 - ab_t) I) (Ho et al. 2020, eq. 4), every component stays
Gaussian, so the noised density is again a mixture (ab_t = alpha_bar_t):

    q_t(x) = sum_k w_k N(x; sqrt(ab_t) mu_k, v_t I),        v_t = ab_t s^2 + 1 - ab_t

Points are [N, 2] tensors throughout (no [B, C, H, W] reshaping is needed: labkit's ``gather`` gives [B, 1]
for a [B, 2] x, and the samplers' steps broadcast over it). A model is ``model(x, t, y) -> eps_hat`` as
everywhere in labkit, with y = k meaning "component k" and y = K meaning "no class" (the whole mixture).
To record a sampling run, pass ``samplers.Trajectory()`` as the sampler's callback.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from labkit.diffusion import Model, gather
from labkit.errors import LabkitValueError
from labkit.schedules import Schedule


@dataclass(frozen=True)
class GaussianMixture:
    """p(x_0) = sum_k weights[k] N(means[k], std^2 I) in 2D. means: [K, 2]; weights: [K], summing to 1."""

    means: torch.Tensor  # [K, 2]
    std: float
    weights: torch.Tensor  # [K]

    def __post_init__(self):
        means = torch.as_tensor(self.means, dtype=torch.float64)
        weights = torch.as_tensor(self.weights, dtype=torch.float64)
        if means.dim() != 2 or means.shape[1] != 2:
            raise LabkitValueError(f"means must be [K, 2], got {list(means.shape)}")
        if weights.shape != (means.shape[0],) or bool((weights <= 0).any()):
            raise LabkitValueError(f"weights must be [K] = [{means.shape[0]}] positive numbers, got {weights.tolist()}")
        if not self.std > 0:
            raise LabkitValueError(f"std must be > 0, got {self.std!r}")
        object.__setattr__(self, "means", means)
        object.__setattr__(self, "weights", weights / weights.sum())

    @property
    def K(self) -> int:
        return self.means.shape[0]


def three_blobs() -> GaussianMixture:
    """The lab's toy: three blobs of unequal weight (0.5, 0.3, 0.2) on a circle of radius 1.5, std 0.15."""
    angles = torch.tensor([90.0, 210.0, 330.0]) * math.pi / 180
    means = 1.5 * torch.stack([angles.cos(), angles.sin()], dim=1)  # [3, 2]
    return GaussianMixture(means, 0.15, torch.tensor([0.5, 0.3, 0.2]))


def sample(
    mixture: GaussianMixture, n: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """n draws from p(x_0): pick a component k ~ weights, then x_0 = mu_k + s * noise.

    -> (x_0 [n, 2] float64, k int64 [n]) on the generator's device (CPU without one).
    """
    device = generator.device if generator is not None else torch.device("cpu")
    w = mixture.weights.to(device)
    k = torch.multinomial(w, n, replacement=True, generator=generator)  # [n]
    noise = torch.randn(n, 2, generator=generator, device=device, dtype=torch.float64)  # [n, 2]
    return mixture.means.to(device)[k] + mixture.std * noise, k


def _alpha_bar(alpha_bar, x: torch.Tensor) -> torch.Tensor:
    """A float, or a tensor [] / [N] / [N, 1], -> [N or 1, 1] in x's dtype on x's device."""
    return torch.as_tensor(alpha_bar, dtype=x.dtype, device=x.device).reshape(-1, 1)


def _log_weights(mixture: GaussianMixture, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    """log w_k [N, K]; with labels y, component y alone (log 1 = 0, -inf elsewhere); y = K: the whole mixture."""
    log_w = mixture.weights.to(x.device, x.dtype).log().expand(x.shape[0], -1)  # [N, K]
    if y is None:
        return log_w
    y = y.to(x.device)
    one = torch.nn.functional.one_hot(y.clamp(max=mixture.K - 1), mixture.K).bool()  # [N, K]
    only_k = torch.where(one, 0.0, -math.inf).to(x.dtype)
    return torch.where((y < mixture.K)[:, None], only_k, log_w)


def component_log_probs(
    mixture: GaussianMixture, x: torch.Tensor, alpha_bar, y: torch.Tensor | None = None
) -> torch.Tensor:
    """log w_k + log N(x; sqrt(ab) mu_k, v I), v = ab s^2 + 1 - ab: one column per component.

    x: [N, 2]; alpha_bar: float or [N] -> [N, K]. Their logsumexp over k is log q_t(x).
    """
    ab = _alpha_bar(alpha_bar, x)  # [N, 1]
    var = ab * mixture.std**2 + 1 - ab  # [N, 1]: v_t
    centres = ab.sqrt()[:, :, None] * mixture.means.to(x.device, x.dtype).T[None]  # [N, 2, K]
    sq = ((x[:, :, None] - centres) ** 2).sum(1)  # [N, K] squared distances
    return _log_weights(mixture, x, y) - sq / (2 * var) - torch.log(2 * math.pi * var)  # d/2 log(2 pi v), d = 2


def log_density(mixture: GaussianMixture, x: torch.Tensor, alpha_bar, y: torch.Tensor | None = None) -> torch.Tensor:
    """log q_t(x) = log sum_k w_k N(x; sqrt(ab) mu_k, (ab s^2 + 1 - ab) I).   x: [N, 2] -> [N]"""
    return torch.logsumexp(component_log_probs(mixture, x, alpha_bar, y), dim=1)


def responsibilities(
    mixture: GaussianMixture, x: torch.Tensor, alpha_bar, y: torch.Tensor | None = None
) -> torch.Tensor:
    """r_k(x) = q(k | x_t = x): how much each component explains the point.   x: [N, 2] -> [N, K], rows sum to 1"""
    return torch.softmax(component_log_probs(mixture, x, alpha_bar, y), dim=1)


def score(mixture: GaussianMixture, x: torch.Tensor, alpha_bar, y: torch.Tensor | None = None) -> torch.Tensor:
    """The score of the noised data, grad_x log q_t(x) (Song et al. 2021, "Score-Based Generative Modeling
    through SDEs"), exactly: each component pulls towards its centre, weighted by its responsibility,

        grad log q_t(x) = sum_k r_k(x) (sqrt(ab) mu_k - x) / v_t,      v_t = ab s^2 + 1 - ab

    x: [N, 2]; alpha_bar: float or [N] -> [N, 2]. The arrows point to where the data is denser.
    """
    ab = _alpha_bar(alpha_bar, x)  # [N, 1]
    var = ab * mixture.std**2 + 1 - ab  # [N, 1]
    r = responsibilities(mixture, x, alpha_bar, y)  # [N, K]
    pulled_to = r @ mixture.means.to(x.device, x.dtype) * ab.sqrt()  # [N, 2]: sum_k r_k sqrt(ab) mu_k
    return (pulled_to - x) / var


def eps_from_score(score_x: torch.Tensor, alpha_bar) -> torch.Tensor:
    """The ideal noise prediction from the score: eps* = E[eps | x_t] = -sqrt(1 - ab) grad log q_t(x)
    (Song et al. 2021, section 3.3 / appendix: a noise predictor is a scaled score).   [N, 2] -> [N, 2]"""
    ab = _alpha_bar(alpha_bar, score_x)
    return -(1 - ab).sqrt() * score_x


def x0_hat(mixture: GaussianMixture, x: torch.Tensor, alpha_bar, y: torch.Tensor | None = None) -> torch.Tensor:
    """The ideal denoiser E[x_0 | x_t = x]: each component's posterior mean, weighted by its responsibility,

        E[x_0 | x_t, k] = mu_k + (sqrt(ab) s^2 / v_t) (x - sqrt(ab) mu_k)

    (Bishop 2006, eq. 2.116, for x_t = sqrt(ab) x_0 + sqrt(1 - ab) eps). It equals Tweedie's formula
    (x + (1 - ab) score) / sqrt(ab) but stays finite at ab -> 0, where it is the data mean sum_k w_k mu_k;
    at ab -> 1 it is x itself.   x: [N, 2] -> [N, 2]
    """
    ab = _alpha_bar(alpha_bar, x)  # [N, 1]
    var = ab * mixture.std**2 + 1 - ab
    mu = mixture.means.to(x.device, x.dtype)  # [K, 2]
    gain = (ab.sqrt() * mixture.std**2 / var)[:, :, None]  # [N, 1, 1]
    per_component = mu[None] + gain * (x[:, None, :] - ab.sqrt()[:, :, None] * mu[None])  # [N, K, 2]
    r = responsibilities(mixture, x, alpha_bar, y)  # [N, K]
    return (r[:, :, None] * per_component).sum(1)


def exact_model(mixture: GaussianMixture, schedule: Schedule) -> Model:
    """The perfect noise predictor as a labkit model: model(x [B, 2], t int64 [B], y int64 [B]) -> eps* [B, 2].

    y = k conditions on component k ("class k"), y = mixture.K is unconditional (the "no class" index), so
    ``samplers.sample(model, (B, 2), y, schedule, null_class=mixture.K)`` draws from the mixture.
    """

    def model(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        ab = gather(schedule.alpha_bars, t, x)[:, 0]  # [B]
        return eps_from_score(score(mixture, x, ab, y), ab)

    return model


def flow_velocity(mixture: GaussianMixture, x: torch.Tensor, t, y: torch.Tensor | None = None) -> torch.Tensor:
    """The exact flow-matching velocity v*(x, t) = E[eps - x_0 | x_t = x] for the linear interpolant
    x_t = (1 - t) x_0 + t eps (``labkit.flow``; Lipman et al. 2023, eq. 8, the marginal of the conditional
    velocities). Within component k, x_t ~ N(a mu_k, V I) with a = 1 - t, V = a^2 s^2 + t^2, and

        E[eps - x_0 | x_t, k] = (t - a s^2) / V (x - a mu_k) - mu_k        (Gaussian conditioning)

    weighted by the responsibilities r_k(x). x_t / sqrt(a^2 + t^2) is the DDPM x at ab = a^2 / (a^2 + t^2), and
    r_k is unchanged by that rescaling (one shared variance), so ``responsibilities`` gives them.
    x: [N, 2]; t: float or [N] in [0, 1] -> [N, 2].
    """
    tt = torch.as_tensor(t, dtype=x.dtype, device=x.device).reshape(-1, 1)  # [N or 1, 1]
    a = 1 - tt
    var = a**2 * mixture.std**2 + tt**2  # [N, 1]: V
    c2 = a**2 + tt**2
    r = responsibilities(mixture, x / c2.sqrt(), (a**2 / c2).reshape(-1), y)  # [N, K]
    mu = mixture.means.to(x.device, x.dtype)  # [K, 2]
    per_component = ((tt - a * mixture.std**2) / var)[:, :, None] * (x[:, None, :] - a[:, :, None] * mu[None]) - mu[
        None
    ]
    return (r[:, :, None] * per_component).sum(1)  # [N, 2]


def exact_flow_model(mixture: GaussianMixture) -> Model:
    """The perfect velocity model: model(x [B, 2], t float [B] in [0, 1], y int64 [B]) -> v* [B, 2]; y = K is
    the whole mixture, as in ``exact_model``. ``labkit.flow.sample(model, (B, 2), y, steps=..., null_class=K)``."""

    def model(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return flow_velocity(mixture, x, t, y)

    return model


class VelocityMLP(torch.nn.Module):
    """A small learned velocity model for points (lab 10's reflow): model(x, t, y) -> v_hat, shaped like x.

    x: [B, 2] or [B, 2, 1, 1] (points as one-pixel images, for the lab's [B, C, H, W] functions); t: float [B]
    in [0, 1]; y: int64 [B], ignored (the toy's flow is unconditional). t enters as t and sin / cos of
    2 pi k t, k = 1, 2, 3, so that the network can bend its field quickly in t; three hidden layers with SiLU."""

    def __init__(self, hidden: int = 128, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(2 + 7, hidden),
            torch.nn.SiLU(),
            torch.nn.Linear(hidden, hidden),
            torch.nn.SiLU(),
            torch.nn.Linear(hidden, hidden),
            torch.nn.SiLU(),
            torch.nn.Linear(hidden, 2),
        )
        with torch.no_grad():  # seeded weights (PyTorch's default init, from our generator)
            for layer in self.net:
                if isinstance(layer, torch.nn.Linear):
                    bound = 1 / math.sqrt(layer.in_features)
                    layer.weight.uniform_(-bound, bound, generator=g)
                    layer.bias.uniform_(-bound, bound, generator=g)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        points = x.reshape(x.shape[0], 2).to(self.net[0].weight.dtype)  # [B, 2]
        tt = t.to(points.dtype).reshape(-1, 1).expand(x.shape[0], 1)  # [B, 1]
        k = torch.arange(1, 4, device=x.device, dtype=points.dtype)  # [3]
        features = torch.cat([points, tt, torch.sin(2 * math.pi * k * tt), torch.cos(2 * math.pi * k * tt)], 1)
        return self.net(features).reshape(x.shape).to(x.dtype)
