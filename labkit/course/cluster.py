"""``labkit grade --scheduler ADDRESS`` / ``--cluster local:N``: the per-submission work as Dask tasks.

Imported only when one of those options is given (``pip install 'labkit[cluster]'``: dask.distributed).

Who does what:

* **the client** (the machine that runs ``labkit grade``) finds the submissions and makes a clean *template*
  course per lab with nbgrader's generate_assignment (source and release notebooks, a gradebook that knows
  the assignment and no student; ~14 kB zipped, cached in ``OUT/.cluster-templates/``), which travels to the
  workers as bytes inside each task; the lab's course in ``OUT/nbgrader/<lab>/`` starts as a copy of it (and
  is generated again when the lab's source changed). It submits one task per submission that the manifest
  does not hold, at most a few per worker thread at a time,
  and it is the **only writer** of everything under ``OUT``: for each result it writes the submitted and
  autograded notebooks into the lab's course, records the scores in that course's ``gradebook.db`` with
  nbgrader's own ``SaveAutoGrades`` and ``AssignLatePenalties`` run on the autograded notebook (what
  nbgrader's autograde does after executing: the formgrader then sees an ordinary autograded submission),
  and only then appends the submission to the manifest. Feedback is generated once per lab at the end.
* **a worker** runs ``grade_task``: it checks that it can start the bubblewrap sandbox (unless the client
  passed ``--unsafe-no-sandbox``) and that its labkit grades like the client's (same fingerprint of the
  grading code), unpacks the template into a private temporary course, runs the very function the local
  path runs (``autograde.grade_one_submission``: restore, autograde in the sandboxed kernel, judge the test
  cells, read the scores), and returns data only. It never sees the client's files; a worker that dies
  mid-notebook leaves nothing behind but its own temporary folder.

Exactly once: a task's key is ``(lab, student, sha256 of the notebook)``. Dask gives each future one result
(a task whose worker died is run again elsewhere, up to ``allowed-failures`` deaths; so is one whose result
died with its worker after it was computed and before the client fetched it: the client waits for it again);
the client merges a key at most once per run. The merge commits the scores together with a record of the
merge (``labkit_merged`` in the lab's gradebook.db), and then appends the record to
``OUT/cluster-manifest.jsonl`` (one JSON line per merged submission, fsynced). A later run first copies into
the manifest any record the gradebook holds and the manifest lacks (the client died between the two), then
skips every submission whose notebook hash and grader fingerprint (lab source, grading code, timeout, memory
cap, sandbox) are in the manifest and whose autograded notebook is still there; it grades only what is
missing or changed.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from labkit.course.autograde import (
    feedback_lab,
    grade_one_submission,
    release_max_score,
    prepare_lab,
    quiet_warnings,
    read_scores,
)
from labkit.course.discover import read_submission
from labkit.course.pool import worker_pool
from labkit.course.results import GradeResult, Status
from labkit.course.settings import GradingSettings
from labkit.course.sources import import_nbformat, SOURCE_DIR
from labkit.errors import LabkitError

MANIFEST_NAME = "cluster-manifest.jsonl"
ALLOWED_FAILURES = 3  # worker deaths a task may see before Dask gives up on it (KilledWorker)
LOCAL_RE = re.compile(r"local:(\d+)")
MAX_RETURNED_FILE = 64 * 2**20  # bytes per file of the autograded folder sent back to the client

# The modules whose code decides a score: a worker must run the same as the client, and a result graded with
# other code is not "already graded".
GRADING_MODULES = (
    "autograde",
    "forensics",
    "kernel_side",
    "nbgrader_setup",
    "restore",
    "sandbox",
    "settings",
    "sources",
    "trusted",
    "wire",
)


def _now() -> str:
    """When a result was merged (to the microsecond: the manifest and the gradebook compare it)."""
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


class WorkerUnfit(Exception):
    """This worker cannot grade (no sandbox, another labkit): the task fails with a one-line reason and is
    not recorded, so a later run grades it again."""


# --- fingerprints and keys --------------------------------------------------------------------------


def code_fingerprint() -> str:
    """sha256 of labkit's grading code as installed here: ``labkit/checks/**.py`` and the grading modules of
    ``labkit/course``, plus labkit's version (read from disk on every call: about a millisecond)."""
    import labkit

    pkg = Path(labkit.__file__).resolve().parent
    h = hashlib.sha256(str(getattr(labkit, "__version__", "")).encode())
    files = sorted((pkg / "checks").rglob("*.py")) + [pkg / "course" / f"{m}.py" for m in GRADING_MODULES]
    for f in files:
        if f.exists():
            h.update(f.relative_to(pkg).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def grader_fingerprint(repo_root: str | os.PathLike, lab: str, settings: GradingSettings) -> str:
    """What a result depends on besides the notebook: the lab's source, the grading code, the settings."""
    src = Path(repo_root) / SOURCE_DIR / lab / f"{lab}.py"
    h = hashlib.sha256(src.read_bytes() if src.exists() else b"")
    h.update(json.dumps([code_fingerprint(), *settings.fingerprint()]).encode())
    return h.hexdigest()[:32]


def task_key(lab: str, student: str, sha: str) -> str:
    """The Dask key of one submission's task: the same notebook of the same student is the same task."""
    return f"labkit-grade-{lab}-{student}-{sha[:20]}"


# --- the manifest: what the client has merged -----------------------------------------------------------


class Manifest:
    """``OUT/cluster-manifest.jsonl``: one line per submission merged into the gradebook, appended (one
    ``write`` of a whole line, then ``fsync``) only after the gradebook commit. The last line of a
    ``(lab, student)`` wins; a line cut short by a crash is ignored and cut off before the next append."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.records: dict[tuple[str, str], dict] = {}
        self.lines = 0
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        raw = self.path.read_bytes()
        keep = raw if raw.endswith(b"\n") or not raw else raw[: raw.rfind(b"\n") + 1]
        if keep != raw:  # a torn last line (the client died while writing it): drop it, atomically
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_bytes(keep)
            os.replace(tmp, self.path)
        for line in keep.decode("utf-8", errors="replace").splitlines():
            try:
                rec = json.loads(line)
                key = (rec["lab"], rec["student"])
            except (ValueError, KeyError, TypeError):
                continue
            self.records[key] = rec
            self.lines += 1

    def lookup(
        self, lab: str, student: str, sha: str, grader: str, course: str | os.PathLike | None = None
    ) -> dict | None:
        """The record of this exact notebook graded by this grader, when its results are still in place
        (the autograded notebook exists in ``course``, if it had one); else None."""
        rec = self.records.get((lab, student))
        if not rec or rec.get("sha256") != sha or rec.get("grader") != grader:
            return None
        if rec.get("autograded") and course is not None:
            if not (Path(course) / "autograded" / student / lab / f"{lab}.ipynb").exists():
                return None
        return rec

    def record(self, lab: str, student: str, sha: str, grader: str, result: GradeResult, **extra) -> dict:
        rec = {
            "lab": lab,
            "student": student,
            "sha256": sha,
            "grader": grader,
            "result": asdict(result),
            "merged_at": _now(),
            **extra,
        }
        return self._append(rec)

    def recover(self, merged: list[dict]) -> int:
        """Append the gradebook's records (``merged_in_gradebook``) that this manifest lacks: merges committed
        by a client that died before writing their manifest line. Returns how many."""
        count = 0
        for rec in merged:
            try:
                cur = self.records.get((rec["lab"], rec["student"]))
            except (KeyError, TypeError):
                continue
            same = ("sha256", "grader", "merged_at")
            if cur is None or any(cur.get(k) != rec.get(k) for k in same):
                self._append({**rec, "recovered": True})
                count += 1
        return count

    def _append(self, rec: dict) -> dict:
        lab, student = rec["lab"], rec["student"]
        line = (json.dumps(rec, sort_keys=True) + "\n").encode("utf-8")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(str(self.path), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.records[(lab, student)] = rec
        self.lines += 1
        return rec


# --- the worker's side ----------------------------------------------------------------------------------

_WORKER: dict = {}
_ONE_AT_A_TIME = threading.Lock()  # grading changes os.environ (fast mode): one notebook per process at a time


def _where() -> str:
    try:
        from distributed import get_worker

        return f"worker {get_worker().address}"
    except Exception:
        return f"worker on {socket.gethostname()}"


def worker_probe() -> dict:
    """Run on a worker: can it sandbox a kernel, and which grading code does it hold."""
    if "probe" not in _WORKER:
        from labkit.course import sandbox

        _WORKER["probe"] = sandbox.probe()
    return {
        "sandbox": _WORKER["probe"],
        "code": code_fingerprint(),
        "host": socket.gethostname(),
        "python": sys.version.split()[0],
    }


def _scratch() -> str | None:
    try:
        from distributed import get_worker

        return get_worker().local_directory  # Dask removes it when the worker goes away
    except Exception:
        return None


def pack_course(course: str | os.PathLike) -> bytes:
    """A prepared (student-free) course folder as zip bytes."""
    buf = io.BytesIO()
    root = Path(course)
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(root.rglob("*")):
            if f.is_file() and not f.name.startswith(".labkit-grading.lock"):
                z.write(f, f.relative_to(root).as_posix())
    return buf.getvalue()


def _unpack(data: bytes, dest: Path) -> None:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        for name in z.namelist():
            target = (dest / name).resolve()
            if not str(target).startswith(str(dest.resolve()) + os.sep):
                raise LabkitError(f"bad path in the course template: {name}")
        z.extractall(dest)


def _folder_files(folder: Path) -> dict[str, bytes]:
    out = {}
    if folder.is_dir():
        for f in sorted(folder.rglob("*")):
            if f.is_file() and f.stat().st_size <= MAX_RETURNED_FILE:
                out[f.relative_to(folder).as_posix()] = f.read_bytes()
    return out


def grade_task(
    lab: str, student: str, filename: str, notebook: bytes, template: bytes, code: str, settings: GradingSettings
) -> dict:
    """One submission, on a worker: autograded in a private course unpacked from ``template`` by the same
    ``grade_one_submission`` as the local path. Returns data only: the ``GradeResult`` fields, the restored
    submitted notebook and the files of the autograded folder (bytes), the seconds it took and where.
    Raises ``WorkerUnfit`` (one line) when this worker cannot sandbox or grades with other code."""
    start = time.monotonic()
    where = _where()
    probe = worker_probe()
    if settings.sandbox and probe["sandbox"]:
        raise WorkerUnfit(f"{where}: {probe['sandbox']}")
    if probe["code"] != code:
        raise WorkerUnfit(
            f"{where}: its labkit grading code differs from the client's (fingerprint "
            f"{probe['code'][:12]} vs {code[:12]}): install the same labkit on every worker"
        )
    with _ONE_AT_A_TIME:
        tmp = Path(tempfile.mkdtemp(prefix="labkit-task-", dir=_scratch()))
        try:
            course = tmp / "course"
            course.mkdir()
            _unpack(template, course)
            upload = tmp / "upload"
            upload.mkdir()
            path = upload / (Path(filename).name or f"{lab}.ipynb")
            path.write_bytes(notebook)
            res = grade_one_submission(student, lab, str(path), str(course), settings)
            submitted = course / "submitted" / student / lab / f"{lab}.ipynb"
            payload = {
                "result": asdict(res),
                "submitted": submitted.read_bytes() if submitted.exists() else None,
                "autograded": _folder_files(course / "autograded" / student / lab),
            }
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    payload.update(seconds=time.monotonic() - start, worker=where)
    return payload


# --- the client's side: merging a result (the single writer) -------------------------------------------


def _replace_dir(target: Path, files: dict[str, bytes]) -> None:
    """``target`` holds exactly ``files`` afterwards; written beside it first, then swapped in."""
    target.parent.mkdir(parents=True, exist_ok=True)
    new = Path(tempfile.mkdtemp(prefix=f".{target.name}-new-", dir=target.parent))
    for rel, data in files.items():
        p = (new / rel).resolve()
        if not str(p).startswith(str(new.resolve()) + os.sep):
            continue  # never outside the folder
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    old = None
    if target.exists():
        old = target.parent / f".{target.name}-old-{os.getpid()}-{time.monotonic_ns()}"
        os.replace(target, old)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def merge_result(
    course: str | os.PathLike, lab: str, student: str, payload: dict, mark: dict | None = None
) -> GradeResult:
    """Write one worker result into the client's course ``course``: the submitted and autograded notebooks,
    then the scores in its gradebook, in one transaction: nbgrader's ``SaveAutoGrades`` and
    ``AssignLatePenalties`` on the autograded notebook (what autograde runs after executing; their per-cell
    commits become flushes, so a crash never leaves half a submission's grades). Idempotent: merging the same
    result again leaves the same files and one submission. The score reported is the gradebook's.

    ``mark`` (the manifest record's fields: sha256, grader, worker, ...): written with the result into the
    gradebook's ``labkit_merged`` table in the same transaction, so that a client killed after the commit and
    before its manifest line is written finds the merge there (``Manifest.recover`` of
    ``merged_in_gradebook``) and never grades that notebook again."""
    from nbgrader.api import Gradebook
    from nbgrader.preprocessors import AssignLatePenalties, SaveAutoGrades

    course = Path(course)
    res = GradeResult(**payload["result"])
    if payload.get("submitted") is not None:
        _replace_dir(course / "submitted" / student / lab, {f"{lab}.ipynb": payload["submitted"]})
    files = payload.get("autograded") or {}
    if f"{lab}.ipynb" not in files:  # nothing was autograded (e.g. an unreadable upload): no scores to write
        if mark is not None and (course / "gradebook.db").exists():
            import sqlite3

            with contextlib.closing(sqlite3.connect(str(course / "gradebook.db"))) as con, con:
                for sql, args in _mark_sql(lab, student, res, mark, autograded=False):
                    con.execute(sql, args)
        return res
    _replace_dir(course / "autograded" / student / lab, files)
    nb = import_nbformat().reads(files[f"{lab}.ipynb"].decode("utf-8"), as_version=4)
    db = f"sqlite:///{course / 'gradebook.db'}"
    resources = {"nbgrader": {"db_url": db, "assignment": lab, "notebook": lab, "student": student}}
    ctx = quiet_warnings()
    try:
        with Gradebook(db) as gb:
            with _one_transaction(gb.db):
                gb.update_or_create_student(student)
                gb.update_or_create_submission(lab, student)
                saver = SaveAutoGrades()
                saver.gradebook, saver.notebook_id, saver.assignment_id, saver.student_id, saver.db_url = (
                    gb,
                    lab,
                    lab,
                    student,
                    db,
                )
                for index, cell in enumerate(nb.cells):  # SaveAutoGrades.preprocess, on this gradebook
                    saver.preprocess_cell(cell, resources, index)
                late = AssignLatePenalties()
                late.init_plugin()
                late.gradebook, late.notebook_id, late.assignment_id, late.student_id = gb, lab, lab, student
                notebook = gb.find_submission_notebook(lab, lab, student)
                notebook.late_submission_penalty = None
                seconds_late = gb.find_submission(lab, student).total_seconds_late
                if seconds_late > 0:
                    penalty = late.plugin_inst.late_submission_penalty(student, notebook.score, seconds_late)
                    if penalty is not None:
                        notebook.late_submission_penalty = late._check_late_penalty(notebook, penalty)
                gb.db.flush()
                gb.db.expire_all()  # the scores below are read from the rows just written
                check = GradeResult(student, lab)
                read_scores(check, gb.find_submission(lab, student))
                _settle(res, check)
                if mark is not None:
                    from sqlalchemy import text

                    for sql, args in _mark_sql(lab, student, res, mark, autograded=True):
                        gb.db.execute(text(_named(sql)), {f"a{i}": v for i, v in enumerate(args)})
    finally:
        ctx.__exit__(None, None, None)
    return res


def _settle(res: GradeResult, check: GradeResult) -> None:
    """The gradebook's scores win over the worker's (said in the notes when they differ)."""
    if (check.score, check.max_score) != (res.score, res.max_score):
        res.notes.append(
            f"the worker scored {res.score}/{res.max_score}; the gradebook holds "
            f"{check.score}/{check.max_score} (reported)"
        )
    res.score, res.max_score, res.manual_score, res.manual_max = (
        check.score,
        check.max_score,
        check.manual_score,
        check.manual_max,
    )


MERGED_TABLE = "labkit_merged"  # in each lab's gradebook.db: what the client merged, committed with the scores


def _mark_sql(lab: str, student: str, res: GradeResult, mark: dict, autograded: bool) -> list[tuple[str, tuple]]:
    rec = {**mark, "lab": lab, "student": student, "result": asdict(res), "autograded": autograded}
    return [
        (
            f"CREATE TABLE IF NOT EXISTS {MERGED_TABLE} (lab TEXT NOT NULL, student TEXT NOT NULL, "
            "record TEXT NOT NULL, PRIMARY KEY (lab, student))",
            (),
        ),
        (
            f"INSERT OR REPLACE INTO {MERGED_TABLE} (lab, student, record) VALUES (?, ?, ?)",
            (lab, student, json.dumps(rec, sort_keys=True)),
        ),
    ]


def _named(sql: str) -> str:
    """``?`` placeholders as SQLAlchemy's ``:a0, :a1, ...``."""
    parts = sql.split("?")
    return "".join(part + (f":a{i}" if i < len(parts) - 1 else "") for i, part in enumerate(parts))


def merged_in_gradebook(course: str | os.PathLike) -> list[dict]:
    """The records of ``labkit_merged`` in the course's gradebook (none when it has no such table)."""
    import sqlite3

    db = Path(course) / "gradebook.db"
    if not db.exists():
        return []
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
        try:
            rows = con.execute(f"SELECT record FROM {MERGED_TABLE}").fetchall()
        except sqlite3.OperationalError:  # no such table: nothing merged by this version yet
            return []
    out = []
    for (text,) in rows:
        with contextlib.suppress(ValueError):
            out.append(json.loads(text))
    return out


@contextlib.contextmanager
def _one_transaction(session):
    """nbgrader commits after every cell it scores: inside this block a commit only flushes, and the block
    commits once at the end (or rolls everything back on an error)."""
    commit = session.commit
    session.commit = session.flush
    try:
        yield
    except BaseException:
        del session.commit
        session.rollback()
        raise
    del session.commit
    commit()


# --- the client: connecting, submitting, watching ---------------------------------------------------------


def connect(scheduler: str, timeout: str = "30s"):
    """``(client, cluster or None)``: a LocalCluster of N single-threaded worker processes for ``local:N``,
    otherwise a client of the scheduler at that address."""
    try:
        import dask
        from distributed import Client, LocalCluster
    except ImportError:
        raise LabkitError("grading on a Dask cluster needs dask.distributed: pip install 'labkit[cluster]'") from None
    m = LOCAL_RE.fullmatch(scheduler)
    if m:
        with dask.config.set({"distributed.scheduler.allowed-failures": ALLOWED_FAILURES}):
            cluster = LocalCluster(
                n_workers=int(m.group(1)),
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",
                silence_logs=logging.ERROR,
            )
            try:
                return Client(cluster), cluster
            except BaseException:
                cluster.close()
                raise
    try:
        return Client(scheduler, timeout=timeout), None
    except (OSError, TimeoutError) as exc:
        raise LabkitError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None


def dashboard_link(client) -> str | None:
    try:
        return client.dashboard_link or None
    except Exception:
        return None


@dataclass
class _Pending:
    res: GradeResult
    path: Path
    sha: str
    grader: str
    key: str = ""


@dataclass
class ClusterStats:
    """What one run did (``grade_submissions(..., stats={})`` receives these fields)."""

    submitted: int = 0  # tasks sent to the cluster
    skipped: int = 0  # already in the manifest
    merged: int = 0  # results written into the gradebook and the manifest
    failed_tasks: int = 0  # tasks with no result (worker unfit, killed too often, merge error)
    duplicates: int = 0  # results for a key merged already in this run (ignored)
    recomputed: int = 0  # results lost with a worker after they were computed (the scheduler ran them again)
    recovered: int = 0  # merges the gradebook holds that the manifest had not recorded (the client died between)
    workers: int = 0
    worker_seconds: float = 0.0  # sum over tasks of their time on a worker
    merge_seconds: float = 0.0  # the client's time writing results
    feedback_seconds: float = 0.0
    prepare_seconds: float = 0.0
    connect_seconds: float = 0.0
    grading_seconds: float = 0.0  # from the first submit to the last result
    per_worker: dict = field(default_factory=dict)  # worker -> tasks


def _sha256(path: Path) -> str:
    return hashlib.sha256(read_submission(path)).hexdigest()


def grade_on_cluster(
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
    scheduler: str,
    out_dir: Path,
    stats: dict | None = None,
) -> list[GradeResult]:
    """The cluster half of ``grade_submissions``: grade ``subs`` on the Dask scheduler ``scheduler``
    (``local:N`` for a LocalCluster here), merge into ``courses``, write feedback; returns the results,
    the empty students' ``no submission`` rows included (``grade_submissions`` writes scores.csv)."""
    st = ClusterStats()
    manifest = Manifest(Path(out_dir) / MANIFEST_NAME)
    graders = {lab: grader_fingerprint(repo_root, lab, settings) for lab in {s.lab for s in subs}}
    for lab in sorted({s.lab for s in subs}):  # merges committed by a client killed before their manifest line
        st.recovered += manifest.recover(merged_in_gradebook(courses[lab]))
    results: list[GradeResult] = []
    pending: list[_Pending] = []

    def report(res: GradeResult) -> None:
        if verbose:
            from tqdm import tqdm

            tqdm.write(res.line())

    for s in sorted(subs, key=lambda s: (chosen.index(s.lab), s.student)):
        res = GradeResult(s.student, s.lab)
        results.append(res)
        try:
            sha = _sha256(Path(s.path))
        except (OSError, LabkitError) as exc:
            res.status, res.score = Status.FAILED, 0.0
            res.notes.append(f"cannot read {Path(s.path).name}: {exc}")
            continue
        rec = manifest.lookup(s.lab, s.student, sha, graders[s.lab], courses[s.lab])
        if rec is not None:
            res.__dict__.update(GradeResult(**rec["result"]).__dict__)
            st.skipped += 1
        else:
            pending.append(_Pending(res, Path(s.path), sha, graders[s.lab], task_key(s.lab, s.student, sha)))
    if verbose:
        print(
            f"{len(pending)} submission(s) to grade on the cluster, {st.skipped} already graded "
            f"(manifest {manifest.path})",
            flush=True,
        )

    merged_labs: set[str] = set()
    if pending:
        _run_pending(
            pending,
            chosen,
            courses,
            st,
            manifest,
            merged_labs,
            report,
            repo_root=repo_root,
            out_dir=out_dir,
            settings=settings,
            jobs=jobs,
            verbose=verbose,
            scheduler=scheduler,
        )

    for lab in empty_labs:
        max_score = release_max_score(releases.get(lab))
        for student, note in empty:
            res = GradeResult(student, lab, 0.0, max_score, Status.NO_SUBMISSION, [note])
            results.append(res)
            report(res)
    if settings.feedback and merged_labs:
        t0 = time.monotonic()
        labs = [lab for lab in chosen if lab in merged_labs]
        with worker_pool(max(1, min(jobs, len(labs)))) as run:
            for lab, warning in zip(labs, run(feedback_lab, [(courses[lab], lab) for lab in labs])):
                if warning:
                    print(f"warning: feedback for {lab} failed: {warning}", file=sys.stderr)
        st.feedback_seconds = time.monotonic() - t0
    if stats is not None:
        stats.update(asdict(st))
    return results


def _run_pending(
    pending: list[_Pending],
    chosen,
    courses,
    st: ClusterStats,
    manifest: Manifest,
    merged_labs: set,
    report,
    *,
    repo_root,
    out_dir,
    settings: GradingSettings,
    jobs,
    verbose,
    scheduler,
) -> None:
    # 1. the cluster, and whether its workers can grade (before any work here: a refusal comes at once)
    t0 = time.monotonic()
    client, cluster = connect(scheduler)
    st.connect_seconds = time.monotonic() - t0
    try:
        link = dashboard_link(client)
        code = code_fingerprint()
        probes = client.run(worker_probe)
        st.workers = len(probes)
        if verbose:
            where = "a local cluster" if cluster is not None else scheduler
            print(f"Dask: {len(probes)} worker(s) on {where}" + (f"; dashboard: {link}" if link else ""), flush=True)
            if not probes:
                print("note: no worker is connected yet; the tasks wait for one", flush=True)
        unfit = {
            w: (
                p["sandbox"]
                if settings.sandbox and p["sandbox"]
                else None
                if p["code"] == code
                else "its labkit grading code differs from the client's"
            )
            for w, p in probes.items()
        }
        for w, why in unfit.items():
            if why:
                print(f"warning: worker {w} cannot grade: {why}", file=sys.stderr, flush=True)
        if probes and all(unfit.values()):
            raise LabkitError(f"no worker can grade: {next(iter(unfit.values()))}")

        # 2. a template course per lab for the workers (nbgrader generate_assignment here, kept in OUT for the
        #    next run); the client's own course in OUT starts as a copy of it, and is generated again only
        #    when the lab's source changed since
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
                    p.res.status = Status.FAILED
                    p.res.notes.append(f"could not prepare {lab}: {str(prepared[lab])[-300:]}")
        st.prepare_seconds = time.monotonic() - t0

        # 3. one task per submission; results merged here as they come
        todo = [p for p in pending if p.res.lab in templates]
        if todo:
            _submit_and_merge(
                client,
                todo,
                templates,
                courses,
                code,
                st,
                manifest,
                merged_labs,
                report,
                settings=settings,
                verbose=verbose,
            )
    finally:
        with contextlib.suppress(Exception):
            client.close()
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.close()


TEMPLATES_DIR = ".cluster-templates"  # in OUT: the workers' template course per lab and grader fingerprint


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
        _unpack(template, course)
        return False
    with zipfile.ZipFile(io.BytesIO(template)) as z:
        (course / "nbgrader_config.py").write_bytes(z.read("nbgrader_config.py"))
        theirs = z.read(f"source/{lab}/{lab}.ipynb")
    ours = course / "source" / lab / f"{lab}.ipynb"
    return not ours.exists() or ours.read_bytes() != theirs


def _window(client, current: int) -> int:
    try:
        threads = sum(client.nthreads().values())
    except Exception:
        return current
    return max(16, 3 * threads)


def _submit_and_merge(
    client,
    todo: list[_Pending],
    templates,
    courses,
    code,
    st: ClusterStats,
    manifest: Manifest,
    merged_labs: set,
    report,
    *,
    settings: GradingSettings,
    verbose,
) -> None:
    from distributed import as_completed
    from tqdm import tqdm

    queue = list(reversed(todo))
    by_key: dict[str, _Pending] = {}
    merged: set[str] = set()
    count = {"done": 0, "failed": 0}
    window = _window(client, 16)
    refreshed = time.monotonic()
    ac = as_completed()
    bar = tqdm(total=len(todo), desc="grading", unit="nb", disable=not verbose, dynamic_ncols=True, file=sys.stderr)

    def finished(res: GradeResult) -> None:
        count["done"] += 1
        count["failed"] += res.status == "failed"
        report(res)
        bar.set_postfix(done=count["done"], failed=count["failed"], remaining=len(todo) - count["done"], refresh=False)
        bar.update(1)

    def submit_one() -> bool:
        while queue:
            p = queue.pop()
            try:
                data = read_submission(p.path)  # a regular file, never a link (discover.read_submission)
            except (OSError, LabkitError) as exc:  # gone, unreadable or replaced since it was listed
                p.res.status, p.res.score = Status.FAILED, 0.0
                p.res.notes.append(f"cannot read {p.path.name}: {exc}")
                finished(p.res)
                continue
            break
        else:
            return False
        sha = hashlib.sha256(data).hexdigest()
        if sha != p.sha:  # the file changed since it was listed: grade what is there now
            p.sha, p.key = sha, task_key(p.res.lab, p.res.student, sha)
        fut = client.submit(
            grade_task,
            p.res.lab,
            p.res.student,
            p.path.name,
            data,
            templates[p.res.lab],
            code,
            settings,
            key=p.key,
            pure=False,
            retries=0,
        )
        by_key[fut.key] = p
        ac.add(fut)
        st.submitted += 1
        return True

    start = time.monotonic()
    try:
        for _ in range(window):
            if not submit_one():
                break
        for fut in ac:
            p = by_key.get(fut.key)
            if p is None or fut.key in merged:  # a second result for a merged key: never merged twice
                st.duplicates += 1
                fut.release()
                continue
            res = p.res
            if fut.status in ("lost", "pending"):  # computed, then its worker died before we fetched it: the
                st.recomputed += 1  # scheduler computes it again elsewhere; wait for that result
                ac.add(fut)
                continue
            try:
                payload = _fetch(fut) if fut.status == "finished" else None
            except Exception as exc:  # it erred, was cancelled, or was lost for good while being fetched
                payload, failure = None, exc
            else:
                failure = None if payload is not None else _exception_of(fut)
            if payload is not None:
                st.worker_seconds += float(payload.get("seconds") or 0)
                w = payload.get("worker", "?")
                st.per_worker[w] = st.per_worker.get(w, 0) + 1
                t0 = time.monotonic()
                mark = {
                    "sha256": p.sha,
                    "grader": p.grader,
                    "worker": w,
                    "merged_at": _now(),
                    "seconds": round(float(payload.get("seconds") or 0), 2),
                }
                try:
                    merged_res = merge_result(courses[res.lab], res.lab, res.student, payload, mark)
                    manifest.record(
                        res.lab,
                        res.student,
                        p.sha,
                        p.grader,
                        merged_res,
                        autograded=f"{res.lab}.ipynb" in (payload.get("autograded") or {}),
                        worker=w,
                        seconds=mark["seconds"],
                        merged_at=mark["merged_at"],
                    )
                except Exception as exc:
                    res.status = Status.FAILED
                    res.notes.append(
                        f"could not record the result in the gradebook: {type(exc).__name__}: {str(exc)[:300]}"
                    )
                    st.failed_tasks += 1
                else:
                    res.__dict__.update(merged_res.__dict__)
                    merged.add(fut.key)
                    merged_labs.add(res.lab)
                    st.merged += 1
                st.merge_seconds += time.monotonic() - t0
            else:  # erred (or cancelled: the scheduler gave up on it)
                res.status, res.score = Status.FAILED, None
                res.notes.append(_task_failure(failure))
                st.failed_tasks += 1
            fut.release()
            by_key.pop(fut.key, None)
            finished(res)
            if time.monotonic() - refreshed > 5:
                window, refreshed = _window(client, window), time.monotonic()
            while ac.count() < window and submit_one():
                pass
    finally:
        bar.close()
    st.grading_seconds = time.monotonic() - start


def _fetch(fut) -> dict:
    """The result of a finished task, brought from the worker that holds it. When that worker died after
    computing it, the client asks the scheduler to compute it again and waits (a test kills a worker here)."""
    return fut.result()


def _exception_of(fut) -> BaseException | None:
    """Why a task that is not ``finished`` has no result (``erred``: its exception; ``cancelled``: the error
    that ``exception()`` raises). Asked only of a future in a final state, so it never waits."""
    try:
        return fut.exception(timeout=1)
    except Exception as err:  # FutureCancelledError, or a state we did not expect
        return err


def _task_failure(exc: BaseException | None) -> str:
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
