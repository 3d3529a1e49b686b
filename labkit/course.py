"""Build the student notebooks from the lab sources, and grade a folder of submissions with nbgrader.

Layout (one nbgrader assignment per lab; a lab is any folder ``solutions/<lab>/`` holding ``<lab>.py``):

    solutions/<lab>/<lab>.py      the source: a jupytext "percent" script, ``# %% nbgrader={...}`` headers
    solutions/<lab>/<lab>.ipynb   built from it (nbgrader's source notebook, instructor-only: has solutions)
    notebooks/<lab>.ipynb         built by nbgrader generate_assignment: what students get

``build_notebooks`` writes both built forms; ``check_notebooks_fresh`` reports what is stale (a test runs
it). ``grade_submissions`` grades a folder of submitted notebooks in a fresh nbgrader course folder:
restores lost nbgrader metadata, removes duplicate ids, autogrades with finite timeouts, writes feedback
HTML without hidden tests and a CSV of scores, and reports per student what happened.

Command line: ``labkit build`` / ``labkit grade SUBMISSIONS`` (or ``python -m labkit.course build|grade``).
nbgrader, jupytext and nbconvert come with the "instructor" extra: ``pip install -e '.[instructor]'``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from labkit.errors import LabkitError

SOURCE_DIR = "solutions"
STUDENT_DIR = "notebooks"
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
DEFAULT_TIMEOUT = 120  # seconds per cell while autograding (fast mode keeps every cell far below this)
DEFAULT_MEMORY_LIMIT_GB = 4.0  # memory cap of each autograde kernel (RLIMIT_DATA); a lab in fast mode needs < 1 GB
BEGIN_HIDDEN = "### BEGIN HIDDEN TESTS"
SOLUTION_RE = re.compile(r"^[ \t]*### BEGIN SOLUTION[ \t]*\n(.*?)^[ \t]*### END SOLUTION[ \t]*$", re.S | re.M)
ALLOWED_BESIDE_SOURCE = {".ipynb_checkpoints", "__pycache__"}


# --- Locating things ------------------------------------------------------------------------------

def find_repo_root(start: str | os.PathLike | None = None) -> Path:
    """The folder holding ``solutions/``: searched upwards from ``start`` (default: the current folder),
    then beside the labkit package (an editable install)."""
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / SOURCE_DIR).is_dir() and (folder / "pyproject.toml").exists():
            return folder
    package_parent = Path(__file__).resolve().parents[1]
    if (package_parent / SOURCE_DIR).is_dir():
        return package_parent
    raise LabkitError(f"no '{SOURCE_DIR}/' folder found above {here}: run this inside the labkit repository "
                      "or pass --repo PATH")


def discover_labs(repo_root: str | os.PathLike) -> list[str]:
    """Every ``solutions/<lab>/`` folder that holds ``<lab>.py``, sorted by name (lab00_..., lab01_...)."""
    src = Path(repo_root) / SOURCE_DIR
    if not src.is_dir():
        return []
    return sorted(d.name for d in src.iterdir() if d.is_dir() and (d / f"{d.name}.py").exists())


def _select(labs: Sequence[str] | None, known: Sequence[str]) -> list[str]:
    if not labs:
        return list(known)
    out = []
    for lab in labs:
        matches = [k for k in known if k == lab or k.startswith(lab + "_") or k.split("_")[0] == lab]
        if len(matches) != 1:
            raise LabkitError(f"unknown lab {lab!r}: choose from {', '.join(known) or '(none found)'}")
        out.append(matches[0])
    return out


# --- Source (.py) -> notebook --------------------------------------------------------------------

def _nbformat():
    try:
        import nbformat

        return nbformat
    except ImportError as exc:  # pragma: no cover - instructor extra missing
        raise LabkitError("building and grading need the instructor tools: pip install 'labkit[instructor]'") from exc


def validate_nbgrader_metadata(nb, name: str = "notebook") -> None:
    """nbgrader's own MetadataValidator plus the rules its validator does not enforce."""
    from nbgrader.nbgraderformat import MetadataValidator, ValidationError

    try:
        MetadataValidator().validate_nb(nb)
    except ValidationError as exc:
        raise LabkitError(f"{name}: invalid nbgrader metadata: {exc}") from exc
    seen: set[str] = set()
    for i, cell in enumerate(nb.cells):
        md = cell.metadata.get("nbgrader")
        if not md:
            continue
        gid = md.get("grade_id", "")
        where = f"{name}, cell {i} ({gid or 'no grade_id'})"
        if not re.fullmatch(r"[A-Za-z0-9_-]+", gid):
            raise LabkitError(f"{where}: grade_id must match [A-Za-z0-9_-]+")
        if gid in seen:
            raise LabkitError(f"{where}: duplicate grade_id")
        seen.add(gid)
        if md.get("solution") and cell.cell_type == "code" and "### BEGIN SOLUTION" not in cell.source:
            raise LabkitError(f"{where}: a solution cell needs ### BEGIN SOLUTION / ### END SOLUTION markers")
        if md.get("grade") and not md.get("solution") and not md.get("locked"):
            raise LabkitError(f"{where}: an autograded test cell must be locked")
    for i, cell in enumerate(nb.cells):
        md = cell.metadata.get("nbgrader") or {}
        if "### BEGIN SOLUTION" in cell.source and not md.get("solution"):
            raise LabkitError(f"{name}, cell {i}: solution markers in a cell that is not a solution cell "
                              "(they would ship to students)")
        if BEGIN_HIDDEN in cell.source and not md.get("grade"):
            raise LabkitError(f"{name}, cell {i}: hidden tests are only allowed in graded test cells")
        if cell.cell_type == "code" and re.search(r"^\s*from\s+\S+\s+import\s+\*", cell.source, re.M):
            raise LabkitError(f"{name}, cell {i}: no `import *` in the labs; import modules by name")


def source_to_notebook(py_path: str | os.PathLike):
    """Read a lab source (jupytext percent script) into a clean, validated notebook.

    Deterministic: cell ids come from grade ids (or the cell's position), notebook metadata is just the
    python3 kernelspec, the Colab install line gets ``labkit.colab.pip_spec()``.
    """
    import jupytext

    from labkit import colab

    py_path = Path(py_path)
    nbf = _nbformat()
    nb = jupytext.read(py_path, fmt="py:percent")
    nb.nbformat, nb.nbformat_minor = 4, 5
    nb.metadata = nbf.from_dict({"kernelspec": dict(KERNELSPEC), "language_info": {"name": "python"}})
    for i, cell in enumerate(nb.cells):
        md = cell.metadata.get("nbgrader")
        cell.metadata = nbf.from_dict({"nbgrader": dict(md)} if md else {})
        cell.source = cell.source.replace(colab.PLACEHOLDER, colab.pip_spec())
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    validate_nbgrader_metadata(nb, py_path.name)  # grade ids are now valid and unique: use them as cell ids
    for i, cell in enumerate(nb.cells):
        md = cell.metadata.get("nbgrader")
        cell.id = md["grade_id"] if md else f"cell-{i:03d}"
    nbf.validate(nb)
    return nb


def notebook_json(nb) -> str:
    """The canonical text of a notebook (what is written and compared)."""
    return _nbformat().writes(nb) + "\n"


# --- nbgrader configuration -------------------------------------------------------------------

try:  # The feedback preprocessor is a real nbconvert Preprocessor when nbconvert is installed.
    from nbconvert.preprocessors import Preprocessor as _Preprocessor
    from traitlets import Bool as _Bool
except ImportError:  # pragma: no cover
    _Preprocessor, _Bool = object, lambda *a, **k: True


class RedactHiddenTestOutputs(_Preprocessor):
    """Feedback: replace every output of a cell holding hidden tests by one line.

    A traceback shows the lines around the failing one (the hidden tests themselves) and printed
    messages may name hidden inputs; students see only whether the cell passed and the error's type and
    message (the checks' messages are hints, written to be shown). Run before ``ClearHiddenTests``,
    which then removes the hidden lines from the source.
    """

    enabled = _Bool(True)  # nbconvert preprocessors are off by default (nbgrader's own are on)

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type != "code" or BEGIN_HIDDEN not in cell.source:
            return cell, resources
        nbf = _nbformat()
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        if errors:
            e = errors[-1]
            message = f"{e.get('ename', 'Error')}: {str(e.get('evalue', ''))[:500]}"
            text = f"Tests in this cell failed (details of hidden tests are not shown).\n{message}\n"
            cell.outputs = [nbf.v4.new_output("stream", name="stderr", text=text)]
        else:
            cell.outputs = [nbf.v4.new_output("stream", name="stdout", text="All tests in this cell passed.\n")]
        return cell, resources


def _memory_limit_line(gigabytes: float) -> str:
    """Python run by every autograde kernel at start-up: cap its data memory (heap and anonymous mappings,
    ``RLIMIT_DATA``) at ``gigabytes``, so that a student's memory blow-up fails with a MemoryError in that
    kernel instead of pushing the grading machine into swap or the OOM killer. Linux (and other POSIX
    systems that enforce RLIMIT_DATA); elsewhere the line does nothing. ``RLIMIT_AS`` would also count the
    address space that torch's shared libraries map (over 3 GB of it for a CUDA build) and is not used."""
    cap = int(gigabytes * 2 ** 30)
    return ("exec('try:\\n import resource as _r\\n _h = _r.getrlimit(_r.RLIMIT_DATA)[1]\\n"
            f" _c = {cap} if _h == _r.RLIM_INFINITY else min({cap}, _h)\\n"
            " _r.setrlimit(_r.RLIMIT_DATA, (_c, _c))\\nexcept Exception:\\n pass', {})")


# Before each graded test cell: re-execute the labkit.checks modules in place, so that an answer cell that
# replaced a check or a helper (``checks.check_snr = lambda f: None``) cannot fool the tests that follow.
RELOAD_CHECKS = (
    "exec('import importlib as _i, sys as _s\\n"
    "for _n in sorted(m for m in list(_s.modules) if m.startswith(\"labkit.checks.\")):\\n"
    " try:\\n  _i.reload(_s.modules[_n])\\n except Exception:\\n  pass', {})"
)

_COURSE_LOCK: dict = {"fd": None}  # the gradebook lock held by this process (see _course_lock)


@contextlib.contextmanager
def _course_lock(course: Path):
    """Hold an exclusive lock on the course folder for everything autograde does in this process except
    executing the notebook (``GuardedExecute`` lets go of it meanwhile): several worker processes then
    execute notebooks at the same time while nbgrader's SQLite gradebook sees one writer at a time."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: grade with --jobs 1
        yield
        return
    fd = os.open(str(course / ".labkit-grading.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _COURSE_LOCK["fd"] = fd
        yield
    finally:
        _COURSE_LOCK["fd"] = None
        os.close(fd)  # closing releases the lock


@contextlib.contextmanager
def _course_unlocked():
    fd = _COURSE_LOCK["fd"]
    if fd is None:
        yield
        return
    import fcntl

    fcntl.flock(fd, fcntl.LOCK_UN)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_EX)


_GUARDED_EXECUTE = None


def guarded_execute_class():
    """nbgrader's ``Execute`` preprocessor, hardened for real submissions (created on first use: importing
    nbgrader's preprocessors is slow). It

    * caps each kernel's memory (``memory_limit_gb``, default 4 GB; 0: no cap);
    * survives a kernel that dies (``os._exit``, a segfault, the OOM killer): the cell that was running gets
      an error output (``DeadKernelError``, so a test cell scores 0), the kernel is restarted, the code cells
      above are re-run without their outputs, and grading goes on with the next cell: the student keeps the
      points of every other exercise;
    * restarts the kernel the same way when a cell timed out and the kernel still does not answer after the
      interrupt (an infinite loop that swallows KeyboardInterrupt), instead of timing out on every later cell;
    * re-executes the ``labkit.checks`` modules before each graded test cell (``RELOAD_CHECKS``).
    """
    global _GUARDED_EXECUTE
    if _GUARDED_EXECUTE is not None:
        return _GUARDED_EXECUTE
    from jupyter_core.utils import ensure_async, run_sync
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from nbformat.notebooknode import NotebookNode
    from nbgrader.preprocessors import Execute
    from traitlets import Bool, Float, Integer

    def error_output(ename: str, evalue: str) -> NotebookNode:
        return NotebookNode(output_type="error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"])

    class GuardedExecute(Execute):
        memory_limit_gb = Float(DEFAULT_MEMORY_LIMIT_GB, help="memory cap of each kernel in GB (0: none)").tag(config=True)
        max_restarts = Integer(3, help="kernel restarts allowed per notebook before autograde gives up").tag(config=True)
        reload_checks = Bool(True, help="re-execute labkit.checks before each graded test cell").tag(config=True)
        responsive_timeout = Integer(20, help="seconds a kernel has to answer after a timed-out cell").tag(config=True)

        def preprocess(self, nb, resources=None, km=None):
            self._skip: set[int] = set()
            self._restarts = 0
            args = [a for a in self.extra_arguments if not a.startswith("--IPKernelApp.exec_lines=")]
            if self.memory_limit_gb and self.memory_limit_gb > 0:
                args.append("--IPKernelApp.exec_lines=" + _memory_limit_line(self.memory_limit_gb))
            self.extra_arguments = args
            with _course_unlocked():
                return super().preprocess(nb, resources, km)

        def preprocess_cell(self, cell, resources, index):
            md = cell.metadata.get("nbgrader", {}) if cell.cell_type == "code" else {}
            if self.reload_checks and md.get("grade") and not md.get("solution"):
                run_sync(self._run_quietly)(RELOAD_CHECKS, 30)
            hung = error_output("CellTimeoutError", f"the cell ran longer than {self.timeout} s and the kernel "
                                "did not stop when interrupted; it was restarted, the cells above were run again, "
                                "and grading went on")
            try:
                cell, resources = super().preprocess_cell(cell, resources, index)
            except DeadKernelError:
                cell.outputs = list(cell.get("outputs", [])) + [error_output(
                    "DeadKernelError", "the kernel died while running this cell (it exited, crashed or ran out of "
                    "memory); it was restarted, the cells above were run again, and grading went on")]
                self._recover(index)
                return cell, self.resources
            except CellTimeoutError:  # still busy after the interrupt: no IOPub "idle" for this cell
                cell.outputs = list(cell.get("outputs", [])) + [hung]
                self._recover(index)
                return cell, self.resources
            if any(o.get("ename") == "CellTimeoutError" for o in cell.get("outputs", [])):
                self._skip.add(index)  # never re-run it when replaying
                if not run_sync(self._run_quietly)("pass", self.responsive_timeout):
                    cell.outputs.append(hung)
                    self._recover(index)
            return cell, self.resources

        async def _run_quietly(self, code: str, timeout: float) -> bool:
            """Run ``code`` silently; True when the kernel replied within ``timeout`` seconds."""
            import time
            from queue import Empty

            msg_id = await ensure_async(self.kc.execute(code, silent=True, store_history=False, stop_on_error=False))
            deadline = time.monotonic() + timeout
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                try:
                    msg = await ensure_async(self.kc.shell_channel.get_msg(timeout=min(left, 1.0)))
                except Empty:
                    if not await ensure_async(self.kc.is_alive()):
                        return False
                    continue
                if msg["parent_header"].get("msg_id") == msg_id:
                    return True

        def _recover(self, index: int) -> None:
            self._skip.add(index)
            self._restarts += 1
            if self._restarts > self.max_restarts:
                raise DeadKernelError(f"the kernel died or hung {self._restarts} times; giving up on this notebook")
            run_sync(self._async_recover)(index)

        async def _async_recover(self, index: int) -> None:
            if self.kc is not None:
                await ensure_async(self.kc.stop_channels())
                self.kc = None
            await ensure_async(self.km.restart_kernel(now=True))
            await self.async_start_new_kernel_client()
            for j, cell in enumerate(self.nb.cells[:index]):
                if cell.cell_type != "code" or j in self._skip or not cell.source.strip():
                    continue
                if not await self._run_quietly(cell.source, self._get_timeout(cell) or 600):
                    self._skip.add(j)
                    raise DeadKernelError(f"the kernel died again while re-running cell {j}")

    _GUARDED_EXECUTE = GuardedExecute
    return GuardedExecute


def configure_nbgrader(c, *, root: str | os.PathLike | None = None, timeout: int = DEFAULT_TIMEOUT,
                       add_missing_cells: bool = True, memory_limit_gb: float = DEFAULT_MEMORY_LIMIT_GB):
    """Apply labkit's grading settings to a traitlets Config ``c`` (used by the API and nbgrader_config.py)."""
    from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor
    from nbgrader.converters import Autograde
    from nbgrader.preprocessors import ClearHiddenTests, Execute, GetGrades

    if root is not None:
        c.CourseDirectory.root = str(root)
    # Never copy the jupytext sources (full solutions!) or caches into a release.
    c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", "*.py"]
    c.Execute.timeout = int(timeout)  # finite: a student's infinite loop must not hang the grader
    c.Execute.kernel_name = "python3"  # whatever kernel the student's notebook names (nbgrader #1375)
    c.Execute.interrupt_on_timeout = True
    # Kernel memory cap, survival of dead and hung kernels, fresh checks before each test cell.
    guarded = guarded_execute_class()
    c.GuardedExecute.memory_limit_gb = float(memory_limit_gb or 0)
    c.Autograde.autograde_preprocessors = [guarded if p is Execute else p
                                           for p in Autograde.class_traits()["autograde_preprocessors"].default()]
    c.OverwriteCells.add_missing_cells = bool(add_missing_cells)
    c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
    c.GenerateFeedback.preprocessors = [GetGrades, RedactHiddenTestOutputs, ClearHiddenTests, CSSHTMLHeaderPreprocessor]
    return c


class _Api:
    """NbGraderAPI whose calls run with this Python's scripts folder on PATH: nbgrader runs the
    `alembic` command when it creates a gradebook, which fails in a virtualenv that is not activated."""

    def __init__(self, api):
        self._api = api

    def __getattr__(self, name):
        method = getattr(self._api, name)
        if not callable(method):
            return method

        def call(*args, **kwargs):
            import sysconfig

            scripts = {sysconfig.get_path("scripts"), str(Path(sys.executable).parent)}
            path = os.environ.get("PATH", "")
            extra = [d for d in scripts if d and d not in path.split(os.pathsep)]
            with _env(PATH=os.pathsep.join(extra + [path])):
                return method(*args, **kwargs)

        return call


def _api(root: Path, **options):
    from nbgrader.apps import NbGraderAPI
    from traitlets.config import Config

    c = configure_nbgrader(Config(), root=root, **options)
    c.NbGraderAPI.log_level = "ERROR"
    return _Api(NbGraderAPI(config=c))


def _failure(result: dict) -> str:
    text = (result.get("error") or "") + "\n" + (result.get("log") or "")
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return "\n".join(lines[-8:]) or "unknown error"


# --- Building -----------------------------------------------------------------------------------

@dataclass
class BuiltLab:
    lab: str
    solution_ipynb: str  # canonical JSON text
    student_ipynb: str


def _generate_student(lab: str, source_nb, root: Path):
    """Run nbgrader generate_assignment on one source notebook in the course folder ``root``;
    return the cleaned release notebook."""
    nbf = _nbformat()
    (root / "source" / lab).mkdir(parents=True, exist_ok=True)
    nbf.write(source_nb, str(root / "source" / lab / f"{lab}.ipynb"))
    result = _api(root).generate_assignment(lab, force=True, create=True)
    if not result.get("success"):
        raise LabkitError(f"nbgrader generate_assignment failed for {lab}:\n{_failure(result)}")
    release = nbf.read(str(root / "release" / lab / f"{lab}.ipynb"), as_version=4)
    release.metadata = nbf.from_dict({"kernelspec": dict(KERNELSPEC), "language_info": {"name": "python"}})
    for cell in release.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    leaks = [m for m in ("### BEGIN SOLUTION", "### END SOLUTION", BEGIN_HIDDEN, "### END HIDDEN TESTS")
             if any(m in cell.source for cell in release.cells)]
    if leaks:
        raise LabkitError(f"{lab}: the student notebook still contains {leaks}")
    return release


def _extra_files(repo_root: Path, lab: str) -> list[str]:
    folder = repo_root / SOURCE_DIR / lab
    expected = {f"{lab}.py", f"{lab}.ipynb"} | ALLOWED_BESIDE_SOURCE
    return sorted(p.name for p in folder.iterdir() if p.name not in expected)


def render_labs(repo_root: str | os.PathLike, labs: Sequence[str]) -> dict[str, BuiltLab]:
    """Both built forms of each lab, in memory (one temporary nbgrader course for all of them)."""
    repo_root = Path(repo_root)
    built = {}
    with tempfile.TemporaryDirectory(prefix="labkit-build-") as tmp:
        for lab in labs:
            source = source_to_notebook(repo_root / SOURCE_DIR / lab / f"{lab}.py")
            student = _generate_student(lab, copy.deepcopy(source), Path(tmp))
            built[lab] = BuiltLab(lab, notebook_json(source), notebook_json(student))
    return built


def build_notebooks(repo_root: str | os.PathLike | None = None, labs: Sequence[str] | None = None,
                    *, verbose: bool = True) -> list[Path]:
    """Build ``solutions/<lab>/<lab>.ipynb`` and ``notebooks/<lab>.ipynb`` for every lab (or ``labs``).

    Returns the paths written. Raises LabkitError on invalid metadata, nbgrader failures, or files
    beside a source notebook (nbgrader would copy them into the release).
    """
    repo_root = Path(repo_root) if repo_root else find_repo_root()
    chosen = _select(labs, discover_labs(repo_root))
    if not chosen:
        raise LabkitError(f"no labs found in {repo_root / SOURCE_DIR} (expected <lab>/<lab>.py)")
    written = []
    out_dir = repo_root / STUDENT_DIR
    out_dir.mkdir(exist_ok=True)
    for lab in chosen:
        extra = _extra_files(repo_root, lab)
        if extra:
            raise LabkitError(f"{SOURCE_DIR}/{lab}/ holds {extra}: only {lab}.py and {lab}.ipynb may be there "
                              "(anything else would be copied into the student release)")
    for lab, built in render_labs(repo_root, chosen).items():
        for path, text in ((repo_root / SOURCE_DIR / lab / f"{lab}.ipynb", built.solution_ipynb),
                           (out_dir / f"{lab}.ipynb", built.student_ipynb)):
            _write_atomic(path, text)
            written.append(path)
        if verbose:
            print(f"built {lab}: {SOURCE_DIR}/{lab}/{lab}.ipynb, {STUDENT_DIR}/{lab}.ipynb")
    return written


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def check_notebooks_fresh(repo_root: str | os.PathLike | None = None, labs: Sequence[str] | None = None) -> list[str]:
    """What is out of date, as a list of messages (empty: everything is built and in sync)."""
    repo_root = Path(repo_root) if repo_root else find_repo_root()
    known = discover_labs(repo_root)
    problems = []
    chosen = _select(labs, known)
    for lab in chosen:
        extra = _extra_files(repo_root, lab)
        if extra:
            problems.append(f"{SOURCE_DIR}/{lab}/: unexpected files {extra} (they would ship to students)")
    try:
        rendered = render_labs(repo_root, chosen)
    except LabkitError as exc:
        return problems + [str(exc)]
    for lab, built in rendered.items():
        for rel, text in ((f"{SOURCE_DIR}/{lab}/{lab}.ipynb", built.solution_ipynb),
                          (f"{STUDENT_DIR}/{lab}.ipynb", built.student_ipynb)):
            path = repo_root / rel
            if not path.exists():
                problems.append(f"{rel} is missing: run `labkit build`")
            elif path.read_text(encoding="utf-8") != text:
                problems.append(f"{rel} is out of date with {SOURCE_DIR}/{lab}/{lab}.py: run `labkit build`")
    if not labs:
        for path in sorted((repo_root / STUDENT_DIR).glob("*.ipynb")) if (repo_root / STUDENT_DIR).is_dir() else []:
            if path.stem not in known:
                problems.append(f"{STUDENT_DIR}/{path.name} has no source in {SOURCE_DIR}/ (remove it)")
    return problems


# --- Restoring submissions --------------------------------------------------------------------

def _norm(source: str) -> str:
    return "\n".join(line.rstrip() for line in source.strip().splitlines())


def _stub_names(source: str) -> list[str]:
    return re.findall(r"^\s*(?:def|class)\s+([A-Za-z_]\w*)", source, re.M)


def restore_submission(nb, release) -> list[str]:
    """Make a submitted notebook gradeable again, in place; return notes on what was changed.

    * nbgrader metadata whose grade_id is unknown or repeated (a copy-pasted cell, nbgrader #1083) is
      removed: the later copies become ordinary cells;
    * cells that lost their metadata get it back from the release notebook: locked cells (tests,
      instructions) by their source, solution cells by position between matched cells and by the
      function they define;
    * locked cells that are still missing (deleted tests) are put back after the previous graded cell
      (their hidden tests come back from the source at autograde time);
    * cell ids are made unique and present; the kernel is set to python3.
    """
    nbf = _nbformat()
    notes: list[str] = []
    rel_cells = [c for c in release.cells if c.metadata.get("nbgrader")]
    rel_by_id = {c.metadata["nbgrader"]["grade_id"]: c for c in rel_cells}
    order = [c.metadata["nbgrader"]["grade_id"] for c in rel_cells]

    # 1. remove unknown / duplicate grade ids
    seen: set[str] = set()
    for i, cell in enumerate(nb.cells):
        md = cell.metadata.get("nbgrader")
        if md is None:
            continue
        gid = md.get("grade_id") if isinstance(md, dict) else None
        if gid not in rel_by_id or gid in seen or not isinstance(md, dict):
            del cell.metadata["nbgrader"]
            if gid in seen:
                notes.append(f"cell {i}: duplicate of '{gid}' (copied cell), graded as an ordinary cell")
            elif not (isinstance(md, dict) and set(md) <= {"grade", "solution", "locked", "schema_version"} and
                      not any(md.get(k) for k in ("grade", "solution", "locked"))):
                notes.append(f"cell {i}: unknown nbgrader metadata removed")
            continue
        seen.add(gid)

    def present() -> dict[str, int]:
        return {c.metadata["nbgrader"]["grade_id"]: i for i, c in enumerate(nb.cells) if c.metadata.get("nbgrader")}

    def attach(i: int, gid: str, how: str) -> None:
        nb.cells[i].metadata["nbgrader"] = copy.deepcopy(rel_by_id[gid].metadata["nbgrader"])
        notes.append(f"cell {i}: restored nbgrader metadata of '{gid}' ({how})")

    # 2. locked cells by exact (whitespace-normalised) source
    free = lambda i: not nb.cells[i].metadata.get("nbgrader")  # noqa: E731
    for gid in order:
        rel = rel_by_id[gid]
        md = rel.metadata["nbgrader"]
        if gid in present() or md.get("solution") or not md.get("locked"):
            continue
        target = _norm(rel.source)
        for i, cell in enumerate(nb.cells):
            if free(i) and cell.cell_type == rel.cell_type and _norm(cell.source) == target:
                attach(i, gid, "matched by source")
                break

    # 3. solution cells by position between matched neighbours and by the names they define
    for k, gid in enumerate(order):
        rel = rel_by_id[gid]
        if gid in present() or not rel.metadata["nbgrader"].get("solution"):
            continue
        where = present()
        before = [where[g] for g in order[:k] if g in where]
        after = [where[g] for g in order[k + 1:] if g in where]
        lo = max(before) if before else -1
        hi = min(after) if after else len(nb.cells)
        window = [i for i in range(lo + 1, hi) if free(i) and nb.cells[i].cell_type == rel.cell_type]
        names = _stub_names(rel.source)
        pick = None
        if names:
            named = [i for i in window if set(names) & set(_stub_names(nb.cells[i].source))]
            pick = named[-1] if named else None  # the last definition is the one the tests see
        if pick is None:
            same = [i for i in window if _norm(nb.cells[i].source) == _norm(rel.source)]
            pick = same[0] if same else (window[0] if len(window) == 1 else None)
        if pick is not None:
            attach(pick, gid, "matched by position" + (f" and `{names[0]}`" if names else ""))
            continue
        # Not between its neighbours: the answer cell was deleted and the function retyped in a new cell
        # elsewhere. Above its test it runs in time where it is; below, it is moved up to just before it.
        elsewhere = [i for i in range(len(nb.cells)) if free(i) and nb.cells[i].cell_type == rel.cell_type
                     and names and set(names) & set(_stub_names(nb.cells[i].source))]
        if elsewhere:
            i = elsewhere[-1]
            if i < hi:
                attach(i, gid, f"found above its place, defines `{names[0]}`")
            else:
                nb.cells.insert(hi, nb.cells.pop(i))
                attach(hi, gid, f"moved up from cell {i}, defines `{names[0]}`")

    # 4. put back deleted locked cells (tests and read-only instructions)
    for k, gid in enumerate(order):
        rel = rel_by_id[gid]
        md = rel.metadata["nbgrader"]
        if gid in present() or md.get("solution") or not md.get("locked"):
            continue
        where = present()
        before = [where[g] for g in order[:k] if g in where]
        at = max(before) + 1 if before else 0
        nb.cells.insert(at, copy.deepcopy(rel))
        notes.append(f"cell {at}: deleted cell '{gid}' put back from the release")

    # 5. ids and kernel
    used: set[str] = set()
    if nb.get("nbformat_minor", 0) < 5:
        nb.nbformat_minor = 5
    for i, cell in enumerate(nb.cells):
        cid = cell.get("id")
        if not cid or not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", str(cid)) or cid in used:
            new = f"cell-{i}"
            while new in used:
                new += "x"
            if cid:
                notes.append(f"cell {i}: duplicate or invalid cell id '{cid}' renamed")
            cell["id"] = new
        used.add(cell["id"])
    ks = nb.metadata.get("kernelspec", {})
    if ks.get("name") != "python3":
        if ks:
            notes.append(f"kernel '{ks.get('name')}' replaced by python3")
        nb.metadata["kernelspec"] = dict(KERNELSPEC)
    missing = [g for g in order if rel_by_id[g].metadata["nbgrader"].get("solution") and g not in present()]
    if missing:
        notes.append(f"no answer cell found for {missing} (scored as not answered)")
    nbf.validate(nb)
    return notes


# --- Grading ------------------------------------------------------------------------------------

@dataclass
class Submission:
    student: str
    lab: str
    path: Path


@dataclass
class GradeResult:
    student: str
    lab: str
    score: float | None = None
    max_score: float | None = None
    status: str = "pending"  # graded | needs manual grading | kernel died | out of memory | failed | no submission
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        score = "-" if self.score is None else f"{self.score:g}/" + ("?" if self.max_score is None else f"{self.max_score:g}")
        notes = "; ".join(self.notes)
        return f"{self.student:<20} {self.lab:<20} {score:>9}  {self.status}" + (f"  ({notes})" if notes else "")


def _safe_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9@.-]+", "-", text).strip("-.") or "unknown"


def _lab_from_name(name: str, labs: Sequence[str]) -> str | None:
    low = name.lower()
    for lab in sorted(labs, key=len, reverse=True):
        if lab.lower() in low:
            return lab
    for lab in labs:
        prefix = lab.split("_")[0].lower()  # "lab01"
        if re.search(rf"(^|[^a-z0-9]){re.escape(prefix)}([^0-9]|$)", low):
            return lab
    return None


def _lab_from_content(path: Path, releases: dict) -> str | None:
    try:
        cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
    except Exception:
        return None
    ids = {((c.get("metadata") or {}).get("nbgrader") or {}).get("grade_id") for c in cells}
    texts = {_norm("".join(c["source"]) if isinstance(c.get("source"), list) else c.get("source", "")) for c in cells}
    best, best_score = None, 0
    for lab, rel in releases.items():
        score = sum(1 for c in rel.cells if c.metadata.get("nbgrader", {}).get("grade_id") in ids)
        score += sum(1 for c in rel.cells if c.metadata.get("nbgrader", {}).get("locked") and _norm(c.source) in texts)
        if score > best_score:
            best, best_score = lab, score
    return best


def find_submissions(submissions_dir: str | os.PathLike, labs: Sequence[str], releases: dict | None = None):
    """Find ``(submissions, problems)`` in either layout:

    * ``<student>/<lab>.ipynb`` or ``<student>/<lab>/<lab>.ipynb`` (nbgrader's submitted layout);
    * flat, as an LMS download: ``<student>_<anything>.ipynb``, the student id being everything before the
      first underscore, the lab found in the rest of the name (``lab01_forward`` or ``lab01``) or, failing
      that, from the notebook's content.

    When a student has several files for one lab the newest (by modification time) is graded.
    """
    root = Path(submissions_dir)
    if not root.is_dir():
        raise LabkitError(f"submissions folder {root} does not exist")
    found: dict[tuple[str, str], list[Path]] = {}
    problems: list[str] = []

    def add(student: str, path: Path, hint: str) -> None:
        lab = _lab_from_name(hint, labs) or (_lab_from_content(path, releases) if releases else None)
        if lab is None:
            problems.append(f"{path.relative_to(root)}: cannot tell which lab this is (name it <student>_<lab>.ipynb)")
            return
        found.setdefault((student, lab), []).append(path)

    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".") or entry.name in ALLOWED_BESIDE_SOURCE:
            continue
        if entry.is_dir():
            student = _safe_id(entry.name)
            notebooks = [p for p in sorted(entry.rglob("*.ipynb")) if ".ipynb_checkpoints" not in p.parts]
            if not notebooks:
                problems.append(f"{entry.name}/: {_empty_folder_note(entry)}")
            for nbpath in notebooks:
                add(student, nbpath, str(nbpath.relative_to(entry)))
        elif entry.suffix == ".ipynb":
            student, _, rest = entry.stem.partition("_")
            add(_safe_id(student), entry, rest or entry.stem)
    subs = []
    for (student, lab), paths in sorted(found.items()):
        paths = sorted(paths, key=lambda p: p.stat().st_mtime)
        if len(paths) > 1:
            problems.append(f"{student}/{lab}: {len(paths)} files, grading the newest ({paths[-1].name})")
        subs.append(Submission(student, lab, paths[-1]))
    return subs, problems


def _empty_folder_note(folder: Path) -> str:
    others = sorted(p.name for p in folder.rglob("*") if p.is_file() and ".ipynb_checkpoints" not in p.parts)
    if not others:
        return "empty folder, no notebook submitted"
    shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
    return f"no notebook (.ipynb) in the folder, only {shown}"


def _empty_students(submissions_dir: Path, subs: Sequence[Submission]) -> list[tuple[str, str]]:
    """``(student, note)`` for each student folder in which no notebook was found."""
    graded = {s.student for s in subs}
    out = []
    for entry in sorted(Path(submissions_dir).iterdir()):
        if entry.is_dir() and not entry.name.startswith(".") and entry.name not in ALLOWED_BESIDE_SOURCE:
            if _safe_id(entry.name) not in graded and not any(
                    ".ipynb_checkpoints" not in p.parts for p in entry.rglob("*.ipynb")):
                out.append((_safe_id(entry.name), _empty_folder_note(entry)))
    return out


@contextlib.contextmanager
def _env(**values):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update({k: str(v) for k, v in values.items()})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def grade_submissions(submissions_dir: str | os.PathLike, out_dir: str | os.PathLike, labs: Sequence[str] | None = None,
                      *, repo_root: str | os.PathLike | None = None, timeout: int = DEFAULT_TIMEOUT,
                      feedback: bool = True, jobs: int | None = None, verbose: bool = True,
                      memory_limit_gb: float = DEFAULT_MEMORY_LIMIT_GB) -> list[GradeResult]:
    """Autograde every submission in ``submissions_dir``; write results under ``out_dir``:

        out_dir/nbgrader/<lab>/      one nbgrader course per lab (source, release, submitted, autograded,
                                     feedback, gradebook.db): open it with nbgrader for manual grading
        out_dir/scores.csv           student, lab, score, max_score, status, notes
        out_dir/feedback/<student>/<lab>.html

    Submissions are autograded in parallel processes (``jobs``, default: up to 4, one per CPU), each in its
    own kernel with a finite per-cell ``timeout`` and a memory cap of ``memory_limit_gb`` (0: none). One
    bad submission (unreadable file, infinite loop, dead kernel, memory blow-up) is reported and never
    stops the others. Status per submission: ``graded``, ``needs manual grading``, ``kernel died`` (scored
    from the cells that could run), ``out of memory`` (a cell hit the memory cap), ``failed`` (no score
    from nbgrader) or ``no submission`` (an empty student folder); the notes say what was repaired and
    which cells failed, timed out or look like tampering.
    """
    repo_root = Path(repo_root).resolve() if repo_root else find_repo_root()
    out_dir = Path(out_dir).resolve()
    chosen = _select(labs, discover_labs(repo_root))
    nbf = _nbformat()
    releases = {}  # the built student notebooks tell which lab an oddly named file is
    for lab in chosen:
        path = repo_root / STUDENT_DIR / f"{lab}.ipynb"
        if path.exists():
            releases[lab] = nbf.read(str(path), as_version=4)
    subs, problems = find_submissions(submissions_dir, chosen, releases)
    if verbose:
        for p in problems:
            print(f"note: {p}")
    empty = _empty_students(Path(submissions_dir), subs)
    active = [lab for lab in chosen if any(s.lab == lab for s in subs)]
    empty_labs = active or chosen[:1]
    jobs = max(1, min(jobs or min(4, os.cpu_count() or 1), len(subs) or 1))
    if os.name == "nt":  # no fcntl lock for the shared gradebook (see _course_lock): one at a time
        jobs = 1
    courses = {lab: str(out_dir / "nbgrader" / lab) for lab in set(active) | set(empty_labs)}

    with _workers(jobs) as run:
        prepared = dict(zip(active, run(_prepare_lab, [(str(repo_root), lab, courses[lab]) for lab in active])))
        tasks, results = [], []
        for s in sorted(subs, key=lambda s: (chosen.index(s.lab), s.student)):
            res = GradeResult(s.student, s.lab)
            results.append(res)
            if isinstance(prepared[s.lab], BaseException):
                res.status = "failed"
                res.notes.append(f"could not prepare {s.lab}: {str(prepared[s.lab])[-300:]}")
            else:
                tasks.append((res, (s.student, s.lab, str(s.path), courses[s.lab], timeout, memory_limit_gb)))

        def report(res: GradeResult) -> None:
            if verbose:
                print(res.line(), flush=True)

        for (res, args), done in zip(tasks, run(_grade_submission, [a for _, a in tasks], on_result=report)):
            if isinstance(done, BaseException):  # the worker process itself died
                res.status = "failed"
                res.notes.append(f"grading error: {type(done).__name__}: {str(done)[:300]}")
            else:
                res.score, res.max_score, res.status, res.notes = done.score, done.max_score, done.status, done.notes
        for lab in empty_labs:
            max_score = _max_score(releases.get(lab))
            for student, note in empty:
                res = GradeResult(student, lab, 0.0, max_score, "no submission", [note])
                results.append(res)
                report(res)
        graded_labs = [lab for lab in active if any(r.lab == lab and r.status not in ("failed", "no submission")
                                                    for r in results)]
        if feedback:
            for lab, warning in zip(graded_labs, run(_feedback_lab, [(courses[lab], lab) for lab in graded_labs])):
                if warning:
                    print(f"warning: feedback for {lab} failed: {warning}", file=sys.stderr)
    for r in results:
        html = out_dir / "nbgrader" / r.lab / "feedback" / r.student / r.lab / f"{r.lab}.html"
        if html.exists():
            (out_dir / "feedback" / r.student).mkdir(parents=True, exist_ok=True)
            shutil.copy2(html, out_dir / "feedback" / r.student / f"{r.lab}.html")
    write_scores_csv(results, out_dir / "scores.csv")
    if verbose:
        print(f"{len(results)} submissions, {sum(r.status == 'graded' for r in results)} graded; "
              f"scores in {out_dir / 'scores.csv'}")
    return results


def _max_score(release) -> float | None:
    if release is None:
        return None
    return float(sum((c.metadata.get("nbgrader") or {}).get("points", 0) for c in release.cells
                     if (c.metadata.get("nbgrader") or {}).get("grade")))


@contextlib.contextmanager
def _workers(jobs: int):
    """``run(fn, list_of_arg_tuples, on_result=None)`` -> results in order; an exception raised by a call
    is returned in its place. ``jobs`` > 1: calls run in that many spawned processes."""
    if jobs == 1:
        def run(fn, arglist, on_result=None):
            out = []
            for args in arglist:
                try:
                    out.append(fn(*args))
                except Exception as exc:
                    out.append(exc)
                if on_result and not isinstance(out[-1], BaseException):
                    on_result(out[-1])
            return out

        yield run
        return
    import concurrent.futures
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")  # no fork of a process that may hold threads
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=ctx) as pool:
        def run(fn, arglist, on_result=None):
            futures = [pool.submit(fn, *args) for args in arglist]
            for fut in concurrent.futures.as_completed(futures):
                if on_result and fut.exception() is None:
                    on_result(fut.result())
            return [f.exception() if f.exception() is not None else f.result() for f in futures]

        yield run


def _quiet_warnings():
    import warnings

    ctx = warnings.catch_warnings()
    ctx.__enter__()
    # nbgrader's SQLAlchemy "not in session" warnings and nbformat's duplicate-id notices (repaired here)
    # are noise for an instructor reading the per-student report.
    warnings.filterwarnings("ignore", message=".*not in session.*")
    warnings.filterwarnings("ignore", message=".*Non-unique cell id.*")
    return ctx


def _prepare_lab(repo_root: str, lab: str, course_dir: str) -> float:
    """A fresh nbgrader course for ``lab``: source notebook from the .py, release, gradebook. Returns the
    lab's maximum score."""
    nbf = _nbformat()
    course = Path(course_dir)
    src = course / "source" / lab
    if src.exists():
        shutil.rmtree(src)
    src.mkdir(parents=True)
    nbf.write(source_to_notebook(Path(repo_root) / SOURCE_DIR / lab / f"{lab}.py"), str(src / f"{lab}.ipynb"))
    ctx = _quiet_warnings()
    try:
        result = _api(course).generate_assignment(lab, force=True, create=True)
    finally:
        ctx.__exit__(None, None, None)
    if not result.get("success"):
        raise LabkitError(f"nbgrader generate_assignment failed for {lab}:\n{_failure(result)}")
    return _max_score(nbf.read(str(course / "release" / lab / f"{lab}.ipynb"), as_version=4))


def _feedback_lab(course_dir: str, lab: str) -> str | None:
    ctx = _quiet_warnings()
    try:
        result = _api(Path(course_dir)).generate_feedback(lab, force=True)
    finally:
        ctx.__exit__(None, None, None)
    return None if result.get("success") else _failure(result)


def _grade_submission(student: str, lab: str, path: str, course_dir: str, timeout: int,
                      memory_limit_gb: float = DEFAULT_MEMORY_LIMIT_GB) -> GradeResult:
    """Restore, autograde and score one submission in the prepared course ``course_dir`` (runs in a worker
    process; never raises)."""
    res = GradeResult(student, lab)
    course = Path(course_dir)
    ctx = _quiet_warnings()
    try:
        nbf = _nbformat()
        release = nbf.read(str(course / "release" / lab / f"{lab}.ipynb"), as_version=4)
        solution_ids = [r.metadata["nbgrader"]["grade_id"] for r in release.cells
                        if (r.metadata.get("nbgrader") or {}).get("solution")]
        _grade_one(res, Path(path), course, release, solution_ids, timeout, memory_limit_gb)
    except Exception as exc:  # never stop on one bad submission
        res.status = "failed"
        res.notes.append(f"grading error: {type(exc).__name__}: {str(exc)[:300]}")
    finally:
        ctx.__exit__(None, None, None)
    return res


def _grade_one(res: GradeResult, path: Path, course: Path, release, solution_ids, timeout: int,
               memory_limit_gb: float = DEFAULT_MEMORY_LIMIT_GB) -> None:
    """Restore, autograde and score one submission, filling in ``res``."""
    from nbgrader.api import Gradebook

    nbf = _nbformat()
    lab, student = res.lab, res.student
    try:
        nb = nbf.read(str(path), as_version=4)
    except Exception as exc:  # not JSON, truncated upload, ...
        res.status, res.score, res.max_score = "failed", 0.0, _max_score(release)
        res.notes.append(f"unreadable notebook {path.name}: {type(exc).__name__}: {str(exc)[:200]}")
        return
    try:
        res.notes += restore_submission(nb, release)
    except Exception as exc:  # restore is best effort; autograde still runs
        res.notes.append(f"could not restore metadata: {type(exc).__name__}: {exc}")
    res.notes += tampering_notes(nb)
    target = course / "submitted" / student / lab
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    nbf.write(nb, str(target / f"{lab}.ipynb"))
    present = {(c.metadata.get("nbgrader") or {}).get("grade_id") for c in nb.cells}
    # add_missing_cells crashes (KeyError) when a solution cell is gone too: only enable it when safe.
    safe = all(g in present for g in solution_ids)
    # Fast mode, and one thread per kernel: submissions are graded in parallel processes, and torch's thread
    # pool slows down ten-fold on an oversubscribed CPU (measured: 4 s instead of 0.4 s per training step).
    # The course lock keeps nbgrader's gradebook to one writer; it is let go while the notebook executes.
    with _env(LABKIT_FAST="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1"), _course_lock(course):
        result = _api(course, timeout=timeout, add_missing_cells=safe,
                      memory_limit_gb=memory_limit_gb).autograde(lab, student, force=True, create=True)
        if not result.get("success"):
            res.status = "failed"
            log = _failure(result)
            if "DeadKernelError" in log or "Kernel died" in log:
                res.notes.append("the kernel died and could not be brought back: scored as far as nbgrader got")
            res.notes.append("autograde failed: " + log.replace("\n", " | ")[-400:])
        try:
            with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
                s = gb.find_submission(lab, student)
                res.score, res.max_score = float(s.score), float(s.max_score)
                if res.status != "failed":
                    res.status = "needs manual grading" if s.needs_manual_grade else "graded"
        except Exception:
            res.status = "failed"
            res.notes.append("no score recorded")
    graded = course / "autograded" / student / lab / f"{lab}.ipynb"
    if graded.exists():
        status, notes = execution_report(nbf.read(str(graded), as_version=4), timeout, memory_limit_gb)
        res.notes += notes
        if status and res.status != "failed":
            res.status = status


MEMORY_ERRORS = ("MemoryError", "can't allocate memory", "Cannot allocate memory", "Unable to allocate",
                 "std::bad_alloc", "out of memory")


def execution_report(nb, timeout: int | None = None, memory_limit_gb: float | None = None) -> tuple[str | None, list[str]]:
    """What went wrong while an autograded notebook ran: ``(status or None, notes)``, one note per code cell
    with an error output. Status: ``kernel died`` (a DeadKernelError output, see ``GuardedExecute``) before
    ``out of memory`` (an error that names a failed allocation)."""
    died = oom = False
    notes = []
    for i, cell in enumerate(nb.cells):
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        if cell.cell_type != "code" or not errors:
            continue
        md = cell.metadata.get("nbgrader") or {}
        gid = md.get("grade_id")
        label = f"cell {i}" + (f" ({gid})" if gid else "")
        enames = [e.get("ename", "") for e in errors]
        text = " ".join(f"{e.get('ename', '')}: {e.get('evalue', '')}" for e in errors)
        if "DeadKernelError" in enames:
            died = True
            what = "the kernel died here (restarted, the cells above re-run)"
        elif "CellTimeoutError" in enames:
            what = f"timed out after {timeout} s" if timeout else "timed out"
            what += (" and ignored the interrupt: the kernel was restarted, the cells above re-run"
                     if "restarted" in text else " and was interrupted")
        elif any(m.lower() in text.lower() for m in MEMORY_ERRORS):
            oom = True
            cap = f"the {memory_limit_gb:g} GB memory cap" if memory_limit_gb else "the memory limit"
            what = f"reached {cap}: {_first_line(errors[0])}"
        else:
            what = _first_line(errors[-1] if errors[-1].get("ename") != "KeyboardInterrupt" else errors[0])
        if md.get("grade") and not md.get("solution"):
            notes.append(f"{label} failed: {what}")
        else:
            notes.append(f"{label}: {what}")
    status = "kernel died" if died else "out of memory" if oom else None
    return status, notes


def _first_line(error: dict) -> str:
    value = str(error.get("evalue", "")).strip().splitlines()
    return f"{error.get('ename', 'Error')}: {value[0][:200] if value else ''}".rstrip(": ")


# Names whose attributes an answer cell has no reason to replace: doing so is how a student (or a helper
# found online) would try to make a naive test pass (nbgrader #1379).
TAMPER_ROOTS = {"torch", "np", "numpy", "checks", "labkit", "math", "builtins", "_common", "sys", "importlib"}


def tampering_notes(nb) -> list[str]:
    """Notes for the instructor (never a score change): student-editable code cells that assign to an
    attribute of torch / numpy / the checks (``torch.allclose = ...``), or call ``setattr`` on them."""
    import ast

    notes = []
    for i, cell in enumerate(nb.cells):
        md = cell.metadata.get("nbgrader") or {}
        if cell.cell_type != "code" or md.get("locked"):
            continue
        source = "\n".join(ln for ln in cell.source.splitlines() if not ln.lstrip().startswith(("%", "!")))
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        found = []
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "setattr" and node.args:
                targets = [node.args[0]]
            for t in targets:
                root = t
                while isinstance(root, (ast.Attribute, ast.Subscript)):
                    root = root.value
                if isinstance(root, ast.Name) and root.id in TAMPER_ROOTS and root is not t:
                    found.append(ast.unparse(t))
                elif isinstance(root, ast.Name) and root.id in TAMPER_ROOTS and isinstance(node, ast.Call):
                    found.append(f"setattr({root.id}, ...)")
        if found:
            gid = md.get("grade_id")
            notes.append(f"REVIEW cell {i}{f' ({gid})' if gid else ''}: replaces {', '.join(sorted(set(found)))} "
                         "(monkeypatching; the checks do not rely on it, but look at this submission)")
    return notes


def write_scores_csv(results: Iterable[GradeResult], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["student", "lab", "score", "max_score", "status", "notes"])
        for r in results:
            w.writerow([r.student, r.lab, "" if r.score is None else f"{r.score:g}",
                        "" if r.max_score is None else f"{r.max_score:g}", r.status, "; ".join(r.notes)])


# --- Command line -------------------------------------------------------------------------------

def add_build_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--repo", default=None, help="the labkit repository (default: found from the current folder)")
    parser.add_argument("--lab", action="append", default=None, metavar="LAB",
                        help="build only this lab (repeatable; 'lab01' or 'lab01_forward'); default: all")
    parser.add_argument("--check", action="store_true",
                        help="build nothing; exit 1 if a built notebook is missing or out of date")
    return parser


def add_grade_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("submissions", help="folder of submissions: <student>/<lab>.ipynb or <student>_<anything>.ipynb")
    parser.add_argument("--out", default="grading", help="where results go (default: ./grading)")
    parser.add_argument("--lab", action="append", default=None, metavar="LAB", help="grade only this lab (repeatable)")
    parser.add_argument("--repo", default=None, help="the labkit repository (default: found from the current folder)")
    parser.add_argument("--timeout", type=int, default=DEFAULT_TIMEOUT, help="seconds per cell (default: %(default)s)")
    parser.add_argument("--no-feedback", action="store_true", help="skip the feedback HTML")
    parser.add_argument("--jobs", type=int, default=None,
                        help="submissions autograded in parallel (default: one per CPU, up to 4)")
    parser.add_argument("--memory-limit", type=float, default=DEFAULT_MEMORY_LIMIT_GB, metavar="GB",
                        help="memory cap of each grading kernel in GB, 0 for none (default: %(default)g)")
    return parser


def cli_build(args) -> int:
    root = Path(args.repo) if args.repo else find_repo_root()
    if args.check:
        problems = check_notebooks_fresh(root, args.lab)
        for p in problems:
            print(p)
        print("notebooks are up to date" if not problems else f"{len(problems)} problem(s)")
        return 1 if problems else 0
    build_notebooks(root, args.lab)
    return 0


def cli_grade(args) -> int:
    results = grade_submissions(args.submissions, args.out, args.lab, repo_root=args.repo, timeout=args.timeout,
                                feedback=not args.no_feedback, jobs=getattr(args, "jobs", None),
                                memory_limit_gb=getattr(args, "memory_limit", DEFAULT_MEMORY_LIMIT_GB))
    return 0 if results and all(r.status != "failed" for r in results) else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labkit.course", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    add_build_arguments(sub.add_parser("build", help="build the notebooks from solutions/<lab>/<lab>.py"))
    add_grade_arguments(sub.add_parser("grade", help="autograde a folder of submissions"))
    args = parser.parse_args(argv)
    try:
        return cli_build(args) if args.command == "build" else cli_grade(args)
    except LabkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
