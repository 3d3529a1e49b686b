"""Checks for lab 05 (sampling). Reference: ``labkit.samplers.p_sample_step`` (the step of ``sample_ddpm``), in float64.

    check_p_sample_step(p_sample_step)   one ancestral step of Ho et al. 2020, Algorithm 2 (line 4):

        x_{t-1} = 1/sqrt(alpha_t) * (x_t - beta_t / sqrt(1 - alpha_bar_t) * eps_hat) + sigma_t * z
        sigma_t^2 = beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) * beta_t,   alpha_bar_{-1} = 1

    The lab uses sigma_t^2 = beta_tilde_t (the posterior variance, eq. 7; the same as labkit's sampler),
    not the other choice sigma_t^2 = beta_t that the paper also allows. With beta_tilde the variance of
    the last step (t = 0 in code) is exactly 0: no noise is added there.

    check_sample_loop(sample_loop)       the whole loop of Algorithm 2 around the student's p_sample_step:

        for k = S-1, ..., 0:   x = p_sample_step(x, k, model(x, timesteps[k], y), betas, alpha_bars, noises[k])

    Graded on a model the check names (``SamplingModel``: lab 04's seeded toy noise predictor, which also
    checks its inputs as a real network needs them), with the noise given, so only tensors come back.

Also here: ``lab_model`` (from ``labkit.checks.fixtures``), the model labs 05-08 sample from.
"""

from __future__ import annotations

import copy

import torch

from labkit import samplers, schedules
from labkit.evaluation import measures
from labkit.checks._common import (
    model_index,
    model_x,
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
from labkit.checks.fixtures import lab04_checkpoint, lab_model, trained_model  # noqa: F401  (the labs' model)
from labkit.checks.lab04_training import ToyEpsModel


def _random_betas(T: int, g: torch.Generator) -> torch.Tensor:
    return 1e-3 + 0.05 * torch.rand(T, generator=g, dtype=torch.float64)  # [T] in (1e-3, 0.051)


def _form(v: torch.Tensor, ndim: int) -> torch.Tensor:
    return v.view(-1, *([1] * (ndim - 1)))  # [B] -> [B, 1, 1, 1]


def _step(x, t, eps, z, betas, ab, ab_prev, var, noise_at_0=False, mean_coef=None):
    """A candidate answer in float64: mean of eq. 11 plus sqrt(var) * z (var [B])."""
    nd = x.dim()
    b, a = _form(betas[t], nd), _form(ab[t], nd)
    alpha = 1 - b
    if mean_coef is None:
        mean = (x - b / (1 - a).sqrt() * eps) / alpha.sqrt()
    else:
        mean = mean_coef(x, eps, b, a, alpha)
    v = _form(var, nd)
    if not noise_at_0:
        v = torch.where(_form(t, nd) == 0, torch.zeros_like(v), v)
    return mean + v.sqrt() * z


def check_p_sample_step(student_fn, *, seed: int = 0, sizes=((6, 1, 28, 28), (4, 2, 5, 3)), T: int = 20) -> None:
    """student_fn(x_t [B,C,H,W], t int64 [B], eps_hat [B,C,H,W], betas [T], alpha_bars [T], z [B,C,H,W])
    -> x_{t-1} [B,C,H,W]. Every batch holds t = 0 (the last step), t = 1 (where beta_tilde and beta differ most), T - 1 and a
    middle step, as far as B allows."""

    def reference(x_t, t, eps_hat, betas, alpha_bars, z):  # labkit's step, in float64
        return samplers.p_sample_step(
            x_t.double(), t, eps_hat.double(), betas.double(), alpha_bars.double(), z.double()
        )

    name = "check_p_sample_step"
    g = generator(seed)
    for shape in sizes:
        shape = tuple(int(s) for s in shape)
        B = shape[0]
        betas = _random_betas(T, g)
        ab = torch.cumprod(1 - betas, 0)
        t = spread_steps(B, T, g, also=(1,))  # 0 (the last step), 1 (beta_tilde and beta differ most), T - 1, ...
        x = torch.randn(shape, generator=g)
        eps = torch.randn(shape, generator=g)
        z = torch.randn(shape, generator=g)
        out = call(name, student_fn, x, t, eps, betas, ab, z, names=["x_t", "t", "eps_hat", "betas", "alpha_bars", "z"])
        out = expect_tensor(
            name,
            out,
            shape,
            shape_hints={
                (B,) + shape: "a per-image value was broadcast against the batch the wrong way: reshape "
                "betas[t] and alpha_bars[t] to [B, 1, 1, 1] with .view(-1, 1, 1, 1)",
            },
        )
        ref = reference(x, t, eps, betas, ab, z)

        xd, ed, zd = x.double(), eps.double(), z.double()
        ab_prev = torch.where(t > 0, ab[(t - 1).clamp(min=0)], torch.ones_like(ab[t]))
        tilde = (1 - ab_prev) / (1 - ab[t]) * betas[t]
        wrap_prev = ab[t - 1]  # t = 0 -> ab[-1], Python's "last element"
        wrap_tilde = (1 - wrap_prev) / (1 - ab[t]) * betas[t]
        nxt_prev = ab[(t + 1).clamp(max=T - 1)]
        S = lambda var, **kw: _step(xd, t, ed, zd, betas, ab, ab_prev, var, **kw)  # noqa: E731
        mistakes = {
            "the variance was used as the standard deviation: the noise term is sigma_t * z with "
            "sigma_t = sqrt(beta_tilde_t), not beta_tilde_t * z": _step(xd, t, ed, zd, betas, ab, ab_prev, tilde**2),
            "alpha_bar_{t-1} at t = 0 is alpha_bars[-1] in your code (Python wraps negative indices to the "
            "last element); alpha_bar_{-1} = 1 by definition, so the last step adds no noise": S(
                wrap_tilde, noise_at_0=True
            ),
            "sigma_t^2 = beta_t: either alpha_bars[t] was used where alpha_bar_{t-1} = alpha_bars[t-1] belongs "
            "(off by one), or you chose the paper's other variance; this lab uses "
            "beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) * beta_t": S(betas[t].clone()),
            "sigma_t^2 = beta_t (and noise at t = 0): either alpha_bars[t] was used where alpha_bar_{t-1} = "
            "alpha_bars[t-1] belongs (off by one), or you chose the paper's other variance; this lab uses "
            "beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) * beta_t, which is 0 at t = 0": S(
                betas[t].clone(), noise_at_0=True
            ),
            "off by one: alpha_bars[t + 1] was used for alpha_bar_{t-1}; the previous step is t - 1": S(
                (1 - nxt_prev) / (1 - ab[t]) * betas[t]
            ),
            "noise was added at t = 0: the last step returns the mean only (sigma_0 = 0)": S(
                betas[t].clone().where(t == 0, tilde), noise_at_0=True
            ),
            "no noise was added: x_{t-1} = mean + sigma_t * z for t > 0": S(torch.zeros_like(tilde)),
            "the mean divides by sqrt(alpha_bar_t) instead of sqrt(alpha_t) = sqrt(1 - beta_t)": S(
                tilde, mean_coef=lambda x_, e, b, a, al: (x_ - b / (1 - a).sqrt() * e) / a.sqrt()
            ),
            "the mean divides by alpha_t = 1 - beta_t; it divides by its square root sqrt(alpha_t)": S(
                tilde, mean_coef=lambda x_, e, b, a, al: (x_ - b / (1 - a).sqrt() * e) / al
            ),
            "the mean multiplies by sqrt(alpha_t); it divides: 1/sqrt(alpha_t) * (x_t - ...)": S(
                tilde, mean_coef=lambda x_, e, b, a, al: al.sqrt() * (x_ - b / (1 - a).sqrt() * e)
            ),
            "the eps coefficient lacks its sqrt: beta_t / sqrt(1 - alpha_bar_t), not beta_t / (1 - alpha_bar_t)": S(
                tilde, mean_coef=lambda x_, e, b, a, al: (x_ - b / (1 - a) * e) / al.sqrt()
            ),
            "the eps coefficient is sqrt(1 - alpha_bar_t) (that is the x0 formula); the mean uses "
            "beta_t / sqrt(1 - alpha_bar_t)": S(
                tilde, mean_coef=lambda x_, e, b, a, al: (x_ - (1 - a).sqrt() * e) / al.sqrt()
            ),
            "eps_hat is added to x_t; it is subtracted: x_t - beta_t / sqrt(1 - alpha_bar_t) * eps_hat": S(
                tilde, mean_coef=lambda x_, e, b, a, al: (x_ + b / (1 - a).sqrt() * e) / al.sqrt()
            ),
            "the same step t[0] for every image: index betas / alpha_bars with the whole tensor t": reference(
                x, t[:1].expand(B), eps, betas, ab, z
            ),
            "sigma_t^2 = beta_tilde_t uses alpha_bar_t and alpha_bar_{t-1} the other way round: "
            "(1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) * beta_t": S(
                ((1 - ab[t]) / (1 - ab_prev) * betas[t]).where(t > 0, torch.zeros_like(tilde))
            ),
            "the noise is sqrt(1 - alpha_bar_t) * z (the forward process' std); the reverse step adds sigma_t * z "
            "with sigma_t^2 = beta_tilde_t": S(1 - ab[t]),
            "z was added unscaled: the noise term is sigma_t * z": S(torch.ones_like(tilde)),
            "the mean is x0_hat (the prediction of the clean image), not the posterior mean of eq. 11": S(
                tilde, mean_coef=lambda x_, e, b, a, al: (x_ - (1 - a).sqrt() * e) / a.sqrt()
            ),
        }
        context = f" for x_t of shape {list(shape)}"
        try:
            compare(
                name,
                out,
                ref,
                mistakes,
                tol=1e-4,
                context=context,
                reference=samplers.p_sample_step,
                args=(x, t, eps, betas, ab, z),
                where=("t", t),
            )
        except AssertionError as exc:
            if "This looks like" in str(exc) and "edge case" not in str(exc):
                raise  # named; an edge case at t = 0 gets the more precise message below
            deterministic(name, student_fn, (x, t, eps, betas, ab, z), out)
            # Which images are wrong: the last step (t = 0) alone, or the others?
            per = (out.double() - ref).abs().flatten(1).amax(1)  # [B]
            bad0, bad_rest = bool(per[t == 0].max() > 1e-4), bool((per[t > 0] > 1e-4).any()) if B > 1 else False
            if bad0 and not bad_rest:
                diff0 = out.double()[t == 0] - ref[t == 0]
                extra = " (it looks like noise was added there)" if max_abs_diff(diff0, diff0 * 0) > 1e-3 else ""
                fail(
                    name,
                    f"wrong values{context} only at t = 0, the last step{extra}: there "
                    "alpha_bar_{t-1} = 1, so sigma_0 = 0 and the step returns the mean only. "
                    "Beware alpha_bars[t - 1] at t = 0: it is alpha_bars[-1], the *last* element",
                )
            if bad_rest and not bad0:
                fail(
                    name,
                    f"wrong values{context} for t > 0 although t = 0 is right: check sigma_t "
                    "(sqrt of beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) * beta_t) and that "
                    "z, not a new random tensor, is used",
                )
            raise
    passed(name, f"shapes {[list(s) for s in sizes]}, T={T}, seed {seed}")


# --- the sampling loop ---------------------------------------------------------------------------------


class SamplingModel(ToyEpsModel):
    """model(x [B,C,H,W], t [B], y [B]) -> eps_hat: lab 04's seeded toy noise predictor, strict about its inputs
    as a real network is (a float tensor x of its own dtype, int64 t and y of shape [B] in range), with a
    message that says which input is wrong. The loop checks of labs 05 and 07 sample from it."""

    def forward(self, x, t, y):
        B = model_x(x, self.conv.weight.dtype, "x_T", "betas and alpha_bars are float64")
        model_index(
            "t", t, B, self.t_emb.shape[0], "one time step per image", " (t.expand(B) or torch.full((B,), ...))"
        )
        model_index("y", y, B, self.y_emb.shape[0], "one label per image")
        return super().forward(x, t, y)


def loop_case(shape, T: int, steps: int | None, seed: int, g: torch.Generator):
    """One sampling problem: (model, x_T, y, timesteps, betas, alpha_bars, noises) on a linear T-step schedule;
    steps=None is the full chain (timesteps = 0..T-1), else a random sub-chain of that many steps with t = 0 in
    it and its respaced betas / alpha_bars (the model sees the real t, p_sample_step the chain's k)."""
    schedule = schedules.make_schedule("linear", T)
    if steps is None:
        timesteps = torch.arange(T)
    else:
        later = 1 + torch.randperm(T - 1, generator=g)[: steps - 1]  # steps - 1 distinct steps in 1..T-1
        timesteps = torch.cat([torch.zeros(1, dtype=torch.long), later]).sort().values  # [S] ascending, from 0
    betas, alpha_bars = samplers.respaced(schedule, timesteps.flip(0))  # [S] each; the schedule itself when full
    model = SamplingModel(shape[1], T, seed=seed).requires_grad_(False)
    x_T = torch.randn(shape, generator=g)
    y = torch.randint(0, 11, (shape[0],), generator=g)
    noises = torch.randn((len(timesteps),) + tuple(shape), generator=g)
    return model, x_T, y, timesteps, betas, alpha_bars, noises


@torch.no_grad()
def _ancestral(
    model,
    x_T,
    y,
    timesteps,
    betas,
    alpha_bars,
    noises,
    *,
    order=None,
    model_t=None,
    noise_of=None,
    from_x_T=False,
    eps_once=False,
):
    """The loop with one thing changed (the catalogue of loop mistakes); labkit's step does the maths."""
    S, B = len(timesteps), x_T.shape[0]
    x, eps = x_T, None
    for k in range(S - 1, -1, -1) if order is None else order:
        t = (timesteps[k] if model_t is None else model_t(k)).expand(B)
        source = x_T if from_x_T else x
        if eps is None or not eps_once:
            eps = model(source, t, y)
        z = noises[k if noise_of is None else noise_of(k)]
        x = samplers.p_sample_step(source, torch.full((B,), k), eps, betas, alpha_bars, z).to(x_T.dtype)
    return x


def compare_loop(check, out, ref, mistakes, *, context, reference, args, tol=1e-5):
    """``compare`` for a whole loop: the catalogue (a function returning it, each entry a loop of its own) is
    built only when the answer is wrong."""
    try:
        compare(check, out, ref, {}, tol=tol, context=context, reference=reference, args=args)
    except AssertionError:
        compare(check, out, ref, mistakes(), tol=tol, context=context, reference=reference, args=args)


_CHAIN_INDEX = (
    "an index is out of range: p_sample_step takes the chain's step k = S-1, ..., 0 (an index into betas "
    "and alpha_bars, which have S entries); the model takes the real time step timesteps[k]"
)
LOOP_HINTS = {  # keys other than _common.COMMON_HINTS' own, which would replace them
    "out of bounds for dimension": _CHAIN_INDEX,
    "index out of range in self": _CHAIN_INDEX,
}


def check_sample_loop(
    student_fn, *, seed: int = 0, sizes=((3, 1, 6, 6), (2, 2, 5, 4)), T: int = 40, steps=(None, 6)
) -> None:
    """student_fn(model, x_T [B,C,H,W], y int64 [B], timesteps int64 [S], betas [S], alpha_bars [S],
    noises [S,B,C,H,W]) -> x_0 [B,C,H,W]: Algorithm 2 around the student's p_sample_step. For each shape, the
    full chain of a linear T-step schedule (steps None) and random sub-chains (respaced) of the given lengths."""
    name = "check_sample_loop"
    g = generator(seed)
    for n, shape in enumerate(sizes):
        shape = tuple(int(s) for s in shape)
        for S in steps:
            args = loop_case(shape, T, S, seed * 100 + n, g)
            model, x_T, y, timesteps, betas, alpha_bars, noises = args
            context = f" for x_T of shape {list(shape)}, " + (
                f"the full chain of T={T} steps" if S is None else f"a respaced chain of {S} steps"
            )
            out = call(
                name,
                student_fn,
                *args,
                hints=LOOP_HINTS,
                names=["model", "x_T", "y", "timesteps", "betas", "alpha_bars", "noises"],
            )
            out = expect_tensor(
                name,
                out,
                shape,
                shape_hints={
                    (len(timesteps),) + shape: "that is one image per step: return only the last x (x_0)",
                    (len(timesteps) + 1,) + shape: "that is one image per step: return only the last x (x_0)",
                },
            )
            model64 = copy.deepcopy(model).double()
            wide = (model64, x_T.double(), y, timesteps, betas, alpha_bars, noises.double())
            ref = samplers.sample_loop(*wide)
            S_ = len(timesteps)

            def V(**change):
                return _ancestral(*wide, **change)

            def mistakes():  # a whole loop each: built only for a wrong answer
                null = _ancestral(model64, wide[1], torch.full_like(y, 10), *wide[3:])  # every image told "no class"
                # Label dropout copied from training: some images sampled with "no class", the others with y.
                closer_to_null = (out.double() - null).flatten(1).abs().amax(1) < (out.double() - ref).flatten(
                    1
                ).abs().amax(1)
                dropped = torch.where(closer_to_null[:, None, None, None], null, ref)  # [B, C, H, W]
                some = (
                    {}
                    if closer_to_null.all() or not closer_to_null.any()
                    else {
                        "some images were sampled with the label 'no class' (10), the others with their own: label dropout "
                        "belongs to training (lab 04), where it teaches the model the unconditional case; at sampling "
                        "every image keeps its label y": dropped
                    }
                )
                return {
                    "the loop runs forwards (k = 0, 1, ...): sampling starts from noise at the last step, k = S-1, "
                    "and walks down to k = 0": V(order=range(S_)),
                    "the loop stops before the last step k = 0: it must run k = S-1, ..., 1, 0 (range(S - 1, -1, -1)), "
                    "since the step at k = 0 turns x_0's noisy version into the clean image": V(
                        order=range(S_ - 1, 0, -1)
                    ),
                    "the loop skips its first step k = S-1: it runs k = S-1, ..., 0, S steps in all": V(
                        order=range(S_ - 2, -1, -1)
                    ),
                    "the model was given the chain's step k; it must see the real time step timesteps[k] (they differ "
                    "when the chain skips steps)": V(model_t=lambda k: torch.tensor(k)),
                    "the same noise at every step (noises[0]): step k uses its own z = noises[k]": V(
                        noise_of=lambda k: 0
                    ),
                    "the same noise at every step (noises[-1]): step k uses its own z = noises[k]": V(
                        noise_of=lambda k: S_ - 1
                    ),
                    "the noise was taken in the order of the loop (noises[0] on the first step): step k uses "
                    "noises[k]": V(noise_of=lambda k: S_ - 1 - k),
                    "every step starts again from x_T: x must be updated (x = p_sample_step(x, ...)) so that each step "
                    "starts where the previous one ended": V(from_x_T=True),
                    "the model was called once, before the loop: eps_hat changes with x and t, so call it at every "
                    "step": V(eps_once=True),
                    "the model was told 'no class' (y = 10): give it the labels y": null,
                    **some,
                }

            try:
                compare_loop(name, out, ref, mistakes, context=context, reference=samplers.sample_loop, args=args)
            except AssertionError as exc:
                if getattr(exc, "mistake", None):  # a named mistake says it all
                    raise
                deterministic(name, student_fn, args, out)
                fail(
                    name,
                    f"{str(exc).split(': ', 1)[1]}\n  (your loop runs your p_sample_step: if "
                    "check_p_sample_step failed above, fix that first)",
                )
    passed(
        name,
        f"shapes {[list(s) for s in sizes]}, T={T}, chains {['full' if s is None else s for s in steps]}, seed {seed}",
    )


# --- respacing: the chain's own schedule ---------------------------------------------------------------


def _pair(check: str, out, what: str):
    if isinstance(out, torch.Tensor) or not isinstance(out, (tuple, list)) or len(out) != 2:
        fail(
            check,
            f"return two tensors, ({what}); got {type(out).__name__}"
            + (f" of length {len(out)}" if isinstance(out, (tuple, list)) else ""),
        )
    return out


def respaced_case(kind: str, T: int, S: int | None, g: torch.Generator):
    """(schedule, grid): a T-step schedule and a descending grid of S of its steps ending at 0 (None: all T)."""
    schedule = schedules.make_schedule(kind, T)
    if S is None:
        return schedule, torch.arange(T - 1, -1, -1)
    later = 1 + torch.randperm(T - 1, generator=g)[: S - 1]  # S - 1 distinct steps in 1..T-1
    return schedule, torch.cat([later.sort(descending=True).values, torch.zeros(1, dtype=torch.long)])


def check_respaced(student_fn, *, seed: int = 0, cases=(("linear", 50, 6), ("cosine", 30, 4), ("cosine", 12, None))):
    """student_fn(schedule, grid int64 [S] descending) -> (betas [S], alpha_bars [S]): the schedule seen only at
    the grid's steps (Nichol & Dhariwal 2021, sec. 4), in ascending order of t; reference ``samplers.respaced``."""
    name = "check_respaced"
    g = generator(seed)
    for kind, T, S in cases:
        schedule, grid = respaced_case(kind, int(T), None if S is None else int(S), g)
        S_ = len(grid)
        out = _pair(name, call(name, student_fn, schedule, grid, names=["schedule", "grid"]), "betas, alpha_bars")
        ref_b, ref_ab = samplers.respaced(schedule, grid)
        context = f" for a {kind} schedule of T={T} steps and a grid of {S_} steps"
        hints = {
            (
                int(T),
            ): "one value per step of the *schedule*: the chain has one per visited step, [S] (index with the grid)",
            (
                S_ - 1,
            ): "one value short: the first visited step also has its beta (alpha_bar before it is 1, clean data)",
            (S_ + 1,): "one value too many: one beta and one alpha_bar per visited step",
        }
        ascending = grid.flip(0)
        ab_desc = schedule.alpha_bars[grid]  # the grid's order
        own = schedule.alpha_bars[ascending]

        def from_prev(prev):  # betas for a given "previous alpha_bar" [S]
            return 1 - own / prev

        first_one = torch.cat([own.new_ones(1), own[:-1]])
        ab = expect_tensor(name, out[1], (S_,), what="alpha_bars", shape_hints=hints)
        compare(
            name,
            ab,
            ref_ab,
            {
                "alpha_bars are in the grid's order (descending t): step k of the chain is the k-th *smallest* "
                "visited t, so flip the grid first": ab_desc,
                "alpha_bars are the cumulative product of the grid's own betas: the chain's alpha_bar at a visited "
                "step is the schedule's alpha_bar there, which already holds the skipped steps": torch.cumprod(
                    1 - schedule.betas[ascending], 0
                ),
                "you returned (alpha_bars, betas): the order is (betas, alpha_bars)": ref_b,
                "these are the betas of the schedule at the visited steps, not its alpha_bars": schedule.betas[
                    ascending
                ],
            },
            tol=1e-9,
            context=context + " (alpha_bars)",
        )
        b = expect_tensor(name, out[0], (S_,), what="betas", shape_hints=hints)
        compare(
            name,
            b,
            ref_b,
            {
                "these are the schedule's own betas at the visited steps: a beta of the chain adds the noise of "
                "all the skipped steps together, 1 - alpha_bar_k / alpha_bar_{k-1} with the chain's alpha_bars": schedule.betas[
                    ascending
                ],
                "alpha_bar_{k-1} was read from the whole schedule (t - 1): the previous step of the chain is the previous "
                "*visited* step, alpha_bars[k - 1] of the chain": 1 - own / schedule.alpha_bars_prev[ascending],
                "the ratio is upside down: beta_k = 1 - alpha_bar_k / alpha_bar_{k-1} (the later, smaller alpha_bar on "
                "top)": 1 - first_one / own,
                "a difference, not a ratio: alpha_bar is a product, so beta_k = 1 - alpha_bar_k / alpha_bar_{k-1}": first_one
                - own,
                "the first beta used the last alpha_bar as its previous one (torch.roll or index -1 wraps around): "
                "before the first visited step alpha_bar is 1, clean data": from_prev(torch.roll(own, 1)),
                "the first beta is 0: before the first visited step alpha_bar is 1 (clean data), so beta_0 = "
                "1 - alpha_bars[0]": torch.cat([own.new_zeros(1), (1 - own[1:] / own[:-1])]),
                "the betas are in the grid's order (descending t): flip the grid first": ref_b.flip(0),
                "1 - alpha_bar_k: that is the total noise variance at the step, not what the step adds": 1 - own,
            },
            tol=1e-9,
            context=context + " (betas)",
        )
    passed(name, f"cases {[list(c) for c in cases]}, seed {seed}")


# --- when does a digit become recognisable: the "stays above" measure ---------------------------------------


def _curve_cases(g: torch.Generator, steps: int, threshold: float):
    """ts int64 [steps] (descending, unevenly spaced, ending at 0) and confidence curves [steps] (float32), each
    built to catch a different wrong measure."""
    later = 1 + torch.randperm(999, generator=g)[: steps - 1]
    ts = torch.cat([later.sort(descending=True).values, torch.zeros(1, dtype=torch.long)])  # [steps]
    lo, hi = threshold, 1 - threshold

    def below(m):  # m values in [0, threshold)
        return threshold * (0.1 + 0.8 * torch.rand(m, generator=g, dtype=torch.float64))

    def above(m):  # m values in (threshold, 1]
        return threshold + hi * (0.1 + 0.9 * torch.rand(m, generator=g, dtype=torch.float64))

    k = int(torch.randint(steps // 3, 2 * steps // 3, (1,), generator=g))
    rise = torch.cat([below(k), above(steps - k)])  # crosses at step k and stays
    lucky = rise.clone()
    lucky[0], lucky[1] = above(1)[0], above(1)[0]  # the judge's bias on noise, a lucky early value
    exact = rise.clone()
    exact[k] = lo  # exactly at the threshold: it counts (>=)
    dip = rise.clone()
    dip[-2] = below(1)[0]  # falls below late, then back above at the last step
    never = rise.clone()
    never[-1] = below(1)[0]  # the last step below: never recognisable
    cases = [
        ("rising", rise),
        ("a lucky early value", lucky),
        ("a value exactly at the threshold", exact),
        ("a late dip", dip),
        ("ending below", never),
        ("always above", above(steps)),
    ]
    return ts, [(label, c.float()) for label, c in cases]


def check_t_from(student_fn, *, seed: int = 0, steps: int = 12, threshold: float = 0.5) -> None:
    """student_fn(curve [steps], ts int64 [steps] descending, threshold) -> the t from which the curve stays
    >= threshold to the end (int or int64 0-d tensor), -1 when the last value is below it;
    reference ``labkit.evaluation.measures.t_from``."""
    name = "check_t_from"
    g = generator(seed)
    ts, cases = _curve_cases(g, int(steps), float(threshold))
    n = len(ts)
    for label, curve in cases:
        out = call(name, student_fn, curve, ts, float(threshold), names=["curve", "ts"])
        if out is None:
            fail(name, "the result is None: return the time step, and -1 when the curve ends below the threshold")
        if (
            isinstance(out, bool)
            or not isinstance(out, (int, torch.Tensor))
            or (
                isinstance(out, torch.Tensor)
                and (out.numel() != 1 or out.is_floating_point() or out.dtype == torch.bool)
            )
        ):
            fail(
                name,
                f"return one integer time step t (an int or a 0-d int64 tensor), got {type(out).__name__}"
                + (f" {out.dtype} of shape {list(out.shape)}" if isinstance(out, torch.Tensor) else ""),
            )
        got = int(out)
        ref = float(measures.t_from(curve, ts, threshold))  # labkit's answer
        if got == ref:
            continue
        up = (curve >= threshold).tolist()
        stay_k = int(measures.recognisable_from(curve[:, None], threshold)[0])
        wrong = {  # the first that matches is named: "never" first where the answer is -1
            **(
                {"when even the last value is below the threshold the answer is -1 (never recognisable)": int(ts[-1])}
                if ref == -1
                else {}
            ),
            "that is the *first* step at which the curve reaches the threshold; it must stay at or above it to "
            "the end (a lucky early value, or a judge that calls noise a digit, would count otherwise)": next(
                (int(ts[j]) for j in range(n) if up[j]), -1
            ),
            "that is the last step *below* the threshold: the answer is the step after it": next(
                (int(ts[j]) for j in range(n - 1, -1, -1) if not up[j]), -1
            ),
            "an index into the steps, not the time step: read the t of that step from ts": stay_k,
            "the threshold counts as reached when the curve equals it (>=, not >)": int(
                measures.t_from(torch.where(curve == threshold, curve - 1, curve), ts, threshold)
            ),
            "the curve was read from the end: row 0 is the first sampling step (pure noise), t = ts[0]": int(
                measures.t_from(curve.flip(0), ts, threshold)
            ),
        }
        named = [m for m, v in wrong.items() if v == got and v != ref]
        where = f" for a curve with {label} (threshold {threshold:g}, {n} steps, t = {int(ts[0])} ... {int(ts[-1])})"
        if named:
            fail(
                name,
                f"wrong time step{where}: got {got}. This looks like a known mistake: {named[0]}",
                mistake=named[0],
            )
        fail(
            name,
            f"wrong time step{where}: got {got}, expected {ref:g}. Where the curve is at or above the threshold: "
            + "".join("1" if a else "0" for a in up)
            + " (first sampling step on the left)",
        )
    passed(name, f"{len(cases)} curves of {n} steps, threshold {threshold:g}, seed {seed}")


# --- the choice of variance ------------------------------------------------------------------------------------


def check_sigma_squared(student_fn, *, seed: int = 0, Ts=(20, 7), kinds=("beta_tilde", "beta")) -> None:
    """student_fn(betas [T], alpha_bars [T], kind) -> sigma_t^2 [T]: "beta_tilde" (Ho et al. 2020, eq. 7) or
    "beta" (section 3.2's other choice); reference ``samplers.sigma_squared``."""
    name = "check_sigma_squared"
    g = generator(seed)
    for T in Ts:
        T = int(T)
        betas = _random_betas(T, g)
        ab = torch.cumprod(1 - betas, 0)
        for kind in kinds:
            out = call(name, student_fn, betas, ab, kind, names=["betas", "alpha_bars"])
            out = expect_tensor(
                name,
                out,
                (T,),
                shape_hints={(T - 1,): "one value short: every step has its variance, t = 0 too (alpha_bar_{-1} = 1)"},
            )
            ref = samplers.sigma_squared(betas, ab, kind)
            prev = torch.cat([ab.new_ones(1), ab[:-1]])
            tilde = (1 - prev) / (1 - ab) * betas
            other = betas if kind == "beta_tilde" else tilde
            mistakes = {
                f"that is the other choice: kind '{kind}' asks for "
                + (
                    "beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) * beta_t"
                    if kind == "beta_tilde"
                    else "beta_t itself"
                ): other,
                "a standard deviation: return the variance sigma_t^2 (no square root)": ref.sqrt(),
                "alpha_bar_{t-1} at t = 0 is alpha_bars[-1] in your code (Python wraps negative indices to the last "
                "element); alpha_bar_{-1} = 1, so sigma_0^2 = 0": (1 - ab.roll(1)) / (1 - ab) * betas,
                "off by one: alpha_bars[t + 1] was used for alpha_bar_{t-1}": (1 - torch.cat([ab[1:], ab[-1:]]))
                / (1 - ab)
                * betas,
                "alpha_bar instead of 1 - alpha_bar: (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) * beta_t": prev
                / ab
                * betas,
                "the factor beta_t is missing: beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) * beta_t": (
                    1 - prev
                )
                / (1 - ab),
                "1 - beta_t = alpha_t: the variance is beta_t": 1 - betas,
            }
            compare(
                name,
                out,
                ref,
                mistakes,
                tol=1e-7,
                context=f" for kind '{kind}', T={T}",
                reference=samplers.sigma_squared,
                args=(betas, ab, kind),
                where=("t", torch.arange(T)),
            )
    passed(name, f"T {list(Ts)}, kinds {list(kinds)}, seed {seed}")


# --- the judge's bias: its control subtracted ----------------------------------------------------------------


# --- the grain of an image ----------------------------------------------------------------------------------


def check_total_variation(student_fn, *, seed: int = 0, sizes=((4, 1, 8, 8), (2, 3, 5, 7), (3, 1, 6, 2))) -> None:
    """student_fn(images [B,C,H,W]) -> [B]: half the sum of the mean |vertical| and the mean |horizontal|
    neighbour difference; reference ``labkit.evaluation.measures.total_variation``."""
    name = "check_total_variation"
    g = generator(seed)
    for shape in sizes:
        shape = tuple(int(v) for v in shape)
        B = shape[0]
        images = torch.randn(shape, generator=g) * torch.linspace(0.2, 2.0, B).view(-1, 1, 1, 1)  # grain per image
        images[..., : shape[2] // 2, :] += 1.5  # a step between the halves: direction and sign matter
        out = call(name, student_fn, images, names=["images"])
        out = expect_tensor(
            name,
            out,
            (B,),
            shape_hints={
                (): "one number for the whole batch: return one value per image, [B]",
                (B, shape[1]): "one value per channel: average over the channels too, one value per image",
            },
        )
        x = images.double()
        ref = measures.total_variation(x)
        dv, dh = x[..., 1:, :] - x[..., :-1, :], x[..., :, 1:] - x[..., :, :-1]
        mean_v, mean_h = dv.abs().flatten(1).mean(1), dh.abs().flatten(1).mean(1)
        mistakes = {
            "only the vertical neighbours: average the two directions, (vertical + horizontal) / 2": mean_v,
            "only the horizontal neighbours: average the two directions, (vertical + horizontal) / 2": mean_h,
            "the two directions were added, not averaged: divide by 2": mean_v + mean_h,
            "squared differences: the grain uses absolute differences": (
                dv.pow(2).flatten(1).mean(1) + dh.pow(2).flatten(1).mean(1)
            )
            / 2,
            "no absolute value: positive and negative differences cancel": (
                dv.flatten(1).mean(1) + dh.flatten(1).mean(1)
            )
            / 2,
            "sums, not means: divide by the number of neighbour pairs": (
                dv.abs().flatten(1).sum(1) + dh.abs().flatten(1).sum(1)
            )
            / 2,
            "both directions pooled into one mean: average each direction first (they have different numbers of "
            "pairs unless the image is square)": torch.cat([dv.abs().flatten(1), dh.abs().flatten(1)], 1).mean(1),
        }
        compare(
            name,
            out,
            ref,
            mistakes,
            tol=1e-5,  # values of a few units: float32 rounds them by about 1e-6
            context=f" for images of shape {list(shape)}",
            reference=measures.total_variation,
            args=(images,),
        )
    passed(name, f"shapes {[list(s) for s in sizes]}, seed {seed}")
