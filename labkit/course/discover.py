"""Find the submissions in a folder: nbgrader's layout, one folder per student, or an LMS's flat download.

Everything in the submissions folder came from students (often an archive unpacked from an LMS, which keeps
symbolic links), so discovery trusts no entry:

* **no link is followed**, file or folder (``os.scandir`` with ``follow_symlinks=False``): a notebook that is
  a link (to the instructor's source notebook, to a classmate's) or a student folder that is a link is not
  graded, and the student's row says so; a dangling link is just another link;
* only **regular files** are read: a FIFO, socket or device is reported and skipped; ``read_submission``
  opens a notebook with ``O_NOFOLLOW | O_NONBLOCK``, checks it is a regular file and caps its size;
* **every folder gets a row**, hidden names (``.alice``, ``...``) included, and two different names never
  share an id: names are reduced to letters, digits, ``@ . -`` (accents dropped: ``zoë`` -> ``zoe``), and
  where two names reduce to the same id, each one that was changed gets a short stable suffix, a hash of
  its original name (``zoe-1f3a9c``). A note says whenever a name was odd.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from labkit.course.restore import normalise_source
from labkit.course.sources import ALLOWED_BESIDE_SOURCE
from labkit.errors import LabkitError

MAX_NOTEBOOK_BYTES = 100 * 2**20  # a notebook with many figures is a few MB; this is far above any lab's
MAX_ENTRIES = 10_000  # files and folders looked at per student (a hostile archive can hold millions)
MAX_DEPTH = 8  # folders inside a student's folder


@dataclass
class Submission:
    student: str
    lab: str
    path: Path


@dataclass
class Discovery:
    """What a submissions folder holds: ``subs`` to grade, ``empty`` students with nothing to grade
    (``(student, note)``: each gets a ``no submission`` row), ``notes`` for the rows of students who
    do have a submission (a link skipped, an odd name), and ``problems`` printed for the instructor."""

    subs: list[Submission] = field(default_factory=list)
    empty: list[tuple[str, str]] = field(default_factory=list)
    notes: dict[str, list[str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def _safe_id(text: str) -> str:
    """``text`` reduced to letters, digits, ``@ . -`` (accents dropped); "" when nothing is left."""
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^A-Za-z0-9@.-]+", "-", plain).strip("-.")


def _suffix(name: str) -> str:
    return hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:6]


def assign_ids(names: Sequence[str]) -> tuple[dict[str, str], dict[str, str]]:
    """``(ids, notes)``: a distinct student id for each distinct raw name, and a note for each odd one."""
    base = {n: _safe_id(n) or f"student-{_suffix(n)}" for n in set(names)}
    sharing: dict[str, list[str]] = {}
    for n, i in base.items():
        sharing.setdefault(i, []).append(n)
    ids, notes = {}, {}
    for n, i in base.items():
        others = sorted(m for m in sharing[i] if m != n)
        ids[n] = f"{i}-{_suffix(n)}" if others and n != i else i
        if others:
            notes[n] = f"the name {n!r} is graded as {ids[n]!r} ({', '.join(map(repr, others))} also reduces to {i!r})"
        elif not _safe_id(n):
            notes[n] = f"the name {n!r} has no letter or digit: graded as {ids[n]!r}"
        elif n.startswith("."):
            notes[n] = f"the name {n!r} is hidden (it starts with a dot): graded as {ids[n]!r}"
    return ids, notes


def read_submission(path: str | os.PathLike) -> bytes:
    """The bytes of a submitted file: a regular file, opened without following a link (``O_NOFOLLOW``),
    without waiting on a FIFO (``O_NONBLOCK``), at most ``MAX_NOTEBOOK_BYTES``. LabkitError otherwise."""
    name = Path(path).name
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        why = "it is a symbolic link" if os.path.islink(path) else exc.strerror
        raise LabkitError(f"{name} was not read: {why}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise LabkitError(f"{name} was not read: it is not a regular file")
        if info.st_size > MAX_NOTEBOOK_BYTES:
            raise LabkitError(
                f"{name} was not read: {info.st_size / 2**20:.0f} MB (limit {MAX_NOTEBOOK_BYTES // 2**20} MB)"
            )
        chunks, left = [], MAX_NOTEBOOK_BYTES + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        if left <= 0:  # it grew while being read
            raise LabkitError(f"{name} was not read: larger than {MAX_NOTEBOOK_BYTES // 2**20} MB")
        return b"".join(chunks)
    finally:
        os.close(fd)


def _lab_from_name(name: str, labs: Sequence[str]) -> str | None:
    low = name.lower()
    for lab in sorted(labs, key=len, reverse=True):
        if lab.lower() in low:
            return lab
    for lab in labs:
        prefix = lab.split("_")[0].lower()  # "lab01"
        if re.search(rf"(^|[^a-z0-9]){re.escape(prefix)}([^0-9]|$)", low):
            return lab
    return None


def _lab_from_content(path: Path, releases: dict) -> str | None:
    try:
        cells = json.loads(read_submission(path).decode("utf-8")).get("cells", [])
    except Exception:
        return None
    ids = {((c.get("metadata") or {}).get("nbgrader") or {}).get("grade_id") for c in cells}
    texts = {
        normalise_source("".join(c["source"]) if isinstance(c.get("source"), list) else c.get("source", ""))
        for c in cells
    }
    best, best_score = None, 0
    for lab, rel in releases.items():
        score = sum(1 for c in rel.cells if c.metadata.get("nbgrader", {}).get("grade_id") in ids)
        score += sum(
            1 for c in rel.cells if c.metadata.get("nbgrader", {}).get("locked") and normalise_source(c.source) in texts
        )
        if score > best_score:
            best, best_score = lab, score
    return best


def _kind(entry: os.DirEntry) -> str:
    """ "link", "folder", "file" or "special" (FIFO, socket, device), never following a link."""
    if entry.is_symlink():
        return "link"
    if entry.is_dir(follow_symlinks=False):
        return "folder"
    return "file" if entry.is_file(follow_symlinks=False) else "special"


def _link_note(entry: os.DirEntry, rel: str) -> str:
    where = "nowhere (a dangling link)" if not os.path.exists(entry.path) else "elsewhere"
    return f"{rel} is a symbolic link to {where}: not followed, not graded (submit the file itself)"


def _scan_folder(folder: Path) -> tuple[list[Path], list[str], list[str]]:
    """``(notebooks, other_files, odd)`` in a student's folder, links and special files in ``odd``."""
    notebooks, others, odd = [], [], []
    stack, seen = [(folder, 0)], 0
    while stack:
        here, depth = stack.pop()
        try:
            with os.scandir(here) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            odd.append(f"{here.relative_to(folder.parent)}: cannot be listed ({exc.strerror})")
            continue
        for entry in entries:
            seen += 1
            if seen > MAX_ENTRIES:
                odd.append(f"{folder.name}/: more than {MAX_ENTRIES} entries; the rest were not looked at")
                return notebooks, others, odd
            if entry.name in ALLOWED_BESIDE_SOURCE:
                continue
            rel = f"{Path(entry.path).relative_to(folder.parent)}"
            kind = _kind(entry)
            if kind == "link":
                odd.append(_link_note(entry, rel))
            elif kind == "special":
                odd.append(f"{rel} is not a regular file (a FIFO, socket or device): skipped")
            elif kind == "folder" and depth < MAX_DEPTH:
                stack.append((Path(entry.path), depth + 1))
            elif kind == "file":
                (notebooks if entry.name.endswith(".ipynb") else others).append(Path(entry.path))
    return sorted(notebooks), sorted(others), odd


def discover(submissions_dir: str | os.PathLike, labs: Sequence[str], releases: dict | None = None) -> Discovery:
    """Find every submission in either layout:

    * ``<student>/<lab>.ipynb`` or ``<student>/<lab>/<lab>.ipynb`` (nbgrader's submitted layout);
    * flat, as an LMS download: ``<student>_<anything>.ipynb``, the student id being everything before the
      first underscore, the lab found in the rest of the name (``lab01_forward`` or ``lab01``) or, failing
      that, from the notebook's content.

    When a student has several files for one lab the newest (by modification time) is graded.
    """
    root = Path(submissions_dir)
    if not root.is_dir():
        raise LabkitError(f"submissions folder {root} does not exist")
    root = root.resolve()
    with os.scandir(root) as it:
        entries = sorted((e for e in it if e.name not in ALLOWED_BESIDE_SOURCE), key=lambda e: e.name)
    owner = {}  # entry name -> the student's raw name: a folder's name, or what comes before "_" in a notebook's
    for e in entries:
        if e.name.endswith(".ipynb") and _kind(e) != "folder":
            owner[e.name] = e.name[: -len(".ipynb")].partition("_")[0]
        elif _kind(e) != "file":  # folders, and links or special files of any name
            owner[e.name] = e.name
    ids, name_notes = assign_ids(list(owner.values()))
    found: dict[tuple[str, str], list[Path]] = {}
    odd: dict[str, list[str]] = {}  # student id -> notes
    others: dict[str, list[str]] = {}  # student id -> files that are not notebooks (for the empty-folder note)
    out = Discovery()
    for raw in owner.values():
        if raw in name_notes:
            odd.setdefault(ids[raw], []).append(name_notes[raw])

    def add(student: str, path: Path, hint: str) -> None:
        lab = _lab_from_name(hint, labs) or (_lab_from_content(path, releases) if releases else None)
        if lab is None:
            odd.setdefault(student, []).append(
                f"{path.relative_to(root)}: cannot tell which lab this is (name it <student>_<lab>.ipynb)"
            )
            return
        found.setdefault((student, lab), []).append(path)

    for entry in entries:
        if entry.name not in owner:
            continue  # a file that is not a notebook, beside the students' folders
        student, kind = ids[owner[entry.name]], _kind(entry)
        if kind == "link":
            odd.setdefault(student, []).append(_link_note(entry, entry.name))
        elif kind == "special":
            odd.setdefault(student, []).append(
                f"{entry.name} is not a regular file (a FIFO, socket or device): skipped"
            )
        elif kind == "folder":
            notebooks, files, notes = _scan_folder(Path(entry.path))
            odd.setdefault(student, []).extend(notes)
            others.setdefault(student, []).extend(p.name for p in files)
            for nbpath in notebooks:
                add(student, nbpath, str(nbpath.relative_to(entry.path)))
        else:
            rest = entry.name[: -len(".ipynb")].partition("_")[2]
            add(student, Path(entry.path), rest or entry.name[: -len(".ipynb")])
    for (student, lab), paths in sorted(found.items()):
        paths = sorted(paths, key=lambda p: p.lstat().st_mtime)
        if len(paths) > 1:
            out.problems.append(f"{student}/{lab}: {len(paths)} files, grading the newest ({paths[-1].name})")
        out.subs.append(Submission(student, lab, paths[-1]))
    graded = {s.student for s in out.subs}
    for student in sorted(set(ids[raw] for raw in owner.values()) - graded):
        files = others.get(student, [])
        shown = ", ".join(files[:5]) + (", ..." if len(files) > 5 else "")
        notes = odd.get(student, []) + ([f"no notebook (.ipynb) in the folder, only {shown}"] if files else [])
        out.empty.append((student, "; ".join(notes) or "empty folder, no notebook submitted"))
    out.notes = {s: n for s, n in odd.items() if s in graded and n}
    for student, notes in sorted(out.notes.items()):
        out.problems += [f"{student}: {n}" for n in notes]
    folders = {ids[owner[e.name]] for e in entries if e.name in owner and _kind(e) == "folder"}
    out.problems += [f"{student}{'/' if student in folders else ''}: {note}" for student, note in out.empty]
    return out


def find_submissions(submissions_dir: str | os.PathLike, labs: Sequence[str], releases: dict | None = None):
    """``(submissions, problems)``: see ``discover``."""
    found = discover(submissions_dir, labs, releases)
    return found.subs, found.problems


def empty_students(submissions_dir: Path, subs: Sequence[Submission]) -> list[tuple[str, str]]:
    """``(student, note)`` for each student entry in which no notebook was found."""
    return discover(submissions_dir, sorted({s.lab for s in subs}) or [""]).empty
