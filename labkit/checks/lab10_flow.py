"""Checks for lab 10 (flow matching). Reference: ``labkit.flow``, in float64. Convention: x_t = (1 - t) x_0 + t eps,
data at t = 0, noise at t = 1, velocity eps - x_0, sampling from t = 1 down to t = 0.

    check_flow_matching_loss(flow_matching_loss)   mean of (model((1 - t) x0 + t noise, t, y) - (noise - x0))^2
    check_euler_step(euler_step)                   x_t + (t_next - t) v_hat, t and t_next per image
    check_euler_loop(euler_loop)                   Euler down times[0] = 1 > ... > times[S] = 0 (S evaluations)
    check_heun_loop(heun_loop)                     Heun (trapezoid) down the same grid, corrected on every step
    check_cfg_velocity(cfg_velocity)               (1 + w) v(x, t, y) - w v(x, t, null)

The loops and the guidance are graded on ``VelocityModel``, a seeded toy velocity model that is strict about its
inputs as a real network is (t: float [B] in [0, 1]) and says which input is wrong; only tensors come back.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from labkit import flow
from labkit.checks._common import (
    call,
    compare,
    deterministic,
    expect_tensor,
    fail,
    generator,
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
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
            raise ValueError(
                "model(x, t, y): x must be a float tensor [B, C, H, W], got "
                f"{type(x).__name__ if not isinstance(x, torch.Tensor) else list(x.shape)}"
            )
        B, dtype = x.shape[0], self.conv.weight.dtype
        if x.dtype != dtype:
            raise ValueError(
                f"model(x, t, y): x is {x.dtype} but the model computes in {dtype}: a step returned "
                "another dtype than x_1 (the time grid is float64); give the model x in x_1's dtype "
                "(.to(x_1.dtype))"
            )
        if not isinstance(t, torch.Tensor) or not t.is_floating_point() or tuple(t.shape) != (B,):
            got = f"{t.dtype} of shape {list(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(
                f"model(x, t, y): t must be a float tensor of shape [B] = [{B}] (one time in [0, 1] per "
                f"image, e.g. times[k].expand(B)), got {got}"
            )
        if float(t.min()) < 0 or float(t.max()) > 1:
            raise ValueError(f"model(x, t, y): t must be in [0, 1], got {float(t.min()):g}..{float(t.max()):g}")
        if not isinstance(y, torch.Tensor) or y.dtype != torch.long or tuple(y.shape) != (B,):
            raise ValueError(f"model(x, t, y): y must be an int64 tensor of shape [B] = [{B}] (one label per image)")
        if int(y.min()) < 0 or int(y.max()) >= self.y_emb.shape[0]:
            raise ValueError(
                f"model(x, t, y): y must be in 0..{self.y_emb.shape[0] - 1}, got {int(y.min())}..{int(y.max())}"
            )
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
