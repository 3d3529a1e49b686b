"""Classifier-free guidance as a model wrapper (Ho & Salimans 2022, "Classifier-Free Diffusion Guidance").

One network, trained with label dropout, predicts both the conditional noise eps(x, t, y) and the
unconditional eps(x, t, no-class). Guidance extrapolates away from the unconditional prediction,
eq. 6 of the paper:

    eps_guided = (1 + w) * eps(x, t, y) - w * eps(x, t, null)
               = eps(x, t, y) + w * (eps(x, t, y) - eps(x, t, null))

w = 0 is the plain conditional model; larger w gives cleaner, more typical, less diverse digits.
(Some libraries use a "scale" s = 1 + w: s = 1 is conditional. Here w follows the paper.)
The wrapper is itself a ``model(x, t, y)``, so every sampler takes it unchanged.
"""

from __future__ import annotations

import numbers

import torch

from labkit.diffusion import Model
from labkit.errors import LabkitTypeError, LabkitValueError


def check_weight(w) -> float:
    """w as a float; LabkitTypeError if it is not a number, LabkitValueError if it is < 0 or NaN."""
    if isinstance(w, torch.Tensor) and w.numel() == 1:
        w = w.item()
    if not isinstance(w, numbers.Real) or isinstance(w, bool):
        raise LabkitTypeError(f"guidance weight w must be a number >= 0, got {type(w).__name__} {w!r}")
    if not (w >= 0) or w == float("inf"):  # also rejects NaN
        raise LabkitValueError(f"guidance weight w must be >= 0 (0 = plain conditional), got {w}")
    return float(w)


def cfg_combine(eps_cond: torch.Tensor, eps_uncond: torch.Tensor, w: float) -> torch.Tensor:
    """Eq. 6 of Ho & Salimans 2022: (1 + w) eps_cond - w eps_uncond."""
    return (1 + w) * eps_cond - w * eps_uncond


def cfg_eps(model: Model, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, w: float, null_class: int) -> torch.Tensor:
    """The guided noise prediction of ``model`` at (x, t, y) with weight w (Ho & Salimans 2022, eq. 6):   (lab 07)

        cfg_combine(model(x, t, y), model(x, t, null), w),   null = null_class for every image

    Both predictions come from one forward pass on a doubled batch [conditional; unconditional], which is
    faster than two passes on a GPU. x: [B, C, H, W]; t, y: int64 [B] -> [B, C, H, W]."""
    B = x.shape[0]
    null = torch.full_like(y, null_class)  # [B]: "no class" for every image
    eps = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null]))  # [2B, C, H, W]
    return cfg_combine(eps[:B], eps[B:], w)


class ClassifierFreeGuidance:
    """model(x, t, y) -> the guided noise prediction with weight w (Ho & Salimans 2022, eq. 6).

    ``cfg_eps`` at every call. Rows whose label already is the null class stay unconditional.
    """

    def __init__(self, model: Model, w: float, null_class: int):
        self.model, self.w, self.null_class = model, check_weight(w), int(null_class)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.w == 0:
            return self.model(x, t, y)
        return cfg_eps(self.model, x, t, y, self.w, self.null_class)


def guided(model: Model, w: float, null_class: int) -> Model:
    """Wrap ``model`` with classifier-free guidance of weight ``w`` (Ho & Salimans 2022, eq. 6).

    w = 0 returns the model itself."""
    if check_weight(w) == 0:
        return model
    return ClassifierFreeGuidance(model, w, null_class)


# --- classifier guidance (Dhariwal & Nichol 2021) --------------------------------------------------------


def classifier_grad(classifier, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """g = grad_{x_t} log p_phi(y | x_t, t), the classifier's pull towards class y (Dhariwal & Nichol 2021,   (lab 08)
    "Diffusion Models Beat GANs on Image Synthesis", Algorithms 1 and 2):

        log p_phi(y | x_t, t) = log_softmax(classifier(x_t, t))[y]     one number per image

    classifier(x [B, C, H, W], t [B]) -> logits [B, K] is a noise-aware classifier (it sees noisy x_t and t).
    The images of a batch do not interact, so the gradient of the *sum* over the batch of each image's own
    log-probability is, row by row, each image's own gradient. x_t is detached first (a fresh leaf), so the
    gradient reaches neither the sampler's graph nor the classifier's weights, and the call works under
    ``torch.no_grad()``. x_t: [B, C, H, W]; t, y: int64 [B] -> g [B, C, H, W] in x_t's dtype.
    """
    with torch.enable_grad():
        x = x_t.detach().requires_grad_(True)  # a leaf: autograd differentiates with respect to it
        log_probs = torch.log_softmax(classifier(x, t), dim=1)  # [B, K]
        chosen = log_probs[torch.arange(x.shape[0], device=x.device), y]  # [B]: log p(y_i | x_i)
        (grad,) = torch.autograd.grad(chosen.sum(), x)  # [B, C, H, W]
    return grad
