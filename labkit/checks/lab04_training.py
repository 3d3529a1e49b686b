"""Checks for lab 04 (training). References: ``labkit.diffusion.noise_prediction_loss`` (what
``labkit.diffusion.diffusion_loss`` computes at random t and noise) and ``labkit.training.train_step`` (the
trainer's step).

    check_noise_prediction_loss(noise_prediction_loss)
        Ho et al. 2020, eq. 14, for given t and noise:
        L = mean over batch and pixels of (noise - model(sqrt(abar_t) x0 + sqrt(1 - abar_t) noise, t, y))^2
    check_train_step(train_step)
        optimizer.zero_grad(); loss = compute_loss(); loss.backward(); optimizer.step(); return loss.item()
        (the check compares the parameters afterwards with those of the same step done by the reference)

Both run on a tiny seeded stand-in for the U-Net (``ToyEpsModel``): a 3x3 convolution plus a learned
vector per time step and per class. It has the U-Net's interface, model(x, t, y) -> eps_hat.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from labkit import diffusion, training
from labkit.checks._common import (
    call, compare, deterministic, expect_tensor, fail, generator, max_abs_diff, passed, spread_steps,
)


class ToyEpsModel(nn.Module):
    """model(x [B,C,H,W], t [B], y [B]) -> eps_hat [B,C,H,W]; seeded weights, depends on x, t and y."""

    def __init__(self, channels: int, T: int, num_classes: int = 10, seed: int = 0):
        super().__init__()
        g = generator(seed)
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.copy_(0.3 * torch.randn(self.conv.weight.shape, generator=g))
            self.conv.bias.copy_(0.1 * torch.randn(self.conv.bias.shape, generator=g))
        self.t_emb = nn.Parameter(torch.randn(T, channels, generator=g))
        self.y_emb = nn.Parameter(torch.randn(num_classes + 1, channels, generator=g))

    def forward(self, x, t, y):
        return self.conv(x) + (self.t_emb[t] + self.y_emb[y])[:, :, None, None]


def _inputs(shape, T, g):
    B, C = shape[0], shape[1]
    betas = 1e-3 + 0.05 * torch.rand(T, generator=g, dtype=torch.float64)
    ab = torch.cumprod(1 - betas, 0)
    x0 = torch.rand(shape, generator=g) * 2 - 1
    y = torch.randint(0, 11, (B,), generator=g)
    t = spread_steps(B, T, g)
    noise = torch.randn(shape, generator=g)
    return x0, y, t, noise, ab


def _loss_variants(model, x0, y, t, noise, ab):
    """The reference loss (labkit's, on a float64 copy of the model) and known wrong ones (no gradients needed)."""
    with torch.no_grad():
        a = ab[t].view(-1, *([1] * (x0.dim() - 1)))
        x0d, nd = x0.double(), noise.double()
        ref = diffusion.noise_prediction_loss(copy.deepcopy(model).double(), x0d, y, t, nd, ab)
        xt = (a.sqrt() * x0d + (1 - a).sqrt() * nd).float()
        eps = model(xt, t, y).double()
        xt_var = (a * x0d + (1 - a) * nd).float()
        eps_x0 = model(x0, t, y).double()
        mistakes = {
            "the model was given x0; it must see the noisy x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise":
                ((eps_x0 - nd) ** 2).mean(),
            "the target is x0; the network predicts the noise, so compare eps_hat with `noise`":
                ((eps - x0d) ** 2).mean(),
            "the target is x_t; the network predicts the noise, so compare eps_hat with `noise`":
                ((eps - xt.double()) ** 2).mean(),
            "x_t uses variances (abar_t x0 + (1 - abar_t) noise); the coefficients are their square roots":
                ((model(xt_var, t, y).double() - nd) ** 2).mean(),
            "a sum instead of a mean: eq. 14's expectation is a mean over batch and pixels (F.mse_loss's default)":
                ((eps - nd) ** 2).sum(),
            "summed over pixels and averaged over the batch: average over pixels too (F.mse_loss)":
                ((eps - nd) ** 2).flatten(1).sum(1).mean(),
            "an absolute error (L1); eq. 14 squares the difference": (eps - nd).abs().mean(),
            "the square root of the MSE; eq. 14 is the mean squared error itself": ((eps - nd) ** 2).mean().sqrt(),
            "the model was told 'no class' (index 10): it is trained on the labels y it is given (the training "
            "loop, not the loss, drops labels for guidance)": ((model(xt, t, torch.full_like(y, 10)).double() - nd) ** 2).mean(),
            "the model was given t + 1: x_t was made at step t, so the model must see t itself":
                ((model(xt, (t + 1).clamp(max=len(ab) - 1), y).double() - nd) ** 2).mean(),
            "the noise coefficient is missing: x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise":
                ((model((a.sqrt() * x0d + nd).float(), t, y).double() - nd) ** 2).mean(),
            "half the mean squared error (a factor 1/2 some texts use); eq. 14 has none": 0.5 * ((eps - nd) ** 2).mean(),
        }
    return ref, mistakes


def check_noise_prediction_loss(student_fn, *, seed: int = 0, sizes=((4, 1, 8, 8), (3, 2, 5, 6)), T: int = 50) -> None:
    """student_fn(model, x0 [B,C,H,W], y [B], t [B], noise [B,C,H,W], alpha_bars [T]) -> scalar loss tensor
    that can be back-propagated."""
    name = "check_noise_prediction_loss"
    g = generator(seed)
    for k, shape in enumerate(sizes):
        shape = tuple(int(s) for s in shape)
        x0, y, t, noise, ab = _inputs(shape, T, g)
        model = ToyEpsModel(shape[1], T, seed=seed * 100 + k)
        out = call(name, student_fn, model, x0, y, t, noise, ab, names=["model", "x0", "y", "t", "noise", "alpha_bars"])
        if isinstance(out, float):
            fail(name, "the loss is a Python float: return the tensor itself (no .item()), so that "
                       "loss.backward() can compute gradients")
        out_t = expect_tensor(name, out, None)
        if out_t.numel() != 1:
            fail(name, f"the loss has shape {list(out_t.shape)}; it must be a single number (a 0-d tensor): "
                       "average over the batch as well as the pixels")
        if not out.requires_grad:
            fail(name, "the loss carries no gradient (no .detach(), .item() or torch.no_grad() in the loss: "
                       "training calls loss.backward() on it)")
        ref, mistakes = _loss_variants(model, x0, y, t, noise, ab)
        try:
            compare(name, out_t.reshape(()), ref, mistakes, tol=1e-5 * max(1.0, float(ref)),
                    context=f" for x0 of shape {list(shape)}",
                    reference=lambda *a: diffusion.noise_prediction_loss(model, *a), args=(x0, y, t, noise, ab))
        except AssertionError:
            deterministic(name, student_fn, (model, x0, y, t, noise, ab), out_t.reshape(()))
            raise
    passed(name, f"shapes {[list(s) for s in sizes]}, seed {seed}")


# --- one training step ----------------------------------------------------------------------------


def _params(model) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def _moved(before, after) -> float:
    return max(max_abs_diff(a, b) for a, b in zip(before, after))


class BatchLoss:
    """``compute_loss()`` for one batch: the noise-prediction loss of ``model``; counts its calls.

    A small class rather than a closure so that, while grading, it can travel to the student's kernel with
    the model and come back with how often it was called (``_labkit_state`` / ``_labkit_apply``)."""

    def __init__(self, model, xt, t, y, noise):
        self.model, self.xt, self.t, self.y, self.noise = model, xt, t, y, noise
        self.calls: list[int] = []

    def __call__(self):
        self.calls.append(1)
        return ((self.model(self.xt, self.t, self.y) - self.noise) ** 2).mean()

    def _labkit_state(self):
        return len(self.calls)

    def _labkit_apply(self, state):
        if isinstance(state, int) and 0 <= state < 10_000:
            self.calls[:] = [1] * state


def check_train_step(student_fn, *, seed: int = 0, sizes=((4, 1, 8, 8), (2, 3, 6, 6)), lr: float = 0.1, T: int = 50) -> None:
    """student_fn(model, optimizer, compute_loss) -> the loss as a float.

    compute_loss() returns this batch's loss (a scalar tensor). One step: zero the old gradients, compute
    the loss once, back-propagate, let the optimizer update the parameters. The parameters start with
    stale gradients in .grad (as after the previous step), so a missing zero_grad shows."""
    name = "check_train_step"
    g = generator(seed)
    for k, shape in enumerate(sizes):
        shape = tuple(int(s) for s in shape)
        x0, y, t, noise, ab = _inputs(shape, T, g)
        a = ab[t].view(-1, 1, 1, 1)
        xt = (a.sqrt() * x0.double() + (1 - a).sqrt() * noise.double()).float()
        model = ToyEpsModel(shape[1], T, seed=seed * 100 + k)
        stale = [0.5 * torch.randn(p.shape, generator=g) for p in model.parameters()]

        def setup(m):
            for p, s in zip(m.parameters(), stale):
                p.grad = s.clone()
            return torch.optim.SGD(m.parameters(), lr=lr)

        # the reference step, on a copy
        ref_model = copy.deepcopy(model)
        ref_opt = setup(ref_model)
        ref_loss = training.train_step(ref_model, ref_opt, BatchLoss(ref_model, xt, t, y, noise))
        expected = _params(ref_model)
        grads = [p.grad.detach().clone() for p in ref_model.parameters()]  # this batch's gradients

        before = _params(model)
        opt = setup(model)
        compute_loss = BatchLoss(model, xt, t, y, noise)
        calls = compute_loss.calls

        out = call(name, student_fn, model, opt, compute_loss, hints={
            "modified by an inplace operation": "optimizer.step() ran before loss.backward(): it changed the "
            "weights the backward pass still needed. The update can only use gradients that backward() "
            "has computed for this batch's loss"})
        after = _params(model)
        if len(calls) == 0:
            fail(name, "compute_loss() was never called: the step needs the loss of this batch")
        if len(calls) > 1:
            fail(name, f"compute_loss() was called {len(calls)} times; compute the loss once per step "
                       "(each call runs the model again)")
        err = _moved(after, expected)
        if err > 1e-5:
            if _moved(after, before) == 0.0:
                fail(name, "the parameters did not move: the optimizer's step can only use gradients that "
                           "backward() has computed for this batch. Was backward() or step() missing, were they "
                           "in the wrong order, or were the gradients cleared after backward() (that wipes them "
                           "before the optimizer can use them)?")
            variants = {
                "the old gradients were not cleared: call optimizer.zero_grad() before loss.backward() "
                "(backward adds to .grad, it does not overwrite it)":
                    [b - lr * (gr + s) for b, gr, s in zip(before, grads, stale)],
                "optimizer.step() ran before loss.backward(): it used the previous step's gradients":
                    [b - lr * s for b, s in zip(before, stale)],
                "optimizer.step() was called twice; once per batch": [b - 2 * lr * gr for b, gr in zip(before, grads)],
                "the update went uphill: let optimizer.step() do the update, do not change the sign of the loss":
                    [b + lr * gr for b, gr in zip(before, grads)],
            }
            for message, params in variants.items():
                if _moved(after, params) <= 1e-5:
                    fail(name, message)
            fail(name, f"the parameters after your step differ from the reference step by up to {err:.3g}")
        if out is None:
            fail(name, "nothing was returned: return the loss value as a float (loss.item())")
        if isinstance(out, torch.Tensor):
            if out.numel() != 1:
                fail(name, f"the returned loss has shape {list(out.shape)}; return one number (loss.item())")
            value = float(out.detach().reshape(()))  # a one-number tensor is accepted as the value (while grading,
            # only its data comes back, so the student's kernel and the grader must judge it the same way)
        elif isinstance(out, (float, int)):
            value = float(out)
        else:
            fail(name, f"return the loss as a float (loss.item()), got {type(out).__name__}")
        if not math.isfinite(value) or abs(value - float(ref_loss)) > 1e-5 * max(1.0, abs(float(ref_loss))):
            fail(name, f"returned {value:.6g}, but this batch's loss (before the update) is {float(ref_loss):.6g}: "
                       "return the value of the loss you back-propagated")
    passed(name, f"shapes {[list(s) for s in sizes]}, SGD lr={lr}, seed {seed}")
