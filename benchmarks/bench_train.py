"""Training benchmark: images/s, peak memory and time-to-quality of a recipe, on CPU or CUDA.

    python benchmarks/bench_train.py --recipe cpu --minutes 10 --eval-every 120     # time to quality
    python benchmarks/bench_train.py --recipe gpu --throughput --batch-sizes 256 512 1024
    python benchmarks/bench_train.py --flops                                         # FLOPs per image
    python benchmarks/bench_train.py --recipe gpu --minutes 1.5 --eval-every 10 --json train.json   # rows as JSON too

Time to quality: every --eval-every training seconds the EMA model draws 1000 digits (100 per class,
the recipe's sampler, steps and guidance) and the shipped classifier scores them; quality is reached when
accuracy >= 99% and FID <= 2.5x the real floor. Evaluation time is not counted as training time.
Prints the card (or CPU threads) and the load average: on a shared CPU the numbers are pessimistic.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from dataclasses import replace

import torch

from labkit import recipes
from labkit.data import load_mnist
from labkit.device import describe, pick_device, resolve_precision
from labkit.training import train
from labkit.unet import UNet

TARGET_ACC, TARGET_RATIO = 0.99, 2.5


def _literal(text: str):
    """'5' -> 5, '0.999' -> 0.999, 'None' -> None, 'ddpm' -> 'ddpm' (for --set)."""
    import ast

    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def card_name(device) -> str:
    return describe(device)


def peak_memory_mb(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def forward_flops(config, batch: int = 1) -> int:
    """FLOPs of one forward pass for `batch` 28x28 images (torch.utils.flop_counter; 1 MAC = 2 FLOPs)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = UNet(config.unet)
    x = torch.zeros(batch, config.unet.in_channels, 28, 28)
    t = torch.zeros(batch, dtype=torch.long)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x, t, t)
    return counter.get_total_flops()


def throughput(config, data, device, steps: int) -> tuple[float, float]:
    """images/s over `steps` steps after a 5-step warm-up; peak memory in MB."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    cfg = replace(config, total_steps=steps + 5, time_budget_s=None, out_dir=None, checkpoint_every=0,
                  sample_every=0, log_every=steps + 5)
    marks = {}

    def mark(info):
        if info.step == 5:
            if device.type == "cuda":
                torch.cuda.synchronize()
            marks["start"] = time.perf_counter()

    train(cfg, data, device=device, resume=False, progress=False, callback=mark)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * config.batch_size / (time.perf_counter() - marks["start"]), peak_memory_mb(device)


def time_to_quality(config, data, device, minutes: float, eval_every: float, data_root, out_dir=None,
                    per_class: int = 100) -> dict:
    """Train for ``minutes``, evaluating every ``eval_every`` training seconds on 10 x ``per_class`` samples;
    prints one row per evaluation and returns {"rows": [...], "reached_s", "peak_mb"} (what --json writes)."""
    from labkit.evaluation.report import evaluate_samples
    from labkit.samplers import sample
    from labkit.schedules import make_schedule

    schedule = make_schedule(config.schedule, config.T)
    state = {"next": eval_every, "reached": None}
    rows = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    print(f"{'train s':>8} {'step':>7} {'images':>9} {'img/s':>6} {'loss':>7} | {'accuracy':>8} {'FID/floor':>9} {'sample s':>8}")

    def evaluate(info):
        if info.loss is not None:
            state["loss"] = info.loss  # the last logged loss
        if info.elapsed_s < state["next"]:
            return False
        state["next"] += eval_every
        y = torch.arange(10, device=device).repeat_interleave(per_class)  # [10 * per_class]
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # queued training steps are not sampling time
        start = time.perf_counter()
        x = sample(info.ema, (len(y), 1, 28, 28), y, schedule, sampler=config.sampler,
                   steps=config.sample_steps, guidance=config.guidance, null_class=10, clip=1.0,
                   generator=torch.Generator(device).manual_seed(0))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        sample_s = time.perf_counter() - start
        # scored where the samples are (the classifier follows the images): no copy back, fast on a GPU
        o = evaluate_samples((x.float().clamp(-1, 1) + 1) / 2, y, data_root=data_root,
                             generator=torch.Generator().manual_seed(0))["overall"]
        images = info.step * config.batch_size
        rows.append({"train_s": info.elapsed_s, "step": info.step, "images": images,
                     "images_per_s": images / info.elapsed_s, "loss": state.get("loss"),
                     "accuracy": o["accuracy"], "fid_ratio": o["fid_ratio"], "sample_s": sample_s})
        print(f"{info.elapsed_s:>8.0f} {info.step:>7} {images:>9} {images / info.elapsed_s:>6.0f} "
              f"{state.get('loss', float('nan')):>7.4f} | {100 * o['accuracy']:>7.1f}% "
              f"{o['fid_ratio']:>9.2f} {sample_s:>8.1f}   load {os.getloadavg()[0]:.1f}", flush=True)
        if state["reached"] is None and o["accuracy"] >= TARGET_ACC and o["fid_ratio"] <= TARGET_RATIO:
            state["reached"] = info.elapsed_s
        return False

    with tempfile.TemporaryDirectory() as tmp:
        cfg = replace(config, time_budget_s=60 * minutes, total_steps=10**9, out_dir=out_dir or tmp, log_every=10)
        train(cfg, data, device=device, resume=False, progress=False, callback=evaluate)
    reached = f"{state['reached']:.0f} s" if state["reached"] is not None else f"not within {minutes:g} min"
    print(f"time to quality (accuracy >= 99%, FID <= {TARGET_RATIO}x floor): {reached}")
    return {"rows": rows, "reached_s": state["reached"], "peak_mb": peak_memory_mb(device)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default="auto", choices=["cpu", "gpu", "auto", "tiny"])
    p.add_argument("--data", default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--eval-every", type=float, default=120.0, help="training seconds between evaluations")
    p.add_argument("--throughput", action="store_true", help="only images/s and memory, per batch size")
    p.add_argument("--batch-sizes", type=int, nargs="*", default=None)
    p.add_argument("--steps", type=int, default=30, help="timed steps per batch size (--throughput)")
    p.add_argument("--flops", action="store_true", help="only count FLOPs per image")
    p.add_argument("--out", default=None, help="keep the run's checkpoint here (default: a temporary folder)")
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                   help="override recipe fields, e.g. --set min_snr_gamma=5 ema_decay=0.999")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    device = pick_device(args.device)
    config = recipes.get("gpu" if args.recipe == "auto" and device.type == "cuda" else
                         "cpu" if args.recipe == "auto" else args.recipe)
    config = replace(config, **{k: _literal(v) for k, v in (kv.split("=", 1) for kv in args.set)})
    if args.set:
        print("recipe overrides:", " ".join(args.set))
    flops = forward_flops(config)
    params = sum(q.numel() for q in UNet(config.unet).parameters())
    amp, _ = resolve_precision(config.precision, device)
    print(f"device: {card_name(device)}; load average {os.getloadavg()}; torch {torch.__version__}")
    print(f"model: {params / 1e6:.2f}M parameters, {flops / 1e6:.1f} MFLOP forward per image "
          f"(training ~3x: {3 * flops / 1e6:.0f} MFLOP per image); precision {amp or 'fp32'}")
    if args.flops:
        return
    info = {"device": card_name(device), "torch": torch.__version__, "recipe": args.recipe, "overrides": args.set,
            "params": params, "forward_flops": flops, "precision": str(amp or "fp32"), "batch_size": config.batch_size}
    data = load_mnist(args.data, train=True)
    if args.throughput:
        print(f"{'batch':>6} | {'images/s':>9} {'peak MB':>8} {'TFLOP/s':>8}")
        info["throughput"] = []
        for b in args.batch_sizes or [config.batch_size]:
            ips, mem = throughput(replace(config, batch_size=b), data, device, args.steps)
            print(f"{b:>6} | {ips:>9.0f} {mem:>8.0f} {3 * flops * ips / 1e12:>8.3f}", flush=True)
            info["throughput"].append({"batch_size": b, "images_per_s": ips, "peak_mb": mem})
    else:
        info.update(time_to_quality(config, data, device, args.minutes, args.eval_every, args.data, args.out))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(info, f, indent=1)


if __name__ == "__main__":
    main()
