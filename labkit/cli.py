"""The ``labkit`` command: train, sample, evaluate, info (and build / grade for instructors).

    labkit train --recipe cpu --minutes 10 --out runs/mnist      # resumes by itself if stopped
    labkit sample --per-class 100 --out samples.pt --grid samples.png
    labkit evaluate samples.pt --json scores.json
    labkit info
    labkit report lab09_report.ipynb                               # one HTML file with every picture

Every error a person can fix (bad argument, missing data, corrupt checkpoint) is one line on stderr,
``labkit: error: ...``, and exit status 2; no traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from labkit.errors import LabkitError, LabkitValueError


def _nonneg_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _pos_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _nonneg_float(text: str) -> float:
    value = float(text)
    if not value >= 0:  # also NaN
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _check_output(path, what: str, suffixes=None) -> None:
    """Fail before the work, not after it: ``path`` must be writable as a file (a LabkitValueError if not)."""
    if path is None:
        return
    p = Path(path)
    if p.is_dir():
        raise LabkitValueError(f"{what} {p} is a folder: give a file name")
    parent = next((q for q in [p.parent, *p.parent.parents] if q.exists()), None)
    if parent is not None and not parent.is_dir():
        raise LabkitValueError(f"{what} {p}: {parent} is a file, not a folder")
    if suffixes is not None and p.suffix.lower() not in suffixes:
        raise LabkitValueError(f"{what} {p}: unsupported file type {p.suffix or '(none)'!r}; use one of {', '.join(sorted(suffixes))}")


def _image_suffixes() -> set:
    from PIL import Image

    return {ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.SAVE}


# --- train --------------------------------------------------------------------------------------------


def cmd_train(args) -> int:
    from dataclasses import replace

    import torch

    from labkit import recipes
    from labkit.checkpoint import export_release
    from labkit.data import load_mnist, synthetic_digits
    from labkit.device import pick_device
    from labkit.training import train

    device = pick_device(args.device)
    _check_output(args.export, "--export")
    if args.out is not None and Path(args.out).exists() and not Path(args.out).is_dir():
        raise LabkitValueError(f"--out {args.out} is a file, not a folder")
    name = args.recipe if args.recipe != "auto" else ("gpu" if device.type == "cuda" else "cpu")
    config = recipes.get(name)
    changes = {"seed": args.seed}
    if args.out is not None:
        changes["out_dir"] = args.out
    if args.steps is not None:  # a step count replaces the recipe's time budget...
        changes.update(total_steps=args.steps, time_budget_s=None)
    if args.minutes is not None:  # ...and a time budget replaces the step count
        changes.update(time_budget_s=60.0 * args.minutes, total_steps=10**9)
    if args.batch_size is not None:
        changes["batch_size"] = args.batch_size
    config = replace(config, **changes)
    if config.out_dir is None:
        config = replace(config, out_dir="runs/mnist")
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.synthetic:
        data = synthetic_digits(args.synthetic, generator=torch.Generator().manual_seed(args.seed))
    else:
        data = load_mnist(args.data, train=True)
    budget = f"{config.time_budget_s / 60:g} min" if config.time_budget_s else f"{config.total_steps} steps"
    print(f"labkit train: recipe {name}, {budget}, batch {config.batch_size}, device {device}, "
          f"{len(data)} images -> {config.out_dir}")
    result = train(config, data, device=device, resume=args.resume, progress=not args.quiet)
    print(f"trained to step {result.step}: {result.images_per_s:.0f} images/s, "
          f"last loss {result.losses[-1][1] if result.losses else float('nan'):.4f}; checkpoint {result.checkpoint}")
    if args.export:
        path = export_release(result.checkpoint, args.export)
        print(f"release checkpoint (EMA weights, fp16) -> {path}")
    return 0


# --- sample -------------------------------------------------------------------------------------------


def cmd_sample(args) -> int:
    import torch

    from labkit.checkpoint import load_model
    from labkit.evaluation.samples_file import save_samples_file
    from labkit.samplers import SAMPLERS, sample_digits

    if args.sampler is not None and args.sampler not in SAMPLERS:
        raise LabkitValueError(f"unknown sampler {args.sampler!r}: choose one of {', '.join(SAMPLERS)}")
    _check_output(args.out, "--out")
    if args.grid not in (None, "none"):
        _check_output(args.grid, "--grid", _image_suffixes())
    model, schedule, meta = load_model(args.checkpoint, device=args.device)
    train_cfg = meta.get("train") or {}
    args.sampler = args.sampler or train_cfg.get("sampler", "dpmpp_2m")  # the checkpoint's recipe says how
    steps = args.steps if args.steps is not None else train_cfg.get("sample_steps", 15)
    w = args.guidance if args.guidance is not None else train_cfg.get("guidance", 1.0)
    if steps > schedule.T:
        raise LabkitValueError(f"--steps {steps} is more than the model's T={schedule.T}")
    cfg = model.config
    device = next(model.parameters()).device
    y = torch.arange(cfg.num_classes, device=device).repeat_interleave(args.per_class)  # [10 K]: 0..0, 1..1, ...
    gen = torch.Generator(device).manual_seed(args.seed)
    images = sample_digits(model, y, schedule, shape=(cfg.in_channels, 28, 28), batch_size=args.batch_size,
                           sampler=args.sampler, steps=steps, guidance=w, null_class=cfg.num_classes,
                           generator=gen).cpu()  # [N, 1, 28, 28] in [0, 1]
    out = save_samples_file(args.out, images, y, sampler=args.sampler, steps=steps, guidance=w,
                            checkpoint=meta["path"])
    print(f"{len(images)} samples ({args.sampler}, {steps} steps, guidance {w:g}) -> {out}")
    grid = args.grid if args.grid is not None else str(out.with_suffix(".png"))
    if grid != "none":
        from torchvision.utils import save_image

        k = min(args.per_class, 10)
        pick = torch.cat([torch.arange(c * args.per_class, c * args.per_class + k) for c in range(cfg.num_classes)])
        # rows = samples, columns = digits
        order = pick.reshape(cfg.num_classes, k).T.reshape(-1)
        # white on black digits: a 2-pixel mid-grey border keeps neighbours apart (black would merge them)
        save_image(images[order], grid, nrow=cfg.num_classes, padding=2, pad_value=0.5)
        print(f"grid -> {grid}")
    return 0


# --- evaluate -----------------------------------------------------------------------------------------


def cmd_evaluate(args) -> int:
    try:
        from labkit.evaluation.report import run_evaluate
    except ImportError as exc:
        raise LabkitError(f"evaluation is not available ({exc})") from None
    _check_output(args.json, "--json")
    if args.plot is not None:
        from matplotlib.figure import Figure

        _check_output(args.plot, "--plot", {f".{k}" for k in Figure().canvas.get_supported_filetypes()})
    table = run_evaluate(args.samples, json_path=args.json, plot_path=args.plot, clip=args.clip,
                         data_root=args.data, device=args.device)
    print(table)
    return 0


# --- info ---------------------------------------------------------------------------------------------


def cmd_info(args) -> int:
    import platform

    import torch
    import torchvision

    from labkit import __version__
    from labkit.checkpoint import ASSET_PATH
    from labkit.data import candidate_roots, locate_mnist
    from labkit.device import pick_device

    device = pick_device(args.device)
    print(f"labkit       {__version__}")
    print(f"python       {platform.python_version()}")
    print(f"torch        {torch.__version__}  (threads {torch.get_num_threads()})")
    print(f"torchvision  {torchvision.__version__}")
    print(f"device       {device}")
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            print(f"gpu {i}        {p.name}, {p.total_memory / 2**30:.1f} GiB, compute capability {p.major}.{p.minor}")
    print("MNIST is looked for in (first found wins):")
    for root in candidate_roots(args.data):
        print(f"  {root}{'  (exists)' if root.exists() else ''}")
    try:
        found = locate_mnist(args.data)
    except (OSError, LabkitError) as exc:
        found, note = None, f" ({exc})"
    else:
        note = ""
    if found is None:
        print(f"MNIST found  no{note}")
    else:  # the user's folder; gzip files are read through an unpacked copy in labkit's cache
        folder, tv_root = found
        print(f"MNIST found  {folder}" + (f"  (unpacked into {tv_root})" if tv_root != folder else ""))
    print(f"shipped checkpoint  {ASSET_PATH}{'' if ASSET_PATH.exists() else '  (missing)'}")
    print("training checkpoints  <out dir>/last.pt (default runs/mnist-cpu or runs/mnist-gpu)")
    return 0


# --- report (lab 09's hand-in) --------------------------------------------------------------------------


def cmd_report(args) -> int:
    from labkit.course.export import export_html

    if args.out is not None:
        _check_output(args.out, "--out", {".html", ".htm"})
    path, notes = export_html(args.notebook, args.out)
    for note in notes:
        print(f"note: {note}")
    print(f"report -> {path}")
    return 0


# --- build / grade (labkit.course, optional) ----------------------------------------------------------


def _course():
    try:
        import labkit.course as course
    except ImportError:
        return None
    return course


def cmd_course(args) -> int:
    course = _course()
    fn = getattr(course, f"cli_{args.command}", None) if course is not None else None
    if fn is None:
        raise LabkitError(f"'labkit {args.command}' needs labkit.course, which is not available in this install")
    result = fn(args)
    return int(result) if isinstance(result, int) else 0


# --- the parser ---------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line (``labkit: error: ...``) and exit status 2."""

    def error(self, message):
        self.exit(2, f"labkit: error: {self.prog}: {message} (see '{self.prog} --help')\n")


def build_parser(course_arguments: bool = True) -> argparse.ArgumentParser:
    """The argument parser; course_arguments=False skips importing labkit.course (slow: nbconvert)."""
    p = _Parser(prog="labkit", description="Diffusion-model lab kit: train, sample, evaluate.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    t = sub.add_parser("train", help="train a class-conditioned DDPM on MNIST")
    t.add_argument("--recipe", choices=["cpu", "gpu", "auto", "tiny"], default="auto",
                   help="cpu: 10 min on a laptop; gpu: T4 or better; auto: gpu if CUDA is available")
    t.add_argument("--data", default=None, help="MNIST folder (default: LABKIT_DATA, then the cache)")
    t.add_argument("--out", default=None, help="output folder for checkpoints and sample grids")
    t.add_argument("--minutes", type=_nonneg_float, default=None, help="time budget (replaces --steps)")
    t.add_argument("--steps", type=_nonneg_int, default=None, help="number of steps (replaces the time budget)")
    t.add_argument("--batch-size", type=_pos_int, default=None)
    t.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="continue from OUT/last.pt if it exists (default: yes)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")
    t.add_argument("--threads", type=_nonneg_int, default=0, help="CPU threads (default: torch's choice)")
    t.add_argument("--export", default=None, help="also write a small release checkpoint (EMA, fp16) here")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("--synthetic", type=_pos_int, default=0, help=argparse.SUPPRESS)  # tests: N synthetic digits
    t.set_defaults(func=cmd_train)

    s = sub.add_parser("sample", help="draw digits from a checkpoint into a samples file and a PNG grid")
    s.add_argument("--checkpoint", default=None, help="checkpoint (default: the shipped pretrained model)")
    s.add_argument("--sampler", default=None, help="ddpm, ddim or dpmpp_2m (default: the checkpoint's recipe)")
    s.add_argument("--steps", type=_pos_int, default=None, help="sampler steps (default: the checkpoint's)")
    s.add_argument("--guidance", type=_nonneg_float, default=None, help="guidance weight w (0 = none)")
    s.add_argument("--per-class", type=_pos_int, default=100, help="samples per digit")
    s.add_argument("--batch-size", type=_pos_int, default=1000)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", default=None)
    s.add_argument("--out", default="samples.pt", help="samples file (images [N,1,28,28] in [0,1], labels [N])")
    s.add_argument("--grid", default=None, help="PNG grid (default: OUT with .png; 'none' for no grid)")
    s.set_defaults(func=cmd_sample)

    e = sub.add_parser("evaluate", help="score a samples file against real MNIST")
    e.add_argument("samples")
    e.add_argument("--json", default=None)
    e.add_argument("--plot", default=None)
    e.add_argument("--clip", default="auto",
                   help="open_clip MODEL:PRETRAINED, none, or auto (default: the default CLIP model when its weights "
                        "are cached or can be downloaded, else one line saying why the CLIP scores are skipped)")
    e.add_argument("--data", default=None)
    e.add_argument("--device", default=None)
    e.set_defaults(func=cmd_evaluate)

    i = sub.add_parser("info", help="versions, device, where data and checkpoints are")
    i.add_argument("--data", default=None)
    i.add_argument("--device", default=None)
    i.set_defaults(func=cmd_info)

    r = sub.add_parser("report", help="export a notebook with its outputs to one HTML file (lab 09's hand-in)")
    r.add_argument("notebook", help="the .ipynb to export (run all cells and save it first)")
    r.add_argument("--out", default=None, help="HTML file to write (default: the notebook's name with .html)")
    r.set_defaults(func=cmd_report)

    course = _course() if course_arguments else None
    for name, helptext in (("build", "build student notebooks (instructors)"), ("grade", "grade submissions (instructors)")):
        c = sub.add_parser(name, help=helptext)
        add = getattr(course, f"add_{name}_arguments", None) if course is not None else None
        if add is not None:
            add(c)
        c.set_defaults(func=cmd_course)
    return p


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(course_arguments=bool(argv) and argv[0] in ("build", "grade"))
    args = parser.parse_args(argv)  # bad arguments: argparse prints one line and exits 2
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except LabkitError as exc:
        print(f"labkit: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("labkit: interrupted (the last checkpoint is kept; run again to resume)", file=sys.stderr)
        raise SystemExit(130) from None


if __name__ == "__main__":
    sys.exit(main())
