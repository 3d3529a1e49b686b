"""The Colab install cell leaves the runtime's packages alone (issue 14).

A virtualenv stands in for a Colab runtime: Colab's pinned Jupyter stack (the versions below) and this
machine's torch/torchvision. The notebook's *own* first cell (read from notebooks/lab01_forward.ipynb) runs in
it with a fake ``google.colab`` imported, its pip spec pointed at a copy of this checkout. Every package the
runtime had must keep its version (pip may only add packages), nothing may pull JupyterLab or nbgrader, and
lab 01 must then run top to bottom in that runtime's kernel with ipywidgets 7.

The pinned virtualenv is built once (about a minute of pip, PyPI needed) and cached under
``.cache/colab-venv/`` (git-ignored), keyed on the pins; each run copies it, so the cache stays pristine.
torch, torchvision and their dependencies are not installed into it (gigabytes): a ``.pth`` file makes a
folder of symbolic links to this virtualenv's copies importable. That folder lies outside the new
environment, so its pip never uninstalls or overwrites them (pip leaves packages outside its environment alone).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from labkit import colab

pytestmark = [pytest.mark.slow, pytest.mark.extended]

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".cache" / "colab-venv"
# A Colab runtime's Jupyter stack (colabtools pins these; a pip install that moves them breaks the runtime).
COLAB_PINS = ("ipykernel==6.17.1", "ipython==7.34.0", "jupyter-client==6.1.12", "notebook==6.5.5",
              "ipywidgets==7.7.1", "tornado==6.3.3", "traitlets==5.7.1")
LINKED = ("torch", "torchvision")  # shared with this virtualenv through symbolic links
BUILDER = "2"  # bump when the way the environment is built changes


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements_closure(names) -> list[metadata.Distribution]:
    """The installed distributions ``names`` and, transitively, everything they require (markers evaluated)."""
    from packaging.requirements import Requirement

    seen: dict[str, metadata.Distribution] = {}
    todo = list(names)
    while todo:
        name = _norm(todo.pop())
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen[name] = dist
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return list(seen.values())


def _top_level_entries(dist: metadata.Distribution) -> set[str]:
    """The first path component of every file a distribution installed into site-packages."""
    entries = set()
    for f in dist.files or []:
        first = f.parts[0]
        if first not in ("..", "__pycache__") and not first.endswith(".pth"):
            entries.add(first)
    return entries


def _versions(python: Path) -> dict[str, str]:
    """{normalised name: version} of the distributions that ``python`` imports (the first one found wins)."""
    code = ("import json, re\nfrom importlib import metadata\nout = {}\n"
            "for d in metadata.distributions():\n"
            "    if d.metadata['Name']:\n"
            "        out.setdefault(re.sub(r'[-_.]+', '-', d.metadata['Name']).lower(), d.version)\n"
            "print(json.dumps(out))")
    return json.loads(subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True,
                                     env=_clean_env(), cwd=python.parent).stdout)


def _clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "NBGRADER_EXECUTION", "LABKIT_FAST",
                        "PYTEST_CURRENT_TEST")}
    env.update(extra)
    return env


def _site_packages(venv: Path) -> Path:
    return venv / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"


def _build_base(folder: Path) -> None:
    """folder/venv: a fresh virtualenv with the Colab pins; folder/linked: links to torch and its dependencies."""
    linked = folder / "linked"
    linked.mkdir(parents=True)
    dists = _requirements_closure(LINKED)
    pins = []
    for dist in dists:
        pins.append(f"{dist.metadata['Name']}=={dist.version}")
        root = Path(dist.locate_file(""))
        for entry in _top_level_entries(dist):
            if (root / entry).exists() and not (linked / entry).exists():
                (linked / entry).symlink_to(root / entry)
    venv = folder / "venv"
    base_python = getattr(sys, "_base_executable", None) or shutil.which(f"python{sys.version_info[0]}.{sys.version_info[1]}")
    subprocess.run([base_python, "-m", "venv", str(venv)], check=True, env=_clean_env())
    python = venv / "bin" / "python"
    # The linked distributions replace the venv's own copies (Python 3.11's venv brings setuptools, which
    # torch also requires, in another version): one copy of each, as in a real runtime.
    own = _versions(python)
    linked_names = {_norm(d.metadata["Name"]) for d in dists}
    for name in sorted(set(own) & linked_names - {"pip"}):
        subprocess.run([str(python), "-m", "pip", "uninstall", "-q", "-y", name], check=True, env=_clean_env())
    (_site_packages(venv) / "_colab_linked.pth").write_text(f"{linked}\n")
    constraints = folder / "linked-constraints.txt"
    constraints.write_text("".join(p + "\n" for p in pins))
    subprocess.run([str(python), "-m", "pip", "install", "-q", "-c", str(constraints), *COLAB_PINS], check=True,
                   env=_clean_env())


def colab_like_venv() -> Path:
    """The cached base folder (holding venv/ and linked/), built on first use."""
    key = hashlib.sha256(json.dumps([BUILDER, sys.version, COLAB_PINS, str(sys.prefix),
                                     [metadata.version(n) for n in LINKED]]).encode()).hexdigest()[:12]
    base = CACHE / f"base-{key}"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs at once: one builds, the other waits
        if not (base / "ready").exists():  # absent after a build that failed or was stopped: start again
            shutil.rmtree(base, ignore_errors=True)
            _build_base(base)  # built where it lives: a virtualenv records absolute paths
            (base / "ready").write_text("")
    return base


def _copy_venv(base: Path, dest: Path) -> Path:
    subprocess.run(["cp", "-a", str(base / "venv"), str(dest)], check=True)
    return dest


def _checkout_copy(dest: Path) -> Path:
    """What pip installs: the checkout's package files (not its .venv, caches or notebooks)."""
    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, dest / name)
    shutil.copytree(REPO / "labkit", dest / "labkit", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def _fake_colab(dest: Path) -> Path:
    """A folder holding a ``google.colab`` package (``google`` stays a namespace package, as in Colab)."""
    (dest / "google" / "colab").mkdir(parents=True)
    (dest / "google" / "colab" / "__init__.py").write_text('"""Stands in for Colab\'s module in tests."""\n')
    return dest


def first_cell_source(notebook: Path) -> str:
    import nbformat

    nb = nbformat.read(str(notebook), as_version=4)
    return next(c.source for c in nb.cells if c.cell_type == "code")


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    """A fresh copy of the Colab-like runtime, before and after the notebook's first cell ran in it."""
    if shutil.which("cp") is None or sys.platform != "linux":
        pytest.skip("builds a Linux virtualenv")
    try:
        base = colab_like_venv()
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"could not build the Colab-like virtualenv (no package index?): {exc}")
    tmp = tmp_path_factory.mktemp("colab")
    venv = _copy_venv(base, tmp / "venv")
    python = venv / "bin" / "python"
    src = _checkout_copy(tmp / "labkit-src")
    fake = _fake_colab(tmp / "fake")
    before = _versions(python)

    cell = first_cell_source(REPO / "notebooks" / "lab01_forward.ipynb")
    spec = colab.pip_spec()
    assert cell.count(spec) == 1, "the first cell installs colab.pip_spec()"
    cell = cell.replace(spec, f"labkit @ {src.as_uri()}")
    run = subprocess.run([str(python), "-c", "import google.colab\n" + cell], capture_output=True, text=True,
                         env=_clean_env(PYTHONPATH=str(fake), MPLBACKEND="Agg"), timeout=900, cwd=tmp)
    return {"python": python, "venv": venv, "fake": fake, "before": before, "after": _versions(python),
            "run": run, "tmp": tmp}


def test_first_cell_installs_labkit_and_changes_no_package(runtime):
    run = runtime["run"]
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "device: cpu" in run.stdout or "device: cuda" in run.stdout, run.stdout  # colab.setup() ran
    before, after = runtime["before"], runtime["after"]
    for pin in COLAB_PINS:  # the runtime really is the pinned one
        name, version = pin.split("==")
        assert before[_norm(name)] == version, pin
    changed = {n: f"{v} -> {after.get(n, 'removed')}" for n, v in before.items() if after.get(n) != v}
    assert changed == {}, f"the install changed the runtime's packages: {changed}"
    added = set(after) - set(before)
    assert "labkit" in added and "open-clip-torch" in added, sorted(added)
    assert not added & {"jupyterlab", "nbgrader", "jupyter-server", "notebook", "ipykernel"}, sorted(added)


def test_lab01_runs_in_the_runtime_with_ipywidgets_7(runtime, monkeypatch, tmp_path):
    """The solution notebook of lab 01, top to bottom (fast mode) in that runtime's own kernel."""
    import nbformat
    from nbclient import NotebookClient

    assert runtime["run"].returncode == 0, "the install failed (see the other test)"
    kernels = tmp_path / "jupyter" / "kernels" / "colab"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(json.dumps({
        "argv": [str(runtime["python"]), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Colab-like", "language": "python",
        "env": {"PYTHONPATH": str(runtime["fake"]), "LABKIT_FAST": "1", "MPLBACKEND": "module://matplotlib_inline.backend_inline",
                "LABKIT_CACHE": str(tmp_path / "cache")},
    }))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    nb = nbformat.read(str(REPO / "solutions" / "lab01_forward" / "lab01_forward.ipynb"), as_version=4)
    # Colab imports google.colab before the first cell; at the end, ask the kernel what it runs with.
    nb.cells.insert(0, nbformat.v4.new_code_cell("import google.colab"))
    nb.cells.append(nbformat.v4.new_code_cell("import ipywidgets, ipykernel, IPython, jupyter_client\n"
                                              "print(ipywidgets.__version__, ipykernel.__version__, IPython.__version__, "
                                              "jupyter_client.__version__)"))
    NotebookClient(nb, kernel_name="colab", timeout=300, resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [(i, o["ename"], o["evalue"][:200]) for i, c in enumerate(nb.cells) if c.cell_type == "code"
              for o in c.outputs if o.output_type == "error"]
    assert errors == []
    versions = "".join(o.get("text", "") for o in nb.cells[-1].outputs).split()
    assert versions == ["7.7.1", "6.17.1", "7.34.0", "6.1.12"], versions
    setup = "".join(o.get("text", "") for c in nb.cells if c.get("id") == "setup" for o in c.outputs)
    assert setup.startswith("labkit ") and "No GPU in this Colab runtime" in setup, setup  # in_colab() was True
    widget_views = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
                    if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert widget_views, "the noise slider was displayed as a widget"


CHAIN = ("lab02_unet", "lab03_embeddings", "lab04_training", "lab05_sampling", "lab07_improvements", "lab09_report")


def test_the_chain_from_lab02_to_lab09_runs_on_the_students_own_network(runtime, monkeypatch, tmp_path):
    """Issue 25: labs 02 -> 03 -> 04 -> 05 -> 07 -> 09 in one folder of one fresh Colab-like runtime, each lab's
    solution notebook top to bottom (fast mode), as a student who did every exercise: lab 03 saves the student's
    U-Net, lab 04 trains *that* network with the student's loop and writes its checkpoint, and labs 05, 07 and 09
    sample from that checkpoint. One change to the notebooks: lab 04's fast mode normally writes no checkpoint
    (grading keeps no files); here it writes it where the normal-mode run does, ``runs/lab04-cpu``."""
    import nbformat
    from nbclient import NotebookClient

    assert runtime["run"].returncode == 0, "the install failed (see the first test)"
    kernels = tmp_path / "jupyter" / "kernels" / "colab"
    kernels.mkdir(parents=True)
    env = {"PYTHONPATH": str(runtime["fake"]), "LABKIT_FAST": "1", "MPLBACKEND": "Agg",
           "LABKIT_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    data = os.environ.get("LABKIT_DATA") or str(REPO.parent / "shared" / "data" / "mnist")
    if Path(data).is_dir():
        env["LABKIT_DATA"] = data
    (kernels / "kernel.json").write_text(json.dumps({
        "argv": [str(runtime["python"]), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Colab-like", "language": "python", "env": env}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    work = tmp_path / "course"  # the student's folder: every lab runs here, runs/ is shared
    work.mkdir()
    said = {}
    for lab in CHAIN:
        nb = nbformat.read(str(REPO / "solutions" / lab / f"{lab}.ipynb"), as_version=4)
        if lab == "lab04_training":
            cell = next(c for c in nb.cells if "recipes.tiny(steps=4, out_dir=None)" in c.source)
            cell.source = cell.source.replace("recipes.tiny(steps=4, out_dir=None)",
                                              'recipes.tiny(steps=4, out_dir=f"{RUNS}/lab04-cpu")')
        nb.cells.insert(0, nbformat.v4.new_code_cell("import google.colab"))
        NotebookClient(nb, kernel_name="colab", timeout=600, resources={"metadata": {"path": str(work)}}).execute()
        errors = [(i, o["ename"], o["evalue"][:200]) for i, c in enumerate(nb.cells) if c.cell_type == "code"
                  for o in c.outputs if o.output_type == "error"]
        assert errors == [], f"{lab}: {errors}"
        said[lab] = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
                              if o.get("output_type") == "stream")
    assert (work / "runs" / "my_unet.py").is_file(), "lab 03 saved the student's network"
    assert "your network is in runs/my_unet.py" in said["lab03_embeddings"]
    assert "training your UNet from lab 03 with your train_loop" in said["lab04_training"], said["lab04_training"][:3000]
    assert (work / "runs" / "lab04-cpu" / "loop.pt").is_file(), "lab 04 wrote the checkpoint"
    for lab in ("lab05_sampling", "lab07_improvements", "lab09_report"):
        loaded = re.search(r"Your (lab 04 )?model: runs/lab04-cpu/loop.pt \(4 training steps", said[lab])
        assert loaded, (lab, said[lab][:2000])
        assert "shipped checkpoint" not in said[lab][:loaded.start()], lab
    assert "MY_CHECKPOINT = 'runs/lab04-cpu/loop.pt'" in said["lab09_report"]
