"""What to tell a student whose answer matches no known mistake: the *family* of the mistake, read off the
shape of the error, or else where the answer differs.

    describe(out, ref, tol)   -> "This looks like a sign error: ..."            out = -ref
                                 "This looks like a constant factor: ..."        out = c * ref
                                 "This looks like a constant offset: ..."        out = ref + d
                                 "This looks like the answer transposed ..."     out = ref.T
                                 "This looks like reversed / swapped halves ..." out = ref.flip(k) / ref.roll(n/2, k)
                                 "This looks like an off-by-one shift ..."       out[i] = ref[i -/+ 1] along a dimension
                                 "This looks like an edge case: ..."             wrong only at the first or last entry
                                 otherwise: how many entries differ, and the first of them (expected, got)

A family names the idea behind a mistake ("every value is 2x too large"), never the answer's code. Every
comparison is plain float64 arithmetic, like the rest of ``labkit.checks``.
"""

from __future__ import annotations

import math

import torch

# Constant factors worth a name: what a missing or extra square root, 2 or pi does.
_NAMED_FACTORS = {
    2.0: "2",
    0.5: "1/2",
    4.0: "4",
    0.25: "1/4",
    math.sqrt(2): "sqrt(2)",
    1 / math.sqrt(2): "1/sqrt(2)",
    math.pi: "pi",
    2 * math.pi: "2 pi",
    1 / math.pi: "1/pi",
    1 / (2 * math.pi): "1/(2 pi)",
    10.0: "10",
    0.1: "1/10",
}


def _close(a: torch.Tensor, b: torch.Tensor, atol: float, rtol: float) -> bool:
    """|a - b| <= atol + rtol |b| everywhere (same shapes, float64)."""
    if a.shape != b.shape or a.numel() == 0:
        return False
    ok = (a - b).abs() <= atol + rtol * b.abs()
    return bool(ok.all())


def _index(flat: int, shape) -> list[int]:
    idx = []
    for size in reversed(shape):
        idx.append(flat % size)
        flat //= size
    return idx[::-1]


def _values(v: torch.Tensor) -> str:
    return ", ".join(f"{float(x):g}" for x in v.flatten()[:6]) + (", ..." if v.numel() > 6 else "")


def describe(
    out: torch.Tensor, ref: torch.Tensor, tol: float, *, relative: bool = False, where: tuple | None = None
) -> str:
    """One or two sentences on how ``out`` differs from ``ref`` (both the same shape; ``tol`` as in ``compare``)."""
    o, r = out.detach().cpu().double(), ref.detach().cpu().double()
    if o.shape != r.shape or not bool(torch.isfinite(o).all()):
        return "Re-read the formula in the exercise text."
    family = _family(o, r, tol, relative, where)
    if family:
        return "This looks like " + family
    return _where(o, r, tol, relative, where)


def _family(o, r, tol, relative, where) -> str | None:
    scale = r.abs().max().item() if r.numel() else 0.0
    if scale == 0.0 or r.numel() < 3:  # one or two numbers: any answer is "a factor" or "an offset" of them
        return None
    # tolerances of a family match: as loose as a catalogue entry's (labkit.checks._common.MISTAKE_RTOL), but
    # the family must explain the error: what it leaves is under 1% of the error itself
    err = float((o - r).abs().max())
    atol, rtol = (
        (1e-12 * scale, max(tol, min(1e-4, 0.01 * float(((o - r).abs() / r.abs().clamp(min=1e-12)).max()))))
        if relative
        else (max(tol, min(1e-4 * scale, 0.01 * err)), 0.0)
    )

    def close(a, b):
        return _close(a, b, atol, rtol)

    if float(o.max() - o.min()) <= atol and float(r.max() - r.min()) > 10 * atol:
        return (
            f"a constant answer: every value is {float(o.flatten()[0]):.4g}, whatever the input. Something "
            "cancels out or is never used: check the operator precedence (a / 1 - a is a - a) and which "
            "variables your formula reads"
        )
    if close(o, -r):
        return (
            "a sign error: every value has the opposite sign of the expected one (a term subtracted "
            "where it is added, or the other way round)"
        )
    c = float((o * r).sum() / (r * r).sum())
    if abs(c - 1) > 1e-3 and c != 0 and close(o, c * r):
        named = next(
            (f" (a factor {label})" for value, label in _NAMED_FACTORS.items() if abs(c - value) <= 1e-3 * value), ""
        )
        return (
            f"a constant factor: every value is {c:.4g} times the expected one{named}. A coefficient is off: "
            "look for a missing or extra square root, factor or division"
        )
    d = float((o - r).mean())
    if abs(d) > tol and _close(o - d, r, max(atol, 1e-4 * abs(d)), rtol):
        return (
            f"a constant offset: every value is off by {d:+.4g}. A term is added or missing, or a shift "
            "(such as +1) sits in the wrong place (mind the order of operations)"
        )
    if o.dim() >= 2 and o.shape[-1] == o.shape[-2] and close(o, r.transpose(-1, -2)):
        return "the answer transposed: rows and columns are swapped (which index is the row?)"
    for k in range(o.dim()):
        n = o.shape[k]
        if n < 2:
            continue
        if close(o, r.flip(k)):
            return (
                f"the right values in reverse order along dimension {k}: check the order in which they are put together"
            )
        if n % 2 == 0 and close(o, r.roll(n // 2, k)):
            return (
                f"two halves swapped: along dimension {k}, the first and second halves of the expected "
                "result are in each other's place (which part comes first?)"
            )
        if n >= 3:
            for shift, said in ((1, "i - 1"), (-1, "i + 1")):
                a = o.narrow(k, max(shift, 0), n - 1)
                b = r.narrow(k, max(-shift, 0), n - 1)
                if close(a, b):
                    return (
                        f"an off-by-one shift: along dimension {k}, entry i holds the expected entry {said}. "
                        "Check where the indices start and stop"
                    )
    return _edge(o, r, tol, relative, where)


def _bad(o, r, tol, relative) -> torch.Tensor:
    """Boolean mask of the entries that miss the tolerance."""
    err = (o - r).abs()
    if relative:
        err = err / r.abs().clamp(min=1e-12)
    return err > tol


def _edge(o, r, tol, relative, where) -> str | None:
    """Wrong only at the first or the last entry along dimension 0 (e.g. the first or last time step)."""
    if o.dim() == 0 or o.shape[0] < 3:
        return None
    rows = _bad(o, r, tol, relative).flatten(1).any(1) if o.dim() > 1 else _bad(o, r, tol, relative)  # [n]
    bad = rows.nonzero().flatten().tolist()
    n = o.shape[0]
    if where is not None:
        name, values = where
        values = torch.as_tensor(values).flatten()
        if len(values) == n:
            wrong_values = values[rows]
            lo, hi = values.min(), values.max()
            if bool((wrong_values == lo).all()) and bool(rows.any()):
                return (
                    f"an edge case: everything is right except where {name} = {float(lo):g}, the first "
                    f"{name}. Check what your formula does there (an index like {name} - 1, a special case)"
                )
            if bool((wrong_values == hi).all()) and bool(rows.any()):
                return (
                    f"an edge case: everything is right except where {name} = {float(hi):g}, the last "
                    f"{name}. Check what your formula does there (an index like {name} + 1, a special case)"
                )
            return None
    if bad == [0]:
        return (
            "an edge case: everything is right except the first entry along dimension 0. Check what your "
            "code does there (an index i - 1, a special first step)"
        )
    if bad == [n - 1]:
        return (
            "an edge case: everything is right except the last entry along dimension 0. Check what your "
            "code does there (an index i + 1, a special last step)"
        )
    return None


def _where(o, r, tol, relative, where) -> str:
    """How many entries differ and the first of them, when no family fits."""
    bad = _bad(o, r, tol, relative)
    n_bad, n = int(bad.sum()), bad.numel()
    first = int(bad.flatten().nonzero()[0, 0]) if n_bad else 0
    idx = _index(first, list(o.shape)) if o.dim() else []
    kind = "relative " if relative else ""
    text = (
        f"{n_bad} of {n} entries differ from the expected result by more than the {kind}tolerance {tol:.3g}; "
        f"the first at index {idx}: expected {r.flatten()[first].item():.8g}, got {o.flatten()[first].item():.8g}"
    )
    if where is not None and o.dim() and idx:
        name, values = where
        values = torch.as_tensor(values).flatten()
        if len(values) == o.shape[0]:
            rows = bad.flatten(1).any(1) if o.dim() > 1 else bad
            text += f" (wrong where {name} = {_values(values[rows])})"
    return text + ". Re-read the formula in the exercise text and compare it with your code term by term."
