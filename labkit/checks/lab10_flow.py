"""Checks for lab 10 (flow matching). Reference: ``labkit.flow``, in float64. Convention: x_t = (1 - t) x_0 + t eps,
data at t = 0, noise at t = 1, velocity eps - x_0, sampling from t = 1 down to t = 0.

    check_flow_matching_loss(flow_matching_loss)   mean of (model((1 - t) x0 + t noise, t, y) - (noise - x0))^2
    check_euler_step(euler_step)                   x_t + (t_next - t) v_hat, t and t_next per image
    check_euler_loop(euler_loop)                   Euler down times[0] = 1 > ... > times[S] = 0 (S evaluations)
    check_heun_loop(heun_loop)                     Heun (trapezoid) down the same grid, corrected on every step
    check_cfg_velocity(cfg_velocity)               (1 + w) v(x, t, y) - w v(x, t, null)
    check_shifted_time_grid(shifted_time_grid)     shift u / (1 + (shift - 1) u) over the uniform grid u = 1 ... 0
    check_reflow_pairs(reflow_pairs)               (x_0, x_1): x_1 drawn once, x_0 = euler_loop(x_1), in batches
    check_reflow_train(reflow_train)               flow matching on coupled pairs (x_0[idx], x_1[idx]), t per image
    check_straightness(straightness)               sum_k (t_k - t_{k+1}) E||(x_1 - x_0) - v(x_{t_k}, t_k)||^2

The loops and the guidance are graded on ``VelocityModel``, a seeded toy velocity model that is strict about its
inputs as a real network is (t: float [B] in [0, 1]) and says which input is wrong; only tensors come back.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from labkit import flow
from labkit.checks._common import (
    model_index,
    model_x,
    loss_values,
    MARGIN,
    call,
    compare,
    deterministic,
    expect_tensor,
    fail,
    generator,
    max_abs_diff,
    passed,
    yours_or_labkit,  # noqa: F401  (the lab's cells: the student's function if it passes, else labkit's)
)
from labkit.checks.fixtures import DigitJudge, lab_model, trained_model  # noqa: F401  (the judge; the diffusion model)
from labkit.checks.lab04_training import network_to_use  # noqa: F401  (your U-Net from lab 03, if it passes)
from labkit.checks.lab05_sampling import compare_loop


class VelocityModel(nn.Module):
    """model(x [B,C,H,W], t float [B] in [0, 1], y int64 [B]) -> v_hat [B,C,H,W]: seeded weights, nonlinear in t
    (so that t and 1 - t give different answers), and a clear message for an input a network cannot take."""

    def __init__(self, channels: int, num_classes: int = 10, seed: int = 0):
        super().__init__()
        g = generator(seed)
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.copy_(0.3 * torch.randn(self.conv.weight.shape, generator=g))
            self.conv.bias.copy_(0.1 * torch.randn(self.conv.bias.shape, generator=g))
        self.t_freq = nn.Parameter(1 + 3 * torch.rand(channels, generator=g))
        self.t_amp = nn.Parameter(torch.randn(channels, generator=g))
        self.y_emb = nn.Parameter(torch.randn(num_classes + 1, channels, generator=g))

    def forward(self, x, t, y):
        B, dtype = model_x(x, self.conv.weight.dtype, "x_1", "the time grid is float64"), self.conv.weight.dtype
        if not isinstance(t, torch.Tensor) or not t.is_floating_point() or tuple(t.shape) != (B,):
            got = f"{t.dtype} of shape {list(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(
                f"model(x, t, y): t must be a float tensor of shape [B] = [{B}] (one time in [0, 1] per "
                f"image, e.g. times[k].expand(B)), got {got}"
            )
        if float(t.min()) < 0 or float(t.max()) > 1:
            raise ValueError(f"model(x, t, y): t must be in [0, 1], got {float(t.min()):g}..{float(t.max()):g}")
        model_index("y", y, B, self.y_emb.shape[0], "one label per image")
        tt = t.to(dtype)[:, None]  # [B, 1]
        wave = (self.t_amp * torch.sin(self.t_freq * tt))[:, :, None, None]  # [B, C, 1, 1]
        return self.conv(x) * (1 + tt[:, :, None, None]) + wave + self.y_emb[y][:, :, None, None]


def _per_image(v, x):
    return v.to(x.dtype).view(-1, *([1] * (x.dim() - 1)))


def _times_with_ends(B: int, g: torch.Generator) -> torch.Tensor:
    """B times in [0, 1] holding 0, 1 and 0.5 as far as B allows, the rest uniform, in random order."""
    t = torch.rand(B, generator=g, dtype=torch.float64)
    t[: min(B, 3)] = torch.tensor([0.0, 1.0, 0.5], dtype=torch.float64)[: min(B, 3)]
    t = t[torch.randperm(B, generator=g)]
    inner = ((t > 0) & (t < 1)).nonzero()
    if len(inner) and not 0 < float(t[0]) < 1:  # t[0] inside (0, 1): "the same t[0] for every image" stays visible
        i = int(inner[0])
        t[[0, i]] = t[[i, 0]]
    return t.float()


# --- the loss ------------------------------------------------------------------------------------------


def check_flow_matching_loss(student_fn, *, seed: int = 0, sizes=((5, 1, 8, 8), (3, 2, 5, 6))) -> None:
    """student_fn(model, x0 [B,C,H,W], y int64 [B], t float [B] in [0, 1], noise [B,C,H,W]) -> a scalar loss
    tensor that can be back-propagated: the MSE between model(x_t, t, y) and noise - x0."""
    name = "check_flow_matching_loss"
    g = generator(seed)
    for k, shape in enumerate(sizes):
        shape = tuple(int(s) for s in shape)
        B = shape[0]
        x0 = torch.rand(shape, generator=g) * 2 - 1
        y = torch.randint(0, 11, (B,), generator=g)
        t = _times_with_ends(B, g)
        noise = torch.randn(shape, generator=g)
        model = VelocityModel(shape[1], seed=seed * 100 + k)
        args = (model, x0, y, t, noise)
        out = call(name, student_fn, *args, names=["model", "x0", "y", "t", "noise"])
        if isinstance(out, float):
            fail(
                name,
                "the loss is a Python float: return the tensor itself (no .item()), so that "
                "loss.backward() can compute gradients",
            )
        out_t = expect_tensor(name, out, None)
        if out_t.numel() != 1:
            fail(
                name,
                f"the loss has shape {list(out_t.shape)}; it must be a single number (a 0-d tensor): "
                "average over the batch as well as the pixels",
            )
        if not out.requires_grad:
            fail(
                name,
                "the loss carries no gradient (no .detach(), .item() or torch.no_grad() in the loss: "
                "training calls loss.backward() on it)",
            )
        model64 = copy.deepcopy(model).double().requires_grad_(False)
        xd, nd, td = x0.double(), noise.double(), t.double()
        ref = flow.flow_matching_loss(model64, xd, y, td, nd)

        def mse(x_in, target, t_in=td, y_in=y, reduce=lambda d: (d**2).mean()):
            with torch.no_grad():
                return reduce(model64(x_in, t_in, y_in) - target)

        tb = _per_image(td, xd)
        x_t, u = (1 - tb) * xd + tb * nd, nd - xd
        x_rev = tb * xd + (1 - tb) * nd  # time reversed: data at t = 1
        mistakes = {
            "the target is x0 - noise: the velocity d x_t / dt of x_t = (1 - t) x0 + t noise is noise - x0 "
            "(with the sign reversed the samples run towards the noise)": mse(x_t, -u),
            "x_t = t x0 + (1 - t) noise puts the data at t = 1: this lab's convention has the data at t = 0 "
            "and the noise at t = 1, x_t = (1 - t) x0 + t noise (t direction reversed)": mse(x_rev, u),
            "the convention of Lipman et al. / Liu et al. (data at t = 1, target x0 - noise): in this lab t is "
            "reversed, data at t = 0: x_t = (1 - t) x0 + t noise, target noise - x0 (t direction reversed)": mse(
                x_rev, -u
            ),
            "the model was given 1 - t (t direction reversed): it must see the t the images were made at": mse(
                x_t, u, t_in=1 - td
            ),
            "the target is the noise (that is diffusion's eps-prediction): a flow model predicts the velocity "
            "noise - x0": mse(x_t, nd),
            "the target is x0: a flow model predicts the velocity noise - x0": mse(x_t, xd),
            "the model was given x0: it must see the interpolated x_t = (1 - t) x0 + t noise": mse(xd, u),
            "the model was given the noise: it must see the interpolated x_t = (1 - t) x0 + t noise": mse(nd, u),
            "x_t = sqrt(1 - t) x0 + sqrt(t) noise (a variance-preserving mix): the flow's path is the straight "
            "line (1 - t) x0 + t noise": mse((1 - tb).sqrt() * xd + tb.sqrt() * nd, u),
            "a sum instead of a mean: the loss is a mean over batch and pixels (F.mse_loss's default)": mse(
                x_t, u, reduce=lambda d: (d**2).sum()
            ),
            "summed over pixels and averaged over the batch: average over pixels too (F.mse_loss)": mse(
                x_t, u, reduce=lambda d: (d**2).flatten(1).sum(1).mean()
            ),
            "an absolute error (L1); the loss squares the difference": mse(x_t, u, reduce=lambda d: d.abs().mean()),
            "the square root of the MSE; the loss is the mean squared error itself": mse(
                x_t, u, reduce=lambda d: (d**2).mean().sqrt()
            ),
            "half the mean squared error: the loss has no factor 1/2": mse(
                x_t, u, reduce=lambda d: 0.5 * (d**2).mean()
            ),
            "the model was told 'no class' (index 10): it is trained on the labels y it is given": mse(
                x_t, u, y_in=torch.full_like(y, 10)
            ),
            "the same t[0] for every image: reshape t to [B, 1, 1, 1] per image, not t[0]": mse(
                (1 - td[0]) * xd + td[0] * nd, u
            ),
        }
        try:
            compare(
                name,
                out_t.reshape(()),
                ref,
                mistakes,
                tol=1e-5 * max(1.0, float(ref)),
                context=f" for x0 of shape {list(shape)}",
                reference=lambda *a: flow.flow_matching_loss(model, *a),
                args=(x0, y, t, noise),
            )
        except AssertionError:
            deterministic(name, student_fn, args, out_t.reshape(()))
            raise
    passed(name, f"shapes {[list(s) for s in sizes]}, seed {seed}")


# --- one Euler step ------------------------------------------------------------------------------------


def check_euler_step(student_fn, *, seed: int = 0, sizes=((6, 1, 8, 8), (3, 2, 5, 4))) -> None:
    """student_fn(x_t [B,C,H,W], v_hat [B,C,H,W], t float [B], t_next float [B]) -> x_{t_next} [B,C,H,W], with
    t_next < t per image (different per image; one batch holds the first step t = 1 and the last t_next = 0)."""
    name = "check_euler_step"
    g = generator(seed)
    for shape in sizes:
        shape = tuple(int(s) for s in shape)
        B = shape[0]
        x = torch.randn(shape, generator=g)
        v = torch.randn(shape, generator=g)
        a, b = torch.rand(B, generator=g), torch.rand(B, generator=g)
        t, t_next = torch.maximum(a, b), torch.minimum(a, b) * 0.9  # t_next < t
        t[0], t_next[-1] = 1.0, 0.0
        args = (x, v, t, t_next)
        out = expect_tensor(
            name,
            call(name, student_fn, *args, names=["x_t", "v_hat", "t", "t_next"]),
            shape,
            shape_hints={
                (B,) + shape: "a per-image time was broadcast against the batch the wrong "
                "way: reshape t and t_next to [B, 1, 1, 1]"
            },
        )
        xd, vd = x.double(), v.double()
        tb, nb = _per_image(t.double(), xd), _per_image(t_next.double(), xd)
        ref = flow.euler_step(xd, vd, t.double(), t_next.double())
        mistakes = {
            "the step went towards the noise: x_t + (t - t_next) v_hat. Sampling runs from t = 1 down to 0, so the "
            "step is (t_next - t) v_hat, a negative time step (the sign is reversed)": xd + (tb - nb) * vd,
            "the step size is t_next: it is the difference t_next - t": xd + nb * vd,
            "the step size is t: it is the difference t_next - t": xd + tb * vd,
            "minus the step size t: it is the difference t_next - t": xd - tb * vd,
            "no step size: x_t + v_hat moves a whole unit of time; multiply by t_next - t": xd + vd,
            "x_t - v_hat moves a whole unit of time; multiply by t_next - t": xd - vd,
            "the same t[0] and t_next[0] for every image: use each image's own times, reshaped to [B, 1, 1, 1]": xd
            + (nb[:1] - tb[:1]) * vd,
        }
        compare(
            name,
            out,
            ref,
            mistakes,
            tol=1e-5,
            context=f" for x_t of shape {list(shape)}",
            reference=flow.euler_step,
            args=args,
            where=("image", torch.arange(B)),
        )
    passed(name, f"shapes {[list(s) for s in sizes]}, seed {seed}")


# --- the loops -----------------------------------------------------------------------------------------


def grid(S: int, g: torch.Generator, uniform: bool) -> torch.Tensor:
    """[S + 1] descending float64 from 1 to 0: uniform, or S - 1 random inner points."""
    if uniform or S == 1:
        return flow.time_grid(S)
    inner = torch.rand(S - 1, generator=g, dtype=torch.float64).sort(descending=True).values
    return torch.cat([torch.ones(1, dtype=torch.float64), inner, torch.zeros(1, dtype=torch.float64)])


@torch.no_grad()
def _ode(
    model,
    x_1,
    y,
    times,
    *,
    heun=False,
    order=None,
    model_t=None,
    from_x_1=False,
    once=False,
    corrector=None,
    last_uncorrected=False,
):
    """A loop with one thing changed (the catalogue of loop mistakes); labkit's euler_step does the maths.
    corrector(x, x_pred, d, t, t_next) -> the slope of the step (heun) or None for the right trapezoid."""
    B = x_1.shape[0]
    x, d = x_1, None
    ks = list(range(len(times) - 1) if order is None else order)
    for k in ks:
        t = times[k].to(x.dtype).expand(B)
        t_next = times[k + 1].to(x.dtype).expand(B)
        t_model = t if model_t is None else model_t(t, t_next)
        src = x_1 if from_x_1 else x
        if d is None or not once:
            d = model(src, t_model, y)
        if not heun or (last_uncorrected and k == ks[-1]):
            x = flow.euler_step(src, d, t, t_next)
            continue
        x_pred = flow.euler_step(src, d, t, t_next)
        if corrector is None:
            slope = (d + model(x_pred, t_next, y)) / 2
        else:
            slope = corrector(model, src, x_pred, d, t, t_next, y)
        x = flow.euler_step(src, slope, t, t_next)
    return x


def _loop_mistakes(wide, heun: bool):
    model, x_1, y, times = wide
    S = len(times) - 1

    def V(**change):
        return _ode(*wide, heun=heun, **change)

    def mistakes():
        out = {
            "one step short: the loop stopped at times[S-1] and never reached t = 0 (a grid of S + 1 times has S "
            "steps: range(len(times) - 1), grid off by one)": V(order=range(S - 1)) if S > 1 else x_1.clone(),
            "the first step was skipped: a grid of S + 1 times has S steps, k = 0 ... S-1 (grid off by one)": V(
                order=range(1, S)
            )
            if S > 1
            else x_1.clone(),
            "the model was given t_next: the slope of a step from t to t_next is taken at its start, t": V(
                model_t=lambda t, tn: tn
            ),
            "the model was given 1 - t (t direction reversed): times run from 1 (noise) to 0 (data), and the model "
            "takes t as it is": V(model_t=lambda t, tn: 1 - t),
            "every step starts again from x_1: update x (x = step(x, ...)) so each step starts where the last ended": V(
                from_x_1=True
            ),
            "the model was called once, before the loop: the velocity changes with x and t, so call it every step": V(
                once=True
            ),
            "the model was told 'no class' (y = 10): give it the labels y": _ode(
                model, x_1, torch.full_like(y, 10), times, heun=heun
            ),
        }
        if heun:
            out.update(
                {
                    "the corrector's slope replaced the average: Heun steps with (d + d_next) / 2": V(
                        corrector=lambda m, x, xp, d, t, tn, y_: m(xp, tn, y_)
                    ),
                    "the two slopes were added without halving: Heun averages them, (d + d_next) / 2 (Heun averaging wrong)": V(
                        corrector=lambda m, x, xp, d, t, tn, y_: d + m(xp, tn, y_)
                    ),
                    "d + d_next / 2: the parentheses are missing, the average is (d + d_next) / 2 (Heun averaging wrong)": V(
                        corrector=lambda m, x, xp, d, t, tn, y_: d + m(xp, tn, y_) / 2
                    ),
                    "the second slope was taken at time t: it belongs at the end of the step, t_next, where the Euler "
                    "prediction landed": V(corrector=lambda m, x, xp, d, t, tn, y_: (d + m(xp, t, y_)) / 2),
                    "the second slope was taken at x, not at the predicted x_pred = euler_step(x, d, t, t_next)": V(
                        corrector=lambda m, x, xp, d, t, tn, y_: (d + m(x, tn, y_)) / 2
                    ),
                    "the last step was not corrected (Karras et al. skip it at sigma = 0): in this lab every step, the last "
                    "included, averages two slopes (the velocity at t = 0 is finite)": V(last_uncorrected=True),
                    "no correction at all: that is Euler; Heun takes a second slope at the predicted point and averages": _ode(
                        *wide, heun=False
                    ),
                }
            )
        return out

    return mistakes


LOOP_HINTS = {
    "out of range": "an index is out of range: a grid of S + 1 times has S steps, from times[k] to times[k + 1] "
    "for k = 0 ... S-1",
    "out of bounds": "an index is out of range: a grid of S + 1 times has S steps, from times[k] to times[k + 1] "
    "for k = 0 ... S-1",
}


def _check_loop(name, student_fn, reference, heun, *, seed, sizes, steps):
    g = generator(seed)
    for n, shape in enumerate(sizes):
        shape = tuple(int(s) for s in shape)
        B = shape[0]
        for i, S in enumerate(steps):
            times = grid(S, g, uniform=(i == 0))
            model = VelocityModel(shape[1], seed=seed * 100 + n).requires_grad_(False)
            x_1 = torch.randn(shape, generator=g)
            y = torch.randint(0, 11, (B,), generator=g)
            args = (model, x_1, y, times)
            context = f" for x_1 of shape {list(shape)}, {S} step{'s' if S > 1 else ''} " + (
                "(a uniform grid)" if i == 0 or S == 1 else "(an uneven grid)"
            )
            out = call(name, student_fn, *args, hints=LOOP_HINTS, names=["model", "x_1", "y", "times"])
            out = expect_tensor(
                name,
                out,
                shape,
                shape_hints={
                    (S,) + shape: "that is one image per step: return only the last x (x_0)",
                    (S + 1,) + shape: "that is one image per step: return only the last x (x_0)",
                },
            )
            wide = (copy.deepcopy(model).double(), x_1.double(), y, times)
            ref = reference(*wide)
            try:
                compare_loop(
                    name, out, ref, _loop_mistakes(wide, heun), context=context, reference=reference, args=args
                )
            except AssertionError as exc:
                if getattr(exc, "mistake", None):
                    raise
                deterministic(name, student_fn, args, out)
                fail(
                    name,
                    f"{str(exc).split(': ', 1)[1]}\n  (your loop runs your euler_step: if check_euler_step "
                    "failed above, fix that first)",
                )


def check_euler_loop(student_fn, *, seed: int = 0, sizes=((3, 1, 6, 6), (2, 2, 5, 4)), steps=(4, 5, 1)) -> None:
    """student_fn(model, x_1 [B,C,H,W], y int64 [B], times float64 [S+1] descending from 1 to 0) -> x_0 [B,C,H,W]:
    Euler's method with the student's euler_step, the model at the start of each step. The first grid of each
    shape is uniform, the others uneven."""
    name = "check_euler_loop"
    _check_loop(name, student_fn, flow.euler_loop, False, seed=seed, sizes=sizes, steps=steps)
    passed(name, f"grids of {list(steps)} steps, shapes {[list(s) for s in sizes]}, seed {seed}")


def check_heun_loop(student_fn, *, seed: int = 0, sizes=((3, 1, 6, 6), (2, 2, 5, 4)), steps=(3, 4, 1)) -> None:
    """student_fn(model, x_1, y, times) -> x_0: Heun's method (Euler predictor, trapezoid corrector with the slope
    at (x_pred, t_next)), corrected on every step, 2 S evaluations."""
    name = "check_heun_loop"
    _check_loop(name, student_fn, flow.heun_loop, True, seed=seed, sizes=sizes, steps=steps)
    passed(name, f"grids of {list(steps)} steps, shapes {[list(s) for s in sizes]}, seed {seed}")


# --- guidance ------------------------------------------------------------------------------------------


def check_cfg_velocity(
    student_fn, *, seed: int = 0, sizes=((3, 1, 6, 6), (2, 2, 5, 4)), ws=(2.0, 0.5, 0.0), classes=(10, 4)
) -> None:
    """student_fn(model, x [B,C,H,W], t float [B], y int64 [B], w: float, null_class: int) -> the guided velocity
    (1 + w) model(x, t, y) - w model(x, t, null) [B,C,H,W]; models with ``classes`` classes (null = that number)."""
    name = "check_cfg_velocity"
    g = generator(seed)
    for n, shape in enumerate(sizes):
        shape = tuple(int(s) for s in shape)
        B = shape[0]
        for classes_n in classes:
            model = VelocityModel(shape[1], num_classes=classes_n, seed=seed * 100 + n).requires_grad_(False)
            model64 = copy.deepcopy(model).double()
            for w in ws:
                x = torch.randn(shape, generator=g)
                t = _times_with_ends(B, g)
                y = torch.randint(0, classes_n, (B,), generator=g)
                args = (model, x, t, y, float(w), classes_n)
                out = expect_tensor(
                    name,
                    call(
                        name,
                        student_fn,
                        *args,
                        names=["model", "x", "t", "y"],
                        hints={
                            "must be in 0..": "a label is outside the model's classes: the unconditional prediction uses "
                            "the class null_class, the argument (models differ in their number of classes)"
                        },
                    ),
                    shape,
                )
                xd, td = x.double(), t.double()
                cond, uncond = model64(xd, td, y), model64(xd, td, torch.full_like(y, classes_n))
                ref = flow.cfg_velocity(model64, xd, td, y, float(w), classes_n)
                mistakes = {
                    "the unconditional prediction was given the real labels y: it needs 'no class', y = null_class "
                    "for every image": cond,
                    "the 'scale' convention w * v_cond - (w - 1) * v_uncond: here w = 0 is the plain conditional "
                    "model, (1 + w) v_cond - w v_uncond": w * cond - (w - 1) * uncond,
                    "conditional and unconditional predictions swapped: (1 + w) multiplies model(x, t, y)": (1 + w)
                    * uncond
                    - w * cond,
                    "only the unconditional prediction: guidance combines it with the conditional one": uncond,
                    "the unconditional term is missing: (1 + w) v_cond - w v_uncond": (1 + w) * cond,
                    "w v_cond - w v_uncond: the conditional term has weight 1 + w": w * (cond - uncond),
                    "the guidance term was added with the wrong sign: v_cond + w (v_cond - v_uncond)": cond
                    - w * (cond - uncond),
                    "the model was given 1 - t (t direction reversed): guidance evaluates the model at the t it is "
                    "given": (1 + w) * model64(xd, 1 - td, y) - w * model64(xd, 1 - td, torch.full_like(y, classes_n)),
                }
                compare(
                    name,
                    out,
                    ref,
                    mistakes,
                    tol=1e-5,
                    context=f" for w={w:g}, {classes_n} classes (null_class={classes_n}), shape {list(shape)}",
                    reference=flow.cfg_velocity,
                    args=args,
                )
    passed(name, f"w in {list(ws)}, null_class in {list(classes)}, seed {seed}")


def flow_network(my_network, config):
    """(TimeScaled velocity model, who) for the lab's training: the student's lab 03 U-Net when it passes lab 03's
    check (``network_to_use``; attention off, as lab 04 does), else labkit's UNet built from ``config``."""
    from dataclasses import replace

    from labkit import unet

    network, who = network_to_use(my_network)
    if network is not None:
        net = network(replace(config, attention=False))
    else:
        net = unet.UNet(config)
    return flow.TimeScaled(net), who


# --- reflow: the coupling, training on it, straightness ------------------------------------------------


def _pair(name, out, N, shape, batch_size):
    """The student's (x_0, x_1) as two CPU tensors of shape [N, *shape], with messages for the usual slips."""
    if isinstance(out, torch.Tensor) or not isinstance(out, (tuple, list)) or len(out) != 2:
        fail(
            name, f"return the pair (x_0, x_1): two tensors, the end points and their noises, got {type(out).__name__}"
        )
    full = (N, *shape)
    hints = {
        ((N // batch_size) * batch_size, *shape): "the last, shorter batch is missing: range(0, N, batch_size) "
        "starts one at every batch, and a slice past the end is simply shorter",
        (batch_size, *shape): "that is one batch: collect every batch's end points and torch.cat them",
    }
    x0 = expect_tensor(name, out[0], full, what="x_0 (the first of the pair)", shape_hints=hints)
    x1 = expect_tensor(name, out[1], full, what="x_1 (the second of the pair)", shape_hints=hints)
    return x0, x1


def check_reflow_pairs(
    student_fn, *, seed: int = 0, cases=((7, (1, 4, 4), 3, 3), (6, (2, 3, 3), 6, 2), (5, (1, 5, 5), 2, 4))
) -> None:
    """student_fn(model, y int64 [N], times float64 [S+1], shape, batch_size, generator) -> (x_0, x_1), both
    [N, *shape]: x_1 = torch.randn((N, *shape), generator=generator) drawn once, x_0 the student's euler_loop of
    x_1, batch_size pairs at a time. cases: (N, shape, batch_size, S); the first grid is uniform, the others not."""
    name = "check_reflow_pairs"
    g = generator(seed)
    for k, (N, shape, batch_size, S) in enumerate(cases):
        shape = tuple(int(s) for s in shape)
        model = VelocityModel(shape[0], seed=seed * 100 + k).requires_grad_(False)
        y = torch.randint(0, 11, (N,), generator=g)
        times = grid(S, g, uniform=(k == 0))
        g_seed = 1000 * seed + k
        context = f" for N = {N} pairs of shape {list(shape)} in batches of {batch_size}, {S} steps"
        out = call(
            name,
            student_fn,
            model,
            y,
            times,
            shape,
            batch_size,
            generator(g_seed),
            names=["model", "y", "times"],
            hints=LOOP_HINTS,
        )
        x0, x1 = _pair(name, out, N, shape, batch_size)
        _, noise = flow.reflow_pairs(model, y, times, shape, batch_size, generator(g_seed))  # labkit's draw
        draws = generator(g_seed)
        torch.randn((N, *shape), generator=draws)
        second = torch.randn((N, *shape), generator=draws)  # what a second draw of the noise gives
        per_batch = generator(g_seed)
        batched = torch.cat(
            [torch.randn((len(y[i : i + batch_size]), *shape), generator=per_batch) for i in range(0, N, batch_size)]
        )
        model64 = copy.deepcopy(model).double()
        ref0 = flow.euler_loop(model64, noise.double(), y, times)
        if max_abs_diff(x0, noise) <= 1e-6 and max_abs_diff(x1, noise) > 1e-6:
            fail(name, f"the pair came back as (x_1, x_0){context}: return (x_0, x_1), the end points first")
        x1_mistakes = {
            "pairs from different noises: the returned x_1 is a second draw, not the noise the flow started from "
            "(the noise was drawn twice). Draw x_1 once, run the loop on it, and return that same tensor": second,
        }
        if max_abs_diff(batched, noise) > 1e-6:
            x1_mistakes[
                "the noise was drawn batch by batch: draw all N noises at once before the loop, "
                "torch.randn((N, *shape), generator=generator), then take the batches from it"
            ] = batched
        compare(name, x1, noise, x1_mistakes, tol=1e-6, context=f" (x_1){context}")
        try:
            compare(
                name,
                x0,
                ref0,
                {
                    "pairs from different noises: x_0 is where the flow takes another noise than the returned x_1 "
                    "(the noise was drawn twice). Run the loop on the x_1 you return": flow.euler_loop(
                        model64, second.double(), y, times
                    ),
                    "x_0 came from Heun's method: the pairs in this lab are euler_loop's end points": flow.heun_loop(
                        model64, noise.double(), y, times
                    ),
                    "the grid was run backwards (t from 0 up to 1): the loop starts from the noise at times[0] = 1 "
                    "and walks down to t = 0; pass times as given": flow.euler_loop(
                        model64, noise.double(), y, times.flip(0)
                    ),
                    "every pair's end point was computed without its label (y = 10, 'no class'): pass each batch's "
                    "labels y[i : i + batch_size]": flow.euler_loop(
                        model64, noise.double(), torch.full_like(y, 10), times
                    ),
                },
                tol=1e-5,
                context=f" (x_0){context}",
                reference=lambda m, x, y_, tt: flow.euler_loop(m, x, y_, tt),
                args=(model, noise, y, times),
            )
        except AssertionError as exc:
            if getattr(exc, "mistake", None) or "from different noises" in str(exc):
                raise
            fail(
                name,
                f"{str(exc).split(': ', 1)[1]}\n  (your reflow_pairs runs your euler_loop: if "
                "check_euler_loop failed above, fix that first)",
            )
    passed(name, f"{len(cases)} cases (batches of {[c[2] for c in cases]}), seed {seed}")


REFLOW_MISTAKES = {
    "pairs_broken": "pairs from different noises: x_0 and x_1 were indexed with two different draws of indices. "
    "Pair i is x_0[i] with its own x_1[i]: draw idx once and use it for x_0, x_1 and y",
    "fresh_noise": "the noise was drawn fresh (torch.randn): that is ordinary flow matching with independent "
    "noise. Reflow trains on the coupled noise x_1[idx], the one the flow took to x_0[idx]",
    "swapped": "x_0 and x_1 swapped: flow_matching_loss(model, x0, y, t, noise) takes the end points x_0[idx] "
    "as x0 and their noises x_1[idx] as noise",
    "t_per_batch": "one t for the whole batch (t sampled per batch, torch.rand(1)): draw one time per image, "
    "torch.rand(B, generator=generator)",
    "t_first": "the random numbers were drawn in another order: per step, the batch indices first, then t",
    "no_zero_grad": "the gradients were never cleared: call optimizer.zero_grad() before each backward "
    "(backward adds to .grad)",
    "reused_idx": "the batch indices were drawn once, before the loop: draw new indices (and new t) every step",
}


def _reflow_variant(model, opt, x_0, x_1, y, steps, B, gen, mistake=None):
    """labkit's reflow_train written out with one named mistake switched on (for the messages only)."""
    model.train()
    N = len(x_0)
    idx = None
    for _ in range(steps):
        if mistake == "t_first":
            t = torch.rand(B, generator=gen)
        if mistake != "reused_idx" or idx is None:
            idx = torch.randint(0, N, (B,), generator=gen)
        idx_1 = torch.randint(0, N, (B,), generator=gen) if mistake == "pairs_broken" else idx
        if mistake == "t_per_batch":
            t = torch.rand(1, generator=gen).expand(B)
        elif mistake != "t_first":
            t = torch.rand(B, generator=gen)
        noise = x_1[idx_1]
        if mistake == "fresh_noise":
            noise = torch.randn(noise.shape, generator=gen).to(x_0.dtype)
        a, b = (noise, x_0[idx]) if mistake == "swapped" else (x_0[idx], noise)
        if mistake != "no_zero_grad":
            opt.zero_grad()
        loss = flow.flow_matching_loss(model, a, y[idx], t.to(x_0.dtype), b)
        loss.backward()
        opt.step()


class _ReflowSetup:
    """Seeded coupled pairs, a VelocityModel with stale gradients and an SGD optimiser with momentum."""

    def __init__(self, seed, shape, N):
        g = generator(seed)
        self.x_0 = torch.rand((N, *shape), generator=g) * 2 - 1
        self.x_1 = torch.randn((N, *shape), generator=g)
        self.y = torch.randint(0, 10, (N,), generator=g)
        self.model = VelocityModel(shape[0], seed=seed * 100 + 9)
        self.stale = [0.5 * torch.randn(p.shape, generator=g) for p in self.model.parameters()]

    def fresh(self, dtype=None, lr=0.02, adam=False):
        model = copy.deepcopy(self.model)
        if dtype is not None:
            model = model.to(dtype)
        for p, s in zip(model.parameters(), self.stale):
            p.grad = s.clone().to(p.dtype)
        opt = (
            torch.optim.Adam(model.parameters(), lr=lr)
            if adam
            else torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
        )
        return model, opt

    def data(self, dtype=None):
        if dtype is None:
            return self.x_0, self.x_1, self.y
        return self.x_0.to(dtype), self.x_1.to(dtype), self.y


def _loss_values(name, out, steps) -> list[float]:
    return loss_values(name, out, steps, "loss.item()")


def _weights(model) -> torch.Tensor:
    return torch.cat([p.detach().double().flatten() for p in model.parameters()])


def check_reflow_train(
    student_fn,
    *,
    seed: int = 0,
    shape=(1, 4, 4),
    N: int = 24,
    steps: int = 4,
    batch_size: int = 5,
    short_steps: int = 40,
) -> None:
    """student_fn(model, optimizer, x_0 [N,C,H,W], x_1 [N,C,H,W], y int64 [N], steps, batch_size, generator) ->
    the list of the step losses. Determinism: from a generator seeded with ``seed``, ``steps`` steps must reach
    the weights of ``labkit.flow.reflow_train`` on a copy (within MARGIN times that loop's float32 error against
    float64, at most 1e-3); then a ``short_steps`` run with Adam must lower the loss."""
    name = "check_reflow_train"
    shape = tuple(int(s) for s in shape)
    setup = _ReflowSetup(seed, shape, N)
    ref_model, ref_opt = setup.fresh()
    ref_losses = flow.reflow_train(ref_model, ref_opt, *setup.data(), steps, batch_size, generator(seed))
    ref = _weights(ref_model)
    m64, o64 = setup.fresh(torch.float64)
    flow.reflow_train(m64, o64, *setup.data(torch.float64), steps, batch_size, generator(seed))
    tol = min(1e-3, max(1e-6, MARGIN * max_abs_diff(ref, _weights(m64))))

    model, opt = setup.fresh()
    start = _weights(model)
    out = call(
        name,
        student_fn,
        model,
        opt,
        *setup.data(),
        steps,
        batch_size,
        generator(seed),
        names=["model", "optimizer", "x_0", "x_1", "y"],
    )
    got = _weights(model)
    if max_abs_diff(got, ref) > tol:
        if max_abs_diff(got, start) == 0.0:
            fail(
                name,
                "the model's weights did not change: each step must call loss.backward() and "
                "optimizer.step() on the model it was given",
            )
        for mistake, message in REFLOW_MISTAKES.items():
            wm, wo = setup.fresh()
            _reflow_variant(wm, wo, *setup.data(), steps, batch_size, generator(seed), mistake=mistake)
            if max_abs_diff(got, _weights(wm)) <= tol:
                fail(name, message, mistake=mistake)
        fail(
            name,
            f"after {steps} steps your weights differ from the reference loop's by up to "
            f"{max_abs_diff(got, ref):.3g}. Per step: idx = torch.randint(0, N, (B,)), then t = torch.rand(B) "
            "(both from `generator`), then zero_grad, your flow_matching_loss on (x_0[idx], y[idx], t, x_1[idx]), "
            "backward, optimizer.step()",
        )
    losses = _loss_values(name, out, steps)
    loss_err = max(abs(a - b) for a, b in zip(losses, ref_losses))
    if loss_err > max(tol, 1e-5 * max(1.0, max(abs(v) for v in ref_losses))):
        fail(
            name,
            f"the weights are right, but the returned losses differ from the steps' losses by up to "
            f"{loss_err:.3g}: append each step's loss (loss.item()), once per step",
        )

    # a short run: the loss must fall (Adam, a larger batch)
    rm, ro = setup.fresh(adam=True)
    r_losses = flow.reflow_train(rm, ro, *setup.data(), short_steps, 16, generator(seed + 1))
    k = max(1, short_steps // 8)
    first, last = sum(r_losses[:k]) / k, sum(r_losses[-k:]) / k
    bound = last + 0.25 * (first - last)
    sm, so = setup.fresh(adam=True)
    got_losses = _loss_values(
        name, call(name, student_fn, sm, so, *setup.data(), short_steps, 16, generator(seed + 1)), short_steps
    )
    mean_last = sum(got_losses[-k:]) / k
    if not math.isfinite(mean_last) or mean_last > bound:
        fail(
            name,
            f"in a {short_steps}-step run your loss went from {sum(got_losses[:k]) / k:.3g} to {mean_last:.3g} "
            f"(mean of the first and last {k} steps); the reference falls from {first:.3g} to {last:.3g}, and a "
            f"loop must reach {bound:.3g}",
        )
    passed(
        name,
        f"{steps} steps reach the reference weights (within {tol:.1g}); a {short_steps}-step run's loss "
        f"fell from {sum(got_losses[:k]) / k:.3f} to {mean_last:.3f}; seed {seed}",
    )


@torch.no_grad()
def _straightness_variant(model, x_1, y, times, mistake):
    """labkit's straightness with one named mistake (for the messages only)."""
    x, B, vs = x_1, x_1.shape[0], []
    for k in range(len(times) - 1):
        t, t_next = times[k].to(x.dtype).expand(B), times[k + 1].to(x.dtype).expand(B)
        v = model(x, 1 - t if mistake == "one_minus_t" else t, y)
        vs.append(v)
        x = flow.euler_step(x, v, t, t_next)
    chord = {"reversed": x - x_1, "first_velocity": vs[0]}.get(mistake, x_1 - x)
    widths = (times[:-1] - times[1:]).to(x.dtype)
    if mistake == "unweighted":
        widths = torch.full_like(widths, 1 / len(vs))
    elif mistake == "no_widths":
        widths = torch.ones_like(widths)
    reduce = {
        "pixel_mean": lambda d: (d**2).flatten(1).mean(1),
        "not_squared": lambda d: (d**2).flatten(1).sum(1).sqrt(),
    }.get(mistake, lambda d: (d**2).flatten(1).sum(1))
    per_image = sum(w * reduce(chord - v) for w, v in zip(widths, vs))  # [B]
    if mistake == "half":
        return 0.5 * per_image.mean()
    return per_image.sum() if mistake == "image_sum" else per_image.mean()


STRAIGHTNESS_MISTAKES = {
    "reversed": "the chord has the wrong sign: integrated over t the velocity gives x_1 - x_0 (noise minus end "
    "point), the direction the model's v points in this lab (chord sign reversed)",
    "first_velocity": "the velocities were compared with the first one: compare each with the chord x_1 - x_0, "
    "the velocity of the straight line from start to end",
    "unweighted": "the steps were averaged with equal weights: the integral over t weighs each step by its "
    "width t_k - t_{k+1} (the grid may be uneven)",
    "no_widths": "the steps' terms were summed without their widths: the integral over t in [0, 1] weighs each "
    "step by t_k - t_{k+1}",
    "pixel_mean": "the squared difference was averaged over the pixels: ||.||^2 sums over the pixels (the mean "
    "is over the images only)",
    "not_squared": "the norm is not squared: S uses ||(x_1 - x_0) - v||^2, the sum of squares over the pixels",
    "image_sum": "the images' terms were summed: E is the mean over the images (each image's sum over steps, "
    "then the mean)",
    "half": "half of S: the straightness has no factor 1/2 (it is not a loss to differentiate)",
    "one_minus_t": "the model was given 1 - t (t direction reversed): it takes the time of the step as it is",
}


def check_straightness(student_fn, *, seed: int = 0, sizes=((3, 1, 5, 5), (2, 2, 4, 3)), steps=(4, 5, 1)) -> None:
    """student_fn(model, x_1 [B,C,H,W], y int64 [B], times float64 [S+1]) -> S, a number (0-d tensor or float):
    the Riemann sum over the Euler path's steps of (t_k - t_{k+1}) E||(x_1 - x_0) - v(x_{t_k}, t_k)||^2."""
    name = "check_straightness"
    g = generator(seed)
    for n, shape in enumerate(sizes):
        shape = tuple(int(s) for s in shape)
        B = shape[0]
        for i, S in enumerate(steps):
            times = grid(S, g, uniform=(i == 0))
            model = VelocityModel(shape[1], seed=seed * 100 + n).requires_grad_(False)
            x_1 = torch.randn(shape, generator=g)
            y = torch.randint(0, 11, (B,), generator=g)
            args = (model, x_1, y, times)
            context = f" for x_1 of shape {list(shape)}, {S} step{'s' if S > 1 else ''} " + (
                "(a uniform grid)" if i == 0 or S == 1 else "(an uneven grid)"
            )
            out = call(name, student_fn, *args, hints=LOOP_HINTS, names=["model", "x_1", "y", "times"])
            if isinstance(out, (int, float)) and not isinstance(out, bool):
                out = torch.tensor(float(out), dtype=torch.float64)
            out = expect_tensor(
                name,
                out,
                None,
                shape_hints={},
            )
            if out.numel() != 1:
                fail(
                    name,
                    f"the result has shape {list(out.shape)}; S is one number: the mean over the images of "
                    "each image's sum over steps",
                )
            out = out.reshape(())
            wide = (copy.deepcopy(model).double(), x_1.double(), y, times)
            ref = flow.straightness(*wide)
            mistakes = {}
            for key, message in STRAIGHTNESS_MISTAKES.items():
                wrong = _straightness_variant(*wide, key)
                if max_abs_diff(wrong, ref) > 1e-9:  # on a uniform grid "unweighted" is right
                    mistakes[message] = wrong
            try:
                compare(
                    name,
                    out,
                    ref,
                    mistakes,
                    tol=1e-5 * max(1.0, float(ref)),
                    context=context,
                    reference=flow.straightness,
                    args=args,
                )
            except AssertionError as exc:
                if getattr(exc, "mistake", None):
                    raise
                fail(
                    name,
                    f"{str(exc).split(': ', 1)[1]}\n  (your straightness runs your euler_step: if "
                    "check_euler_step failed above, fix that first)",
                )
    passed(name, f"grids of {list(steps)} steps, shapes {[list(s) for s in sizes]}, seed {seed}")


# --- a shifted time grid -------------------------------------------------------------------------------


def check_shifted_time_grid(student_fn, *, seed: int = 0, cases=((4, 3.0), (5, 0.5), (1, 2.0), (8, 1.0))) -> None:
    """student_fn(steps: int, shift: float) -> [steps + 1] (float64 like time_grid; float32 accepted): shift u / (1 + (shift - 1) u) over the uniform
    descending grid u = 1, 1 - 1/steps, ..., 0. cases: (steps, shift); hidden lines draw other shifts."""
    name = "check_shifted_time_grid"
    g = generator(seed)
    for steps, shift in cases:
        steps, shift = int(steps), float(shift)
        if seed:
            shift = float(torch.exp(torch.randn((), generator=g, dtype=torch.float64)))  # hidden: shifts around 1
        out = call(name, student_fn, steps, shift)
        out = expect_tensor(
            name,
            out,
            (steps + 1,),
            shape_hints={(steps,): "a grid of S steps has S + 1 times, from 1 down to 0 (time_grid(steps) has them)"},
        )
        u = flow.time_grid(steps)
        ref = flow.shifted_time_grid(steps, shift)
        mistakes = {}
        if shift != 1.0:
            mistakes.update(
                {
                    "the shift went the other way: u / (shift - (shift - 1) u) is the shift 1/shift; the grid is "
                    "shift u / (1 + (shift - 1) u), crowding towards t = 1 when shift > 1 (shift inverted)": u
                    / (shift - (shift - 1) * u),
                    "shift u / (1 + shift u): the denominator is 1 + (shift - 1) u, which keeps the end t = 1 at 1": shift
                    * u
                    / (1 + shift * u),
                    "u ** shift is a power law, not the shift: t = shift u / (1 + (shift - 1) u)": u**shift,
                    "the uniform grid: the times must be shifted, t = shift u / (1 + (shift - 1) u)": u,
                    "shift u without the denominator: t = shift u / (1 + (shift - 1) u) keeps every time in [0, 1]": shift
                    * u,
                }
            )
        mistakes["the grid ascends from 0 to 1: sampling walks down from t = 1 (noise) to t = 0 (data)"] = ref.flip(0)
        compare(
            name,
            out,
            ref,
            mistakes,
            tol=1e-6,  # float32 grids are accepted (the loops convert the times)
            context=f" for steps = {steps}, shift = {shift:g}",
            where=("k", torch.arange(steps + 1)),
        )
    passed(name, f"{len(cases)} grids, seed {seed}")
