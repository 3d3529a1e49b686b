"""Every claim a lab's text makes about its outputs holds when the lab runs as a student runs it (issue 26).

Each lab with ``claims.check`` cells runs top to bottom in normal mode (LABKIT_FAST unset: the real step
budgets, real MNIST) on this machine's CPU; the test fails when a claim does not hold, or when a claim in the
source printed nothing (a cell skipped it). Minutes to tens of minutes per lab on 2 CPU cores: marked
``benchmark`` (not in the default run, nor in CI). Run it with

    LABKIT_DATA=../shared/data/mnist pytest -m benchmark tests/test_claims_normal.py [-k lab02]

and record the outcome in docs/claims.md (``LABKIT_UPDATE_DOCS=1`` rewrites that lab's row). With
``LABKIT_RUNS_FROM=<folder>`` that runs folder (what earlier labs saved: lab 03's ``my_unet.py``) is copied
beside the notebook first, so labs 04 and 10 train the student's own U-Net as they do in a course. With
``LABKIT_SAVE_NOTEBOOK=<folder>`` the executed notebook (figures included) is written there, to read the outputs
against the text as a student would.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import pytest

from labkit.checks import claims

pytestmark = [pytest.mark.benchmark, pytest.mark.realdata, pytest.mark.timeout(3 * 3600)]  # not the default 600 s

REPO = Path(__file__).resolve().parents[1]
LABS = sorted(p.parent.name for p in (REPO / "solutions").glob("lab*/lab*.py")
              if "claims.check(" in p.read_text())


def claims_in_source(lab: str) -> int:
    return len(re.findall(r"\bclaims\.check\(", (REPO / "solutions" / lab / f"{lab}.py").read_text()))


@pytest.mark.parametrize("lab", LABS)
def test_every_claim_holds_in_normal_mode(lab, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    data = os.environ.get("LABKIT_DATA") or str(REPO.parent / "shared" / "data" / "mnist")
    if not Path(data).is_dir():
        pytest.skip("needs the real MNIST files (LABKIT_DATA)")
    monkeypatch.setenv("LABKIT_DATA", data)
    monkeypatch.delenv("LABKIT_FAST", raising=False)
    saved = os.environ.get("LABKIT_SAVE_NOTEBOOK")  # a folder: keep the executed notebook, figures included
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline" if saved else "Agg")
    shutil.copy(REPO / "solutions" / lab / f"{lab}.ipynb", tmp_path / f"{lab}.ipynb")
    runs = os.environ.get("LABKIT_RUNS_FROM")  # a runs folder from earlier labs (lab 03's my_unet.py, lab 04's run)
    if runs:
        shutil.copytree(runs, tmp_path / "runs")
    nb = nbformat.read(str(tmp_path / f"{lab}.ipynb"), as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, timeout=3600, resources={"metadata": {"path": str(tmp_path)}}).execute()
    minutes = (time.perf_counter() - start) / 60
    if saved:  # a folder, made here when missing, so a finished run is never lost to a missing folder
        Path(saved).mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, str(Path(saved) / f"{lab}.ipynb"))
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
                     if o.get("output_type") == "stream")
    found = claims.outcomes(text)
    print(f"{lab}: {len(found['holds'])} claims hold, {len(found['fails'])} fail, {minutes:.1f} min")
    for line in found["holds"] + found["fails"]:
        print("  ", line)
    assert found["fails"] == [], f"{lab}: claims that this normal-mode run refutes: {found['fails']}"
    assert found["unchecked"] == []
    assert len(found["holds"]) == claims_in_source(lab), "a claim in the source printed nothing"
    if os.environ.get("LABKIT_UPDATE_DOCS"):
        record(lab, found["holds"], minutes)


def record(lab: str, holds: list[str], minutes: float) -> None:
    """Rewrite ``lab``'s section of docs/claims.md with the claims this run checked."""
    import platform

    import torch

    doc = REPO / "docs" / "claims.md"
    text = doc.read_text()
    body = (f"## {lab}\n\n{len(holds)} claims, all holding; normal mode on {os.cpu_count()} CPU cores "
            f"({torch.backends.cpu.get_cpu_capability()}, {platform.machine()}, load "
            f"{os.getloadavg()[0]:.1f} at the end), {minutes:.0f} min, {time.strftime('%Y-%m-%d')}.\n\n"
            + "".join(f"- {h}\n" for h in holds) + "\n")
    pattern = re.compile(rf"^## {lab}\n.*?(?=^## |\Z)", re.M | re.S)
    text = pattern.sub(lambda m: body, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + body
    doc.write_text(text)
