"""The GPU check of issue 15 in one run (< 10 minutes on one H100/H200-class GPU), ending in one table.

    bash benchmarks/gpu_check.sh                      # everything; logs and JSON under $OUT (else runs/gpu_check)
    bash benchmarks/gpu_check.sh --only tests train   # a subset: tests, train, sample, notebooks
    bash benchmarks/gpu_check.sh --smoke              # CPU dry run with canned results (what tests/ runs)

Steps, in this order, each a subprocess with its own log (OUT/logs/STEP.log), stopped at the --budget:
  tests      the ``cuda``-marked tests (tests/test_cuda.py)
  train      bench_train.py --recipe gpu: time to quality, evaluating every --eval-every training seconds
  sample     bench_sample.py on the fresh gpu-recipe checkpoint and on the shipped one: the checkpoint's
             default sampler and the fastest (dpmpp_2m 8 steps), 1000 digits each
  notebooks  the 9 solution notebooks top to bottom in normal mode (LABKIT_FAST unset), timed one by one
Peak memory: the benchmarks' torch.cuda.max_memory_allocated; for tests and notebooks the most the GPU
showed as used (nvidia-smi, polled every 0.5 s; includes the CUDA context). MNIST comes from --data,
LABKIT_DATA or ../shared/data/mnist. Writes OUT/gpu_check.md (the table) and OUT/gpu_check.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("tests", "train", "sample", "notebooks")
FASTEST = "dpmpp_2m:8:1"
LEVELS = ((0.99, 2.5), (0.995, 1.5))  # (accuracy, FID / floor): the CPU target and the GPU target of issue 15


# --- Parsing what the steps print ----------------------------------------------------------------------


def parse_pytest(text: str) -> dict:
    """Counts from pytest's last summary line ('3 passed, 1 skipped in 2.0s' -> {'passed': 3, 'skipped': 1})."""
    counts = {}
    lines = [line for line in text.splitlines() if re.search(r"\b(passed|failed|skipped|error|errors|deselected)\b", line)]
    for n, word in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected|xfailed|xpassed)", lines[-1] if lines else ""):
        counts["errors" if word.startswith("error") else word] = int(n)
    return counts


def last_error(text: str) -> str:
    """The last line that names an exception ('ValueError: ...', 'CellExecutionError'), else the last line."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)  # a notebook's traceback comes with terminal colours
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if re.match(r"^([\w.]+(Error|Exception|Interrupt)|AssertionError|CheckFailed)\b", line):
            return line[:160]
    return lines[-1][:160] if lines else "no output"


def first_reaching(rows: list[dict], accuracy: float, ratio: float) -> dict | None:
    """The first evaluation row with accuracy >= ``accuracy`` and FID / floor <= ``ratio``."""
    for row in rows:
        if row.get("accuracy") is not None and row.get("fid_ratio") is not None \
                and row["accuracy"] >= accuracy and row["fid_ratio"] <= ratio:
            return row
    return None


def train_rows(result: dict, target_s: float = 30.0) -> list[dict]:
    """Table rows from bench_train.py --json: throughput, seconds to each quality level, quality at target_s."""
    rows = result.get("rows") or []
    tag = f"train gpu recipe ({result.get('precision')}, batch {result.get('batch_size')}, {result.get('params', 0) / 1e6:.1f}M)"
    if not rows:
        return [{"check": tag, "result": "no evaluation row", "ok": False}]
    last = rows[-1]
    out = [{"check": f"{tag}: images/s", "result": f"{last['images_per_s']:,.0f} images/s over {last['train_s']:.0f} s",
            "seconds": last["train_s"], "peak_mb": result.get("peak_mb"), "ok": True}]
    for acc, ratio in LEVELS:
        hit = first_reaching(rows, acc, ratio)
        out.append({"check": f"train: first >= {100 * acc:g}% and <= {ratio:g}x floor",
                    "result": (f"at {hit['train_s']:.0f} s ({100 * hit['accuracy']:.1f}%, {hit['fid_ratio']:.2f}x)" if hit
                               else f"not within {last['train_s']:.0f} s (best {100 * max(r['accuracy'] for r in rows):.1f}%, "
                                    f"{min(r['fid_ratio'] for r in rows):.2f}x)"),
                    "seconds": hit["train_s"] if hit else None, "ok": hit is not None})
    near = min(rows, key=lambda r: abs(r["train_s"] - target_s))
    out.append({"check": f"train: quality at ~{target_s:g} s", "result": f"{100 * near['accuracy']:.1f}% / "
                f"{near['fid_ratio']:.2f}x at {near['train_s']:.0f} s; 1000 digits sampled in {near['sample_s']:.2f} s",
                "seconds": near["train_s"], "ok": True})
    return out


def sample_rows(result: dict, label: str) -> list[dict]:
    """Table rows from bench_sample.py --json."""
    out = []
    for r in result.get("rows", []):
        quality = "" if r.get("accuracy") is None else f", {100 * r['accuracy']:.1f}% / {r['fid_ratio']:.2f}x"
        kind = "default" if r.get("default") else "fastest"
        out.append({"check": f"sample {label} ({kind}: {r['run']})",
                    "result": f"{r['n']} digits in {r['seconds']:.3f} s{quality}",
                    "seconds": r["seconds"], "peak_mb": r.get("peak_mb"), "ok": True})
    return out


def format_table(rows: list[dict], title: str) -> str:
    """One markdown table: check | result | seconds | peak memory."""
    def num(x, fmt):
        return "" if x is None else format(x, fmt)

    lines = [f"### {title}", "", "| check | result | s | peak MB |", "|---|---|---:|---:|"]
    for r in rows:
        mark = "" if r.get("ok", True) else "**FAIL** "
        lines.append(f"| {r['check']} | {mark}{r['result']} | {num(r.get('seconds'), '.1f')} | {num(r.get('peak_mb'), ',.0f')} |")
    return "\n".join(lines)


# --- Running the steps ---------------------------------------------------------------------------------


class GpuMemory:
    """The most GPU memory in use (MiB, nvidia-smi) while a step runs; None where there is no nvidia-smi."""

    def __init__(self):
        self.exe = shutil.which("nvidia-smi")
        self.peak, self._stop = None, threading.Event()

    def _poll(self):
        while not self._stop.is_set():
            try:
                out = subprocess.run([self.exe, "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True, timeout=5).stdout
                used = max(float(v) for v in out.split())
                self.peak = used if self.peak is None else max(self.peak, used)
            except (OSError, ValueError, subprocess.SubprocessError):
                pass
            self._stop.wait(0.5)

    def __enter__(self):
        if self.exe:
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self.exe:
            self._thread.join(timeout=6)


class Runner:
    def __init__(self, out: Path, budget_s: float, env: dict):
        self.out, self.env = out, env
        self.deadline = time.monotonic() + budget_s
        (out / "logs").mkdir(parents=True, exist_ok=True)

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def run(self, name: str, cmd: list[str], timeout: float, cwd=ROOT, env=None) -> dict:
        """Run cmd with a timeout (capped by the budget left); its output goes to OUT/logs/NAME.log."""
        timeout = min(timeout, self.left())
        log = self.out / "logs" / f"{name}.log"
        if timeout < 5:
            return {"rc": None, "seconds": 0.0, "peak_mb": None, "text": "", "skipped": True}
        start = time.monotonic()
        with GpuMemory() as mem, open(log, "w") as f:
            f.write("$ " + " ".join(map(str, cmd)) + "\n")
            f.flush()
            try:
                rc = subprocess.run(cmd, cwd=cwd, env=env or self.env, stdout=f, stderr=subprocess.STDOUT,
                                    timeout=timeout).returncode
            except subprocess.TimeoutExpired:
                rc = "timeout"
        seconds = time.monotonic() - start
        text = log.read_text(errors="replace")
        print(f"[{name}] rc={rc} in {seconds:.1f} s (budget left {self.left():.0f} s)", flush=True)
        return {"rc": rc, "seconds": seconds, "peak_mb": mem.peak, "text": text, "skipped": False}


def _skipped(check: str) -> dict:
    return {"check": check, "result": "skipped: out of time (rerun with --only)", "ok": False}


def step_tests(r: Runner, py: str, smoke: bool) -> list[dict]:
    cmd = [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "cuda", "-rs", "tests/test_cuda.py"]
    if smoke:
        cmd = [py, "-c", "print('.....s'); print('5 passed, 1 skipped in 3.21s')"]
    res = r.run("tests", cmd, timeout=180)
    if res["skipped"]:
        return [_skipped("cuda tests")]
    counts = parse_pytest(res["text"])
    ok = res["rc"] == 0 and counts.get("passed", 0) > 0
    result = ", ".join(f"{n} {k}" for k, n in counts.items()) or "no summary"
    if not ok:
        result += f" (rc {res['rc']}: {last_error(res['text'])})"
    return [{"check": "cuda tests (tests/test_cuda.py)", "result": result, "seconds": res["seconds"],
             "peak_mb": res["peak_mb"], "ok": ok}]


def step_train(r: Runner, py: str, smoke: bool, args) -> list[dict]:
    js = r.out / "train.json"
    cmd = [py, "benchmarks/bench_train.py", "--recipe", "gpu", "--minutes", str(args.train_minutes),
           "--eval-every", str(args.eval_every), "--threads", "8", "--out", str(r.out / "run-gpu"), "--json", str(js)]
    if args.data:
        cmd += ["--data", args.data]
    if smoke:
        canned = {"precision": "torch.bfloat16", "batch_size": 512, "params": 3.0e6, "peak_mb": 2048.0, "reached_s": 20.0,
                  "rows": [{"train_s": t, "step": 40 * t, "images": 20480 * t, "images_per_s": 20480.0, "loss": 0.05,
                            "accuracy": a, "fid_ratio": f, "sample_s": 0.2}
                           for t, a, f in ((10, 0.95, 6.0), (20, 0.992, 2.1), (30, 0.996, 1.4))]}
        cmd = [py, "-c", f"import json; json.dump({canned!r}, open({str(js)!r}, 'w')); print('time to quality: 20 s')"]
    res = r.run("train", cmd, timeout=60 * args.train_minutes + 180)
    if res["skipped"]:
        return [_skipped("train gpu recipe")]
    if res["rc"] != 0 or not js.is_file():
        return [{"check": "train gpu recipe", "result": f"rc {res['rc']}: {last_error(res['text'])}",
                 "seconds": res["seconds"], "ok": False}]
    return train_rows(json.loads(js.read_text()))


def step_sample(r: Runner, py: str, smoke: bool, args) -> list[dict]:
    rows = []
    targets = [("gpu run", r.out / "run-gpu" / "last.pt"), ("shipped", None)]
    for label, ckpt in targets:
        if ckpt is not None and not ckpt.is_file() and not smoke:
            rows.append({"check": f"sample {label}", "result": "no checkpoint (the train step did not run)", "ok": False})
            continue
        js = r.out / f"sample_{label.replace(' ', '_')}.json"
        cmd = [py, "benchmarks/bench_sample.py", "--runs", "default", FASTEST, "--threads", "8", "--json", str(js)]
        cmd += ["--checkpoint", str(ckpt)] if ckpt is not None else []
        cmd += ["--data", args.data] if args.data else []
        if smoke:
            canned = {"rows": [{"run": "dpmpp_2m:15:1.0", "default": True, "n": 1000, "seconds": 0.21, "peak_mb": 900.0,
                                "accuracy": 0.996, "fid_ratio": 1.45},
                               {"run": FASTEST, "default": False, "n": 1000, "seconds": 0.12, "peak_mb": 850.0,
                                "accuracy": 0.993, "fid_ratio": 2.9}]}
            cmd = [py, "-c", f"import json; json.dump({canned!r}, open({str(js)!r}, 'w'))"]
        res = r.run(f"sample_{label.replace(' ', '_')}", cmd, timeout=150)
        if res["skipped"]:
            rows.append(_skipped(f"sample {label}"))
        elif res["rc"] != 0 or not js.is_file():
            rows.append({"check": f"sample {label}", "result": f"rc {res['rc']}: {last_error(res['text'])}",
                         "seconds": res["seconds"], "ok": False})
        else:
            rows += sample_rows(json.loads(js.read_text()), label)
    return rows


def smoke_notebooks(folder: Path) -> list[Path]:
    """Two tiny notebooks for --smoke: one runs, one raises."""
    import nbformat

    paths = []
    for name, code in (("smoke_ok", "print(1 + 1)"), ("smoke_fails", "raise ValueError('smoke: this cell fails')")):
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        path = folder / name / f"{name}.ipynb"
        path.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, str(path))
        paths.append(path)
    return paths


def step_notebooks(r: Runner, py: str, smoke: bool, args) -> list[dict]:
    rows = []
    scratch = Path(tempfile.mkdtemp(prefix="labkit-gpu-nb-"))
    sources = smoke_notebooks(scratch / "src") if smoke else sorted(ROOT.glob("solutions/lab*/lab*.ipynb"))
    env = {k: v for k, v in r.env.items() if k not in ("LABKIT_FAST", "NBGRADER_EXECUTION")}  # normal mode
    (r.out / "notebooks").mkdir(exist_ok=True)
    for src in sources:
        lab = src.stem
        work = scratch / lab
        work.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, work / src.name)  # run in a scratch folder: runs/ and checkpoints stay out of the repo
        cmd = [py, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute", str(work / src.name),
               "--output-dir", str(r.out / "notebooks"), "--output", f"{lab}.ipynb",
               f"--ExecutePreprocessor.timeout={int(args.cell_timeout)}", "--ExecutePreprocessor.kernel_name=python3"]
        res = r.run(f"notebook_{lab}", cmd, timeout=args.notebook_timeout, cwd=work, env=env)
        if res["skipped"]:
            rows.append(_skipped(f"notebook {lab}"))
            continue
        ok = res["rc"] == 0
        rows.append({"check": f"notebook {lab} (normal mode)", "result": "ran top to bottom" if ok else
                     f"rc {res['rc']}: {last_error(res['text'])}", "seconds": res["seconds"],
                     "peak_mb": res["peak_mb"], "ok": ok})
    shutil.rmtree(scratch, ignore_errors=True)
    return rows


def device_line(py: str, env: dict, smoke: bool) -> str:
    if smoke:
        return "smoke run (canned results, no GPU)"
    code = ("import torch; from labkit.device import describe, pick_device; d = pick_device(); "
            "print(describe(d), '| torch', torch.__version__, '| cuda', torch.version.cuda)")
    try:
        return subprocess.run([py, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=120).stdout.strip() or "unknown device"
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unknown device ({exc})"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="*", choices=STEPS, default=list(STEPS))
    p.add_argument("--budget", type=float, default=570.0, help="seconds for everything (steps are cut to fit)")
    p.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / "runs" / "gpu_check"))
    p.add_argument("--data", default=None, help="MNIST folder (default LABKIT_DATA, else ../shared/data/mnist)")
    p.add_argument("--train-minutes", type=float, default=1.5)
    p.add_argument("--eval-every", type=float, default=10.0, help="training seconds between evaluations")
    p.add_argument("--notebook-timeout", type=float, default=300.0, help="seconds per notebook")
    p.add_argument("--cell-timeout", type=float, default=280.0)
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--smoke", action="store_true", help="canned step outputs, two tiny notebooks: checks this script")
    args = p.parse_args(argv)
    args.python = str(Path(args.python).absolute())  # not resolved: a venv's python is a symlink

    shared = ROOT.parent / "shared" / "data" / "mnist"
    args.data = args.data or os.environ.get("LABKIT_DATA") or (str(shared) if shared.is_dir() else None)
    out = Path(args.out)
    env = dict(os.environ, MPLBACKEND="Agg", HF_HUB_OFFLINE=os.environ.get("HF_HUB_OFFLINE", "1"),
               PATH=f"{Path(args.python).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if args.data:
        env["LABKIT_DATA"] = str(Path(args.data).resolve())
    runner = Runner(out, args.budget, env)
    device = device_line(args.python, env, args.smoke)
    print(f"gpu_check: {device}; MNIST {args.data or 'not found'}; out {out}; budget {args.budget:.0f} s", flush=True)

    rows = []
    steps = {"tests": lambda: step_tests(runner, args.python, args.smoke),
             "train": lambda: step_train(runner, args.python, args.smoke, args),
             "sample": lambda: step_sample(runner, args.python, args.smoke, args),
             "notebooks": lambda: step_notebooks(runner, args.python, args.smoke, args)}
    for name in STEPS:
        if name in args.only:
            rows += steps[name]()
    table = format_table(rows, f"GPU check: {device}")
    print("\n" + table)
    (out / "gpu_check.md").write_text(table + "\n")
    (out / "gpu_check.json").write_text(json.dumps({"device": device, "rows": rows}, indent=1))
    return 0 if all(r.get("ok", True) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
