"""Seconds per graded notebook: `labkit grade` on a generated class, one table per run.

    python benchmarks/bench_grade.py                          # labs 01 and 07, 4 students each, sandboxed
    python benchmarks/bench_grade.py --modes sandbox unsafe   # with and without the bubblewrap sandbox
    python benchmarks/bench_grade.py --legacy-repo /tmp/old   # the same class graded by an older checkout
                                                              # (e.g. `git worktree add /tmp/old c7aaa43`)

The class: for each lab, students alternating between the solution (full marks) and the untouched release
(zero), so every run grades the same notebooks with known scores (checked: a wrong score fails the run).
Modes: ``sandbox`` (the default grading path: test cells judged in the grader, kernel in bubblewrap),
``unsafe`` (the same without bubblewrap, ``--unsafe-no-sandbox``), ``legacy`` (``--legacy-repo``: that
checkout's own ``labkit.course.grade_submissions``, run in a subprocess with it first on ``sys.path``).
Serial by default (``--jobs 1``): seconds per notebook, not throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

GRADE = """
import json, sys, time
from pathlib import Path
sys.path.insert(0, {repo!r})
from labkit import course
import inspect
kw = dict(jobs={jobs}, verbose=False, timeout=120)
if "sandbox" in inspect.signature(course.grade_submissions).parameters:
    kw["sandbox"] = {sandbox!r}
t0 = time.monotonic()
res = course.grade_submissions({subs!r}, {out!r}, {labs!r}, repo_root={repo!r}, **kw)
print(json.dumps({{"seconds": time.monotonic() - t0,
                  "results": [[r.student, r.lab, r.score, r.max_score, r.status] for r in res]}}))
"""


def make_class(folder: Path, labs: list[str], students: int, repo: Path = REPO) -> dict:
    """<student>/<lab>.ipynb from ``repo``'s notebooks; returns {(student, lab): "full" or 0.0}."""
    import nbformat

    expected = {}
    for lab in labs:
        for k in range(students):
            honest = k % 2 == 0
            src = repo / "solutions" / lab / f"{lab}.ipynb" if honest else repo / "notebooks" / f"{lab}.ipynb"
            student = f"s{k:03d}"
            (folder / student).mkdir(parents=True, exist_ok=True)
            nb = nbformat.read(str(src), as_version=4)
            nbformat.write(nb, str(folder / student / f"{lab}.ipynb"))
            expected[(student, lab)] = "full" if honest else 0.0
    return expected


def run(mode: str, subs: Path, labs: list[str], jobs: int, legacy_repo: str | None) -> dict:
    repo = legacy_repo if mode == "legacy" else str(REPO)
    out = Path(tempfile.mkdtemp(prefix=f"bench-grade-{mode}-"))
    code = GRADE.format(repo=repo, jobs=jobs, sandbox=(mode == "sandbox"), subs=str(subs), out=str(out), labs=labs)
    env = dict(os.environ, LABKIT_FAST="1", PYTHONPATH=repo)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=repo)
    shutil.rmtree(out, ignore_errors=True)
    if proc.returncode != 0:
        raise SystemExit(f"{mode}: grading failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--labs", nargs="+", default=["lab01_forward", "lab07_improvements"])
    p.add_argument("--students", type=int, default=4, help="students per lab (half honest, half blank)")
    p.add_argument("--modes", nargs="+", default=["sandbox"], choices=["sandbox", "unsafe", "legacy"])
    p.add_argument("--legacy-repo", default=None, help="an older checkout to grade with (adds the legacy mode)")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--json", default=None, help="also write the rows here")
    a = p.parse_args(argv)
    modes = list(a.modes) + (["legacy"] if a.legacy_repo and "legacy" not in a.modes else [])
    rows = []
    for mode in modes:
        subs = Path(tempfile.mkdtemp(prefix="bench-grade-class-"))  # each checkout grades its own notebooks
        expected = make_class(subs, a.labs, a.students, Path(a.legacy_repo) if mode == "legacy" else REPO)
        got = run(mode, subs, a.labs, a.jobs, a.legacy_repo)
        shutil.rmtree(subs, ignore_errors=True)
        wrong = []
        for student, lab, score, max_score, status in got["results"]:
            want = expected[(student, lab)]
            if score != (max_score if want == "full" else want):
                wrong.append(f"{student}/{lab}: {score}/{max_score} ({status})")
        n = len(got["results"])
        rows.append({"mode": mode, "labs": " ".join(a.labs), "notebooks": n, "jobs": a.jobs,
                     "seconds": round(got["seconds"], 1), "s_per_notebook": round(got["seconds"] / n, 2),
                     "wrong_scores": len(wrong)})
        if wrong:
            print(f"{mode}: WRONG SCORES: {wrong}", file=sys.stderr)
    base = next((r for r in rows if r["mode"] == "legacy"), rows[0])
    print(f"| mode | labs | notebooks | jobs | seconds | s / notebook | vs {base['mode']} | wrong scores |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = r["s_per_notebook"] / base["s_per_notebook"]
        print(f"| {r['mode']} | {r['labs']} | {r['notebooks']} | {r['jobs']} | {r['seconds']} | "
              f"{r['s_per_notebook']} | {ratio:.2f}x | {r['wrong_scores']} |")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return 1 if any(r["wrong_scores"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
