"""A small MNIST classifier: the judge of generated digits and the feature extractor for FID.

Why a digit classifier and not Inception-v3? The Inception network behind the usual FID (Heusel et al.
2017) was trained on ImageNet photos; on 28x28 grey digits its features mostly measure "this is not a
photo". A network trained on MNIST itself gives features that separate digits and strokes, which is what
the labs want to compare. Its numbers are not comparable with published (Inception) FIDs, only with each
other and with the real-digit floor (see ``fid.py``).

The shipped weights (``labkit/assets/mnist_classifier.pt``) were trained with ``train_classifier`` by
``benchmarks/train_classifier.py``; docs/evaluation.md records the recipe, accuracy and time.
Every function here takes images in [0, 1], shape [B, 1, 28, 28].
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from labkit.checkpoint import file_sha256  # noqa: F401  (also this module's name for it)
from labkit.errors import LabkitError, LabkitTypeError, LabkitValueError

WEIGHTS_PATH = Path(__file__).resolve().parent.parent / "assets" / "mnist_classifier.pt"
# sha256 of the shipped weights file; benchmarks/train_classifier.py prints the value for a new file.
WEIGHTS_SHA256 = "72c9dae2fdf7f4eb6b5f39e79608a42016356a281f64cb32a8a5a7bb90b093aa"
FEATURE_DIM = 128  # size of the penultimate layer, the space FID is measured in


def _block(c_in: int, c_out: int) -> nn.Sequential:
    # conv 3x3 -> BatchNorm -> ReLU: the standard small-CNN unit (BN lets a 3-epoch schedule use a high lr)
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


class MnistClassifier(nn.Module):
    """Four conv layers, global average pooling and one linear layer (about 100k parameters, 0.4 MB).

    x [B,1,28,28] in [0,1] -> 28x28x32 -> pool -> 14x14x32 -> 14x14x64 -> pool -> 7x7x128 -> mean -> [B,128]
    -> linear -> [B,10]. Most layers work at 14x14 or 7x7: about 9M multiply-adds per image, so three
    epochs train in minutes on two CPU cores.
    """

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.body = nn.Sequential(
            _block(1, 32),
            nn.MaxPool2d(2),  # [B,32,14,14]
            _block(32, 32),
            _block(32, 64),
            nn.MaxPool2d(2),  # [B,64,7,7]
            _block(64, FEATURE_DIM),  # [B,128,7,7]
        )
        self.head = nn.Linear(FEATURE_DIM, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations [B, 128]: the feature space of the classifier FID."""
        x = (x - 0.5) / 0.5  # [0,1] -> [-1,1]: centred inputs train faster
        return self.body(x).mean(dim=(2, 3))  # global average pool: [B,128,7,7] -> [B,128]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [B, 10]."""
        return self.head(self.features(x))


def _device_of(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def check_images(images, name: str = "images") -> torch.Tensor:
    """Validate a batch of digits for evaluation: a float tensor [N,1,28,28] in [0,1]."""
    if not isinstance(images, torch.Tensor):
        raise LabkitTypeError(f"{name} must be a torch.Tensor, got {type(images).__name__}.")
    if not images.is_floating_point():
        raise LabkitTypeError(f"{name} must be a float tensor in [0, 1], got dtype {images.dtype}.")
    if images.dim() != 4 or tuple(images.shape[1:]) != (1, 28, 28):
        raise LabkitValueError(f"{name} must have shape [N, 1, 28, 28], got {list(images.shape)}.")
    return images


@torch.no_grad()
def predict(
    classifier: nn.Module, images: torch.Tensor, *, batch_size: int = 1000, features: bool = False
) -> torch.Tensor:
    """Run the classifier in eval mode over batches: logits [N,10] (or features [N,128]) on the CPU.

    Batches are moved to the classifier's device and results come back to the CPU, so a 10k set never
    has to fit on the accelerator at once.
    """
    check_images(images)
    was_training = classifier.training
    classifier.eval()
    device = _device_of(classifier)
    fn = classifier.features if features else classifier
    out = []
    for i in range(0, len(images), batch_size):
        x = images[i : i + batch_size].to(device).float().contiguous(memory_format=torch.channels_last)
        out.append(fn(x).float().cpu())
    classifier.train(was_training)
    return torch.cat(out) if out else torch.empty(0, FEATURE_DIM if features else 10)


def per_digit_mean(values: torch.Tensor, labels: torch.Tensor, num_classes: int = 10) -> list[float | None]:
    """Mean of ``values`` [N] over each class; None for a class with no samples."""
    values, labels = values.double().cpu(), labels.long().cpu()
    sums = torch.zeros(num_classes, dtype=torch.float64).index_add_(0, labels, values)
    counts = torch.bincount(labels, minlength=num_classes)[:num_classes]
    return [float(s / c) if c > 0 else None for s, c in zip(sums, counts)]


def classifier_accuracy(
    images: torch.Tensor, labels: torch.Tensor, classifier: nn.Module | None = None, *, batch_size: int = 1000
) -> dict:
    """How often the classifier recognises each sample as its intended digit.

    Returns a dict:
      accuracy        overall fraction of argmax(logits) == label
      confidence      mean softmax probability of the intended digit (a softer score than accuracy)
      per_digit       {"accuracy": [10], "confidence": [10], "count": [10]} (None where a digit is absent)
      predicted       int64 [N] argmax classes;  intended_prob  float32 [N];  probs  float32 [N, 10]
    """
    check_images(images)
    labels = torch.as_tensor(labels).long().cpu()
    if labels.shape != (images.shape[0],):
        raise LabkitValueError(f"labels must have shape [{images.shape[0]}], got {list(labels.shape)}.")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise LabkitValueError("labels must be digits 0..9.")
    classifier = classifier if classifier is not None else load_classifier(images.device)
    probs = predict(classifier, images, batch_size=batch_size).softmax(dim=1)  # [N,10]
    predicted = probs.argmax(dim=1)
    correct = (predicted == labels).float()
    intended = probs.gather(1, labels[:, None])[:, 0]  # p(intended digit | x): [N]
    return {
        "accuracy": float(correct.mean()) if len(labels) else float("nan"),
        "confidence": float(intended.mean()) if len(labels) else float("nan"),
        "per_digit": {
            "accuracy": per_digit_mean(correct, labels),
            "confidence": per_digit_mean(intended, labels),
            "count": torch.bincount(labels, minlength=10)[:10].tolist(),
        },
        "predicted": predicted,
        "intended_prob": intended,
        "probs": probs,
    }


# --- Loading the shipped weights ------------------------------------------------------------------


_LOADED: dict[str, MnistClassifier] = {}


def load_classifier(device=None, *, path: str | Path | None = None, verify: bool = True) -> MnistClassifier:
    """The shipped classifier in eval mode (CPU unless ``device`` is given), its sha256 checked first.

    ``path`` loads another weights file (then the checksum is not checked). The result is cached per
    device: evaluation code may call this freely.
    """
    device = torch.device(device if device is not None else "cpu")
    path = Path(path) if path is not None else WEIGHTS_PATH
    key = f"{path}|{device}"
    if key in _LOADED:
        return _LOADED[key]
    if not path.exists():
        raise LabkitError(
            f"Classifier weights not found at {path}; reinstall labkit or run benchmarks/train_classifier.py."
        )
    if verify and path == WEIGHTS_PATH:
        digest = file_sha256(path)
        if digest != WEIGHTS_SHA256:
            raise LabkitError(
                f"Classifier weights {path} are corrupted (sha256 {digest[:12]}... expected "
                f"{WEIGHTS_SHA256[:12]}...); reinstall labkit."
            )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model = MnistClassifier()
        model.load_state_dict({k: v.float() for k, v in state.items()})
    except Exception as exc:
        raise LabkitError(f"Classifier weights {path} could not be loaded: {type(exc).__name__}: {exc}") from exc
    # channels_last: oneDNN's fast convolution layout on CPU (and Tensor Core friendly on GPU)
    model = model.to(device, memory_format=torch.channels_last).eval().requires_grad_(False)
    _LOADED[key] = model
    return model


# --- Training recipe -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassifierTrainConfig:
    """The recipe behind the shipped weights (3 epochs on 2 CPU cores, see docs/evaluation.md)."""

    epochs: int = 3
    batch_size: int = 128
    max_lr: float = 4e-3  # OneCycle peak (Smith & Topin 2019: "super-convergence")
    weight_decay: float = 5e-2  # AdamW's decoupled decay (Loshchilov & Hutter 2019)
    pct_start: float = 0.2  # fraction of steps spent warming up
    max_shift: int = 2  # augmentation: random translation of up to this many pixels
    label_smoothing: float = 0.05


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Translate each image by its own random (dy, dx) in [-max_shift, max_shift], filling with 0 (background).

    x [B,C,H,W] -> [B,C,H,W]. Done with gather on a padded copy: no Python loop over the batch.
    """
    if max_shift <= 0:
        return x
    b, c, h, w = x.shape
    s = max_shift
    padded = F.pad(x, (s, s, s, s))  # [B,C,H+2s,W+2s]
    off = torch.randint(0, 2 * s + 1, (2, b), generator=generator, device="cpu").to(x.device)  # [2,B]
    rows = off[0][:, None] + torch.arange(h, device=x.device)  # [B,H]
    cols = off[1][:, None] + torch.arange(w, device=x.device)  # [B,W]
    out = padded.gather(2, rows[:, None, :, None].expand(b, c, h, w + 2 * s))  # [B,C,H,W+2s]
    return out.gather(3, cols[:, None, None, :].expand(b, c, h, w))  # [B,C,H,W]


def train_classifier(
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    config: ClassifierTrainConfig = ClassifierTrainConfig(),
    generator: torch.Generator | None = None,
    log=print,
) -> MnistClassifier:
    """Train a fresh MnistClassifier on ``images`` [N,1,28,28] in [0,1] (on their device).

    AdamW + OneCycle learning rate, random shifts as augmentation, light label smoothing. Returns the
    model in eval mode. ``log`` receives a progress line per epoch (pass None for silence).
    """
    check_images(images)
    labels = labels.long().to(images.device)
    # channels_last lets oneDNN pick its fast convolution kernels: 5x faster training on CPU here
    model = MnistClassifier().to(images.device, memory_format=torch.channels_last)
    steps_per_epoch = math.ceil(len(images) / config.batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=config.max_lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=config.max_lr, total_steps=config.epochs * steps_per_epoch, pct_start=config.pct_start
    )
    start = time.perf_counter()
    for epoch in range(config.epochs):
        model.train()
        order = torch.randperm(len(images), generator=generator).to(images.device)
        total, correct, loss_sum = 0, 0, 0.0
        for i in range(0, len(images), config.batch_size):
            idx = order[i : i + config.batch_size]
            x = random_shift(images[idx], config.max_shift, generator).contiguous(memory_format=torch.channels_last)
            y = labels[idx]
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=config.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += len(y)
            correct += int((logits.argmax(1) == y).sum())
            loss_sum += float(loss.detach()) * len(y)
        if log is not None:
            log(
                f"epoch {epoch + 1}/{config.epochs}: loss {loss_sum / total:.4f}, "
                f"train acc {correct / total:.4f}, {time.perf_counter() - start:.0f}s"
            )
    return model.to(memory_format=torch.contiguous_format).eval()
