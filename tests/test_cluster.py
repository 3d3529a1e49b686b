"""`labkit grade --scheduler` (issue 17): the per-submission work as tasks on a real Dask cluster.

The slow tests build a class of 40 submissions over lab00_setup (1 point) and lab01_forward (11 points):
honest, blank, wrong, partial and broken students (uploads cut short, an endless loop) with known scores,
and grade it on a ``distributed.LocalCluster`` of two single-threaded worker processes, three times:

1. ``labkit grade`` in a process of its own, SIGKILLed after 8 results are merged (an interrupted run);
2. the same command again, in this process: it grades only what is missing, and one of the two workers is
   SIGKILLed while it grades a notebook (its nanny starts a fresh one);
3. once more: nothing to grade.

Every score must be right, every notebook merged into the client's gradebook exactly once (one manifest
line and one gradebook submission per student and lab; the notebooks the dead worker held were graded by the
other one), the formgrader must see ordinary autograded submissions, and feedback must be complete.
About 4 minutes on two free cores (35 notebooks need a kernel, ~10 s of CPU each, and the loop costs its
timeout); twice that on a machine shared with other jobs.

The fast tests cover the pieces without grading on a cluster: the manifest, the client's merge into
nbgrader's gradebook, a worker that cannot sandbox, the command-line options, the benchmark's arithmetic.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import signal
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

from labkit import course
from labkit.course import cluster
from labkit.errors import LabkitError

REPO = Path(__file__).resolve().parents[1]
LABS = ["lab00_setup", "lab01_forward"]
FULL = {"lab00_setup": 1.0, "lab01_forward": 11.0}
TIMEOUT = 30  # seconds per cell: what each endless loop costs; every real cell of both labs runs far below it

distributed = pytest.importorskip("distributed", reason="dask.distributed (pip install 'labkit[cluster]')")


def cluster_run(test):
    """The tests of the module fixture's three runs (its minutes are charged to the first test)."""
    for mark in (pytest.mark.slow, pytest.mark.nbgrader, pytest.mark.extended, pytest.mark.timeout(1800)):
        test = mark(test)
    return test


def _release(lab):
    return nbformat.read(str(REPO / "notebooks" / f"{lab}.ipynb"), as_version=4)


def _answers(lab):
    src = nbformat.read(str(REPO / "solutions" / lab / f"{lab}.ipynb"), as_version=4)
    return {c.metadata["nbgrader"]["grade_id"]: c.source for c in src.cells
            if (c.metadata.get("nbgrader") or {}).get("solution")}


def solved(lab, only=None, **replace):
    """The release of ``lab`` with the answers a student would type (the solution without its markers):
    every answer, or only the grade ids in ``only``; ``replace`` gives other sources for some answers."""
    nb = copy.deepcopy(_release(lab))
    answers = _answers(lab)
    for cell in nb.cells:
        gid = (cell.metadata.get("nbgrader") or {}).get("grade_id")
        if gid in answers and (only is None or gid in only or gid in replace):
            text = replace.get(gid, answers[gid])
            cell.source = "\n".join(ln for ln in text.splitlines() if "### " not in ln)
    return nb


LOOP = {"lab00_setup": {"to_unit_range": "def to_unit_range(x):\n    while True:  # never returns\n        pass\n"},
        "lab01_forward": {"snr": "def snr(alpha_bars):\n    while True:  # forgot to update the loop variable\n"
                                 "        pass\n"}}


def make(kind: str, lab: str, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{lab}.ipynb"
    if kind == "truncated":  # an upload cut short: not JSON
        path.write_text(nbformat.writes(solved(lab))[:4000])
        return
    nb = {"honest": lambda: solved(lab),
          "blank": lambda: _release(lab),
          "wrong": lambda: solved(lab, to_unit_range="def to_unit_range(x):\n    return x\n"),
          "partial1": lambda: solved(lab, only={"snr"}),
          "partial2": lambda: solved(lab, only={"alpha_bars_from_betas", "snr"}),
          "loop": lambda: solved(lab, **LOOP[lab])}[kind]()
    nbformat.write(nb, str(path))


@dataclass
class Case:
    student: str
    lab: str
    kind: str
    score: float
    status: str


EXPECTED = {  # kind -> (score, status) per lab (a failed submission has no score: None)
    "lab00_setup": {"honest": (1, "graded"), "blank": (0, "graded"), "wrong": (0, "graded"), "loop": (0, "graded"),
                    "truncated": (None, "failed")},
    "lab01_forward": {"honest": (11, "graded"), "blank": (0, "graded"), "partial1": (1, "graded"),
                      "partial2": (2, "graded"), "loop": (10, "graded"), "truncated": (None, "failed")},
}
# Mostly lab00 (one small exercise); the endless loop costs TIMEOUT seconds of a worker, so there is one.
CLASS = {"lab00_setup": ["honest"] * 11 + ["blank"] * 8 + ["wrong"] * 5 + ["truncated"] * 4,
         "lab01_forward": ["honest"] * 4 + ["blank"] * 2 + ["partial1"] * 2 + ["partial2"] * 2 + ["loop", "truncated"]}
CASES = [Case(f"s{i:02d}-{kind}", lab, kind, *EXPECTED[lab][kind])
         for lab in LABS for i, kind in enumerate(CLASS[lab])]
assert len(CASES) >= 40 and len({(c.student, c.lab) for c in CASES}) == len(CASES)


def _submissions(cases, folder: Path) -> None:
    for c in cases:
        make(c.kind, c.lab, folder / c.student)
    (folder / "z-nobody").mkdir(parents=True, exist_ok=True)  # an empty folder: "no submission" in each lab


def _manifest_lines(out: Path) -> list[dict]:
    path = out / cluster.MANIFEST_NAME
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def _gradebook_rows(out: Path, lab: str) -> list[tuple[str, float]]:
    """(student, autograded score) of every submission in the lab's gradebook, straight from SQLite."""
    db = out / "nbgrader" / lab / "gradebook.db"
    with sqlite3.connect(str(db)) as con:
        rows = con.execute(
            "SELECT s.student_id, SUM(COALESCE(g.auto_score, 0)) FROM submitted_assignment s "
            "JOIN assignment a ON s.assignment_id = a.id "
            "JOIN submitted_notebook n ON n.assignment_id = s.id JOIN grade g ON g.notebook_id = n.id "
            "JOIN grade_cells c ON g.cell_id = c.id "
            "WHERE a.name = ? AND c.cell_type = 'code' GROUP BY s.id ORDER BY s.student_id", (lab,)).fetchall()
    return [(s, float(v)) for s, v in rows]


class Killer(threading.Thread):
    """Waits until a few results are merged, then SIGKILLs a worker that is grading a notebook (the nanny
    starts a fresh one). Records the worker's address and the keys it held."""

    def __init__(self, client, out: Path, after: int = 4):
        super().__init__(daemon=True)
        self.client, self.out, self.after = client, out, after
        self.victim, self.keys, self.error = None, [], None
        self.stop = threading.Event()

    def run(self):
        try:
            while not self.stop.is_set() and len(_manifest_lines(self.out)) < self.after:
                time.sleep(0.5)
            while not self.stop.is_set():
                busy = {w: ks for w, ks in self.client.processing().items() if ks}
                if busy:
                    time.sleep(2)  # well into its notebook (each takes several seconds)
                    busy = {w: ks for w, ks in self.client.processing().items() if ks}
                if busy:
                    addr, keys = next(iter(busy.items()))
                    pid = self.client.run(os.getpid, workers=[addr])[addr]
                    os.kill(pid, signal.SIGKILL)
                    self.victim, self.keys = addr, list(keys)
                    return
                time.sleep(0.5)
        except Exception as exc:  # reported by the test
            self.error = exc


GRADE_IN_A_SUBPROCESS = """
import sys
from labkit import course
course.grade_submissions(sys.argv[1], sys.argv[2], {labs!r}, repo_root={repo!r}, timeout={timeout},
                         scheduler=sys.argv[3], verbose=False)
"""


def _interrupted_run(subs: Path, out: Path, address: str, after: int) -> float:
    """`labkit grade --scheduler ADDRESS` in a process of its own, SIGKILLed once ``after`` submissions are in
    the manifest (the instructor's laptop dies mid-run). Returns its seconds."""
    import subprocess
    import sys

    code = GRADE_IN_A_SUBPROCESS.format(labs=LABS, repo=str(REPO), timeout=TIMEOUT)
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", code, str(subs), str(out), address], cwd=str(REPO),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        while len(_manifest_lines(out)) < after:
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.monotonic() - t0 < 600, "the first run merged too little in 10 minutes"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the client and its local helper processes, mid-run
        proc.wait()
        proc.stderr.close()
    return time.monotonic() - t0


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Run 1 (a separate client process) is killed after 8 merged results; run 2 grades the rest while one
    of the two workers is SIGKILLed mid-notebook; run 3 changes nothing."""
    import dask
    from distributed import Client, LocalCluster

    tmp = tmp_path_factory.mktemp("cluster")
    subs, out = tmp / "submissions", tmp / "out"
    _submissions(CASES, subs)
    mp = pytest.MonkeyPatch()
    mp.setenv("LABKIT_CACHE", str(tmp / "cache"))
    mp.delenv("LABKIT_DATA", raising=False)  # synthetic digits: fast and the same everywhere
    runs = {}
    try:
        with dask.config.set({"distributed.scheduler.allowed-failures": 3}):
            lc = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                              silence_logs=logging.ERROR)
        client = Client(lc)
        try:
            seconds = _interrupted_run(subs, out, lc.scheduler_address, after=8)
            runs["interrupted"] = dict(seconds=seconds, manifest=_manifest_lines(out))
            killer = Killer(client, out, after=len(runs["interrupted"]["manifest"]) + 3)
            killer.start()
            try:
                t0 = time.monotonic()
                stats = {}
                results = course.grade_submissions(subs, out, LABS, repo_root=REPO, timeout=TIMEOUT,
                                                   scheduler=lc.scheduler_address, stats=stats)
                runs["resumed"] = dict(results=results, stats=stats, seconds=time.monotonic() - t0,
                                       manifest=_manifest_lines(out))
            finally:
                killer.stop.set()
                killer.join(30)
            mtimes = {p: p.stat().st_mtime_ns for p in (out / "nbgrader").rglob("autograded/*/*/*.ipynb")}
            t0 = time.monotonic()
            stats = {}
            results = course.grade_submissions(subs, out, LABS, repo_root=REPO, timeout=TIMEOUT,
                                               scheduler=lc.scheduler_address, stats=stats)
            runs["again"] = dict(results=results, stats=stats, seconds=time.monotonic() - t0,
                                 manifest=_manifest_lines(out), mtimes_before=mtimes,
                                 mtimes_after={p: p.stat().st_mtime_ns for p in mtimes})
        finally:
            client.close()
            lc.close()
    finally:
        mp.undo()
    first = runs["interrupted"]
    print(f"\ninterrupted run: {len(first['manifest'])} merged in {first['seconds']:.0f} s; "
          f"resumed run: {runs['resumed']['stats']['merged']} in {runs['resumed']['seconds']:.0f} s, "
          f"stats {json.dumps(runs['resumed']['stats'])}; killed {killer.victim} holding {killer.keys}; "
          f"run again: {runs['again']['seconds']:.1f} s")
    return runs, killer, out


@cluster_run
def test_every_score_and_status_is_right(graded):
    runs, _, out = graded
    got = {(r.student, r.lab): r for r in runs["resumed"]["results"]}
    for c in CASES:
        r = got[(c.student, c.lab)]
        assert (r.score, r.max_score, r.status) == (c.score, FULL[c.lab], c.status), (c, r.notes)
    assert [(r.student, r.lab, r.status) for r in runs["resumed"]["results"] if r.student == "z-nobody"] == \
        [("z-nobody", lab, "no submission") for lab in LABS]
    loops = [got[(c.student, c.lab)] for c in CASES if c.kind == "loop"]
    assert all(any(f"timed out after {TIMEOUT} s" in n for n in r.notes) for r in loops), [r.notes for r in loops]
    truncated = [got[(c.student, c.lab)] for c in CASES if c.kind == "truncated"]
    assert all(any("unreadable notebook" in n for n in r.notes) for r in truncated)
    honest01 = [got[(c.student, c.lab)] for c in CASES if c.lab == "lab01_forward" and c.kind == "honest"]
    assert all(r.manual_max == 4 and r.manual_score is None for r in honest01)  # written answers: by hand
    csv = (out / "scores.csv").read_text().splitlines()
    assert len(csv) == 1 + len(CASES) + len(LABS)


@cluster_run
def test_after_an_interruption_only_what_is_missing_is_graded(graded):
    runs, _, _ = graded
    before = runs["interrupted"]["manifest"]
    stats = runs["resumed"]["stats"]
    assert 8 <= len(before) < len(CASES)
    assert stats["skipped"] == len(before) and stats["submitted"] == stats["merged"] == len(CASES) - len(before), stats
    assert runs["resumed"]["manifest"][:len(before)] == before  # what was merged stays as it was


@cluster_run
def test_a_worker_was_killed_mid_notebook_and_its_work_went_elsewhere(graded):
    runs, killer, _ = graded
    assert killer.error is None, killer.error
    assert killer.victim and killer.keys, "no worker was killed during the run"
    by_key = {cluster.task_key(m["lab"], m["student"], m["sha256"]): m for m in runs["resumed"]["manifest"]}
    for key in killer.keys:
        assert key in by_key, key  # graded in the end ...
        assert by_key[key]["worker"] != f"worker {killer.victim}", by_key[key]  # ... by another worker
    stats = runs["resumed"]["stats"]
    assert stats["failed_tasks"] == 0, stats


@cluster_run
def test_every_notebook_is_graded_exactly_once(graded):
    runs, _, out = graded
    keys = [(m["lab"], m["student"]) for m in runs["resumed"]["manifest"]]
    assert sorted(keys) == sorted((c.lab, c.student) for c in CASES)  # each once, none missing
    for lab in LABS:
        rows = _gradebook_rows(out, lab)
        expect = sorted((c.student, c.score) for c in CASES if c.lab == lab and c.kind != "truncated")
        assert rows == expect, lab  # one submission per student (GROUP BY), its score right


@cluster_run
def test_the_formgrader_sees_ordinary_autograded_submissions(graded):
    _, _, out = graded
    from labkit.course.nbgrader_setup import nbgrader_api

    for lab in LABS:
        subs = {s["student"]: s for s in nbgrader_api(out / "nbgrader" / lab).get_submissions(lab)}
        for c in CASES:
            if c.lab != lab or c.kind == "truncated":
                continue
            s = subs[c.student]
            assert s["autograded"] and s["submitted"] and s["score"] == c.score, s


@cluster_run
def test_feedback_is_complete(graded):
    _, _, out = graded
    for c in CASES:
        html = out / "feedback" / c.student / f"{c.lab}.html"
        assert html.exists() == (c.kind != "truncated"), c
    text = (out / "feedback" / "s00-honest" / "lab01_forward.html").read_text()
    assert "HIDDEN TESTS" not in text and "seed=3" not in text


@cluster_run
def test_running_again_grades_nothing(graded):
    runs, _, out = graded
    again = runs["again"]
    assert again["stats"]["submitted"] == 0 and again["stats"]["skipped"] == len(CASES), again["stats"]
    assert again["manifest"] == runs["resumed"]["manifest"]
    assert again["mtimes_after"] == again["mtimes_before"]
    first = sorted((r.student, r.lab, r.score, r.status) for r in runs["resumed"]["results"])
    assert sorted((r.student, r.lab, r.score, r.status) for r in again["results"]) == first


# --- the pieces, in seconds ------------------------------------------------------------------------


def _result(student="ann", lab="lab00_setup", score=1.0):
    return course.GradeResult(student, lab, score, 1.0, "graded", [])


def test_manifest_keeps_the_last_record_and_survives_a_torn_line(tmp_path):
    path = tmp_path / cluster.MANIFEST_NAME
    m = cluster.Manifest(path)
    m.record("lab00_setup", "ann", "a" * 64, "g1", _result(score=0.0), autograded=False)
    m.record("lab00_setup", "ann", "b" * 64, "g1", _result(score=1.0), autograded=False)
    m.record("lab00_setup", "bob", "c" * 64, "g1", _result("bob"), autograded=False)
    with open(path, "ab") as f:
        f.write(b'{"lab": "lab00_setup", "student": "cy')  # the client died while writing this line
    m2 = cluster.Manifest(path)
    assert m2.lines == 3 and path.read_bytes().endswith(b"\n")
    assert m2.lookup("lab00_setup", "ann", "a" * 64, "g1") is None  # an older upload of ann's
    assert m2.lookup("lab00_setup", "ann", "b" * 64, "g1")["result"]["score"] == 1.0
    assert m2.lookup("lab00_setup", "ann", "b" * 64, "g2") is None  # graded by other code or settings
    assert m2.lookup("lab00_setup", "cy", "d" * 64, "g1") is None
    m2.record("lab00_setup", "cy", "d" * 64, "g1", _result("cy"), autograded=False)
    assert [json.loads(x)["student"] for x in path.read_text().splitlines()] == ["ann", "ann", "bob", "cy"]


def test_manifest_needs_the_autograded_notebook_still_there(tmp_path):
    m = cluster.Manifest(tmp_path / cluster.MANIFEST_NAME)
    m.record("lab00_setup", "ann", "a" * 64, "g", _result(), autograded=True)
    course_dir = tmp_path / "nbgrader" / "lab00_setup"
    assert m.lookup("lab00_setup", "ann", "a" * 64, "g", course_dir) is None  # deleted by hand: grade again
    nb = course_dir / "autograded" / "ann" / "lab00_setup" / "lab00_setup.ipynb"
    nb.parent.mkdir(parents=True)
    nb.write_text("{}")
    assert m.lookup("lab00_setup", "ann", "a" * 64, "g", course_dir) is not None


def test_task_keys_and_fingerprints():
    k = cluster.task_key("lab00_setup", "ann", "ab" * 32)
    assert k == cluster.task_key("lab00_setup", "ann", "ab" * 32) != cluster.task_key("lab00_setup", "bob", "ab" * 32)
    assert k != cluster.task_key("lab00_setup", "ann", "cd" * 32)
    from labkit.course.settings import GradingSettings as S

    g = cluster.grader_fingerprint(REPO, "lab00_setup", S(120, memory_limit_gb=4.0, sandbox=True))
    assert g == cluster.grader_fingerprint(REPO, "lab00_setup", S())
    assert g == cluster.grader_fingerprint(REPO, "lab00_setup", S(feedback=False))  # feedback changes no score
    assert g != cluster.grader_fingerprint(REPO, "lab00_setup", S(timeout=60))
    assert g != cluster.grader_fingerprint(REPO, "lab01_forward", S())
    assert g != cluster.grader_fingerprint(REPO, "lab00_setup", S(sandbox=False))
    assert g != cluster.grader_fingerprint(REPO, "lab00_setup", S(memory_limit_gb=2))
    assert g != cluster.grader_fingerprint(REPO, "lab00_setup", S(notebook_timeout=300))
    # what manifests written before GradingSettings hashed, for the default settings: still valid
    import hashlib

    h = hashlib.sha256((REPO / "solutions" / "lab00_setup" / "lab00_setup.py").read_bytes())
    h.update(json.dumps([cluster.code_fingerprint(), 120, 4.0, True]).encode())
    assert g == h.hexdigest()[:32]


def test_a_worker_that_cannot_sandbox_fails_its_task_in_one_line(monkeypatch):
    why = "bubblewrap (bwrap) is not installed: install bubblewrap ..."
    monkeypatch.setitem(cluster.WORKER_STATE, "probe", why)
    from labkit.course.settings import GradingSettings

    args = ("lab00_setup", "ann", "lab00_setup.ipynb", b"{}", b"", cluster.code_fingerprint())
    with pytest.raises(cluster.WorkerUnfit) as err:
        cluster.grade_task(*args, GradingSettings(60))
    assert str(err.value).endswith(why) and "\n" not in str(err.value)
    assert cluster._task_failure(err.value) == f"not graded: {err.value}"
    monkeypatch.setitem(cluster.WORKER_STATE, "probe", None)
    with pytest.raises(cluster.WorkerUnfit, match="grading code differs"):
        cluster.grade_task(*args[:5], "0" * 64, GradingSettings(60))


def test_killed_worker_message():
    from distributed.scheduler import KilledWorker

    text = cluster._task_failure(KilledWorker("k", None, 3))
    assert "died more than 3 times" in text and "again" in text


def test_cli_takes_a_scheduler_or_a_local_cluster():
    import argparse

    parse = course.add_grade_arguments(argparse.ArgumentParser()).parse_args
    assert parse(["subs", "--scheduler", "tcp://10.0.0.5:8786"]).scheduler == "tcp://10.0.0.5:8786"
    args = parse(["subs", "--cluster", "local:3"])
    assert (args.cluster, args.scheduler) == ("local:3", None)
    assert parse(["subs"]).cluster is None and parse(["subs"]).scheduler is None
    for bad in (["--cluster", "local:0"], ["--cluster", "3"], ["--cluster", "local:2", "--scheduler", "tcp://x:1"]):
        with pytest.raises(SystemExit):
            parse(["subs", *bad])


@pytest.mark.nbgrader
def test_merge_writes_the_gradebook_once_per_student(tmp_path, monkeypatch):
    """The client's merge on a prepared lab00 course: nbgrader's SaveAutoGrades scores the autograded notebook,
    merging again (same or another result) keeps one submission, and the gradebook's score is reported."""
    from nbgrader.api import Gradebook

    lab = "lab00_setup"
    course_dir = tmp_path / lab
    from labkit.course.autograde import prepare_lab

    assert prepare_lab(str(REPO), lab, str(course_dir)) == 1.0
    release = _release(lab)
    passing = nbformat.writes(release).encode()
    failing = copy.deepcopy(release)
    test = next(c for c in failing.cells if (c.metadata.get("nbgrader") or {}).get("grade_id") == "test_to_unit_range")
    test.outputs = [nbformat.v4.new_output("error", ename="CheckFailed", evalue="wrong", traceback=[])]

    def payload(nb_bytes, claimed):
        return {"result": {"student": "ann", "lab": lab, "score": claimed, "max_score": 1.0, "status": "graded",
                           "notes": []}, "submitted": passing, "autograded": {f"{lab}.ipynb": nb_bytes}}

    r1 = cluster.merge_result(course_dir, lab, "ann", payload(passing, 1.0))
    r2 = cluster.merge_result(course_dir, lab, "ann", payload(passing, 1.0))
    assert (r1.score, r1.max_score, r2.score, r1.notes) == (1.0, 1.0, 1.0, [])
    r3 = cluster.merge_result(course_dir, lab, "ann", payload(nbformat.writes(failing).encode(), 1.0))
    assert r3.score == 0.0 and any("the gradebook holds 0.0/1.0" in n for n in r3.notes)  # the gradebook decides
    with Gradebook(f"sqlite:///{course_dir / 'gradebook.db'}") as gb:
        assert [s.student.id for s in gb.assignment_submissions(lab)] == ["ann"]
    assert (course_dir / "autograded" / "ann" / lab / f"{lab}.ipynb").exists()
    assert not [p for p in (course_dir / "autograded" / "ann").iterdir() if p.name.startswith(".")]
    # a failure half-way through the gradebook part leaves nothing of that submission behind (one transaction)
    from nbgrader.preprocessors import SaveAutoGrades

    def boom(self, cell, resources, index):
        if index > 8:
            raise OSError("disk full")
        return SaveAutoGrades_preprocess_cell(self, cell, resources, index)

    SaveAutoGrades_preprocess_cell = SaveAutoGrades.preprocess_cell
    monkeypatch.setattr(SaveAutoGrades, "preprocess_cell", boom)
    with pytest.raises(OSError, match="disk full"):
        cluster.merge_result(course_dir, lab, "cy", payload(passing, 1.0))
    monkeypatch.undo()
    with Gradebook(f"sqlite:///{course_dir / 'gradebook.db'}") as gb:
        assert [s.student.id for s in gb.assignment_submissions(lab)] == ["ann"]
    r4 = cluster.merge_result(course_dir, lab, "bob", {"result": {"student": "bob", "lab": lab, "score": 0.0,
                                                                  "status": "failed", "notes": ["unreadable"]},
                                                       "submitted": None, "autograded": {}})
    assert r4.status == "failed" and not (course_dir / "autograded" / "bob").exists()


@pytest.mark.nbgrader
@pytest.mark.slow
def test_no_worker_can_sandbox_refuses_in_one_line(tmp_path):
    """Workers whose PATH has no bwrap: the run stops before grading, saying why (as the local path does)."""
    from distributed import LocalCluster

    make("honest", "lab00_setup", tmp_path / "subs" / "ann")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0",
                      silence_logs=logging.ERROR, env={"PATH": str(tmp_path / "empty")}) as lc:
        with pytest.raises(LabkitError, match=r"no worker can grade: bubblewrap \(bwrap\) is not installed"):
            course.grade_submissions(tmp_path / "subs", tmp_path / "out", ["lab00_setup"], repo_root=REPO,
                                     scheduler=lc.scheduler_address, verbose=False)
    assert not (tmp_path / "out" / cluster.MANIFEST_NAME).exists()


@pytest.mark.slow
def test_local_cluster_has_single_threaded_workers_and_retries():
    """``--cluster local:N``: N worker processes of one thread each (grading changes os.environ), and a
    task may see ALLOWED_FAILURES worker deaths before Dask gives up on it."""
    client, lc = cluster.connect("local:2")
    try:
        assert sorted(client.nthreads().values()) == [1, 1]
        assert client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.allowed_failures) == \
            cluster.ALLOWED_FAILURES
        assert len(set(client.run(os.getpid).values())) == 2 and os.getpid() not in client.run(os.getpid).values()
    finally:
        client.close()
        lc.close()
    with pytest.raises(LabkitError, match="cannot reach the Dask scheduler"):
        cluster.connect("tcp://127.0.0.1:9", timeout="2s")


def test_benchmark_paper_table():
    """benchmarks/bench_grade.py: 10,000 notebooks on N machines from the measured costs."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_grade", REPO / "benchmarks" / "bench_grade.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = [{"mode": "cluster local:1", "jobs": 1, "worker_s_per_notebook": 10.0, "merge_s_per_notebook": 0.1,
             "feedback_s_per_notebook": 0.2, "fixed_seconds": 20.0},
            {"mode": "cluster local:2", "jobs": 2, "worker_s_per_notebook": 12.0, "merge_s_per_notebook": 0.05,
             "feedback_s_per_notebook": 0.1, "fixed_seconds": 30.0}]
    table = bench.paper_table(rows, [1, 100], per_machine=10).splitlines()
    one, hundred = table[-2].split(" | "), table[-1].split(" | ")
    # 1 machine: 10,000 x 10 s / 10 workers = 2.78 h grading; merging 10,000 x 0.1 s = 0.28 h runs beside it
    assert one[2:5] == ["2.78 h", "0.28 h", "0.14 h"] and one[5] == f"{(30 + 10_000 + 500) / 3600:.2f} h"
    # 100 machines: grading 0.03 h, so the client's serial merge (0.28 h) sets the pace
    assert hundred[2] == "0.03 h" and hundred[5] == f"{(30 + 1000 + 500) / 3600:.2f} h"

