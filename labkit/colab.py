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
        print(
            f"MNIST: {len(digits)} {'training' if train else 'test'} images, {tuple(digits.images.shape[1:])}, values in [-1, 1]"
        )
    return digits, real


# --- Your network, from lab 03 to lab 04 -------------------------------------------------------------
#
# Notebooks are independent (each runs in its own kernel, in Colab on its own machine), so lab 03 writes the
# student's network as a small Python file into the runs folder (your Google Drive in Colab), and lab 04 trains
# it from there when it is present and still passes lab 03's check; else labkit's, and it says which.

MY_NETWORK = "my_unet.py"
_NETWORK_HEADER = '''"""Your conditioned U-Net from lab 03, written by labkit.colab.save_my_network (edit lab 03, not this file)."""
import math

import torch
import torch.nn.functional as F
from torch import nn

from labkit import embeddings, unet
'''


def runs_dir(mount: bool = True) -> str:
    """Where runs and your network live: ``/content/drive/MyDrive/labkit-runs`` in Colab (mounting your Drive, so
    that they survive the runtime and other notebooks find them), else ``runs`` beside the notebook."""
    if in_colab() and not fast_mode():
        if mount and not os.path.isdir("/content/drive/MyDrive"):
            from google.colab import drive  # Colab only

            drive.mount("/content/drive")
        return "/content/drive/MyDrive/labkit-runs"
    return "runs"


def source_of(obj) -> str:
    """The source of a function or class defined in a notebook cell (or a file). ``inspect.getsource`` finds a
    function's cell through its code's file name; a class has no such name, so its cell is found through one of
    its methods, and the class is cut out of that cell."""
    import ast
    import inspect
    import linecache
    import textwrap

    if inspect.isfunction(obj):
        return textwrap.dedent(inspect.getsource(obj))
    methods = [v for v in vars(obj).values() if inspect.isfunction(v)]
    if not methods:
        raise TypeError(f"{obj.__name__}: no method to find its source by")
    lines = linecache.getlines(methods[0].__code__.co_filename)
    text = "".join(lines)
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ClassDef) and node.name == obj.__name__:
            return textwrap.dedent(ast.get_source_segment(text, node, padded=True))
    raise TypeError(f"{obj.__name__}: its source was not found")


def save_my_network(namespace: dict, names, folder: str | None = None) -> str:
    """Write the functions and classes ``names`` of the notebook's ``namespace`` (your U-Net and everything it
    uses, in an order where each comes after what it needs) to ``<folder>/my_unet.py``, atomically. Returns the path."""
    folder = folder or runs_dir()
    os.makedirs(folder, exist_ok=True)
    parts = [_NETWORK_HEADER] + [source_of(namespace[n]) for n in names]
    path = os.path.join(folder, MY_NETWORK)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n\n".join(p.rstrip() + "\n" for p in parts))
    os.replace(tmp, path)
    return path


def load_my_network(folder: str | None = None):
    """The module written by ``save_my_network``, or None when there is none (or it does not import: the
    reason is printed). Runs the file: it is your own code, in your own kernel."""
    import importlib.util

    path = os.path.join(folder or runs_dir(), MY_NETWORK)
    if not os.path.isfile(path):
        return None
    try:
        spec = importlib.util.spec_from_file_location("my_unet", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    except Exception as exc:  # noqa: BLE001 (any failure: labkit's network is used instead)
        print(f"NOTE: {path} did not import ({type(exc).__name__}: {str(exc)[:200]})")
        return None
