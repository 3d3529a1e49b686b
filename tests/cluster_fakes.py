"""Stand-ins for the cluster tests that exercise the client loop in seconds (tests/test_cluster_faults.py).

``fake_grade_task`` runs on real ``dask worker`` processes in place of ``cluster.grade_task``: the "notebook"
is JSON ``{"score": s, "seconds": t, "block_once": bool}``; each run leaves a file in ``LABKIT_FAKE_LOG``
(``started-<student>-<pid>-<n>``, then ``done-...``) so that a test sees which worker computed what, and when.
A notebook with ``block_once`` blocks its first run (until the test kills that worker: a kill during compute)
and runs normally afterwards.

``install_client_fakes`` makes the client use it, with no nbgrader course: no template (``pipeline._templates``), and a
merge that is the real ``merge_result`` (a not-autograded result: it writes only the ``labkit_merged`` record,
committed in the lab's gradebook.db) logged in ``merges.log`` (one line per merge, every client process).
"""

from __future__ import annotations

import itertools
import json
import os
import time
from dataclasses import asdict
from pathlib import Path

_RUNS = itertools.count()


def _log_dir() -> Path:
    return Path(os.environ["LABKIT_FAKE_LOG"])


def fake_grade_task(lab, student, filename, notebook, template, code, settings):
    from labkit.course.cluster import worker_where
    from labkit.course.results import GradeResult

    spec = json.loads(notebook)
    log = _log_dir()
    tag = f"{student}-{os.getpid()}-{next(_RUNS)}"
    (log / f"started-{tag}").write_text(worker_where())
    if spec.get("block_once"):
        try:
            fd = os.open(str(log / f"armed-{student}"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            pass  # run again after the kill: grade normally
        else:
            os.close(fd)
            time.sleep(600)  # until the test kills this worker
    time.sleep(float(spec.get("seconds", 0.2)))
    (log / f"done-{tag}").write_text(worker_where())
    res = GradeResult(student, lab, float(spec["score"]), 1.0, "graded", [])
    return {"result": asdict(res), "submitted": None, "autograded": {}, "seconds": 0.1, "worker": worker_where()}


def runs(student: str, what: str = "started") -> list[str]:
    """The log entries of ``student``'s task runs (``started`` or ``done``)."""
    return sorted(p.name for p in _log_dir().glob(f"{what}-{student}-*"))


def install_client_fakes(setattr, merges_log: Path) -> None:
    """``setattr``: ``monkeypatch.setattr`` (or plain ``setattr`` in a child process)."""
    from labkit.course import cluster, pipeline

    real_merge = cluster.merge_result

    def merge(course, lab, student, payload, mark=None):
        res = real_merge(course, lab, student, payload, mark)
        with open(merges_log, "a") as f:
            f.write(f"{lab} {student}\n")
        return res

    setattr(cluster, "grade_task", fake_grade_task)
    setattr(pipeline, "_templates", lambda labs, graders, **kw: {lab: b"" for lab in labs})
    setattr(pipeline, "_install_course", lambda template, course, lab: False)
    setattr(cluster, "merge_result", merge)


class Sub:
    def __init__(self, lab: str, student: str, path: Path):
        self.lab, self.student, self.path = lab, student, path


LAB = "lab00_setup"


def write_class(folder: Path, students: dict) -> list[Sub]:
    """``students``: name -> the fake notebook's spec. One lab; an empty gradebook.db in its course."""
    subs = []
    for name, spec in sorted(students.items()):
        path = folder / "submissions" / name / f"{LAB}.ipynb"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(spec))
        subs.append(Sub(LAB, name, path))
    course = folder / "out" / "nbgrader" / LAB
    course.mkdir(parents=True, exist_ok=True)
    (course / "gradebook.db").touch()
    return subs


def grade(folder: Path, subs: list[Sub], address: str, stats: dict | None = None):
    from labkit.course import cluster
    from labkit.course.settings import GradingSettings

    return cluster.grade_on_cluster(
        subs, [LAB], [], [], {}, {LAB: str(folder / "out" / "nbgrader" / LAB)}, repo_root=Path(__file__).parents[1],
        settings=GradingSettings(timeout=60, memory_limit_gb=0, sandbox=False, feedback=False), jobs=1,
        verbose=False, scheduler=address, out_dir=folder / "out", stats=stats)


CHILD = """
import os, signal, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
import cluster_fakes
from labkit.course import cluster

folder, address, die_after = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
cluster_fakes.install_client_fakes(setattr, folder / "merges.log")
real_record, merged = cluster.Manifest.record, []

def record(self, *args, **kw):
    merged.append(1)
    if len(merged) == die_after:  # the gradebook holds this merge; its manifest line is never written
        os.kill(os.getpid(), signal.SIGKILL)
    return real_record(self, *args, **kw)

cluster.Manifest.record = record
subs = cluster_fakes.write_class(folder, {students!r})
cluster_fakes.grade(folder, subs, address)
"""
