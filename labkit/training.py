"""The trainer: Algorithm 1 of Ho et al. 2020 in a loop, plus what makes it fast and safe.

    repeat:  x_0, y ~ data;  y -> "no class" with prob p          (label dropout, for guidance)
             loss = || eps - eps_theta(x_t, t, y) ||^2              (labkit.diffusion.diffusion_loss)
             AdamW step with warmup + cosine lr, gradient clipping
             ema <- decay * ema + (1 - decay) * weights            (sample with the EMA weights)

Speed: the whole data set lives on the device as one tensor and batches are drawn by indexing (no
DataLoader); bf16 autocast on recent GPUs, fp16 + GradScaler on older ones (a T4), fp32 on CPU;
channels_last on CUDA; the EMA update is one fused ``_foreach`` call over all tensors.
Safety: checkpoints are atomic (``labkit.checkpoint``); ``resume=True`` continues a stopped run so that
it ends with exactly the weights of an uninterrupted one; a NaN/inf loss stops the run with its step.
"""

from __future__ import annotations

import copy
import math
import numbers
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import torch

from labkit.checkpoint import check_same, load_checkpoint, save_checkpoint
from labkit.data import Digits, load_mnist
from labkit.device import PRECISIONS, pick_device, resolve_precision  # noqa: F401  (re-exported)
from labkit.diffusion import diffusion_loss
from labkit.errors import LabkitError, LabkitTypeError, LabkitValueError
from labkit.schedules import Schedule, make_schedule
from labkit.unet import UNet, UNetConfig


@dataclass(frozen=True)
class TrainConfig:
    unet: UNetConfig = field(default_factory=lambda: UNetConfig(base_channels=32, channel_mults=(1, 2), patch=2))
    schedule: str = "cosine"
    T: int = 1000
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.0
    warmup_steps: int = 100  # linear warmup, then cosine decay to lr_min_ratio * lr
    lr_min_ratio: float = 0.05
    total_steps: int = 10_000
    time_budget_s: float | None = None  # if set: stop after this many training seconds; lr decays over time
    ema_decay: float = 0.999
    label_dropout: float = 0.1  # p(y -> "no class"): teaches the unconditional model for guidance
    grad_clip: float = 1.0
    min_snr_gamma: float | None = None  # loss weight min(SNR, gamma) / SNR (Hang et al. 2023); None = plain eq. 14
    precision: str = "auto"  # auto | bf16 | fp16 | fp32
    channels_last: str | bool = "auto"  # auto = on CUDA
    seed: int = 0
    sample_every: int = 0  # steps between PNG sample grids (0 = only at the end, if out_dir is set)
    checkpoint_every: int = 1000  # steps between checkpoints (and one at the end)
    log_every: int = 50
    out_dir: str | None = "runs/mnist"  # None: no files at all
    # how to sample from this model (grids, `labkit sample` defaults)
    sampler: str = "dpmpp_2m"
    sample_steps: int = 15
    guidance: float = 1.0

    def __post_init__(self):
        def number(name, lo=None, hi=None, *, integer=False, lo_open=False, hi_open=False, none_ok=False):
            value = getattr(self, name)
            if value is None and none_ok:
                return
            kind = "an integer" if integer else "a number"
            ok = isinstance(value, numbers.Integral if integer else numbers.Real) and not isinstance(value, bool)
            ok = ok and math.isfinite(value)
            ok = ok and (lo is None or (value > lo if lo_open else value >= lo))
            ok = ok and (hi is None or (value < hi if hi_open else value <= hi))
            if not ok:
                left = "" if lo is None else ("(" if lo_open else "[") + f"{lo:g}"
                right = "" if hi is None else f"{hi:g}" + (")" if hi_open else "]")
                where = f" in {left}, {right}" if lo is not None and hi is not None else (
                    f" {'>' if lo_open else '>='} {lo:g}" if lo is not None else "")
                raise LabkitValueError(f"TrainConfig.{name} must be {kind}{where}, got {value!r}")

        if not isinstance(self.unet, UNetConfig):
            raise LabkitTypeError(f"TrainConfig.unet must be a UNetConfig, got {type(self.unet).__name__}")
        if self.schedule not in ("linear", "cosine"):
            raise LabkitValueError(f"TrainConfig.schedule must be 'linear' or 'cosine', got {self.schedule!r}")
        if self.precision not in PRECISIONS:
            raise LabkitValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.channels_last not in ("auto", True, False):
            raise LabkitValueError(f"TrainConfig.channels_last must be 'auto', True or False, got {self.channels_last!r}")
        number("T", 1, integer=True)
        number("batch_size", 1, integer=True)
        number("lr", 0, lo_open=True)
        number("weight_decay", 0)
        number("warmup_steps", 0, integer=True)
        number("lr_min_ratio", 0, 1)
        number("total_steps", 0, integer=True)
        number("time_budget_s", 0, none_ok=True)
        number("ema_decay", 0, 1, hi_open=True)
        number("label_dropout", 0, 1, hi_open=True)
        number("grad_clip", 0, lo_open=True)
        number("min_snr_gamma", 0, lo_open=True, none_ok=True)
        number("seed", integer=True)
        number("sample_every", 0, integer=True)
        number("checkpoint_every", 0, integer=True)
        number("log_every", 1, integer=True)
        number("sample_steps", 1, self.T, integer=True)
        number("guidance", 0)
        from labkit.samplers import SAMPLERS

        if self.sampler not in SAMPLERS:
            raise LabkitValueError(f"TrainConfig.sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        if self.out_dir is not None and not isinstance(self.out_dir, (str, Path)):
            raise LabkitTypeError(f"TrainConfig.out_dir must be a path or None, got {type(self.out_dir).__name__}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["unet"] = self.unet.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise LabkitValueError(f"unknown TrainConfig fields {unknown} (from a newer labkit?)")
        d["unet"] = UNetConfig.from_dict(d["unet"])
        return cls(**d)


# Fields a resumed run may change: how long and how often, not what is trained.
RESUMABLE_CHANGES = ("total_steps", "time_budget_s", "sample_every", "checkpoint_every", "log_every", "out_dir",
                     "sampler", "sample_steps", "guidance")


@dataclass
class TrainResult:
    model: UNet  # the trained weights
    ema: UNet  # their exponential moving average (sample with this one), eval mode
    schedule: Schedule
    config: TrainConfig
    step: int
    seconds: float  # training time of this call (sample grids and checkpoints excluded)
    images_per_s: float
    losses: list = field(default_factory=list)  # [(step, mean loss since the last log)]
    checkpoint: Path | None = None
    stopped_early: bool = False  # the callback asked to stop


# --- Learning rate (device and precision choice: labkit.device) -------------------------------------


def lr_at(step: int, config: TrainConfig, progress: float | None = None) -> float:
    """Linear warmup over warmup_steps, then cosine decay to lr_min_ratio * lr at the end.

    progress in [0, 1] is how far through the run we are (step / total_steps, or elapsed / budget).
    """
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if progress is None:
        span = max(1, config.total_steps - config.warmup_steps)
        progress = (step - config.warmup_steps) / span
    progress = min(max(progress, 0.0), 1.0)
    lo = config.lr * config.lr_min_ratio
    return lo + (config.lr - lo) * 0.5 * (1 + math.cos(math.pi * progress))


# --- EMA ---------------------------------------------------------------------------------------------


def ema_tensors(model: torch.nn.Module) -> list[torch.Tensor]:
    """The floating-point tensors an EMA averages: parameters, then float buffers."""
    return [p for p in model.parameters()] + [b for b in model.buffers() if b.is_floating_point()]


@torch.no_grad()
def ema_update(ema: list[torch.Tensor], current: list[torch.Tensor], decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * current, for all tensors in one fused call (no Python loop)."""
    torch._foreach_lerp_(ema, current, 1.0 - decay)


def ema_decay_at(step: int, decay: float) -> float:
    """Warm the EMA up: a short run should not average in its random start (min(decay, (1+s)/(10+s)))."""
    return min(decay, (1 + step) / (10 + step))


def check_data(data, config: TrainConfig) -> None:
    """One LabkitTypeError/ValueError if ``data`` is not training data for ``config`` (checked once per run)."""
    if not isinstance(data, Digits):
        raise LabkitTypeError(f"data must be labkit.data.Digits(images, labels), got {type(data).__name__}")
    images, labels = data.images, data.labels
    if not isinstance(images, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise LabkitTypeError("data.images and data.labels must be torch tensors")
    if images.dim() != 4 or not images.is_floating_point():
        raise LabkitValueError(f"data.images must be float [N, C, H, W] in [-1, 1], got {images.dtype} {list(images.shape)}")
    if len(images) == 0:
        raise LabkitValueError("data is empty: need at least one image")
    if labels.shape != (len(images),) or labels.is_floating_point() or labels.dtype == torch.bool:
        raise LabkitValueError(f"data.labels must be int64 [{len(images)}], got {labels.dtype} {list(labels.shape)}")
    k = config.unet.num_classes
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi > k:
        raise LabkitValueError(f"data.labels must be in [0, {k}], got {lo}..{hi}")
    if not bool(torch.isfinite(images).all()):
        raise LabkitValueError("data.images contain NaN or inf")
    p = config.unet.patch
    if images.shape[-1] % p or images.shape[-2] % p:
        raise LabkitValueError(f"image size {images.shape[-2]}x{images.shape[-1]} must be divisible by unet.patch={p}")


# --- The loop -----------------------------------------------------------------------------------------


@dataclass
class StepInfo:
    """What a callback sees after each optimiser step."""

    step: int
    loss: float | None  # mean loss since the last log step; None between log steps (reading it stalls a GPU)
    elapsed_s: float  # training seconds so far, over all resumed runs (callbacks and grids not counted)
    model: UNet  # the weights being trained (train mode)
    ema: UNet  # their EMA (eval mode): sample with this one


Callback = Callable[[StepInfo], "bool | None"]


def train(
    config: TrainConfig = TrainConfig(),
    data: Digits | None = None,
    *,
    data_root=None,
    device=None,
    resume: bool = True,
    callback: Callback | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train a class-conditioned DDPM on ``data`` (default: MNIST train from ``data_root``).

    data: Digits with images float32 [N, C, H, W] in [-1, 1] and labels int64 [N] (moved to the device).
    resume: continue from ``config.out_dir/last.pt`` if it exists (same result as never stopping).
    callback(StepInfo) runs after every step; return True to stop (a checkpoint is saved), raise to
    abort (nothing saved beyond the last periodic checkpoint). Its time is not counted as training.
    progress: show a tqdm bar with the loss and images/s.
    """
    from tqdm.auto import tqdm

    if not isinstance(config, TrainConfig):
        raise LabkitTypeError(f"config must be a TrainConfig (e.g. recipes.tiny()), got {type(config).__name__}")
    if data is not None:
        check_data(data, config)
    device = pick_device(device)
    amp_dtype, use_scaler = resolve_precision(config.precision, device)
    channels_last = device.type == "cuda" if config.channels_last == "auto" else bool(config.channels_last)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    out_dir = Path(config.out_dir) if config.out_dir else None
    ckpt_path = out_dir / "last.pt" if out_dir else None
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise LabkitValueError(f"out_dir {out_dir} is a file, not a folder: pick another out dir")

    if data is None:
        data = load_mnist(data_root, train=True)
        check_data(data, config)
    if data.images.shape[1] != config.unet.in_channels:
        raise LabkitValueError(f"data has {data.images.shape[1]} channels but the U-Net expects {config.unet.in_channels}")
    data = data.to(device)  # the whole set on the device: [N, C, H, W], [N]
    schedule = make_schedule(config.schedule, config.T)

    with torch.random.fork_rng(devices=[]):  # seeded weights, without touching the caller's global RNG
        torch.manual_seed(config.seed)
        model = UNet(config.unet)
    model = model.to(device, memory_format=memory_format).train()
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    ema_list, model_list = ema_tensors(ema), ema_tensors(model)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                            betas=(0.9, 0.99), foreach=True)
    scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
    gen = torch.Generator(device).manual_seed(config.seed)  # batches, label dropout, t and noise
    step, elapsed = 0, 0.0

    if resume and ckpt_path is not None and ckpt_path.exists():
        try:
            state = load_checkpoint(ckpt_path, map_location="cpu")
        except LabkitError as exc:
            raise LabkitError(f"cannot resume: {exc}; delete or move it, or use resume=False (--no-resume)") from None
        check_same(ckpt_path, "train", state.get("train", {}), config.to_dict(), ignore=RESUMABLE_CHANGES)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        try:
            gen.set_state(state["rng"]["data"])
        except RuntimeError:  # saved by another device type's generator (a GPU run resumed on a CPU, or back)
            gen.manual_seed(config.seed + int(state["step"]))  # still seeded, but other batches than an unbroken run
            warnings.warn(f"{ckpt_path} was saved on another kind of device: training resumes on {device.type} "
                          "with a reseeded batch generator, so it will not match an uninterrupted run exactly")
        torch.set_rng_state(state["rng"]["torch"])
        if state["rng"].get("cuda") is not None and torch.cuda.is_available():
            for i, cuda_state in enumerate(state["rng"]["cuda"][:torch.cuda.device_count()]):
                torch.cuda.set_rng_state(cuda_state, i)  # a checkpoint from a machine with more GPUs still loads
        step, elapsed = int(state["step"]), float(state.get("elapsed_s", 0.0))

    def checkpoint() -> None:
        if ckpt_path is None:
            return
        save_checkpoint(ckpt_path, {
            "model": model.state_dict(), "ema": ema.state_dict(), "optimizer": opt.state_dict(),
            "scaler": scaler.state_dict() if use_scaler else {}, "step": step, "elapsed_s": elapsed,
            "rng": {"torch": torch.get_rng_state(), "data": gen.get_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
            "unet": config.unet.to_dict(), "schedule": config.schedule, "T": config.T, "train": config.to_dict(),
        })

    def done() -> bool:
        if config.time_budget_s is not None:
            return elapsed >= config.time_budget_s
        return step >= config.total_steps

    N, B, null = len(data), config.batch_size, config.unet.num_classes
    loss_sum = torch.zeros((), device=device)  # summed on the device, read only at log steps
    first_bad = torch.full((), -1, device=device, dtype=torch.long)  # first step with a NaN/inf loss
    check_every = 1 if device.type == "cpu" else config.log_every  # a CPU pays nothing to sync each step
    losses, images_seen, stopped = [], 0, False
    run_seconds = 0.0
    bar_total = int(config.time_budget_s) if config.time_budget_s is not None else config.total_steps
    bar = tqdm(total=bar_total, initial=min(int(elapsed) if config.time_budget_s else step, bar_total),
               disable=not progress, unit="s" if config.time_budget_s else "step", dynamic_ncols=True)
    t_last = time.perf_counter()
    try:
        while not done():
            progress_frac = elapsed / config.time_budget_s if config.time_budget_s else None
            lr = lr_at(step, config, progress_frac)
            for group in opt.param_groups:
                group["lr"] = lr

            idx = torch.randint(0, N, (B,), device=device, generator=gen)  # [B], with replacement
            x0 = data.images[idx].contiguous(memory_format=memory_format)  # [B, C, H, W]
            y = data.labels[idx]
            drop = torch.rand(B, device=device, generator=gen) < config.label_dropout
            y = torch.where(drop, torch.full_like(y, null), y)  # label dropout -> "no class"
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                loss = diffusion_loss(model, x0, y, schedule, generator=gen, min_snr_gamma=config.min_snr_gamma)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip, foreach=True)
            scaler.step(opt)
            scaler.update()
            ema_update(ema_list, model_list, ema_decay_at(step, config.ema_decay))

            bad = ~torch.isfinite(loss.detach())
            first_bad = torch.where(bad & (first_bad < 0), torch.full_like(first_bad, step + 1), first_bad)
            loss_sum += loss.detach().float()
            step += 1
            images_seen += B
            log_now = step % config.log_every == 0 or done()
            if step % check_every == 0 or log_now:
                if int(first_bad) >= 0:
                    raise LabkitError(
                        f"loss became NaN/inf at step {int(first_bad)}: lower the lr, keep grad_clip, or use "
                        f"precision='fp32'; the last good checkpoint is {ckpt_path}"
                    )
            now = time.perf_counter()
            elapsed += now - t_last
            run_seconds += now - t_last
            loss_value = None
            if log_now:
                n = step % config.log_every or config.log_every
                loss_value = float(loss_sum) / n
                loss_sum.zero_()
                losses.append((step, loss_value))
                bar.set_postfix(loss=f"{loss_value:.4f}", img_s=f"{images_seen / max(run_seconds, 1e-9):.0f}")
                bar.n = min(int(elapsed) if config.time_budget_s else step, bar_total)
                bar.refresh()
            if out_dir is not None and config.sample_every and step % config.sample_every == 0:
                save_grid(ema, schedule, config, out_dir / f"samples_{step:06d}.png", size=data.images.shape[-1])
            if config.checkpoint_every and step % config.checkpoint_every == 0:
                checkpoint()
            if callback is not None and callback(StepInfo(step, loss_value, elapsed, model, ema)):
                stopped = True
                break
            t_last = time.perf_counter()
        checkpoint()
        if out_dir is not None:
            save_grid(ema, schedule, config, out_dir / "samples_final.png", size=data.images.shape[-1])
    finally:
        bar.close()
    return TrainResult(model, ema, schedule, config, step, run_seconds,
                       images_seen / max(run_seconds, 1e-9), losses, ckpt_path, stopped)


# --- Samples -----------------------------------------------------------------------------------------


def save_grid(model, schedule: Schedule, config: TrainConfig, path, per_class: int = 10, seed: int = 0,
              size: int = 28) -> Path:
    """Draw per_class digits of every class with ``model`` (one row per sample, one column per class)."""
    from torchvision.utils import save_image

    from labkit.samplers import sample_digits

    device = next(model.parameters()).device
    k = config.unet.num_classes
    y = torch.arange(k, device=device).repeat(per_class)  # [per_class * k]: rows of 0..k-1
    gen = torch.Generator(device).manual_seed(seed)  # the same noise every time: grids show progress
    was_training = model.training
    model.eval()
    images = sample_digits(model, y, schedule, shape=(config.unet.in_channels, size, size), sampler=config.sampler,
                           steps=config.sample_steps, guidance=config.guidance, null_class=k, generator=gen)
    model.train(was_training)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(images, path, nrow=k, padding=1)
    return path
