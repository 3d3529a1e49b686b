"""What every check shares: calling the student's function safely, type/shape checks, comparisons.

Rules (see docs/instructors.md):
  * compare with plain tensor arithmetic in float64 (``max_abs_diff``), never ``torch.allclose`` or
    ``numpy.allclose``: student code runs in the same kernel and may have replaced them;
  * tolerances come from the computation, not from habit: ``compare(..., reference=fn, args=inputs)`` passes
    anything within ``MARGIN`` times the float32 error of labkit's own ``fn`` on those inputs (at least the
    check's floor), and a catalogue mistake matches within ``MISTAKE_RTOL`` of its own size, so a correct
    float32 answer passes, and a known mistake is named, on every CPU (AVX-512 or not);
  * draw fresh inputs from a seeded ``torch.Generator`` (visible tests: seed 0, hidden tests: others);
  * keep copies of the inputs and fail when the student's function edits one in place;
  * on failure raise ``CheckFailed`` (an AssertionError, which nbgrader counts as a failed test) whose
    message names the mistake when it is a known one, else its family (``_families``: a constant factor,
    a sign, swapped halves, ...), else where the answer differs; a message never prints the answer's code;
    print one line on success;
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

    As data (what the grader records per test cell, for the class report): ``check`` names the check and
    ``mistake`` the catalogue entry the answer matched, when it matched one.
    """

    def __init__(
        self, message: str = "", *, check: str | None = None, mistake: str | None = None, outcome: str = "failed"
    ):
        super().__init__(message)
        self.check, self.mistake, self.outcome = check, mistake, outcome

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


def fail(check: str, message: str, *, mistake: str | None = None, outcome: str = "failed") -> None:
    raise CheckFailed(f"{check}: {message}", check=check, mistake=mistake, outcome=outcome)


# What PyTorch says when one operation mixes tensors of two devices.
DEVICE_MISMATCH = ("same device", "expected device", "device type", "copy out of meta")


def follows_the_device(check: str, fn: Callable, *args, what: str = "t") -> None:
    """Fail when ``fn`` makes its tensors on the CPU whatever device its inputs are on (``torch.zeros(n)``
    without ``device=``): fine on a laptop, a crash on Colab's GPU. Called after the value checks, on copies of
    the tensor ``args`` on PyTorch's "meta" device (shapes without data, so it costs nothing), which stands in
    for a GPU here: mixing it with a CPU tensor raises as mixing CUDA and CPU does. Anything else the meta
    device cannot do (``.item()``, numpy) is not judged here."""
    meta = [a.to("meta") if isinstance(a, torch.Tensor) else a for a in args]
    hint = (
        f"create new tensors on the input's device: torch.zeros(..., device={what}.device), "
        f"torch.arange(..., device={what}.device) (the check ran your function with {what} on PyTorch's "
        "'meta' device, which stands in for a GPU here)"
    )
    try:
        with _stderr_to_stdout():
            out = fn(*meta)
    except Exception as exc:  # noqa: BLE001
        text = str(exc).lower()
        if "copy out of meta" in text:  # filled a CPU tensor from it, or .cpu(), .item(), .tolist()
            fail(
                check,
                f"your function copies {what}'s values to the CPU (into a tensor made without device=, or with "
                f".cpu(), .item(), .tolist()), so on a GPU its result is on the CPU and the next layer fails; {hint}",
                mistake="tensors made on the CPU, not on the input's device",
            )
        if any(k in text for k in DEVICE_MISMATCH):
            fail(
                check,
                f"your function makes a tensor on the CPU whatever device {what} is on, so on a GPU it raises "
                f'"{str(exc).splitlines()[0][:160]}"; {hint}',
                mistake="tensors made on the CPU, not on the input's device",
            )
        return
    if isinstance(out, torch.Tensor) and out.device.type != "meta":
        fail(
            check,
            f"your function returns its result on the {out.device.type.upper()} whatever device {what} is on "
            f"(a tensor made without device=, then filled), so the next layer on a GPU fails; {hint}",
            mistake="tensors made on the CPU, not on the input's device",
        )


# --- what the checks' toy models accept: the inputs a real network takes, with messages that say which is wrong


def model_x(x, dtype: torch.dtype, start: str, why: str) -> int:
    """-> B, or ValueError unless ``x`` is a float tensor [B, C, H, W] in the model's ``dtype``. ``start`` names
    the loop's starting tensor (x_T, x_1) and ``why`` where another dtype comes from (a float64 schedule)."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
        raise ValueError(
            "model(x, t, y): x must be a float tensor [B, C, H, W], got "
            f"{type(x).__name__ if not isinstance(x, torch.Tensor) else list(x.shape)}"
        )
    if x.dtype != dtype:
        raise ValueError(
            f"model(x, t, y): x is {x.dtype} but the model computes in {dtype}: a step returned another dtype "
            f"than {start} ({why}); give the model x in {start}'s dtype (.to({start}.dtype))"
        )
    return x.shape[0]


def model_index(name: str, v, B: int, n: int, what: str, hint: str = "") -> None:
    """ValueError unless ``v`` (t or y) is an int64 tensor of shape [B] with values in 0..n-1."""
    if not isinstance(v, torch.Tensor):
        raise ValueError(
            f"model(x, t, y): {name} must be an int64 tensor of shape [B] = [{B}] ({what}), got a {type(v).__name__}"
        )
    if v.dtype != torch.long or tuple(v.shape) != (B,):
        raise ValueError(
            f"model(x, t, y): {name} must be an int64 tensor of shape [B] = [{B}] ({what}), "
            f"got {v.dtype} of shape {list(v.shape)}" + hint
        )
    if int(v.min()) < 0 or int(v.max()) >= n:
        raise ValueError(f"model(x, t, y): {name} must be in 0..{n - 1}, got {int(v.min())}..{int(v.max())}")


def passed(check: str, detail: str) -> None:
    print(f"\u2714 {check} passed ({detail})")


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def spread_steps(B: int, T: int, g: torch.Generator, also: Sequence[int] = ()) -> torch.Tensor:
    """B steps in 0..T-1 in random order (distinct while B <= T). As far as B allows they hold t = 0, the steps in
    ``also``, T - 1 and T // 2: early, late and middle steps, where mistakes show differently."""
    wanted = [0, *also, T - 1, T // 2]
    musts = torch.tensor(sorted(set(wanted), key=wanted.index)[:B], dtype=torch.long)
    perm = torch.randperm(T, generator=g)
    t = torch.cat([musts, perm[~torch.isin(perm, musts)]])[:B]
    if B > T:  # more images than steps: every step once, then repeats
        t = torch.cat([t, torch.randint(0, T, (B - T,), generator=g)])
    return t[torch.randperm(B, generator=g)]


def clone_args(args: Iterable) -> list:
    return [a.clone() if isinstance(a, torch.Tensor) else a for a in args]


# Error substrings -> hints, for exceptions raised inside student code.
COMMON_HINTS = {
    "must match the size of tensor": "two tensors do not broadcast together: print their shapes. Per-image "
    "values [B] need singleton dimensions, [B, 1, 1, 1], to combine with images [B, C, H, W]",
    "shape of the mask": "a mask and the tensor it indexes have different lengths: scores and labels that go "
    "together come from the same set (the generated labels with the generated scores, the real with the real)",
    "index out of range": "an index is out of range: steps run over t = 0 .. T-1 (alpha_bars[t], not alpha_bars[t + 1])",
    "out of bounds": "an index is out of range: steps run over t = 0 .. T-1 (alpha_bars[t], not alpha_bars[t + 1])",
    "numpy": "mixing numpy and torch: use torch operations (torch.sqrt, torch.cat, ...) on tensors",
    "expected scalar type": "mixed dtypes: cast with .to(x.dtype) or .float()",
}


def call(
    check: str,
    fn: Callable,
    *args,
    names: Sequence[str] | None = None,
    hints: Mapping[str, str] | None = None,
    **kwargs,
):
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
        raise CheckFailed(f"{check}: {message}", check=check) from exc
    if out is NotImplemented:
        fail(
            check,
            "not implemented yet: replace `raise NotImplementedError()` with your code and run the cell again",
            outcome="not implemented",
        )
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


def expect_tensor(
    check: str,
    out,
    shape: tuple | None = None,
    *,
    what: str = "the result",
    floating: bool = True,
    shape_hints: Mapping[tuple, str] | None = None,
) -> torch.Tensor:
    """Check that ``out`` is a finite torch tensor of ``shape``; return it detached on the CPU."""
    type_name = type(out).__module__ + "." + type(out).__name__
    if type_name.startswith("numpy."):
        fail(
            check,
            f"{what} is a numpy array ({type(out).__name__}); return a torch.Tensor "
            "(use torch operations such as torch.sqrt / torch.cumprod, not numpy's)",
        )
    if out is None:
        fail(check, f"{what} is None: did you forget the `return` statement?")
    if not isinstance(out, torch.Tensor):
        fail(check, f"{what} should be a torch.Tensor, got {type(out).__name__}")
    if out.device.type == "meta":
        fail(
            check,
            f"{what} is on the 'meta' device, which holds no values: compute it from the inputs, "
            "on their device (e.g. x0.device), without .to('meta')",
        )
    try:
        out = out.detach().cpu()  # a result on another real device (cuda, mps) is accepted
    except Exception as exc:
        fail(
            check,
            f"{what} is on device '{out.device}' and cannot be read on the CPU "
            f"({type(exc).__name__}: {str(exc)[:200]}): return it on the device of the inputs",
        )
    if shape is not None and tuple(out.shape) != tuple(shape):
        hint = (shape_hints or {}).get(tuple(out.shape))
        fail(
            check, f"{what} has shape {list(out.shape)}, expected {list(shape)}" + (f"\n  hint: {hint}" if hint else "")
        )
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


EPS32 = torch.finfo(torch.float32).eps  # 1.2e-7: the relative rounding step of float32
MARGIN = 16.0  # a correct float32 answer may round up to 16x worse than labkit's own float32 computation
MISTAKE_RTOL = 1e-4  # a catalogue entry matches within 1e-4 of its own size (about 800 float32 rounding steps)


def as_float32(args: Sequence) -> list:
    """The same arguments with every floating-point tensor in float32 (what a student computing in float32 uses)."""
    return [a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args]


def float32_tolerance(
    reference: Callable, args: Sequence, ref: torch.Tensor, *, floor: float, relative: bool = False
) -> float:
    """The pass tolerance of one comparison, derived from the computation itself: ``MARGIN`` times how far
    labkit's own ``reference`` lands from the float64 result ``ref`` when it runs in float32 on the same inputs,
    and at least ``floor``. A correct answer computed in float32 passes on every machine (AVX-512 or not)
    however ill-conditioned the inputs (SNR near alpha_bar = 1, sums of large terms)."""
    with torch.no_grad():
        try:
            ref32 = reference(*as_float32(args))
        except Exception:  # a reference that needs float64 inputs: the floor alone
            return floor
    err = (max_rel_diff if relative else max_abs_diff)(ref32, ref)
    return max(floor, MARGIN * err) if math.isfinite(err) else floor


def _mistake_distance(out: torch.Tensor, wrong: torch.Tensor, tol: float, relative: bool, err: float) -> float:
    """How far ``out`` is from a catalogue entry, in units of that entry's own tolerance (<= 1: a match). The
    tolerance scales with the entry (float32 rounds an entry of size 170 about 170x more than one of size 1),
    but stays under a tenth of the answer's own error ``err``: an entry must explain the error, not tie with it."""
    if isinstance(wrong, (tuple, list)):  # several ways to compute the same mistake (float32 and float64)
        return min(_mistake_distance(out, w, tol, relative, err) for w in wrong)
    if tuple(out.shape) != tuple(wrong.shape):
        return math.inf
    w = wrong.detach().cpu().double()
    scale = w.abs().max().item() if w.numel() else 0.0
    if not math.isfinite(scale):
        return math.inf
    if relative:
        return max_rel_diff(out, w, floor=max(1e-3 * scale, 1e-12)) / max(tol, min(MISTAKE_RTOL, 0.1 * err))
    return max_abs_diff(out, w) / max(tol, min(MISTAKE_RTOL * scale, 0.1 * err), 1e-12)


def compare(
    check: str,
    out: torch.Tensor,
    ref: torch.Tensor,
    mistakes: Mapping[str, torch.Tensor] | None = None,
    *,
    tol: float = 1e-4,
    relative: bool = False,
    context: str = "",
    reference: Callable | None = None,
    args: Sequence = (),
    where: tuple | None = None,
) -> None:
    """Pass if ``out`` matches ``ref``; else name the known mistake ``out`` matches best, else the family of the
    mistake (sign, constant factor, offset, transpose, swapped halves, wrong only at the first or last step),
    else say where the answer differs.

    ``tol`` is the floor of the pass tolerance; with ``reference`` (labkit's function) and its ``args``, the
    tolerance grows to what float32 rounding of this very computation needs (``float32_tolerance``).
    ``where = (name, values)`` names the entries along dimension 0 in messages (e.g. ``("t", t)``)."""
    if reference is not None:
        tol = float32_tolerance(reference, args, ref, floor=tol, relative=relative)
    diff = max_rel_diff if relative else max_abs_diff
    err = diff(out, ref)
    if err <= tol:
        return
    if out.dtype in (torch.float16, torch.bfloat16):
        fail(
            check,
            f"the result has dtype {out.dtype}{context}: half precision cannot hold the answer to the "
            f"tolerance {tol:.3g} (largest difference {err:.3g}). Compute and return float32, like the "
            "inputs (no .half() / .bfloat16())",
        )
    best, best_name = math.inf, None
    for name, wrong in (mistakes or {}).items():
        first = wrong[0] if isinstance(wrong, (tuple, list)) else wrong
        if first is None or diff(first, ref) <= tol:  # this mistake gives the right answer on these inputs
            continue
        d = _mistake_distance(out, wrong, tol, relative, err)
        if d <= 1.0 and d < best:
            best, best_name = d, name
    if best_name is not None:
        fail(check, f"wrong values{context}. This looks like a known mistake: {best_name}", mistake=best_name)
    from labkit.checks._families import describe

    fail(check, f"wrong values{context}. " + describe(out, ref, tol, relative=relative, where=where))


def unchanged(check: str, before: torch.Tensor, after: torch.Tensor, name: str) -> None:
    """Fail if the student's function modified an input in place."""
    if max_abs_diff(before, after) != 0.0:
        fail(
            check,
            f"your function changed its input `{name}` in place; compute a new tensor instead "
            "(avoid +=, *= and methods ending in _ on the inputs)",
        )


def deterministic(check: str, fn: Callable, args: tuple, first: torch.Tensor, *, floating: bool = True) -> None:
    """Fail if calling again with the same inputs gives another answer (random numbers drawn inside)."""
    again = expect_tensor(check, call(check, fn, *args), floating=floating)
    if max_abs_diff(first, again) > 1e-6:
        fail(
            check,
            "two calls with the same inputs gave different results: use the inputs you are given "
            "(e.g. the `noise` argument) instead of drawing new random numbers",
        )


def yours_or_labkit(check: Callable, yours: Callable, labkit_fn: Callable, what: str) -> Callable:
    """``yours`` if ``check(yours)`` passes (run quietly), else labkit's ``labkit_fn``; one printed line says which.

    The cells after an exercise run with the student's own function when it is right, and with labkit's
    when it is not, so that one wrong answer never breaks the rest of the lab."""
    import io

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            check(yours)
    except Exception:
        print(f"Using labkit's {what}: yours does not pass its check yet (see the test cell above).")
        return labkit_fn
    print(f"Using your {what} (it passes its check).")
    return yours


def loss_values(name: str, out, steps: int, how: str = "loss.item()") -> list[float]:
    """A training loop's returned list of step losses as floats, with a message for whatever else came back;
    ``how`` says where each float comes from (``"loss.item()"``, ``"train_step returns one"``)."""
    if out is None:
        fail(name, f"nothing was returned: return the list of the losses of every step ({how})")
    if isinstance(out, torch.Tensor):
        out = out.detach().reshape(-1).tolist()
    if not isinstance(out, (list, tuple)):
        fail(name, f"return a list of the {steps} losses (one float per step), got {type(out).__name__}")
    if len(out) != steps:
        fail(name, f"returned {len(out)} losses for {steps} steps: append each step's loss to the list")
    values = []
    for v in out:
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            v = float(v.detach().reshape(()))
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            fail(name, f"the list holds a {type(v).__name__}; append each step's loss as a float ({how})")
        values.append(float(v))
    return values
