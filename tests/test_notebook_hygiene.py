"""The committed notebooks open clean (issue 14).

Opening a notebook in JupyterLab must not mark it modified: everything JupyterLab normalises on load is
already the way the build writes it. JupyterLab's load, step by step:

1. the server reads the file with nbformat (``as_version=4``), validates and normalises it;
2. the frontend's ``fromJSON`` drops ``metadata.orig_nbformat`` and, below nbformat 4.5, the cell ids, then
   fills in a missing ``language_info`` / ``kernelspec``;
3. as soon as the kernel starts (on open), it writes the kernel's ``language_info`` and its kernelspec
   (name, display_name, language) into the metadata; any difference marks the notebook modified.

The "no stray ``<... at 0x...>`` repr" half runs on the notebooks that tests/test_notebooks.py and
tests/test_checks_lab04_08.py already execute through nbgrader (fast mode), through ``stray_reprs`` below;
a lab neither of them grades is executed here.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import nbformat
import pytest

from labkit import colab, course

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(REPO.glob("notebooks/*.ipynb")) + sorted(REPO.glob("solutions/*/*.ipynb"))
STRAY_REPR = re.compile(r"<[^<>\n]{1,120}? at 0x[0-9a-fA-F]+>")  # <torch._C.Generator at 0x7f...>


def stray_reprs(nb, skip_test_cells: bool = False) -> list[tuple[int, str]]:
    """(cell index, repr) for every ``<something at 0x...>`` in a notebook's outputs (results, prints, errors);
    ``skip_test_cells``: not in graded test cells (an unanswered notebook's failures)."""
    found = []
    for i, cell in enumerate(nb.cells):
        if skip_test_cells and cell.get("metadata", {}).get("nbgrader", {}).get("grade"):
            continue
        for out in cell.get("outputs", []):
            texts = [out.get("text", ""), out.get("data", {}).get("text/plain", ""), out.get("evalue", "")]
            found += [(i, m) for t in texts for m in STRAY_REPR.findall("".join(t) if isinstance(t, list) else t)]
    return found


def kernel_metadata() -> tuple[dict, dict]:
    """(kernelspec, language_info) that JupyterLab writes when the python3 kernel starts, from this
    environment's kernelspec and ipykernel (what its kernel_info reply says)."""
    from ipykernel.ipkernel import IPythonKernel
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec("python3")
    return ({"name": "python3", "display_name": spec.display_name, "language": spec.language},
            dict(IPythonKernel.language_info))


def open_like_jupyterlab(text: str) -> dict:
    """The notebook model JupyterLab holds after opening ``text`` and starting its kernel (as plain dicts)."""
    from nbformat.validator import normalize

    nb = nbformat.reads(text, as_version=4)  # 1. the server
    nbformat.validate(nb)
    _, model = normalize(copy.deepcopy(dict(nb)))
    model = nbformat.from_dict(model)
    model.metadata.pop("orig_nbformat", None)  # 2. fromJSON
    if (model.nbformat, model.nbformat_minor) < (4, 5):
        for cell in model.cells:
            cell.pop("id", None)
    model.metadata.setdefault("language_info", {"name": ""})
    model.metadata.setdefault("kernelspec", {"name": "", "display_name": ""})
    kernelspec, language_info = kernel_metadata()  # 3. the kernel starts
    model.metadata["kernelspec"] = kernelspec
    model.metadata["language_info"] = language_info
    return nbformat.from_dict(model)


def test_notebooks_found():
    labs = course.discover_labs(REPO)
    assert len(NOTEBOOKS) == 2 * len(labs) >= 18


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[str(p.relative_to(REPO)) for p in NOTEBOOKS])
def test_opening_in_jupyterlab_changes_nothing(path):
    text = path.read_text(encoding="utf-8")
    as_written = nbformat.reads(text, as_version=4)
    opened = open_like_jupyterlab(text)
    assert opened.metadata == as_written.metadata, "JupyterLab would rewrite the metadata: run `labkit build`"
    assert opened == as_written


def test_old_metadata_would_be_changed():
    """The check sees the difference that made every notebook 'modified' on open: a bare language_info."""
    nb = nbformat.read(str(NOTEBOOKS[0]), as_version=4)
    nb.metadata["language_info"] = {"name": "python"}
    assert open_like_jupyterlab(nbformat.writes(nb)) != nb


def test_stray_repr_detector():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("torch.manual_seed(0)")])
    nb.cells[0].outputs = [nbformat.v4.new_output("execute_result", {"text/plain": "<torch._C.Generator at 0x7f3a2c>"},
                                                  execution_count=1)]
    assert stray_reprs(nb) == [(0, "<torch._C.Generator at 0x7f3a2c>")]
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", text="<matplotlib.legend.Legend at 0xdeadbeef>\n")]
    assert len(stray_reprs(nb)) == 1
    nb.cells[0].outputs = [nbformat.v4.new_output("error", ename="X", evalue="<function f at 0x1f>", traceback=[])]
    assert stray_reprs(nb) == [(0, "<function f at 0x1f>")]
    nb.cells[0].outputs = [nbformat.v4.new_output("execute_result", {"text/plain": "tensor([1, 2])"}, execution_count=1)]
    assert stray_reprs(nb) == []


@pytest.mark.parametrize("path", sorted(REPO.glob("notebooks/*.ipynb")), ids=lambda p: p.stem)
def test_student_notebooks_open_in_colab_from_the_configured_repository(path):
    """Each student notebook starts with the "Open in Colab" badge of labkit.colab's setting, and its install
    cell installs from the same repository."""
    nb = nbformat.read(str(path), as_version=4)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith(colab.badge_markdown(path.stem) + "\n"), first.source[:200]
    assert f"notebooks/{path.stem}.ipynb" in first.source and colab.github_slug() in first.source
    install = next(c for c in nb.cells if c.cell_type == "code")
    assert colab.pip_spec() in install.source and colab.github_slug() in colab.pip_spec()


def test_badge_follows_the_setting(monkeypatch, tmp_path):
    monkeypatch.setenv("LABKIT_GIT_URL", "git+https://github.com/my-uni/dl-labs.git@v2.0")
    assert colab.colab_url("lab01_forward") == \
        "https://colab.research.google.com/github/my-uni/dl-labs/blob/main/notebooks/lab01_forward.ipynb"
    nb = course.source_to_notebook(REPO / "solutions" / "lab01_forward" / "lab01_forward.py")
    assert "github/my-uni/dl-labs/blob/main/notebooks/lab01_forward.ipynb" in nb.cells[0].source
    assert "labkit @ git+https://github.com/my-uni/dl-labs.git@v2.0" in nb.cells[1].source
    monkeypatch.setenv("LABKIT_GIT_URL", "git+https://gitlab.example.org/a/labkit.git")  # Colab opens GitHub only
    assert colab.badge_markdown("lab01_forward") is None
    nb = course.source_to_notebook(REPO / "solutions" / "lab01_forward" / "lab01_forward.py")
    assert "colab-badge" not in nb.cells[0].source


def _labs_executed_elsewhere() -> set[str]:
    from test_checks_lab04_08 import LABS_0408
    from test_lab09 import LAB as LAB09
    from test_lab10 import LAB as LAB10
    from test_notebooks import LABS

    return set(LABS) | set(LABS_0408) | {LAB09, LAB10}  # each checks its graded outputs for stray reprs


OTHER_LABS = [lab for lab in course.discover_labs(REPO) if lab not in _labs_executed_elsewhere()]


@pytest.mark.slow
@pytest.mark.parametrize("lab", OTHER_LABS or [pytest.param("-", marks=pytest.mark.skip(
    reason="every lab is executed by tests/test_notebooks.py, test_checks_lab04_08.py, test_lab09.py or test_lab10.py"))])
def test_other_labs_run_in_fast_mode_without_stray_reprs(lab, tmp_path, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.setenv("LABKIT_FAST", "1")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))
    nb = nbformat.read(str(REPO / "solutions" / lab / f"{lab}.ipynb"), as_version=4)
    NotebookClient(nb, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert stray_reprs(nb) == []


def test_check_ignores_only_the_python_version_of_language_info():
    """The build writes the building Python's version into language_info; `labkit build --check` on another
    Python must not call the notebooks stale for that alone, and still must for anything else."""
    import json

    from labkit.course.build import _same_build
    from labkit.course.sources import notebook_json

    committed = NOTEBOOKS[0].read_text(encoding="utf-8")
    other = json.loads(committed)
    other["metadata"]["language_info"]["version"] = "3.99.1"
    assert _same_build(committed, notebook_json(nbformat.from_dict(other)))
    other["metadata"]["language_info"]["pygments_lexer"] = "python3"
    assert not _same_build(committed, notebook_json(nbformat.from_dict(other)))
    other = json.loads(committed)
    other["cells"][0]["source"] += "x"
    assert not _same_build(committed, notebook_json(nbformat.from_dict(other)))
