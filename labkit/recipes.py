"""Training recipes: a TrainConfig for each kind of machine, chosen by measurement (docs/training.md).

    from labkit import recipes, training
    result = training.train(recipes.cpu(minutes=10))       # a laptop: ~10 minutes, >= 99% recognisable
    result = training.train(recipes.gpu())                 # Colab (T4) or better: a few minutes

Where the compute goes matters more than how much there is: the CPU recipe works on pixel-unshuffled
14x14x4 inputs (``UNetConfig(patch=2)``: 4x fewer positions per layer than 28x28) with a two-level
U-Net of about 0.8M parameters, so 2 cores see a few hundred thousand images in 10 minutes.
"""

from __future__ import annotations

from dataclasses import replace

from labkit.training import TrainConfig
from labkit.unet import UNetConfig

RECIPES = ("cpu", "gpu", "tiny")


def cpu(minutes: float | None = 10.0, **overrides) -> TrainConfig:
    """2-4 CPU cores, a time budget (default 10 minutes). channels_last: oneDNN's fast conv layout."""
    config = TrainConfig(
        unet=UNetConfig(base_channels=32, channel_mults=(1, 2), blocks_per_level=2, attention=True, patch=2),
        schedule="cosine",
        T=1000,
        batch_size=64,
        lr=2e-3,
        warmup_steps=100,
        lr_min_ratio=0.05,
        ema_decay=0.995,
        label_dropout=0.1,
        grad_clip=1.0,
        min_snr_gamma=5.0,
        precision="fp32",
        channels_last=True,
        total_steps=1_000_000,
        time_budget_s=None if minutes is None else 60.0 * minutes,
        checkpoint_every=500,
        sample_every=0,
        log_every=25,
        out_dir="runs/mnist-cpu",
        sampler="ddpm",
        sample_steps=16,
        guidance=0.4,
    )
    return replace(config, **overrides)


def gpu(steps: int = 3000, **overrides) -> TrainConfig:
    """One CUDA GPU (T4 and up): wider net, big batches, bf16/fp16 autocast, channels_last.

    Not measured in this repository yet (no GPU was available): sized from FLOP counts, see
    docs/benchmarks.md. 3000 steps x 512 = 1.5M images (26 epochs).
    """
    config = TrainConfig(
        unet=UNetConfig(base_channels=64, channel_mults=(1, 2), blocks_per_level=2, attention=True, patch=2),
        schedule="cosine",
        T=1000,
        batch_size=512,
        lr=2e-3,
        warmup_steps=200,
        lr_min_ratio=0.05,
        ema_decay=0.999,
        label_dropout=0.1,
        grad_clip=1.0,
        min_snr_gamma=5.0,
        precision="auto",
        channels_last="auto",
        total_steps=steps,
        time_budget_s=None,
        checkpoint_every=1000,
        sample_every=1000,
        log_every=100,
        out_dir="runs/mnist-gpu",
        sampler="dpmpp_2m",
        sample_steps=15,
        guidance=1.0,
    )
    return replace(config, **overrides)


def tiny(steps: int = 20, **overrides) -> TrainConfig:
    """A seconds-long run for tests and notebook smoke checks (learns almost nothing)."""
    config = TrainConfig(
        unet=UNetConfig(base_channels=8, channel_mults=(1, 2), blocks_per_level=1, groups=4, attention=False, patch=2),
        batch_size=16,
        lr=2e-3,
        warmup_steps=5,
        ema_decay=0.9,
        total_steps=steps,
        checkpoint_every=0,
        sample_every=0,
        log_every=5,
        out_dir=None,
        sample_steps=4,
    )
    return replace(config, **overrides)


def auto(**overrides) -> TrainConfig:
    """gpu() when pick_device() chooses CUDA, else cpu()."""
    from labkit.device import pick_device

    return gpu(**overrides) if pick_device().type == "cuda" else cpu(**overrides)


def get(name: str, **overrides) -> TrainConfig:
    from labkit.errors import LabkitValueError

    recipes = {"cpu": cpu, "gpu": gpu, "tiny": tiny, "auto": auto}
    if name not in recipes:
        raise LabkitValueError(f"unknown recipe {name!r}: choose one of cpu, gpu, auto, tiny")
    return recipes[name](**overrides)
