"""``labkit report NOTEBOOK``: one self-contained HTML file of a notebook with its outputs (lab 09's hand-in).

The HTML is nbconvert's (the same as ``jupyter nbconvert --to html --embed-images``): pictures are embedded
as base64, so the file can be mailed or uploaded alone. It is inert (``labkit.course.inert``): no script, frame
or event handler of the notebook's survives, since the person who opens it is usually not its author. nbconvert comes with Jupyter and Colab; a plain
``pip install labkit`` does not install it, and the command then says so in one line.
"""

from __future__ import annotations

from pathlib import Path

from labkit.errors import LabkitError, LabkitValueError, one_line

UNANSWERED = "YOUR ANSWER HERE"  # what nbgrader leaves in a written-answer cell of the release


def export_html(notebook, out=None) -> tuple[Path, list[str]]:
    """Write ``notebook`` (.ipynb) as one HTML file (default: beside it, same name, ``.html``).

    Returns ``(path, notes)``; notes point out what a hand-in usually lacks (cells that never ran, written
    answers still empty). Raises LabkitError (one line) when nbconvert is missing or the file is unreadable."""
    src = Path(notebook)
    if not src.is_file():
        raise LabkitValueError(f"{src}: no such notebook")
    dst = Path(out) if out is not None else src.with_suffix(".html")
    try:
        import nbformat
        from nbconvert import HTMLExporter
    except ImportError:
        raise LabkitError(
            "'labkit report' needs nbconvert: pip install nbconvert (Jupyter and Colab have it), or "
            "use jupyter's File > Save and Export Notebook As > HTML"
        ) from None
    try:
        nb = nbformat.read(str(src), as_version=4)
    except Exception as exc:  # truncated upload, not JSON, not a notebook
        raise LabkitValueError(
            f"{src} is not a readable notebook ({one_line(f'{type(exc).__name__}: {exc}', 160)})"
        ) from None
    code = [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]
    unrun = sum(1 for c in code if c.get("execution_count") is None and not c.get("outputs"))
    blank = sum(
        1
        for c in nb.cells
        if c.cell_type == "markdown"
        and (
            c.source.strip() == UNANSWERED
            or (c.metadata.get("nbgrader", {}).get("solution") and UNANSWERED in c.source)
        )
    )
    notes = []
    if unrun:
        notes.append(f"{unrun} of {len(code)} code cells have no output: run all cells, save, and export again")
    if blank:
        notes.append(
            f"{blank} written answer{'s' if blank > 1 else ''} still {'say' if blank > 1 else 'says'} {UNANSWERED!r}"
        )
    try:
        from traitlets.config import Config

        from labkit.course.inert import inert_html

        # inert: the instructor opens this file, and the notebook is the student's (see labkit.course.inert)
        body, _ = HTMLExporter(config=inert_html(Config()), embed_images=True).from_notebook_node(
            nb, resources={"metadata": {"name": src.stem, "path": str(src.parent.resolve())}, "embed_images": True}
        )
    except Exception as exc:
        raise LabkitError(f"could not export {src} to HTML ({one_line(f'{type(exc).__name__}: {exc}', 200)})") from None
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(body, encoding="utf-8")
    return dst, notes
