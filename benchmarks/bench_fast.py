"""Few-step benchmark (issue 28): quality against network evaluations per digit, the fast model beside the default.

    python benchmarks/bench_fast.py                                   # the shipped models, the table of docs/benchmarks.md
    python benchmarks/bench_fast.py --fast runs/fast/last.pt          # a fast run's checkpoint instead of the shipped one
    python benchmarks/bench_fast.py --runs fast:consistency:2:0 default:ddpm:16:0.5 --no-eval

A run is MODEL:SAMPLER:STEPS:GUIDANCE with MODEL default (the shipped DDPM) or fast (the distilled one, sampled on
its own grid, guidance folded in). Each row draws 1000 digits (100 per class, seed 0) and prints the network
evaluations per digit *counted* by wrapping the model (``samplers.Counted``; a guided call counts twice), the
seconds and digits/s, the shipped classifier's accuracy and the FID on its features over the real floor (the FID
of as many real digits, ``evaluation.fid``; lab 06). Prints the device, threads and load average.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from labkit.checkpoint import load_model
from labkit.distill import student_grid
from labkit.samplers import Counted, sample_digits

DEFAULT_RUNS = [
    "default:ddpm:16:0.5",  # today's default: 32 evaluations
    "default:dpmpp_2m:16:0.5",  # the teacher: 32 evaluations
    "default:ddim:1:0.5",
    "default:ddim:2:0.5",
    "default:ddim:4:0.5",
    "default:dpmpp_2m:2:0.5",
    "default:dpmpp_2m:4:0.5",
    "fast:consistency:1:0",
    "fast:consistency:2:0",
    "fast:consistency:4:0",
    "fast:consistency:8:0",
    "fast:ddim:2:0",  # the deterministic step from an end-point prediction, for comparison
    "fast:ddim:4:0",
]


def draw(model, schedule, meta, sampler, steps, w, per_class, seed=0):
    """-> (images [N,1,28,28] in [0,1] on the CPU, labels [N], seconds, evaluations per digit (counted))."""
    device = next(model.parameters()).device
    y = torch.arange(10, device=device).repeat_interleave(per_class)  # [10 * per_class]
    grid = student_grid(torch.tensor(meta["fast"]["grid"]), steps) if meta.get("fast") else None
    counted = Counted(model)
    start = time.perf_counter()
    x = sample_digits(counted, y, schedule, sampler=sampler, steps=steps, guidance=w, null_class=10,
                      generator=torch.Generator(device).manual_seed(seed), grid=grid)  # fmt: skip
    if device.type == "cuda":
        torch.cuda.synchronize()
    return x.cpu(), y.cpu(), time.perf_counter() - start, counted.rows / len(y)


def main(argv=None) -> list:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fast", default=None, help="fast checkpoint (default: the shipped labkit/assets/mnist_fast.pt)")
    p.add_argument("--runs", nargs="*", default=DEFAULT_RUNS, help="MODEL:SAMPLER:STEPS:GUIDANCE ...")
    p.add_argument("--per-class", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data", default=None, help="MNIST folder for the evaluation")
    p.add_argument("--no-eval", action="store_true")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    models = {"default": load_model(None, device=args.device)}
    if any(r.startswith("fast:") for r in args.runs):
        models["fast"] = load_model(args.fast, device=args.device, shipped="fast")
    device = next(models["default"][0].parameters()).device
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"device: {card}, torch {torch.__version__}, load average {os.getloadavg()}")
    for name, (_, _, meta) in models.items():
        print(f"{name}: {meta['path']} (step {meta['step']})")
    if not args.no_eval:
        from labkit.evaluation.classifier import load_classifier
        from labkit.evaluation.fid import RealReference
        from labkit.evaluation.report import evaluate_samples

        real, judge = RealReference.from_mnist(args.data), load_classifier(device)

    head = f"{'model':>7} {'sampler':>8} {'steps':>5} {'w':>4} {'NFE':>4} | {'seconds':>7} {'digits/s':>8} | {'accuracy':>8} {'FID/floor':>9}"
    print(head + "\n" + "-" * len(head), flush=True)
    rows = []
    for run in args.runs:
        name, sampler, steps, w = run.split(":")
        model, schedule, meta = models[name]
        images, labels, seconds, nfe = draw(model, schedule, meta, sampler, int(steps), float(w), args.per_class, args.seed)
        acc = ratio = float("nan")
        if not args.no_eval:
            o = evaluate_samples(images, labels, classifier=judge, real=real,
                                 generator=torch.Generator().manual_seed(0))["overall"]  # fmt: skip
            acc, ratio = o["accuracy"], o["fid_ratio"]
        print(f"{name:>7} {sampler:>8} {int(steps):>5} {float(w):>4g} {nfe:>4g} | {seconds:>7.1f} {len(images) / seconds:>8.0f} "
              f"| {100 * acc:>7.1f}% {ratio:>9.2f}  (load {os.getloadavg()[0]:.1f})", flush=True)  # fmt: skip
        rows.append({"run": run, "model": name, "sampler": sampler, "steps": int(steps), "guidance": float(w),
                     "nfe": nfe, "n": len(images), "seconds": seconds, "load": os.getloadavg()[0],
                     "accuracy": None if args.no_eval else acc, "fid_ratio": None if args.no_eval else ratio})  # fmt: skip
    print(f"load average after: {os.getloadavg()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": card, "torch": torch.__version__, "rows": rows,
                       "checkpoints": {k: m[2]["path"] for k, m in models.items()}}, f, indent=1)  # fmt: skip
    return rows


if __name__ == "__main__":
    main()
