"""One grading pipeline, on this machine or on Dask: prepare -> grade -> merge -> (feedback, report).

1. **prepare** (the client): a clean *template* course per lab with nbgrader's generate_assignment (source
   and release notebooks, a gradebook that knows the assignment and no student; ~14 kB zipped, cached in
   ``OUT/.cluster-templates/`` per grader fingerprint). The lab's course in ``OUT/nbgrader/<lab>/`` starts
   as a copy of it (and is generated again when the lab's source changed).
2. **grade** (a worker): ``task.grade_task``, one per submission that the manifest does not hold: notebook
   bytes, the template and the settings in, data out. The executor is the only difference between the two
   ways to run: ``executors.LocalExecutor`` (spawned processes here; a worker killed by a bad submission
   fails that submission alone) or Dask's ``Client.get_executor()`` (``cluster.grade_on_dask``; a result
   lost with its worker after it was computed is computed again by the scheduler and fetched by the client
   before the future answers). Both go through ``grade_with``, one loop: submit, wait, merge.
3. **merge** (the client, always, one result at a time): ``merge.merge_result`` writes the notebooks and the
   gradebook; then the manifest line (``manifest.Manifest``). A re-run grades only what is missing or changed.
4. feedback once per lab; ``grade.grade_submissions`` writes scores.csv and the class reports.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import tempfile
import time
import zipfile
from concurrent.futures import FIRST_COMPLETED, CancelledError, Executor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from labkit.course.autograde import feedback_lab, prepare_lab, release_max_score
from labkit.course.discover import read_submission
from labkit.course.executors import LocalExecutor, worker_pool
from labkit.course.manifest import MANIFEST_NAME, Manifest, now_utc, code_fingerprint, grader_fingerprint, task_key
from labkit.course.merge import merge_result, merged_in_gradebook
from labkit.course.results import GradeResult, Status
from labkit.course.settings import GradingSettings
from labkit.course.task import WorkerUnfit, unpack_course, grade_task, pack_course
from labkit.errors import LabkitError

ALLOWED_FAILURES = 3  # (executors.ALLOWED_FAILURES: Dask's allowed-failures, named in a failure note)
TEMPLATES_DIR = ".cluster-templates"  # in OUT: the template course per lab and grader fingerprint


@dataclass
class Pending:
    res: GradeResult
    path: Path
    sha: str
    grader: str
    key: str = ""


@dataclass
class GradingStats:
    """What one run did (``grade_submissions(..., stats={})`` receives these fields)."""

    submitted: int = 0  # tasks sent to the executor
    skipped: int = 0  # already in the manifest
    merged: int = 0  # results written into the gradebook and the manifest
    failed_tasks: int = 0  # tasks with no result (worker died or unfit, killed too often, merge error)
    recovered: int = 0  # merges the gradebook holds that the manifest had not recorded (the client died between)
    workers: int = 0
    worker_seconds: float = 0.0  # sum over tasks of their time on a worker
    merge_seconds: float = 0.0  # the client's time writing results
    feedback_seconds: float = 0.0
    prepare_seconds: float = 0.0
    connect_seconds: float = 0.0
    grading_seconds: float = 0.0  # from the first submit to the last result
    per_worker: dict = field(default_factory=dict)  # worker -> tasks


def sha256_of(path: Path) -> str:
    return hashlib.sha256(read_submission(path)).hexdigest()


def run_pipeline(
    subs: Sequence,
    chosen: Sequence[str],
    empty,
    empty_labs: Sequence[str],
    releases: dict,
    courses: dict,
    *,
    repo_root: Path,
    settings: GradingSettings,
    jobs: int,
    verbose: bool,
    out_dir: Path,
    grade_pending: Callable | None = None,
    where: str = "",
    stats: dict | None = None,
) -> list[GradeResult]:
    """Grade ``subs``, merge into ``courses``, write feedback; returns the results, the empty students'
    ``no submission`` rows included (``grade.grade_submissions`` writes scores.csv and the reports).

    ``grade_pending``: how the pending submissions are graded, the one part that differs between a machine and a
    cluster: ``grade_locally`` (the default: ``jobs`` local processes) or ``cluster.grade_on_dask`` with its
    scheduler bound (``functools.partial``); it takes the keyword arguments below and merges each result as it
    arrives. ``where``: said in the progress line (" on the cluster")."""
    st = GradingStats()
    manifest = Manifest(Path(out_dir) / MANIFEST_NAME)
    graders = {lab: grader_fingerprint(repo_root, lab, settings) for lab in {s.lab for s in subs}}
    for lab in sorted({s.lab for s in subs}):  # merges committed by a client killed before their manifest line
        st.recovered += manifest.recover(merged_in_gradebook(courses[lab]))
    results: list[GradeResult] = []
    pending: list[Pending] = []
    progress = Progress(verbose)

    for s in sorted(subs, key=lambda s: (chosen.index(s.lab), s.student)):
        res = GradeResult(s.student, s.lab)
        results.append(res)
        try:
            sha = sha256_of(Path(s.path))
        except (OSError, LabkitError) as exc:
            res.fail(f"cannot read {Path(s.path).name}: {exc}")
            continue
        rec = manifest.lookup(s.lab, s.student, sha, graders[s.lab], courses[s.lab])
        if rec is not None:
            res.__dict__.update(GradeResult(**rec["result"]).__dict__)
            st.skipped += 1
        else:
            pending.append(Pending(res, Path(s.path), sha, graders[s.lab], task_key(s.lab, s.student, sha)))
    if verbose:
        print(
            f"{len(pending)} submission(s) to grade{where}, {st.skipped} already graded (manifest {manifest.path})",
            flush=True,
        )

    merged_labs: set[str] = set()
    if pending:
        run = dict(
            pending=pending,
            chosen=chosen,
            courses=courses,
            st=st,
            manifest=manifest,
            merged_labs=merged_labs,
            progress=progress,
            repo_root=repo_root,
            out_dir=out_dir,
            settings=settings,
            jobs=jobs,
        )
        (grade_pending or grade_locally)(**run, verbose=verbose)

    for lab in empty_labs:
        max_score = release_max_score(releases.get(lab))
        for student, note in empty:
            res = GradeResult(student, lab, 0.0, max_score, Status.NO_SUBMISSION, [note])
            results.append(res)
            progress.say(res)
    if settings.feedback and merged_labs:
        t0 = time.monotonic()
        labs = [lab for lab in chosen if lab in merged_labs]
        with worker_pool(max(1, min(jobs, len(labs)))) as run_all:
            for lab, warning in zip(labs, run_all(feedback_lab, [(courses[lab], lab) for lab in labs])):
                if warning:  # a string from nbgrader, or the exception of a worker that died
                    print(f"warning: feedback for {lab} failed: {warning}", file=sys.stderr)
        st.feedback_seconds = time.monotonic() - t0
    if stats is not None:
        stats.update(asdict(st))
    return results


# --- 1. prepare ---------------------------------------------------------------------------------------------


def prepare(pending: list[Pending], chosen, courses, st: GradingStats, *, repo_root, out_dir, jobs, settings) -> dict:
    """{lab: template course (zip bytes)} for the labs of ``pending``; the client's own course of each is
    ready to merge into. The submissions of a lab that could not be prepared are marked failed."""
    t0 = time.monotonic()
    labs = [lab for lab in chosen if any(p.res.lab == lab for p in pending)]
    graders = {p.res.lab: p.grader for p in pending}
    prepared = _templates(labs, graders, repo_root=repo_root, out_dir=out_dir, jobs=jobs, settings=settings)
    refresh = [
        lab
        for lab in labs
        if isinstance(prepared[lab], bytes) and _install_course(prepared[lab], Path(courses[lab]), lab)
    ]
    if refresh:
        with worker_pool(max(1, min(jobs, len(refresh)))) as run:
            for lab, r in zip(
                refresh, run(prepare_lab, [(str(repo_root), lab, courses[lab], settings) for lab in refresh])
            ):
                if isinstance(r, BaseException):
                    prepared[lab] = r
    templates: dict[str, bytes] = {}
    for lab in labs:
        if isinstance(prepared[lab], bytes):
            templates[lab] = prepared[lab]
            continue
        for p in pending:
            if p.res.lab == lab:
                p.res.fail(f"could not prepare {lab}: {str(prepared[lab])[-300:]}")
    st.prepare_seconds = time.monotonic() - t0
    return templates


def _templates(labs: Sequence[str], graders: dict, *, repo_root, out_dir, jobs, settings: GradingSettings) -> dict:
    """{lab: template course (zip bytes) or the exception that prevented it}: from OUT's cache when one was
    made for the same grader fingerprint (lab source, grading code, settings), else generated here."""
    cache = Path(out_dir) / TEMPLATES_DIR
    out: dict = {}
    for lab in labs:
        f = cache / f"{lab}-{graders[lab][:16]}.zip"
        if f.exists():
            out[lab] = f.read_bytes()
    missing = [lab for lab in labs if lab not in out]
    if missing:
        with (
            tempfile.TemporaryDirectory(prefix="labkit-templates-") as tmp,
            worker_pool(max(1, min(jobs, len(missing)))) as run,
        ):
            made = run(prepare_lab, [(str(repo_root), lab, str(Path(tmp) / lab), settings) for lab in missing])
            for lab, r in zip(missing, made):
                if isinstance(r, BaseException):
                    out[lab] = r
                    continue
                out[lab] = pack_course(Path(tmp) / lab)
                cache.mkdir(parents=True, exist_ok=True)
                for old in cache.glob(f"{lab}-*.zip"):
                    old.unlink()
                part = cache / f".{lab}.zip.part"
                part.write_bytes(out[lab])
                os.replace(part, cache / f"{lab}-{graders[lab][:16]}.zip")
    return out


def _install_course(template: bytes, course: Path, lab: str) -> bool:
    """Make ``course`` (the client's, in OUT) ready to merge into: a copy of the fresh ``template`` when it
    has no gradebook yet; its settings file rewritten otherwise. True when its source notebook differs from
    the template's (the lab changed since it was prepared): the caller generates it again."""
    if not (course / "gradebook.db").exists():
        course.mkdir(parents=True, exist_ok=True)
        unpack_course(template, course)
        return False
    with zipfile.ZipFile(io.BytesIO(template)) as z:
        (course / "nbgrader_config.py").write_bytes(z.read("nbgrader_config.py"))
        theirs = z.read(f"source/{lab}/{lab}.ipynb")
    ours = course / "source" / lab / f"{lab}.ipynb"
    return not ours.exists() or ours.read_bytes() != theirs


# --- 2. grade, on this machine ------------------------------------------------------------------------------


def grade_locally(
    pending: list[Pending],
    chosen,
    courses,
    st: GradingStats,
    manifest,
    merged_labs,
    progress,
    *,
    repo_root,
    out_dir,
    settings: GradingSettings,
    jobs,
    verbose: bool = False,
) -> None:
    """Prepare, then grade ``pending`` in a ``LocalExecutor`` of ``jobs`` processes, merging each result here as
    it comes (a few tasks per process queued at a time: the notebooks are read only when submitted)."""
    templates = prepare(
        pending, chosen, courses, st, repo_root=repo_root, out_dir=out_dir, jobs=jobs, settings=settings
    )
    todo = [p for p in pending if p.res.lab in templates]
    for p in pending:
        if p.res.lab not in templates:
            progress.done(p.res)
    if not todo:
        return
    with LocalExecutor(jobs) as executor:
        grade_with(
            executor, todo, templates, courses, code_fingerprint(), st, manifest, merged_labs, progress,
            settings=settings, window=lambda: 2 * executor.jobs, task=grade_task,
        )  # fmt: skip
    st.workers = executor.jobs


def grade_with(
    executor: Executor,
    todo: list[Pending],
    templates: dict,
    courses,
    code: str,
    st: GradingStats,
    manifest: Manifest,
    merged_labs: set,
    progress,
    *,
    settings: GradingSettings,
    window: Callable[[], int],
    task: Callable = grade_task,
    merge: Callable = merge_result,
    keyed: bool = False,
) -> None:
    """Steps 2 and 3 on any ``concurrent.futures.Executor``: submit one ``task`` per submission, at most
    ``window()`` at a time (a notebook is read only when its task is submitted), and merge each result here,
    one at a time, as it comes. A future answers once, so each submission is merged at most once per run;
    one that ends with an exception (a worker that died, a refused worker, a cancelled task) fails alone.

    executor: ``executors.LocalExecutor`` or Dask's ``Client.get_executor()`` (``keyed``: the task's key is
    ``Pending.key``, so Dask never runs one submission twice at once)."""
    queue, running = list(reversed(todo)), {}
    progress.start(len(todo))
    start = time.monotonic()
    try:
        while queue or running:
            while queue and len(running) < window():
                p = queue.pop()
                data = read_task_input(p)
                if data is None:
                    progress.done(p.res)
                    continue
                args = (p.res.lab, p.res.student, p.path.name, data, templates[p.res.lab], code, settings)
                fut = executor.submit(task, *args, **({"key": p.key} if keyed else {}))
                running[fut] = p
                st.submitted += 1
            if not running:
                break
            done, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for fut in done:
                p = running.pop(fut)
                exc = CancelledError("the scheduler cancelled the task") if fut.cancelled() else fut.exception()
                if exc is None:
                    merge_one(p, fut.result(), courses, manifest, st, merged_labs, merge=merge)
                else:
                    fail_one(p, exc, st)
                progress.done(p.res)
    finally:
        progress.close()
    st.grading_seconds = time.monotonic() - start


# --- the steps every executor shares -------------------------------------------------------------------------


def read_task_input(p: Pending) -> bytes | None:
    """The notebook's bytes for its task (None, and ``p`` failed, when it is gone or unreadable now); the key
    follows the bytes when the file changed since it was listed."""
    try:
        data = read_submission(p.path)  # a regular file, never a link (discover.read_submission)
    except (OSError, LabkitError) as exc:  # gone, unreadable or replaced since it was listed
        p.res.fail(f"cannot read {p.path.name}: {exc}")
        return None
    sha = hashlib.sha256(data).hexdigest()
    if sha != p.sha:  # the file changed since it was listed: grade what is there now
        p.sha, p.key = sha, task_key(p.res.lab, p.res.student, sha)
    return data


def merge_one(
    p: Pending,
    payload: dict,
    courses,
    manifest: Manifest,
    st: GradingStats,
    merged_labs: set,
    merge: Callable = merge_result,
) -> bool:
    """Step 3 for one task's result: the gradebook, then the manifest line; ``p.res`` becomes the merged result.
    False (and ``p`` failed) when it could not be recorded."""
    res = p.res
    seconds = round(float(payload.get("seconds") or 0), 2)
    w = payload.get("worker", "?")
    st.worker_seconds += seconds
    st.per_worker[w] = st.per_worker.get(w, 0) + 1
    t0 = time.monotonic()
    mark = {"sha256": p.sha, "grader": p.grader, "worker": w, "merged_at": now_utc(), "seconds": seconds}
    try:
        merged_res = merge(courses[res.lab], res.lab, res.student, payload, mark)
        manifest.record(
            res.lab,
            res.student,
            p.sha,
            p.grader,
            merged_res,
            autograded=f"{res.lab}.ipynb" in (payload.get("autograded") or {}),
            worker=w,
            seconds=seconds,
            merged_at=mark["merged_at"],
        )
    except Exception as exc:
        res.fail(f"could not record the result in the gradebook: {type(exc).__name__}: {str(exc)[:300]}")
        st.failed_tasks += 1
        ok = False
    else:
        res.__dict__.update(merged_res.__dict__)
        merged_labs.add(res.lab)
        st.merged += 1
        ok = True
    st.merge_seconds += time.monotonic() - t0
    return ok


def fail_one(p: Pending, exc: BaseException | None, st: GradingStats) -> None:
    """A task that returned no result: failed, not recorded (a re-run grades it again)."""
    p.res.fail(task_failure(exc))
    st.failed_tasks += 1


def task_failure(exc: BaseException | None) -> str:
    """One line for a task that returned no result."""
    name = type(exc).__name__ if exc is not None else "unknown"
    if name == "KilledWorker":
        return (
            f"not graded: the workers running it died more than {ALLOWED_FAILURES} times (Dask's "
            "allowed-failures); run the command again to retry"
        )
    if isinstance(exc, WorkerUnfit) or name == "WorkerUnfit":
        return f"not graded: {str(exc).splitlines()[0] if str(exc) else name}"
    text = " ".join(str(exc).split())[:300] if exc is not None else ""
    return f"not graded: {name}: {text}" if text else f"not graded: {name}"


class Progress:
    """Each result's line as it comes, and a progress bar (verbose runs)."""

    def __init__(self, verbose: bool):
        self.verbose, self.bar, self.count = verbose, None, {"done": 0, "failed": 0, "total": 0}

    def say(self, res: GradeResult) -> None:
        if not self.verbose:
            return
        if self.bar is not None:
            self.bar.write(res.line())
        else:
            print(res.line(), flush=True)

    def start(self, total: int) -> None:
        from tqdm import tqdm

        self.count["total"] = total
        self.bar = tqdm(
            total=total, desc="grading", unit="nb", disable=not self.verbose, dynamic_ncols=True, file=sys.stderr
        )

    def done(self, res: GradeResult) -> None:
        self.say(res)
        if self.bar is None:
            return
        c = self.count
        c["done"] += 1
        c["failed"] += res.status == Status.FAILED
        self.bar.set_postfix(done=c["done"], failed=c["failed"], remaining=c["total"] - c["done"], refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
