"""Run All on an untouched student notebook runs every cell; nbgrader still scores the tests 0 (issue 13).

Jupyter's Run All (JupyterLab, Notebook 7, classic Notebook, Colab) sends each cell with ``stop_on_error``
and stops at the first execute reply whose status is ``error``. These tests replay that with a real kernel
(jupyter_client, one cell at a time, stop at the first ``error`` reply), as the classic Notebook and Colab
frontends do; ``tests/test_browser.py`` does the same through JupyterLab in headless Chromium.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
ANSI = re.compile(r"\x1b\[[0-9;]*m")
FAKE_COLAB = "import sys, types\nsys.modules['google.colab'] = types.ModuleType('google.colab')\n"


class Kernel:
    """A real python3 kernel; ``run(code)`` -> (reply status, outputs as (kind, text) pairs)."""

    def __init__(self, **env):
        import jupyter_client

        full = dict(os.environ, LABKIT_FAST="1", MPLBACKEND="module://matplotlib_inline.backend_inline",
                    OMP_NUM_THREADS="1", **env)
        for key in [k for k, v in env.items() if v is None]:
            full.pop(key)
        self.km = jupyter_client.KernelManager(kernel_name="python3")
        self.km.start_kernel(env=full, cwd=str(REPO))
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=120)

    def run(self, code: str, timeout: float = 300):
        msg_id = self.kc.execute(code, stop_on_error=True)
        outputs = []
        while True:
            msg = self.kc.get_iopub_msg(timeout=timeout)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "status" and content["execution_state"] == "idle":
                break
            if kind == "stream":
                outputs.append((content["name"], content["text"]))
            elif kind == "error":
                outputs.append(("error", "\n".join(content["traceback"])))
            elif kind in ("execute_result", "display_data"):
                outputs.append((kind, str(content["data"].get("text/plain", ""))))
        reply = self.kc.get_shell_msg(timeout=timeout)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = self.kc.get_shell_msg(timeout=timeout)
        return reply["content"]["status"], outputs

    def close(self):
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


@pytest.fixture
def kernel_factory():
    made = []

    def make(**env):
        made.append(Kernel(**env))
        return made[-1]

    yield make
    for k in made:
        k.close()


def run_all(kernel: Kernel, nb) -> list[tuple[int, dict, str, list]]:
    """Run All as Jupyter does: every code cell in order, stopping at the first ``error`` reply."""
    ran = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        status, outputs = kernel.run(cell.source)
        ran.append((i, cell.metadata.get("nbgrader", {}), status, outputs))
        if status != "ok":
            break
    return ran


def _text(outputs) -> str:
    return ANSI.sub("", "".join(text for _, text in outputs))


def _assert_every_cell_ran_with_friendly_checks(nb, ran):
    code_cells = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    stopped = [(i, _text(o)[-600:]) for i, _, s, o in ran if s != "ok"]
    assert not stopped, f"Run All stopped at cell {stopped}"
    assert [i for i, *_ in ran] == code_cells, "the last cell did not run"
    tests = [(i, md, o) for i, md, _, o in ran if md.get("grade") and not md.get("solution")]
    assert tests, "no test cell in the notebook"
    for i, md, outputs in tests:
        text = _text(outputs)
        assert "not implemented yet" in text and "\u2718 check_" in text, (i, text)
        assert [kind for kind, _ in outputs] == ["stderr"], (i, outputs)  # one message, no error output
        assert "Traceback" not in text and "_common.py" not in text and "CheckFailed" not in text, text
        assert len(text.strip().splitlines()) <= 3, text


@pytest.mark.slow
@pytest.mark.parametrize("frontend", ["notebook", "colab"])
def test_run_all_runs_every_cell_of_untouched_lab01(kernel_factory, frontend):
    nb = nbformat.read(str(REPO / "notebooks" / "lab01_forward.ipynb"), as_version=4)
    kernel = kernel_factory(NBGRADER_EXECUTION=None)
    if frontend == "colab":  # the notebook's setup cell takes its Colab branch (labkit is importable: no pip)
        assert kernel.run(FAKE_COLAB)[0] == "ok"
    ran = run_all(kernel, nb)
    _assert_every_cell_ran_with_friendly_checks(nb, ran)
    setup = _text(ran[0][3])
    assert ("Colab" in setup) == (frontend == "colab"), setup
    widget = [o for i, md, s, o in ran if "noise_slider" in nb.cells[i].source]
    assert widget and any(kind == "display_data" for kind, _ in widget[0]), widget


@pytest.mark.slow
@pytest.mark.parametrize("lab", ["lab05_sampling", "lab07_improvements"])
def test_run_all_untouched_sampling_labs_run_every_cell(kernel_factory, lab):
    """Labs 05 and 07 run the student's loops when they pass their checks: untouched, labkit's run instead."""
    nb = nbformat.read(str(REPO / "notebooks" / f"{lab}.ipynb"), as_version=4)
    ran = run_all(kernel_factory(NBGRADER_EXECUTION=None), nb)
    _assert_every_cell_ran_with_friendly_checks(nb, ran)
    text = "".join(_text(o) for *_, o in ran)
    assert "Using labkit's" in text and "Using your" not in text


@pytest.mark.slow
def test_under_nbgrader_a_failed_check_is_an_error_even_if_a_student_installs_the_hook(kernel_factory):
    """nbgrader sets NBGRADER_EXECUTION: the check cell replies ``error`` (scored 0), with the short message
    as its traceback; installing the hook from an answer cell changes nothing."""
    kernel = kernel_factory(NBGRADER_EXECUTION="autograde")
    for code in ("from labkit import colab\nDEVICE = colab.setup()",
                 "from labkit.checks import lab01_forward as checks\nfrom labkit import runall as _interactive\n"
                 "def snr(alpha_bars):\n    raise NotImplementedError()",
                 "import os\nos.environ.pop('NBGRADER_EXECUTION', None) and None\n"
                 "_interactive.install()\nos.environ['NBGRADER_EXECUTION'] = 'autograde'"):
        assert kernel.run(code)[0] == "ok"
    status, outputs = kernel.run("checks.check_snr(snr)")
    assert status == "error"
    assert [kind for kind, _ in outputs] == ["error"]
    tb = _text(outputs)
    assert "\u2718 check_snr: not implemented yet" in tb and "_common.py" not in tb


@pytest.mark.slow
def test_custom_exception_handlers_do_not_make_the_reply_ok(kernel_factory):
    """Why the hook rewrites the cell: with ``set_custom_exc`` (or ``_render_traceback_``) the student sees
    a short message, but the reply is still ``error`` and Run All would stop there."""
    kernel = kernel_factory(NBGRADER_EXECUTION=None)
    status, _ = kernel.run("from labkit.checks import CheckFailed\n"
                           "get_ipython().set_custom_exc((CheckFailed,), lambda *a, **k: print('handled'))")
    assert status == "ok"
    status, outputs = kernel.run("raise CheckFailed('check_x: wrong')")
    assert status == "error" and "handled" in _text(outputs)


# --- the hook in an in-process IPython (cheap) -----------------------------------------------------

@pytest.fixture
def shell(monkeypatch):
    IPython = pytest.importorskip("IPython")
    from IPython.core.interactiveshell import InteractiveShell

    from labkit import runall as _interactive

    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    sh = InteractiveShell.instance()
    before = list(sh.ast_transformers)
    assert _interactive.install(sh) and _interactive.install(sh)  # idempotent
    assert sum(isinstance(t, _interactive.FriendlyChecks) for t in sh.ast_transformers) == 1
    sh.run_cell("from labkit.checks import lab01_forward as checks\nimport torch", store_history=False)
    yield sh
    sh.ast_transformers[:] = before
    assert IPython


def test_failed_check_cell_succeeds_with_one_message(shell, capsys):
    shell.run_cell("def snr(a):\n    return a / (1 + a)", store_history=False)
    result = shell.run_cell("checks.check_snr(snr)\nAFTER = 1", store_history=False)
    err = ANSI.sub("", capsys.readouterr().err)
    assert result.success
    assert err.startswith("\u2718 check_snr: wrong values") and "Traceback" not in err
    assert "AFTER" not in shell.user_ns  # the rest of the failed test cell is skipped, as when it raised


def test_error_in_student_code_names_their_line(shell, capsys):
    shell.run_cell("def snr(alpha_bars):\n    x = 1\n    return alpha_bars / (1 - alpha_bars[10 ** 6])",
                   store_history=False)
    assert shell.run_cell("checks.check_snr(snr)", store_history=False).success
    err = ANSI.sub("", capsys.readouterr().err)
    assert "your function raised" in err
    assert "in your code: `snr`, line 3: return alpha_bars / (1 - alpha_bars[10 ** 6])" in err, err
    assert "_common.py" not in err


def test_other_cells_and_other_errors_are_untouched(shell, capsys):
    assert not shell.run_cell("1 / 0", store_history=False).success  # not a check: still an error
    result = shell.run_cell("def check_mine():\n    raise ValueError('mine')\ncheck_mine()", store_history=False)
    assert not result.success and isinstance(result.error_in_exec, ValueError)  # only CheckFailed is caught
    assert shell.run_cell("40 + 2", store_history=False).result == 42  # last expression still displayed
    assert "\u2718" not in capsys.readouterr().err


def test_correct_answer_prints_the_pass_line(shell, capsys):
    shell.run_cell("def snr(a):\n    return a / (1 - a)", store_history=False)
    assert shell.run_cell("checks.check_snr(snr)", store_history=False).success
    out = capsys.readouterr()
    assert "\u2714 check_snr passed" in out.out and out.err == ""


def test_hook_reraises_while_grading(shell, monkeypatch, capsys):
    shell.run_cell("def snr(a):\n    raise NotImplementedError()", store_history=False)
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    result = shell.run_cell("checks.check_snr(snr)", store_history=False)
    from labkit.checks import CheckFailed

    assert not result.success and isinstance(result.error_in_exec, CheckFailed)


def test_setup_installs_the_hook_only_outside_nbgrader(monkeypatch):
    from labkit import colab
    from labkit import runall as _interactive

    calls = []
    monkeypatch.setattr(_interactive, "install", lambda *a, **k: calls.append(1) or True)
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    colab.setup(verbose=False)
    assert calls == []
    monkeypatch.delenv("NBGRADER_EXECUTION")
    colab.setup(verbose=False)
    assert calls == [1]
