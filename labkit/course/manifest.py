"""What a grading run has already done: fingerprints of a result's inputs and the manifest of merged results.

A result depends on the notebook (its sha256) and on the grader: the lab's source, labkit's grading code and
the ``GradingSettings``. The client appends one line to ``OUT/cluster-manifest.jsonl`` per submission it has
merged into the gradebook; a later run, local or on Dask, skips every submission whose notebook and grader
fingerprints are there, and grades only what is missing or changed.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path

from labkit.course.results import GradeResult
from labkit.course.settings import GradingSettings
from labkit.course.sources import SOURCE_DIR

MANIFEST_NAME = "cluster-manifest.jsonl"  # (the name predates local incremental grading; kept for old folders)


# The modules whose code decides a score: a worker must run the same as the client, and a result graded with
# other code is not "already graded".
GRADING_MODULES = (
    "autograde",
    "forensics",
    "kernel_side",
    "nbgrader_setup",
    "restore",
    "sandbox",
    "settings",
    "sources",
    "task",
    "trusted",
    "wire",
)


def now_utc() -> str:
    """When a result was merged (to the microsecond: the manifest and the gradebook compare it)."""
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


# --- fingerprints and keys --------------------------------------------------------------------------


def code_fingerprint() -> str:
    """sha256 of labkit's grading code as installed here: ``labkit/checks/**.py`` and the grading modules of
    ``labkit/course``, plus labkit's version (read from disk on every call: about a millisecond)."""
    import labkit

    pkg = Path(labkit.__file__).resolve().parent
    h = hashlib.sha256(str(getattr(labkit, "__version__", "")).encode())
    files = sorted((pkg / "checks").rglob("*.py")) + [pkg / "course" / f"{m}.py" for m in GRADING_MODULES]
    for f in files:
        if f.exists():
            h.update(f.relative_to(pkg).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def grader_fingerprint(repo_root: str | os.PathLike, lab: str, settings: GradingSettings) -> str:
    """What a result depends on besides the notebook: the lab's source, the grading code, the settings."""
    src = Path(repo_root) / SOURCE_DIR / lab / f"{lab}.py"
    h = hashlib.sha256(src.read_bytes() if src.exists() else b"")
    h.update(json.dumps([code_fingerprint(), *settings.fingerprint()]).encode())
    return h.hexdigest()[:32]


def task_key(lab: str, student: str, sha: str) -> str:
    """The Dask key of one submission's task: the same notebook of the same student is the same task."""
    return f"labkit-grade-{lab}-{student}-{sha[:20]}"


# --- the manifest: what the client has merged -----------------------------------------------------------


class Manifest:
    """``OUT/cluster-manifest.jsonl``: one line per submission merged into the gradebook, appended (one
    ``write`` of a whole line, then ``fsync``) only after the gradebook commit. The last line of a
    ``(lab, student)`` wins; a line cut short by a crash is ignored and cut off before the next append."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.records: dict[tuple[str, str], dict] = {}
        self.lines = 0
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        raw = self.path.read_bytes()
        keep = raw if raw.endswith(b"\n") or not raw else raw[: raw.rfind(b"\n") + 1]
        if keep != raw:  # a torn last line (the client died while writing it): drop it, atomically
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_bytes(keep)
            os.replace(tmp, self.path)
        for line in keep.decode("utf-8", errors="replace").splitlines():
            try:
                rec = json.loads(line)
                key = (rec["lab"], rec["student"])
            except (ValueError, KeyError, TypeError):
                continue
            self.records[key] = rec
            self.lines += 1

    def lookup(
        self, lab: str, student: str, sha: str, grader: str, course: str | os.PathLike | None = None
    ) -> dict | None:
        """The record of this exact notebook graded by this grader, when its results are still in place
        (the autograded notebook exists in ``course``, if it had one); else None."""
        rec = self.records.get((lab, student))
        if not rec or rec.get("sha256") != sha or rec.get("grader") != grader:
            return None
        if rec.get("autograded") and course is not None:
            if not (Path(course) / "autograded" / student / lab / f"{lab}.ipynb").exists():
                return None
        return rec

    def record(self, lab: str, student: str, sha: str, grader: str, result: GradeResult, **extra) -> dict:
        rec = {
            "lab": lab,
            "student": student,
            "sha256": sha,
            "grader": grader,
            "result": asdict(result),
            "merged_at": now_utc(),
            **extra,
        }
        return self._append(rec)

    def recover(self, merged: list[dict]) -> int:
        """Append the gradebook's records (``merged_in_gradebook``) that this manifest lacks: merges committed
        by a client that died before writing their manifest line. Returns how many."""
        count = 0
        for rec in merged:
            try:
                cur = self.records.get((rec["lab"], rec["student"]))
            except (KeyError, TypeError):
                continue
            same = ("sha256", "grader", "merged_at")
            if cur is None or any(cur.get(k) != rec.get(k) for k in same):
                self._append({**rec, "recovered": True})
                count += 1
        return count

    def _append(self, rec: dict) -> dict:
        lab, student = rec["lab"], rec["student"]
        line = (json.dumps(rec, sort_keys=True) + "\n").encode("utf-8")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(str(self.path), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.records[(lab, student)] = rec
        self.lines += 1
        return rec
