"""While a student works: a failed check prints one red message and does not fail its cell, so Run All goes on.

Jupyter's Run All (JupyterLab, Notebook 7, classic Notebook, Colab) sends every cell with
``stop_on_error``: the first cell whose execute reply has status ``error`` stops it, and every later cell
stays unrun. An exception *handler* cannot help: with ``set_custom_exc`` or ``_render_traceback_`` IPython
still records the error and ipykernel still replies ``error`` (verified with a real kernel,
``tests/test_runall.py``). So ``install()`` registers an IPython AST transformer that wraps a cell which
calls a check (a top-level statement ``checks.check_<name>(...)`` or ``check_<name>(...)``, i.e. the test
cells) in::

    try:
        <the cell>
    except labkit.checks._common.CheckFailed as e:
        if not labkit.runall.report(e):
            raise

``report`` prints the check's message (red, on stderr) and returns True, so the cell ends normally and Run
All goes on to the next cell. Every other exception, and every other cell, is left alone.

Grading is never affected:

* ``labkit.colab.setup()`` installs it only when nbgrader is not executing the notebook (nbgrader sets
  ``NBGRADER_EXECUTION`` for autograde and validate);
* ``report`` itself checks ``NBGRADER_EXECUTION`` again at the moment of the failure and then returns
  False (the exception propagates, the test cell scores 0), so a student who installs the hook in an answer
  cell gains nothing;
* the check functions still raise ``CheckFailed`` (a grader that runs the test cells in its own process
  calls them directly, without this hook).
"""

from __future__ import annotations

import ast
import os
import sys

MARK = "_labkit_friendly_checks"  # attribute that identifies our transformer (also across module reloads)


def grading() -> bool:
    return bool(os.environ.get("NBGRADER_EXECUTION"))


def report(exc: BaseException) -> bool:
    """Show a failed check as one message instead of an error; False (re-raise) while nbgrader grades."""
    if grading():
        return False
    friendly = getattr(exc, "friendly", None)
    text = friendly() if callable(friendly) else f"\u2718 {exc}"
    print(text + "\n(this test scores 0 until it passes; the cells below still run)", file=sys.stderr, flush=True)
    return True


def _is_check_call(node: ast.stmt) -> bool:
    if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)):
        return False
    func = node.value.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    return name.startswith("check_")


_HANDLER = """
try:
    pass
except __import__("labkit.checks._common", fromlist=["CheckFailed"]).CheckFailed as _labkit_check_failed:
    if not __import__("labkit.runall", fromlist=["report"]).report(_labkit_check_failed):
        raise
    del _labkit_check_failed
"""


class FriendlyChecks(ast.NodeTransformer):
    """IPython AST transformer: wrap cells that call a check (see the module docstring)."""

    _labkit_friendly_checks = True

    def visit_Module(self, node: ast.Module) -> ast.Module:
        try:
            if not node.body or not any(_is_check_call(stmt) for stmt in node.body):
                return node
            template = ast.parse(_HANDLER).body[0]
            first, last = node.body[0], node.body[-1]
            end = getattr(last, "end_lineno", None) or last.lineno
            for n in ast.walk(template):  # the handler's own lines point at the cell's last line
                if hasattr(n, "lineno"):
                    n.lineno = n.end_lineno = end
                    n.col_offset = n.end_col_offset = 0
            template.lineno, template.col_offset = first.lineno, first.col_offset
            template.body = node.body
            node.body = [template]
            return ast.fix_missing_locations(node)
        except Exception:  # never break a student's cell (IPython would also unregister us)
            return node


def install(shell=None) -> bool:
    """Register ``FriendlyChecks`` in the running IPython (once; replaces an older copy). False when there
    is no IPython or nbgrader is executing the notebook."""
    if grading():
        return False
    if shell is None:
        try:
            from IPython import get_ipython
        except ImportError:
            return False
        shell = get_ipython()
    if shell is None or not hasattr(shell, "ast_transformers"):
        return False
    shell.ast_transformers[:] = [t for t in shell.ast_transformers if not getattr(t, MARK, False)]
    shell.ast_transformers.append(FriendlyChecks())
    return True


def uninstall(shell=None) -> None:
    if shell is None:
        from IPython import get_ipython

        shell = get_ipython()
    if shell is not None:
        shell.ast_transformers[:] = [t for t in shell.ast_transformers if not getattr(t, MARK, False)]
