"""CLIP scores for digits: zero-shot "which digit is this?" and "clear or blurry?", on open_clip.

CLIP (Radford et al. 2021) embeds images and texts in one space; the cosine similarity between an
image and a caption, times the model's learned temperature (``logit_scale``), is a logit. A softmax
over captions for the ten digits is a zero-shot classifier (their sec. 3.1.2), and averaging the
embeddings of several phrasings of each caption ("prompt ensembling", their sec. 3.1.4) makes it less
sensitive to wording.

Zero-shot CLIP is weak on MNIST (10-60% depending on model and prompts), so its score for generated
digits only means something beside the same score for real MNIST digits with the same prompts:
``ClipScorer.calibrate`` measures that reference, and the report prints both side by side.

Weights: ``ClipScorer.from_pretrained`` downloads them through open_clip (works in Colab, needs the
internet once). Offline, ``tiny_clip_scorer`` builds a small randomly initialised open_clip model through
the same code path: the numbers are meaningless, the shapes and plumbing are real (used by the tests).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from labkit.data import DIGIT_NAMES
from labkit.device import pick_device
from labkit.embeddings import cosine_similarity
from labkit.errors import LabkitError, LabkitTypeError, LabkitValueError, one_line
from labkit.evaluation.classifier import check_images, per_digit_mean
from labkit.evaluation.clip_weights import (  # noqa: F401  (the weights lookup, also reachable from here)
    OPENAI_MEAN,
    OPENAI_STD,
    TINY_CLIP_CONFIG,
    TINY_CLIP_NAME,
    cached_weights,
    hub_reachable,
    model_preprocess_cfg,
    parse_clip_spec,
    parse_preprocess,
    register_tiny_clip_config,
)


@dataclass(frozen=True)
class PromptSet:
    """Caption templates. ``{k}`` becomes the digit ("7"), ``{name}`` its word ("seven").

    digit:  ensembled into one text embedding per digit, for the zero-shot softmax over ten digits.
    clear / blurry: for the contrast P(clear) = softmax over [clear_k, blurry_k]; blurry templates may
            leave out the digit.
    """

    digit: tuple[str, ...] = (
        "a handwritten number {k}",
        "a photo of the digit {k}",
        "the number {k} written by hand",
        "a handwritten {name}",
        "the digit {name}",
    )
    clear: tuple[str, ...] = ("a clear handwritten number {k}", "a neatly written digit {name}")
    blurry: tuple[str, ...] = ("a blurry number", "an unreadable smudge", "a blurry, illegible scribble")

    def __post_init__(self):
        for kind in ("digit", "clear", "blurry"):
            templates = getattr(self, kind)
            if isinstance(templates, str) or not templates:
                raise LabkitValueError(f"PromptSet.{kind} must be a non-empty tuple of template strings.")
            for t in templates:
                try:
                    t.format(k="7", name="seven")
                except (KeyError, IndexError, ValueError) as exc:
                    raise LabkitValueError(f"Prompt template {t!r} may only use {{k}} and {{name}} ({exc}).") from None
                if kind != "blurry" and "{k}" not in t and "{name}" not in t:
                    raise LabkitValueError(f"Prompt template {t!r} must mention the digit as {{k}} or {{name}}.")

    @staticmethod
    def fill(templates: Sequence[str], digit: int) -> list[str]:
        return [t.format(k=str(digit), name=DIGIT_NAMES[digit]) for t in templates]


@dataclass(frozen=True)
class ClipScores:
    """Per-sample CLIP scores for N images with intended digits ``labels``.

    cosine [N,10]  cosine similarity to each digit's caption embedding
    probs [N,10]   zero-shot softmax(logit_scale * cosine): each row sums to 1
    predicted [N]  argmax digit;  intended_prob [N]: probs at the intended digit
    clear_prob [N] P(clear) from softmax over ["clear handwritten number k", "blurry number"]
    """

    labels: torch.Tensor
    cosine: torch.Tensor
    probs: torch.Tensor
    clear_prob: torch.Tensor
    predicted: torch.Tensor = field(init=False)
    intended_prob: torch.Tensor = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "predicted", self.probs.argmax(dim=1))
        object.__setattr__(self, "intended_prob", self.probs.gather(1, self.labels[:, None])[:, 0])

    def per_digit(self) -> dict[str, list]:
        """Means per intended digit: {"accuracy", "intended_prob", "clear_prob": [10] (None if absent), "count"}."""
        correct = (self.predicted == self.labels).float()
        return {
            "accuracy": per_digit_mean(correct, self.labels),
            "intended_prob": per_digit_mean(self.intended_prob, self.labels),
            "clear_prob": per_digit_mean(self.clear_prob, self.labels),
            "count": torch.bincount(self.labels, minlength=10)[:10].tolist(),
        }

    def overall(self) -> dict[str, float]:
        return {
            "accuracy": float((self.predicted == self.labels).float().mean()),
            "intended_prob": float(self.intended_prob.mean()),
            "clear_prob": float(self.clear_prob.mean()),
        }


def zero_shot_probs(cosine: torch.Tensor, logit_scale: float) -> torch.Tensor:
    """CLIP's zero-shot classifier (Radford et al. 2021, Figure 3): softmax over the K captions of
    logit_scale * cosine, so each row sums to 1.   (lab 06)

    cosine [N, K] (``labkit.embeddings.cosine_similarity(image_emb, text_emb)``), logit_scale: CLIP's learned
    temperature (about 100) -> probabilities [N, K].
    """
    return (logit_scale * cosine).softmax(dim=-1)


def clip_preprocess(images: torch.Tensor, size: int, mean, std, *, invert: bool = False, clamp: bool = True):
    """Grey digits -> what a CLIP image encoder reads (Radford et al. 2021; open_clip's preprocess, on tensors):   (lab 06)

        x = clamp(bicubic_resize(images, S x S), 0, 1)        (align_corners=False, as torchvision's Resize)
        out[:, c] = (x - mean[c]) / std[c]                    for the three colour channels c = R, G, B

    images [B, 1, H, W] in [0, 1]; size S; mean, std: three numbers each (the model's, e.g. OPENAI_MEAN /
    OPENAI_STD) -> [B, 3, S, S] in the images' dtype. The grey channel is copied into R, G and B. ``clamp``
    clips the bicubic overshoot (CLIP guidance turns it off: a clamp zeroes the gradient outside [0, 1]);
    ``invert`` makes dark digits on white."""
    x = 1 - images if invert else images
    x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)  # [B, 1, S, S]
    if clamp:
        x = x.clamp(0, 1)
    x = x.expand(-1, 3, -1, -1)  # grey -> RGB (a view, no copy)
    mean = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def prompt_ensemble(text_emb: torch.Tensor) -> torch.Tensor:
    """Prompt ensembling (Radford et al. 2021, sec. 3.1.4): one caption embedding per class from several
    phrasings ("templates") of it:   (lab 06)

        v_k = m_k / ||m_k||,   m_k = (1/P) sum_p e_pk / ||e_pk||

    text_emb [P, K, D]: template p's embedding of class k -> [K, D], unit rows."""
    unit = F.normalize(text_emb, dim=-1)  # [P, K, D] each phrasing at length 1
    return F.normalize(unit.mean(dim=0), dim=-1)  # [K, D]


def clear_probability(image_emb, clear_emb, blurry_emb, logit_scale: float) -> torch.Tensor:
    """CLIP's "clear or blurry?" probability: its zero-shot softmax over two captions per image,   (lab 06)

        p_n = exp(s cos(u_n, c_n)) / (exp(s cos(u_n, c_n)) + exp(s cos(u_n, b_n))) = sigmoid(s (cos(u_n, c_n) - cos(u_n, b_n)))

    image_emb, clear_emb, blurry_emb: [N, D], row n the image and the two captions it is compared with (a
    clear and a blurry caption of its intended digit); s = logit_scale -> [N]."""
    u = F.normalize(image_emb, dim=-1)  # [N, D]
    clear = (u * F.normalize(clear_emb, dim=-1)).sum(dim=-1)  # [N] cos(u_n, c_n)
    blurry = (u * F.normalize(blurry_emb, dim=-1)).sum(dim=-1)  # [N] cos(u_n, b_n)
    return torch.sigmoid(logit_scale * (clear - blurry))


def clip_score(image_emb: torch.Tensor, text_emb: torch.Tensor, weight: float = 100.0) -> torch.Tensor:
    """CLIPScore (Hessel et al. 2021, eq. 1), one number per image-caption pair:   (lab 06)

        CLIP-S(u_n, v_n) = w * max(cos(u_n, v_n), 0)

    image_emb, text_emb: [N, D], row n an image and its own caption -> [N]. Hessel et al. take w = 2.5;
    torchmetrics and most papers on text-to-image models report w = 100, the default here."""
    cos = (F.normalize(image_emb, dim=-1) * F.normalize(text_emb, dim=-1)).sum(dim=-1)  # [N]
    return weight * cos.clamp(min=0)


@dataclass(frozen=True)
class Calibration:
    """The CLIP scores of a set of digits, summarised; from real digits it is the reference that
    ``ClipScorer.relative`` divides by (``ClipScorer.calibrate`` makes it).

    per_digit  {"accuracy", "intended_prob", "clear_prob": [10] means (None if absent), "count": [10]}
    overall    {"accuracy", "intended_prob", "clear_prob"}: means over all digits
    n          how many digits were scored
    ``cal["per_digit"]`` reads like ``cal.per_digit``: calibrate() used to return a dict.
    """

    per_digit: dict[str, list]
    overall: dict[str, float]
    n: int

    @classmethod
    def from_scores(cls, scores: ClipScores) -> Calibration:
        return cls(per_digit=scores.per_digit(), overall=scores.overall(), n=len(scores.labels))

    def __getitem__(self, key: str):
        if key not in ("per_digit", "overall", "n"):
            raise KeyError(key)
        return getattr(self, key)


class ClipScorer:
    """Scores digit images with a CLIP model; text embeddings are computed once per caption and cached.

    Build with ``from_pretrained`` (downloads weights) or ``from_model`` (any open_clip-like model with
    ``encode_image``, ``encode_text`` and ``logit_scale``, plus its tokenizer).
    """

    def __init__(
        self,
        model,
        tokenizer: Callable[[list[str]], torch.Tensor],
        *,
        image_size: int,
        mean: Sequence[float] = OPENAI_MEAN,
        std: Sequence[float] = OPENAI_STD,
        prompts: PromptSet = PromptSet(),
        name: str = "custom",
        batch_size: int = 256,
        invert: bool = False,
    ):
        if not (hasattr(model, "encode_image") and hasattr(model, "encode_text")):
            raise LabkitTypeError(
                "ClipScorer needs a CLIP model with encode_image and encode_text (e.g. from open_clip)."
            )
        if not isinstance(prompts, PromptSet):
            raise LabkitTypeError(f"prompts must be a PromptSet, got {type(prompts).__name__}.")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.image_size = int(image_size)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.prompts = prompts
        self.name = name
        self.batch_size = batch_size
        self.invert = invert  # MNIST is white on black; photos of handwriting are dark on light
        self._text_cache: dict[str, torch.Tensor] = {}  # caption -> normalised embedding [D] (CPU)
        self.calibration: Calibration | None = None  # the last calibrate(), for the old relative(scores)

    # --- construction --------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        model_name: str = "ViT-B-32",
        pretrained: str = "laion2b_s34b_b79k",
        device=None,
        **kwargs,
    ) -> "ClipScorer":
        """Load an open_clip model with its weights (downloaded from the hub on first use).

        device: default ``labkit.device.pick_device()`` (cuda, mps, cpu). Raises LabkitError when weights cannot be loaded.
        """
        import open_clip

        device = pick_device(device)
        weights = pretrained
        if not hub_reachable():  # offline: use the cached file at once instead of ~1 minute of retries
            weights = cached_weights(model_name, pretrained)
            if weights is None:
                raise LabkitError(
                    f"CLIP weights {model_name}:{pretrained} cannot be downloaded (no connection to the Hugging Face "
                    f"hub) and are not cached; they need internet access on first use (skip CLIP scores offline)."
                )
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=weights, device=device)
            tokenizer = open_clip.get_tokenizer(model_name)
        except Exception as exc:
            reason = one_line(f"{type(exc).__name__}: {exc}", 240)
            raise LabkitError(
                f"CLIP weights {model_name}:{pretrained} cannot be downloaded or loaded ({reason}); "
                f"they need internet access on first use (skip CLIP scores offline)."
            ) from exc
        return cls.from_model(model, preprocess, tokenizer, name=f"{model_name}:{pretrained}", **kwargs)

    @classmethod
    def from_model(cls, model, preprocess_or_image_size, tokenizer, **kwargs) -> "ClipScorer":
        """Wrap an already built model. ``preprocess_or_image_size``: open_clip's preprocess transform
        (its resize and normalisation are read from it) or the input size as an int; mean/std then come
        from the model's preprocess config (open_clip) or the OpenAI defaults."""
        cfg = model_preprocess_cfg(model)
        if isinstance(preprocess_or_image_size, int):
            size, mean, std = preprocess_or_image_size, None, None
        else:
            size, mean, std = parse_preprocess(preprocess_or_image_size)
        size = size or cfg.get("size")
        size = size[0] if isinstance(size, (tuple, list)) else size
        if size is None:
            raise LabkitValueError("Could not tell the CLIP model's image size; pass it as an int.")
        kwargs.setdefault("mean", mean or tuple(cfg.get("mean", OPENAI_MEAN)))
        kwargs.setdefault("std", std or tuple(cfg.get("std", OPENAI_STD)))
        return cls(model, tokenizer, image_size=size, **kwargs)

    # --- embeddings ----------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype  # fp16/bf16 models get inputs of their own precision

    @property
    def logit_scale(self) -> float:
        """CLIP's learned inverse temperature exp(t), capped at 100 as in training."""
        scale = getattr(self.model, "logit_scale", None)
        return 100.0 if scale is None else float(torch.as_tensor(scale).detach().float().exp().clamp(max=100).mean())

    def preprocess(self, images: torch.Tensor, *, clamp: bool = True) -> torch.Tensor:
        """Grey [B,1,28,28] in [0,1] -> normalised RGB [B,3,S,S] for the model, with torch ops (any device).

        clamp: clip the bicubic overshoot to [0, 1]; CLIP guidance turns it off (a clamp would zero the
        gradient of every pixel outside [0, 1])."""
        mean, std = self.mean.flatten().tolist(), self.std.flatten().tolist()
        return clip_preprocess(images.float(), self.image_size, mean, std, invert=self.invert, clamp=clamp)

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor, *, progress: bool | None = None) -> torch.Tensor:
        """Unit-norm image embeddings [N, D] (float32, CPU), in batches.

        Each 28x28 batch is moved to the model's device before resizing (moving 28x28 is cheaper than SxS).
        ``progress``: tqdm bar; by default only for more than 2000 images.
        """
        check_images(images)
        from tqdm.auto import tqdm

        starts = range(0, len(images), self.batch_size)
        show = progress if progress is not None else len(images) > 2000
        out = []
        for i in tqdm(starts, desc="CLIP images", disable=not show, leave=False):
            x = self.preprocess(images[i : i + self.batch_size].to(self.device)).to(self.dtype)
            out.append(F.normalize(self.model.encode_image(x).float(), dim=-1).cpu())
        return torch.cat(out) if out else torch.empty(0, 0)

    @torch.no_grad()
    def encode_text(self, captions: Sequence[str]) -> torch.Tensor:
        """Unit-norm text embeddings [P, D] for captions; each caption is encoded at most once (cached)."""
        new = [c for c in dict.fromkeys(captions) if c not in self._text_cache]
        if new:
            tokens = self.tokenizer(new).to(self.device)  # [P, context_length] int64
            emb = F.normalize(self.model.encode_text(tokens).float(), dim=-1).cpu()
            self._text_cache.update(zip(new, emb))
        return torch.stack([self._text_cache[c] for c in captions])

    def ensemble(self, templates: Sequence[str]) -> torch.Tensor:
        """One embedding per digit [10, D]: the re-normalised mean over templates (prompt ensembling)."""
        emb = torch.stack([self.encode_text(PromptSet.fill(templates, k)) for k in range(10)], dim=1)  # [P, 10, D]
        return prompt_ensemble(emb)

    # --- scores --------------------------------------------------------------------------------

    def score(self, images: torch.Tensor, labels: torch.Tensor, *, progress: bool | None = None) -> ClipScores:
        """Zero-shot digit probabilities and P(clear) for images [N,1,28,28] in [0,1] with intended labels [N]."""
        labels = torch.as_tensor(labels).long().cpu()
        if labels.shape != (len(images),):
            raise LabkitValueError(f"labels must have shape [{len(images)}], got {list(labels.shape)}.")
        if len(labels) and (labels.min() < 0 or labels.max() > 9):
            raise LabkitValueError("labels must be digits 0..9.")
        img = self.encode_images(images, progress=progress)  # [N,D]
        scale = self.logit_scale
        cosine = cosine_similarity(img, self.ensemble(self.prompts.digit))  # [N,10]
        probs = zero_shot_probs(cosine, scale)  # [N,10]
        clear, blurry = self.ensemble(self.prompts.clear)[labels], self.ensemble(self.prompts.blurry)[labels]  # [N, D]
        clear_prob = clear_probability(img, clear, blurry, scale)  # [N]
        return ClipScores(labels=labels, cosine=cosine, probs=probs, clear_prob=clear_prob)

    def calibrate(self, real_images: torch.Tensor, real_labels: torch.Tensor, **kwargs) -> Calibration:
        """The same per-digit scores on real digits (e.g. 1000 MNIST test digits, in [0,1]): the reference
        to pass to ``relative`` and ``describe``."""
        calibration = Calibration.from_scores(self.score(real_images, real_labels, **kwargs))
        self.calibration = calibration  # only for the old form relative(scores), without a calibration
        return calibration

    def _reference(self, calibration, key: str) -> tuple[Calibration, str]:
        """(calibration, key) for relative/describe: an omitted calibration is the last one ``calibrate``
        returned (the old form), and the old positional key ``relative(scores, "clear_prob")`` still works."""
        if isinstance(calibration, str):
            calibration, key = None, calibration
        calibration = calibration if calibration is not None else self.calibration
        if calibration is None:
            raise LabkitError("Call ClipScorer.calibrate(real_images, real_labels) before relative().")
        return calibration, key

    def relative(
        self, scores: ClipScores, calibration: Calibration | None = None, key: str = "intended_prob"
    ) -> list[float | None]:
        """Per-digit generated / real ratio of a score (1.0 = as good as real digits); ``calibration``: the
        real digits' scores, from ``calibrate``."""
        calibration, key = self._reference(calibration, key)
        gen, real = scores.per_digit()[key], calibration.per_digit[key]
        return [g / r if g is not None and r else None for g, r in zip(gen, real)]

    def describe(
        self, scores: ClipScores, calibration: Calibration | None = None, key: str = "intended_prob"
    ) -> list[str]:
        """Sentences such as 'generated 7s reach 80% of what real 7s get (CLIP intended_prob 0.41 vs 0.51)'."""
        calibration, key = self._reference(calibration, key)
        ratios = self.relative(scores, calibration, key)
        gen, real = scores.per_digit()[key], calibration.per_digit[key]
        return [
            f"generated {k}s reach {r:.0%} of what real {k}s get (CLIP {key} {g:.2f} vs {rr:.2f})"
            for k, (r, g, rr) in enumerate(zip(ratios, gen, real))
            if r is not None
        ]


def tiny_clip_scorer(seed: int = 0, device=None, **kwargs) -> ClipScorer:
    """A randomly initialised tiny open_clip model (about 3.4M parameters, mostly the token table) as a
    ClipScorer: the real open_clip code path, no download. Its scores are meaningless; use for tests/demos.

    Initialisation uses a forked RNG seeded with ``seed``: the global RNG is left untouched.
    """
    import open_clip

    name = register_tiny_clip_config()
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # silence open_clip's "initialized randomly" warning: that is the point
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=None, device=device or "cpu")
    finally:
        logging.disable(previous)
    tokenizer = open_clip.get_tokenizer(name)
    return ClipScorer.from_model(model, preprocess, tokenizer, name=f"{name}:random{seed}", **kwargs)
