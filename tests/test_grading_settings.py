"""``GradingSettings`` (issue 27, item 2): one frozen value for how a submission is graded, fingerprinted for
the cluster's manifest and written once into nbgrader's configuration."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import pytest

from labkit.course.settings import GradingSettings

REPO = Path(__file__).resolve().parents[1]


def test_frozen_normalised_and_picklable():
    s = GradingSettings(timeout="30", memory_limit_gb=None, sandbox=0, notebook_timeout=None)
    assert (s.timeout, s.memory_limit_gb, s.sandbox, s.notebook_timeout) == (30, 0.0, False, 0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.timeout = 5
    assert pickle.loads(pickle.dumps(s)) == s and hash(s) == hash(GradingSettings(30, 0, 0.0, False))
    with pytest.raises(ValueError, match="timeout"):
        GradingSettings(timeout=0)


def test_fingerprint_holds_what_a_score_depends_on():
    base = GradingSettings()
    assert base.fingerprint() == [120, 4.0, True]  # the form manifests have always hashed
    for change in ({"timeout": 60}, {"memory_limit_gb": 2}, {"sandbox": False}, {"notebook_timeout": 300}):
        assert base.with_(**change).fingerprint() != base.fingerprint(), change
    assert base.with_(feedback=False).fingerprint() == base.fingerprint()  # only writes pages


def test_the_course_config_is_one_call_into_the_settings(tmp_path):
    from traitlets.config.loader import PyFileConfigLoader

    from labkit.course.nbgrader_setup import write_course_config

    s = GradingSettings(timeout=77, memory_limit_gb=1.5, sandbox=False, notebook_timeout=300)
    path = write_course_config(tmp_path, s)
    assert "GradingSettings(timeout=77, notebook_timeout=300, memory_limit_gb=1.5, sandbox=False)" in path.read_text()
    c = PyFileConfigLoader(path.name, path=str(tmp_path)).load_config()
    assert (c.Execute.timeout, c.GuardedExecute.memory_limit_gb, c.TrustedExecute.sandbox,
            c.GuardedExecute.notebook_timeout) == (77, 1.5, False, 300)
    assert c.CourseDirectory.root == str(tmp_path)
    (tmp_path / "d").mkdir()
    default = PyFileConfigLoader(write_course_config(tmp_path / "d").name, path=str(tmp_path / "d")).load_config()
    assert default.Execute.timeout == GradingSettings().timeout


def test_the_repository_config_uses_the_defaults_with_no_literal():
    from traitlets.config.loader import PyFileConfigLoader

    text = (REPO / "nbgrader_config.py").read_text()
    assert "GradingSettings().configure(c)" in text and "timeout=" not in text
    c = PyFileConfigLoader("nbgrader_config.py", path=str(REPO)).load_config()
    d = GradingSettings()
    assert (c.Execute.timeout, c.GuardedExecute.memory_limit_gb, c.GuardedExecute.notebook_timeout,
            c.TrustedExecute.sandbox) == (d.timeout, d.memory_limit_gb, d.notebook_timeout, d.sandbox)


def test_the_command_line_builds_one_value():
    import argparse

    from labkit.course.cli import add_grade_arguments, settings_from_args

    args = add_grade_arguments(argparse.ArgumentParser()).parse_args(
        ["subs", "--timeout", "45", "--memory-limit", "0", "--unsafe-no-sandbox", "--no-feedback",
         "--notebook-timeout", "200"])
    assert settings_from_args(args) == GradingSettings(45, 200, 0.0, False, False)
    plain = add_grade_arguments(argparse.ArgumentParser()).parse_args(["subs"])
    assert settings_from_args(plain) == GradingSettings()


# --- status: an enum, decided in one place ---------------------------------------------------------------


def test_status_is_decided_from_points_outcomes_and_review():
    from labkit.course.results import decide_status, GradeResult, Status

    assert decide_status(scored=True) is Status.GRADED
    assert decide_status(scored=True, review=True) is Status.NEEDS_REVIEW
    assert decide_status(scored=True, needs_manual_test=True, review=True) is Status.NEEDS_MANUAL_GRADING
    assert decide_status(scored=True, execution="kernel died", needs_manual_test=True) is Status.KERNEL_DIED
    assert decide_status(scored=True, execution="out of memory", review=True) is Status.OUT_OF_MEMORY
    assert decide_status(scored=False, execution="kernel died", review=True) is Status.FAILED
    r = GradeResult("ann", "lab00_setup", status="graded")  # a manifest line gives the plain string
    assert r.status is Status.GRADED and r.status == "graded" and f"{r.status}" == str(r.status) == "graded"
    r.status = "needs review"
    assert r.status is Status.NEEDS_REVIEW
    with pytest.raises(ValueError):
        r.status = "fine I guess"


def test_no_status_is_assigned_as_a_bare_string():
    """Every ``.status = ...`` in labkit/course names a Status or calls decide_status."""
    import re

    bare = re.compile(r"""\.status(?:, [\w.]+)* = ["']""")
    found = [f"{p.name}:{i}" for p in (REPO / "labkit" / "course").glob("*.py")
             for i, line in enumerate(p.read_text().splitlines(), 1) if bare.search(line)]
    assert found == []
