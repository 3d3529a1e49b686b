"""Checks for lab 04 (training). References: ``labkit.diffusion.noise_prediction_loss`` (what
``labkit.diffusion.diffusion_loss`` computes at random t and noise) and ``labkit.training.train_step`` (the
trainer's step).

    check_noise_prediction_loss(noise_prediction_loss)
        Ho et al. 2020, eq. 14, for given t and noise:
        L = mean over batch and pixels of (noise - model(sqrt(abar_t) x0 + sqrt(1 - abar_t) noise, t, y))^2
    check_train_step(train_step)
        optimizer.zero_grad(); loss = compute_loss(); loss.backward(); optimizer.step(); return loss.item()
        (the check compares the parameters afterwards with those of the same step done by the reference)
    check_drop_labels(drop_labels)        labkit.training.drop_labels: y -> null_class where rand < p
    check_ema_update(ema_update)          labkit.training.ema_update: ema <- d ema + (1 - d) weights
    check_train_loop(train_loop)          labkit.training.train_loop: N steps of Algorithm 1 from a seeded
        generator reach the reference loop's weights and EMA (determinism), and a short run's loss falls
    check_warmup_cosine_lr(warmup_cosine_lr)   labkit.training.warmup_cosine_lr: steps [N] -> learning rates
        [N], lr (s + 1) / W during the warmup, then a cosine from lr down to min_ratio * lr at total_steps

They run on a tiny seeded stand-in for the U-Net (``ToyEpsModel``): a 3x3 convolution plus a learned
vector per time step and per class. It has the U-Net's interface, model(x, t, y) -> eps_hat. The loop's
check puts a BatchNorm in front (``ToyNormEpsModel``), so a model left in eval mode computes other numbers.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from labkit import diffusion, training, unet
from labkit.checks._common import (
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
    spread_steps,
    yours_or_labkit,  # noqa: F401  (the lab's cells: the student's function if it passes, else labkit's)
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
            "the model was given x0; it must see the noisy x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise": (
                (eps_x0 - nd) ** 2
            ).mean(),
            "the target is x0; the network predicts the noise, so compare eps_hat with `noise`": (
                (eps - x0d) ** 2
            ).mean(),
            "the target is x_t; the network predicts the noise, so compare eps_hat with `noise`": (
                (eps - xt.double()) ** 2
            ).mean(),
            "x_t uses variances (abar_t x0 + (1 - abar_t) noise); the coefficients are their square roots": (
                (model(xt_var, t, y).double() - nd) ** 2
            ).mean(),
            "a sum instead of a mean: eq. 14's expectation is a mean over batch and pixels (F.mse_loss's default)": (
                (eps - nd) ** 2
            ).sum(),
            "summed over pixels and averaged over the batch: average over pixels too (F.mse_loss)": ((eps - nd) ** 2)
            .flatten(1)
            .sum(1)
            .mean(),
            "an absolute error (L1); eq. 14 squares the difference": (eps - nd).abs().mean(),
            "the square root of the MSE; eq. 14 is the mean squared error itself": ((eps - nd) ** 2).mean().sqrt(),
            "the model was told 'no class' (index 10): it is trained on the labels y it is given (the training "
            "loop, not the loss, drops labels for guidance)": (
                (model(xt, t, torch.full_like(y, 10)).double() - nd) ** 2
            ).mean(),
            "the model was given t + 1: x_t was made at step t, so the model must see t itself": (
                (model(xt, (t + 1).clamp(max=len(ab) - 1), y).double() - nd) ** 2
            ).mean(),
            "the noise coefficient is missing: x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise": (
                (model((a.sqrt() * x0d + nd).float(), t, y).double() - nd) ** 2
            ).mean(),
            "half the mean squared error (a factor 1/2 some texts use); eq. 14 has none": 0.5
            * ((eps - nd) ** 2).mean(),
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
        ref, mistakes = _loss_variants(model, x0, y, t, noise, ab)
        try:
            compare(
                name,
                out_t.reshape(()),
                ref,
                mistakes,
                tol=1e-5 * max(1.0, float(ref)),
                context=f" for x0 of shape {list(shape)}",
                reference=lambda *a: diffusion.noise_prediction_loss(model, *a),
                args=(x0, y, t, noise, ab),
            )
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


def check_train_step(
    student_fn, *, seed: int = 0, sizes=((4, 1, 8, 8), (2, 3, 6, 6)), lr: float = 0.1, T: int = 50
) -> None:
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

        out = call(
            name,
            student_fn,
            model,
            opt,
            compute_loss,
            hints={
                "modified by an inplace operation": "optimizer.step() ran before loss.backward(): it changed the "
                "weights the backward pass still needed. The update can only use gradients that backward() "
                "has computed for this batch's loss"
            },
        )
        after = _params(model)
        if len(calls) == 0:
            fail(name, "compute_loss() was never called: the step needs the loss of this batch")
        if len(calls) > 1:
            fail(
                name,
                f"compute_loss() was called {len(calls)} times; compute the loss once per step "
                "(each call runs the model again)",
            )
        err = _moved(after, expected)
        if err > 1e-5:
            if _moved(after, before) == 0.0:
                fail(
                    name,
                    "the parameters did not move: the optimizer's step can only use gradients that "
                    "backward() has computed for this batch. Was backward() or step() missing, were they "
                    "in the wrong order, or were the gradients cleared after backward() (that wipes them "
                    "before the optimizer can use them)?",
                )
            variants = {
                "the old gradients were not cleared: call optimizer.zero_grad() before loss.backward() "
                "(backward adds to .grad, it does not overwrite it)": [
                    b - lr * (gr + s) for b, gr, s in zip(before, grads, stale)
                ],
                "optimizer.step() ran before loss.backward(): it used the previous step's gradients": [
                    b - lr * s for b, s in zip(before, stale)
                ],
                "optimizer.step() was called twice; once per batch": [b - 2 * lr * gr for b, gr in zip(before, grads)],
                "the update went uphill: let optimizer.step() do the update, do not change the sign of the loss": [
                    b + lr * gr for b, gr in zip(before, grads)
                ],
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
            fail(
                name,
                f"returned {value:.6g}, but this batch's loss (before the update) is {float(ref_loss):.6g}: "
                "return the value of the loss you back-propagated",
            )
    passed(name, f"shapes {[list(s) for s in sizes]}, SGD lr={lr}, seed {seed}")


# --- label dropout ---------------------------------------------------------------------------------------


def check_drop_labels(student_fn, *, seed: int = 0, sizes=(64, 9), p: float = 0.3, null_class: int = 10) -> None:
    """student_fn(y [B], p, null_class, generator) -> int64 [B]: each label becomes ``null_class`` where
    u < p, with u = torch.rand(B) drawn from ``generator`` (one number per label)."""
    name = "check_drop_labels"
    g = generator(seed)
    for k, B in enumerate(sizes):
        y = torch.randint(0, null_class, (int(B),), generator=g)
        gen_seed = 1000 * seed + k
        ref = training.drop_labels(y, p, null_class, generator(gen_seed))
        out = call(name, student_fn, y, p, null_class, generator(gen_seed), names=["y", "p", "null_class", "generator"])
        out = expect_tensor(name, out, (int(B),), what="the labels", floating=False)
        if out.is_floating_point() or out.dtype == torch.bool:
            fail(
                name,
                f"the labels have dtype {out.dtype}; keep them int64 like y (torch.where(drop, "
                "torch.full_like(y, null_class), y) keeps y's dtype)",
            )
        if torch.equal(out, ref):
            continue
        u = torch.rand(int(B), generator=generator(gen_seed))  # [B] the draws a correct answer makes
        null = torch.full_like(y, null_class)
        wrong = {
            "no label was dropped: where u < p, the label becomes null_class": y,
            "every label was dropped: only those where u < p become null_class": null,
            "labels were dropped with probability 1 - p: drop where u < p (p is the chance of *dropping*)": torch.where(
                u >= p, null, y
            ),
            "a dropped label became 0, a real digit: it becomes null_class (the extra 'no class' index, "
            f"{null_class} here)": torch.where(u < p, torch.zeros_like(y), y),
            "the mask u > 1 - p drops as often, but other labels: draw u = torch.rand(B, generator=generator) "
            "and drop where u < p, so that a run can be replayed": torch.where(u > 1 - p, null, y),
        }
        for message, labels in wrong.items():
            if torch.equal(out, labels):
                fail(name, message)
        again = call(name, student_fn, y, p, null_class, generator(gen_seed))
        if not (isinstance(again, torch.Tensor) and torch.equal(again.detach().cpu(), out)):
            fail(
                name,
                "two calls with generators in the same state gave different labels: draw the random "
                "numbers from `generator` (torch.rand(y.shape, generator=generator)), not from torch's "
                "global random state",
            )
        changed = out != y
        if bool((changed & (out != null_class)).any()):
            fail(
                name,
                "some labels changed to something other than null_class: a label is either kept or "
                "replaced by null_class",
            )
        fail(
            name,
            f"{int((out != ref).sum())} of {B} labels differ from the reference (p = {p}): draw one "
            "u = torch.rand(y.shape, generator=generator) and replace the labels where u < p",
        )
    passed(name, f"batches {list(sizes)}, p = {p}, seed {seed}")


# --- the EMA of the weights --------------------------------------------------------------------------------


def check_ema_update(student_fn, *, seed: int = 0, decay: float = 0.9, channels=(1, 3), T: int = 20) -> None:
    """student_fn(ema, model, decay) -> None: for every parameter, ema_p <- decay * ema_p + (1 - decay) * p,
    in place; the model itself does not change."""
    name = "check_ema_update"
    for k, C in enumerate(channels):
        model = ToyEpsModel(int(C), T, seed=seed * 100 + k)
        ema = ToyEpsModel(int(C), T, seed=seed * 100 + k + 50)  # an average that has drifted from the weights
        e0, m0 = _params(ema), _params(model)
        ref64, ref32 = copy.deepcopy(ema).double(), copy.deepcopy(ema)
        training.ema_update(ref64, copy.deepcopy(model).double(), decay)  # labkit's, in float64: the answer
        training.ema_update(ref32, copy.deepcopy(model), decay)  # and in float32: how far rounding alone moves it
        expected = _params(ref64)
        tol = max(1e-7, MARGIN * _moved(_params(ref32), expected))
        call(
            name,
            student_fn,
            ema,
            model,
            decay,
            names=["ema", "model", "decay"],
            hints={
                "leaf variable that requires grad": "the EMA's parameters require gradients, so change them in place "
                "inside `with torch.no_grad():` (an average is not part of any loss)"
            },
        )
        e1, m1 = _params(ema), _params(model)
        if _moved(m1, m0) > 0.0:
            fail(
                name,
                "the model's weights changed: only the EMA copy moves towards the model, the weights "
                "being trained stay as they are",
            )
        err = _moved(e1, expected)
        if err <= tol:
            continue
        if _moved(e1, e0) == 0.0:
            fail(
                name,
                "the EMA's parameters did not change: update each of them in place (e.g. with "
                "mul_ and add_, or lerp_); assigning a new tensor to a local name changes nothing",
            )
        variants = {
            f"the decay is reversed: the EMA keeps decay = {decay} of its old value and takes 1 - decay of the "
            "model (ema <- decay * ema + (1 - decay) * model)": [
                (1 - decay) * e.double() + decay * m.double() for e, m in zip(e0, m0)
            ],
            "the EMA became a copy of the model: it should move only a fraction 1 - decay of the way": [
                m.double() for m in m0
            ],
            "the model's share is missing: ema <- decay * ema + (1 - decay) * model": [decay * e.double() for e in e0],
            "a plain average of the two: the weights are decay and 1 - decay": [
                (e.double() + m.double()) / 2 for e, m in zip(e0, m0)
            ],
        }
        for message, params in variants.items():
            if _moved(e1, params) <= max(tol, 1e-6):
                fail(name, message)
        fail(name, f"the EMA's parameters differ from decay * ema + (1 - decay) * model by up to {err:.3g}")
    passed(name, f"channels {list(channels)}, decay {decay}, seed {seed}")


# --- the training loop -----------------------------------------------------------------------------------


class ToyNormEpsModel(ToyEpsModel):
    """``ToyEpsModel`` behind a BatchNorm: in train mode it normalises with the batch's statistics (and
    updates its running ones), in eval mode with the running ones, so a loop that forgot model.train()
    computes other numbers."""

    def __init__(self, channels: int, T: int, num_classes: int = 10, seed: int = 0):
        super().__init__(channels, T, num_classes, seed)
        self.norm = nn.BatchNorm2d(channels)

    def forward(self, x, t, y):
        return super().forward(self.norm(x), t, y)


LOOP_MISTAKES = {
    "no_zero_grad": "the gradients were never cleared: every step must start with optimizer.zero_grad() "
    "(backward adds to .grad); your train_step does it, so let the loop call it",
    "ema_reversed": "the EMA decay is reversed: ema <- d * ema + (1 - d) * weights keeps most of the old average "
    "(d close to 1)",
    "ema_constant": "the EMA used ema_decay from the first step: use the warm-up decay "
    "min(ema_decay, (1 + step) / (10 + step)), which averages less of the random start",
    "ema_first": "the EMA was updated before the optimizer step: average the weights after they have changed",
    "ema_step_plus_1": "the steps are numbered from 1: the first step of this call is number first_step "
    "(its EMA decay is min(ema_decay, (1 + first_step) / (10 + first_step)))",
    "ema_first_step_ignored": "the steps were numbered from 0 although first_step was given: number them "
    "first_step, first_step + 1, ... (the EMA warm-up continues a run)",
    "t_from_1": "t was drawn from 1..T-1: diffusion steps are numbered 0..T-1, torch.randint(0, T, (B,), "
    "generator=generator)",
    "t_to_T": "t was drawn from 1..T: diffusion steps are numbered 0..T-1, torch.randint(0, T, (B,), "
    "generator=generator) (randint's upper end is excluded)",
    "noise_twice": "the noise was drawn twice in a step: draw it once, after t, and use that one tensor both to "
    "make x_t and as the target",
    "noise_twice_target": "the noise was drawn twice in a step (x_t was made with one, the loss compared with the "
    "other): draw it once, after t, and use that one tensor both to make x_t and as the target",
    "target_x0": "the loss compares the network's output with x0: the network predicts the noise, so the target "
    "is the noise (noise_prediction_loss)",
    "no_dropout": "no label was dropped: each batch's labels go through drop_labels(y, label_dropout, "
    "null_class, generator)",
    "dropout_reversed": "labels were dropped with probability 1 - p: drop where u < p",
    "eval_mode": "the model stayed in eval mode (the grader passes it in eval mode, as after sampling): call "
    "model.train() before the loop, since normalisation and dropout layers train differently",
    "t_first": "the random numbers were drawn in another order: per step, the batch indices, then the dropout "
    "mask, then t, then the noise",
    "noise_first": "the random numbers were drawn in another order: per step, the batch indices, then the dropout "
    "mask, then t, then the noise",
    "drop_last": "the dropout mask was drawn after t and the noise: per step, the batch indices, then the dropout "
    "mask, then t, then the noise",
}


def _loop(
    model,
    ema,
    optimizer,
    images,
    labels,
    alpha_bars,
    steps,
    batch_size,
    gen,
    p,
    decay,
    first_step,
    null_class=10,
    mistake=None,
    dtype=None,
):
    """The reference loop written out (``labkit.training.train_loop``, which the tests compare it with) with
    one named mistake switched on (for the messages only: the answer itself comes from labkit's loop)."""
    if mistake != "eval_mode":
        model.train()
    T, N, B = len(alpha_bars), len(images), batch_size
    losses = []
    for step in range(first_step, first_step + steps):
        draws = {}
        order = {"t_first": "tidn", "noise_first": "idnt", "drop_last": "itnd"}.get(mistake, "idtn")
        for what in order:  # i: batch indices, d: dropout mask, t: steps, n: noise
            if what == "i":
                draws["idx"] = torch.randint(0, N, (B,), generator=gen)
            elif what == "d":
                draws["u"] = torch.rand(B, generator=gen)
            elif what == "t":
                lo, hi = {"t_from_1": (1, T), "t_to_T": (1, T + 1)}.get(mistake, (0, T))
                draws["t"] = torch.randint(lo, hi, (B,), generator=gen)
            else:
                draws["noise"] = torch.randn((B, *images.shape[1:]), generator=gen)
                if mistake in ("noise_twice", "noise_twice_target"):
                    draws["noise2"] = torch.randn((B, *images.shape[1:]), generator=gen)
                    if mistake == "noise_twice":
                        draws["noise"] = draws["noise2"]
        idx, u, t, noise = draws["idx"], draws["u"], draws["t"], draws["noise"]
        x0, y = images[idx], labels[idx]
        if mistake == "dropout_reversed":
            y = torch.where(u >= p, torch.full_like(y, null_class), y)
        elif mistake != "no_dropout":
            y = torch.where(u < p, torch.full_like(y, null_class), y)
        if dtype is not None:
            x0, noise = x0.to(dtype), noise.to(dtype)
        a = alpha_bars[t].to(x0.dtype).view(-1, *([1] * (x0.dim() - 1)))  # [B, 1, 1, 1]
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        target = {"target_x0": x0, "noise_twice_target": draws.get("noise2")}.get(mistake, noise)
        number = {"ema_step_plus_1": step + 1, "ema_first_step_ignored": step - first_step}.get(mistake, step)
        d = decay if mistake == "ema_constant" else training.ema_decay_at(number, decay)
        with torch.no_grad():
            if mistake == "ema_first":
                for e, m in zip(ema.parameters(), model.parameters()):
                    e.copy_(d * e + (1 - d) * m)
        if mistake != "no_zero_grad":
            optimizer.zero_grad()
        loss = ((model(xt, t, y) - target) ** 2).mean()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            for e, m in zip(ema.parameters(), model.parameters()):
                if mistake == "ema_reversed":
                    e.copy_((1 - d) * e + d * m)
                elif mistake != "ema_first":
                    e.copy_(d * e + (1 - d) * m)
        losses.append(loss.item())
    return losses


class _LoopSetup:
    """The seeded inputs of one determinism test: data, a model in eval mode with stale gradients, its EMA
    copy and an SGD optimiser with momentum; ``fresh()`` builds new copies each time."""

    def __init__(self, seed, shape, T, N):
        g = generator(seed)
        C, H, W = shape
        self.images = torch.rand((N, C, H, W), generator=g) * 2 - 1
        self.labels = torch.randint(0, 10, (N,), generator=g)
        betas = 1e-3 + 0.2 * torch.rand(T, generator=g, dtype=torch.float64)
        self.alpha_bars = torch.cumprod(1 - betas, 0)  # [T] float64
        self.model = ToyNormEpsModel(C, T, seed=seed * 100 + 7).eval()
        self.stale = [0.5 * torch.randn(p.shape, generator=g) for p in self.model.parameters()]

    def fresh(self, dtype=None, lr=0.05):
        model = copy.deepcopy(self.model)
        if dtype is not None:
            model = model.to(dtype)
        for p, s in zip(model.parameters(), self.stale):
            p.grad = s.clone().to(p.dtype)
        ema = copy.deepcopy(model)
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
        return model, ema, opt


def _state(model, ema) -> torch.Tensor:
    """The model's parameters and BatchNorm statistics, then the EMA's parameters, as one float64 vector."""
    parts = [v.detach().double().flatten() for v in model.state_dict().values() if v.is_floating_point()]
    parts += [p.detach().double().flatten() for p in ema.parameters()]
    return torch.cat(parts)


def _loss_values(name, out, steps) -> list[float]:
    return loss_values(name, out, steps, "train_step returns one")


def check_train_loop(
    student_fn,
    *,
    seed: int = 0,
    shape=(1, 8, 8),
    steps: int = 4,
    batch_size: int = 6,
    p: float = 0.3,
    decay: float = 0.9,
    first_step: int = 0,
    T: int = 20,
    N: int = 40,
    short_steps: int = 40,
) -> None:
    """student_fn(model, ema, optimizer, images, labels, alpha_bars, steps, batch_size, generator,
    label_dropout, ema_decay, first_step) -> the list of the step losses.

    Determinism: from a generator seeded with ``seed``, ``steps`` steps of the student's loop on a small model
    (``ToyNormEpsModel``, passed in eval mode with stale gradients) must reach the parameters, BatchNorm
    statistics and EMA of ``labkit.training.train_loop`` on a copy, within MARGIN times the float32 error of
    that loop (measured against the same loop in float64, at most 1e-3). Then a ``short_steps`` run must lower the loss."""
    name = "check_train_loop"
    shape = tuple(int(s) for s in shape)
    setup = _LoopSetup(seed, shape, T, N)
    data = (setup.images, setup.labels, setup.alpha_bars)
    settings = (steps, batch_size)
    tail = (p, decay, first_step)

    ref_model, ref_ema, ref_opt = setup.fresh()
    ref_losses = training.train_loop(ref_model, ref_ema, ref_opt, *data, *settings, generator(seed), *tail)
    ref = _state(ref_model, ref_ema)
    m64, e64, o64 = setup.fresh(torch.float64)  # the same loop in float64 (the same float32 random draws)
    training.train_loop(
        m64, e64, o64, setup.images.double(), setup.labels, setup.alpha_bars, *settings, generator(seed), *tail
    )
    tol = min(1e-3, max(1e-6, MARGIN * max_abs_diff(ref, _state(m64, e64))))  # every named mistake is > 1e-2 away

    model, ema, opt = setup.fresh()
    start = _state(model, ema)
    out = call(
        name,
        student_fn,
        model,
        ema,
        opt,
        *data,
        *settings,
        generator(seed),
        *tail,
        names=["model", "ema", "optimizer", "images", "labels", "alpha_bars"],
        hints={
            "out of bounds": "an index is out of range: t is drawn from 0..T-1, "
            "torch.randint(0, T, (B,), generator=generator) (randint's upper end is excluded)",
            "time steps must be in": "t is drawn from 0..T-1: torch.randint(0, T, (B,), "
            "generator=generator) (randint's upper end is excluded)",
        },
    )
    got = _state(model, ema)
    n_model = len(ref) - sum(p_.numel() for p_ in ref_ema.parameters())
    err = max_abs_diff(got, ref)
    if err > tol:
        if max_abs_diff(got[:n_model], start[:n_model]) == 0.0:
            fail(
                name,
                "the model's parameters did not change: each step must call train_step (zero_grad, "
                "loss, backward, optimizer.step) on the model it was given",
            )
        if max_abs_diff(got[n_model:], start[n_model:]) == 0.0:
            fail(
                name,
                "the EMA's parameters did not change: after every optimizer step call "
                "ema_update(ema, model, decay) with the warm-up decay of that step",
            )
        for mistake, message in LOOP_MISTAKES.items():
            if mistake == "ema_first_step_ignored" and first_step == 0:
                continue
            wm, we, wo = setup.fresh()
            try:
                _loop(wm, we, wo, *data, *settings, generator(seed), *tail, mistake=mistake)
            except (IndexError, RuntimeError):  # t = T drawn: this mistake crashes on these inputs
                continue
            if max_abs_diff(got, _state(wm, we)) <= tol:
                fail(name, message)
        model_ok = max_abs_diff(got[:n_model], ref[:n_model]) <= tol
        fail(
            name,
            f"after {steps} steps your {'EMA' if model_ok else 'weights'} differ from the reference "
            f"loop's by up to {max_abs_diff(got[n_model:] if model_ok else got[:n_model], ref[n_model:] if model_ok else ref[:n_model]):.3g}. "
            "Per step: batch indices, dropout mask, t, noise (in this order, all from `generator`), "
            "then train_step on the noise-prediction loss, then ema_update with the warm-up decay "
            "min(ema_decay, (1 + step) / (10 + step)) for step = first_step, first_step + 1, ...",
        )
    losses = _loss_values(name, out, steps)
    loss_err = max(abs(a - b) for a, b in zip(losses, ref_losses))
    if loss_err > max(tol, 1e-5 * max(1.0, max(abs(v) for v in ref_losses))):
        fail(
            name,
            f"the weights are right, but the returned losses differ from the steps' losses by up to "
            f"{loss_err:.3g}: append the value train_step returns, once per step",
        )

    # a short run: the loss must fall (Adam, a larger batch, the same model)
    sm, se, _ = setup.fresh()
    s_opt = torch.optim.Adam(sm.parameters(), lr=0.02)
    rm, re_, _ = setup.fresh()
    r_losses = training.train_loop(
        rm, re_, torch.optim.Adam(rm.parameters(), lr=0.02), *data, short_steps, 16, generator(seed + 1), p, decay
    )
    k = max(1, short_steps // 8)
    first, last = sum(r_losses[:k]) / k, sum(r_losses[-k:]) / k
    bound = last + 0.25 * (first - last)  # a quarter of the way back up from where the reference ends
    got_losses = _loss_values(
        name,
        call(name, student_fn, sm, se, s_opt, *data, short_steps, 16, generator(seed + 1), p, decay, 0),
        short_steps,
    )
    mean_last = sum(got_losses[-k:]) / k
    if not math.isfinite(mean_last) or mean_last > bound:
        fail(
            name,
            f"in a {short_steps}-step run your loss went from {sum(got_losses[:k]) / k:.3g} to "
            f"{mean_last:.3g} (mean of the first and last {k} steps); the reference falls from {first:.3g} "
            f"to {last:.3g}, and a loop must reach {bound:.3g}",
        )
    passed(
        name,
        f"{steps} steps reach the reference weights and EMA (within {tol:.1g}); a {short_steps}-step "
        f"run's loss fell from {sum(got_losses[:k]) / k:.3f} to {mean_last:.3f}; seed {seed}",
    )


def loop_to_use(student_loop):
    """(loop, who) for the lab's real training: the student's ``train_loop`` when it passes its check (run
    quietly), else ``labkit.training.train_loop``, so a bug in the exercise never stops the rest of the lab."""
    import contextlib
    import io

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            check_train_loop(student_loop)
        return student_loop, "your train_loop"
    except Exception:  # any failure, NotImplementedError included
        return training.train_loop, "labkit's training.train_loop (yours does not pass its check yet)"


def _mixes_devices(network_class) -> str | None:
    """Why a small network of ``network_class`` (lab 03's UNet signature) cannot run on a GPU, or None: built
    on the CPU, moved to PyTorch's "meta" device (shapes without data; it stands in for a GPU) and run once
    on meta inputs, so a tensor made on the CPU inside ``forward`` (``torch.zeros(n)`` without ``device=``)
    raises as it would on CUDA (and filling such a tensor from a meta one raises "cannot copy out of meta",
    where CUDA would copy and fail one layer later). Any other failure the meta device causes is not held
    against it."""
    from labkit.checks._common import DEVICE_MISMATCH

    try:
        net = network_class(in_channels=1, base_channels=8, channel_mults=(1, 2), blocks_per_level=1, groups=4,
                            patch=1, num_classes=10).to("meta")  # fmt: skip
        x = torch.zeros(2, 1, 8, 8, device="meta")  # [B, C, H, W]
        t = y = torch.zeros(2, dtype=torch.long, device="meta")  # [B]
        with torch.no_grad():
            net(x, t, y)
    except Exception as exc:  # noqa: BLE001
        text = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        if "copy out of meta" in text.lower():  # a CPU tensor filled from the input: fine here, not on CUDA
            return "it fills a tensor made on the CPU (torch.zeros(...) without device=) whatever the input's device"
        return f'"{text}"' if any(k in text.lower() for k in DEVICE_MISMATCH) else None
    return None


def network_to_use(my_network):
    """(network, who) for the lab's real training. ``my_network`` is the module lab 03 wrote (``colab.
    load_my_network()``) or None. When its ``UNet`` still passes lab 03's check (run quietly), ``network(cfg)``
    builds it from a ``UNetConfig`` (attention off: lab 03's network has none); else ``network`` is None and
    the run trains labkit's ``UNet``."""
    import contextlib
    import io

    from labkit.checks import lab03_embeddings

    if my_network is None or not hasattr(my_network, "UNet"):
        return None, "labkit's UNet (lab 03 has not saved a network of yours here: run its last cells)"
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            lab03_embeddings.check_unet(my_network.UNet)
    except Exception:  # any failure: labkit's network
        return None, "labkit's UNet (the network lab 03 saved does not pass lab 03's check)"
    mixed = _mixes_devices(my_network.UNet)
    if mixed:
        return None, f"labkit's UNet (yours from lab 03 would fail on a GPU: {mixed}; see lab 03's exercise 1)"

    def network(cfg: unet.UNetConfig):
        return my_network.UNet(
            in_channels=cfg.in_channels,
            base_channels=cfg.base_channels,
            channel_mults=tuple(cfg.channel_mults),
            blocks_per_level=cfg.blocks_per_level,
            groups=cfg.groups,
            patch=cfg.patch,
            num_classes=cfg.num_classes,
        )

    return network, "your UNet from lab 03"


# --- the learning-rate schedule ---------------------------------------------------------------------


def _lr_variants(steps, lr, W, S, m) -> dict[str, torch.Tensor]:
    """Plausible wrong schedules, each named by what went wrong (a tensor [N] each)."""
    s = steps.double()
    lo = lr * m

    def cosine(p, low=lo, rising=False):
        return low + (lr - low) * 0.5 * (1 - torch.cos(math.pi * p) if rising else 1 + torch.cos(math.pi * p))

    p = ((s - W) / max(1, S - W)).clamp(0, 1)
    warm = lr * (s + 1) / max(1, W)
    return {
        "the warmup starts at 0 (lr * s / W): the first step would not train at all; use lr * (s + 1) / W, which "
        "reaches lr on the last warmup step": torch.where(s < W, lr * s / max(1, W), cosine(p)),
        "the warmup lasts one step too long (s <= W): at s = W the lr overshoots to lr (W + 1) / W; the warmup is "
        "s < W": torch.where(s <= W, warm, cosine(p)),
        "there is no warmup: the first warmup_steps steps must climb linearly to lr": cosine(p),
        "the cosine decays to 0: it must end at min_ratio * lr": torch.where(s < W, warm, cosine(p, low=0.0)),
        "min_ratio was used as the lowest learning rate itself: the lowest is min_ratio * lr (a ratio)": torch.where(
            s < W, warm, cosine(p, low=m)
        ),
        "the cosine counts from step 0 (p = s / total_steps): it starts after the warmup, p = (s - W) / (S - W)": torch.where(
            s < W, warm, cosine((s / max(1, S)).clamp(0, 1))
        ),
        "p is not clamped to [0, 1]: after total_steps the cosine rises again; keep it at min_ratio * lr "
        "(.clamp(0, 1))": torch.where(s < W, warm, cosine((s - W) / max(1, S - W))),
        "the decay is linear: the schedule is a half cosine, (1 + cos(pi p)) / 2": torch.where(
            s < W, warm, lo + (lr - lo) * (1 - p)
        ),
        "the cosine rises instead of falling ((1 - cos) / 2): at p = 0 the lr must be the full lr": torch.where(
            s < W, warm, cosine(p, rising=True)
        ),
        "cos was given degrees or no pi: the angle is pi * p (radians), from 0 to pi": torch.where(
            s < W, warm, lo + (lr - lo) * 0.5 * (1 + torch.cos(p))
        ),
    }


def check_warmup_cosine_lr(
    student_fn, *, seed: int = 0, cases=((1e-3, 10, 50, 0.1), (2e-4, 0, 20, 0.0), (5e-4, 3, 12, 0.5))
) -> None:
    """student_fn(steps int64 [N], lr, warmup_steps, total_steps, min_ratio) -> learning rates [N]. Each case:
    every step from 0 to past total_steps, in a shuffled order (the answer must not assume sorted steps)."""
    name = "check_warmup_cosine_lr"
    g = generator(seed)
    for lr, W, S, m in cases:
        steps = torch.arange(0, S + 5)[torch.randperm(S + 5, generator=g)]  # [N], shuffled, past the end
        args = (steps, lr, W, S, m)
        out = call(name, student_fn, *args, names=["steps", "lr", "warmup_steps", "total_steps", "min_ratio"])
        out = expect_tensor(name, out, (len(steps),)).double()
        ref = training.warmup_cosine_lr(*args)
        compare(
            name,
            out,
            ref,
            _lr_variants(*args),
            tol=1e-6 * lr,
            reference=training.warmup_cosine_lr,
            args=args,
            context=f" for lr={lr:g}, warmup_steps={W}, total_steps={S}, min_ratio={m:g}",
            where=("step", steps),
        )
    passed(name, f"{len(cases)} schedules (warmups {[int(c[1]) for c in cases]}), steps past the end, seed {seed}")
