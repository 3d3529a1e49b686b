"""The grading task: one submission's notebook bytes, the lab's template course and the settings in, data out.

It runs in a worker (a local process of ``executors.LocalExecutor`` or a Dask worker), never touches the
client's files, and grades in a private course unpacked from the template with the same
``autograde.grade_one_submission``: each task has its own gradebook, so no lock is needed anywhere; the
client alone writes the class's gradebook (``merge.merge_result``).
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
import zipfile
from dataclasses import asdict
from pathlib import Path

from labkit.course.autograde import grade_one_submission
from labkit.course.manifest import code_fingerprint
from labkit.course.settings import GradingSettings
from labkit.errors import LabkitError

MAX_RETURNED_FILE = 64 * 2**20  # bytes per file of the autograded folder sent back to the client


class WorkerUnfit(Exception):
    """This worker cannot grade (no sandbox, another labkit): the task fails with a one-line reason and is
    not recorded, so a later run grades it again."""


# --- the worker's side ----------------------------------------------------------------------------------

WORKER_STATE: dict = {}
_ONE_AT_A_TIME = threading.Lock()  # grading changes os.environ (fast mode): one notebook per process at a time


def worker_where() -> str:
    try:
        from distributed import get_worker

        return f"worker {get_worker().address}"
    except Exception:
        return f"process {os.getpid()} on {socket.gethostname()}"  # a LocalExecutor's worker


def worker_probe() -> dict:
    """Run on a worker: can it sandbox a kernel, and which grading code does it hold."""
    if "probe" not in WORKER_STATE:
        from labkit.course import sandbox

        WORKER_STATE["probe"] = sandbox.probe()
    return {
        "sandbox": WORKER_STATE["probe"],
        "code": code_fingerprint(),
        "host": socket.gethostname(),
        "python": sys.version.split()[0],
    }


def _scratch() -> str | None:
    try:
        from distributed import get_worker

        return get_worker().local_directory  # Dask removes it when the worker goes away
    except Exception:
        from labkit.course import executors

        return executors.WORKER_SCRATCH  # a LocalExecutor's worker: removed when it ends or dies (else None)


def pack_course(course: str | os.PathLike) -> bytes:
    """A prepared (student-free) course folder as zip bytes."""
    buf = io.BytesIO()
    root = Path(course)
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(root.rglob("*")):
            if f.is_file() and not f.name.startswith(".labkit-grading.lock"):
                z.write(f, f.relative_to(root).as_posix())
    return buf.getvalue()


def unpack_course(data: bytes, dest: Path) -> None:
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
    where = worker_where()
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
            unpack_course(template, course)
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
