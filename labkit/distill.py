"""Few-step digits: distil the guided teacher's trajectories into a student that needs 1 to 8 evaluations.

The teacher is the shipped DDPM network sampled with guidance (Ho & Salimans 2022, eq. 6) by DPM-Solver++(2M)
(Lu et al. 2022) on S = 16 steps: 32 network evaluations per digit. Its sampler is deterministic, so every
starting noise x_T has one trajectory x_T = x_{s_0} -> x_{s_1} -> ... -> x_0 (the probability-flow ODE, solved).
The student is the same U-Net, started from the teacher's weights, that takes the class y and no guidance
(guidance is folded in, as in Meng et al. 2023) and is taught to jump along those trajectories:

    target    the x_0 the teacher reaches from x_{s_i}: ``ddim_target`` with the next point = clean data
              (Salimans & Ho 2022, "Progressive Distillation", Algorithm 2, the target x~; the last step
              of a trajectory, where alpha_next = 1, makes x~ the teacher's end point itself)
    student   x0_hat = alpha_t x_t - sigma_t v_hat, the network predicting v (Salimans & Ho 2022, section 4),
              well conditioned at the noisiest step where eps-prediction (x0 = (x - sigma eps) / alpha) divides
              by alpha ~ 0.007; ``VStudent`` hands it to every labkit sampler as a noise prediction
    loss      E || x0_hat(x_{s_i}, s_i, y) - x0_teacher ||^2 over trajectories and kept steps s_i
    sampling  on K of the kept teacher steps (``student_grid``): K = 1 is one jump from noise (Luhman & Luhman
              2021); K = 2, 4, 8 jump, re-noise the jump's x0_hat to the next step and jump again
              (``samplers.sample_consistency``, the multistep sampling of Song et al. 2023, Algorithm 1)

One network serves every K because the target does not depend on K: from every state on a trajectory it
is the same end point. The pure functions (``ddim_target``, ``x0_from_v``, ``eps_from_v``, ``student_grid``)
carry the equations; ``teacher_trajectories`` draws the data; ``train_student`` is the loop (any
``model(x, t, y)`` noise predictor, a torch.Generator for every draw, atomic resumable checkpoints);
``main`` is ``python -m labkit.distill`` / ``labkit distill``.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from labkit.checkpoint import load_checkpoint, save_checkpoint
from labkit.diffusion import Model, gather, predict_x0_from_eps
from labkit.errors import LabkitError, LabkitValueError
from labkit.samplers import Trajectory, sample
from labkit.schedules import Schedule
from labkit.training import ema_decay_at, ema_update
from labkit.vpred import VStudent, alpha_sigma, eps_from_v, x0_from_v  # noqa: F401  (re-exported)

TEACHER_STEPS = 16  # DPM-Solver++(2M) steps of the teacher (32 evaluations with guidance)
KEEP_EVERY = 2  # keep every 2nd teacher state: the grids of K = 1, 2, 4, 8 student steps
STUDENT_STEPS = (1, 2, 4, 8)


# --- The equations ------------------------------------------------------------------------------------


def ddim_target(x_t, x_next, alpha_bar_t, alpha_bar_next) -> torch.Tensor:
    """The x_0 a DDIM step from t to t_next must predict to land on x_next (Salimans & Ho 2022, Algorithm 2):

        x~ = (x_next - (sigma_next / sigma_t) x_t) / (alpha_next - (sigma_next / sigma_t) alpha_t)

    alpha = sqrt(alpha_bar), sigma = sqrt(1 - alpha_bar). The DDIM step (eta = 0) is
    x_next = alpha_next x0_hat + sigma_next (x_t - alpha_t x0_hat) / sigma_t, solved here for x0_hat.
    With alpha_bar_next = 1 (the step to clean data, sigma_next = 0) x~ = x_next: the end point itself.
    x_t, x_next: [B, C, H, W]; alpha_bar_t, alpha_bar_next: [B, 1, 1, 1] -> x~ [B, C, H, W].
    """
    alpha_t, sigma_t = alpha_sigma(alpha_bar_t)
    alpha_n, sigma_n = alpha_sigma(alpha_bar_next)
    ratio = sigma_n / sigma_t
    return ((x_next - ratio * x_t) / (alpha_n - ratio * alpha_t)).to(x_t.dtype)


def student_grid(teacher_grid: torch.Tensor, steps: int) -> torch.Tensor:
    """The K = ``steps`` time steps of the student: every (S / K)-th step of the teacher's grid [S], from the
    first (noise) on, so that each student step spans S / K teacher steps and the last goes to clean data.
    teacher_grid: int64 [S] descending -> int64 [K]."""
    S = len(teacher_grid)
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1 or S % steps:
        raise LabkitValueError(f"the fast model takes a number of steps that divides {S}, got {steps!r}")
    return teacher_grid[:: S // steps]


# --- The teacher's trajectories ---------------------------------------------------------------------


@torch.no_grad()
def teacher_trajectories(
    teacher: Model,
    y: torch.Tensor,
    schedule: Schedule,
    *,
    guidance: float,
    null_class: int,
    generator: torch.Generator,
    steps: int = TEACHER_STEPS,
    keep_every: int = KEEP_EVERY,
    shape: tuple | None = None,
    sampler: str = "dpmpp_2m",
) -> dict:
    """Guided DPM-Solver++(2M) trajectories (or DDIM's, eta 0: ``sampler``) from noise drawn from ``generator``.

    y: int64 [B]; shape: one sample's shape (default the model's (C, 28, 28)) -> {"states": [B, S', C, H, W],
    the state at every kept step (S' = S / keep_every; the first is x_T), "times": int64 [S'] their time
    steps, "x0": [B, C, H, W] the end points in [-1, 1], "y": [B]}.
    """
    traj = Trajectory()
    shape = (len(y), *(shape or _image_shape(teacher)))
    if sampler not in ("dpmpp_2m", "ddim"):
        raise LabkitValueError(f"the teacher must be deterministic (dpmpp_2m or ddim), got {sampler!r}")
    x0 = sample(teacher, shape, y, schedule, sampler=sampler, steps=steps, guidance=guidance,
                null_class=null_class, clip=1.0, generator=generator, callback=traj)  # fmt: skip
    states = traj.x_t[::keep_every].transpose(0, 1)  # [B, S', C, H, W]
    times = torch.tensor(traj.ts[::keep_every])  # [S']
    return {"states": states, "times": times, "x0": x0.clamp(-1, 1).cpu(), "y": y.cpu()}


def _image_shape(model) -> tuple:
    cfg = getattr(model, "config", None)
    return (getattr(cfg, "in_channels", 1), 28, 28)


# --- The loss and the loop ------------------------------------------------------------------------------


def distill_loss(student: Model, x_t, t, y, target, alpha_bars) -> torch.Tensor:
    """mean (x0_hat - x~)^2 with x0_hat = (x_t - sigma_t eps_hat) / alpha_t from the student's noise prediction
    (Ho et al. 2020, eq. 15) and x~ the target (``ddim_target``). x_t, target: [B, C, H, W]; t, y: [B]."""
    x0_hat = predict_x0_from_eps(x_t, t, student(x_t, t, y), alpha_bars)
    return F.mse_loss(x0_hat.float(), target.float())


def step_weights(n_kept: int) -> torch.Tensor:
    """How often each kept step is drawn: in proportion to how many of the K = 1, 2, 4, ... student grids
    use it (the first step, noise, is in all of them). [n_kept], sums to 1."""
    w = torch.zeros(n_kept)
    k = 1
    while k <= n_kept:
        w[:: n_kept // k] += 1
        k *= 2
    return w / w.sum()


def draw_batch(data: dict, batch_size: int, weights: torch.Tensor, alpha_bars, generator: torch.Generator, device):
    """(x_t, t, y, target) for a batch: a random trajectory and a random kept step of it, each from ``generator``.

    The target is ``ddim_target`` towards the trajectory's end (alpha_bar_next = 1): the teacher's x_0."""
    n = data["x0"].shape[0]
    j = torch.randint(n, (batch_size,), generator=generator)  # [B] trajectories
    i = torch.multinomial(weights, batch_size, replacement=True, generator=generator)  # [B] kept steps
    x_t = data["states"][j, i].to(device, torch.float32)  # [B, C, H, W]
    t = data["times"][i].to(device)  # [B]
    x_end = data["x0"][j].to(device, torch.float32)
    ab_t = gather(alpha_bars.to(device), t, x_t)  # [B, 1, 1, 1]
    target = ddim_target(x_t, x_end, ab_t, torch.ones_like(ab_t))
    return x_t, t, data["y"][j].to(device), target


@dataclass(frozen=True)
class DistillConfig:
    guidance: float = 0.5  # the teacher's guidance, folded into the student
    teacher_sampler: str = "dpmpp_2m"  # a deterministic sampler: "dpmpp_2m" or "ddim" (eta 0)
    teacher_steps: int = TEACHER_STEPS
    keep_every: int = KEEP_EVERY  # keep every n-th teacher state (the student's steps are among the kept ones)
    trajectories: int = 8000
    chunk: int = 500  # trajectories per teacher file
    batch_size: int = 64
    lr: float = 4e-4
    warmup_steps: int = 50
    ema_decay: float = 0.995
    grad_clip: float = 1.0
    checkpoint_every: int = 100
    seed: int = 0


def train_student(
    student: nn.Module,
    data: dict,
    alpha_bars: torch.Tensor,
    *,
    config: DistillConfig,
    generator: torch.Generator,
    steps: int,
    optimizer: torch.optim.Optimizer | None = None,
    ema: nn.Module | None = None,
    start_step: int = 0,
) -> tuple[torch.optim.Optimizer, nn.Module, list[float]]:
    """``steps`` optimiser steps of ``distill_loss`` on batches from ``data`` (``teacher_trajectories`` output):

        repeat:  (x_t, t, y, x~) ~ data;   loss = || x0_hat(student(x_t, t, y)) - x~ ||^2
                 AdamW step (linear warm-up, gradient clipping);   ema <- decay ema + (1 - decay) student

    student: any ``model(x, t, y)`` noise predictor that is an nn.Module (``VStudent(net, schedule)``);
    its device is where the batches go. Returns (optimizer, ema, losses) to continue from (start_step on).
    """
    device = next(student.parameters()).device
    optimizer = optimizer or torch.optim.AdamW(student.parameters(), lr=config.lr, weight_decay=0.0)
    ema = ema if ema is not None else copy.deepcopy(student).requires_grad_(False)
    weights = step_weights(data["states"].shape[1])
    alpha_bars = alpha_bars.to(device)
    losses = []
    student.train()
    for step in range(start_step, start_step + steps):
        for group in optimizer.param_groups:
            group["lr"] = config.lr * min(1.0, (step + 1) / max(config.warmup_steps, 1))
        x_t, t, y, target = draw_batch(data, config.batch_size, weights, alpha_bars, generator, device)
        loss = distill_loss(student, x_t, t, y, target, alpha_bars)
        if not torch.isfinite(loss):
            raise LabkitError(f"distillation loss is {float(loss)} at step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), config.grad_clip)
        optimizer.step()
        ema_update(ema, student, ema_decay_at(step, config.ema_decay))
        losses.append(loss.item())
    student.eval()
    return optimizer, ema, losses


# --- Files: teacher chunks, the run's checkpoint, the release ---------------------------------------------


def make_teacher_data(folder, teacher, schedule, config: DistillConfig, *, log=print) -> int:
    """Write ``config.trajectories`` teacher trajectories as chunk files folder/chunk_NNNNN.pt (atomically,
    one by one; those already there are kept: a stopped run resumes). Chunk k's noise comes from
    torch.Generator().manual_seed(seed * 100_003 + k). Returns the number of trajectories on disk."""
    folder = Path(folder)
    per_class = config.chunk // 10
    n_chunks = math.ceil(config.trajectories / (10 * per_class))
    device = next(teacher.parameters()).device
    for k in range(n_chunks):
        path = folder / f"chunk_{k:05d}.pt"
        if path.exists():
            continue
        start = time.perf_counter()
        y = torch.arange(10, device=device).repeat_interleave(per_class)  # [chunk]
        gen = torch.Generator(device).manual_seed(config.seed * 100_003 + k)
        part = teacher_trajectories(teacher, y, schedule, guidance=config.guidance, null_class=10,
                                    generator=gen, steps=config.teacher_steps, sampler=config.teacher_sampler,
                                    keep_every=config.keep_every)  # fmt: skip
        part = {**part, "states": part["states"].half(), "x0": part["x0"].half()}
        save_checkpoint(path, {"teacher": part, "guidance": config.guidance})
        s = time.perf_counter() - start
        log(
            f"teacher chunk {k + 1}/{n_chunks}: {len(y)} trajectories in {s:.0f} s ({len(y) / s:.1f}/s), load {_load()}"
        )
    return n_chunks * 10 * per_class


def load_teacher_data(folder) -> dict:
    """All chunk files in ``folder`` concatenated: {"states", "times", "x0", "y"}; LabkitError if none."""
    paths = sorted(Path(folder).glob("chunk_*.pt"))
    if not paths:
        raise LabkitError(f"no teacher trajectories in {folder}: run 'labkit distill teacher' first")
    parts = [load_checkpoint(p)["teacher"] for p in paths]
    return {
        "states": torch.cat([p["states"] for p in parts]),
        "times": parts[0]["times"],
        "x0": torch.cat([p["x0"] for p in parts]),
        "y": torch.cat([p["y"] for p in parts]),
    }


def _load() -> str:
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:
        return "?"


def fast_meta(teacher_meta: dict, config: DistillConfig, times: torch.Tensor) -> dict:
    """What a fast checkpoint says about itself: ``grid``, the kept teacher steps [S / KEEP_EVERY] (the
    student's K-step grids are ``student_grid(grid, K)``), and how the teacher sampled."""
    return {
        "parameterization": "v",
        "grid": [int(t) for t in times],
        "teacher": {
            "sampler": config.teacher_sampler,
            "steps": config.teacher_steps,
            "guidance": config.guidance,
            "checkpoint_step": teacher_meta.get("step"),
        },
        "distill": asdict(config),
    }


def run(
    out,
    *,
    minutes: float | None,
    steps: int | None,
    config: DistillConfig,
    threads: int = 1,
    teacher_too=True,
    teacher=None,
    log=print,
) -> Path:
    """Teacher trajectories (the missing chunks, when ``teacher_too``), then the student's training, resumed
    from out/last.pt when it is there.

    Stops after ``minutes`` of training (this call's) or at ``steps`` in all. Checkpoints every
    ``config.checkpoint_every`` steps, atomically; new teacher chunks written meanwhile are picked up then.
    teacher: (model, schedule, meta) as ``load_model`` returns them; default the shipped model."""
    from labkit.checkpoint import load_model

    if threads:
        torch.set_num_threads(threads)
    out = Path(out)
    teacher, schedule, teacher_meta = teacher or load_model(None, device="cpu")
    if teacher_too:
        make_teacher_data(out / "teacher", teacher, schedule, config, log=log)
    data = load_teacher_data(out / "teacher")
    net = copy.deepcopy(teacher).requires_grad_(True)
    student = VStudent(net, schedule)
    gen = torch.Generator().manual_seed(config.seed)
    optimizer = ema = None
    step, elapsed = 0, 0.0
    last = out / "last.pt"
    if last.exists():
        state = load_checkpoint(last)
        net.load_state_dict(state["model"])
        ema = copy.deepcopy(student).requires_grad_(False)
        ema.net.load_state_dict(state["ema"])
        optimizer = torch.optim.AdamW(student.parameters(), lr=config.lr, weight_decay=0.0)
        optimizer.load_state_dict(state["optimizer"])
        gen.set_state(state["rng"])
        step, elapsed = int(state["step"]), float(state["elapsed_s"])
        log(f"resumed from {last} at step {step} ({elapsed / 60:.1f} training minutes)")
    budget = None if minutes is None else 60.0 * minutes
    spent = 0.0
    while (steps is None or step < steps) and (budget is None or spent < budget):
        n = config.checkpoint_every if steps is None else min(config.checkpoint_every, steps - step)
        start = time.perf_counter()
        optimizer, ema, losses = train_student(student, data, schedule.alpha_bars, config=config, generator=gen,
                                               steps=n, optimizer=optimizer, ema=ema, start_step=step)  # fmt: skip
        took = time.perf_counter() - start
        step, spent, elapsed = step + n, spent + took, elapsed + took
        save_checkpoint(last, {
            "model": net.state_dict(), "ema": ema.net.state_dict(),
            "optimizer": optimizer.state_dict(), "rng": gen.get_state(), "step": step, "elapsed_s": elapsed,
            "unet": teacher_meta["unet"], "schedule": teacher_meta["schedule"], "T": teacher_meta["T"],
            "train": {"sampler": "consistency", "sample_steps": 2, "guidance": 0.0},
            "fast": {**fast_meta(teacher_meta, config, data["times"]), "trajectories": len(data["y"])},
        })  # fmt: skip
        log(f"step {step}: loss {sum(losses) / len(losses):.4f}, {n * config.batch_size / took:.0f} images/s, "
            f"{elapsed / 60:.1f} training min, {len(data['y'])} trajectories, load {_load()}")  # fmt: skip
        if len(list((out / "teacher").glob("chunk_*.pt"))) * config.chunk > len(data["y"]):
            data = load_teacher_data(out / "teacher")  # chunks written by a teacher run beside this one
    return last


def export_fast(src, dst, *, quality: dict | None = None) -> Path:
    """The release file of a fast run: the EMA student (fp16), its configs and grids, ``quality``."""
    state = load_checkpoint(src)
    ema = {k: (v.half() if v.is_floating_point() else v) for k, v in state["ema"].items()}
    keep = {k: state[k] for k in ("unet", "schedule", "T", "train", "step", "elapsed_s", "fast")}
    return save_checkpoint(dst, {"ema": ema, **keep, "quality": quality or {}})


# --- python -m labkit.distill / labkit distill ------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The arguments of ``labkit distill`` / ``python -m labkit.distill``."""
    p.add_argument("what", choices=["all", "teacher", "train", "export"], nargs="?", default="all",
                   help="all: teacher trajectories, training, export; or one of them")  # fmt: skip
    p.add_argument("--out", default="runs/fast", help="run folder (teacher/ chunks, last.pt)")
    p.add_argument("--minutes", type=float, default=20.0, help="training minutes (this call)")
    p.add_argument("--steps", type=int, default=None, help="stop at this many steps in all (replaces --minutes)")
    p.add_argument("--trajectories", type=int, default=DistillConfig.trajectories)
    p.add_argument("--guidance", type=float, default=DistillConfig.guidance, help="the teacher's guidance weight")
    p.add_argument("--teacher-sampler", choices=["dpmpp_2m", "ddim"], default=DistillConfig.teacher_sampler)
    p.add_argument("--teacher-steps", type=int, default=DistillConfig.teacher_steps)
    p.add_argument("--keep-every", type=int, default=DistillConfig.keep_every, help="keep every n-th teacher state")
    p.add_argument("--batch-size", type=int, default=DistillConfig.batch_size)
    p.add_argument("--lr", type=float, default=DistillConfig.lr)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--export", default=None, help="release file to write (default: OUT/fast.pt)")
    return p


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labkit.distill", description=__doc__.splitlines()[0])
    return run_command(add_arguments(parser).parse_args(argv))


def run_command(args) -> int:
    """What ``labkit distill`` does with its parsed arguments."""
    config = DistillConfig(guidance=args.guidance, trajectories=args.trajectories, batch_size=args.batch_size,
                           teacher_sampler=args.teacher_sampler, teacher_steps=args.teacher_steps,
                           keep_every=args.keep_every,
                           lr=args.lr, seed=args.seed)  # fmt: skip
    out = Path(args.out)
    if args.what == "teacher":
        from labkit.checkpoint import load_model

        torch.set_num_threads(args.threads)
        teacher, schedule, _ = load_model(None, device="cpu")
        n = make_teacher_data(out / "teacher", teacher, schedule, config)
        print(f"{n} teacher trajectories in {out / 'teacher'}")
        return 0
    if args.what in ("all", "train"):
        minutes = None if args.steps is not None else args.minutes
        run(out, minutes=minutes, steps=args.steps, config=config, threads=args.threads, teacher_too=args.what == "all")
    if args.what in ("all", "export"):
        path = export_fast(out / "last.pt", args.export or out / "fast.pt")
        print(f"fast model -> {path}  (labkit sample --checkpoint {path})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
