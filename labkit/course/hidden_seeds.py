"""Hidden tests' seeds, drawn anew for every graded notebook from a secret of the course.

A hidden test line such as ``checks.check_snr(snr, seed=5, sizes=(3, 1000))`` never enters the student's
kernel, but the inputs it makes do: the student's function receives them, and can print them, or stash
them and show them in a later cell of its own feedback. Were the seed fixed, one graded run would tell a
student the hidden inputs of every later one. So the grader, where it runs the hidden test cell (in its
own process, ``trusted.TrustedExecute``), replaces each ``seed=<number>`` between ``### BEGIN HIDDEN
TESTS`` and ``### END HIDDEN TESTS`` by a number drawn from

    HMAC-SHA256(course secret, "<run id>|<grade id>|<line>|<n-th seed on the line>")

The run id is new for every graded notebook (every student, every run), so no two gradings share hidden
inputs; it is kept in the autograded notebook's metadata (``labkit.hidden_seed_run``), and with the secret
anyone holding the course folder can draw the same seeds again. The secret lives in the course folder
(``.labkit-seed-secret``, made on first use, readable by its owner only), outside every sandbox. Sizes stay
as written: they are part of what a hidden test tests. A correct answer passes on any seed (the checks
compare against labkit's own function on the same inputs), so its score does not change.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import stat
from pathlib import Path

from labkit.course.sources import BEGIN_HIDDEN

SECRET_FILE = ".labkit-seed-secret"
END_HIDDEN = "### END HIDDEN TESTS"
SEED = re.compile(r"\bseed\s*=\s*\d+")


def course_secret(course: str | os.PathLike) -> bytes:
    """The course's secret (made the first time: 32 random bytes as hex, written to a temporary file and
    linked into place, so that two grading processes never see half a secret). Read without following a
    link, only from a regular file, at most 200 bytes, and kept readable by its owner only (a course
    unpacked from a zip, as on a Dask worker, loses the mode); a bad one is an error, never replaced."""
    path = Path(course) / SECRET_FILE
    nofollow = getattr(os, "O_NOFOLLOW", 0)
    if not os.path.lexists(path):
        tmp = path.with_name(f"{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | nofollow, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        try:
            os.link(tmp, path)  # fails if another process was first: then its secret is the one
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    fd = os.open(path, os.O_RDONLY | nofollow | getattr(os, "O_NONBLOCK", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"{path} is not a regular file")
        if info.st_mode & 0o077:
            os.fchmod(fd, 0o600)
        data = os.read(fd, 200).strip()
    finally:
        os.close(fd)
    if len(data) < 32:
        raise OSError(f"{path} holds no usable secret (delete it to make a new one)")
    return data


def draw_seed(secret: bytes, run: str, where: str) -> int:
    """A seed in 1 .. 2**31 - 1, the same for the same secret, run and place, unpredictable otherwise."""
    digest = hmac.new(secret, f"{run}|{where}".encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") % (2**31 - 1) + 1


def reseed_hidden_tests(source: str, secret: bytes, run: str, cell: str, accept=lambda line: True) -> str:
    """``source`` (a test cell) with every ``seed=N`` of its hidden test lines drawn for this run.

    ``accept(line)`` may refuse a drawn line (``passes_with_library``: labkit's own answer must pass it);
    up to 8 draws are tried, and if none is accepted the line keeps the seed its author wrote."""
    lines, hidden = source.splitlines(keepends=True), False
    for i, line in enumerate(lines):
        if line.strip().startswith(BEGIN_HIDDEN):
            hidden = True
        elif line.strip().startswith(END_HIDDEN):
            hidden = False
        elif hidden and SEED.search(line):
            for attempt in range(8):
                count = iter(range(1_000))  # the n-th seed= of the line
                drawn = SEED.sub(
                    lambda m: f"seed={draw_seed(secret, run, f'{cell}|{i}|{attempt}|{next(count)}')}", line
                )
                if accept(drawn):
                    lines[i] = drawn
                    break
    return "".join(lines)


def passes_with_library(checks):
    """``accept`` for ``reseed_hidden_tests``: the hidden test line, run here with labkit's own answers
    (``exercises.LIBRARY_ANSWERS``), passes. A check whose inputs go wrong on some seeds (a schedule that
    turns negative for one draw) then never fails a correct answer; the student's code is not involved."""
    import builtins
    import contextlib
    import importlib
    import io

    from labkit.course.exercises import LIBRARY_ANSWERS

    def accept(line: str) -> bool:
        names = {"checks": checks}
        try:
            for name, module in LIBRARY_ANSWERS.items():
                if re.search(rf"\b{name}\b", line):  # a lab's own stand-in first (labkit_unet: the student's arguments)
                    names[name] = getattr(checks, f"labkit_{name.lower()}", None) or getattr(
                        importlib.import_module(module), name
                    )
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                exec(compile(line.strip(), "<hidden test>", "exec"), {"__builtins__": builtins}, names)  # noqa: S102
        except Exception:  # the course's own line and answers: a failure only means "draw again"
            return False
        return True

    return accept
