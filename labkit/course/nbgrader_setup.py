"""nbgrader as labkit runs it: configuration, the guarded executor, leak-free feedback."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

from labkit.course.sources import (
    import_nbformat,
    BEGIN_HIDDEN,
    DEFAULT_MEMORY_LIMIT_GB,
    DEFAULT_NOTEBOOK_TIMEOUT,
    DEFAULT_TIMEOUT,
)


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
        nbf = import_nbformat()
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
    cap = int(gigabytes * 2**30)
    return (
        "exec('try:\\n import resource as _r\\n _h = _r.getrlimit(_r.RLIMIT_DATA)[1]\\n"
        f" _c = {cap} if _h == _r.RLIM_INFINITY else min({cap}, _h)\\n"
        " _r.setrlimit(_r.RLIMIT_DATA, (_c, _c))\\nexcept Exception:\\n pass', {})"
    )


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
    * ends a notebook that runs longer than ``notebook_timeout`` seconds in all: the cell running then times
      out, every later code cell is marked ``NotebookTimeout`` and not run (a test cell scores 0).
    """
    global _GUARDED_EXECUTE
    if _GUARDED_EXECUTE is not None:
        return _GUARDED_EXECUTE
    from jupyter_core.utils import ensure_async, run_sync
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from nbformat.notebooknode import NotebookNode
    from nbgrader.preprocessors import Execute
    from traitlets import Float, Integer

    def error_output(ename: str, evalue: str) -> NotebookNode:
        return NotebookNode(output_type="error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"])

    class GuardedExecute(Execute):
        memory_limit_gb = Float(DEFAULT_MEMORY_LIMIT_GB, help="memory cap of each kernel in GB (0: none)").tag(
            config=True
        )
        max_restarts = Integer(3, help="kernel restarts allowed per notebook before autograde gives up").tag(
            config=True
        )
        responsive_timeout = Integer(20, help="seconds a kernel has to answer after a timed-out cell").tag(config=True)
        notebook_timeout = Integer(DEFAULT_NOTEBOOK_TIMEOUT, help="seconds for the whole notebook (0: no limit)").tag(
            config=True
        )

        def preprocess(self, nb, resources=None, km=None):
            import time

            self._skip: set[int] = set()
            self._restarts = 0
            self._deadline = time.monotonic() + self.notebook_timeout if self.notebook_timeout > 0 else None
            args = [a for a in self.extra_arguments if not a.startswith("--IPKernelApp.exec_lines=")]
            if self.memory_limit_gb and self.memory_limit_gb > 0:
                args.append("--IPKernelApp.exec_lines=" + _memory_limit_line(self.memory_limit_gb))
            self.extra_arguments = args
            return super().preprocess(nb, resources, km)

        def out_of_time(self, cell, index: int) -> bool:
            """True once the notebook's time is up: the code cell is then marked as not run (no kernel, no grader)."""
            import time

            if cell.cell_type != "code" or self._deadline is None or time.monotonic() < self._deadline:
                return False
            cell.outputs = [
                error_output(
                    "NotebookTimeout",
                    f"not run: the notebook ran longer than "
                    f"{self.notebook_timeout} s in all, and grading ended it here",
                )
            ]
            cell.execution_count = None
            self._skip.add(index)
            return True

        def _get_timeout(self, cell):
            """A cell's timeout, never past the notebook's end."""
            import time

            timeout = super()._get_timeout(cell)
            if self._deadline is None:
                return timeout
            left = max(1, int(self._deadline - time.monotonic()) + 1)
            return left if timeout is None else min(timeout, left)

        def preprocess_cell(self, cell, resources, index):
            if self.out_of_time(cell, index):
                return cell, self.resources
            hung = error_output(
                "CellTimeoutError",
                f"the cell ran longer than {self.timeout} s and the kernel "
                "did not stop when interrupted; it was restarted, the cells above were run again, "
                "and grading went on",
            )
            try:
                cell, resources = super().preprocess_cell(cell, resources, index)
            except DeadKernelError:
                cell.outputs = list(cell.get("outputs", [])) + [
                    error_output(
                        "DeadKernelError",
                        "the kernel died while running this cell (it exited, crashed or ran out of "
                        "memory); it was restarted, the cells above were run again, and grading went on",
                    )
                ]
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


def configure_nbgrader(
    c,
    *,
    root: str | os.PathLike | None = None,
    timeout: int = DEFAULT_TIMEOUT,
    add_missing_cells: bool = True,
    memory_limit_gb: float = DEFAULT_MEMORY_LIMIT_GB,
    sandbox: bool = True,
    notebook_timeout: int = DEFAULT_NOTEBOOK_TIMEOUT,
):
    """Apply labkit's grading settings to a traitlets Config ``c`` (used by the API and nbgrader_config.py).

    Autograde executes with ``labkit.course.trusted.TrustedExecute``: test cells run in the grader's own
    process and call the student's functions in the kernel; the kernel runs in the bubblewrap sandbox
    unless ``sandbox`` is False."""
    from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor
    from nbgrader.converters import Autograde
    from nbgrader.preprocessors import ClearHiddenTests, Execute

    if root is not None:
        c.CourseDirectory.root = str(root)
    # Never copy the jupytext sources (full solutions!) or caches into a release.
    c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", "*.py"]
    c.Execute.timeout = int(timeout)  # finite: a student's infinite loop must not hang the grader
    c.Execute.kernel_name = "python3"  # whatever kernel the student's notebook names (nbgrader #1375)
    c.Execute.interrupt_on_timeout = True
    # Kernel memory cap, survival of dead and hung kernels; test cells judged outside the kernel, in a sandbox.
    from labkit.course.trusted import trusted_execute_class

    executor = trusted_execute_class(guarded_execute_class())
    c.GuardedExecute.memory_limit_gb = float(memory_limit_gb or 0)
    c.GuardedExecute.notebook_timeout = int(notebook_timeout or 0)
    c.TrustedExecute.sandbox = bool(sandbox)
    c.Autograde.autograde_preprocessors = [
        executor if p is Execute else p for p in Autograde.class_traits()["autograde_preprocessors"].default()
    ]
    c.OverwriteCells.add_missing_cells = bool(add_missing_cells)
    c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
    c.GenerateFeedback.preprocessors = [
        get_grades_showing_pending(),
        RedactHiddenTestOutputs,
        ClearHiddenTests,
        CSSHTMLHeaderPreprocessor,
    ]
    from labkit.course.inert import inert_html

    inert_html(c)
    # labkit's copy of nbgrader's feedback page ("feedback", found first): points nobody has graded yet say so,
    # instead of "Score: 0.0"
    import nbgrader

    c.HTMLExporter.extra_template_basedirs = [
        str(Path(__file__).resolve().parent / "templates"),
        str(Path(nbgrader.__file__).resolve().parent / "server_extensions" / "formgrader" / "templates"),
    ]
    return c


def get_grades_showing_pending():
    """nbgrader's GetGrades, which also marks each graded cell that no one has scored yet (a written answer
    before manual grading: neither an automatic nor a manual score) as ``pending``, and sums those points."""
    from nbgrader.preprocessors import GetGrades

    class GetGradesShowingPending(GetGrades):
        def preprocess(self, nb, resources):
            self._pending = 0.0
            nb, resources = super().preprocess(nb, resources)
            resources["nbgrader"]["pending"] = self._pending
            return nb, resources

        def _get_score(self, cell, resources):
            super()._get_score(cell, resources)
            grade = self.gradebook.find_grade(
                cell.metadata["nbgrader"]["grade_id"], self.notebook_id, self.assignment_id, self.student_id
            )
            pending = grade.auto_score is None and grade.manual_score is None
            cell.metadata.nbgrader["pending"] = pending
            if pending:
                self._pending += float(grade.max_score or 0)

    return GetGradesShowingPending


class _Api:
    """NbGraderAPI whose calls run with this Python's scripts folder on PATH: nbgrader runs the
    `alembic` command when it creates a gradebook, which fails in a virtualenv that is not activated."""

    def __init__(self, api):
        self.nbgrader_api = api

    def __getattr__(self, name):
        method = getattr(self.nbgrader_api, name)
        if not callable(method):
            return method

        def call(*args, **kwargs):
            import sysconfig

            scripts = {sysconfig.get_path("scripts"), str(Path(sys.executable).parent)}
            path = os.environ.get("PATH", "")
            extra = [d for d in scripts if d and d not in path.split(os.pathsep)]
            with temporary_env(PATH=os.pathsep.join(extra + [path])):
                return method(*args, **kwargs)

        return call


def nbgrader_api(root: Path, settings=None, *, add_missing_cells: bool = True):
    """An nbgrader API for the course at ``root``, configured by ``settings`` (a ``GradingSettings``;
    default: the defaults)."""
    from nbgrader.apps import NbGraderAPI
    from traitlets.config import Config

    c = (
        settings.configure(Config(), root=root, add_missing_cells=add_missing_cells)
        if settings is not None
        else configure_nbgrader(Config(), root=root, add_missing_cells=add_missing_cells)
    )
    c.NbGraderAPI.log_level = "ERROR"
    return _Api(NbGraderAPI(config=c))


def nbgrader_failure(result: dict) -> str:
    text = (result.get("error") or "") + "\n" + (result.get("log") or "")
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return "\n".join(lines[-8:]) or "unknown error"


@contextlib.contextmanager
def temporary_env(**values):
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


# --- The course folder's own nbgrader_config.py (issue 13: manual grading in the real formgrader) ------

COURSE_CONFIG = """\
# Written by labkit: nbgrader's settings for this course folder, so that the formgrader and nbgrader's
# commands run here (generate_feedback, export, autograde) use labkit's settings, e.g. feedback that
# never shows hidden tests. Start the formgrader from this folder: jupyter lab  (Nbgrader > Formgrader).
import os

from labkit.course.settings import GradingSettings

c = get_config()  # noqa: F821 - provided by nbgrader / jupyter_server when they load this file
{settings}.configure(c, root=os.path.dirname(os.path.abspath(__file__)))
"""


def write_course_config(course: str | os.PathLike, settings=None) -> Path:
    """Write ``<course>/nbgrader_config.py``: ``settings`` (a ``GradingSettings``, default: the defaults)
    applied with this folder as the course root (found from the file's own location, so the folder may be
    moved). Returns the path."""
    path = Path(course) / "nbgrader_config.py"  # (settings.py imports this module, never the other way round)
    text = COURSE_CONFIG.format(settings=settings.source() if settings is not None else "GradingSettings()")
    path.write_text(text, encoding="utf-8")
    return path
