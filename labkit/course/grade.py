"""``labkit grade``: find the submissions, autograde each in its own sandboxed kernel, report, write scores.

Modules it uses: ``discover`` (which file is whose, for which lab), ``pipeline`` (prepare -> grade -> merge,
the same on one machine and on Dask), which runs ``task.grade_task`` per submission (``autograde``: nbgrader
with ``trusted.TrustedExecute`` in a private course; ``forensics``: what the instructor should look at) in an
executor (``executors.LocalExecutor``, or ``cluster`` for ``--scheduler`` / ``--cluster``, imported only
then), merges each result into the class's gradebook (``merge``) and records it (``manifest``: a re-run
grades only what changed); ``results`` (``GradeResult``, scores.csv) and ``report`` (the class report).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Sequence

from labkit.course.discover import discover
from labkit.course.pipeline import run_pipeline
from labkit.course.report import write_class_reports
from labkit.course.results import GradeResult, write_scores_csv
from labkit.course.settings import GradingSettings
from labkit.course.sources import (
    import_nbformat,
    select_labs,
    DEFAULT_MEMORY_LIMIT_GB,
    DEFAULT_NOTEBOOK_TIMEOUT,
    DEFAULT_TIMEOUT,
    discover_labs,
    find_repo_root,
    STUDENT_DIR,
)
from labkit.errors import LabkitError


def grade_submissions(
    submissions_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    labs: Sequence[str] | None = None,
    *,
    repo_root: str | os.PathLike | None = None,
    timeout: int = DEFAULT_TIMEOUT,
    feedback: bool = True,
    jobs: int | None = None,
    verbose: bool = True,
    memory_limit_gb: float = DEFAULT_MEMORY_LIMIT_GB,
    sandbox: bool = True,
    scheduler: str | None = None,
    stats: dict | None = None,
    notebook_timeout: int = DEFAULT_NOTEBOOK_TIMEOUT,
    settings: GradingSettings | None = None,
) -> list[GradeResult]:
    """Autograde every submission in ``submissions_dir``; write results under ``out_dir``:

        out_dir/nbgrader/<lab>/      one nbgrader course per lab (source, release, submitted, autograded,
                                     feedback, gradebook.db): open it with nbgrader for manual grading
        out_dir/scores.csv           student, lab, score, max_score, manual_score, manual_max, status, notes
        out_dir/report_<lab>.html    the class report (and .csv): score histogram, per exercise the share that
                                     passed, each named mistake with how many students made it
        out_dir/feedback/<student>/<lab>.html

    Submissions are autograded in parallel processes (``jobs``, default: up to 4, one per CPU), each in a
    private copy of the lab's course and its own kernel with a finite per-cell ``timeout``, a limit for the whole notebook (``notebook_timeout`` seconds:
    the cells not run by then score 0, and the notes say so) and a memory cap of ``memory_limit_gb`` (0: none). The
    kernel runs in a bubblewrap sandbox (``labkit.course.sandbox``; ``sandbox=False`` only for trusted
    notebooks) and test cells run in the grader's own process (``labkit.course.trusted``). One bad
    submission (unreadable file, infinite loop, dead kernel, memory blow-up) is reported and never stops
    the others. Status per submission: ``graded``, ``needs review`` (a REVIEW note: an answer that uses
    labkit, dynamic code or tampering), ``needs manual grading``, ``kernel died`` (scored from the cells
    that could run), ``out of memory`` (a cell hit the memory cap), ``failed`` (no score from nbgrader) or
    ``no submission`` (an empty student folder); the notes say what was repaired and which cells failed,
    timed out or look like tampering. A ``failed`` row has no score (empty in scores.csv). This process alone
    writes ``out_dir`` and the gradebooks, and a manifest (``out_dir/cluster-manifest.jsonl``) makes a re-run
    grade only the submissions that are new or changed (or were graded by other code or settings). Written answers are graded by hand in nbgrader's formgrader; their
    points are reported apart (``manual_max``; ``manual_score`` once given).

    ``scheduler``: grade on Dask instead of local processes (``labkit.course.cluster``): the address of a
    Dask scheduler (``tcp://host:8786``) or ``local:N`` (a LocalCluster of N worker processes here). Each
    worker grades in its own sandbox. ``stats``: a dict that receives counters and timings of the run
    (``pipeline.GradingStats``).

    ``settings``: a ``GradingSettings`` (timeout, notebook_timeout, memory_limit_gb, sandbox, feedback); when
    given, it replaces those five keyword arguments. Everything below takes this one value.
    """
    if settings is None:
        settings = GradingSettings(
            timeout=timeout,
            notebook_timeout=notebook_timeout,
            memory_limit_gb=memory_limit_gb,
            sandbox=sandbox,
            feedback=feedback,
        )
    if settings.sandbox and not scheduler:  # on a cluster, each worker probes its own sandbox
        from labkit.course.sandbox import probe

        why = probe()
        if why:
            raise LabkitError(why)
    repo_root = Path(repo_root).resolve() if repo_root else find_repo_root()
    out_dir = Path(out_dir).resolve()
    chosen = select_labs(labs, discover_labs(repo_root))
    nbf = import_nbformat()
    releases = {}  # the built student notebooks tell which lab an oddly named file is
    for lab in chosen:
        path = repo_root / STUDENT_DIR / f"{lab}.ipynb"
        if path.exists():
            releases[lab] = nbf.read(str(path), as_version=4)
    found = discover(submissions_dir, chosen, releases)
    subs, empty = found.subs, found.empty
    if verbose:
        for p in found.problems:
            print(f"note: {p}")
    active = [lab for lab in chosen if any(s.lab == lab for s in subs)]
    empty_labs = active or chosen[:1]
    jobs = max(1, min(jobs or min(4, os.cpu_count() or 1), len(subs) or 1))
    courses = {lab: str(out_dir / "nbgrader" / lab) for lab in set(active) | set(empty_labs)}
    results = run_pipeline(
        subs,
        chosen,
        empty,
        empty_labs,
        releases,
        courses,
        repo_root=repo_root,
        settings=settings,
        jobs=jobs,
        verbose=verbose,
        out_dir=out_dir,
        grade_pending=_on_dask(scheduler) if scheduler else None,  # None: local processes
        where=" on the cluster" if scheduler else "",
        stats=stats,
    )
    for r in results:
        if r.status != "no submission":  # a skipped link, an odd name: said on the student's own rows
            r.notes += found.notes.get(r.student, [])
        html = out_dir / "nbgrader" / r.lab / "feedback" / r.student / r.lab / f"{r.lab}.html"
        try:
            if html.is_file():
                (out_dir / "feedback" / r.student).mkdir(parents=True, exist_ok=True)
                shutil.copy2(html, out_dir / "feedback" / r.student / f"{r.lab}.html")
        except OSError as exc:  # a missing feedback page never costs the scores
            r.notes.append(f"feedback not copied: {exc.strerror}")
    write_scores_csv(results, out_dir / "scores.csv")
    try:
        reports = write_class_reports(out_dir, results)
    except Exception as exc:  # the class report never costs the scores
        reports = []
        print(f"warning: the class report could not be written ({type(exc).__name__}: {exc})", file=sys.stderr)
    if verbose:
        print(
            f"{len(results)} submissions, {sum(r.status == 'graded' for r in results)} graded; "
            f"scores in {out_dir / 'scores.csv'}"
            + (f"; class reports: {', '.join(p.name for p in reports)}" if reports else "")
        )
    return results


def _on_dask(scheduler: str):
    """The pipeline's grading step on the Dask ``scheduler`` (imported only then: Dask is an optional extra)."""
    import functools

    from labkit.course.cluster import grade_on_dask

    return functools.partial(grade_on_dask, scheduler=scheduler)
