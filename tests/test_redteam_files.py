"""Red team, issue 23 items 1 and 4: the grader's own files and the submissions folder.

Two kinds of attack that the first red-team suite (tests/test_redteam.py) did not have:

* **the channel**: a kernel plants symlinks where the grader used to write each call's inputs and read its
  reply (``call-N.in.tmp`` -> a host file), FIFOs and links to ``/dev/zero`` where it read replies, tries to
  plant links in the grader's channel folder, and answers over the channel with a reply that never ends
  or never comes. The grader now talks over a socket in a folder the sandbox sees read-only
  (``labkit/course/channel.py``): host files stay unchanged and each bad reply fails only its own test.
* **the submissions folder**: notebooks and student folders that are symlinks (to the instructor's source
  notebook, to a classmate's, to ``solutions/``), a dangling link, a FIFO, names that collide once
  reduced (``zoë`` / ``zoé``) and hidden names (``...``, ``.hidden``). Nothing is followed, every folder
  gets its own row, and the run goes on.

The quick tests (discovery on a crafted folder, no grading) run by default; the real ``labkit grade`` run
(lab 01, honest and blank controls graded exactly, a grading process killed in the middle) is marked
``extended``. docs/instructors.md ("Threat model") names the test behind each row.
"""

from __future__ import annotations

import copy
import os
import secrets
import signal
import stat
import threading
import time
from pathlib import Path

import nbformat
import pytest

from labkit.course import discover
from labkit.errors import LabkitError

from conftest import copy_solution_and_release, grade_folder

REPO = Path(__file__).resolve().parents[1]

# lab 01's autograded points, read from the release (its graded code cells): what an honest notebook scores
FULL01 = float(sum(c.metadata["nbgrader"]["points"] for c in nbformat.read(str(REPO / "notebooks" / "lab01_forward.ipynb"),
                                                                           as_version=4).cells
                   if c.cell_type == "code" and (c.metadata.get("nbgrader") or {}).get("grade")))

LAB = "lab01_forward"
TOKEN = "lkrf" + secrets.token_hex(4)
ZOE_1, ZOE_2 = "zo\u00eb", "zo\u00e9"  # zoë, zoé: both reduce to "zoe"


# --- discovery on its own (fast) ---------------------------------------------------------------------------

def _notebook_text(kind: str = "blank") -> str:
    src = REPO / ("notebooks" if kind == "blank" else f"solutions/{LAB}") / f"{LAB}.ipynb"
    return src.read_text(encoding="utf-8")


@pytest.fixture
def crafted(tmp_path):
    """A submissions folder holding every odd entry, beside one ordinary student."""
    subs, elsewhere = tmp_path / "subs", tmp_path / "elsewhere"
    subs.mkdir()
    elsewhere.mkdir()
    (elsewhere / f"{LAB}.ipynb").write_text(_notebook_text("solution"))
    for name in ("alice", ZOE_1, ZOE_2, "...", ".hidden", "linked_nb", "fifo", "dangling"):
        (subs / name).mkdir()
    for name in ("alice", ZOE_1, ZOE_2, "...", ".hidden"):
        (subs / name / f"{LAB}.ipynb").write_text(_notebook_text())
    (subs / "linked_nb" / f"{LAB}.ipynb").symlink_to(elsewhere / f"{LAB}.ipynb")
    os.mkfifo(subs / "fifo" / f"{LAB}.ipynb")
    (subs / "dangling" / f"{LAB}.ipynb").symlink_to(tmp_path / "gone.ipynb")
    (subs / "linked_folder").symlink_to(elsewhere, target_is_directory=True)
    (subs / f"flat_{LAB}.ipynb").symlink_to(elsewhere / f"{LAB}.ipynb")
    (subs / "alice" / "extra.ipynb").symlink_to(subs / ZOE_1 / f"{LAB}.ipynb")  # beside a real notebook
    return subs


def test_discovery_follows_no_link_and_reads_no_special_file(crafted):
    found = discover.discover(crafted, [LAB])
    graded = {s.student: s.path for s in found.subs}
    empty = dict(found.empty)
    for student in ("linked-nb", "fifo", "dangling", "linked-folder", "flat"):
        assert student not in graded and student in empty, (student, found.empty)
    assert "symbolic link to elsewhere" in empty["linked-nb"] and "not graded" in empty["linked-nb"]
    assert "dangling" in empty["dangling"]
    assert "not a regular file" in empty["fifo"]
    assert "symbolic link" in empty["linked-folder"] and "symbolic link" in empty["flat"]
    assert graded["alice"].name == f"{LAB}.ipynb"  # her link beside it is skipped, and said on her row
    assert any("extra.ipynb is a symbolic link" in n for n in found.notes["alice"])


def test_colliding_and_hidden_names_each_get_their_own_row(crafted):
    found = discover.discover(crafted, [LAB])
    students = [s.student for s in found.subs] + [s for s, _ in found.empty]
    assert len(students) == len(set(students)) == 10  # one row per entry, none shared
    zoes = sorted(s for s in students if s.startswith("zoe"))
    assert len(zoes) == 2 and all(len(z) == len("zoe-123456") for z in zoes), zoes
    ids, _ = discover.assign_ids([ZOE_1, ZOE_2])
    assert discover.assign_ids([ZOE_2, ZOE_1])[0] == ids  # stable: a hash of the name, not an order
    assert discover.assign_ids([ZOE_1])[0] == {ZOE_1: "zoe"}  # alone, the plain id
    assert discover.assign_ids(["zoe", ZOE_1])[0]["zoe"] == "zoe"  # an exact name keeps its id
    assert "hidden" in students and any(s.startswith("student-") for s in students)
    assert any("also reduces to 'zoe'" in n for z in zoes for n in found.notes[z])
    assert any("no letter or digit" in n for s, ns in found.notes.items() for n in ns)
    assert any("hidden" in n for n in found.notes["hidden"])


def test_read_submission_takes_only_a_small_regular_file(crafted, monkeypatch):
    assert discover.read_submission(crafted / "alice" / f"{LAB}.ipynb").startswith(b"{")
    with pytest.raises(LabkitError, match="symbolic link"):
        discover.read_submission(crafted / "linked_nb" / f"{LAB}.ipynb")
    t0 = time.monotonic()
    with pytest.raises(LabkitError, match="not a regular file"):
        discover.read_submission(crafted / "fifo" / f"{LAB}.ipynb")  # no writer: a plain open would block
    assert time.monotonic() - t0 < 2
    monkeypatch.setattr(discover, "MAX_NOTEBOOK_BYTES", 1000)
    with pytest.raises(LabkitError, match="limit"):
        discover.read_submission(crafted / "alice" / f"{LAB}.ipynb")


# --- one real grading run (extended) -----------------------------------------------------------------------

# Planted in the kernel's folder at the names the grader used to use, and in the grader's channel folder.
PLANT = """
import glob, os
_host, _new = "{HOST}", "{NEW}"
_planted = 0
for _n in range(1, 60):
    for _suffix, _target in ((".in.tmp", _host), (".in", _new), (".out.tmp", _host), (".out", _host)):
        try:
            os.symlink(_target, f"call-{_n}{_suffix}")
            _planted += 1
        except OSError:
            pass
print("planted", _planted)
for _folder in glob.glob("/tmp/lkc-*"):  # the grader's channel folder, seen read-only
    for _name in ("call-1.in.tmp", "call-1.out", "x.sock"):
        try:
            os.symlink(_host, os.path.join(_folder, _name))
            print("PLANTED IN THE CHANNEL", _name)
        except OSError as _e:
            print("could not plant in the channel:", type(_e).__name__)
"""
# The reply side: FIFOs / /dev/zero at the old reply names, and a kernel_side.serve that answers over the
# channel with a reply that never ends (2**40 bytes announced, zeros streamed) or never comes.
BAD_REPLY = """
import os, socket, struct, threading, time
import labkit.course.kernel_side as _ks
for _n in range(1, 60):
    try:
        {OLD}
    except OSError:
        pass
def _bad(namespace, name, address, token):
    _s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    _s.connect(address)
    _s.sendall(token.encode())
    _s.recv(1 << 20)
    def _hold():
        try:
            {REPLY}
        except OSError:
            pass
    threading.Thread(target=_hold, daemon=True).start()
_ks.serve = _bad
"""
DEV_ZERO = dict(OLD='os.symlink("/dev/zero", f"call-{_n}.out")',
                REPLY='_s.sendall(struct.pack("<Q", 2 ** 40))\n            '
                      'while True:\n                _s.sendall(bytes(1 << 20))')
FIFO = dict(OLD='os.mkfifo(f"call-{_n}.out")',
            REPLY='_s.sendall(struct.pack("<Q", 100) + b"x")\n            time.sleep(600)')
# Its grading process is killed from outside (as the out-of-memory killer would) while it sleeps.
KILL_ME = """
import subprocess, sys, time
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", "{TOKEN}-killme"])
time.sleep(100)
"""


def _with_first_answer(code: str, solved: bool) -> nbformat.NotebookNode:
    """The release (or the solution) with ``code`` run first, in the first answer cell."""
    base = nbformat.read(str(REPO / "notebooks" / f"{LAB}.ipynb"), as_version=4)
    sol = nbformat.read(str(REPO / "solutions" / LAB / f"{LAB}.ipynb"), as_version=4)
    answers = {c.metadata["nbgrader"]["grade_id"]: "\n".join(ln for ln in c.source.splitlines() if "SOLUTION" not in ln)
               for c in sol.cells if c.metadata.get("nbgrader", {}).get("solution") and c.cell_type == "code"}
    nb = copy.deepcopy(base)
    first = True
    for cell in nb.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if gid in answers and cell.cell_type == "code":
            cell.source = (code + "\n" if first else "") + (answers[gid] if solved else cell.source)
            first = False
    return nb


def _kill_the_grader_of(marker: str, stop: threading.Event, killed: list) -> None:
    """Find the process that carries ``marker`` and SIGKILL the grading worker above it."""
    while not stop.is_set() and not killed:
        for pid in (p for p in os.listdir("/proc") if p.isdigit()):
            try:
                if marker.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes():
                    continue
                while pid not in ("0", "1"):
                    pid = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]  # the parent
                    if b"multiprocessing" in Path(f"/proc/{pid}/cmdline").read_bytes():
                        os.kill(int(pid), signal.SIGKILL)
                        killed.append(pid)
                        return
            except (OSError, IndexError):
                continue
        time.sleep(0.5)


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("redteam-files")
    subs = tmp / "subs"
    copy_solution_and_release(subs, [LAB])  # the controls: "solution" full marks and "blank" 0
    host = tmp / f"{TOKEN}-host-secret"
    host.write_text("the grader's file\n")
    os.chmod(host, 0o600)
    new = tmp / f"{TOKEN}-new-file"
    old = lambda kw: BAD_REPLY.replace("{OLD}", kw["OLD"]).replace("{REPLY}", kw["REPLY"])  # noqa: E731
    students = {
        "symlink-write": _with_first_answer(PLANT.replace("{HOST}", str(host)).replace("{NEW}", str(new)), solved=True),
        "reply-dev-zero": _with_first_answer(old(DEV_ZERO), solved=False),
        "reply-fifo": _with_first_answer(old(FIFO), solved=False),
        "kill-me": _with_first_answer(KILL_ME.replace("{TOKEN}", TOKEN), solved=False),
        ZOE_1: nbformat.read(str(subs / "solution" / f"{LAB}.ipynb"), as_version=4),
        ZOE_2: nbformat.read(str(subs / "blank" / f"{LAB}.ipynb"), as_version=4),
        "...": nbformat.read(str(subs / "solution" / f"{LAB}.ipynb"), as_version=4),
        ".hidden": nbformat.read(str(subs / "blank" / f"{LAB}.ipynb"), as_version=4),
    }
    for name, nb in students.items():
        (subs / name).mkdir()
        nbformat.write(nb, str(subs / name / f"{LAB}.ipynb"))
    for name in ("link-source", "link-classmate", "dangling"):
        (subs / name).mkdir()
    (subs / "link-source" / f"{LAB}.ipynb").symlink_to(REPO / "solutions" / LAB / f"{LAB}.ipynb")
    (subs / "link-classmate" / f"{LAB}.ipynb").symlink_to(Path("..") / "solution" / f"{LAB}.ipynb")
    (subs / "dangling" / f"{LAB}.ipynb").symlink_to(tmp / "nothing-here.ipynb")
    (subs / "link-folder").symlink_to(REPO / "solutions" / LAB, target_is_directory=True)
    (subs / f"linkflat_{LAB}.ipynb").symlink_to(subs / "solution" / f"{LAB}.ipynb")
    host_before = (host.read_bytes(), stat.S_IMODE(host.stat().st_mode))
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_the_grader_of, args=(f"{TOKEN}-killme", stop, killed), daemon=True)
    killer.start()
    t0 = time.monotonic()
    try:
        results = grade_folder(subs, tmp / "out", [LAB], jobs=2, timeout=40, memory_limit_gb=2, verbose=False)
    finally:
        stop.set()
    seconds = time.monotonic() - t0
    for r in results:
        print(r.line()[:300])
    return {"by": {r.student: r for r in results}, "results": results, "out": tmp / "out", "host": host,
            "host_before": host_before, "new": new, "killed": killed, "seconds": seconds, "tmp": tmp}


def _printed(graded, student: str) -> str:
    path = graded["out"] / "nbgrader" / LAB / "autograded" / student / LAB / f"{LAB}.ipynb"
    nb = nbformat.read(str(path), as_version=4)
    return "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                     for o in c.get("outputs", []) if o.get("output_type") == "stream")


@pytest.mark.nbgrader
@pytest.mark.slow
@pytest.mark.extended
class TestOneGradingRun:
    def test_controls_are_graded_exactly(self, graded):
        by = graded["by"]
        assert (by["solution"].score, by["solution"].max_score, by["solution"].status) == (FULL01, FULL01, "graded"), by["solution"].line()
        assert (by["blank"].score, by["blank"].max_score, by["blank"].status) == (0, FULL01, "graded"), by["blank"].line()

    def test_symlinks_in_the_sandbox_never_reach_a_host_file(self, graded):
        assert (graded["host"].read_bytes(), stat.S_IMODE(graded["host"].stat().st_mode)) == graded["host_before"]
        assert not graded["new"].exists() and not os.path.lexists(graded["new"])
        text = _printed(graded, "symlink-write")
        assert "planted 236" in text  # every old name was a link to the host file: none was used
        assert "PLANTED IN THE CHANNEL" not in text and "could not plant in the channel: OSError" in text
        assert graded["by"]["symlink-write"].score == FULL01  # its honest answers still went through the channel

    @pytest.mark.parametrize("student, phrase", [("reply-dev-zero", "limit 256 MB"), ("reply-fifo", "in time")])
    def test_an_endless_or_silent_reply_fails_only_its_own_tests(self, graded, student, phrase):
        r = graded["by"][student]
        assert r.score == 0 and r.status in ("graded", "needs review"), r.line()
        path = graded["out"] / "nbgrader" / LAB / "autograded" / student / LAB / f"{LAB}.ipynb"
        assert phrase in path.read_text(encoding="utf-8")

    def test_a_killed_grading_process_costs_only_its_own_row(self, graded):
        assert graded["killed"], "the grading process of kill-me was never found"
        r = graded["by"]["kill-me"]
        assert r.status == "failed" and any("grading process died" in n for n in r.notes), r.line()
        assert (graded["out"] / "scores.csv").exists()
        assert graded["by"]["solution"].score == FULL01 and graded["by"]["symlink-write"].score == FULL01

    @pytest.mark.parametrize("student", ["link-source", "link-classmate", "dangling", "link-folder", "linkflat"])
    def test_a_linked_or_dangling_submission_is_reported_not_graded(self, graded, student):
        r = graded["by"][student]
        assert (r.status, r.score) == ("no submission", 0), r.line()
        assert any("symbolic link" in n for n in r.notes), r.notes

    def test_colliding_and_hidden_names_are_all_graded(self, graded):
        by = graded["by"]
        zoes = sorted((s for s in by if s.startswith("zoe")), key=lambda s: by[s].score)
        assert len(zoes) == 2 and [by[z].score for z in zoes] == [0, FULL01], [by[z].line() for z in zoes]
        dots = [s for s in by if s.startswith("student-")]
        assert len(dots) == 1 and by[dots[0]].score == FULL01 and any("no letter" in n for n in by[dots[0]].notes)
        assert by["hidden"].score == 0 and by["hidden"].status == "graded" and any("hidden" in n for n in by["hidden"].notes)
        csv_text = (graded["out"] / "scores.csv").read_text(encoding="utf-8")
        assert len(csv_text.strip().splitlines()) == 1 + len(graded["results"]) == 1 + 15

    def test_run_time_is_recorded(self, graded):
        print(f"\nfile red-team run: {len(graded['results'])} rows in {graded['seconds']:.0f} s (2 workers)")
        assert graded["seconds"] > 0


def test_links_at_the_kernels_socket_paths_are_removed_before_each_start(tmp_path):
    """The kernel's unix sockets live in the student's work folder; before every (re)start the grader removes
    whatever the student's code left at their paths, links included, and never touches a link's target."""
    import os
    import types

    from labkit.course.trusted import clear_ipc_paths

    host = tmp_path / "host-file"
    host.write_text("the grader's")
    work = tmp_path / "work"
    work.mkdir()
    km = types.SimpleNamespace(transport="ipc", ip=str(work / "kernel"), shell_port=1, iopub_port=2, stdin_port=3,
                               control_port=4, hb_port=5)
    os.symlink(host, work / "kernel-1")  # a link to a host path
    os.symlink(tmp_path / "nowhere", work / "kernel-2")  # a dangling link
    os.mkfifo(work / "kernel-3")
    (work / "kernel-4").mkdir()  # a folder: cannot be removed, the kernel then fails its own start
    removed = clear_ipc_paths(km)
    assert sorted(removed) == [str(work / f"kernel-{k}") for k in (1, 2, 3)]
    assert not os.path.lexists(work / "kernel-1") and not os.path.lexists(work / "kernel-2")
    assert host.read_text() == "the grader's"
    assert clear_ipc_paths(types.SimpleNamespace(transport="tcp")) == []
