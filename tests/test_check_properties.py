"""Every correct answer earns its points on every machine (issue 22): a property suite over all exercises.

For every exercise and every visible and hidden test line in ``solutions/``:

* the instructor's own solution passes on 50 seeds, run as written, in float32 (every floating-point input cast
  to float32, as a student who calls ``.float()`` computes) and in float64; and with its result moved by a few
  float32 rounding steps (what another CPU's kernels, AVX-512 or not, do to the same computation);
* every hidden configuration is valid and covers what it claims: schedules with betas in (0, 1) and alpha_bar
  in (0, 1], decreasing; the time steps t of each line reach early, middle and late steps.

The checks' tolerances come from the float32 error of labkit's own computation (``_common.float32_tolerance``),
so these hold by construction; this suite is what fails when a new check or a new hidden line breaks that.
"""

from __future__ import annotations

import ast
import importlib

import pytest
import torch
from torch import nn

import solution_code
from solution_code import EXERCISES, solution_function

SEEDS = range(50)
EPS32 = torch.finfo(torch.float32).eps


def _with_seed(line: str, seed: int) -> str:
    """The test line with its ``seed=`` replaced (added when it had none)."""
    call = ast.parse(line, mode="eval").body
    call.keywords = [k for k in call.keywords if k.arg != "seed"] + [ast.keyword("seed", ast.Constant(seed))]
    return ast.unparse(call)


def _cast(dtype):
    """A wrapper that runs the solution with every floating-point tensor argument in ``dtype``."""
    def wrap(fn):
        def run(*args, **kwargs):
            args = [a.to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args]
            return fn(*args, **kwargs)
        return run
    return wrap


def _rounded_differently(fn):
    """The solution, its floating-point result moved by up to 4 float32 rounding steps in a random direction
    per entry: the same correct answer as another machine's kernels may round it."""
    g = torch.Generator().manual_seed(123)

    def run(*args, **kwargs):
        out = fn(*args, **kwargs)
        if isinstance(out, torch.Tensor) and out.is_floating_point() and out.requires_grad is False \
                and out.device.type != "meta":  # (a meta tensor, from a check's device probe, holds no values)
            wobble = (torch.rand(out.shape, generator=g, dtype=torch.float64) * 2 - 1) * 4 * EPS32
            return (out.double() * (1 + wobble)).to(out.dtype)
        return out
    return run


# These move values without arithmetic (concatenating, nearest-neighbour copying): every machine gives the same
# bits, and their checks demand them exactly.
EXACT = {"concat_skip", "upsample_merge"}


def _takes_a_model(lab: str, name: str) -> bool:
    return EXERCISES[(lab, name)][0] == "model"


CASES = [(lab, name, line) for (lab, name) in sorted(EXERCISES) for line in solution_code.test_calls(lab, name)]
VARIANTS = {"as written": lambda f: f, "float32": _cast(torch.float32), "float64": _cast(torch.float64),
            "rounded differently": _rounded_differently}


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("lab, name, line", CASES, ids=[f"{lab}:{line[7:60]}" for lab, _, line in CASES])
def test_solution_passes_every_line_on_50_seeds(lab, name, line, variant, capsys):
    if variant in ("float32", "float64", "rounded differently") and _takes_a_model(lab, name):
        pytest.skip("takes a float32 model: its inputs keep the model's dtype (run 'as written')")
    if variant == "rounded differently" and name in EXACT:
        pytest.skip("copies values without arithmetic: no machine rounds them differently")
    checks = importlib.import_module(f"labkit.checks.{lab}")
    answer = VARIANTS[variant](solution_function(lab, name))
    failures = []
    for seed in SEEDS:
        try:
            eval(_with_seed(line, seed), {"checks": checks, name: answer, "torch": torch})  # noqa: S307 (our source)
        except AssertionError as exc:
            failures.append(f"seed {seed}: {str(exc)[:300]}")
    capsys.readouterr()
    assert not failures, f"{lab} {name} ({variant}) failed on {len(failures)} of {len(SEEDS)} seeds:\n" + \
        "\n".join(failures[:5])


# --- hidden configurations are valid and cover what they claim ---------------------------------------------

def _recorded_inputs(lab: str, name: str, line: str) -> list[dict]:
    """The arguments the check passed to the answer, one dict (argument name -> value) per call."""
    calls = []
    solution = solution_function(lab, name)
    names = EXERCISES[(lab, name)]

    def spy(*args, **kwargs):
        calls.append(dict(zip(names, args)))
        return solution(*args, **kwargs)

    checks = importlib.import_module(f"labkit.checks.{lab}")
    eval(line, {"checks": checks, name: spy, "torch": torch})  # noqa: S307 (our own source)
    return calls


SCHEDULE_ARGS = {"betas", "alpha_bars"}


@pytest.mark.parametrize("lab, name, line", CASES, ids=[f"{lab}:{line[7:60]}" for lab, _, line in CASES])
def test_every_test_line_draws_valid_inputs_that_cover_the_steps(lab, name, line, capsys):
    calls = _recorded_inputs(lab, name, line)
    capsys.readouterr()
    assert calls, "the check never called the answer"
    steps, T = set(), None
    for args in calls:
        if "betas" in args:
            b = args["betas"]
            assert bool(((b > 0) & (b < 1)).all()), f"betas outside (0, 1): {b.min().item()}..{b.max().item()}"
        if "alpha_bars" in args:
            ab = args["alpha_bars"]
            assert bool(((ab > 0) & (ab <= 1)).all()), f"alpha_bar outside (0, 1]: {ab.min().item()}..{ab.max().item()}"
            assert bool((ab[1:] <= ab[:-1]).all()), "alpha_bar must not grow with t"
            T = len(ab)
            if "betas" in args:
                assert float((torch.cumprod(1 - args["betas"], 0) - ab).abs().max()) < 1e-12
        for key in ("alpha_bar_t", "alpha_bar_prev", "alpha_bar_last"):
            v = args.get(key)
            if isinstance(v, torch.Tensor):
                assert bool(((v > 0) & (v <= 1)).all()), f"{key} outside (0, 1]"
        if "t" in args and T is not None:
            steps.update(int(s) for s in args["t"])
        for key, value in args.items():
            if isinstance(value, nn.Module) or not isinstance(value, torch.Tensor) or not value.is_floating_point():
                continue
            assert bool(torch.isfinite(value).all()), f"{key} holds NaN or infinity"
    if steps:
        early, late = min(steps), max(steps)
        middle = [s for s in steps if T / 4 <= s <= 3 * T / 4] if T > 3 else [T // 2]
        assert early <= 0.1 * T and late >= 0.9 * (T - 1) and middle, \
            f"{line}: t covers only {sorted(steps)} of 0..{T - 1} (want early, middle and late steps)"


def test_the_suite_sees_every_exercise():
    assert len(EXERCISES) >= 23 and len(CASES) >= 2 * len(EXERCISES)
    assert solution_code.test_calls("lab01_forward", "snr")
