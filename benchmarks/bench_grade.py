"""Seconds per graded notebook: `labkit grade` on a generated class, one table per run.

    python benchmarks/bench_grade.py                          # labs 01 and 07, 4 students each, sandboxed
    python benchmarks/bench_grade.py --modes sandbox unsafe   # with and without the bubblewrap sandbox
    python benchmarks/bench_grade.py --legacy-repo /tmp/old   # the same class graded by an older checkout
                                                              # (e.g. `git worktree add /tmp/old c7aaa43`)
    python benchmarks/bench_grade.py --legacy-repo /tmp/old --jobs 2 --cluster local:2
                                      # before/after in one run: both checkouts locally and on the cluster

The class: for each lab, students alternating between the solution (full marks) and the untouched release
(zero), so every run grades the same notebooks with known scores (checked: a wrong score fails the run).
Modes: ``sandbox`` (the default grading path: test cells judged in the grader, kernel in bubblewrap),
``unsafe`` (the same without bubblewrap, ``--unsafe-no-sandbox``), ``kernel`` (the path before issue 12, on the
same notebooks: checks run inside the student's kernel, no sandbox; benchmark only), ``legacy`` (``--legacy-repo``: that
checkout's own ``labkit.course.grade_submissions``, run in a subprocess with it first on ``sys.path``).
Serial by default (``--jobs 1``): seconds per notebook, not throughput.

On Dask (issue 17; needs ``pip install 'labkit[cluster]'``):

    python benchmarks/bench_grade.py --labs lab00_setup lab01_forward --students 8 \
        --jobs 1 2 --cluster local:1 local:2 --paper 1 10 50 100

adds one row per local pool size (``--jobs 1 2``) and per LocalCluster (``--cluster local:N``: N single-threaded
worker processes on this machine), with notebooks/s; for the cluster rows, the seconds a worker spent per
notebook and the client's own seconds per notebook (merging into the gradebook, feedback). ``--paper``
then prints the time for 10,000 notebooks on N machines of ``--workers-per-machine`` workers, computed from
those measured costs (no cluster of that size was used).
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
if {kernel!r}:  # mode "kernel": the old path, checks run inside the student's kernel (benchmark only)
    import labkit.course.trusted as _trusted
    _trusted.trusted_execute_class = lambda base: base
if "sandbox" in inspect.signature(course.grade_submissions).parameters:
    kw["sandbox"] = {sandbox!r}
stats = {{}}
if {scheduler!r}:
    kw.update(scheduler={scheduler!r}, stats=stats)
t0 = time.monotonic()
res = course.grade_submissions({subs!r}, {out!r}, {labs!r}, repo_root={repo!r}, **kw)
print(json.dumps({{"seconds": time.monotonic() - t0, "stats": stats,
                  "results": [[r.student, r.lab, r.score, r.max_score, r.status, " | ".join(r.notes)[:400]] for r in res]}}))
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


def run(mode: str, subs: Path, labs: list[str], jobs: int, legacy_repo: str | None,
        scheduler: str | None = None) -> dict:
    repo = legacy_repo if mode.startswith("legacy") else str(REPO)
    out = Path(tempfile.mkdtemp(prefix=f"bench-grade-{mode.replace(':', '')}-"))
    code = GRADE.format(repo=repo, jobs=jobs, sandbox=(mode not in ("unsafe", "kernel")), subs=str(subs), out=str(out),
                        labs=labs, scheduler=scheduler, kernel=(mode == "kernel"))
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
    p.add_argument("--modes", nargs="+", default=["sandbox"], choices=["sandbox", "unsafe", "kernel", "legacy"])
    p.add_argument("--legacy-repo", default=None, help="an older checkout to grade with (adds the legacy mode)")
    p.add_argument("--jobs", type=int, nargs="+", default=[1], help="local pool sizes (one row each)")
    p.add_argument("--cluster", nargs="*", default=[], metavar="local:N",
                   help="also grade on a Dask LocalCluster of N workers (one row each)")
    p.add_argument("--paper", type=int, nargs="*", default=[], metavar="N",
                   help="print the time for 10,000 notebooks on N machines, from the measured costs")
    p.add_argument("--workers-per-machine", type=int, default=16, help="for --paper (one worker per core)")
    p.add_argument("--json", default=None, help="also write the rows here")
    a = p.parse_args(argv)
    modes = list(a.modes) + (["legacy"] if a.legacy_repo and "legacy" not in a.modes else [])
    runs = [(mode, jobs, None) for mode in modes for jobs in a.jobs] + [(f"cluster {c}", 1, c) for c in a.cluster]
    if a.legacy_repo:  # the older checkout on the same clusters
        runs += [(f"legacy cluster {c}", 1, c) for c in a.cluster]
    rows = []
    for mode, jobs, scheduler in runs:
        subs = Path(tempfile.mkdtemp(prefix="bench-grade-class-"))  # each checkout grades its own notebooks
        expected = make_class(subs, a.labs, a.students, Path(a.legacy_repo) if mode.startswith("legacy") else REPO)
        got = run(mode, subs, a.labs, jobs, a.legacy_repo, scheduler)
        shutil.rmtree(subs, ignore_errors=True)
        wrong = []
        for student, lab, score, max_score, status, *notes in got["results"]:
            want = expected[(student, lab)]
            if score != (max_score if want == "full" else want):
                wrong.append(f"{student}/{lab}: {score}/{max_score} ({status}: {notes[0] if notes else ''})")
        n = len(got["results"])
        st = got.get("stats") or {}
        row = {"mode": mode, "labs": " ".join(a.labs), "notebooks": n,
               "jobs": int(scheduler.split(":")[1]) if scheduler else jobs,
               "seconds": round(got["seconds"], 1), "s_per_notebook": round(got["seconds"] / n, 2),
               "notebooks_per_s": round(n / got["seconds"], 3), "wrong_scores": len(wrong)}
        if scheduler and st.get("merged"):
            row.update(worker_s_per_notebook=round(st["worker_seconds"] / max(1, st["merged"]), 2),
                       merge_s_per_notebook=round(st["merge_seconds"] / max(1, st["merged"]), 3),
                       feedback_s_per_notebook=round(st["feedback_seconds"] / max(1, st["merged"]), 3),
                       fixed_seconds=round(st["connect_seconds"] + st["prepare_seconds"], 1),
                       grading_seconds=round(st["grading_seconds"], 1))
        rows.append(row)
        if wrong:
            print(f"{mode}: WRONG SCORES: {wrong}", file=sys.stderr)
    base = next((r for r in rows if r["mode"] == "legacy"), rows[0])
    print(f"| mode | labs | notebooks | jobs / workers | seconds | s / notebook | notebooks / s | vs {base['mode']} "
          f"| wrong scores |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = r["s_per_notebook"] / base["s_per_notebook"]
        print(f"| {r['mode']} | {r['labs']} | {r['notebooks']} | {r['jobs']} | {r['seconds']} | "
              f"{r['s_per_notebook']} | {r['notebooks_per_s']} | {ratio:.2f}x | {r['wrong_scores']} |")
    cluster_rows = [r for r in rows if "worker_s_per_notebook" in r]
    if cluster_rows:
        print()
        print("| cluster | worker s / notebook | client merge s / notebook | client feedback s / notebook "
              "| fixed s (connect + prepare) | grading s (first submit to last result) |")
        print("|---|---|---|---|---|---|")
        for r in cluster_rows:
            print(f"| {r['mode']} | {r['worker_s_per_notebook']} | {r['merge_s_per_notebook']} | "
                  f"{r['feedback_s_per_notebook']} | {r['fixed_seconds']} | {r['grading_seconds']} |")
    if a.paper and cluster_rows:
        print()
        print(paper_table(cluster_rows, a.paper, a.workers_per_machine))
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return 1 if any(r["wrong_scores"] for r in rows) else 0


def paper_table(cluster_rows: list[dict], machines: list[int], per_machine: int, notebooks: int = 10_000,
                client_jobs: int = 4) -> str:
    """10,000 notebooks on N machines of ``per_machine`` single-threaded workers, from measured costs (no cluster
    of that size was run): a worker's seconds per notebook (the one-worker row: a worker with a core to itself);
    the client's merge, serial and beside the grading, so the slower of the two sets the pace; the feedback,
    written by the client at the end in ``client_jobs`` processes (one lab each); the fixed start-up."""
    one = min(cluster_rows, key=lambda r: r["jobs"])
    w = one["worker_s_per_notebook"]
    merge = max(r["merge_s_per_notebook"] for r in cluster_rows)
    fb = max(r["feedback_s_per_notebook"] for r in cluster_rows)
    fixed = max(r["fixed_seconds"] for r in cluster_rows)
    lines = [f"{notebooks:,} notebooks, {per_machine} workers per machine. Measured here: {w} s per notebook on a "
             f"worker ({one['mode']}), {merge} s to merge one on the client, {fb} s of feedback per notebook "
             f"(client, {client_jobs} processes), {fixed} s to start.",
             "", "| machines | workers | grading on the workers | merging on the client | feedback | total "
             "| notebooks / s |",
             "|---|---|---|---|---|---|---|"]
    for n in machines:
        workers = n * per_machine
        grading, merging, feedback = notebooks * w / workers, notebooks * merge, notebooks * fb / client_jobs
        total = fixed + max(grading, merging) + feedback
        lines.append(f"| {n} | {workers} | {grading / 3600:.2f} h | {merging / 3600:.2f} h | {feedback / 3600:.2f} h | "
                     f"{total / 3600:.2f} h | {notebooks / total:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
