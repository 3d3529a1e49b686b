"""Small measurements a lab report quotes (lab 09): each turns raw runs into one number per digit or sampler.

    recognisable_from(probs, threshold)        [steps, N] -> int64 [N]: the first sampling step from which the
                                               classifier's p(intended digit | x0_hat) stays >= threshold
    t_from(curve, ts, threshold)               [steps] -> the time step t from which one curve stays >= threshold
                                               (-1: not even at the end); lab 05's exercise
    above_control(probs, labels)               [N, K] -> [N]: p(intended | x_n) minus what the classifier gives
                                               the same digit on the samples meant to be other digits
    quartiles_per_digit(values, labels)        -> [K, 3]: 25th percentile, median, 75th percentile per class
    later_than_rest(values, labels)            -> [K]: P(a value of class k > one of another class), ties half
                                               (Mann & Whitney 1947): "digit k needs more steps", as a number
    relative_clip_score(gen, gen_y, real, real_y)  -> [K]: per-class mean of generated / mean of real scores
    within_class_diversity(features, labels)   -> [K]: mean distance between two different samples of a class
    speedup_at_quality(seconds, quality, target, baseline_seconds)
                                               -> [S]: baseline time over each sampler's fastest good-enough time
    accuracy_margin(p, n)                      [K] -> [K]: how much lower an accuracy on n samples may be and
                                               still count as "as good": max(3 points, 2 s.e. of a difference)
    pareto_front(seconds, quality)             [M], [M] -> bool [M]: the settings no other is both as fast and as
                                               good as (and better in one): the ones worth using
    fewest_evaluations(nfes, quality, margin)  [K], [S, K] -> int64 [S]: each sampler's fewest NFE within margin
                                               of its own best quality (where its curve flattens; lab 07)
    wilson_interval(p, n, z)                   [K] -> [K, 2]: Wilson's interval for accuracies on n samples
                                               (not empty at 0% or 100%, unlike p -/+ z s.e.)
    heldout_x0_error(model, x0, y, noise, alpha_bars, log_snrs)
                                               -> []: median one-step x0 error at fixed log-SNRs (any T)
    r_squared(x, y)                            -> float: how straight y(x) is (a lab's claims)
    total_variation(images)                    [B, C, H, W] -> [B]: mean |difference| of neighbouring pixels, the
                                               grain of an image (lab 05's exercise)
    confusion_matrix(labels, predicted)        [N], [N] -> [K, K]: row k = how the samples of class k were
                                               classified, as shares (lab 06's exercise)
    pearson_r(x, y)                            [N], [N] -> []: Pearson's correlation coefficient (lab 06's exercise)

Classes without enough samples get NaN (a report says "not measured", never a made-up number). Lab 09's
exercises are these functions (same names, same arguments); its checks (``labkit.checks.lab09_report``)
compare the student's answers with them, in float64.
"""

from __future__ import annotations

import math

import torch


def recognisable_from(probs: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """probs [steps, N] (row 0 = the first sampling step, from pure noise) -> int64 [N]: per trajectory the
    smallest step k with probs[j, n] >= threshold for every j >= k; ``steps`` when the last one is below."""
    above = probs >= threshold  # [steps, N]
    trailing = above.flip(0).long().cumprod(dim=0).sum(dim=0)  # length of the final run at or above it
    return probs.shape[0] - trailing


def t_from(curve: torch.Tensor, ts: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """The time step from which one confidence curve *stays* at or above ``threshold``:   (lab 05)

        k* = min { k : curve[j] >= threshold for every j >= k },   t_from = ts[k*]   (-1 when curve[-1] < threshold)

    curve [steps] (row 0 = the first sampling step, from pure noise), ts int64 [steps] (the model's time step t
    of each row, descending) -> int64 0-d tensor. Unlike the *first* step at which the curve reaches the
    threshold, a lucky early value, or a judge that reads one digit into noise, does not count unless it lasts
    to the end. The per-trajectory form is ``recognisable_from`` (lab 09)."""
    k = int(recognisable_from(curve.detach().reshape(-1, 1), threshold)[0])  # an index into the steps
    return torch.as_tensor(ts)[k].long().cpu() if k < len(curve) else torch.tensor(-1)


def above_control(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """probs [N, K] (the judge's class probabilities for N samples of one step), labels [N] -> [N] float64:   (lab 05)

        margin_n = p(y_n | x_n) - mean_{m : y_m != y_n} p(y_n | x_m)

    how much more the judge believes "this is a y_n" of the sample meant to be a y_n than of the samples meant
    to be other digits, at the same step. A judge that reads one digit into noise (every early guess "is an 8")
    gives that digit a margin near 0 until the samples really differ: the per-digit control, built into the
    measure. NaN for a digit without samples of other digits."""
    p, y = probs.detach().double().cpu(), labels.detach().long().cpu()
    own = p.gather(1, y[:, None])[:, 0]  # [N] p(y_n | x_n)
    K = p.shape[1]
    onehot = torch.nn.functional.one_hot(y, K).double()  # [N, K]
    totals = p.sum(0)  # [K]: sum over all samples of p(k | x_m)
    same = (onehot * p).sum(0)  # [K]: the part from samples meant to be k
    others = len(y) - onehot.sum(0)  # [K]: how many samples are meant to be another digit
    control = (totals - same) / others  # [K]: mean p(k | x_m) over samples meant to be another digit
    return own - control[y]


def quartiles_per_digit(values: torch.Tensor, labels: torch.Tensor, num_classes: int = 10) -> torch.Tensor:
    """[num_classes, 3] float64: 25th percentile, median, 75th percentile of each class's values (linear
    interpolation, as ``torch.quantile``); NaN for a class without values."""
    v, y = values.detach().double().cpu(), labels.detach().long().cpu()
    q = torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)
    rows = [
        torch.quantile(v[y == k], q) if bool((y == k).any()) else torch.full((3,), math.nan, dtype=torch.float64)
        for k in range(num_classes)
    ]
    return torch.stack(rows)


def later_than_rest(values: torch.Tensor, labels: torch.Tensor, num_classes: int = 10) -> torch.Tensor:
    """[num_classes] float64: for each class k, the probability that a value of class k is larger than a value of
    another class, ties counted half (the Mann-Whitney statistic U over n_k n_rest, Mann & Whitney 1947; the
    "common-language effect size" of McGraw & Wong 1992):

        P_k = mean over pairs (i with y_i = k, j with y_j != k) of  [v_i > v_j] + 0.5 [v_i = v_j]

    0.5: class k is neither later nor earlier than the rest; 1: every value of k is larger. With v the step at
    which a trajectory commits, P_8 > 0.5 says "8s need more steps". Without a difference, P_k scatters around
    0.5 with standard deviation sqrt((n_k + n_rest + 1) / (12 n_k n_rest)) (U's null variance, no ties; ties
    make it smaller). NaN for a class without values, or without values of other classes."""
    v, y = values.detach().double().cpu(), labels.detach().long().cpu()
    out = []
    for k in range(num_classes):
        mine, rest = v[y == k], v[y != k]
        if len(mine) == 0 or len(rest) == 0:
            out.append(torch.tensor(math.nan, dtype=torch.float64))
            continue
        diff = mine[:, None] - rest[None, :]  # [n_k, n_rest], every pair once
        out.append((diff > 0).double().mean() + 0.5 * (diff == 0).double().mean())
    return torch.stack(out)


def _class_means(s: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    s, y = s.detach().double().cpu(), y.detach().long().cpu()
    return torch.stack(
        [
            s[y == k].mean() if bool((y == k).any()) else torch.tensor(math.nan, dtype=torch.float64)
            for k in range(num_classes)
        ]
    )


def relative_clip_score(
    gen_scores: torch.Tensor,
    gen_labels: torch.Tensor,
    real_scores: torch.Tensor,
    real_labels: torch.Tensor,
    num_classes: int = 10,
) -> torch.Tensor:
    """[num_classes] float64: mean score of the generated digits of each class over the mean score of the
    real digits of that class (1.0 = as good as real digits); NaN where a class is missing on either side."""
    return _class_means(gen_scores, gen_labels, num_classes) / _class_means(real_scores, real_labels, num_classes)


def within_class_diversity(features: torch.Tensor, labels: torch.Tensor, num_classes: int = 10) -> torch.Tensor:
    """[num_classes] float64: mean Euclidean distance between two different samples of the same class
    (features [N, D], e.g. the classifier's penultimate layer); NaN for a class with fewer than two."""
    f, y = features.detach().double().cpu(), labels.detach().long().cpu()
    out = []
    for k in range(num_classes):
        x = f[y == k]
        n = len(x)
        out.append(torch.cdist(x, x).sum() / (n * (n - 1)) if n >= 2 else torch.tensor(math.nan, dtype=torch.float64))
    return torch.stack(out)


def speedup_at_quality(
    seconds: torch.Tensor, quality: torch.Tensor, target: float, baseline_seconds: float
) -> torch.Tensor:
    """seconds, quality [S, K] (one row per sampler, one column per setting) -> [S] float64: baseline_seconds
    over the time of each sampler's fastest setting with quality >= target; 0.0 where none reaches it."""
    s, q = seconds.detach().double().cpu(), quality.detach().double().cpu()
    masked = torch.where(q >= target, s, torch.full_like(s, math.inf))
    fastest = masked.min(dim=1).values
    return torch.where(torch.isfinite(fastest), baseline_seconds / fastest, torch.zeros_like(fastest))


def pareto_front(seconds: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """seconds, quality [M] (one entry per setting: a sampler and its number of steps) -> bool [M]: True for the
    settings on the Pareto front of time against quality (Pareto 1906; the "optimal trade-offs" of a
    quality-vs-cost table). Setting j dominates setting i when

        seconds_j <= seconds_i  and  quality_j >= quality_i,  and  seconds_j < seconds_i  or  quality_j > quality_i

    (as fast and as good, and strictly better in one); the front is every setting no other dominates. Two
    settings with equal time and equal quality do not dominate each other: both stay on the front."""
    s, q = seconds.detach().double().cpu(), quality.detach().double().cpu()
    as_fast = s[None, :] <= s[:, None]  # [i, j]: j takes at most i's time
    as_good = q[None, :] >= q[:, None]  # [i, j]: j is at least as good as i
    better = (s[None, :] < s[:, None]) | (q[None, :] > q[:, None])  # [i, j]: strictly better in one
    return ~(as_fast & as_good & better).any(dim=1)


def accuracy_margin(p, n: int, points: float = 0.03) -> torch.Tensor:
    """Accuracies p (a float or [K]) measured on n samples each -> how far below p another accuracy on n samples
    may fall and still count as "as good" (lab 09):

        margin = max(points, 2 * sqrt(2 p (1 - p) / n)),   p clamped to [1/n, 1 - 1/n]

    two standard errors of the *difference* of two such accuracies (each has variance p (1 - p) / n, the
    binomial's; a difference of two independent ones, twice that), and never less than ``points``. The clamp
    keeps a measured 100% from claiming a standard error of 0."""
    p = torch.as_tensor(p, dtype=torch.float64).clamp(1 / n, 1 - 1 / n)  # [K] or []
    return torch.clamp(2 * torch.sqrt(2 * p * (1 - p) / n), min=points)


def fewest_evaluations(nfes: torch.Tensor, quality: torch.Tensor, margin: float) -> torch.Tensor:
    """nfes int64 [K] (the settings' numbers of network evaluations, in any order), quality [S, K] (one row per
    sampler, higher is better) -> int64 [S]: for each sampler the smallest NFE whose quality is within ``margin`` of
    that sampler's best,

        fewest_s = min { nfes_k : quality_{s,k} >= max_j quality_{s,j} - margin }

    where its quality curve has flattened ("the knee"): more evaluations cost time and buy no more than ``margin``
    (lab 07 takes the accuracy's sampling noise, ``accuracy_margin``)."""
    q = quality.detach().double().cpu()
    good = q >= q.max(dim=1, keepdim=True).values - margin  # [S, K]: within margin of the row's best
    n = nfes.detach().long().cpu()[None, :].expand_as(good)  # [S, K]
    return torch.where(good, n, torch.full_like(n, torch.iinfo(torch.int64).max)).min(dim=1).values


def wilson_interval(p, n: int, z: float = 1.96) -> torch.Tensor:
    """Accuracies p (a float or [K]) measured on n samples -> [K, 2] float64: the lower and upper end of each one's
    Wilson score interval (Wilson 1927; z = 1.96 for 95%, 2 for about two standard errors):

        centre = (p + z^2 / (2n)) / (1 + z^2 / n)
        half   = z / (1 + z^2 / n) * sqrt(p (1 - p) / n + z^2 / (4 n^2))
        [centre - half, centre + half]

    Unlike the "Wald" interval p -/+ z sqrt(p (1 - p) / n), it never shrinks to nothing at 0% or 100% (a measured
    100% on 100 samples still leaves room for 96%) and never leaves [0, 1]."""
    p = torch.as_tensor(p, dtype=torch.float64).reshape(-1)  # [K]
    shrink = 1 + z**2 / n
    centre = (p + z**2 / (2 * n)) / shrink
    half = z / shrink * torch.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    return torch.stack([centre - half, centre + half], dim=-1)


def heldout_x0_error(
    model,
    images: torch.Tensor,
    labels: torch.Tensor,
    noise: torch.Tensor,
    alpha_bars: torch.Tensor,
    log_snrs=(2.0, 0.0, -2.0),
) -> torch.Tensor:
    """How well a noise predictor recovers held-out digits in one step, comparable across T and schedules (lab 09).

    For each level L of ``log_snrs``: the step t whose log-SNR, log(abar_t / (1 - abar_t)), is closest to L;
    x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise (Ho et al. 2020, eq. 4); the one-step guess
    x0_hat = (x_t - sqrt(1 - abar_t) model(x_t, t, y)) / sqrt(abar_t), clamped to [-1, 1] (eq. 15); each image's
    mean squared error to x0. Returns the median over all images and levels (a 0-d tensor).
    images, noise [B, C, H, W]; labels int64 [B]; alpha_bars [T]."""
    log_snr = torch.log(alpha_bars / (1 - alpha_bars))  # [T]
    errors = []
    for level in log_snrs:
        t = int((log_snr - level).abs().argmin())
        ab = alpha_bars[t].to(images.dtype)
        x_t = ab.sqrt() * images + (1 - ab).sqrt() * noise  # [B, C, H, W]
        eps_hat = model(x_t, torch.full((len(images),), t, device=images.device), labels)
        x0_hat = ((x_t - (1 - ab).sqrt() * eps_hat) / ab.sqrt()).clamp(-1, 1)
        errors.append(((x0_hat - images) ** 2).flatten(1).mean(1))  # [B]
    return torch.cat(errors).median()


def r_squared(x: torch.Tensor, y: torch.Tensor) -> float:
    """x, y [N] -> the share of y's variance a straight line a + b x explains (1: y lies on a line; 0: the line
    explains nothing): R^2 = 1 - sum (y - a - b x)^2 / sum (y - mean y)^2, with a, b fitted by least squares."""
    x, y = x.double(), y.double()
    design = torch.stack([x, torch.ones_like(x)], dim=1)  # [N, 2]
    fit = torch.linalg.lstsq(design, y[:, None]).solution  # [2, 1]
    residual = y - (design @ fit)[:, 0]
    return float(1 - residual.pow(2).sum() / (y - y.mean()).pow(2).sum())


def confusion_matrix(labels: torch.Tensor, predicted: torch.Tensor, num_classes: int = 10) -> torch.Tensor:
    """The row-normalised confusion matrix of a classifier:   (lab 06)

        C[k, j] = #{n : labels_n = k and predicted_n = j} / #{n : labels_n = k}      (0 for a class without samples)

    labels, predicted: int64 [N] in 0..num_classes-1 -> float64 [num_classes, num_classes]; row k is the true
    class, column j the answer, so each row with samples sums to 1 and the diagonal holds the per-class accuracy."""
    y, p = labels.detach().long().cpu(), predicted.detach().long().cpu()
    counts = torch.zeros(num_classes, num_classes, dtype=torch.float64)
    counts.index_put_((y, p), torch.ones(len(y), dtype=torch.float64), accumulate=True)  # [K, K] counts
    return counts / counts.sum(dim=1, keepdim=True).clamp(min=1)


def pearson_r(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pearson's correlation coefficient of two paired samples (Pearson 1895):   (lab 06)

        r = sum_n (x_n - mean x)(y_n - mean y) / sqrt(sum_n (x_n - mean x)^2 * sum_n (y_n - mean y)^2)

    x, y: [N] -> a 0-d float64 tensor in [-1, 1] (1: y rises with x along a straight line; 0: no linear trend)."""
    dx, dy = x.detach().double() - x.detach().double().mean(), y.detach().double() - y.detach().double().mean()
    return (dx * dy).sum() / ((dx * dx).sum() * (dy * dy).sum()).sqrt()


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """The grain of each image: its mean absolute difference between neighbouring pixels (anisotropic total
    variation, Rudin, Osher & Fatemi 1992, per pixel pair):   (lab 05)

        TV(x) = 1/2 * ( mean_{c,i,j} |x[c, i+1, j] - x[c, i, j]| + mean_{c,i,j} |x[c, i, j+1] - x[c, i, j]| )

    images [B, C, H, W] -> [B] (in the images' dtype): 0 for a flat image, larger for speckled ones."""
    down = (images[..., 1:, :] - images[..., :-1, :]).abs().flatten(1).mean(dim=1)  # [B] vertical neighbours
    right = (images[..., :, 1:] - images[..., :, :-1]).abs().flatten(1).mean(dim=1)  # [B] horizontal neighbours
    return (down + right) / 2
