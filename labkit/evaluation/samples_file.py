"""The samples file of ``labkit sample`` / ``labkit evaluate``: a torch dict {"images": float32 [N,1,28,28] in
[0,1], "labels": int64 [N], plus how the samples were drawn}. Written and read here only."""

from __future__ import annotations

from pathlib import Path

import torch

from labkit.errors import LabkitError, LabkitValueError, one_line
from labkit.evaluation.classifier import check_images


def save_samples_file(path, images: torch.Tensor, labels: torch.Tensor, **about) -> Path:
    """Write images [N,1,28,28] in [0,1] and labels [N] (plus ``about``: sampler, steps, ...) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"images": images.contiguous(), "labels": labels.cpu().long(), **about}, path)
    return path


# --- Reading ---------------------------------------------------------------------------------


def check_samples(images, labels) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate generated digits: images float [N,1,28,28] in [0,1], labels integer digits [N]."""
    if not isinstance(labels, torch.Tensor):
        raise LabkitValueError(f"labels must be a torch.Tensor, got {type(labels).__name__}.")
    check_images(images)
    if len(images) < 2:
        raise LabkitValueError(f"Need at least 2 samples to evaluate, got {len(images)}.")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise LabkitValueError(f"labels must be integers 0..9 (int64), got dtype {labels.dtype}.")
    if labels.shape != (len(images),):
        raise LabkitValueError(f"labels must have shape [{len(images)}] to match the images, got {list(labels.shape)}.")
    if labels.min() < 0 or labels.max() > 9:
        raise LabkitValueError(f"labels must be digits 0..9, found {int(labels.min())}..{int(labels.max())}.")
    if not torch.isfinite(images).all():
        raise LabkitValueError("images contain NaN or infinite values.")
    lo, hi = float(images.min()), float(images.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        hint = " (they look like [-1, 1]: convert with (x + 1) / 2)" if lo >= -1.001 and hi <= 1.001 else ""
        raise LabkitValueError(f"images must be in [0, 1], found values in [{lo:.3g}, {hi:.3g}]{hint}.")
    return images.float().clamp(0, 1), labels.long()


def load_samples_file(path) -> tuple[torch.Tensor, torch.Tensor]:
    """Read a file written by ``labkit sample``: torch dict {"images": float32 [N,1,28,28] in [0,1],
    "labels": int64 [N]}. Returns (images, labels) on the CPU; raises LabkitError naming the problem."""
    path = Path(path)
    if not path.is_file():
        raise LabkitError(f"Samples file {path} does not exist.")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        text = str(exc).lower()
        # pickled non-tensor objects (e.g. numpy arrays) name a global the safe unpickler refused;
        # random bytes fail as "unsupported operand" instead
        if "weights only load failed" in text and "unsupported operand" not in text:
            raise LabkitError(
                f"Samples file {path} holds objects other than tensors (numpy arrays?); save it with "
                f"torch.save({{'images': images, 'labels': labels}}, path) using torch tensors."
            ) from None
        reason = one_line(exc, 200)
        raise LabkitError(
            f"Samples file {path} is not a readable torch file ({type(exc).__name__}: {reason})."
        ) from None
    if not isinstance(data, dict):
        raise LabkitError(
            f"Samples file {path} must hold a dict with 'images' and 'labels', found a {type(data).__name__}."
        )
    missing = [k for k in ("images", "labels") if k not in data]
    if missing:
        lacking = " and ".join(repr(k) for k in missing)
        raise LabkitError(f"Samples file {path} lacks {lacking} (has {sorted(map(str, data))}).")
    for key in ("images", "labels"):
        if not isinstance(data[key], torch.Tensor):
            raise LabkitError(f"Samples file {path}: {key!r} must be a tensor, found {type(data[key]).__name__}.")
    try:
        return check_samples(data["images"], data["labels"])
    except LabkitError as exc:
        raise LabkitError(f"Samples file {path}: {exc}") from None
