"""Checkpoints: save training state atomically, load it safely, and load a model for sampling.

A training checkpoint is one ``torch.save``d dict (read back with ``weights_only=True``: plain tensors,
numbers, strings, lists and dicts only, so loading a file never runs code from it):

    labkit      {"format": "labkit-ddpm", "version": 1}    what this file is
    model, ema  state dicts of the network and its EMA copy (the EMA weights are the ones to sample with)
    optimizer, scaler                                       AdamW and GradScaler state (scaler {} if unused)
    step, elapsed_s                                         optimiser steps done, training seconds so far
    rng         {"torch": ByteTensor, "cuda": [ByteTensor] or None, "data": ByteTensor}
    unet        UNetConfig as a dict;  schedule, T: the noise schedule;  train: TrainConfig as a dict

A *release* checkpoint (``export_release``) keeps only ``ema`` (fp16), the configs and ``quality``: it is
what ships as ``labkit/assets/mnist_ddpm.pt``.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from pathlib import Path

import torch

from labkit.device import pick_device
from labkit.errors import LabkitError, one_line

FORMAT = "labkit-ddpm"
VERSION = 1
ASSET_PATH = Path(__file__).resolve().parent / "assets" / "mnist_ddpm.pt"
# sha256 of the shipped checkpoint (docs/training.md says how it was made).
ASSET_SHA256 = "4cf4675b258a814b64cba16319839ff2f38e87a7398b02948a5009900e8d71bc"
# The few-step model distilled from it (``labkit.distill``; docs/benchmarks.md, issue 28): ``model="fast"``.
FAST_ASSET_PATH = ASSET_PATH.with_name("mnist_fast.pt")
FAST_ASSET_SHA256 = "0fb6f1fe1523609e293dbc550bb7380d2e6df7b738689c4ea33723a0f18adf62"
SHIPPED = ("default", "fast")


def shipped_file(name: str) -> tuple[Path, str | None]:
    """(path, expected sha256) of a shipped model, read when asked (tests may change them)."""
    if name not in SHIPPED:
        raise LabkitError(f"unknown shipped model {name!r}: choose one of {', '.join(SHIPPED)}")
    return (ASSET_PATH, ASSET_SHA256) if name == "default" else (FAST_ASSET_PATH, FAST_ASSET_SHA256)


def save_checkpoint(path, state: dict) -> Path:
    """Write ``state`` to ``path`` so that the file is always either the old one or the complete new one.

    The bytes go to a temporary file in the same folder, are flushed and fsync'ed to disk, and only then
    renamed over ``path`` with os.replace (atomic on POSIX and Windows). A crash or Ctrl-C in the middle
    leaves the previous good checkpoint untouched (and at worst a stray ``.tmp`` file, removed here when
    Python gets the chance).
    """
    path = Path(path)
    state = {"labkit": {"format": FORMAT, "version": VERSION}, **state}
    try:
        if path.is_dir():
            raise IsADirectoryError(21, "is a folder", str(path))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise LabkitError(f"cannot write checkpoint {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except OSError as exc:  # disk full, quota, permissions: the previous file is untouched
        Path(tmp).unlink(missing_ok=True)
        raise LabkitError(f"cannot write checkpoint {path} ({exc.strerror or exc}); the previous one is kept") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable (POSIX; not possible on Windows)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
    return path


def load_checkpoint(path, map_location="cpu") -> dict:
    """Read a checkpoint written by ``save_checkpoint``; LabkitError with one clear line if it cannot.

    Tensors load onto ``map_location`` (default the CPU: a checkpoint saved on a GPU opens on any machine;
    None keeps the devices they were saved from)."""
    path = Path(path)
    if path.is_dir():
        raise LabkitError(f"checkpoint {path} is a folder, not a checkpoint file (did you mean {path / 'last.pt'}?)")
    if not path.is_file():
        raise LabkitError(f"checkpoint {path} not found")
    if _is_text_file(path):  # e.g. a log or a README given by mistake: torch.load would say "KeyError: 101"
        raise LabkitError(
            f"{path} is not a labkit checkpoint (it is a text file; checkpoints are written by "
            "labkit train, e.g. runs/mnist/last.pt)"
        )
    try:
        # torch.save writes a zip with a CRC32 per record, but torch.load never checks them: a flipped
        # bit in the weights would load silently. zipfile checks them (fast: about 1 GB/s).
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                bad = zf.testzip()
            if bad is not None:
                raise LabkitError(
                    f"checkpoint {path} is truncated or corrupt (checksum mismatch in {bad.split('/')[-1]!r})"
                )
        state = torch.load(path, map_location=map_location, weights_only=True)
    except LabkitError:
        raise
    except Exception as exc:  # truncated zip, random bytes, a pickle with code in it...
        reason = one_line(exc, 160)
        raise LabkitError(f"checkpoint {path} is truncated or corrupt ({type(exc).__name__}: {reason})") from None
    tag = state.get("labkit") if isinstance(state, dict) else None
    if not isinstance(tag, dict) or tag.get("format") != FORMAT:
        raise LabkitError(f"{path} is not a labkit checkpoint (no 'labkit' format tag)")
    if tag.get("version", 0) > VERSION:
        raise LabkitError(
            f"checkpoint {path} has format version {tag['version']}; this labkit reads up to {VERSION}: upgrade labkit"
        )
    return state


def _is_text_file(path, probe: int = 4096) -> bool:
    """Does the file start with printable UTF-8 text? (torch files start with a zip or pickle header, which
    are not; an empty file is not text either: it is a truncated checkpoint.)"""
    with open(path, "rb") as f:
        head = f.read(probe)
    if not head or b"\x00" in head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # only a multi-byte character cut by the probe's end is allowed
            return False
        text = head[: exc.start].decode("utf-8")
    return all(c.isprintable() or c in "\t\n\r\f\v" for c in text)


def check_same(path, what: str, saved: dict, current: dict, ignore=()) -> None:
    """Raise LabkitError naming the first field where a resumed run's config differs from the checkpoint's."""
    for key in sorted(set(saved) | set(current)):
        if key in ignore:
            continue
        a, b = saved.get(key), current.get(key)
        if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
            a, b = list(a), list(b)
        if isinstance(a, dict) and isinstance(b, dict):  # name the nested field: train.unet.base_channels
            check_same(path, f"{what}.{key}", a, b)
            continue
        if a != b:
            raise LabkitError(
                f"cannot resume from {path}: it was trained with {what}.{key}={a!r} but the config asks for "
                f"{b!r}; use resume=False (--no-resume) or another out dir"
            )


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def export_release(src, dst, *, dtype=torch.float16, quality: dict | None = None) -> Path:
    """Write a small release checkpoint: EMA weights (cast to ``dtype``), configs, step and ``quality``."""
    state = load_checkpoint(src, map_location="cpu")
    ema = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in state["ema"].items()}
    keep = {k: state[k] for k in ("unet", "schedule", "T", "train", "step", "elapsed_s") if k in state}
    return save_checkpoint(dst, {"ema": ema, **keep, "quality": quality or {}})


def load_model(path=None, device=None, *, shipped: str = "default"):
    """A model ready to sample with: ``(model, schedule, meta)``.

    path: a training or release checkpoint; None loads the shipped one named by ``shipped``: "default"
    (``labkit/assets/mnist_ddpm.pt``) or "fast" (``mnist_fast.pt``, the few-step model of ``labkit.distill``),
    its sha256 checked first. The EMA weights are used when present. The model is float32, in eval
    mode, on ``device`` (default: the best available, see ``labkit.device.pick_device``). A fast checkpoint
    (one with a "fast" entry) comes back as ``vpred.VStudent``: a noise predictor like the others.
    meta: {"step", "train" (TrainConfig dict), "unet", "schedule", "T", "quality", "fast", "path"}.
    """
    from labkit.schedules import make_schedule
    from labkit.unet import UNet, UNetConfig

    if path is None:
        path, expected = shipped_file(shipped)
        if not path.is_file():
            raise LabkitError(f"the shipped checkpoint {path} is missing: reinstall labkit")
        digest = file_sha256(path)
        if expected is not None and digest != expected:
            raise LabkitError(
                f"the shipped checkpoint {path} is corrupt (sha256 {digest[:12]}..., expected {expected[:12]}...): reinstall labkit"
            )
    state = load_checkpoint(path, map_location="cpu")
    try:
        config = UNetConfig.from_dict(state["unet"])
        weights = state["ema"] if "ema" in state else state["model"]
        model = UNet(config)
        model.load_state_dict({k: v.float() for k, v in weights.items()})
        schedule = make_schedule(state["schedule"], int(state["T"]))
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        reason = one_line(exc, 200)
        raise LabkitError(f"checkpoint {path} does not hold a usable model ({type(exc).__name__}: {reason})") from None
    device = pick_device(device)
    meta = {k: state.get(k) for k in ("step", "train", "unet", "schedule", "T", "quality", "fast")}
    meta["path"] = str(path)
    if meta["fast"]:  # a v-predicting student: wrapped as a noise predictor for every sampler
        from labkit.vpred import VStudent

        model = VStudent(model, schedule)
    if device.type == "cpu":  # oneDNN's fast convolution layout: ~20% faster sampling on a CPU
        model = model.to(memory_format=torch.channels_last)
    return model.to(device).eval().requires_grad_(False), schedule, meta
