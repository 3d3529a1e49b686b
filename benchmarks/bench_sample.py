"""Sampling benchmark: seconds to draw 1000 digits (100 per class) per sampler / steps / guidance,
and their quality (shipped MNIST classifier accuracy, classifier-feature FID over the real floor).

    python benchmarks/bench_sample.py                                  # shipped checkpoint, default grid
    python benchmarks/bench_sample.py --checkpoint runs/mnist-cpu/last.pt --runs dpmpp_2m:15:1 ddim:50:3
    python benchmarks/bench_sample.py --no-eval                         # timing only (no MNIST needed)
    python benchmarks/bench_sample.py --runs default dpmpp_2m:8:1 --json sample.json   # the checkpoint's own sampler

A run is SAMPLER:STEPS:GUIDANCE, or "default": the sampler, steps and guidance the checkpoint's recipe names.

Works on CPU and CUDA; prints the device, thread count and load average with the table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

import torch

from labkit.checkpoint import load_model
from labkit.samplers import sample

DEFAULT_RUNS = ["ddpm:16:0.4", "ddpm:16:0.5", "ddpm:20:0.4", "dpmpp_2m:8:1", "dpmpp_2m:15:1", "ddim:50:2"]


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB -> MiB (process peak)


def draw(model, schedule, sampler, steps, w, per_class, seed=0):
    """1000 digits (per_class of each) -> (images [N,1,28,28] in [0,1] on the CPU, labels [N], seconds)."""
    device = next(model.parameters()).device
    y = torch.arange(10, device=device).repeat_interleave(per_class)  # [10 * per_class]
    gen = torch.Generator(device).manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    x = sample(model, (len(y), 1, 28, 28), y, schedule, sampler=sampler, steps=steps, guidance=w,
               null_class=model.config.num_classes, clip=1.0, generator=gen)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return ((x.float().clamp(-1, 1) + 1) / 2).cpu(), y.cpu(), seconds


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None, help="default: the shipped labkit/assets/mnist_ddpm.pt")
    p.add_argument("--runs", nargs="*", default=DEFAULT_RUNS, help="SAMPLER:STEPS:GUIDANCE ...")
    p.add_argument("--per-class", type=int, default=100)
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data", default=None, help="MNIST folder for the evaluation")
    p.add_argument("--no-eval", action="store_true")
    p.add_argument("--seeds", type=int, nargs="*", default=[0], help="one row per run and seed (FID varies ~10%% with it)")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    model, schedule, meta = load_model(args.checkpoint, device=args.device)
    device = next(model.parameters()).device
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"checkpoint {meta['path']} (step {meta['step']}), device: {card}, load average {os.getloadavg()}")
    if not args.no_eval:
        from labkit.evaluation.report import evaluate_samples

    train_cfg = meta.get("train") or {}
    default = f"{train_cfg.get('sampler', 'dpmpp_2m')}:{train_cfg.get('sample_steps', 15)}:{train_cfg.get('guidance', 1.0)}"
    runs = [default if r == "default" else r for r in args.runs]
    draw(model, schedule, "ddim", 2, 0.0, 1)  # warm-up (first-call overheads)
    head = f"{'sampler':>9} {'steps':>5} {'w':>4} {'seed':>4} | {'seconds':>7} {'digits/s':>8} {'peak MB':>8} | {'accuracy':>8} {'FID/floor':>9}"
    print(head + "\n" + "-" * len(head))
    rows = []
    for run, seed in ((r, s) for r in runs for s in args.seeds):
        sampler, steps, w = run.split(":")
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        images, labels, seconds = draw(model, schedule, sampler, int(steps), float(w), args.per_class, seed)
        acc = ratio = float("nan")
        if not args.no_eval:
            o = evaluate_samples(images, labels, data_root=args.data, generator=torch.Generator().manual_seed(0))["overall"]
            acc, ratio = o["accuracy"], o["fid_ratio"]
        print(f"{sampler:>9} {int(steps):>5} {float(w):>4g} {seed:>4} | {seconds:>7.2f} {len(images) / seconds:>8.0f} "
              f"{peak_memory_mb(device):>8.0f} | {100 * acc:>7.1f}% {ratio:>9.2f}", flush=True)
        rows.append({"run": run, "default": run == default, "sampler": sampler, "steps": int(steps), "guidance": float(w),
                     "seed": seed, "n": len(images), "seconds": seconds, "peak_mb": peak_memory_mb(device),
                     "accuracy": None if args.no_eval else acc, "fid_ratio": None if args.no_eval else ratio})
    print(f"load average after: {os.getloadavg()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": card, "checkpoint": meta["path"], "step": meta["step"], "torch": torch.__version__,
                       "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
