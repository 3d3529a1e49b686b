"""Device and precision choice, in one place: the bottom layer of labkit (imports only torch and errors).

    pick_device(None)           cuda if available, else Apple's mps, else cpu; an explicit choice is honoured
    precision_for("cuda", (7, 5))  -> (torch.float16, True)     the pure rule, testable without a GPU
    resolve_precision("auto", device) -> (autocast dtype or None, use a GradScaler)

Every part of labkit that picks a device calls ``pick_device`` (training, ``load_model``, ``labkit
sample/train/evaluate/info``, CLIP scoring, the notebooks' ``colab.setup``), so on a given machine they all
agree. The precision rule: bf16 keeps fp32's exponent range and needs no loss scaling, but GPUs before
Ampere (compute capability < 8.0, e.g. Colab's T4) have no fast bf16, so they get fp16, whose small range
needs a GradScaler; on the CPU (and MPS) mixed precision rarely pays off for small convolutions: fp32.
"""

from __future__ import annotations

import torch

from labkit.errors import LabkitValueError

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
DEVICE_ORDER = ("cuda", "mps", "cpu")  # what pick_device(None) tries, best first
BF16_MIN_CAPABILITY = (8, 0)  # Ampere: native bf16 tensor cores


def mps_available() -> bool:
    """Apple's Metal backend (MPS) is built into this torch and usable here."""
    mps = getattr(torch.backends, "mps", None)
    return mps is not None and mps.is_available()


def cuda_available() -> bool:
    return torch.cuda.is_available()


def pick_device(preference=None) -> torch.device:
    """The device to use: ``preference`` if given (checked to exist here), else cuda, else mps, else cpu.

    preference: None, a torch.device or a string such as "cpu", "cuda", "cuda:1", "mps".
    A device that does not exist here (a typo, 'cuda' without a GPU) is a LabkitValueError.
    """
    if preference is not None:
        try:
            device = torch.device(preference)
        except (RuntimeError, TypeError) as exc:
            raise LabkitValueError(f"unknown device {preference!r}: use cpu, cuda, cuda:N or mps ({exc})") from None
        if device.type == "cuda" and not cuda_available():
            raise LabkitValueError(f"device {str(device)!r} asked for, but CUDA is not available here: use cpu")
        if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
            raise LabkitValueError(f"device {str(device)!r} asked for, but there are {torch.cuda.device_count()} GPUs")
        if device.type == "mps" and not mps_available():
            raise LabkitValueError("device 'mps' asked for, but Apple's MPS is not available here: use cpu")
        return device
    if cuda_available():
        return torch.device("cuda")
    if mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def precision_for(
    device_type: str, capability: tuple[int, int] | None = None, precision: str = "auto"
) -> tuple[torch.dtype | None, bool]:
    """The pure rule: (autocast dtype or None for fp32, use a GradScaler) for a device type and, on CUDA,
    its compute capability (major, minor).

    auto: cuda with capability >= 8.0 -> bf16; cuda below (T4 7.5, V100 7.0) -> fp16 + GradScaler;
    cpu / mps -> fp32. An explicit "bf16" or "fp32" is honoured anywhere; "fp16" needs CUDA.
    """
    if precision not in PRECISIONS:
        raise LabkitValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        if device_type != "cuda":
            return None, False
        if capability is None:
            raise LabkitValueError("precision 'auto' on cuda needs the GPU's compute capability")
        precision = "bf16" if tuple(capability) >= BF16_MIN_CAPABILITY else "fp16"
    if precision == "fp32":
        return None, False
    if precision == "fp16" and device_type != "cuda":
        raise LabkitValueError(f"precision 'fp16' needs a CUDA GPU (device is {device_type}); use 'bf16' or 'fp32'")
    return (torch.bfloat16, False) if precision == "bf16" else (torch.float16, True)


def resolve_precision(precision: str, device) -> tuple[torch.dtype | None, bool]:
    """``precision_for`` on a real device: reads the GPU's compute capability when the device is CUDA."""
    device = torch.device(device)
    capability = torch.cuda.get_device_capability(device) if device.type == "cuda" else None
    return precision_for(device.type, capability, precision)


def describe(device) -> str:
    """One line naming the hardware: 'NVIDIA H200 (139 GiB, cc 9.0)' or 'cpu, 2 threads, 2 cores'."""
    import os

    device = torch.device(device)
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        return f"{p.name} ({p.total_memory / 2**30:.0f} GiB, cc {p.major}.{p.minor})"
    if device.type == "mps":
        return "Apple MPS"
    return f"{device.type}, {torch.get_num_threads()} threads, {os.cpu_count()} cores"
