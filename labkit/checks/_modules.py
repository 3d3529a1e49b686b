"""Checks for the networks a student builds (``nn.Module`` classes): build, load the grader's weights, run.

A module check never receives the student's object. It hands the student's *class* and a plain-data
request to ``run_module``, which runs ``probe`` wherever the class lives: in the student's own kernel while
they work, and, while grading, in their sandboxed kernel on the grader's request (``labkit.course.trusted``).
``probe`` builds the module with the constructor arguments the grader chose, lists its parameters, loads the
grader's weights into it (by name, else by order and shape), runs it on the grader's inputs and returns
**data only**: the parameter names and shapes, the outputs, whether an input was changed in place. The
comparison with labkit's module, loaded with the same weights, happens in the check.

    request = {"init": {...}, "weights": [(name, tensor), ...] or None, "calls": [(args, kwargs), ...],
               "grad": False}
    probe(cls, request) -> {"params": [[name, shape], ...], "loaded": "names" | "order" | None,
                            "outputs": [tensor or list of tensors, ...], "inplace": [bool, ...],
                            "training": bool}
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from labkit.checks._common import CheckFailed, call, fail

# --- the half that runs where the class is (the student's kernel when grading) --------------------------


def probe(cls: Callable, request: Mapping) -> dict:
    """Build ``cls(**request["init"])``, load ``request["weights"]``, run it on ``request["calls"]``: data only."""
    module = cls(**dict(request.get("init") or {}))
    if not isinstance(module, nn.Module):
        return {"not_module": f"{type(module).__module__}.{type(module).__qualname__}"}
    params = [[name, list(p.shape)] for name, p in module.named_parameters()]
    report: dict[str, Any] = {"params": params, "loaded": None, "outputs": [], "inplace": []}
    weights = request.get("weights")
    if weights is not None:
        report["loaded"] = load_weights(module, weights)
        if report["loaded"] is None:
            return report
    module.train(bool(request.get("train", False)))
    levels = request.get("trace") or []
    for args, kwargs in request.get("calls") or []:
        saved = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
        with torch.set_grad_enabled(bool(request.get("grad", False))), traced(module, levels) as trace:
            out = module(*args, **dict(kwargs))
        report["outputs"].append(_detached(out))
        report.setdefault("traces", []).append(trace)
        report["inplace"].append(
            any(isinstance(a, torch.Tensor) and not torch.equal(a, b) for a, b in zip(saved, args))
        )
    report["training"] = module.training
    return report


@contextlib.contextmanager
def traced(module: nn.Module, names: Sequence[str]):
    """Record ``[[name, output], ...]`` of the submodules ``names`` (e.g. "stem", "down.0"), in the order they
    ran (the first tensor of a tuple output): where a network's outputs first differ from labkit's."""
    trace: list = []
    wanted = dict(module.named_modules())
    handles = []
    for name in names[:64]:
        sub = wanted.get(name)
        if sub is not None and sub is not module:

            def hook(_m, _inputs, output, name=name):
                first = output[0] if isinstance(output, (tuple, list)) and output else output
                if isinstance(first, torch.Tensor) and len(trace) < 64:
                    trace.append([name, first.detach().clone()])

            handles.append(sub.register_forward_hook(hook))
    try:
        yield trace
    finally:
        for h in handles:
            h.remove()


def load_weights(module: nn.Module, weights: Sequence[tuple[str, torch.Tensor]]) -> str | None:
    """Copy the grader's ``weights`` [(name, tensor)] into ``module``'s parameters: by name when the names
    are the same, else one after the other when the shapes agree in order. "names", "order" or None."""
    mine = list(module.named_parameters())
    by_name = dict(mine)
    if set(by_name) == {n for n, _ in weights} and all(by_name[n].shape == w.shape for n, w in weights):
        pairs = [(by_name[n], w) for n, w in weights]
        how = "names"
    elif len(mine) == len(weights) and all(p.shape == w.shape for (_, p), (_, w) in zip(mine, weights)):
        pairs = [(p, w) for (_, p), (_, w) in zip(mine, weights)]
        how = "order"
    else:
        return None
    with torch.no_grad():
        for p, w in pairs:
            p.copy_(w.to(p.dtype))
    return how


def _detached(out):
    if isinstance(out, torch.Tensor):
        return out.detach()
    if isinstance(out, (tuple, list)):
        return [_detached(o) for o in out]
    return out


# --- the half that runs in the check ----------------------------------------------------------------------


def run_module(check: str, student_cls, request: Mapping, *, hints: Mapping[str, str] | None = None) -> dict:
    """Run ``probe`` on the student's class: in this process, or through the grader's channel when
    ``student_cls`` stands for a class in the student's kernel (it then has ``_labkit_probe``)."""
    remote = getattr(type(student_cls), "_labkit_probe", None)
    if not callable(student_cls):
        fail(check, f"expected a class (class ...(nn.Module)), got {type(student_cls).__name__}")
    runner = (lambda r: remote(student_cls, r)) if remote is not None else (lambda r: probe(student_cls, r))
    report = call(check, runner, request, hints=hints)
    if not isinstance(report, dict):
        fail(check, "the module could not be run")
    if "not_module" in report:
        fail(
            check,
            f"your class should build an nn.Module (class X(nn.Module) with super().__init__()), "
            f"got a {str(report['not_module'])[:100]}",
        )
    return report


def seeded_weights(module: nn.Module, seed: int, scale: float = 0.3) -> nn.Module:
    """Give every parameter of labkit's ``module`` random values from ``seed`` (also the ones that start at
    zero, so that every path of the network shows in its output); norms get weights near 1."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype)
            is_norm_weight = name.endswith("weight") and p.dim() == 1
            fan_in = math.prod(p.shape[1:]) if p.dim() > 1 else 1
            p.copy_(1 + 0.2 * noise if is_norm_weight else noise * (scale if p.dim() == 1 else 1 / math.sqrt(fan_in)))
    return module


def weights_of(module: nn.Module) -> list[tuple[str, torch.Tensor]]:
    return [(name, p.detach().clone().float()) for name, p in module.named_parameters()]


def describe_parameters(mine: list, expected: list) -> str:
    """What differs between the student's parameter list and labkit's, in a sentence a student can act on."""
    count = lambda ps: sum(math.prod(s) for _, s in ps)  # noqa: E731
    names_mine, names_ref = [n for n, _ in mine], [n for n, _ in expected]
    lines = [
        f"your module has {len(mine)} parameter tensors ({count(mine):,} numbers), "
        f"the specification {len(expected)} ({count(expected):,})"
    ]
    shapes_mine = sorted(tuple(s) for _, s in mine)
    shapes_ref = sorted(tuple(s) for _, s in expected)
    missing = _multiset_minus(shapes_ref, shapes_mine)
    extra = _multiset_minus(shapes_mine, shapes_ref)
    if missing:
        who = [n for n, s in expected if tuple(s) in missing][:4]
        lines.append(
            "missing: "
            + ", ".join(f"{list(s)}" for s in missing[:4])
            + (f" (labkit's names: {', '.join(who)})" if who else "")
        )
    if extra:
        who = [n for n, s in mine if tuple(s) in extra][:4]
        lines.append(
            "not in the specification: " + ", ".join(f"{n} {list(s)}" for n, s in [(n, s) for n, s in mine if n in who])
        )
    if not missing and not extra and names_mine != names_ref:
        lines.append(
            "the same shapes, but created in another order: create the layers in the order of the table "
            "(or give them the table's names)"
        )
    return "; ".join(lines)


def _multiset_minus(a: list, b: list) -> list:
    rest = list(b)
    out = []
    for x in a:
        if x in rest:
            rest.remove(x)
        else:
            out.append(x)
    return out


def expect_loaded(check: str, report: dict, expected: list, context: str = "", hints: Sequence[str] = ()) -> None:
    """Fail, naming the difference, unless the grader's weights went into the student's module."""
    if report.get("loaded") is not None:
        return
    message = describe_parameters(report.get("params") or [], [[n, list(w.shape)] for n, w in expected])
    fail(
        check,
        f"the parameters do not match the table{context}: {message}" + "".join(f"\n  hint: {h}" for h in hints if h),
    )


def output_of(check: str, report: dict, k: int = 0):
    outs = report.get("outputs") or []
    if k >= len(outs):
        raise CheckFailed(f"{check}: the module returned nothing for input {k + 1}", check=check)
    if (report.get("inplace") or [False] * len(outs))[k]:
        fail(
            check,
            "your forward changed its input in place (x += ..., relu_(), ...): compute new tensors, "
            "the caller still needs x (the residual adds it back)",
        )
    return outs[k]


def first_difference(check: str, trace: list, reference: nn.Module, args: tuple, tol: float) -> str | None:
    """The first level (in the order the student's network ran them) whose output differs from labkit's
    module on the same weights and inputs: "down.1 (shape [...] where labkit's is [...])" or "up.0 (values)"."""
    names = [n for n, _ in trace if isinstance(n, str)]
    if not names:
        return None
    with traced(reference, names) as expected, torch.no_grad():
        reference(*args)
    ref = {n: v for n, v in expected}
    for name, value in trace:
        want = ref.get(name)
        if not isinstance(value, torch.Tensor) or want is None:
            continue
        if tuple(value.shape) != tuple(want.shape):
            return f"`{name}` (its output has shape {list(value.shape)}, labkit's {list(want.shape)})"
        if (value.double() - want.double()).abs().max().item() > tol:
            return f"`{name}` (same shape {list(value.shape)}, other values)"
    return None
