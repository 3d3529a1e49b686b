"""The ``labkit`` command: train, sample, evaluate, info (and build / grade for instructors).

    labkit train --recipe cpu --minutes 10 --out runs/mnist      # resumes by itself if stopped
    labkit sample --per-class 100 --out samples.pt --grid samples.png
    labkit evaluate samples.pt --json scores.json
    labkit info
    labkit report lab09_report.ipynb                               # one HTML file with every picture

Every error a person can fix (bad argument, missing data, corrupt checkpoint) is one line on stderr,
``labkit: error: ...``, and exit status 2; no traceback. This module is the parser and ``main``; what each
command does is in ``labkit.commands``.
"""

from __future__ import annotations

import argparse
import sys

from labkit.commands import (
    cmd_course,
    cmd_distill,
    cmd_evaluate,
    cmd_info,
    cmd_report,
    cmd_sample,
    cmd_train,
    load_course,
)
from labkit.errors import LabkitError

# labkit.course, or None without it: the parser adds the build / grade arguments from it, and the commands
# run through it. One name for both, so that a test can replace it with a fake.
_course = load_course


# --- argument types (argparse names them in its messages: 'invalid _pos_int value') --------------------


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


# --- the parser ---------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line (``labkit: error: ...``) and exit status 2."""

    def error(self, message):
        self.exit(2, f"labkit: error: {self.prog}: {message} (see '{self.prog} --help')\n")


def build_parser(course_arguments: bool = True, distill_arguments: bool = True) -> argparse.ArgumentParser:
    """The argument parser; course_arguments=False skips importing labkit.course (slow: nbconvert),
    distill_arguments=False skips labkit.distill's (it imports torch)."""
    p = _Parser(prog="labkit", description="Diffusion-model lab kit: train, sample, evaluate.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    t = sub.add_parser("train", help="train a class-conditioned DDPM on MNIST")
    t.add_argument(
        "--recipe",
        choices=["cpu", "gpu", "auto", "tiny"],
        default="auto",
        help="cpu: 10 min on a laptop; gpu: T4 or better; auto: gpu if CUDA is available",
    )
    t.add_argument("--data", default=None, help="MNIST folder (default: LABKIT_DATA, then the cache)")
    t.add_argument("--out", default=None, help="output folder for checkpoints and sample grids")
    t.add_argument("--minutes", type=_nonneg_float, default=None, help="time budget (replaces --steps)")
    t.add_argument("--steps", type=_nonneg_int, default=None, help="number of steps (replaces the time budget)")
    t.add_argument("--batch-size", type=_pos_int, default=None)
    t.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="continue from OUT/last.pt if it exists (default: yes)",
    )
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")
    t.add_argument("--threads", type=_nonneg_int, default=0, help="CPU threads (default: torch's choice)")
    t.add_argument("--export", default=None, help="also write a small release checkpoint (EMA, fp16) here")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("--synthetic", type=_pos_int, default=0, help=argparse.SUPPRESS)  # tests: N synthetic digits
    t.set_defaults(func=cmd_train)

    s = sub.add_parser("sample", help="draw digits from a checkpoint into a samples file and a PNG grid")
    s.add_argument("--checkpoint", default=None, help="checkpoint (default: the shipped model that --model names)")
    s.add_argument(
        "--model",
        choices=["default", "fast"],
        default="default",
        help="shipped model: default (DDPM, 16 steps with guidance = 32 network evaluations per digit) or fast "
        "(distilled: 1, 2, 4 or 8 evaluations with --steps; 4 by default)",
    )
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
    e.add_argument(
        "--clip",
        default="auto",
        help="open_clip MODEL:PRETRAINED, none, or auto (default: the default CLIP model when its weights "
        "are cached or can be downloaded, else one line saying why the CLIP scores are skipped)",
    )
    e.add_argument("--data", default=None)
    e.add_argument("--device", default=None)
    e.set_defaults(func=cmd_evaluate)

    d = sub.add_parser("distill", help="make the few-step model from the shipped one (python -m labkit.distill)")
    if distill_arguments:
        _add_distill_arguments(d)
    d.set_defaults(func=cmd_distill)

    i = sub.add_parser("info", help="versions, device, where data and checkpoints are")
    i.add_argument("--data", default=None)
    i.add_argument("--device", default=None)
    i.set_defaults(func=cmd_info)

    r = sub.add_parser("report", help="export a notebook with its outputs to one HTML file (lab 09's hand-in)")
    r.add_argument("notebook", help="the .ipynb to export (run all cells and save it first)")
    r.add_argument("--out", default=None, help="HTML file to write (default: the notebook's name with .html)")
    r.set_defaults(func=cmd_report)

    course = _course() if course_arguments else None
    for name, helptext in (
        ("build", "build student notebooks (instructors)"),
        ("grade", "grade submissions (instructors)"),
    ):
        c = sub.add_parser(name, help=helptext)
        add = getattr(course, f"add_{name}_arguments", None) if course is not None else None
        if add is not None:
            add(c)
        c.set_defaults(func=_run_course_command)
    return p


def _add_distill_arguments(parser) -> None:
    from labkit.distill import add_arguments  # imports torch: only when the parser is built

    add_arguments(parser)


def _run_course_command(args) -> int:
    return cmd_course(args, _course())  # looked up when the command runs, as the parser did


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(
        course_arguments=bool(argv) and argv[0] in ("build", "grade"),
        distill_arguments=bool(argv) and argv[0] == "distill",
    )
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
