"""What every check shares: calling the student's function safely, type/shape checks, comparisons.

Rules (see docs/instructors.md):
  * compare with plain tensor arithmetic in float64 (``max_abs_diff``), never ``torch.allclose`` or
    ``numpy.allclose``: student code runs in the same kernel and may have replaced them;
  * draw fresh inputs from a seeded ``torch.Generator`` (visible tests: seed 0, hidden tests: others);
  * keep copies of the inputs and fail when the student's function edits one in place;
  * on failure raise ``CheckFailed`` (an AssertionError, which nbgrader counts as a failed test) whose
    message names the mistake when it is a known one, and prints one line on success;
  * nbgrader scores a test cell 0 when it writes anything to stderr, so warnings and stderr output of the
    student's function are shown on stdout instead (a correct answer that warns still earns its points);
  * types: numpy arrays are rejected with a message (the labs teach torch); results on another real device
    are accepted (copied to the CPU), the data-less ``meta`` device is not; float32 and float64 are both
    accepted, half precision fails only when it cannot meet the tolerance, integer results fail.
"""

from __future__ import annotations

import contextlib
import math
import sys
import warnings
from typing import Callable, Iterable, Mapping, Sequence

import torch


class CheckFailed(AssertionError):
    """A check failed; the message says what was expected and, where known, which mistake was made.

    Presentation only (what a student reads): IPython shows it through ``_render_traceback_`` as one red
    message, plus the line of the student's own code that raised, when there is one, instead of a
    traceback through this module. nbgrader still sees an error (ename ``CheckFailed``, the message as
    evalue) and scores the test cell 0. While a student works (not under nbgrader),
    ``labkit.runall`` shows the same message without failing the cell, so Run All goes on.
    """

    def friendly(self, color: bool = True) -> str:
        """The message a student reads: ``✘ check: what went wrong`` (+ where in their code)."""
        red, bold, off = ("\x1b[31m", "\x1b[1m", "\x1b[0m") if color else ("", "", "")
        lines = str(self).splitlines() or [type(self).__name__]
        out = [f"{red}{bold}\u2718 {lines[0]}{off}"] + [f"{red}{ln}{off}" for ln in lines[1:]]
        where = _student_line(self.__cause__)
        if where:
            out.append(f"{red}  in your code: {where}{off}")
        return "\n".join(out)

    def _render_traceback_(self):  # IPython: replaces the traceback with these lines
        return self.friendly().splitlines()


def _student_line(exc: BaseException | None) -> str | None:
    """``line N: <source>`` of the last traceback frame of ``exc`` that is notebook code (not labkit, not an
    installed package, not the standard library), or None."""
    if exc is None or exc.__traceback__ is None:
        return None
    import linecache
    import os
    import sysconfig
    import traceback

    ours = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the labkit package
    libs = {p for p in (sysconfig.get_paths().get(k) for k in ("stdlib", "purelib", "platlib")) if p}
    found = None
    for frame in traceback.extract_tb(exc.__traceback__):
        name = os.path.abspath(frame.filename) if not frame.filename.startswith("<") else frame.filename
        if name.startswith(ours) or any(name.startswith(p) for p in libs) or "-packages" in name:
            continue
        text = (frame.line or linecache.getline(frame.filename, frame.lineno or 0)).strip()
        where = f"`{frame.name}`, line {frame.lineno}" if frame.name != "<module>" else f"line {frame.lineno}"
        found = f"{where}: {text}" if text else where
    return found


def fail(check: str, message: str) -> None:
    raise CheckFailed(f"{check}: {message}")


def passed(check: str, detail: str) -> None:
    print(f"\u2714 {check} passed ({detail})")


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def clone_args(args: Iterable) -> list:
    return [a.clone() if isinstance(a, torch.Tensor) else a for a in args]


# Error substrings -> hints, for exceptions raised inside student code.
COMMON_HINTS = {
    "must match the size of tensor": "two tensors do not broadcast together: print their shapes. Per-image "
    "values [B] must become [B, 1, 1, 1] (e.g. values[t].view(-1, 1, 1, 1)) to combine with images [B, C, H, W]",
    "index out of range": "an index is out of range: steps run over t = 0 .. T-1 (alpha_bars[t], not alpha_bars[t + 1])",
    "out of bounds": "an index is out of range: steps run over t = 0 .. T-1 (alpha_bars[t], not alpha_bars[t + 1])",
    "numpy": "mixing numpy and torch: use torch operations (torch.sqrt, torch.cat, ...) on tensors",
    "expected scalar type": "mixed dtypes: cast with .to(x.dtype) or .float()",
}


def call(check: str, fn: Callable, *args, names: Sequence[str] | None = None,
         hints: Mapping[str, str] | None = None, **kwargs):
    """Call the student's function, turning exceptions into a clear failure, and fail if it changed a
    tensor argument in place (``names`` name the arguments in that message)."""
    if not callable(fn):
        fail(check, f"expected a function, got {type(fn).__name__}")
    saved = clone_args(args)
    try:
        with _stderr_to_stdout():
            out = fn(*args, **kwargs)
    except NotImplementedError:
        out = NotImplemented
    except CheckFailed:
        raise
    except Exception as exc:  # the student's bug: report it, with a hint when we recognise it
        text = f"{type(exc).__name__}: {exc}"
        hint = next((h for key, h in {**(hints or {}), **COMMON_HINTS}.items() if key.lower() in text.lower()), None)
        message = f"your function raised {text}"
        if hint:
            message += f"\n  hint: {hint}"
        raise CheckFailed(f"{check}: {message}") from exc
    if out is NotImplemented:
        fail(check, "not implemented yet: replace `raise NotImplementedError()` with your code and run the cell again")
    for k, (before, after) in enumerate(zip(saved, args)):
        if isinstance(before, torch.Tensor):
            label = names[k] if names and k < len(names) else f"argument {k + 1}"
            unchanged(check, before, after, label)
    return out


@contextlib.contextmanager
def _stderr_to_stdout():
    """Run student code with its warnings and stderr shown on stdout: nbgrader gives a test cell 0 points as
    soon as it prints to stderr, which would punish a correct answer for a harmless warning."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with contextlib.redirect_stderr(sys.stdout):
            yield
    for w in caught[:3]:
        print(f"note: your function warned: {w.category.__name__}: {str(w.message)[:300]}")


def expect_tensor(check: str, out, shape: tuple | None = None, *, what: str = "the result", floating: bool = True,
                  shape_hints: Mapping[tuple, str] | None = None) -> torch.Tensor:
    """Check that ``out`` is a finite torch tensor of ``shape``; return it detached on the CPU."""
    type_name = type(out).__module__ + "." + type(out).__name__
    if type_name.startswith("numpy."):
        fail(check, f"{what} is a numpy array ({type(out).__name__}); return a torch.Tensor "
                    "(use torch operations such as torch.sqrt / torch.cumprod, not numpy's)")
    if out is None:
        fail(check, f"{what} is None: did you forget the `return` statement?")
    if not isinstance(out, torch.Tensor):
        fail(check, f"{what} should be a torch.Tensor, got {type(out).__name__}")
    if out.device.type == "meta":
        fail(check, f"{what} is on the 'meta' device, which holds no values: compute it from the inputs, "
                    "on their device (e.g. x0.device), without .to('meta')")
    try:
        out = out.detach().cpu()  # a result on another real device (cuda, mps) is accepted
    except Exception as exc:
        fail(check, f"{what} is on device '{out.device}' and cannot be read on the CPU "
                    f"({type(exc).__name__}: {str(exc)[:200]}): return it on the device of the inputs")
    if shape is not None and tuple(out.shape) != tuple(shape):
        hint = (shape_hints or {}).get(tuple(out.shape))
        fail(check, f"{what} has shape {list(out.shape)}, expected {list(shape)}" + (f"\n  hint: {hint}" if hint else ""))
    if floating and not out.is_floating_point():
        fail(check, f"{what} has dtype {out.dtype}; expected a floating-point tensor")
    if floating and out.numel() and not bool(torch.isfinite(out).all()):
        fail(check, f"{what} contains NaN or infinity (a division by zero, or sqrt/log of a negative number?)")
    return out


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| in float64, with plain arithmetic (inf when shapes differ or a value is NaN)."""
    if tuple(a.shape) != tuple(b.shape):
        return math.inf
    if a.numel() == 0:
        return 0.0
    d = (a.detach().cpu().double() - b.detach().cpu().double()).abs().max().item()
    return math.inf if d != d else d


def max_rel_diff(a: torch.Tensor, b: torch.Tensor, floor: float = 1e-12) -> float:
    """max |a - b| / max(|b|, floor), for values spanning many orders of magnitude (SNR)."""
    if tuple(a.shape) != tuple(b.shape):
        return math.inf
    if a.numel() == 0:
        return 0.0
    a, b = a.detach().cpu().double(), b.detach().cpu().double()
    d = ((a - b).abs() / b.abs().clamp(min=floor)).max().item()
    return math.inf if d != d else d


def compare(check: str, out: torch.Tensor, ref: torch.Tensor, mistakes: Mapping[str, torch.Tensor] | None = None, *,
            tol: float = 1e-4, relative: bool = False, context: str = "") -> None:
    """Pass if ``out`` matches ``ref``; else name the first known mistake ``out`` matches, else say how far off."""
    diff = max_rel_diff if relative else max_abs_diff
    err = diff(out, ref)
    if err <= tol:
        return
    if out.dtype in (torch.float16, torch.bfloat16):
        fail(check, f"the result has dtype {out.dtype}{context}: half precision cannot hold the answer to the "
                    f"tolerance {tol:g} (largest difference {err:.3g}). Compute and return float32, like the "
                    "inputs (no .half() / .bfloat16())")
    for name, wrong in (mistakes or {}).items():
        if wrong is not None and diff(out, wrong) <= tol and diff(wrong, ref) > tol:
            fail(check, f"wrong values{context}. This looks like a known mistake: {name}")
    kind = "relative" if relative else "absolute"
    fail(check, f"wrong values{context}: largest {kind} difference from the expected result is {err:.3g} "
                f"(tolerance {tol:g}). Re-read the formula in the exercise text.")


def unchanged(check: str, before: torch.Tensor, after: torch.Tensor, name: str) -> None:
    """Fail if the student's function modified an input in place."""
    if max_abs_diff(before, after) != 0.0:
        fail(check, f"your function changed its input `{name}` in place; compute a new tensor instead "
                    "(avoid +=, *= and methods ending in _ on the inputs)")


def deterministic(check: str, fn: Callable, args: tuple, first: torch.Tensor) -> None:
    """Fail if calling again with the same inputs gives another answer (random numbers drawn inside)."""
    again = expect_tensor(check, call(check, fn, *args))
    if max_abs_diff(first, again) > 1e-6:
        fail(check, "two calls with the same inputs gave different results: use the inputs you are given "
                    "(e.g. the `noise` argument) instead of drawing new random numbers")
