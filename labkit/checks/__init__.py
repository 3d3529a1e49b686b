"""Checks for the lab exercises: one module per lab, one ``check_<exercise>`` per exercise.

A check calls the student's function on fresh seeded inputs of several shapes, compares the answer
with the reference using plain tensor arithmetic, prints one line on success, and raises an
AssertionError (``CheckFailed``) that names the mistake when it recognises it. Visible tests in the
notebooks call a check with ``seed=0``; hidden tests with other seeds and sizes.

Import a lab's checks by name: ``from labkit.checks import lab01_forward as checks``.
"""

from labkit.checks._common import CheckFailed

__all__ = ["CheckFailed"]
