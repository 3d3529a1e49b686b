"""Checks for lab 08 (a critic in the loop). References: ``labkit.clip_guidance.guided_eps``,
``labkit.guidance.classifier_grad`` and ``labkit.samplers.classifier_guided_loop``.

    check_guided_eps(guided_eps)
        eps_guided = eps_hat - scale * sqrt(1 - alpha_bar_t) * grad
    where grad is the gradient of the CLIP score (a log-probability-like quantity) with respect to x_t.
    This is the classifier-guidance rule of Dhariwal & Nichol 2021 (Algorithm 2 / eq. 14, "score-based
    conditioning"): since eps = -sqrt(1 - alpha_bar) * grad log p(x_t), adding grad log p(c | x_t) to the
    score subtracts sqrt(1 - alpha_bar_t) * grad from eps.

    check_classifier_grad(classifier_grad)
        g = grad_{x_t} log softmax(classifier(x_t, t))[y], one image's own gradient per row
    check_classifier_guided_loop(classifier_guided_loop)
        lab 05's ancestral loop with eps_hat replaced by guided_eps(eps_hat, g, alpha_bar_k, scale) at every step

Both are graded on a seeded toy classifier (``ToyClassifier``, picklable: it travels to the student's kernel)
and, for the loop, lab 05's ``SamplingModel`` with the noise given, so only tensors come back.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from labkit import clip_guidance, guidance, samplers
from labkit.checks._common import call, compare, deterministic, expect_tensor, fail, generator, passed, spread_steps
from labkit.checks._common import yours_or_labkit  # noqa: F401  (the lab's cells: yours if it passes, else labkit's)
from labkit.checks.lab05_sampling import LOOP_HINTS, SamplingModel, compare_loop, loop_case
from labkit.schedules import make_schedule


def check_guided_eps(student_fn, *, seed: int = 0, sizes=((4, 1, 8, 8), (2, 1, 28, 28)), scales=(2.0, 0.0)) -> None:
    """student_fn(eps_hat [B,C,H,W], grad [B,C,H,W], alpha_bar_t [B,1,1,1] float64, scale: float) -> [B,C,H,W]."""
    name = "check_guided_eps"
    g = generator(seed)
    for shape in sizes:
        shape = tuple(int(s) for s in shape)
        for scale in scales:
            eps = torch.randn(shape, generator=g)
            grad = torch.randn(shape, generator=g)
            ab = (0.05 + 0.9 * torch.rand(shape[0], generator=g, dtype=torch.float64)).view(-1, 1, 1, 1)
            out = call(name, student_fn, eps, grad, ab, float(scale), names=["eps_hat", "grad", "alpha_bar_t"])
            out = expect_tensor(name, out, shape)
            e, gr, s = eps.double(), grad.double(), float(scale)
            ref = clip_guidance.guided_eps(e, gr, ab, s)
            mistakes = {
                "the gradient was added: to move *towards* higher CLIP scores, subtract it from eps "
                "(eps points towards the noise, away from the data)": e + s * (1 - ab).sqrt() * gr,
                "the factor sqrt(1 - alpha_bar_t) is missing (it turns a score into a noise direction)": e - s * gr,
                "sqrt(alpha_bar_t) was used; the factor is sqrt(1 - alpha_bar_t), the noise std at step t": e
                - s * ab.sqrt() * gr,
                "1 - alpha_bar_t without the sqrt: the factor is the noise standard deviation sqrt(1 - alpha_bar_t)": e
                - s * (1 - ab) * gr,
                "the scale is missing": e - (1 - ab).sqrt() * gr,
                "1 - sqrt(alpha_bar_t) where sqrt(1 - alpha_bar_t) belongs (the noise std at step t)": e
                - s * (1 - ab.sqrt()) * gr,
                "divided by sqrt(1 - alpha_bar_t): it multiplies (eps = -sqrt(1 - alpha_bar_t) * score)": e
                - s * gr / (1 - ab).sqrt(),
                "sqrt(1 - alpha_bar_t) divides the whole guided eps: only the gradient term is scaled by it": (
                    e - s * gr
                )
                * (1 - ab).sqrt(),
                "the gradient replaced eps_hat: guidance adds a correction to the model's eps_hat": -s
                * (1 - ab).sqrt()
                * gr,
                "the scale was applied to eps_hat too: eps_hat - scale * sqrt(1 - alpha_bar_t) * grad": s * e
                - s * (1 - ab).sqrt() * gr,
            }
            compare(
                name,
                out,
                ref,
                mistakes,
                tol=1e-5,
                context=f" for scale={scale:g}, shape {list(shape)}",
                reference=clip_guidance.guided_eps,
                args=(eps, grad, ab, float(scale)),
            )
    passed(name, f"scales {list(scales)}, seed {seed}")


# --- classifier guidance ----------------------------------------------------------------------------------


class ToyClassifier(nn.Module):
    """classifier(x [B,C,H,W], t int64 [B]) -> logits [B, K]: a seeded, noise-aware toy (a convolution, tanh, a
    pooled sum and a per-step embedding), nonlinear in x so that where the gradient is taken matters. It computes in
    its own dtype (x is cast), and checks its inputs as a real network would."""

    def __init__(self, channels: int, T: int, num_classes: int = 10, seed: int = 0, hidden: int = 8):
        super().__init__()
        g = generator(seed)
        self.conv = nn.Conv2d(channels, hidden, 3, padding=1)
        self.head = nn.Linear(hidden, num_classes)
        with torch.no_grad():
            for p in (self.conv.weight, self.conv.bias, self.head.weight, self.head.bias):
                p.copy_(torch.randn(p.shape, generator=g) * (0.8 if p.dim() > 1 else 0.3))
        self.t_emb = nn.Parameter(0.5 * torch.randn(T, hidden, generator=g))

    def forward(self, x, t):
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
            raise ValueError("classifier(x, t): x must be a float tensor [B, C, H, W]")
        if not isinstance(t, torch.Tensor) or t.dtype != torch.long or tuple(t.shape) != (x.shape[0],):
            raise ValueError(
                f"classifier(x, t): t must be an int64 tensor of shape [B] = [{x.shape[0]}] (one time step per image)"
            )
        if int(t.min()) < 0 or int(t.max()) >= self.t_emb.shape[0]:
            raise ValueError(
                f"classifier(x, t): t must be in 0..{self.t_emb.shape[0] - 1}, got {int(t.min())}..{int(t.max())}"
            )
        h = torch.tanh(self.conv(x.to(self.conv.weight.dtype)))  # [B, hidden, H, W]
        h = h.sum((2, 3)) / (h.shape[2] * h.shape[3]) ** 0.5 + self.t_emb[t]  # [B, hidden]
        return self.head(torch.tanh(h))  # [B, K]


_GRAD_HINTS = {
    "does not require grad": "autograd differentiates only with respect to a tensor that requires grad, and records "
    "nothing inside torch.no_grad(): make a detached copy of x_t that requires grad, call the classifier on that copy "
    "(inside torch.enable_grad()), and differentiate with respect to the copy",
    "not have been used in the graph": "differentiate with respect to the very tensor you gave the classifier (a copy "
    "made after the call is not in its graph)",
    "grad can be implicitly created only for scalar": "torch.autograd.grad needs one number: add up the chosen "
    "log-probabilities of the batch first (each image's gradient is still its own)",
    "index": "pick one entry per row: the log-probability of image i's own class y[i]",
}


def _grad_of(classifier, x, t, y, what="log_softmax", dim=1, reduce="sum", classes=None):
    """A candidate gradient in float64 (the catalogue of check_classifier_grad)."""
    with torch.enable_grad():
        xx = x.detach().double().requires_grad_(True)
        logits = classifier(xx, t).double()
        rows = torch.arange(len(y))
        cls = y if classes is None else classes(logits)
        if what == "log_softmax":
            v = torch.log_softmax(logits, dim)[rows, cls]
        elif what == "logit":
            v = logits[rows, cls]
        elif what == "softmax":
            v = torch.softmax(logits, dim)[rows, cls]
        elif what == "all classes":
            v = torch.log_softmax(logits, 1).sum(1)
        elif what == "cross_entropy":
            v = nn.functional.cross_entropy(logits, y, reduction=reduce)
        total = v if v.dim() == 0 else (v.mean() if reduce == "mean" else v.sum())
        (grad,) = torch.autograd.grad(total, xx)
    return grad


def check_classifier_grad(student_fn, *, seed: int = 0, sizes=((4, 1, 8, 8), (3, 2, 5, 6)), T: int = 50) -> None:
    """student_fn(classifier, x_t [B,C,H,W], t int64 [B], y int64 [B]) -> grad [B,C,H,W], the gradient of each image's
    log p(y | x_t, t) = log_softmax(classifier(x_t, t))[y] with respect to its pixels."""
    name = "check_classifier_grad"
    g = generator(seed)
    for n, shape in enumerate(sizes):
        shape = tuple(int(s) for s in shape)
        B = shape[0]
        classifier = ToyClassifier(shape[1], T, seed=seed * 100 + n).requires_grad_(False)
        x = torch.randn(shape, generator=g)
        t = spread_steps(B, T, g)
        y = torch.randint(0, 10, (B,), generator=g)
        if B > 1:
            y[0] = (y[1] + 1) % 10  # at least two classes in every batch
        out = call(name, student_fn, classifier, x, t, y, names=["classifier", "x_t", "t", "y"], hints=_GRAD_HINTS)
        out = expect_tensor(
            name,
            out,
            shape,
            shape_hints={
                (): "a single number: return the gradient with respect to x_t, one value per pixel",
                (B,): "one number per image: return the gradient with respect to x_t, one value per pixel",
                (B, 10): "these look like (log-)probabilities: return their gradient with respect to x_t",
            },
        )
        clf64 = copy.deepcopy(classifier).double()
        ref = guidance.classifier_grad(clf64, x.double(), t, y)
        G = lambda **kw: _grad_of(clf64, x, t, y, **kw)  # noqa: E731
        mistakes = {
            "the gradient of the logit of class y, not of its log-probability: take log_softmax of the logits first "
            "(the logit alone ignores the other classes)": G(what="logit"),
            "the gradient of the probability softmax(...)[y]; guidance follows the log-probability log_softmax(...)[y]": G(
                what="softmax"
            ),
            "log_softmax over the batch (dim 0); the classes are dim 1": G(dim=0),
            "the mean over the batch was differentiated: each image gets its own gradient, so add the "
            "log-probabilities up (the mean divides every gradient by B)": G(reduce="mean"),
            "the log-probabilities of all classes were added up: pick each image's own class y": G(what="all classes"),
            "the gradient of the mean cross-entropy loss: its sign is flipped (it is -log p) and it is divided by B": G(
                what="cross_entropy", reduce="mean"
            ),
            "the sign is flipped (the gradient of the cross-entropy loss -log p(y | x_t), say): the gradient of "
            "log p(y | x_t) points towards class y": -ref,
            "the class the classifier already predicts (argmax) was used; guidance pulls towards the wanted class y": G(
                classes=lambda lg: lg.argmax(1)
            ),
        }
        compare(
            name,
            out,
            ref,
            mistakes,
            tol=1e-5,
            context=f" for x_t of shape {list(shape)}",
            reference=lambda x_, t_, y_: guidance.classifier_grad(classifier, x_, t_, y_),
            args=(x, t, y),
        )
    passed(name, f"shapes {[list(s) for s in sizes]}, seed {seed}")


def _guided_variant(
    model,
    classifier,
    x_T,
    y,
    scale,
    timesteps,
    betas,
    alpha_bars,
    noises,
    *,
    order=None,
    sign=-1.0,
    factor="sqrt(1-ab)",
    model_t=None,
    grad_at_x_T=False,
    grad_once=False,
    mean_shift=False,
):
    """The guided loop with one thing changed, in float64 (the catalogue of check_classifier_guided_loop)."""
    S, B = len(timesteps), x_T.shape[0]
    x, grad = x_T, None
    for k in range(S - 1, -1, -1) if order is None else order:
        t = (timesteps[k] if model_t is None else model_t(k)).expand(B)
        kb = torch.full((B,), k)
        with torch.no_grad():
            eps = model(x, t, y)
        if grad is None or not grad_once:
            grad = guidance.classifier_grad(classifier, x_T if grad_at_x_T else x, t, y)
        ab = alpha_bars[kb].view(-1, *([1] * (x.dim() - 1)))
        coef = {
            "sqrt(1-ab)": (1 - ab).sqrt(),
            "1": torch.ones_like(ab),
            "sqrt(ab)": ab.sqrt(),
            "1-ab": 1 - ab,
            "1/sqrt(1-ab)": 1 / (1 - ab).sqrt(),
        }[factor]
        if mean_shift:  # Algorithm 1: the mean moves by s * Sigma * g
            ab_prev = torch.where(kb > 0, alpha_bars[(kb - 1).clamp(min=0)], torch.ones_like(alpha_bars[kb]))
            var = ((1 - ab_prev) / (1 - alpha_bars[kb]) * betas[kb]).view_as(ab)
            x = samplers.p_sample_step(x, kb, eps, betas, alpha_bars, noises[k]) + scale * var * grad
        else:
            x = samplers.p_sample_step(x, kb, eps + sign * scale * coef * grad, betas, alpha_bars, noises[k])
    return x


class SteadyModel(SamplingModel):
    """Lab 05's toy noise predictor plus sqrt(1 - alpha_bar_t) x, the exact noise prediction for data ~ N(0, I):
    with it the chain keeps x near unit size (the toy alone lets x grow by 1 / sqrt(alpha_bar) over the chain, and
    float32 rounding would then hide the guidance)."""

    def __init__(self, channels: int, T: int, seed: int = 0):
        super().__init__(channels, T, seed=seed)
        self.register_buffer("alpha_bars", make_schedule("linear", T).alpha_bars.float())

    def forward(self, x, t, y):
        toy = super().forward(x, t, y)  # checks the inputs
        ab = self.alpha_bars.to(x.dtype)[t].view(-1, *([1] * (x.dim() - 1)))  # [B, 1, 1, 1]
        return (1 - ab).sqrt() * x + 0.2 * toy


def guided_case(shape, T, steps, seed, g):
    """(model, classifier, x_T, y, timesteps, betas, alpha_bars, noises): lab 05's sampling problem (``loop_case``)
    with a steadier model, labels of real classes (0..9) and a toy classifier."""
    _, x_T, _, timesteps, betas, alpha_bars, noises = loop_case(shape, T, steps, seed, g)
    model = SteadyModel(shape[1], T, seed=seed).requires_grad_(False)
    y = torch.randint(0, 10, (shape[0],), generator=g)
    classifier = ToyClassifier(shape[1], T, seed=seed + 7).requires_grad_(False)
    return model, classifier, x_T, y, timesteps, betas, alpha_bars, noises


def check_classifier_guided_loop(
    student_fn, *, seed: int = 0, sizes=((3, 1, 6, 6), (2, 2, 5, 4)), T: int = 30, steps=(None, 6), scales=(3.0,)
) -> None:
    """student_fn(model, classifier, x_T [B,C,H,W], y int64 [B], scale: float, timesteps int64 [S], betas [S],
    alpha_bars [S], noises [S,B,C,H,W]) -> x_0 [B,C,H,W]: lab 05's loop with the classifier-guided eps, on the full
    chain (steps None) and on respaced sub-chains of the given lengths."""
    name = "check_classifier_guided_loop"
    g = generator(seed)
    for n, shape in enumerate(sizes):
        shape = tuple(int(s) for s in shape)
        for S in steps:
            for scale in scales:
                model, classifier, x_T, y, timesteps, betas, alpha_bars, noises = guided_case(
                    shape, T, S, seed * 100 + n, g
                )
                args = (model, classifier, x_T, y, float(scale), timesteps, betas, alpha_bars, noises)
                context = f" for x_T of shape {list(shape)}, scale {scale:g}, " + (
                    f"the full chain of T={T} steps" if S is None else f"a respaced chain of {S} steps"
                )
                out = call(
                    name,
                    student_fn,
                    *args,
                    hints={**_GRAD_HINTS, **LOOP_HINTS},
                    names=["model", "classifier", "x_T", "y", "scale", "timesteps", "betas", "alpha_bars", "noises"],
                )
                out = expect_tensor(
                    name,
                    out,
                    shape,
                    shape_hints={(len(timesteps),) + shape: "that is one image per step: return only the last x (x_0)"},
                )
                model64, clf64 = copy.deepcopy(model).double(), copy.deepcopy(classifier).double()
                wide = (model64, clf64, x_T.double(), y, float(scale), timesteps, betas, alpha_bars, noises.double())
                ref = samplers.classifier_guided_loop(*wide)
                S_ = len(timesteps)

                def V(**change):
                    return _guided_variant(*wide, **change)

                def V2(**change):  # an unstable wrong loop: float64 and float32 (the student's) differ, so both
                    return V(**change), _guided_variant(*args, **change).double()

                def mistakes():  # a whole loop each: built only for a wrong answer
                    return {
                        "no guidance: the result is lab 05's plain loop; at every step subtract "
                        "scale * sqrt(1 - alpha_bar) * g from eps_hat": samplers.sample_loop(
                            model64, wide[2], y, timesteps, betas, alpha_bars, wide[8]
                        ),
                        "the guidance was added to eps_hat; it is subtracted (guided_eps), so that x moves towards "
                        "class y": V(sign=1.0),
                        "the factor sqrt(1 - alpha_bar) is missing from the guidance term": V(factor="1"),
                        "sqrt(alpha_bar) where sqrt(1 - alpha_bar) belongs": V(factor="sqrt(ab)"),
                        "1 - alpha_bar without the sqrt: the factor is sqrt(1 - alpha_bar)": V(factor="1-ab"),
                        "divided by sqrt(1 - alpha_bar): the guidance term multiplies by it": V(factor="1/sqrt(1-ab)"),
                        "the mean was shifted by scale * sigma^2 * g (Algorithm 1); this lab guides the noise "
                        "prediction (eps form, Algorithm 2): eps_hat - scale * sqrt(1 - alpha_bar) * g": V(
                            mean_shift=True
                        ),
                        "the model and the classifier were given the chain's step k; they see the real time step "
                        "timesteps[k]": V(model_t=lambda k: torch.tensor(k)),
                        "the gradient was taken at x_T at every step: take it at the current x": V(grad_at_x_T=True),
                        "the gradient was computed once: it changes with x and t, so compute it at every step": V(
                            grad_once=True
                        ),
                        "the loop runs forwards (k = 0, 1, ...): sampling starts at the last step, k = S-1": V2(
                            order=range(S_)
                        ),
                        "the loop stops before the last step k = 0": V(order=range(S_ - 1, 0, -1)),
                    }

                try:
                    # floor 1e-3: the guided chain amplifies rounding (the gradient of a tanh network, fed back), so
                    # two correct float32 loops that add in another order differ by up to ~1e-4; every mistake
                    # below moves x by 0.1 or more
                    compare_loop(
                        name,
                        out,
                        ref,
                        mistakes,
                        context=context,
                        reference=samplers.classifier_guided_loop,
                        args=args,
                        tol=1e-3,
                    )
                except AssertionError as exc:
                    if getattr(exc, "mistake", None):
                        raise
                    deterministic(name, student_fn, args, out)
                    fail(
                        name,
                        f"{str(exc).split(': ', 1)[1]}\n  (your loop runs your classifier_grad and guided_eps: "
                        "if their checks failed above, fix those first)",
                    )
    passed(
        name,
        f"shapes {[list(s) for s in sizes]}, T={T}, chains {['full' if s is None else s for s in steps]}, "
        f"scales {list(scales)}, seed {seed}",
    )
