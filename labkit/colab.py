"""The notebook's environment: Colab install, device, fast mode and lab data.

Every lab notebook starts with the same cell of plain Python (labkit may not be importable yet). In Colab,
and only there, it ``pip install``s ``pip_spec()`` with a constraints file that pins every package already
installed to its version: pip may add packages but never upgrade or downgrade one of Colab's (an unpinned
install of open_clip_torch once moved jupyter-client 6 -> 7, jupyter-server 1 -> 2 and anyio 3 -> 4, which
breaks the runtime). ``tests/test_colab_install.py`` runs that cell in a Colab-like virtualenv and checks it.

Where the URL comes from: ``LABKIT_GIT_URL`` below (or the environment variable ``LABKIT_GIT_URL`` at build
time). It ships as the placeholder ``git+https://github.com/YOUR-ORG/labkit.git``: an instructor replaces
YOUR-ORG/labkit by the course's public repository (a tag after ``@`` pins the version students install) and
runs ``labkit build``, which writes the URL into every notebook's install cell and an "Open in Colab" badge
(``badge_markdown``, main branch) into each notebook's first cell; ``scripts/make_doc_figures.py --tables``
writes the same links into docs/students.md.

What gets installed in Colab is labkit and its core dependencies only (torch, torchvision, numpy,
matplotlib, ipywidgets>=7.6, tqdm, open_clip_torch): Colab pins its own ipykernel / jupyter stack and a
``pip install`` that pulls jupyterlab or nbgrader upgrades them and breaks the runtime (colabtools #2837).
Those live in labkit's optional extras ("course", "instructor") and are never installed here.

Fast mode (``fast_mode()``) is on when LABKIT_FAST=1 (CI) or when nbgrader executes the notebook
(it sets NBGRADER_EXECUTION): every expensive cell then runs a few steps instead of a minute.
"""

from __future__ import annotations

import os
import platform
import re
import sys

# To be set by the instructor: the git repository students install labkit from in Colab, and whose
# notebooks/ the "Open in Colab" badges open. Replace YOUR-ORG/labkit by your repository, then run
# ``labkit build`` (and ``python scripts/make_doc_figures.py --tables`` for docs/students.md); LABKIT_GIT_URL
# in the environment overrides it at build time. A tag (``...labkit.git@v1.0``) pins the version installed.
LABKIT_GIT_URL = "git+https://github.com/YOUR-ORG/labkit.git"

PLACEHOLDER = "__LABKIT_PIP_SPEC__"  # in INSTALL_CELL: replaced by pip_spec() at build time
INSTALL_MARKER = "# __LABKIT_COLAB_INSTALL__"  # the line each lab source's setup cell holds; the build writes
                                               # INSTALL_CELL there, so the ~20 lines exist once, here

INSTALL_CELL = """\
# Run this first. In Google Colab it installs labkit (numeric packages only, about a minute) and keeps
# every package Colab already has at its version; anywhere else it does nothing (see the README).
import os, sys
if "google.colab" in sys.modules and not os.environ.get("NBGRADER_EXECUTION"):
    try:
        import labkit
    except ImportError:
        import re, subprocess, tempfile
        from importlib import metadata
        pins = {}  # name -> "name==version" of every installed package: pip may add packages, never change one
        for d in metadata.distributions():
            name = d.metadata["Name"] or ""
            if re.fullmatch(r"[\\w.-]+", name) and re.fullmatch(r"[\\w.!+-]+", d.version or ""):
                pins.setdefault(re.sub(r"[-_.]+", "-", name).lower(), f"{name}=={d.version}")
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
            f.write("\\n".join(pins.values()))
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-c", f.name, "__LABKIT_PIP_SPEC__"], check=True)"""


def install_cell() -> str:
    """The Colab install lines of every lab's setup cell, with this course's ``pip_spec()``."""
    return INSTALL_CELL.replace(PLACEHOLDER, pip_spec())


def git_url() -> str:
    return os.environ.get("LABKIT_GIT_URL") or LABKIT_GIT_URL


def pip_spec() -> str:
    """What the Colab cell passes to ``pip install``: labkit only, never its course/instructor extras."""
    return f"labkit @ {git_url()}"


COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"


def github_slug(url: str | None = None) -> str | None:
    """'git+https://github.com/ORG/REPO.git@v1' -> 'ORG/REPO'; None when the URL is not on GitHub.
    Default: the configured ``git_url()``."""
    m = re.search(r"github\.com[/:]([^/]+)/([^/@#]+?)(?:\.git)?(?:[@#].*)?$", url if url is not None else git_url())
    return f"{m[1]}/{m[2]}" if m else None


def colab_url(lab: str, url: str | None = None, branch: str = "main") -> str | None:
    """The address that opens ``notebooks/<lab>.ipynb`` of the configured repository in Colab (None when the
    repository is not on GitHub: Colab opens notebooks from GitHub only). The ``main`` branch, always."""
    slug = github_slug(url)
    return f"https://colab.research.google.com/github/{slug}/blob/{branch}/notebooks/{lab}.ipynb" if slug else None


def badge_markdown(lab: str, url: str | None = None) -> str | None:
    """The "Open in Colab" badge that ``labkit build`` puts at the top of each lab's first cell (or None)."""
    target = colab_url(lab, url)
    return f"[![Open In Colab]({COLAB_BADGE})]({target})" if target else None


def in_colab() -> bool:
    return "google.colab" in sys.modules


def under_nbgrader() -> bool:
    """True while nbgrader autogrades or validates the notebook."""
    return bool(os.environ.get("NBGRADER_EXECUTION"))


def fast_mode() -> bool:
    """Shrink every expensive cell (CI: LABKIT_FAST=1; nbgrader's autograde: NBGRADER_EXECUTION)."""
    flag = os.environ.get("LABKIT_FAST", "").strip().lower()
    return flag in ("1", "true", "yes", "on") or under_nbgrader()


def pick(normal, fast):
    """``fast`` in fast mode, else ``normal``: ``steps = colab.pick(600, 3)``."""
    return fast if fast_mode() else normal


def device():
    """The best available torch device: cuda, then Apple's mps, then cpu (``labkit.device.pick_device``)."""
    from labkit.device import pick_device

    return pick_device()


def environment() -> dict:
    """Versions and hardware, as a dict (shown by lab 00)."""
    import torch

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(device()),
        "colab": in_colab(),
        "fast mode": fast_mode(),
        "cpu threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    from importlib import metadata

    for name in ("torchvision", "numpy", "matplotlib", "ipywidgets"):
        try:  # installed version, without importing (torchvision alone takes seconds to import)
            info[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            info[name] = "missing"
    return info


def setup(require_gpu: bool = False, verbose: bool = True):
    """Check the runtime once at the top of a notebook and return the torch device to use.

    In Colab without a GPU it says how to get one (Runtime > Change runtime type > T4 GPU); with
    ``require_gpu=True`` it raises instead, except in fast mode (CI and grading never need a GPU).
    """
    import torch
    from labkit.errors import LabkitError

    dev = device()
    if verbose:
        import labkit

        mode = " (fast mode: expensive cells shrunk)" if fast_mode() else ""
        print(f"labkit {labkit.__version__}, torch {torch.__version__}, device: {dev}{mode}")
    if dev.type != "cuda" and in_colab():
        msg = "No GPU in this Colab runtime: Runtime > Change runtime type > T4 GPU, then run all cells again."
        if require_gpu and not fast_mode():
            raise LabkitError(msg)
        if verbose:
            print(msg + " (Everything still runs on the CPU, only slower.)")
    elif require_gpu and dev.type == "cpu" and not fast_mode() and verbose:
        print("No GPU found: this lab runs on the CPU, but training cells will take longer.")
    if not under_nbgrader():  # a failed check prints one message instead of stopping Run All (issue 13)
        from labkit import runall as _interactive

        _interactive.install()
    return dev


def lab_digits(n: int | None = None, *, train: bool = True, seed: int = 0, verbose: bool = True):
    """Digits for a lab: real MNIST when it can be found (see ``labkit.data``), otherwise synthetic
    seven-segment digits with a printed note, so every notebook runs even offline.

    Returns ``(Digits, is_real)``; ``n`` keeps the first n images (None: all of them).
    """
    import torch
    from labkit import data

    try:
        # No download attempt in fast mode (CI, grading): those machines are often offline.
        digits = data.load_mnist(train=train, download=not fast_mode())
        real = True
    except data.DataNotFoundError as exc:
        if verbose:
            print(f"Note: real MNIST was not found, using synthetic seven-segment digits instead.\n  ({exc})")
        count = n if n is not None else 2000
        digits = data.synthetic_digits(count, generator=torch.Generator().manual_seed(seed))
        real = False
    if n is not None:
        digits = digits.subset(n)
    if verbose and real:
        print(f"MNIST: {len(digits)} {'training' if train else 'test'} images, {tuple(digits.images.shape[1:])}, values in [-1, 1]")
    return digits, real
