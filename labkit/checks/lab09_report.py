"""Checks for lab 09 (the lab report): the small functions that turn runs into the numbers a report quotes.

    check_recognisable_from(recognisable_from)        probs [steps, N] -> int [N]: the first sampling step from
                                                      which p(intended digit | x0_hat) stays >= threshold
    check_quartiles_per_digit(quartiles_per_digit)    values [N], labels [N] -> [K, 3]: 25th percentile, median,
                                                      75th percentile per class (torch.quantile's linear rule)
    check_relative_clip_score(relative_clip_score)    per-digit mean score of generated / of real digits -> [K]
    check_within_class_diversity(within_class_diversity)
                                                      features [N, D] -> [K]: mean distance between two
                                                      different samples of the same class
    check_speedup_at_quality(speedup_at_quality)      seconds, quality [S, K] -> [S]: baseline time over the time
                                                      of each sampler's fastest setting that is good enough
    check_heldout_x0_error(heldout_x0_error)          model, x0, y, noise, alpha_bars, log_snrs -> []: median
                                                      one-step x0 error at fixed log-SNRs (comparable across T)
    check_accuracy_margin(accuracy_margin)            p [K], n -> [K]: max(0.03, 2 s.e. of a difference)
    check_above_control(above_control)                probs [N, K], labels [N] -> [N]: p(y_n | x_n) minus the mean
                                                      p(y_n | x_m) over the samples m of other digits
    check_later_than_rest(later_than_rest)            values [N], labels [N] -> [K]: P(a value of class k > one of
                                                      another class), ties half (Mann & Whitney 1947)
    check_pareto_front(pareto_front)                  seconds [M], quality [M] -> bool [M]: not dominated
    check_wilson_interval(wilson_interval)            p [K], n, z -> [K, 2]: Wilson score intervals (Wilson 1927)

Every argument a check passes is plain data (tensors, floats, ints) and every answer must be data too: the
grader calls the student's function in the student's kernel and compares here.

Also here, for the notebook: ``your_model`` (the student's checkpoint, else the shipped one) and, re-exported from
``labkit.checks.fixtures``, ``lab_model``, ``lab_clip`` and ``DigitJudge``.
"""

from __future__ import annotations

import math

import torch

from labkit.checks._common import call, compare, deterministic, expect_tensor, fail, generator, passed
from labkit.checks._common import yours_or_labkit  # noqa: F401  (the lab's cells: the student's function if it passes)
from labkit.evaluation import measures
from labkit.checks.fixtures import DigitJudge, lab04_checkpoint, lab_clip, lab_model, model_at  # noqa: F401  (the labs' model, CLIP and judge)


# --- 1. When does a digit become recognisable? ---------------------------------------------------------


def _trajectory_probs(S: int, N: int, threshold: float, g: torch.Generator) -> torch.Tensor:
    """[S, N] float32 classifier probabilities along N sampling trajectories of S steps. Each trajectory
    commits at a random step (from there on p >= threshold, some entries exactly the threshold), with
    random values before it (so the first crossing is often earlier); some never commit, one is
    recognisable from step 0."""
    p = torch.rand(S, N, generator=g)  # before commitment: anything
    commit = torch.randint(0, S + 1, (N,), generator=g)  # S = never
    commit[0] = 0
    if N > 1:
        commit[1] = S
    if N > 2:
        commit[2] = S - 1  # only the last step is above
    step = torch.arange(S).view(S, 1)
    after = step >= commit.view(1, N)
    high = threshold + (1 - threshold) * torch.rand(S, N, generator=g)
    ties = torch.rand(S, N, generator=g) < 0.2
    high = torch.where(ties, torch.full_like(high, threshold), high)
    p = torch.where(after, high, p)
    last_below = (commit - 1).clamp(min=0)  # the step just before commitment is below the threshold
    below = threshold * torch.rand(N, generator=g)
    cols = torch.arange(N)
    keep = commit > 0
    p[last_below[keep], cols[keep]] = below[keep].to(p.dtype)
    # a lucky early guess: for about half the trajectories, step 0 is above the threshold before commitment
    lucky = (commit >= 2) & (torch.rand(N, generator=g) < 0.5)
    p[0, lucky] = torch.maximum(p[0, lucky], torch.full_like(p[0, lucky], threshold))
    return p.float()


def check_recognisable_from(student_fn, *, seed: int = 0, sizes=((12, 7), (30, 40)), threshold: float = 0.5) -> None:
    """student_fn(probs [steps, N] float, threshold: float) -> int [N]: per trajectory (column), the smallest
    step k such that probs[j, n] >= threshold for every j >= k; ``steps`` when the last step is below it.
    ``threshold`` must be exact in float32 (0.5, 0.75, ...): ties are part of the test."""

    def first_true(above: torch.Tensor) -> torch.Tensor:
        S = above.shape[0]
        idx = torch.arange(S).view(S, 1).expand_as(above)
        return torch.where(above, idx, torch.full_like(idx, S)).min(0).values

    name = "check_recognisable_from"
    if float(torch.tensor(threshold, dtype=torch.float32)) != float(threshold):
        raise ValueError("threshold must be exact in float32 (e.g. 0.5, 0.75, 0.25)")
    g = generator(seed)
    for S, N in sizes:
        S, N = int(S), int(N)
        probs = _trajectory_probs(S, N, threshold, g)
        out = call(name, student_fn, probs, float(threshold), names=["probs"])
        out = expect_tensor(
            name,
            out,
            (N,),
            floating=False,
            shape_hints={
                (S,): "one value per step: probs is [steps, N] (rows are steps, columns are trajectories); "
                "return one step index per trajectory, shape [N]",
                (S, N): "return one step index per trajectory (shape [N]), not the [steps, N] comparison itself",
            },
        )
        if out.dtype == torch.bool:
            fail(name, "the result is a bool tensor; return step indices (int64)")
        if out.is_floating_point():
            fail(
                name,
                f"the result has dtype {out.dtype}: step indices are whole numbers, return int64 "
                "(.long()) so they can index the steps",
            )
        above = probs >= threshold
        ref = measures.recognisable_from(probs.double(), threshold)
        trailing = S - ref
        mistakes = {
            "this is the first step at which p reaches the threshold; a digit counts as recognisable from the "
            "step after which it *stays* at or above it (an early, blurry x0_hat can pass it by chance)": first_true(
                above
            ),
            "p > threshold where p >= threshold is asked (a probability equal to the threshold counts)": measures.recognisable_from(
                probs.masked_fill(probs == threshold, -1.0), threshold
            ),  # strict >
            "off by one: this is the last step *below* the threshold; the answer is the step after it": ref - 1,
            "off by one: the answer is the first step of the final run at or above the threshold, not the one after": ref
            + 1,
            "a trajectory that is not recognisable at the last step should get `steps` (= probs.shape[0]), "
            "not -1": torch.where(trailing == 0, torch.full_like(ref, -1), ref),
            "a trajectory that is not recognisable at the last step should get `steps` (= probs.shape[0]), "
            "not steps - 1": torch.where(trailing == 0, torch.full_like(ref, S - 1), ref),
            "counted from the end (the number of steps left); count from the first sampling step, "
            "step 0 = pure noise": trailing,
            "the first step at which p falls below the threshold (the digit was recognisable before); "
            "the answer is where the final run at or above the threshold starts": first_true(~above),
            "the run at the *start* was counted (no flip of the step axis): the answer is where the *final* run "
            "at or above the threshold starts": S - above.long().cumprod(0).sum(0),
            "the number of steps below the threshold: a dip late in sampling must reset the count; the answer is "
            "where the final run at or above the threshold starts": (~above).long().sum(0),
        }
        context = f" for probs of shape [{S}, {N}], threshold {threshold:g}"
        try:
            compare(name, out, ref.double(), {k: v.double() for k, v in mistakes.items()}, tol=1e-9, context=context)
        except AssertionError as exc:
            if "This looks like" in str(exc):
                raise
            deterministic(name, student_fn, (probs, float(threshold)), out.double(), floating=False)
            bad = int((out.double() - ref.double()).abs().gt(0).nonzero()[0, 0])
            fail(
                name,
                f"wrong step{context}: trajectory {bad} (column {bad}) has p = "
                f"{[round(float(v), 3) for v in probs[:, bad]]}; expected {int(ref[bad])}, got {out[bad].item():g}",
            )
    passed(name, f"sizes {[list(s) for s in sizes]}, threshold {threshold:g}, seed {seed}")


# --- 2. Spread: quartiles per digit --------------------------------------------------------------------


def _grouped(N: int, K: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """values [N] float32, labels [N] int64 with every class present, counts of both parities (>= 2)."""
    if N < 2 * K + 1:
        raise ValueError("need N >= 2 K + 1 so that every class has at least two values")
    labels = torch.cat([torch.arange(K).repeat(2), torch.randint(0, K, (N - 2 * K,), generator=g)])
    labels = labels[torch.randperm(N, generator=g)]
    values = torch.rand(N, generator=g) * (1 + torch.arange(K, dtype=torch.float32)[labels] / K)
    return values, labels


def check_quartiles_per_digit(student_fn, *, seed: int = 0, sizes=((45, 10), (23, 4), (60, 5))) -> None:
    """student_fn(values [N] float, labels int64 [N], num_classes: int) -> [num_classes, 3] float: per class
    the 25th percentile, the median and the 75th percentile of its values (torch.quantile, linear
    interpolation). Every class has at least two values here."""
    name = "check_quartiles_per_digit"
    g = generator(seed)
    for N, K in sizes:
        N, K = int(N), int(K)
        values, labels = _grouped(N, K, g)
        out = call(
            name,
            student_fn,
            values,
            labels,
            K,
            names=["values", "labels"],
            hints={
                "q values must be in the range": "quantiles are fractions of the data (0.25, 0.5, 0.75), not percents"
            },
        )
        out = expect_tensor(
            name,
            out,
            (K, 3),
            shape_hints={
                (
                    3,
                    K,
                ): "the result is transposed: one row per class, columns [25th percentile, median, 75th percentile]",
                (K,): "one number per class: return three, [25th percentile, median, 75th percentile]",
                (K, 2): "two columns: return three, [25th percentile, median, 75th percentile]",
                (3,): "one row for all values together: one row per class (values[labels == k])",
            },
        )
        v = values.double()
        q = torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)

        def per_class(fn):
            return torch.stack([fn(v[labels == k]) for k in range(K)])

        def quant(how):
            return per_class(lambda x: torch.quantile(x, q, interpolation=how))

        ref = measures.quartiles_per_digit(v, labels, K)
        mistakes = {
            "torch.median for the middle column: for an even number of values it returns the lower of the two "
            "middle ones; the median is their mean (torch.quantile(v, 0.5))": per_class(
                lambda x: torch.stack([torch.quantile(x, 0.25), x.median(), torch.quantile(x, 0.75)])
            ),
            "the mean where the median belongs": per_class(
                lambda x: torch.stack([torch.quantile(x, 0.25), x.mean(), torch.quantile(x, 0.75)])
            ),
            "mean -/+ standard deviation instead of the quartiles: the spread asked for is the interquartile range": per_class(
                lambda x: torch.stack([x.mean() - x.std(), x.mean(), x.mean() + x.std()])
            ),
            "mean -/+ standard deviation (ddof 0) instead of the quartiles: the spread asked for is the interquartile "
            "range": per_class(
                lambda x: torch.stack([x.mean() - x.std(correction=0), x.mean(), x.mean() + x.std(correction=0)])
            ),
            "median -/+ standard deviation instead of the quartiles: the spread asked for is the interquartile range": per_class(
                lambda x: torch.stack(
                    [torch.quantile(x, 0.5) - x.std(), torch.quantile(x, 0.5), torch.quantile(x, 0.5) + x.std()]
                )
            ),
            "quartiles picked by index (interpolation 'lower'): use torch.quantile's default, linear interpolation": quant(
                "lower"
            ),
            "quartiles picked by index (interpolation 'higher'): use torch.quantile's default, linear interpolation": quant(
                "higher"
            ),
            "quartiles picked by index (interpolation 'nearest'): use torch.quantile's default, linear interpolation": quant(
                "nearest"
            ),
            "interpolation 'midpoint': use torch.quantile's default, linear interpolation": quant("midpoint"),
            "quartiles picked as sorted(v)[int(q * n)]: use torch.quantile's default, linear interpolation": per_class(
                lambda x: x.sort().values[(q * len(x)).long().clamp(max=len(x) - 1)]
            ),
            "columns in the wrong order: [25th percentile, median, 75th percentile]": ref[:, [1, 0, 2]],
            "columns in the wrong order: [25th percentile, median, 75th percentile] (this is [75th, median, 25th])": ref[
                :, [2, 1, 0]
            ],
            "the quartiles of all values together in every row: compute them per class, values[labels == k]": torch.quantile(
                v, q
            ).expand(K, 3),
        }
        compare(name, out, ref, mistakes, tol=1e-5, context=f" for N={N} values in {K} classes")
    passed(name, f"sizes {[list(s) for s in sizes]}, seed {seed}")


# --- 3. CLIP: generated relative to real ---------------------------------------------------------------


def check_relative_clip_score(student_fn, *, seed: int = 0, sizes=((50, 120, 10), (31, 17, 4))) -> None:
    """student_fn(gen_scores [N], gen_labels int64 [N], real_scores [M], real_labels int64 [M], num_classes)
    -> [num_classes]: (mean score of the generated digits of class k) / (mean score of the real ones)."""
    name = "check_relative_clip_score"
    g = generator(seed)
    for N, M, K in sizes:
        N, M, K = int(N), int(M), int(K)
        gen_s, gen_y = _grouped(N, K, g)
        real_s, real_y = _grouped(M, K, g)
        gen_s, real_s = 0.05 + 0.9 * gen_s / gen_s.max(), 0.05 + 0.9 * real_s / real_s.max()  # probabilities
        out = call(
            name,
            student_fn,
            gen_s,
            gen_y,
            real_s,
            real_y,
            K,
            names=["gen_scores", "gen_labels", "real_scores", "real_labels"],
        )
        out = expect_tensor(
            name,
            out,
            (K,),
            shape_hints={
                (N,): "one value per generated image: average per class first (gen_scores[gen_labels == k].mean())",
                (): "one number: return one ratio per class",
            },
        )
        gs, rs = gen_s.double(), real_s.double()

        def means(s, y):
            return torch.stack([s[y == k].mean() for k in range(K)])

        def medians(s, y):
            return torch.stack([torch.quantile(s[y == k], 0.5) for k in range(K)])

        def sums(s, y):
            return torch.stack([s[y == k].sum() for k in range(K)])

        gm, rm = means(gs, gen_y), means(rs, real_y)
        ref = measures.relative_clip_score(gs, gen_y, rs, real_y, K)
        mistakes = {
            "the ratio is inverted: generated / real (1.0 = as good as real digits, below 1 = worse)": rm / gm,
            "a difference; the question asks for the ratio generated / real": gm - rm,
            "divided by the mean over *all* real digits; divide by the real digits of the same class": gm / rs.mean(),
            "the mean over all generated digits was divided by each class's real mean: average the generated "
            "digits of each class": gs.mean() / rm,
            "a ratio of medians; the question asks for means": medians(gs, gen_y) / medians(rs, real_y),
            "a ratio of medians (torch.median, the lower middle value); the question asks for means": torch.stack(
                [gs[gen_y == k].median() for k in range(K)]
            )
            / torch.stack([rs[real_y == k].median() for k in range(K)]),
            "a ratio of sums: classes hold different numbers of digits, so divide means": sums(gs, gen_y)
            / sums(rs, real_y),
            "the generated scores were grouped with the real labels or the other way round (check which labels "
            "go with which scores)": (means(gs[:M], real_y[:N]) / means(rs[:N], gen_y[:M])) if N == M else None,
        }
        compare(name, out, ref, mistakes, tol=1e-5, context=f" for {N} generated and {M} real digits, {K} classes")
    passed(name, f"sizes {[list(s) for s in sizes]}, seed {seed}")


# --- 4. Diversity: mean pairwise distance within a class -----------------------------------------------


def check_within_class_diversity(student_fn, *, seed: int = 0, sizes=((30, 16, 4), (41, 8, 10), (5, 3, 2))) -> None:
    """student_fn(features [N, D], labels int64 [N], num_classes: int) -> [num_classes]: per class, the mean
    Euclidean distance between two *different* samples of that class (n(n-1) ordered pairs, or n(n-1)/2
    unordered ones: the same mean). Every class has at least two samples here."""
    name = "check_within_class_diversity"
    g = generator(seed)
    for N, D, K in sizes:
        N, D, K = int(N), int(D), int(K)
        _, labels = _grouped(N, K, g)
        spread = 0.3 + 2 * torch.rand(K, 1, generator=g)  # classes differ in diversity
        centres = 3 * torch.randn(K, D, generator=g)
        feats = (centres[labels] + spread[labels] * torch.randn(N, D, generator=g)).float()
        out = call(name, student_fn, feats, labels, K, names=["features", "labels"])
        out = expect_tensor(
            name,
            out,
            (K,),
            shape_hints={
                (N,): "one value per sample: average over the pairs of each class, one number per class",
                (N, N): "the distance matrix itself: average it over the pairs of different samples within each class",
                (): "one number: return one value per class",
            },
        )
        f = feats.double()

        def per_class(fn):
            return torch.stack([fn(f[labels == k]) for k in range(K)])

        def dist(x):
            return ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1).sqrt()  # exact, [n, n]

        def pairs_mean(x, power=1.0, denom=None):
            n = len(x)
            d = dist(x) ** power
            return d.sum() / (denom(n) if denom else n * (n - 1))

        ref = measures.within_class_diversity(f, labels, K)
        mistakes = {
            "the zero distance of each sample to itself was averaged in: average over pairs of *different* "
            "samples, n(n-1) of them (or n(n-1)/2 unordered)": per_class(
                lambda x: pairs_mean(x, denom=lambda n: n * n)
            ),
            "squared distances: use the Euclidean distance itself (torch.cdist, or the square root of the sum "
            "of squares)": per_class(lambda x: pairs_mean(x, power=2.0)),
            "each pair counted once but divided by n(n-1) ordered pairs (or twice but divided by n(n-1)/2)": per_class(
                lambda x: pairs_mean(x) / 2
            ),
            "each pair counted twice but divided by n(n-1)/2 unordered pairs": per_class(lambda x: pairs_mean(x) * 2),
            "the distance to the class mean; the measure asked for is the mean distance between two samples": per_class(
                lambda x: (x - x.mean(0)).pow(2).sum(1).sqrt().mean()
            ),
            "a standard deviation of the features; the measure asked for is the mean distance between two samples": per_class(
                lambda x: x.std(0).mean()
            ),
            "the sum of the distances; average them": per_class(lambda x: dist(x).sum()),
            "all samples together in every entry: compute it per class, features[labels == k]": pairs_mean(f).expand(K),
            "distances to samples of *other* classes were included: take both samples of a pair from class k": torch.stack(
                [
                    ((f[labels == k][:, None, :] - f[None, :, :]) ** 2).sum(-1).sqrt().sum()
                    / ((labels == k).sum() * (N - 1))
                    for k in range(K)
                ]
            ),
            "Manhattan (L1) distances: the measure asked for is the Euclidean distance": per_class(
                lambda x: (x[:, None, :] - x[None, :, :]).abs().sum(-1).sum() / (len(x) * (len(x) - 1))
            ),
            "squared distances, with the zeros of each sample to itself averaged in": per_class(
                lambda x: pairs_mean(x, power=2.0, denom=lambda n: n * n)
            ),
            "the median distance: the measure asked for is the mean over all pairs": per_class(
                lambda x: dist(x)[~torch.eye(len(x), dtype=torch.bool)].quantile(0.5)
            ),
        }
        compare(name, out, ref, mistakes, tol=1e-4, relative=True, context=f" for N={N}, D={D}, {K} classes")
    passed(name, f"sizes {[list(s) for s in sizes]}, seed {seed}")


# --- 5. Sampling time: speed-up at equal quality -------------------------------------------------------


def check_speedup_at_quality(student_fn, *, seed: int = 0, sizes=((3, 5), (2, 7), (4, 1))) -> None:
    """student_fn(seconds [S, K], quality [S, K], target: float, baseline_seconds: float) -> [S] float: for
    each sampler (row), baseline_seconds divided by the time of its fastest setting whose quality is at
    least ``target``; 0.0 for a sampler none of whose settings reaches it. Columns are in no particular order."""
    name = "check_speedup_at_quality"
    g = generator(seed)
    for S, K in sizes:
        S, K = int(S), int(K)
        seconds = (0.05 + 20 * torch.rand(S, K, generator=g)).float()
        quality = (torch.randint(40, 65, (S, K), generator=g) / 64).float()  # exact in float32 and float64
        target = float(quality.flatten()[torch.randint(0, S * K, (1,), generator=g)].item())
        if S > 1:
            quality[-1] = torch.minimum(quality[-1], torch.full_like(quality[-1], target - 1 / 64))  # never reaches it
        slowest = int(seconds[0].argmax())  # sampler 0: only its slowest setting is good enough, exactly on target
        quality[0] = torch.minimum(quality[0], torch.full_like(quality[0], target - 1 / 64))
        quality[0, slowest] = target
        if S >= 3 and K >= 4:  # sampler 1: good-enough settings placed so that "first in column order", "last in
            ts = seconds[1].sort().values  # column order", "fastest", "slowest" and "best quality" pick different ones
            cols = [0, 1, 2, 3] + ([K - 1] if K >= 5 else [])
            picks = [ts[1], ts[0], ts[2], ts[-1]] + ([ts[3]] if K >= 5 else [])
            rest = [c for c in range(K) if c not in cols]
            seconds[1, cols] = torch.stack(picks)
            seconds[1, rest] = ts[4 : 4 + len(rest)]
            quality[1] = target - 1 / 64
            quality[1, cols] = target + 1 / 64  # strictly above: "quality <= target" differs too
            quality[1, 2] = 1.0 + 1 / 64  # the best quality: neither the first, the last, the fastest nor the slowest
        elif S >= 3 and K >= 3:  # sampler 1: its first column is a middling setting of the best quality, and
            order = seconds[1].argsort()  # its fastest and slowest settings are good enough too
            mid = int(order[K // 2])
            seconds[1, [0, mid]] = seconds[1, [mid, 0]]
            order = seconds[1].argsort()
            quality[1, 0] = 1.0
            quality[1, int(order[0])] = target + 1 / 64  # strictly above: "quality <= target" differs too
            quality[1, int(order[-1])] = target + 1 / 64
        elif S >= 3 and K >= 2:  # sampler 1: its first column is its slowest setting and has the best quality
            slow = int(seconds[1].argmax())
            seconds[1, [0, slow]] = seconds[1, [slow, 0]]
            quality[1, 0] = 1.0
            quality[1, -1] = max(float(quality[1, -1]), target)
        baseline = float(seconds.max()) * 1.5
        out = call(name, student_fn, seconds, quality, target, baseline, names=["seconds", "quality"])
        never = ~(quality >= target).any(1)
        if (
            isinstance(out, torch.Tensor)
            and out.device.type != "meta"
            and tuple(out.shape) == (S,)
            and out.is_floating_point()
            and never.any()
            and not bool(torch.isfinite(out[never].double().cpu()).all())
        ):
            fail(
                name,
                "a sampler none of whose settings reaches the target quality should get 0.0 "
                "(no speed-up at that quality), not inf or NaN",
            )
        out = expect_tensor(
            name,
            out,
            (S,),
            shape_hints={
                (S, K): "one value per setting: for each sampler (row) keep only its fastest good-enough setting",
                (K,): "one value per column: the samplers are the rows, return one speed-up per row",
                (): "one number: return one speed-up per sampler (row)",
            },
        )
        s, qd = seconds.double(), quality.double()

        def fastest(ok, pick=None):
            masked = torch.where(ok, s, torch.full_like(s, math.inf))
            t = masked.min(1).values if pick is None else pick(masked, ok)
            return torch.where(torch.isfinite(t), baseline / t, torch.zeros_like(t))

        ok = qd >= target
        ref = measures.speedup_at_quality(s, qd, target, baseline)
        cols = torch.arange(K).expand(S, K)

        def first_in_order(masked, ok_):
            first = torch.where(ok_, cols, torch.full_like(cols, K)).min(1).values
            return torch.where(
                first < K, s.gather(1, first.clamp(max=K - 1)[:, None])[:, 0], torch.full_like(s[:, 0], math.inf)
            )

        best_q = s.gather(1, qd.argmax(1, keepdim=True))[:, 0]
        mistakes = {
            "the ratio is inverted: speed-up = baseline_seconds / seconds (above 1 = faster than the baseline)": torch.where(
                ref > 0, 1 / ref.clamp(min=1e-300), ref
            ),
            "the fastest setting regardless of quality: only settings with quality >= target count": baseline
            / s.min(1).values,
            "quality > target where quality >= target is asked (a setting exactly on the target counts)": fastest(
                qd > target
            ),
            "the first setting (in column order) that reaches the target; the question is the *fastest* one": fastest(
                ok, first_in_order
            ),
            "the time of each sampler's best-quality setting; the question is the fastest setting that is good enough": (
                baseline / best_q,
                torch.where(ok.any(1), baseline / best_q, torch.zeros_like(best_q)),
            ),
            "the time itself; return the speed-up, baseline_seconds / time": torch.where(
                ok.any(1), torch.where(ok, s, torch.full_like(s, math.inf)).min(1).values, torch.zeros_like(ref)
            ),
            "a sampler that never reaches the target should get 0.0, not 1.0": torch.where(
                ok.any(1), ref, torch.ones_like(ref)
            ),
            "the slowest setting that reaches the target; the question is the *fastest* good-enough one": fastest(
                ok,
                lambda masked, ok_: (
                    torch.where(ok_, s, torch.full_like(s, -math.inf))
                    .max(1)
                    .values.where(ok_.any(1), torch.full_like(s[:, 0], math.inf))
                ),
            ),
            "the comparison is reversed (quality <= target): a setting counts when its quality is *at least* "
            "the target": fastest(qd <= target),
            "the last good-enough setting in column order: the columns are in no particular order, so take the "
            "fastest of the good-enough settings": fastest(
                ok,
                lambda masked, ok_: torch.where(
                    ok_.any(1),
                    s.gather(1, (K - 1 - ok_.flip(1).long().argmax(1))[:, None])[:, 0],
                    torch.full_like(s[:, 0], math.inf),
                ),
            ),
            "the speed-up over the sampler's own slowest setting; divide baseline_seconds by the time": torch.where(
                ok.any(1),
                s.max(1).values / torch.where(ok, s, torch.full_like(s, math.inf)).min(1).values,
                torch.zeros_like(ref),
            ),
        }
        compare(
            name,
            out,
            ref,
            mistakes,
            tol=1e-4,
            relative=True,
            context=f" for {S} samplers x {K} settings, target {target:g}",
        )
    passed(name, f"sizes {[list(s) for s in sizes]}, seed {seed}")


# --- The model a report is about ------------------------------------------------------------------------


def your_model(path=None, device=None, *, verbose: bool = True):
    """``(model, schedule, meta)`` for the report: the checkpoint at ``path`` (your lab 04 run, e.g.
    ``runs/lab04-cpu/loop.pt``: ``lab04_checkpoint``) when it can be loaded, else the shipped one (``lab_model``)
    with a note. ``meta["yours"]`` says which. While grading, the file is not there: the shipped model is used."""
    return model_at(path, device, verbose=verbose)


# --- 3. A denoising error that compares runs with different T and schedules -----------------------------


def _x0_error_variants(model, x0, y, noise, ab, levels) -> dict[str, torch.Tensor]:
    """Plausible wrong answers to heldout_x0_error, each named."""

    def run(*, pick=None, alpha=None, clamp=True, reduce="median", labels=None, shift=0, x0_of=None):
        log_snr = torch.log(ab / (1 - ab))
        errors = []
        for level in levels:
            t = int((log_snr - level).abs().argmin()) if pick is None else pick(level, log_snr)
            t = min(max(t + shift, 0), len(ab) - 1)
            a = ab[t].to(x0.dtype)
            keep, drop = (a.sqrt(), (1 - a).sqrt()) if alpha is None else alpha(a)
            xt = keep * x0 + drop * noise
            eps = model(xt, torch.full((len(x0),), t), y if labels is None else labels)
            guess = (xt - drop * eps) / keep if x0_of is None else x0_of(xt, eps, a)
            guess = guess.clamp(-1, 1) if clamp else guess
            errors.append(((guess - x0) ** 2).flatten(1).mean(1))
        e = torch.cat(errors)
        return {
            "median": e.median(),
            "mean": e.mean(),
            "max": e.max(),
            "per level": torch.stack([v.median() for v in errors]).mean(),
        }[reduce]

    return {
        "t was picked by alpha_bar, not by the log-SNR: the step whose log(abar / (1 - abar)) is closest to each "
        "level": run(pick=lambda level, ls: int((torch.sigmoid(ls) - level).abs().argmin())),
        "the log-SNR used log10: it is the natural log, torch.log(abar / (1 - abar))": run(
            pick=lambda level, ls: int((ls / math.log(10) - level).abs().argmin())
        ),
        "the SNR itself was compared with the level: the levels are log-SNRs (log(abar / (1 - abar)))": run(
            pick=lambda level, ls: int((ls.exp() - level).abs().argmin())
        ),
        "x_t and x0_hat used the variances abar and 1 - abar as weights: they are sqrt(abar) and sqrt(1 - abar) "
        "(Ho et al. eq. 4)": run(alpha=lambda a: (a, 1 - a)),
        "x_t used the variances abar and 1 - abar as weights: they are sqrt(abar) and sqrt(1 - abar) (Ho et al. "
        "eq. 4)": run(alpha=lambda a: (a, 1 - a), x0_of=lambda xt, eps, a: (xt - (1 - a).sqrt() * eps) / a.sqrt()),
        "x0_hat divides by abar: it is (x_t - sqrt(1 - abar) eps_hat) / sqrt(abar)": run(
            x0_of=lambda xt, eps, a: (xt - (1 - a).sqrt() * eps) / a
        ),
        "x0_hat subtracts eps_hat without its weight sqrt(1 - abar)": run(
            x0_of=lambda xt, eps, a: (xt - eps) / a.sqrt()
        ),
        "x0_hat is not clamped to [-1, 1] (digits live there; one wild pixel must not dominate)": run(clamp=False),
        "the mean was taken: the median over all images and levels is robust to a few hopeless images": run(
            reduce="mean"
        ),
        "one median per level, then their mean: take one median over all images of all levels together": run(
            reduce="per level"
        ),
        "the model was told 'no class' (10): give it the labels y": run(labels=torch.full_like(y, 10)),
        "t is one step too late (t + 1): the step is the index of the closest log-SNR itself": run(shift=1),
    }


def check_heldout_x0_error(
    student_fn, *, seed: int = 0, sizes=((5, 1, 6, 6), (3, 2, 4, 4)), T: int = 60, levels=((1.0,), (2.0, 0.0, -2.0))
) -> None:
    """student_fn(model, images [B,C,H,W], labels [B], noise [B,C,H,W], alpha_bars [T], log_snrs) -> a 0-d tensor:
    the median one-step x0 error at the steps closest to the given log-SNRs. B x len(log_snrs) is odd in every
    case (the median is then one of the values, whatever the rule for an even count)."""
    from labkit.checks.lab04_training import ToyEpsModel
    from labkit.schedules import make_schedule

    name = "check_heldout_x0_error"
    g = generator(seed)
    ab = make_schedule("cosine", T).alpha_bars.double()  # [T]
    for k, shape in enumerate(sizes):
        shape = tuple(int(v) for v in shape)
        for log_snrs in levels:
            log_snrs = tuple(float(v) for v in log_snrs)
            model = ToyEpsModel(shape[1], T, seed=seed * 100 + k)
            x0 = (torch.rand(shape, generator=g) * 2 - 1).double()
            y = torch.randint(0, 10, (shape[0],), generator=g)
            noise = torch.randn(shape, generator=g, dtype=torch.float64)
            args = (model.double(), x0, y, noise, ab, log_snrs)
            out = call(name, student_fn, *args, names=["model", "images", "labels", "noise", "alpha_bars", "log_snrs"])
            if isinstance(out, float):
                out = torch.tensor(out, dtype=torch.float64)
            out = expect_tensor(name, out, None)
            if out.numel() != 1:
                fail(
                    name,
                    f"the result has shape {list(out.shape)}: return one number, the median over all images "
                    "and levels (a 0-d tensor)",
                )
            with torch.no_grad():
                ref = measures.heldout_x0_error(*args)
                wrongs = _x0_error_variants(*args)
            compare(
                name,
                out.reshape(()).double(),
                ref,
                wrongs,
                tol=1e-6 * max(1.0, float(ref)),  # float32 work passes
                context=f" for images of shape {list(shape)} and log-SNRs {list(log_snrs)}",
            )
    passed(name, f"shapes {[list(s) for s in sizes]}, log-SNR levels {[list(v) for v in levels]}, T={T}, seed {seed}")


# --- 5. "As good as": a margin that sampling noise cannot fake ----------------------------------------


def check_accuracy_margin(student_fn, *, seed: int = 0, ns=(100, 40, 1000)) -> None:
    """student_fn(p [K] float64 accuracies, n int) -> [K]: max(0.03, 2 sqrt(2 p (1 - p) / n)), p clamped to
    [1/n, 1 - 1/n]. Accuracies include 0, 1, 0.5 and values where each rule of the formula decides."""
    name = "check_accuracy_margin"
    g = generator(seed)
    for n in ns:
        n = int(n)
        p = torch.cat([torch.tensor([0.0, 1.0, 0.5, 1 - 1 / n, 0.99]), torch.randint(0, n + 1, (6,), generator=g) / n])
        p = p.double()
        out = call(name, student_fn, p, n, names=["p", "n"])
        out = expect_tensor(name, out, (len(p),)).double()
        ref = measures.accuracy_margin(p, n)
        q = p.clamp(1 / n, 1 - 1 / n)
        se = torch.sqrt(q * (1 - q) / n)
        wrongs = {
            "one standard error of one accuracy: the margin is 2 standard errors of the difference of two "
            "accuracies, 2 sqrt(2 p (1 - p) / n)": torch.clamp(se, min=0.03),
            "2 standard errors of one accuracy, not of a difference of two (each has variance p (1 - p) / n; "
            "their difference twice that)": torch.clamp(2 * se, min=0.03),
            "the variance was used, not the standard error: take the square root of 2 p (1 - p) / n": torch.clamp(
                2 * 2 * q * (1 - q) / n, min=0.03
            ),
            "p was not clamped to [1/n, 1 - 1/n]: a measured 100% (or 0%) would claim a standard error of 0": torch.clamp(
                2 * torch.sqrt(2 * p * (1 - p) / n), min=0.03
            ),
            "min instead of max: the margin is never smaller than 3 points": torch.clamp(
                2 * torch.sqrt(2 * q * (1 - q) / n), max=0.03
            ),
            "the 3 points were left out: the margin is at least 0.03": 2 * torch.sqrt(2 * q * (1 - q) / n),
            "3 points were written as 3 (or 0.3): as a fraction of 1 it is 0.03": torch.clamp(
                2 * torch.sqrt(2 * q * (1 - q) / n), min=3.0
            ),
        }
        compare(
            name,
            out,
            ref,
            wrongs,
            tol=1e-6,
            reference=measures.accuracy_margin,
            args=(p, n),
            context=f" for n = {n}",
            where=("p", p),
        )
    passed(name, f"n in {list(ns)}, accuracies 0 and 1 included, seed {seed}")


# --- 1b. The judge's bias built into the measure, and "8 needs more steps" as a number ----------------------


def _judged(N: int, K: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """probs [N, K] float32 (rows sum to 1) of a judge that favours the last class on every sample (as the MNIST
    classifier reads an 8 into noise), labels int64 [N] with every class present at least twice."""
    labels = torch.cat([torch.arange(K).repeat(2), torch.randint(0, K, (N - 2 * K,), generator=g)])
    labels = labels[torch.randperm(N, generator=g)]
    logits = torch.randn(N, K, generator=g) + 1.5 * torch.nn.functional.one_hot(labels, K)  # some signal
    logits[:, -1] += 1.0  # the judge's favourite, whatever the sample
    return logits.softmax(dim=1), labels


def check_above_control(student_fn, *, seed: int = 0, sizes=((24, 3), (50, 10), (9, 4))) -> None:
    """student_fn(probs [N, K] float, labels int64 [N]) -> [N] float: p(y_n | x_n) minus the mean of
    p(y_n | x_m) over the samples m meant to be another digit (y_m != y_n). Every class has >= 2 samples."""
    name = "check_above_control"
    g = generator(seed)
    for N, K in sizes:
        N, K = int(N), int(K)
        probs, labels = _judged(N, K, g)
        out = call(name, student_fn, probs, labels, names=["probs", "labels"])
        out = expect_tensor(
            name,
            out,
            (N,),
            shape_hints={
                (K,): "one number per class: return one margin per sample, p(y_n | x_n) minus the control of its digit",
                (N, K): "a margin for every class: return one per sample, for its intended digit y_n only",
                (N, N): "a matrix of pairs: average over the samples of other digits, one margin per sample",
            },
        )
        p, y = probs.double(), labels
        own = p.gather(1, y[:, None])[:, 0]  # [N]
        same = y[:, None] == y[None, :]  # [n, m]
        p_at = p[:, y].T  # [n, m]: p(y_n | x_m)

        def mean_over(mask, values=p_at):
            return (values * mask).sum(1) / mask.sum(1)

        control = mean_over(~same)
        ref = measures.above_control(probs, labels)
        not_self = ~torch.eye(N, dtype=torch.bool)
        mistakes = {
            "the control averages over every sample, this digit's own included: average p(y_n | x_m) over the "
            "samples m meant to be *other* digits only": own - p_at.mean(1),
            "the control leaves out only the sample itself: leave out every sample meant to be the same digit "
            "(y_m == y_n)": own - mean_over(not_self),
            "the control averages over the samples of the *same* digit: it is what the judge says of this digit on "
            "samples meant to be other digits": own - mean_over(same),
            "the control uses the other samples' own digits, p(y_m | x_m): it is the judge's belief in *this* "
            "digit, p(y_n | x_m), on the samples meant to be other digits": own
            - mean_over(~same, own[None, :].expand(N, N)),
            "the sum over the other digits' samples was divided by all N samples: divide by how many samples are "
            "meant to be other digits": own - (p_at * ~same).sum(1) / N,
            "a ratio: the margin is the difference p(y_n | x_n) - control": own / control,
            "the sign is reversed: p(y_n | x_n) minus the control (positive when the judge believes it of this "
            "sample more than of the others)": control - own,
            "the control alone: subtract it from p(y_n | x_n)": control,
            "the largest p(y_n | x_m) over the other digits' samples: the control is their mean": own
            - (p_at.masked_fill(same, -1.0)).max(1).values,
            "the share of the other digits' samples the judge *calls* y_n (argmax): use its probabilities": own
            - mean_over(~same, (p.argmax(1)[None, :] == y[:, None]).double()),
            "p of the judge's top class, not of the intended digit y_n": p.max(1).values - control,
        }
        compare(
            name,
            out,
            ref,
            mistakes,
            tol=1e-6,
            context=f" for {N} samples of {K} digits",
            reference=measures.above_control,
            args=(probs, labels),
        )
    passed(name, f"sizes {[list(s) for s in sizes]}, seed {seed}")


def _commit_fractions(N: int, K: int, g: torch.Generator, steps: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """values [N] float32 = (step of commitment) / steps, with many ties (as in the lab), labels int64 [N] with
    every class present at least twice; the classes differ in their typical value."""
    labels = torch.cat([torch.arange(K).repeat(2), torch.randint(0, K, (N - 2 * K,), generator=g)])
    labels = labels[torch.randperm(N, generator=g)]
    shift = torch.randint(0, 3, (K,), generator=g)[labels]
    k = (torch.randint(0, steps - 2, (N,), generator=g) + shift).clamp(max=steps)
    return k.float() / steps, labels


def check_later_than_rest(student_fn, *, seed: int = 0, sizes=((40, 3), (120, 10), (11, 2))) -> None:
    """student_fn(values [N] float, labels int64 [N], num_classes: int) -> [num_classes] float: for each class k
    the probability that a value of class k is larger than one of another class, ties counted half."""
    name = "check_later_than_rest"
    g = generator(seed)
    for N, K in sizes:
        N, K = int(N), int(K)
        values, labels = _commit_fractions(N, K, g)
        out = call(name, student_fn, values, labels, K, names=["values", "labels"])
        out = expect_tensor(
            name,
            out,
            (K,),
            shape_hints={(N,): "one number per value: return one per class k, over all pairs (k, another class)"},
        )
        v = values.double()

        def per_class(fn):
            return torch.stack([fn(v[labels == k], v[labels != k], k) for k in range(K)]).double()

        def pairs(gt=1.0, eq=0.5, rest_of=None, norm=None):
            def one(mine, rest, k):
                rest = v if rest_of == "all" else rest
                d = mine[:, None] - rest[None, :]
                total = gt * (d > 0).double().sum() + eq * (d == 0).double().sum()
                return total / (d.numel() if norm is None else norm(len(mine), len(rest)))

            return per_class(one)

        ref = measures.later_than_rest(values, labels, K)
        mistakes = {
            "ties were not counted: a tie (equal values) counts half": pairs(eq=0.0),
            "ties were counted as 'later': a tie (equal values) counts half": pairs(eq=1.0),
            "the comparison is reversed: P_k is the probability that class k's value is *larger* (later)": 1 - ref,
            "class k was compared with every value, its own class included: compare with the values of the *other* "
            "classes (labels != k)": pairs(rest_of="all"),
            "the count was not divided by the number of pairs, n_k times the number of values of other classes": pairs(
                norm=lambda a, b: 1.0
            ),
            "divided by n_k times all N values: the pairs are (a value of k, a value of another class)": pairs(
                norm=lambda a, b: a * N
            ),
            "one comparison of the two medians: P_k averages over every pair of values": per_class(
                lambda m, r, k: (
                    (torch.quantile(m, 0.5) > torch.quantile(r, 0.5)).double()
                    + 0.5 * (torch.quantile(m, 0.5) == torch.quantile(r, 0.5)).double()
                )
            ),
            "a difference of means: P_k is a probability over pairs of values": per_class(
                lambda m, r, k: m.mean() - r.mean()
            ),
        }
        compare(
            name,
            out,
            ref,
            mistakes,
            tol=1e-6,  # float32 rounding of values up to 1
            context=f" for {N} values in {K} classes",
            reference=measures.later_than_rest,
            args=(values, labels, K),
        )
    passed(name, f"sizes {[list(s) for s in sizes]}, seed {seed}")


# --- 5b. Which settings are worth using ---------------------------------------------------------------------


def _settings(M: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """seconds [M] and quality [M] float32 of M settings, with ties in time, in quality and exact duplicates."""
    seconds = torch.randint(1, max(3, M // 2), (M,), generator=g).float() * 0.5
    quality = torch.randint(0, 12, (M,), generator=g).float() / 12
    if M >= 4:
        seconds[0] = seconds[1] = seconds.min() - 0.25  # an exact duplicate, faster than the rest: on the front
        quality[1] = quality[0]
        seconds[3] = seconds[2]  # as fast, another quality
    return seconds, quality


def _sweep(s: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """The front as a sweep finds it: by increasing time, keep each setting strictly better than all faster ones
    (it keeps only the first of two equal settings). float64 [M] of 0/1."""
    keep, best = torch.zeros(len(s), dtype=torch.float64), -math.inf
    for i in torch.argsort(s, stable=True).tolist():
        if float(q[i]) > best:
            keep[i], best = 1.0, float(q[i])
    return keep


def check_pareto_front(student_fn, *, seed: int = 0, sizes=(12, 30, 5)) -> None:
    """student_fn(seconds [M] float, quality [M] float) -> bool [M]: True where no other setting is at most as
    slow and at least as good, and strictly better in one of the two (higher quality is better)."""
    name = "check_pareto_front"
    g = generator(seed)
    for M in sizes:
        M = int(M)
        seconds, quality = _settings(M, g)
        out = call(name, student_fn, seconds, quality, names=["seconds", "quality"])
        out = expect_tensor(
            name,
            out,
            (M,),
            floating=False,
            shape_hints={
                (n,): "a mask has one entry per setting (True: on the front), not the indices of the front"
                for n in range(M)
            },
        )
        if out.dtype != torch.bool:
            fail(
                name,
                f"wrong dtype {out.dtype}: return a bool tensor, one entry per setting (True: on the front)",
            )
        s, q = seconds.double(), quality.double()
        le_s, ge_q = s[None, :] <= s[:, None], q[None, :] >= q[:, None]  # [i, j]
        lt_s, gt_q = s[None, :] < s[:, None], q[None, :] > q[:, None]
        me = torch.eye(M, dtype=torch.bool)

        def front(dominates):
            return (~dominates.any(dim=1)).double()

        order = torch.argsort(s, stable=True)
        ref = measures.pareto_front(seconds, quality)
        mistakes = {
            "every setting is as fast and as good as itself, so nothing is on the front: j dominates i only when it "
            "is also strictly better in time or in quality": front(le_s & ge_q),
            "two settings with the same time and the same quality knocked each other (or one the other) out: "
            "neither is strictly better, so both stay on the front": (front(le_s & ge_q & ~me), _sweep(s, q)),
            "a setting was dominated only by one strictly faster *and* strictly better: one as fast and better, or "
            "as good and faster, dominates it too": front(lt_s & gt_q),
            "quality reversed: higher quality is better": front(
                le_s & (q[None, :] <= q[:, None]) & (lt_s | (q[None, :] < q[:, None]))
            ),
            "time reversed: less time is better": front(
                (s[None, :] >= s[:, None]) & ge_q & ((s[None, :] > s[:, None]) | gt_q)
            ),
            "the mask marks the dominated settings: True is for the settings on the front": 1 - ref.double(),
            "the mask is in the order of increasing time: return it in the order of the inputs": ref.double()[order],
        }
        compare(name, out.double(), ref.double(), mistakes, tol=0.1, context=f" for {M} settings")
    passed(name, f"sizes {list(sizes)}, seed {seed}")


def check_wilson_interval(student_fn, *, seed: int = 0, ns=(100, 40, 7), zs=(1.96, 2.0)) -> None:
    """student_fn(p [K] float64, n: int, z: float) -> [K, 2]: each accuracy's Wilson score interval
    [centre - half, centre + half] (Wilson 1927). p holds 0, 1 and accuracies k / n."""
    name = "check_wilson_interval"
    g = generator(seed)
    for n in ns:
        n = int(n)
        for z in zs:
            k = torch.cat([torch.tensor([0, n]), torch.randint(1, n, (5,), generator=g)])
            p = k.double() / n  # [K]
            K = len(p)
            out = call(name, student_fn, p, n, float(z), names=["p"])
            out = expect_tensor(
                name,
                out,
                (K, 2),
                shape_hints={
                    (2, K): "transposed: one row per accuracy, columns [lower, upper]",
                    (K,): "one number per accuracy: return both ends, [lower, upper]",
                },
            )
            ref = measures.wilson_interval(p, n, float(z))
            se = (p * (1 - p) / n).sqrt()
            shrink = 1 + z**2 / n
            centre = (p + z**2 / (2 * n)) / shrink
            half = z / shrink * (p * (1 - p) / n + z**2 / (4 * n**2)).sqrt()

            def ends(c, h):
                return torch.stack([c - h, c + h], dim=-1)

            mistakes = {
                "the Wald interval p -/+ z sqrt(p (1 - p) / n): it is empty at 0% and 100%; Wilson's is centred "
                "at (p + z^2 / 2n) / (1 + z^2 / n)": ends(p, z * se),
                "the interval is centred at p: Wilson's centre is (p + z^2 / 2n) / (1 + z^2 / n)": ends(p, half),
                "the half-width lacks z^2 / (4 n^2) under the square root": ends(
                    centre, z / shrink * (p * (1 - p) / n).sqrt()
                ),
                "z was not squared: z^2 / n and z^2 / (2n) appear in the centre and the shrink factor": ends(
                    (p + z / (2 * n)) / (1 + z / n), z / (1 + z / n) * (p * (1 - p) / n + z / (4 * n**2)).sqrt()
                ),
                "z^2 / (4 n) where z^2 / (4 n^2) belongs under the square root": ends(
                    centre, z / shrink * (p * (1 - p) / n + z**2 / (4 * n)).sqrt()
                ),
                "the half-width was not divided by 1 + z^2 / n": ends(centre, half * shrink),
                "the columns are swapped: [lower, upper]": ends(centre, -half),
            }
            compare(
                name,
                out,
                ref,
                mistakes,
                tol=2e-6,  # float32 rounding of values up to 1
                context=f" for n={n}, z={z:g}",
                reference=measures.wilson_interval,
                args=(p, n, float(z)),
            )
    passed(name, f"n in {list(ns)}, z in {list(zs)}, seed {seed}")
