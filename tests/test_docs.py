"""The docs site: it builds strictly, broken links fail it, its commands exist, its lab tables match the sources.

Every command in a ```bash block of README.md or docs/*.md is checked here: ``labkit ...`` lines against the
real argument parser (subcommand and every flag), the other kinds (pip extras, scripts and their flags, test
files, environment variables) against the repository. A command of a kind not listed below fails the test,
so a new kind of command in the docs comes with a check.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
MKDOCS = shutil.which("mkdocs", path=str(Path(sys.executable).parent)) or shutil.which("mkdocs")
needs_mkdocs = pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None, reason="mkdocs is not installed")


def _script():
    spec = importlib.util.spec_from_file_location("make_doc_figures", ROOT / "scripts" / "make_doc_figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config),
                           "--site-dir", str(site)], capture_output=True, text=True, env=env, timeout=120)


# --- the site ----------------------------------------------------------------------------------------

@needs_mkdocs
def test_site_builds_strictly(tmp_path):
    result = _mkdocs_build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert result.returncode == 0, result.stdout + result.stderr
    for page in ("index", "students", "labs", "troubleshooting"):
        assert (tmp_path / "site" / page / "index.html").exists() or page == "index"
    assert (tmp_path / "site" / "index.html").exists()
    assert (tmp_path / "site" / "assets" / "noise_progression.png").exists()


@needs_mkdocs
@pytest.mark.parametrize("broken", ["[a page that does not exist](no-such-page.md)",
                                    "[an anchor that does not exist](students.md#no-such-section)"])
def test_a_broken_link_fails_the_build(tmp_path, broken):
    shutil.copytree(DOCS, tmp_path / "docs")
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    index = tmp_path / "docs" / "index.md"
    index.write_text(index.read_text(encoding="utf-8") + f"\n\nSee {broken}.\n", encoding="utf-8")
    result = _mkdocs_build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert result.returncode != 0, "a broken link must fail `mkdocs build --strict`"
    target = re.search(r"\((.*?)\)", broken)[1].split("#")[-1]
    assert target in result.stdout + result.stderr


def test_doc_pictures_are_small_pngs():
    pngs = sorted((DOCS / "assets").glob("*.png"))
    assert len(pngs) >= 3
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
        assert png.stat().st_size < 200_000, f"{png.name}: {png.stat().st_size} bytes"
    referenced = set(re.findall(r"\]\((?:\.\./)?assets/([\w.-]+\.png)\)", "".join(
        p.read_text(encoding="utf-8") for p in DOCS.glob("*.md"))))
    assert referenced <= {p.name for p in pngs}


# --- generated tables --------------------------------------------------------------------------------

def test_generated_tables_are_up_to_date(monkeypatch):
    monkeypatch.delenv("LABKIT_GIT_URL", raising=False)
    script = _script()
    for path, blocks in script.generated_blocks().items():
        text = path.read_text(encoding="utf-8")
        for name, body in blocks.items():
            assert script.read_block(text, name) == body, (
                f"{path.relative_to(ROOT)}: block '{name}' is stale: run python scripts/make_doc_figures.py --tables")


def _points_from_sources() -> dict[str, float]:
    """Points per lab, read independently of the script: every nbgrader header with "grade": true."""
    import json

    points = {}
    for src in sorted((ROOT / "solutions").glob("*/*.py")):
        if src.stem != src.parent.name:
            continue
        total = 0.0
        for header in re.findall(r"^# %%.*? nbgrader=(\{.*\})\s*$", src.read_text(encoding="utf-8"), re.M):
            md = json.loads(header)
            if md.get("grade") and not md.get("solution"):
                total += md["points"]
        points[src.stem] = total
    return points


def test_lab_tables_match_the_sources():
    points = _points_from_sources()
    assert len(points) >= 9 and all(p > 0 for p in points.values())
    labs = (DOCS / "labs.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| \[(lab\d\d_\w+)\]\(#\1\) \|.*?\| ([\d.]+) \| [^|]* \|$", labs, re.M))
    assert {k: float(v) for k, v in rows.items()} == points
    # the hand-written table and totals on the home page
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    home = {f"lab{n}": float(p) for n, p in re.findall(r"^\| (\d\d) [^|]+\|[^|]+\| ([\d.]+) \|$", index, re.M)}
    assert home == {lab[:5]: p for lab, p in points.items()}
    m = re.search(r"(\d+) small\s+functions \((\d+) points in all\)", index)
    assert m and (int(m[1]), float(m[2])) == (len(re.findall(r"\(\d+\)", "".join(
        re.findall(r"^\| \[lab.*$", labs, re.M)))), sum(points.values()))
    # one Colab link per student notebook
    students = (DOCS / "students.md").read_text(encoding="utf-8")
    notebooks = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))
    linked = sorted(re.findall(r"colab\.research\.google\.com/github/[^)\s]+/notebooks/(\w+)\.ipynb", students))
    assert linked == notebooks


def test_github_slug():
    script = _script()
    assert script.github_slug("git+https://github.com/my-uni/labkit.git@v1.0") == "my-uni/labkit"
    assert script.github_slug("git+https://github.com/a/b") == "a/b"
    assert script.github_slug("git+https://gitlab.com/a/b.git") is None


# --- commands shown in the docs ------------------------------------------------------------------------

def _doc_commands() -> list[tuple[str, str]]:
    """(file, command) for every command in a ```bash block of README.md and docs/*.md."""
    out = []
    for path in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]:
        text = path.read_text(encoding="utf-8")
        for block in re.findall(r"^ *```(?:bash|sh|shell)[ \t]*\n(.*?)^ *```", text, re.S | re.M):
            block = re.sub(r"\\\n\s*", " ", block)  # line continuations
            for line in block.splitlines():
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                line = re.sub(r"\s+#.*$", "", line)  # trailing comment
                for part in line.split("&&"):
                    out.append((path.name, part.strip()))
    return out


def _labkit_parser():
    from labkit.cli import build_parser

    return build_parser(course_arguments=True)


def test_docs_show_labkit_commands():
    commands = [c for _, c in _doc_commands()]
    assert any(c.startswith("labkit ") for c in commands)
    assert "bash .ci/run" in commands


@pytest.mark.parametrize("where,command", _doc_commands(), ids=lambda v: v if len(v) < 60 else v[:57] + "...")
def test_doc_command_exists(where, command):
    argv = shlex.split(command)
    while argv and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", argv[0]):  # VAR=value prefix
        argv.pop(0)
    exe = argv[0]
    if exe == "labkit" or exe.endswith("/labkit"):
        parser = _labkit_parser()
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                args = parser.parse_args(argv[1:])
            except SystemExit as exc:
                pytest.fail(f"{where}: `{command}` is not accepted by labkit's parser (exit {exc.code}): {err.getvalue()}")
        assert getattr(args, "func", None) is not None, f"{where}: `{command}` names no subcommand"
    elif re.fullmatch(r"(\S*/)?pip3?", exe) or argv[:3] in (["python", "-m", "pip"], ["python3", "-m", "pip"]):
        extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
        for arg in argv:
            m = re.fullmatch(r"\.\[([\w,-]+)\]", arg)
            if m:
                unknown = set(m[1].split(",")) - set(extras)
                assert not unknown, f"{where}: `{command}` names extras {unknown} missing from pyproject.toml"
    elif argv[:3] in (["python3", "-m", "venv"], ["python", "-m", "venv"]):
        pass  # .ci/run creates the virtual environment the same way
    elif re.fullmatch(r"(\S*/)?jupyter", exe):
        assert argv[1] == "lab" and all((ROOT / a).exists() for a in argv[2:]), f"{where}: `{command}`"
    elif exe == "bash":
        assert (ROOT / argv[1]).is_file(), f"{where}: `{command}`: no {argv[1]}"
    elif exe in ("python", "python3") and argv[1:3] == ["-m", "pytest"]:
        for arg in argv[3:]:
            if not arg.startswith("-"):
                assert (ROOT / arg.split("::")[0]).exists(), f"{where}: `{command}`: no {arg}"
    elif exe in ("python", "python3") and argv[1].endswith(".py"):
        script = ROOT / argv[1]
        assert script.is_file(), f"{where}: `{command}`: no {argv[1]}"
        source = script.read_text(encoding="utf-8")
        for flag in (a.split("=")[0] for a in argv[2:] if a.startswith("--")):
            assert f'"{flag}"' in source, f"{where}: `{command}`: {argv[1]} has no {flag} option"
    elif exe == "export":
        name = argv[1].split("=")[0]
        assert name.startswith("LABKIT_") and any(name in p.read_text(encoding="utf-8")
                                                  for p in (ROOT / "labkit").rglob("*.py")), f"{where}: `{command}`"
    elif exe == "cp":
        pass  # a plain file copy in the student guide
    elif exe == "dask":  # docs/instructors.md: starting a scheduler and workers for `labkit grade --scheduler`
        pytest.importorskip("distributed")
        from distributed.cli import dask_scheduler, dask_worker

        cmd = {"scheduler": dask_scheduler.main, "worker": dask_worker.main}.get(argv[1])
        assert cmd is not None, f"{where}: `{command}`: dask has no command {argv[1]!r} checked here"
        options = {o for p in cmd.params for o in [*p.opts, *getattr(p, "secondary_opts", [])] if o.startswith("-")}
        for flag in (a.split("=")[0] for a in argv[2:] if a.startswith("--")):
            assert flag in options, f"{where}: `{command}`: `dask {argv[1]}` has no {flag} option"
    else:
        pytest.fail(f"{where}: `{command}`: a kind of command tests/test_docs.py does not check yet; add a check")


def test_labkit_help_runs():
    exe = Path(sys.executable).with_name("labkit")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "labkit.cli"]
    result = subprocess.run(cmd + ["--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for sub in ("train", "sample", "evaluate", "info", "build", "grade"):
        assert sub in result.stdout


def test_labkit_info_runs(capsys):
    from labkit import cli

    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("labkit ") and "MNIST is looked for in" in out and "shipped checkpoint" in out


def test_readme_answers_the_newcomers_questions():
    """Issue 14: beside the two setup commands (kept verbatim), one line each for root, the CLI on PATH,
    CPU-only torch and MNIST offline; the options they name exist."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert 'python3 -m venv .venv && .venv/bin/pip install -e ".[course]" && .venv/bin/jupyter lab notebooks/\n' in readme
    assert "\nbash .ci/run\n" in readme
    bullets = {key: [ln for ln in readme.splitlines() if ln.startswith("- ") and key in ln]
               for key in ("--allow-root", "source .venv/bin/activate", "download.pytorch.org/whl/cpu", "LABKIT_DATA=DIR")}
    assert all(len(lines) == 1 for lines in bullets.values()), bullets
    assert ".venv/bin/labkit info" in bullets["source .venv/bin/activate"][0]
    assert "root" in bullets["--allow-root"][0] and "Offline" in bullets["LABKIT_DATA=DIR"][0]
    from jupyter_server.serverapp import ServerApp

    assert ServerApp.class_traits()["allow_root"] is not None  # the flag JupyterLab takes
    assert "LABKIT_DATA" in (ROOT / "labkit" / "data.py").read_text(encoding="utf-8")
