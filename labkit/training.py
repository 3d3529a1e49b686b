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
                where = (
                    f" in {left}, {right}"
                    if lo is not None and hi is not None
                    else (f" {'>' if lo_open else '>='} {lo:g}" if lo is not None else "")
                )
                raise LabkitValueError(f"TrainConfig.{name} must be {kind}{where}, got {value!r}")

        if not isinstance(self.unet, UNetConfig):
            raise LabkitTypeError(f"TrainConfig.unet must be a UNetConfig, got {type(self.unet).__name__}")
        if self.schedule not in ("linear", "cosine"):
            raise LabkitValueError(f"TrainConfig.schedule must be 'linear' or 'cosine', got {self.schedule!r}")
        if self.precision not in PRECISIONS:
            raise LabkitValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.channels_last not in ("auto", True, False):
            raise LabkitValueError(
                f"TrainConfig.channels_last must be 'auto', True or False, got {self.channels_last!r}"
            )
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
RESUMABLE_CHANGES = (
    "total_steps",
    "time_budget_s",
    "sample_every",
    "checkpoint_every",
    "log_every",
    "out_dir",
    "sampler",
    "sample_steps",
    "guidance",
)


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


def warmup_cosine_lr(
    steps: torch.Tensor, lr: float, warmup_steps: int, total_steps: int, min_ratio: float
) -> torch.Tensor:
    """int64 [N] step numbers -> float64 [N] learning rates: a linear warmup, then a cosine decay.   (lab 04)

        s < W:   lr * (s + 1) / W                                  (warmup, Goyal et al. 2017, section 2.2)
        s >= W:  lr_min + (lr - lr_min) * (1 + cos(pi * p)) / 2,   (cosine, Loshchilov & Hutter 2017, eq. 5)
                 p = (s - W) / max(1, S - W) clamped to [0, 1],    lr_min = min_ratio * lr

    with W = warmup_steps and S = total_steps: the first step already trains (lr / W, not 0), the warmup ends at
    lr, and the decay reaches lr_min at step S and stays there.
    """
    s = steps.double()  # [N]
    warm = lr * (s + 1) / max(1, warmup_steps)  # [N]
    progress = ((s - warmup_steps) / max(1, total_steps - warmup_steps)).clamp(0.0, 1.0)  # [N]
    lr_min = lr * min_ratio
    cosine = lr_min + (lr - lr_min) * 0.5 * (1 + torch.cos(math.pi * progress))  # [N]
    return torch.where(s < warmup_steps, warm, cosine)


def lr_at(step: int, config: TrainConfig, progress: float | None = None) -> float:
    """``warmup_cosine_lr`` at one step of ``config``'s run.

    progress in [0, 1] replaces the cosine's p (``train`` with a time budget: elapsed / budget).
    """
    if progress is None:
        return float(
            warmup_cosine_lr(
                torch.tensor([step]), config.lr, config.warmup_steps, config.total_steps, config.lr_min_ratio
            )[0]
        )
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = min(max(progress, 0.0), 1.0)
    lo = config.lr * config.lr_min_ratio
    return lo + (config.lr - lo) * 0.5 * (1 + math.cos(math.pi * progress))


# --- EMA ---------------------------------------------------------------------------------------------


def ema_tensors(model: torch.nn.Module) -> list[torch.Tensor]:
    """The floating-point tensors an EMA averages: parameters, then float buffers."""
    return [p for p in model.parameters()] + [b for b in model.buffers() if b.is_floating_point()]


@torch.no_grad()
def ema_update(ema, model, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, in place, weight by weight.   (lab 04)

    ``ema`` and ``model`` are two modules of the same architecture (the EMA copy and the weights being
    trained: every parameter and float buffer, ``ema_tensors``), or two lists of tensors. decay close to 1
    (0.999): the average changes slowly and forgets the noisy single steps. One fused ``_foreach`` call.
    """
    if isinstance(ema, torch.nn.Module):
        ema, model = ema_tensors(ema), ema_tensors(model)
    torch._foreach_lerp_(ema, model, 1.0 - decay)  # e + (1 - decay) (m - e) = decay e + (1 - decay) m


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
        raise LabkitValueError(
            f"data.images must be float [N, C, H, W] in [-1, 1], got {images.dtype} {list(images.shape)}"
        )
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


# --- One step ----------------------------------------------------------------------------------------


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    compute_loss: Callable[[], torch.Tensor],
    *,
    scaler: torch.amp.GradScaler | None = None,
    max_grad_norm: float | None = None,
    as_float: bool = True,
):
    """One optimiser step (Ho et al. 2020, Algorithm 1, lines 5-6: "take gradient descent step"):   (lab 04)

        optimizer.zero_grad(); loss = compute_loss(); loss.backward(); optimizer.step(); return loss.item()

    zero_grad first: backward *adds* to .grad, so the previous step's gradients must go. compute_loss() is
    called once (each call runs the model). The trainer adds what a real run needs: mixed precision's loss
    scaling (``scaler``), gradient clipping (``max_grad_norm``), and ``as_float=False`` to keep the loss on the
    device (``.item()`` makes the CPU wait for the GPU at every step). Returns the loss before the update.
    """
    optimizer.zero_grad(set_to_none=True)
    loss = compute_loss()  # 0-d tensor
    if scaler is None:
        loss.backward()
    else:
        scaler.scale(loss).backward()  # scaled so that small fp16 gradients do not round to 0
        scaler.unscale_(optimizer)  # the true gradients again, before clipping
    if max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm, foreach=True)
    if scaler is None:
        optimizer.step()
    else:
        scaler.step(optimizer)  # skipped when a gradient is inf/NaN (fp16 overflow)
        scaler.update()
    return loss.item() if as_float else loss.detach()


def drop_labels(y: torch.Tensor, p: float, null_class: int, generator: torch.Generator) -> torch.Tensor:
    """Label dropout for classifier-free guidance (Ho & Salimans 2022, Algorithm 1, line 3):   (lab 04)

        u ~ U[0, 1) per label (one torch.rand(B) from ``generator``);  y_i -> null_class where u_i < p

    so one network also learns the unconditional model eps(x_t, t, "no class"). y: int64 [B] -> new [B]."""
    drop = torch.rand(y.shape, device=y.device, generator=generator) < p  # [B] bool, True with probability p
    return torch.where(drop, torch.full_like(y, null_class), y)


def draw_batch(
    data: Digits,
    batch_size: int,
    generator: torch.Generator,
    *,
    null_class: int,
    label_dropout: float,
    memory_format=torch.contiguous_format,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A random batch (with replacement) of images [B, C, H, W] and labels [B]; each label becomes
    ``null_class`` ("no class") with probability ``label_dropout`` (``drop_labels``)."""
    device = data.images.device
    idx = torch.randint(0, len(data), (batch_size,), device=device, generator=generator)  # [B]
    x0 = data.images[idx].contiguous(memory_format=memory_format)  # [B, C, H, W]
    return x0, drop_labels(data.labels[idx], label_dropout, null_class, generator)


# --- The training loop, as plainly as the paper writes it (lab 04) -------------------------------------


def train_loop(
    model: torch.nn.Module,
    ema: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    alpha_bars: torch.Tensor,
    steps: int,
    batch_size: int,
    generator: torch.Generator,
    label_dropout: float = 0.1,
    ema_decay: float = 0.999,
    first_step: int = 0,
    null_class: int = 10,
) -> list[float]:
    """``steps`` steps of Algorithm 1 (Ho et al. 2020) with label dropout and an EMA; returns the losses.   (lab 04)

        repeat:  x_0, y ~ data                      (batch indices: torch.randint(0, N, (B,)))
                 y -> null_class with probability p  (drop_labels: torch.rand(B))
                 t ~ Uniform{0, ..., T-1}            (torch.randint(0, T, (B,)))
                 eps ~ N(0, I)                       (torch.randn(x_0.shape))
                 gradient step on || eps - eps_theta(sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, t, y) ||^2
                 ema <- d ema + (1 - d) weights,  d = ema_decay_at(step, ema_decay)

    Every random number comes from ``generator``, in this order, so the same generator state gives the same
    weights. images: [N, C, H, W] in [-1, 1]; labels: int64 [N]; alpha_bars: [T]. ``first_step`` numbers the
    steps (for the EMA warm-up) when a run continues in several calls. The model trains in train mode.
    ``labkit.training.train`` is this loop plus speed and safety (mixed precision, lr schedule, clipping,
    Min-SNR weighting, checkpoints); labkit's lab 04 drives this one in chunks, with checkpoints between.
    """
    from labkit.diffusion import noise_prediction_loss

    model.train()
    T, device = len(alpha_bars), images.device
    losses = []
    for step in range(first_step, first_step + steps):
        idx = torch.randint(0, len(images), (batch_size,), device=device, generator=generator)  # [B]
        x0 = images[idx]  # [B, C, H, W]
        y = drop_labels(labels[idx], label_dropout, null_class, generator)  # [B]
        t = torch.randint(0, T, (batch_size,), device=device, generator=generator)  # [B]
        noise = torch.randn(x0.shape, device=device, generator=generator)  # [B, C, H, W]
        loss = train_step(model, optimizer, lambda: noise_prediction_loss(model, x0, y, t, noise, alpha_bars))
        ema_update(ema, model, ema_decay_at(step, ema_decay))
        losses.append(loss)
    return losses


def run_loop(
    loop: Callable,
    config: TrainConfig,
    data: Digits,
    *,
    device=None,
    chunk: int = 100,
    report: Callable | None = None,
    report_every_s: float = 120.0,
    network: Callable | None = None,
    lr_schedule: Callable | None = None,
) -> TrainResult:
    """Drive a training loop such as ``train_loop`` (lab 04's, or a student's) through a real run, in chunks.

    Before each chunk of ``chunk`` steps the learning rate is set (``lr_schedule``, with ``warmup_cosine_lr``'s
    arguments: a student's own from lab 04, else ``warmup_cosine_lr``: warmup, then cosine); after it
    the chunk's mean loss is logged, ``config.out_dir/loop.pt`` is saved (atomically) every
    ``config.checkpoint_every`` steps and at the end, and ``report(step, losses, ema)`` runs every
    ``report_every_s`` seconds of training and at the end (a loss curve, a grid of samples). Calling again
    with the same config continues from the checkpoint: the weights, EMA, optimiser and generator come back,
    so the run ends where an unbroken one would. The loop gets the whole data set on ``device``.
    Not here, unlike ``train``: mixed precision, gradient clipping and Min-SNR weighting (the loop decides).
    network(config.unet) builds the model instead of ``UNet`` (a student's own U-Net from lab 03, with the same
    parameters: ``config.unet`` must describe it). The checkpoint then also holds its EMA under labkit's names
    (matched by name, else by order and shape), so that ``labkit.checkpoint.load_model`` and labs 05-09 load it.
    """
    check_data(data, config)
    device = pick_device(device)
    data = data.to(device)
    schedule = make_schedule(config.schedule, config.T)
    channels_last = device.type == "cuda" if config.channels_last == "auto" else bool(config.channels_last)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format  # faster convolutions
    run = new_run(config, device, use_scaler=False, memory_format=memory_format, network=network)
    model, ema = run.model, run.ema
    ckpt_path = Path(config.out_dir) / "loop.pt" if config.out_dir else None
    losses: list = []
    if ckpt_path is not None and ckpt_path.exists():
        state = load_checkpoint(ckpt_path, map_location="cpu")
        check_same(ckpt_path, "train", state.get("train", {}), config.to_dict(), ignore=RESUMABLE_CHANGES)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state.get("ema_own", state["ema"]))
        run.opt.load_state_dict(state["optimizer"])
        run.gen.set_state(state["generator"])
        run.step, run.elapsed, losses = int(state["step"]), float(state["elapsed_s"]), list(state["losses"])

    def save() -> None:
        if ckpt_path is not None:
            own = {"ema_own": ema.state_dict()} if network is not None else {}  # the student's names, to resume
            save_checkpoint(
                ckpt_path,
                {
                    "model": model.state_dict(),
                    "ema": as_labkit_weights(ema, config.unet),
                    **own,
                    "optimizer": run.opt.state_dict(),
                    "generator": run.gen.get_state(),
                    "step": run.step,
                    "elapsed_s": run.elapsed,
                    "losses": losses,
                    "unet": config.unet.to_dict(),
                    "schedule": config.schedule,
                    "T": config.T,
                    "train": config.to_dict(),
                },
            )

    seconds, last_report, start_step = 0.0, 0.0, run.step
    while run.step < config.total_steps:
        n = min(chunk, config.total_steps - run.step)
        lr = (
            lr_at(run.step, config)
            if lr_schedule is None
            else float(
                lr_schedule(
                    torch.tensor([run.step]), config.lr, config.warmup_steps, config.total_steps, config.lr_min_ratio
                )[0]
            )
        )
        if not (math.isfinite(lr) and lr > 0):
            raise LabkitValueError(
                f"the learning-rate schedule gave {lr} at step {run.step}: it must be a positive "
                "number (lab 04's check_warmup_cosine_lr says what is wrong)"
            )
        for group in run.opt.param_groups:
            group["lr"] = lr
        t0 = time.perf_counter()
        values = loop(
            model,
            ema,
            run.opt,
            data.images,
            data.labels,
            schedule.alpha_bars,
            n,
            config.batch_size,
            run.gen,
            config.label_dropout,
            config.ema_decay,
            run.step,
        )
        seconds += time.perf_counter() - t0
        run.elapsed += time.perf_counter() - t0
        run.step += n
        mean = sum(float(v) for v in values) / max(1, len(values))
        if not math.isfinite(mean):
            raise LabkitError(
                f"loss became NaN/inf before step {run.step}: lower the lr; the last good checkpoint is {ckpt_path}"
            )
        losses.append((run.step, mean))
        done = run.step >= config.total_steps
        if done or (config.checkpoint_every and run.step % config.checkpoint_every < n):
            save()
        if report is not None and (done or seconds - last_report >= report_every_s):
            last_report = seconds
            ema.eval()
            report(run.step, losses, ema)
    ema.eval()
    images_seen = (run.step - start_step) * config.batch_size
    return TrainResult(
        model, ema, schedule, config, run.step, seconds, images_seen / max(seconds, 1e-9), losses, ckpt_path
    )


def as_labkit_weights(model: torch.nn.Module, unet_config) -> dict:
    """``model``'s weights under labkit's UNet names: its own state dict when it is labkit's UNet, else its
    parameters copied into ``UNet(unet_config)`` by name, or else in order where every shape agrees."""
    if isinstance(model, UNet):
        return model.state_dict()
    target = UNet(unet_config)
    mine = [(n, p.detach().float().cpu()) for n, p in model.named_parameters()]
    theirs = dict(target.named_parameters())
    if set(theirs) == {n for n, _ in mine} and all(theirs[n].shape == w.shape for n, w in mine):
        pairs = [(theirs[n], w) for n, w in mine]
    elif len(mine) == len(theirs) and all(p.shape == w.shape for p, (_, w) in zip(theirs.values(), mine)):
        pairs = list(zip(theirs.values(), (w for _, w in mine)))
    else:
        raise LabkitError(
            "this network's parameters do not match labkit's UNet for its config: the checkpoint "
            "could not be written in labkit's format"
        )
    with torch.no_grad():
        for p, w in pairs:
            p.copy_(w)
    return target.state_dict()


# --- Checkpoints of a run ------------------------------------------------------------------------------


@dataclass
class Run:
    """Everything a run changes as it goes: weights, EMA, optimiser, loss scaler, batch RNG, clock."""

    model: UNet
    ema: UNet
    opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    gen: torch.Generator
    step: int = 0
    elapsed: float = 0.0  # training seconds over all resumed calls

    def state(self, config: TrainConfig) -> dict:
        """What ``last.pt`` holds: enough to continue exactly where this run stands."""
        return {
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
            "step": self.step,
            "elapsed_s": self.elapsed,
            "rng": {
                "torch": torch.get_rng_state(),
                "data": self.gen.get_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            },
            "unet": config.unet.to_dict(),
            "schedule": config.schedule,
            "T": config.T,
            "train": config.to_dict(),
        }

    def restore(self, path: Path, config: TrainConfig, device: torch.device) -> None:
        """Continue from ``path`` (a ``state`` saved by an earlier call with a compatible config)."""
        try:
            state = load_checkpoint(path, map_location="cpu")
        except LabkitError as exc:
            raise LabkitError(f"cannot resume: {exc}; delete or move it, or use resume=False (--no-resume)") from None
        check_same(path, "train", state.get("train", {}), config.to_dict(), ignore=RESUMABLE_CHANGES)
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        try:
            self.gen.set_state(state["rng"]["data"])
        except RuntimeError:  # saved by another device type's generator (a GPU run resumed on a CPU, or back)
            self.gen.manual_seed(config.seed + int(state["step"]))  # seeded, but other batches than an unbroken run
            warnings.warn(
                f"{path} was saved on another kind of device: training resumes on {device.type} "
                "with a reseeded batch generator, so it will not match an uninterrupted run exactly"
            )
        torch.set_rng_state(state["rng"]["torch"])
        if state["rng"].get("cuda") is not None and torch.cuda.is_available():
            for i, cuda_state in enumerate(state["rng"]["cuda"][: torch.cuda.device_count()]):
                torch.cuda.set_rng_state(cuda_state, i)  # a checkpoint from a machine with more GPUs still loads
        self.step, self.elapsed = int(state["step"]), float(state.get("elapsed_s", 0.0))


def new_run(
    config: TrainConfig, device: torch.device, *, use_scaler: bool, memory_format, network: Callable | None = None
) -> Run:
    """Seeded weights (without touching the caller's global RNG), their EMA, AdamW and the batch generator.
    network(config.unet) builds the model instead of labkit's UNet (a student's own, lab 04)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = (network or UNet)(config.unet)
    model = model.to(device, memory_format=memory_format).train()
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay, betas=(0.9, 0.99), foreach=True
    )
    scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
    gen = torch.Generator(device).manual_seed(config.seed)  # batches, label dropout, t and noise
    return Run(model, ema, opt, scaler, gen)


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


class ProgressBar:
    """A tqdm bar counting steps, or seconds for a time budget, with the loss and images/s beside it."""

    def __init__(self, config: TrainConfig, run: Run, enabled: bool):
        from tqdm.auto import tqdm

        self.by_time = config.time_budget_s is not None
        self.total = int(config.time_budget_s) if self.by_time else config.total_steps
        self.bar = tqdm(
            total=self.total,
            initial=self.position(run),
            disable=not enabled,
            unit="s" if self.by_time else "step",
            dynamic_ncols=True,
        )

    def position(self, run: Run) -> int:
        return min(int(run.elapsed) if self.by_time else run.step, self.total)

    def show(self, run: Run, loss: float, images_per_s: float) -> None:
        self.bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{images_per_s:.0f}")
        self.bar.n = self.position(run)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def _finished(config: TrainConfig, run: Run) -> bool:
    if config.time_budget_s is not None:
        return run.elapsed >= config.time_budget_s
    return run.step >= config.total_steps


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
        raise LabkitValueError(
            f"data has {data.images.shape[1]} channels but the U-Net expects {config.unet.in_channels}"
        )
    data = data.to(device)  # the whole set on the device: [N, C, H, W], [N]
    schedule = make_schedule(config.schedule, config.T)
    run = new_run(config, device, use_scaler=use_scaler, memory_format=memory_format)
    if resume and ckpt_path is not None and ckpt_path.exists():
        run.restore(ckpt_path, config, device)
    model, ema = run.model, run.ema
    ema_list, model_list = ema_tensors(ema), ema_tensors(model)

    def save() -> None:
        if ckpt_path is not None:
            save_checkpoint(ckpt_path, run.state(config))

    def batch_loss() -> torch.Tensor:  # the loss of a fresh batch, under autocast
        x0, y = draw_batch(
            data,
            config.batch_size,
            run.gen,
            null_class=config.unet.num_classes,
            label_dropout=config.label_dropout,
            memory_format=memory_format,
        )
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            return diffusion_loss(model, x0, y, schedule, generator=run.gen, min_snr_gamma=config.min_snr_gamma)

    loss_sum = torch.zeros((), device=device)  # summed on the device, read only at log steps
    first_bad = torch.full((), -1, device=device, dtype=torch.long)  # first step with a NaN/inf loss
    check_every = 1 if device.type == "cpu" else config.log_every  # a CPU pays nothing to sync each step
    losses, images_seen, stopped, run_seconds = [], 0, False, 0.0
    bar = ProgressBar(config, run, progress)
    t_last = time.perf_counter()
    try:
        while not _finished(config, run):
            progress_frac = run.elapsed / config.time_budget_s if config.time_budget_s else None
            for group in run.opt.param_groups:
                group["lr"] = lr_at(run.step, config, progress_frac)
            loss = train_step(
                model, run.opt, batch_loss, scaler=run.scaler, max_grad_norm=config.grad_clip, as_float=False
            )
            ema_update(ema_list, model_list, ema_decay_at(run.step, config.ema_decay))

            bad = ~torch.isfinite(loss)
            first_bad = torch.where(bad & (first_bad < 0), torch.full_like(first_bad, run.step + 1), first_bad)
            loss_sum += loss.float()
            run.step += 1
            images_seen += config.batch_size
            log_now = run.step % config.log_every == 0 or _finished(config, run)
            if (run.step % check_every == 0 or log_now) and int(first_bad) >= 0:
                raise LabkitError(
                    f"loss became NaN/inf at step {int(first_bad)}: lower the lr, keep grad_clip, or use "
                    f"precision='fp32'; the last good checkpoint is {ckpt_path}"
                )
            now = time.perf_counter()
            run.elapsed += now - t_last
            run_seconds += now - t_last
            loss_value = None
            if log_now:
                n = run.step % config.log_every or config.log_every
                loss_value = float(loss_sum) / n
                loss_sum.zero_()
                losses.append((run.step, loss_value))
                bar.show(run, loss_value, images_seen / max(run_seconds, 1e-9))
            if out_dir is not None and config.sample_every and run.step % config.sample_every == 0:
                save_grid(ema, schedule, config, out_dir / f"samples_{run.step:06d}.png", size=data.images.shape[-1])
            if config.checkpoint_every and run.step % config.checkpoint_every == 0:
                save()
            if callback is not None and callback(StepInfo(run.step, loss_value, run.elapsed, model, ema)):
                stopped = True
                break
            t_last = time.perf_counter()
        save()
        if out_dir is not None:
            save_grid(ema, schedule, config, out_dir / "samples_final.png", size=data.images.shape[-1])
    finally:
        bar.close()
    return TrainResult(
        model,
        ema,
        schedule,
        config,
        run.step,
        run_seconds,
        images_seen / max(run_seconds, 1e-9),
        losses,
        ckpt_path,
        stopped,
    )


# --- Samples -----------------------------------------------------------------------------------------


def save_grid(
    model, schedule: Schedule, config: TrainConfig, path, per_class: int = 10, seed: int = 0, size: int = 28
) -> Path:
    """Draw per_class digits of every class with ``model`` (one row per sample, one column per class)."""
    from torchvision.utils import save_image

    from labkit.samplers import sample_digits

    device = next(model.parameters()).device
    k = config.unet.num_classes
    y = torch.arange(k, device=device).repeat(per_class)  # [per_class * k]: rows of 0..k-1
    gen = torch.Generator(device).manual_seed(seed)  # the same noise every time: grids show progress
    was_training = model.training
    model.eval()
    images = sample_digits(
        model,
        y,
        schedule,
        shape=(config.unet.in_channels, size, size),
        sampler=config.sampler,
        steps=config.sample_steps,
        guidance=config.guidance,
        null_class=k,
        generator=gen,
    )
    model.train(was_training)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(images, path, nrow=k, padding=1)
    return path
