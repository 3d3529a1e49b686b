"""``labkit grade``: find the submissions, autograde each in its own sandboxed kernel, report, write scores.

Modules it uses: ``discover`` (which file is whose, for which lab), ``autograde`` (nbgrader: prepare the
course, autograde one submission with ``trusted.TrustedExecute``, feedback), ``forensics`` (what the
instructor should look at), ``pool`` (parallel workers), ``results`` (``GradeResult``, scores.csv), and
``cluster`` (the same per-submission work as Dask tasks, ``--scheduler`` / ``--cluster``; imported only then).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Sequence

from labkit.course.autograde import feedback_lab, grade_one_submission, release_max_score, prepare_lab
from labkit.course.discover import discover
from labkit.course.pool import worker_pool
from labkit.course.report import write_class_reports
from labkit.course.results import GradeResult, Status, write_scores_csv
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

    Submissions are autograded in parallel processes (``jobs``, default: up to 4, one per CPU), each in its
    own kernel with a finite per-cell ``timeout``, a limit for the whole notebook (``notebook_timeout`` seconds:
    the cells not run by then score 0, and the notes say so) and a memory cap of ``memory_limit_gb`` (0: none). The
    kernel runs in a bubblewrap sandbox (``labkit.course.sandbox``; ``sandbox=False`` only for trusted
    notebooks) and test cells run in the grader's own process (``labkit.course.trusted``). One bad
    submission (unreadable file, infinite loop, dead kernel, memory blow-up) is reported and never stops
    the others. Status per submission: ``graded``, ``needs review`` (a REVIEW note: an answer that uses
    labkit, dynamic code or tampering), ``needs manual grading``, ``kernel died`` (scored from the cells
    that could run), ``out of memory`` (a cell hit the memory cap), ``failed`` (no score from nbgrader) or
    ``no submission`` (an empty student folder); the notes say what was repaired and which cells failed,
    timed out or look like tampering. Written answers are graded by hand in nbgrader's formgrader; their
    points are reported apart (``manual_max``; ``manual_score`` once given).

    ``scheduler``: grade on Dask instead of local processes (``labkit.course.cluster``): the address of a
    Dask scheduler (``tcp://host:8786``) or ``local:N`` (a LocalCluster of N worker processes here). Each
    worker grades in its own sandbox; this process alone writes ``out_dir`` and the gradebooks, and a
    manifest (``out_dir/cluster-manifest.jsonl``) makes a re-run grade only what is missing. ``stats``: a
    dict that receives counters and timings of the cluster run (``cluster.ClusterStats``).

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
    if os.name == "nt":  # no fcntl lock for the shared gradebook (see course_lock): one at a time
        jobs = 1
    courses = {lab: str(out_dir / "nbgrader" / lab) for lab in set(active) | set(empty_labs)}

    if scheduler:
        from labkit.course.cluster import grade_on_cluster

        results = grade_on_cluster(
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
            scheduler=scheduler,
            out_dir=out_dir,
            stats=stats,
        )
    else:
        results = _grade_locally(
            subs,
            chosen,
            empty,
            empty_labs,
            releases,
            courses,
            active,
            repo_root=repo_root,
            settings=settings,
            jobs=jobs,
            verbose=verbose,
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


def _grade_locally(
    subs, chosen, empty, empty_labs, releases, courses, active, *, repo_root, settings: GradingSettings, jobs, verbose
) -> list[GradeResult]:
    """The local half of ``grade_submissions``: prepare, autograde and write feedback in ``jobs`` processes."""
    with worker_pool(jobs) as run:
        prepared = dict(
            zip(active, run(prepare_lab, [(str(repo_root), lab, courses[lab], settings) for lab in active]))
        )
        tasks, results = [], []
        for s in sorted(subs, key=lambda s: (chosen.index(s.lab), s.student)):
            res = GradeResult(s.student, s.lab)
            results.append(res)
            if isinstance(prepared[s.lab], BaseException):
                res.status = Status.FAILED
                res.notes.append(f"could not prepare {s.lab}: {str(prepared[s.lab])[-300:]}")
            else:
                tasks.append((res, (s.student, s.lab, str(s.path), courses[s.lab], settings)))

        def report(res: GradeResult) -> None:
            if verbose:
                print(res.line(), flush=True)

        for (res, args), done in zip(tasks, run(grade_one_submission, [a for _, a in tasks], on_result=report)):
            if isinstance(done, BaseException):  # the worker process itself died
                res.status = Status.FAILED
                res.notes.append(f"grading error: {type(done).__name__}: {str(done)[:300]}")
            else:
                res.__dict__.update(done.__dict__)
        for lab in empty_labs:
            max_score = release_max_score(releases.get(lab))
            for student, note in empty:
                res = GradeResult(student, lab, 0.0, max_score, Status.NO_SUBMISSION, [note])
                results.append(res)
                report(res)
        graded_labs = [
            lab for lab in active if any(r.lab == lab and r.status not in ("failed", "no submission") for r in results)
        ]
        if settings.feedback:
            for lab, warning in zip(graded_labs, run(feedback_lab, [(courses[lab], lab) for lab in graded_labs])):
                if warning:  # a string from nbgrader, or the exception of a worker that died
                    print(f"warning: feedback for {lab} failed: {warning}", file=sys.stderr)
    return results
