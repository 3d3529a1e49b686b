"""Where the labs live and how a lab source (a jupytext percent script) becomes a notebook."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Sequence

from labkit.errors import LabkitError


SOURCE_DIR = "solutions"
STUDENT_DIR = "notebooks"
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


def language_info() -> dict:
    """The notebook's ``language_info`` as ipykernel reports it for this Python.

    JupyterLab writes the kernel's language_info into a notebook as soon as its kernel starts, which marks
    the notebook modified unless it is already there: the build writes it in full. ``version`` is the
    Python that built the notebook; ``labkit build --check`` ignores it.
    """
    return {
        "codemirror_mode": {"name": "ipython", "version": 3},
        "file_extension": ".py",
        "mimetype": "text/x-python",
        "name": "python",
        "nbconvert_exporter": "python",
        "pygments_lexer": "ipython3",
        "version": sys.version.split()[0],
    }


def notebook_metadata(nbf):
    """The metadata of every built notebook: the python3 kernelspec and the kernel's language_info."""
    return nbf.from_dict({"kernelspec": dict(KERNELSPEC), "language_info": language_info()})


DEFAULT_TIMEOUT = 120  # seconds per cell while autograding (fast mode keeps every cell far below this)
DEFAULT_NOTEBOOK_TIMEOUT = 600  # seconds for a whole notebook, restarts included (a lab in fast mode: ~20 s)
DEFAULT_MEMORY_LIMIT_GB = 4.0  # memory cap of each autograde kernel (RLIMIT_DATA); a lab in fast mode needs < 1 GB
BEGIN_HIDDEN = "### BEGIN HIDDEN TESTS"
SOLUTION_RE = re.compile(r"^[ \t]*### BEGIN SOLUTION[ \t]*\n(.*?)^[ \t]*### END SOLUTION[ \t]*$", re.S | re.M)
ALLOWED_BESIDE_SOURCE = {".ipynb_checkpoints", "__pycache__"}


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
    raise LabkitError(
        f"no '{SOURCE_DIR}/' folder found above {here}: run this inside the labkit repository or pass --repo PATH"
    )


def discover_labs(repo_root: str | os.PathLike) -> list[str]:
    """Every ``solutions/<lab>/`` folder that holds ``<lab>.py``, sorted by name (lab00_..., lab01_...)."""
    src = Path(repo_root) / SOURCE_DIR
    if not src.is_dir():
        return []
    return sorted(d.name for d in src.iterdir() if d.is_dir() and (d / f"{d.name}.py").exists())


def select_labs(labs: Sequence[str] | None, known: Sequence[str]) -> list[str]:
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


def import_nbformat():
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
            raise LabkitError(
                f"{name}, cell {i}: solution markers in a cell that is not a solution cell "
                "(they would ship to students)"
            )
        if BEGIN_HIDDEN in cell.source and not md.get("grade"):
            raise LabkitError(f"{name}, cell {i}: hidden tests are only allowed in graded test cells")
        if cell.cell_type == "code" and re.search(r"^\s*from\s+\S+\s+import\s+\*", cell.source, re.M):
            raise LabkitError(f"{name}, cell {i}: no `import *` in the labs; import modules by name")


def source_to_notebook(py_path: str | os.PathLike):
    """Read a lab source (jupytext percent script) into a clean, validated notebook.

    Deterministic: cell ids come from grade ids (or the cell's position), notebook metadata is just the
    python3 kernelspec and language_info, the setup cell's ``INSTALL_MARKER`` line becomes
    ``labkit.colab.install_cell()`` (the Colab install, with ``pip_spec()``) and the
    first markdown cell an "Open in Colab" badge (``labkit.colab.badge_markdown``) when the repository is on GitHub.
    """
    import jupytext

    from labkit import colab

    py_path = Path(py_path)
    nbf = import_nbformat()
    nb = jupytext.read(py_path, fmt="py:percent")
    nb.nbformat, nb.nbformat_minor = 4, 5
    nb.metadata = notebook_metadata(nbf)
    badge = colab.badge_markdown(py_path.stem)
    first_markdown = next((c for c in nb.cells if c.cell_type == "markdown"), None)
    if badge and first_markdown is not None:
        first_markdown.source = f"{badge}\n\n{first_markdown.source}"
    for i, cell in enumerate(nb.cells):
        md = cell.metadata.get("nbgrader")
        cell.metadata = nbf.from_dict({"nbgrader": dict(md)} if md else {})
        cell.source = _with_install_cell(cell.source, colab)
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    validate_nbgrader_metadata(nb, py_path.name)  # grade ids are now valid and unique: use them as cell ids
    for i, cell in enumerate(nb.cells):
        md = cell.metadata.get("nbgrader")
        cell.id = md["grade_id"] if md else f"cell-{i:03d}"
    nbf.validate(nb)
    return nb


def _with_install_cell(source: str, colab) -> str:
    """The setup cell's marker line replaced by the Colab install lines (one template for every lab)."""
    lines = source.split("\n")
    out = [colab.install_cell() if line.startswith(colab.INSTALL_MARKER) else line for line in lines]
    return "\n".join(out)


def notebook_json(nb) -> str:
    """The canonical text of a notebook (what is written and compared)."""
    return import_nbformat().writes(nb) + "\n"
