"""``labkit build`` / ``labkit grade`` arguments and ``python -m labkit.course``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from labkit.course.build import build_notebooks, check_notebooks_fresh
from labkit.course.grade import grade_submissions
from labkit.course.settings import GradingSettings
from labkit.course.sources import DEFAULT_MEMORY_LIMIT_GB, DEFAULT_NOTEBOOK_TIMEOUT, DEFAULT_TIMEOUT, find_repo_root
from labkit.errors import LabkitError


def add_build_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--repo", default=None, help="the labkit repository (default: found from the current folder)")
    parser.add_argument(
        "--lab",
        action="append",
        default=None,
        metavar="LAB",
        help="build only this lab (repeatable; 'lab01' or 'lab01_forward'); default: all",
    )
    parser.add_argument(
        "--check", action="store_true", help="build nothing; exit 1 if a built notebook is missing or out of date"
    )
    return parser


def add_grade_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument(
        "submissions", help="folder of submissions: <student>/<lab>.ipynb or <student>_<anything>.ipynb"
    )
    parser.add_argument("--out", default="grading", help="where results go (default: ./grading)")
    parser.add_argument("--lab", action="append", default=None, metavar="LAB", help="grade only this lab (repeatable)")
    parser.add_argument("--repo", default=None, help="the labkit repository (default: found from the current folder)")
    parser.add_argument("--timeout", type=int, default=DEFAULT_TIMEOUT, help="seconds per cell (default: %(default)s)")
    parser.add_argument(
        "--notebook-timeout",
        type=int,
        default=DEFAULT_NOTEBOOK_TIMEOUT,
        metavar="SECONDS",
        help="seconds for a whole notebook; the cells not run by then score 0 (default: %(default)s)",
    )
    parser.add_argument("--no-feedback", action="store_true", help="skip the feedback HTML")
    parser.add_argument(
        "--jobs", type=int, default=None, help="submissions autograded in parallel (default: one per CPU, up to 4)"
    )
    parser.add_argument(
        "--memory-limit",
        type=float,
        default=DEFAULT_MEMORY_LIMIT_GB,
        metavar="GB",
        help="memory cap of each grading kernel in GB, 0 for none (default: %(default)g)",
    )
    parser.add_argument(
        "--unsafe-no-sandbox",
        action="store_true",
        help="grade without the bubblewrap sandbox (only for notebooks you trust)",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="grade on the Dask cluster of this scheduler (tcp://host:8786); needs labkit[cluster]",
    )
    where.add_argument(
        "--cluster",
        default=None,
        type=_local_cluster,
        metavar="local:N",
        help="grade on a Dask LocalCluster of N worker processes on this machine",
    )
    return parser


def _local_cluster(text: str) -> str:
    import argparse
    import re

    m = re.fullmatch(r"local:(\d+)", text.strip())
    if not m or int(m.group(1)) < 1:
        raise argparse.ArgumentTypeError(f"expected local:N (N worker processes on this machine), got {text!r}")
    return f"local:{int(m.group(1))}"


def cli_build(args) -> int:
    root = Path(args.repo) if args.repo else find_repo_root()
    if args.check:
        problems = check_notebooks_fresh(root, args.lab)
        for p in problems:
            print(p)
        print("notebooks are up to date" if not problems else f"{len(problems)} problem(s)")
        return 1 if problems else 0
    build_notebooks(root, args.lab)
    return 0


def cli_grade(args) -> int:
    results = grade_submissions(
        args.submissions,
        args.out,
        args.lab,
        repo_root=args.repo,
        settings=settings_from_args(args),
        jobs=getattr(args, "jobs", None),
        scheduler=getattr(args, "scheduler", None) or getattr(args, "cluster", None),
    )
    return 0 if results and all(r.status != "failed" for r in results) else 1


def settings_from_args(args) -> GradingSettings:
    """The ``GradingSettings`` that ``labkit grade``'s options ask for."""
    return GradingSettings(
        timeout=args.timeout,
        notebook_timeout=getattr(args, "notebook_timeout", DEFAULT_NOTEBOOK_TIMEOUT),
        memory_limit_gb=getattr(args, "memory_limit", DEFAULT_MEMORY_LIMIT_GB),
        sandbox=not getattr(args, "unsafe_no_sandbox", False),
        feedback=not args.no_feedback,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m labkit.course", description="Build the student notebooks, or grade a folder of submissions."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    add_build_arguments(sub.add_parser("build", help="build the notebooks from solutions/<lab>/<lab>.py"))
    add_grade_arguments(sub.add_parser("grade", help="autograde a folder of submissions"))
    args = parser.parse_args(argv)
    try:
        return cli_build(args) if args.command == "build" else cli_grade(args)
    except LabkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
