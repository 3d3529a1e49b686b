"""Regenerate what the docs site shows that comes from the code: pictures and tables.

    python scripts/make_doc_figures.py              # both
    python scripts/make_doc_figures.py --tables     # docs/labs.md and docs/students.md tables only (1 s)
    python scripts/make_doc_figures.py --figures    # docs/assets/*.png only (about 20 s on 2 CPU cores)

Tables (between ``<!-- BEGIN GENERATED name -->`` and ``<!-- END GENERATED name -->`` markers):

* ``docs/labs.md``: per lab the objectives, graded functions and points, time budget and pictures, read
  from the first markdown cell and the ``# %% nbgrader={...}`` headers of ``solutions/<lab>/<lab>.py``,
  and the U-Net shape traces from ``labkit.unet``; ``tests/test_docs.py`` fails when they are stale.
* ``docs/students.md``: one Colab link per lab, for the GitHub repository named in
  ``labkit.colab.LABKIT_GIT_URL`` (or the environment variable ``LABKIT_GIT_URL``).

Pictures (``docs/assets/``, each well under 200 KB): real MNIST digits, the forward-noising grid and the
linear vs cosine schedules; ``samples.png`` from the shipped checkpoint when
``labkit/assets/mnist_ddpm.pt`` exists. MNIST is read from ``--data``, ``LABKIT_DATA`` or
``../shared/data/mnist``; without it the pictures use labkit's synthetic digits and say so in the title.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "docs" / "assets"
MAX_PNG_BYTES = 200_000

# --- Reading the lab sources ------------------------------------------------------------------------

_HEADER = re.compile(r"^# %%(?P<md> \[markdown\])?(?: nbgrader=(?P<meta>\{.*\}))?\s*$")


def _cells(text: str) -> list[dict]:
    """Split a jupytext percent script into cells: {"markdown", "nbgrader" (dict or None), "lines"}."""
    cells = []
    for line in text.splitlines():
        m = _HEADER.match(line)
        if m:
            cells.append({"markdown": bool(m["md"]), "nbgrader": json.loads(m["meta"]) if m["meta"] else None,
                          "lines": []})
        elif cells:
            cells[-1]["lines"].append(line)
    return cells


def _md_text(cell: dict) -> list[str]:
    """A markdown cell's lines without the leading '# ' comment marks."""
    return [ln[2:] if ln.startswith("# ") else ln.lstrip("#") for ln in cell["lines"]]


def _paragraph(lines: list[str], label: str) -> str:
    """The paragraph that starts with **label** (joined into one line, the label removed)."""
    for i, ln in enumerate(lines):
        if ln.startswith(f"**{label}"):
            out = [ln]
            for nxt in lines[i + 1:]:
                if not nxt.strip() or nxt.startswith("**") or nxt.startswith("#"):
                    break
                out.append(nxt.strip())
            text = " ".join(out)
            return re.sub(r"^\*\*[^*]*\*\*\s*", "", text).strip()
    return ""


def _objectives(lines: list[str]) -> list[str]:
    objectives: list[str] = []
    inside = False
    for ln in lines:
        if ln.startswith("**Learning objectives"):
            inside = True
            continue
        if inside:
            m = re.match(r"^\d+\.\s+(.*)", ln)
            if m:
                objectives.append(m[1].strip())
            elif ln.startswith("   ") and objectives:
                objectives[-1] += " " + ln.strip()
            elif not ln.strip() or ln.startswith("**"):
                break
    return objectives


def _pictures(text: str) -> list[str]:
    """The titles of the figures a lab draws (``title=...`` of plotting calls and axes), in order."""
    titles = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.lstrip().startswith("#"):
            continue
        if "plotting.plot_schedules(" in line:
            titles.append("ᾱ_t and SNR(t) of the linear and cosine schedules")
        if re.search(r"for ax, \(title\b", line):  # panels titled from a list of ("title", data) pairs
            for prev in lines[max(0, i - 4): i + 1]:
                titles += [t for t in re.findall(r"""[(\[]\(?"([^"]{6,})",""", prev) if t not in titles]
        if "legend(" in line:
            continue
        for m in re.finditer(r"""title=(f?)(["'])(.*?)\2""", line):
            title = re.sub(r"\{[^}]*\}", "…", m[3]) if m[1] else m[3]
            if title not in titles:
                titles.append(title)
        if "widgets." in line and "slider(" in line:
            titles.append("(interactive) " + re.search(r"widgets\.(\w+)", line)[1].replace("_", " "))
    return titles


def lab_info(repo: Path = ROOT) -> list[dict]:
    """One dict per lab: lab, number, title, objectives, time, grading, exercises [(function, grade_id, points)],
    points, pictures."""
    labs = []
    for src in sorted((repo / "solutions").glob("*/*.py")):
        if src.stem != src.parent.name:
            continue
        text = src.read_text(encoding="utf-8")
        cells = _cells(text)
        intro = _md_text(cells[0])
        heading = next(ln for ln in intro if ln.startswith("# "))
        title = re.sub(r"^#\s+Lab\s+\d+\s+[—-]\s+", "", heading).strip()
        exercises, written, last_def = [], [], None
        for cell in cells:
            md = cell["nbgrader"] or {}
            if md.get("grade") and md.get("solution") and cell["markdown"]:  # a written answer, graded by hand
                written.append((md["grade_id"], md.get("points", 0)))
            if md.get("solution") and not cell["markdown"]:
                found = re.search(r"^def\s+(\w+)\s*\(", "\n".join(cell["lines"]), re.M)
                last_def = found[1] if found else md.get("grade_id")
            if md.get("grade") and not md.get("solution"):
                exercises.append((last_def, md["grade_id"], md.get("points", 0)))
        labs.append({
            "lab": src.stem,
            "number": src.stem[3:5],
            "title": title,
            "objectives": _objectives(intro),
            "time": _paragraph(intro, "Time budget"),
            "grading": _paragraph(intro, "How it is graded"),
            "exercises": exercises,
            "points": sum(p for _, _, p in exercises),
            "written": written,
            "written_points": sum(p for _, p in written),
            "pictures": _pictures(text),
        })
    return labs


def _working_minutes(time_text: str) -> str:
    m = re.search(r"Working through the lab: about (\d+) minutes", time_text) or re.match(r"About (\d+) minutes", time_text)
    return f"{m[1]} min" if m else "?"


def _fmt(points) -> str:
    return f"{points:g}"


# --- Generated markdown ----------------------------------------------------------------------------

def labs_markdown(labs: list[dict]) -> str:
    out = ["| lab | topic | graded functions (points) | written answers (points) | points | working time |",
           "|---|---|---|---:|---:|---:|"]
    for lab in labs:
        ex = ", ".join(f"`{fn}` ({_fmt(p)})" for fn, _, p in lab["exercises"])
        written = f"{len(lab['written'])}: {_fmt(lab['written_points'])}" if lab["written"] else "-"
        out.append(f"| [{lab['lab']}](#{lab['lab']}) | {lab['title']} | {ex} | {written} | {_fmt(lab['points'])} | "
                   f"{_working_minutes(lab['time'])} |")
    total, written = sum(lab["points"] for lab in labs), sum(lab["written_points"] for lab in labs)
    out.append(f"| **all** | | {sum(len(lab['exercises']) for lab in labs)} graded cells | "
               f"{sum(len(lab['written']) for lab in labs)}: **{_fmt(written)}** | **{_fmt(total)}** | |")
    for lab in labs:
        out += ["", f"## Lab {lab['number']}: {lab['title']} {{#{lab['lab']}}}", "",
                f"Notebook `notebooks/{lab['lab']}.ipynb`, source `solutions/{lab['lab']}/{lab['lab']}.py`, "
                f"checks `labkit/checks/{lab['lab']}.py`.", "", "**Objectives.**", ""]
        out += [f"{i}. {o}" for i, o in enumerate(lab["objectives"], 1)]
        out += ["", "| graded function | test cell | points |", "|---|---|---:|"]
        out += [f"| `{fn}` | `{gid}` | {_fmt(p)} |" for fn, gid, p in lab["exercises"]]
        if lab["written"]:
            out += ["", "**Written answers** (graded by hand, with a rubric): " +
                    ", ".join(f"`{gid}` ({_fmt(p)})" for gid, p in lab["written"]) + "."]
        out += ["", f"**Time.** {lab['time']}", ""]
        out += ["**Pictures.** " + "; ".join(f"*{t}*" for t in lab["pictures"]) + "." if lab["pictures"] else
                "**Pictures.** none."]
    return "\n".join(out)


def unet_trace_markdown() -> str:
    from labkit import recipes, unet

    out = []
    for name, config in (("the default `UNetConfig()` (lab 02)", unet.UNetConfig()),
                         ("the CPU training recipe, `recipes.cpu().unet` (labs 04-08, shipped checkpoint)",
                          recipes.cpu().unet)):
        out += [f"Shape trace of {name}, from `UNet.summary()`:", "", "```text",
                unet.UNet(config).summary().rstrip(), "```", ""]
    return "\n".join(out).rstrip()


def github_slug(git_url: str) -> str | None:
    """'git+https://github.com/ORG/REPO.git@v1' -> 'ORG/REPO' (None if not a GitHub URL)."""
    from labkit import colab

    return colab.github_slug(git_url)


def colab_url(lab: str, slug: str, branch: str = "main") -> str:
    """The same address as the notebooks' badges (``labkit.colab.colab_url``)."""
    from labkit import colab

    return colab.colab_url(lab, f"https://github.com/{slug}", branch)


def colab_markdown(labs: list[dict], git_url: str | None = None) -> str:
    from labkit import colab

    git_url = git_url or colab.git_url()
    slug = github_slug(git_url) or "YOUR-ORG/labkit"
    badge = "https://colab.research.google.com/assets/colab-badge.svg"
    out = [f"Repository: `{slug}` (from `{git_url}`).", "",
           "| lab | open in Colab | points | working time |", "|---|---|---:|---:|"]
    for lab in labs:
        out.append(f"| {lab['number']} {lab['title']} | [![Open In Colab]({badge})]({colab_url(lab['lab'], slug)}) "
                   f"`{lab['lab']}.ipynb` | {_fmt(lab['points'])} | {_working_minutes(lab['time'])} |")
    return "\n".join(out)


def generated_blocks() -> dict[Path, dict[str, str]]:
    """{file: {block name: markdown}} for every generated block of the docs."""
    labs = lab_info()
    return {ROOT / "docs" / "labs.md": {"labs": labs_markdown(labs), "unet-trace": unet_trace_markdown()},
            ROOT / "docs" / "students.md": {"colab": colab_markdown(labs)}}


def block_pattern(name: str) -> re.Pattern:
    return re.compile(rf"(<!-- BEGIN GENERATED {re.escape(name)} [^\n]*-->\n)(.*?)(<!-- END GENERATED {re.escape(name)} -->)",
                      re.S)


def read_block(text: str, name: str) -> str | None:
    m = block_pattern(name).search(text)
    return m[2].rstrip("\n") if m else None


def write_tables() -> list[Path]:
    changed = []
    for path, blocks in generated_blocks().items():
        text = path.read_text(encoding="utf-8")
        new = text
        for name, body in blocks.items():
            if read_block(new, name) is None:
                raise SystemExit(f"{path}: no '<!-- BEGIN GENERATED {name} ... -->' block")
            new = block_pattern(name).sub(lambda m: m[1] + body + "\n" + m[3], new)
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed.append(path)
    return changed


# --- Pictures --------------------------------------------------------------------------------------

def _digits(data: str | None):
    """Ten test digits 0..9 in [-1, 1] (real MNIST if found) and whether they are real."""
    import torch

    from labkit import data as kdata

    root = data or os.environ.get("LABKIT_DATA") or (str(ROOT.parent / "shared" / "data" / "mnist")
                                                    if (ROOT.parent / "shared" / "data" / "mnist").is_dir() else None)
    try:
        digits = kdata.load_mnist(root, train=False, download=False)
        real = True
    except kdata.DataNotFoundError as exc:
        print(f"note: {exc}\n      using synthetic digits", file=sys.stderr)
        digits = kdata.synthetic_digits(200, generator=torch.Generator().manual_seed(0))
        real = False
    first = [int((digits.labels == d).nonzero()[0]) for d in range(10)]  # the first 0, the first 1, ...
    return digits, torch.tensor(first), real


def _save(fig, name: str, dpi: int = 110) -> Path:
    import matplotlib.pyplot as plt

    path = ASSETS / name
    fig.savefig(path, dpi=dpi, bbox_inches="tight", facecolor="white",
                metadata={"Software": None})  # no version string: reruns give identical files
    plt.close(fig)
    size = path.stat().st_size
    if size > MAX_PNG_BYTES:
        raise SystemExit(f"{path} is {size} bytes (> {MAX_PNG_BYTES}): lower its dpi")
    print(f"{path.relative_to(ROOT)}  {size / 1000:.0f} KB")
    return path


def write_figures(data: str | None = None) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import torch

    from labkit import plotting, schedules

    ASSETS.mkdir(parents=True, exist_ok=True)
    digits, first, real = _digits(data)
    source = "MNIST test set" if real else "synthetic digits (MNIST not found)"
    written = []

    # Forty digits: four of each class, one column per class.
    pick = torch.cat([(digits.labels == d).nonzero()[:4, 0] for d in range(10)])  # [40]: 0000 1111 ...
    order = pick.reshape(10, 4).T.reshape(-1)  # rows of 0..9
    fig = plotting.image_grid(digits.images[order], ncols=10, size=0.6, title=f"{source}: four of each digit")
    written.append(_save(fig, "digits.png"))

    # Forward noising of three digits with the cosine schedule (lab 01).
    cosine = schedules.make_schedule("cosine", 1000)
    ts = [0, 100, 250, 400, 550, 700, 850, 999]
    from labkit import diffusion

    shown = (0, 3, 7)
    x0 = digits.images[first[list(shown)]]  # [3, 1, 28, 28]
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))  # the same noise in every column
    cols = [diffusion.q_sample(x0, torch.full((len(x0),), t), noise, cosine) for t in ts]
    rows = {f"a {d}": torch.stack([c[i] for c in cols]) for i, d in enumerate(shown)}
    col_titles = [f"t={t}\n\u0101={float(cosine.alpha_bars[t]):.2f}" for t in ts]
    fig = plotting.compare_rows(rows, col_titles=col_titles, size=0.9,
                                title=f"forward noising q(x_t | x_0), cosine schedule, T=1000 ({source})")
    written.append(_save(fig, "noise_progression.png"))

    # Linear vs cosine schedules (labs 01 and 07).
    fig = plotting.plot_schedules({"linear (1e-4 .. 0.02)": schedules.make_schedule("linear", 1000),
                                   "cosine (s = 0.008)": schedules.make_schedule("cosine", 1000)},
                                  title="noise schedules, T = 1000")
    written.append(_save(fig, "schedules.png", dpi=90))

    # Samples from the shipped checkpoint, when there is one.
    from labkit.checkpoint import ASSET_PATH, load_model
    from labkit.errors import LabkitError

    if ASSET_PATH.exists():
        from labkit import samplers

        try:
            model, schedule, meta = load_model(None, device="cpu")
        except LabkitError as exc:
            print(f"note: no samples.png: {exc}", file=sys.stderr)
        else:
            train = meta.get("train") or {}
            steps, w = int(train.get("sample_steps", 15)), float(train.get("guidance", 1.0))
            y = torch.arange(10).repeat(4)  # rows of 0..9
            with torch.no_grad():
                x = samplers.sample(model, (len(y), 1, 28, 28), y, schedule, sampler="dpmpp_2m", steps=steps,
                                    guidance=w, clip=1.0, generator=torch.Generator().manual_seed(0))
            fig = plotting.image_grid(x, ncols=10, size=0.6,
                                      title=f"shipped checkpoint: DPM-Solver++(2M), {steps} steps, guidance {w:g}")
            written.append(_save(fig, "samples.png"))
    else:
        print(f"note: no samples.png: {ASSET_PATH.relative_to(ROOT)} does not exist yet", file=sys.stderr)
    return written


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tables", action="store_true", help="only the generated tables in docs/*.md")
    p.add_argument("--figures", action="store_true", help="only the pictures in docs/assets/")
    p.add_argument("--data", default=None, help="MNIST folder (default: LABKIT_DATA, then ../shared/data/mnist)")
    args = p.parse_args(argv)
    both = not (args.tables or args.figures)
    if args.tables or both:
        changed = write_tables()
        print("tables: " + (", ".join(str(c.relative_to(ROOT)) for c in changed) if changed else "up to date"))
    if args.figures or both:
        write_figures(args.data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
