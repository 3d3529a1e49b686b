"""Shared test fixtures.

Real MNIST: tests marked ``realdata`` use the folder named by LABKIT_DATA, else ../shared/data/mnist
beside the checkout (as in CI); on a machine with neither they are skipped, and everything else still
runs on synthetic digits.
"""

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def real_mnist_dir() -> Path | None:
    env = os.environ.get("LABKIT_DATA")
    if env and Path(env).exists():
        return Path(env)
    shared = REPO.parent / "shared" / "data" / "mnist"
    return shared if shared.exists() else None


@pytest.fixture
def mnist_dir() -> Path:
    d = real_mnist_dir()
    if d is None:
        pytest.skip("real MNIST not available (set LABKIT_DATA or place it at ../shared/data/mnist)")
    return d


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Each test session unpacks MNIST into its own cache, never into the user's ~/.cache."""
    cache = tmp_path_factory.getbasetemp() / "labkit-cache"
    monkeypatch.setenv("LABKIT_CACHE", str(cache))


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """One torch thread for the whole run: the tests use small tensors, where a second thread only adds
    synchronisation, and on a CPU shared with other jobs OpenMP threads spin-wait for each other
    (measured up to 10x slower with two)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


_SANDBOX: dict = {}


def sandbox_problem() -> str | None:
    """Why the grading sandbox (bubblewrap) cannot start here, or None (probed once per test run)."""
    if "why" not in _SANDBOX:
        from labkit.course.sandbox import probe

        _SANDBOX["why"] = probe()
    return _SANDBOX["why"]


def pytest_collection_modifyitems(config, items):
    """Tests that grade (marked ``nbgrader``) need the bubblewrap sandbox, which ``labkit grade`` refuses to
    grade without: .ci/run installs it; elsewhere they are skipped with the reason."""
    grading = [item for item in items if item.get_closest_marker("nbgrader")]
    if grading and sandbox_problem():
        skip = pytest.mark.skip(reason=f"grading sandbox unavailable: {sandbox_problem()}")
        for item in grading:
            item.add_marker(skip)


# --- Grading a folder of submissions, as the grading tests do -----------------------------------------------


def copy_solution_and_release(folder: Path, labs) -> None:
    """``folder/solution/<lab>.ipynb`` (the instructor's solution) and ``folder/blank/<lab>.ipynb`` (the
    untouched student release) for each lab: the two submissions every lab must grade right."""
    import shutil

    for lab in labs:
        for student, src in (("solution", REPO / "solutions" / lab / f"{lab}.ipynb"),
                             ("blank", REPO / "notebooks" / f"{lab}.ipynb")):
            (folder / student).mkdir(parents=True, exist_ok=True)
            shutil.copy(src, folder / student / f"{lab}.ipynb")


def grade_folder(submissions: Path, out: Path, labs, **options) -> list:
    """``course.grade_submissions`` with a private LABKIT_CACHE beside ``out`` and, when LABKIT_DATA is unset,
    the real MNIST of ../shared (usable from module-scoped fixtures, which cannot take ``monkeypatch``)."""
    from labkit import course

    mp = pytest.MonkeyPatch()
    mp.setenv("LABKIT_CACHE", str(out.parent / "cache"))
    shared = REPO.parent / "shared" / "data" / "mnist"
    if not os.environ.get("LABKIT_DATA") and shared.exists():
        mp.setenv("LABKIT_DATA", str(shared))
    try:
        return course.grade_submissions(submissions, out, labs, repo_root=REPO, **options)
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def bwrap():
    """Skips a test where bubblewrap cannot start a sandbox here (the reason says why)."""
    from labkit.course import sandbox

    why = sandbox.probe()
    if why:
        pytest.skip(why)


def run_sandboxed(code: str, **limits):
    """``python -c code`` in a fresh grading sandbox with these ``sandbox.Limits``; the CompletedProcess."""
    import subprocess
    import sys

    from labkit.course import sandbox

    box = sandbox.Sandbox.create(limits=sandbox.Limits(**limits))
    try:
        return subprocess.run(box.wrap([sys.executable, "-c", code], quiet=False), capture_output=True, text=True,
                              timeout=120, stdin=subprocess.DEVNULL)
    finally:
        box.cleanup()
