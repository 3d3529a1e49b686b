"""Proofs that removed code was dead (issue 27, item 6), kept as tests so that it stays so.

``RELOAD_CHECKS`` re-executed the ``labkit.checks`` modules inside the student's kernel before each graded
test cell (``GuardedExecute.preprocess_cell``), when test cells still ran in the kernel. Autograde's executor
is ``TrustedExecute`` (``configure_nbgrader``), which judges every graded test cell in the grader's own
process with a fresh import of the checks and never hands such a cell to ``GuardedExecute``: the test below
shows that no graded test cell reaches the kernel path, so the reload had nothing left to protect.
"""

from __future__ import annotations

import nbformat
import pytest


def _autograde_executor():
    from nbgrader.converters import Autograde
    from traitlets.config import Config

    from labkit.course.nbgrader_setup import configure_nbgrader

    c = configure_nbgrader(Config())
    pre = list(c.Autograde.autograde_preprocessors)
    default = Autograde.class_traits()["autograde_preprocessors"].default()
    changed = [p for p in pre if p not in default]
    assert len(changed) == 1, changed
    return changed[0]


def test_autograde_never_sends_a_graded_test_cell_to_the_kernel(monkeypatch):
    from labkit.course.nbgrader_setup import guarded_execute_class

    executor = _autograde_executor()
    guarded = guarded_execute_class()
    assert executor.__name__ == "TrustedExecute" and issubclass(executor, guarded)
    to_kernel, judged = [], []
    monkeypatch.setattr(guarded, "preprocess_cell", lambda self, cell, resources, index: to_kernel.append(index))
    monkeypatch.setattr(executor, "_judge", lambda self, cell, index: judged.append(index) or cell)
    ex = executor.__new__(executor)
    ex._deadline = None  # (what preprocess sets up: no notebook time limit)
    test_cell = nbformat.v4.new_code_cell("check_snr(snr)", metadata={
        "nbgrader": {"grade": True, "solution": False, "grade_id": "test_snr", "points": 1}})
    answer = nbformat.v4.new_code_cell("def snr(a): ...", metadata={
        "nbgrader": {"grade": False, "solution": True, "grade_id": "snr"}})
    plain = nbformat.v4.new_code_cell("x = 1")
    for i, cell in enumerate([answer, test_cell, plain, test_cell]):
        ex.preprocess_cell(cell, {}, i)
    assert judged == [1, 3] and to_kernel == [0, 2]  # test cells: judged here; the rest: run in the kernel


def test_reload_checks_is_gone():
    import labkit.course as course
    from labkit.course import nbgrader_setup

    assert not hasattr(nbgrader_setup, "RELOAD_CHECKS")
    with pytest.raises(AttributeError):
        course.RELOAD_CHECKS  # noqa: B018
    assert "reload_checks" not in nbgrader_setup.guarded_execute_class().class_traits()
