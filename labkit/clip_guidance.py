"""CLIP as a critic in the loop: steer sampling towards a caption with the gradient of CLIP's score.

Classifier guidance (Dhariwal & Nichol 2021, section 4 and Algorithm 2) adds the gradient of a classifier's
log-probability to the model's score. Since the noise prediction is a scaled score,
eps = -sqrt(1 - alpha_bar_t) * grad_x log p(x_t), adding s * grad log p(c | x_t) to the score means

    eps_guided = eps_hat - s * sqrt(1 - alpha_bar_t) * grad                (``guided_eps``)

Here the "classifier" is CLIP (Radford et al. 2021) and the log-probability is replaced by its logit for
a caption, logit_scale * cos(image embedding, caption embedding). CLIP was trained on clean images, not
on noisy x_t, so it looks at the model's current guess of the clean digit instead,

    x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps_hat) / sqrt(alpha_bar_t)

and the gradient flows from CLIP's score through x0_hat back to x_t (eps_hat is held fixed: no gradient
through the U-Net, so guidance costs one CLIP forward and backward per step). CLIP is an ordinary
differentiable network: its image encoder, resize and normalisation are all torch operations.

Raw gradient sizes differ by orders of magnitude between CLIP models and steps, so by default each
image's gradient is rescaled to unit root-mean-square before the step: ``scale`` is then the size of
the push in units of the noise itself (a common practical choice; set ``normalize=False`` for the raw rule).

    from labkit import guidance, samplers
    from labkit.clip_guidance import ClipGuidance
    model_cfg = guidance.guided(model, w=1.0, null_class=10)         # classifier-free guidance first
    critic = ClipGuidance(model_cfg, scorer, schedule, scale=2.0)     # then CLIP's push on top
    x = samplers.sample(critic, shape, y, schedule)                  # wrappers compose: any sampler takes them

This module never imports the U-Net: ``model`` is any callable model(x, t, y) -> eps_hat.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from labkit.data import DIGIT_NAMES, to_unit_range
from labkit.diffusion import Model, gather, predict_x0_from_eps
from labkit.errors import LabkitValueError
from labkit.schedules import Schedule


def guided_eps(eps_hat: torch.Tensor, grad: torch.Tensor, alpha_bar_t: torch.Tensor, scale: float) -> torch.Tensor:
    """eps_hat - scale * sqrt(1 - alpha_bar_t) * grad  (Dhariwal & Nichol 2021, Algorithm 2 / eq. 14).

    eps_hat, grad: [B, C, H, W]; alpha_bar_t: [B, 1, 1, 1] (or anything that broadcasts)."""
    return eps_hat - scale * (1 - alpha_bar_t).sqrt() * grad


def caption_texts(template: str, labels: Sequence[int]) -> list[str]:
    """One caption per label: ``{k}`` becomes the digit, ``{name}`` its word; a fixed caption stays as it is."""
    return [template.format(k=str(int(k)), name=DIGIT_NAMES[int(k) % 10]) for k in labels]


class ClipGuidance:
    """A model wrapper: model(x, t, y) -> the model's eps_hat pushed towards CLIP's caption for each y.

    model:     any model(x, t, y) -> eps_hat (e.g. a classifier-free guided U-Net).
    scorer:    a ``labkit.evaluation.ClipScorer`` (its model, preprocessing and text cache are used).
    schedule:  the noise schedule the model was trained with.
    scale:     guidance strength s (0 = the model unchanged).
    prompt:    caption template; ``{k}`` / ``{name}`` are filled with each row's label y.
    normalize: rescale each image's gradient to unit RMS (see the module docstring).
    Rows whose label is ``null_class`` (unconditional) are not guided.
    ``last_scores`` holds CLIP's logits for the x0_hat of the most recent call (for plots).
    """

    def __init__(
        self,
        model: Model,
        scorer,
        schedule: Schedule,
        *,
        scale: float = 1.0,
        prompt: str = "a handwritten number {k}",
        normalize: bool = True,
        null_class: int = 10,
    ):
        if not scale >= 0:
            raise LabkitValueError(f"scale must be >= 0, got {scale}")
        self.model, self.scorer, self.schedule = model, scorer, schedule
        self.scale, self.prompt, self.normalize, self.null_class = (
            float(scale),
            prompt,
            bool(normalize),
            int(null_class),
        )
        self.last_scores: torch.Tensor | None = None

    def text_embeddings(self, y: torch.Tensor) -> torch.Tensor:
        """Unit caption embeddings [B, D] for labels y (null-class rows get the digit-0 caption; they are not guided)."""
        labels = [int(k) if int(k) != self.null_class else 0 for k in y.tolist()]
        return self.scorer.encode_text(caption_texts(self.prompt, labels))

    def clip_logits(self, images01: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """logit_scale * cos(CLIP(images), text) per image [B]; differentiable in images [B,1,28,28] in [0,1].

        ``ClipScorer.preprocess`` without its clamp (a clamp would zero the gradient of every pixel outside [0, 1])."""
        s = self.scorer
        x = s.preprocess(images01, clamp=False)
        emb = F.normalize(s.model.encode_image(x).float(), dim=-1)  # [B, D]
        return s.logit_scale * (emb * text.to(emb.device)).sum(dim=-1)

    def gradient(self, x: torch.Tensor, t: torch.Tensor, eps_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """d(CLIP logit of x0_hat) / d x_t, [B, C, H, W], with eps_hat held fixed."""
        device = self.scorer.device
        with torch.enable_grad():
            xg = x.detach().to(device, torch.float32).requires_grad_(True)
            tt = t.to(device)
            x0_hat = predict_x0_from_eps(xg, tt, eps_hat.detach().to(device, torch.float32), self.schedule)
            logits = self.clip_logits(to_unit_range(x0_hat), self.text_embeddings(y))  # [-1,1] -> [0,1]
            (grad,) = torch.autograd.grad(logits.sum(), xg)
        self.last_scores = logits.detach().cpu()
        if self.normalize:
            rms = grad.pow(2).flatten(1).mean(dim=1).sqrt().clamp(min=1e-12)
            grad = grad / rms.view(-1, *([1] * (grad.dim() - 1)))
        return grad.to(x.device, x.dtype)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        eps_hat = self.model(x, t, y)
        if self.scale == 0:
            return eps_hat
        grad = self.gradient(x, t, eps_hat, y)
        grad = torch.where((y == self.null_class).view(-1, *([1] * (x.dim() - 1))), torch.zeros_like(grad), grad)
        ab = gather(self.schedule.alpha_bars, t, x)
        return guided_eps(eps_hat, grad, ab, self.scale).to(eps_hat.dtype)


@torch.no_grad()
def optimise_for_clip(
    scorer,
    start: torch.Tensor,
    labels: torch.Tensor,
    *,
    prompt: str = "a handwritten number {k}",
    steps: int = 50,
    lr: float = 0.02,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Change images directly to raise CLIP's score for their caption: gradient ascent on the pixels.

    start [B,1,28,28] in [0,1]; returns (images in [0,1], CLIP logits before [B], after [B]). Nothing keeps
    the result looking like a digit: this shows what CLIP rewards when it is the only judge.
    """
    guide = ClipGuidance(lambda x, t, y: x, scorer, None, prompt=prompt)
    text = guide.text_embeddings(labels)
    x = start.detach().float().to(scorer.device).clone()
    with torch.enable_grad():
        before = guide.clip_logits(x, text).detach().cpu()
        x.requires_grad_(True)
        opt = torch.optim.Adam([x], lr=lr)
        for _ in range(steps):
            loss = -guide.clip_logits(x, text).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                x.clamp_(0, 1)  # projected gradient ascent: stay a valid image
        x = x.detach()
        after = guide.clip_logits(x, text).detach().cpu()
    return x.cpu(), before, after
