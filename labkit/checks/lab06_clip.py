"""Checks for lab 06 (CLIP evaluation). References: ``labkit.embeddings.cosine_similarity`` and
``labkit.evaluation.clip.zero_shot_probs`` (both used by ``ClipScorer.score``), in float64.

    check_cosine_similarity(cosine_similarity)   normalise each row, then [N,D] @ [K,D]^T -> [N,K]
    check_zero_shot_probs(zero_shot_probs)       softmax over the K prompts of logit_scale * cosine
                                                 (Radford et al. 2021, Figure 3's pseudocode)

FID (references in ``labkit.evaluation.fid``, the functions every FID of the course goes through):

    check_feature_stats(feature_stats)           features [N,D] -> (mean [D], covariance [D,D] with N - 1)
    check_frechet_distance(frechet_distance)     ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))
                                                 (Heusel et al. 2017, eq. 6)
    check_bootstrap_interval(bootstrap_interval) percentile bootstrap with replacement (Efron 1979)
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from labkit import embeddings
from labkit.evaluation import clip, fid, measures
from labkit.checks._common import call, compare, expect_tensor, fail, generator, max_abs_diff, passed
from labkit.checks._common import yours_or_labkit  # noqa: F401  (the lab's later cells: yours or labkit's)
from labkit.checks.fixtures import lab_clip  # noqa: F401  (CLIP for labs 06 and 08)


def _unit(v: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return v / (v * v).sum(dim=dim, keepdim=True).sqrt()


def check_cosine_similarity(student_fn, *, seed: int = 0, sizes=((5, 3, 8), (1, 10, 32), (7, 7, 4))) -> None:
    """student_fn(image_emb [N,D], text_emb [K,D]) -> cosine similarities [N,K] (row n, column k)."""
    name = "check_cosine_similarity"
    g = generator(seed)
    for N, K, D in sizes:
        # rows of very different lengths (as real embeddings have), so a missing normalisation shows
        img = torch.randn(N, D, generator=g) * (0.2 + 5 * torch.rand(N, 1, generator=g))
        txt = torch.randn(K, D, generator=g) * (0.2 + 5 * torch.rand(K, 1, generator=g))
        out = call(name, student_fn, img, txt, names=["image_emb", "text_emb"])
        out = expect_tensor(
            name,
            out,
            (N, K),
            shape_hints={
                (K, N): "the result is transposed: image_emb @ text_emb.T gives [N, K] (one row per image)",
                (N, N): "you multiplied the images with themselves; use the text embeddings",
                (D, D): "a matrix product over the wrong dimension: image_emb [N, D] @ text_emb.T [D, K]",
            },
        )
        i, t = img.double(), txt.double()
        ref = embeddings.cosine_similarity(i, t)
        mistakes = {
            "no normalisation: divide each embedding by its own length before the product": i @ t.T,
            "only the image embeddings were normalised; normalise the text embeddings too": _unit(i) @ t.T,
            "only the text embeddings were normalised; normalise the image embeddings too": i @ _unit(t).T,
            "normalised along the wrong dimension: each *row* (one embedding, dim=-1) must have length 1": _unit(i, 0)
            @ _unit(t, 0).T,
            "a softmax was applied: cosine similarity is the plain product of unit vectors": (
                _unit(i) @ _unit(t).T
            ).softmax(1),
            "divided by squared lengths: a unit vector is v / ||v||, not v / ||v||^2": (
                i / (i * i).sum(1, keepdim=True)
            )
            @ (t / (t * t).sum(1, keepdim=True)).T,
        }
        mistakes.update(
            {
                "divided by the product of the matrices' total lengths: normalise each row by its own length": (i @ t.T)
                / (i.norm() * t.norm()),
                "that is the cosine *distance* 1 - cos; return the similarity itself": 1 - ref,
                "each embedding divided by its squared length on one side only: a unit vector is v / ||v||": (
                    i / (i * i).sum(1, keepdim=True)
                )
                @ _unit(t).T,
            }
        )
        compare(
            name,
            out,
            ref,
            mistakes,
            tol=1e-5,
            context=f" for N={N}, K={K}, D={D}",
            reference=embeddings.cosine_similarity,
            args=(img, txt),
        )
    passed(name, f"sizes {[list(s) for s in sizes]}, seed {seed}")


def check_zero_shot_probs(student_fn, *, seed: int = 0, sizes=((4, 10), (3, 2), (6, 5)), scales=(100.0, 12.5)) -> None:
    """student_fn(cosine [N,K], logit_scale: float) -> probabilities [N,K], each row summing to 1."""
    name = "check_zero_shot_probs"
    g = generator(seed)
    for N, K in sizes:
        for scale in scales:
            cos = 0.15 + 0.2 * torch.rand(N, K, generator=g)  # CLIP cosines are small and close together
            out = call(name, student_fn, cos, float(scale), names=["cosine"])
            out = expect_tensor(
                name,
                out,
                (N, K),
                shape_hints={
                    (K, N): "the result is transposed: keep one row per image",
                    (N,): "you returned one number per image (the argmax or the max?); return the whole [N, K] softmax",
                },
            )
            c = cos.double()
            ref = clip.zero_shot_probs(c, scale)
            mistakes = {
                "the softmax runs over the images (dim=0); it runs over the prompts of each image (dim=1)": (
                    scale * c
                ).softmax(dim=0),
                "logit_scale is missing: softmax(logit_scale * cosine), CLIP's learned temperature makes "
                "the distribution sharp": c.softmax(dim=1),
                "divided by logit_scale; multiply: logits = logit_scale * cosine": (c / scale).softmax(dim=1),
                "log-probabilities (log_softmax); return probabilities": (scale * c).log_softmax(dim=1),
                "logit_scale applied after the softmax": scale * c.softmax(dim=1),
                "a sigmoid per prompt; the zero-shot classifier is a softmax over all prompts": torch.sigmoid(
                    scale * c
                ),
                "normalised by the sum without exp: use a softmax": (scale * c) / (scale * c).sum(1, keepdim=True),
            }
            mistakes.update(
                {
                    "the exponentials were normalised over the whole matrix: each image's row is its own softmax": (
                        scale * c
                    ).exp()
                    / (scale * c).exp().sum(),
                    "the maximum was subtracted without the exp (or the exp without normalising): use a softmax "
                    "over each row": (scale * c).exp(),
                    "the logits were normalised before the softmax: softmax(logit_scale * cosine) uses them as they are": (
                        scale * c / (scale * c).norm(dim=1, keepdim=True)
                    ).softmax(dim=1),
                }
            )
            compare(
                name,
                out,
                ref,
                mistakes,
                tol=1e-5,
                context=f" for N={N}, K={K}, logit_scale={scale:g}",
                reference=clip.zero_shot_probs,
                args=(cos, float(scale)),
            )
            rows = out.double().sum(dim=1)
            if (rows - 1).abs().max().item() > 1e-4:
                fail(name, "rows do not sum to 1")
    passed(name, f"sizes {[list(s) for s in sizes]}, scales {list(scales)}, seed {seed}")


# --- FID: feature statistics, the Frechet distance, a bootstrap interval -----------------------------------


def _features(N: int, D: int, g: torch.Generator) -> torch.Tensor:
    """[N, D] correlated features with a different mean per column (as a network's features are)."""
    mix = torch.randn(D, D, generator=g) / math.sqrt(D) + torch.eye(D)
    return torch.randn(N, D, generator=g) @ mix + 3 * torch.randn(D, generator=g)


def _pair(check: str, out, what: str):
    if isinstance(out, torch.Tensor) or not isinstance(out, (tuple, list)) or len(out) != 2:
        fail(
            check,
            f"return two things, ({what}); got {type(out).__name__}"
            + (f" of length {len(out)}" if isinstance(out, (tuple, list)) else ""),
        )
    return out


def check_feature_stats(student_fn, *, seed: int = 0, sizes=((50, 4), (9, 3), (6, 6))) -> None:
    """student_fn(features [N,D]) -> (mean [D], covariance [D,D]) over the N samples (rows), the covariance
    with the unbiased normaliser N - 1 (as torch.cov and numpy.cov)."""
    name = "check_feature_stats"
    g = generator(seed)
    for N, D in sizes:
        f = _features(N, D, g)
        out = _pair(name, call(name, student_fn, f, names=["features"]), "mean, covariance")
        context = f" for features of shape [{N}, {D}]"
        x = f.double()
        mu_ref, cov_ref = fid.feature_stats(x)
        mu = expect_tensor(
            name,
            out[0],
            (D,),
            what="the mean",
            shape_hints={
                (N,): "the mean has one value per sample: average each feature over the samples (the rows, dim=0)",
                (1, D): "the mean has shape [1, D]: return it as [D] (no keepdim)",
                (): "the mean is one number: average over the samples only (dim=0), one mean per feature",
            },
        )
        compare(
            name,
            mu,
            mu_ref,
            {
                "the mean of each row (one sample's features): average each feature over the samples, dim=0": x.mean(
                    dim=1
                ),
                "a sum, not a mean: divide by the number of samples N": x.sum(dim=0),
            },
            tol=1e-5 * (1 + mu_ref.abs().max().item()),
            context=context + " (the mean)",
        )
        cov = expect_tensor(
            name,
            out[1],
            (D, D),
            what="the covariance",
            shape_hints={
                (N, N): "the covariance is [N, N]: it compares samples with samples. Features are [N, D] with one "
                "row per sample; the covariance compares features, [D, D] (torch.cov wants one *row* per "
                "feature)",
                (D,): "only the variances (one per feature): FID needs the whole covariance matrix [D, D]",
            },
        )
        c = x - mu_ref  # [N, D] centred
        rows = x - x.mean(dim=1, keepdim=True)  # centred with each row's own mean
        scale = 1 + cov_ref.abs().max().item()
        compare(
            name,
            cov,
            cov_ref,
            {
                "divided by N (the biased covariance): FID's covariance uses the unbiased N - 1, as torch.cov": c.T
                @ c
                / N,
                "the features were not centred: subtract the mean of each feature before the product": x.T
                @ x
                / (N - 1),
                "not divided by N - 1: the covariance is an average of products": c.T @ c,
                "centred with each row's mean: subtract each *feature's* mean over the samples (dim=0)": rows.T
                @ rows
                / (N - 1),
                "transposed: the covariance of the samples (one row each), not of the features; torch.cov wants "
                "one row per feature": (x.T - x.T.mean(dim=0)) @ (x.T - x.T.mean(dim=0)).T / (D - 1) if D > 1 else None,
                "the correlation matrix (each entry divided by two standard deviations): keep the covariance": cov_ref
                / torch.outer(cov_ref.diagonal().sqrt(), cov_ref.diagonal().sqrt()),
                "only the variances (a diagonal matrix): FID needs the whole covariance, off-diagonal entries "
                "included": torch.diag(cov_ref.diagonal()),
                "divided by D - 1, the number of features: divide by N - 1, the number of samples minus one": c.T
                @ c
                / (D - 1)
                if D > 1
                else None,
            },
            tol=1e-5 * scale,
            context=context + " (the covariance)",
        )
    passed(name, f"sizes {[list(s) for s in sizes]}, seed {seed}")


def _covariance(D: int, g: torch.Generator, floor: float) -> torch.Tensor:
    a = torch.randn(D, D, generator=g)
    return a @ a.T / D + floor * torch.eye(D)


def _psd_sqrt(s: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh(s)
    return (vecs * vals.clamp(min=0).sqrt()) @ vecs.T


def _number(check: str, out) -> torch.Tensor:
    """A float, an int or a one-element tensor -> float64 [1]."""
    if isinstance(out, bool) or out is None:
        fail(
            check,
            "the result is None: did you forget the `return` statement?"
            if out is None
            else "the result is a bool; return the distance, a number",
        )
    if isinstance(out, (int, float)):
        return torch.tensor([float(out)], dtype=torch.float64)
    out = expect_tensor(check, out, None, what="the distance")
    if out.numel() != 1:
        fail(
            check,
            f"the distance has shape {list(out.shape)}: return one number (a float or a 0-d tensor), "
            "the sum of the mean term and the trace term",
        )
    if out.is_complex():
        fail(check, "the distance is complex: keep the real part of the eigenvalues before the square root")
    return out.reshape(1).double()


def check_frechet_distance(student_fn, *, seed: int = 0, dims=(3, 1, 8, 16)) -> None:
    """student_fn(mu1 [D], sigma1 [D,D], mu2 [D], sigma2 [D,D]) -> a number: the squared Frechet distance
    ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) between N(mu1, S1) and N(mu2, S2) (Heusel et al. 2017)."""
    name = "check_frechet_distance"
    g = generator(seed)
    for D in dims:
        mu1, mu2 = torch.randn(D, generator=g), 0.5 * torch.randn(D, generator=g)
        s1, s2 = _covariance(D, g, 0.2), 2.0 * _covariance(D, g, 0.1)
        out = _number(name, call(name, student_fn, mu1, s1, mu2, s2, names=["mu1", "sigma1", "mu2", "sigma2"]))
        m1, m2, a, b = mu1.double(), mu2.double(), s1.double(), s2.double()
        ref = torch.tensor([fid.frechet_distance(m1, a, m2, b)], dtype=torch.float64)
        mean_sq = ((m1 - m2) ** 2).sum()
        traces = torch.trace(a) + torch.trace(b)
        tr_sqrt = torch.linalg.eigvals(a @ b).real.clamp(min=0).sqrt().sum()  # Tr((S1 S2)^(1/2))
        diag_ab = (a @ b).diagonal()

        def d(*terms):
            return torch.stack([sum(terms)]).double()

        mistakes = {
            "the factor 2 is missing: the cross term is -2 Tr((S1 S2)^(1/2))": d(mean_sq, traces, -tr_sqrt),
            "the square roots of S1 and S2 were taken separately: Tr(S1^(1/2) S2^(1/2)) is not "
            "Tr((S1 S2)^(1/2)); take the square root of the product": d(
                mean_sq, traces, -2 * torch.trace(_psd_sqrt(a) @ _psd_sqrt(b))
            ),
            "the mean term is not squared: it is ||mu1 - mu2||^2, the squared length": d(
                mean_sq.sqrt(), traces, -2 * tr_sqrt
            ),
            "the mean term is missing: ||mu1 - mu2||^2 + the trace term": d(traces, -2 * tr_sqrt),
            "the trace term is missing: the covariances count too (Tr(S1 + S2 - 2 (S1 S2)^(1/2)))": d(mean_sq),
            "no square root of S1 S2: the cross term is -2 Tr((S1 S2)^(1/2))": d(
                mean_sq, traces, -2 * torch.trace(a @ b)
            ),
            "an elementwise square root: (S1 S2)^(1/2) is the matrix square root (from the eigenvalues), "
            "not the square root of each entry": d(mean_sq, traces, -2 * diag_ab.clamp(min=0).sqrt().sum()),
            "the square root of the trace: Tr((S1 S2)^(1/2)) is the sum of the square roots of the "
            "eigenvalues, not the square root of their sum": d(mean_sq, traces, -2 * torch.trace(a @ b).sqrt()),
            "the cross term was added: it is subtracted, -2 Tr((S1 S2)^(1/2))": d(mean_sq, traces, 2 * tr_sqrt),
            "the distance d, not its square: FID is the squared Frechet distance d^2 (no square root at the end)": ref.sqrt(),
        }
        tol = 2e-5 * float(mean_sq + traces + 1)  # float32 eigenvalues of a [D, D] product: ~1e-6 of the traces
        compare(name, out, ref, mistakes, tol=tol, context=f" for D={D}")
    passed(name, f"dimensions {list(dims)}, seed {seed}")


# statistics for check_bootstrap_interval: module-level, so the grader can send them to the kernel (pickle)
def sample_mean(samples: torch.Tensor) -> float:
    """The mean of all values of a resample."""
    return float(samples.double().mean())


def largest(samples: torch.Tensor) -> float:
    """The largest value of a resample (not smooth: its bootstrap values take only a few distinct values)."""
    return float(samples.max())


def check_bootstrap_interval(
    student_fn, *, seed: int = 0, cases=((30, 200, 0.9, "mean"), (12, 100, 0.95, "fid"), (25, 150, 0.8, "max"))
) -> None:
    """student_fn(samples [N, ...], statistic, resamples, level, generator) -> (low, high): the percentile
    bootstrap interval (labkit.evaluation.fid.bootstrap_interval); the indices come from one
    torch.randint(0, N, (resamples, N)) draw from ``generator``."""
    name = "check_bootstrap_interval"
    g = generator(seed)
    for k, (N, B, level, kind) in enumerate(cases):
        if kind == "fid":  # FID of a resample of 3-d features against fixed reference statistics
            samples = _features(int(N), 3, g)
            mu, sigma = fid.feature_stats(_features(40, 3, g))
            statistic = functools.partial(fid.fid_of_features, mu, sigma)
        else:
            samples = torch.randn(int(N), generator=g).exp()  # skewed values
            statistic = sample_mean if kind == "mean" else largest
        gen_seed = 1000 * seed + k
        out = call(
            name,
            student_fn,
            samples,
            statistic,
            int(B),
            float(level),
            generator(gen_seed),
            names=["samples", "statistic", "resamples", "level", "generator"],
            hints={
                "q values must be in the range": "percentiles go to torch.quantile as fractions in "
                "[0, 1] (0.05), not as percent (5)"
            },
        )
        if (
            isinstance(out, (tuple, list))
            and len(out) == 2
            and all(isinstance(v, (int, float, torch.Tensor)) for v in out)
        ):
            out = torch.stack([torch.as_tensor(v, dtype=torch.float64).detach().cpu().reshape(()) for v in out])
        out = expect_tensor(
            name,
            out,
            (2,),
            what="the interval",
            shape_hints={
                (int(B),): "you returned the resampled statistics: return their two percentiles (low, high)",
                (): "you returned one number: return the interval, (low, high)",
            },
        )
        x = samples.double()
        ref = fid.bootstrap_interval(x, statistic, int(B), float(level), generator(gen_seed))
        idx = torch.randint(0, int(N), (int(B), int(N)), generator=generator(gen_seed))  # [B, N] the right draws
        values = torch.tensor([float(statistic(x[i])) for i in idx], dtype=torch.float64)  # [B]
        whole = float(statistic(x))
        tail = (1 - level) / 2

        def q(lo, hi, how="linear", v=values):
            return torch.quantile(v, torch.tensor([lo, hi], dtype=torch.float64), interpolation=how)

        wrong_rows = torch.randint(0, int(N), (int(N), int(B)), generator=generator(gen_seed)).T  # [B, N]
        square = torch.randint(0, int(N), (int(B), int(B)), generator=generator(gen_seed))  # B draws, not N
        mistakes = {
            "every resample gave the statistic of the whole sample (the interval has width 0): draw the N indices "
            "*with replacement*, so that some samples repeat and others are left out (a permutation only "
            "reorders them)": torch.tensor([whole, whole], dtype=torch.float64),
            "the percentiles are 1 - level and level: the 1 - level left outside the interval is split between "
            "the two tails, (1 - level) / 2 each": q(min(1 - level, level), max(1 - level, level)),
            "the tails are level / 2 wide: each tail holds (1 - level) / 2 of the resampled values": q(
                min(level / 2, 1 - level / 2), max(level / 2, 1 - level / 2)
            ),
            "the percentiles were read at the nearest rank: interpolate linearly between ranks "
            "(torch.quantile's default)": (
                q(tail, 1 - tail, "nearest"),
                q(tail, 1 - tail, "lower"),
                q(tail, 1 - tail, "higher"),
            ),
            "the interval is (high, low): return (low, high)": ref.flip(0),
            "the smallest and the largest resampled value: the interval lies between the two percentiles": torch.stack(
                [values.min(), values.max()]
            ),
            "the indices were drawn as [N, resamples]: draw them as [resamples, N] (one row per resample), in "
            "one call": q(
                tail, 1 - tail, v=torch.tensor([float(statistic(x[i])) for i in wrong_rows], dtype=torch.float64)
            ),
            "each resample holds `resamples` indices: it holds N, as many as the samples": q(
                tail, 1 - tail, v=torch.tensor([float(statistic(x[i])) for i in square], dtype=torch.float64)
            ),
        }
        tol = 1e-5 * (1 + ref.abs().max().item())
        again = call(name, student_fn, samples, statistic, int(B), float(level), generator(gen_seed))
        if isinstance(again, (tuple, list)) and len(again) == 2:
            again = torch.stack([torch.as_tensor(v, dtype=torch.float64).detach().cpu().reshape(()) for v in again])
        if not isinstance(again, torch.Tensor) or max_abs_diff(again, out) > tol:
            fail(
                name,
                "two calls with generators in the same state gave different intervals: draw the indices "
                "from `generator`, not from torch's global random state",
            )
        context = f" for N={N}, resamples={B}, level={level:g}, statistic {kind}"
        compare(name, out, ref, mistakes, tol=tol, context=context)
    passed(name, f"cases {[list(c) for c in cases]}, seed {seed}")


# --- CLIP's input, prompt ensembling, "clear or blurry?" ------------------------------------------------------

CLIP_MEAN, CLIP_STD = clip.OPENAI_MEAN, clip.OPENAI_STD  # three numbers each, one per colour channel


def _digits(B: int, H: int, g: torch.Generator) -> torch.Tensor:
    """[B, 1, H, H] in [0, 1] like MNIST: mostly 0 (background), strokes at 1, some grey edges, so that a
    bicubic resize overshoots [0, 1] near the strokes."""
    u = torch.rand(B, 1, H, H, generator=g)
    return torch.where(u > 0.75, torch.ones_like(u), torch.where(u > 0.6, u, torch.zeros_like(u)))


def check_clip_preprocess(student_fn, *, seed: int = 0, sizes=((3, 28, 32), (2, 28, 64), (1, 12, 20))) -> None:
    """student_fn(images [B,1,H,H] in [0,1], size S, mean (3 numbers), std (3 numbers)) -> [B,3,S,S]: bicubic
    resize to S x S, clamp to [0, 1], grey copied to 3 channels, (x - mean[c]) / std[c];
    reference ``labkit.evaluation.clip.clip_preprocess``."""
    name = "check_clip_preprocess"
    g = generator(seed)
    for k, (B, H, S) in enumerate(sizes):
        B, H, S = int(B), int(H), int(S)
        images = _digits(B, H, g)
        jitter = 0.05 * torch.rand(2, 3, generator=g, dtype=torch.float64)  # other models have other numbers
        mean = tuple(float(m + j) for m, j in zip(CLIP_MEAN, jitter[0])) if k else CLIP_MEAN
        std = tuple(float(s + j) for s, j in zip(CLIP_STD, jitter[1])) if k else CLIP_STD
        out = call(name, student_fn, images, S, mean, std, names=["images"])
        out = expect_tensor(
            name,
            out,
            (B, 3, S, S),
            shape_hints={
                (B, 1, S, S): "one channel: CLIP reads colour images, so copy the grey channel into R, G and B",
                (B, 3, H, H): "not resized: CLIP's encoder reads S x S images",
                (B, 1, H, H): "neither resized nor turned into three channels",
            },
        )
        x = images.double()
        ref = clip.clip_preprocess(x, S, mean, std)
        m = torch.tensor(mean, dtype=torch.float64).view(1, 3, 1, 1)
        s = torch.tensor(std, dtype=torch.float64).view(1, 3, 1, 1)

        def resize(v, mode="bicubic", **kw):
            return F.interpolate(v, size=(S, S), mode=mode, **kw)

        up = resize(x, align_corners=False).expand(-1, 3, -1, -1)  # [B, 3, S, S], not clamped
        clamped = up.clamp(0, 1)
        mistakes = {
            "the bicubic overshoot was not clipped: clamp the resized image to [0, 1] before normalising": (up - m) / s,
            "no normalisation: subtract each channel's mean and divide by its std": clamped,
            "divided by the variance: (x - mean) / std, not / std^2": (clamped - m) / s**2,
            "multiplied by the std: normalise with (x - mean) / std": (clamped - m) * s,
            "the mean was subtracted after dividing (x / std - mean): subtract first, (x - mean) / std": clamped / s
            - m,
            "the std was not applied: (x - mean) / std": clamped - m,
            "clamped after normalising: clip the resized image to [0, 1] first, then normalise (normalised "
            "values are not in [0, 1])": ((up - m) / s).clamp(0, 1),
            "bilinear resizing: CLIP's preprocessing resizes with bicubic interpolation": (
                resize(x, "bilinear", align_corners=False).clamp(0, 1).expand(-1, 3, -1, -1) - m
            )
            / s,
            "nearest-neighbour resizing: CLIP's preprocessing resizes with bicubic interpolation": (
                resize(x, "nearest").clamp(0, 1).expand(-1, 3, -1, -1) - m
            )
            / s,
            "align_corners=True: torchvision's Resize (CLIP's preprocessing) uses align_corners=False": (
                resize(x, align_corners=True).clamp(0, 1).expand(-1, 3, -1, -1) - m
            )
            / s,
            "the images were mapped to [-1, 1] first: they are in [0, 1] already, as CLIP expects": clip.clip_preprocess(
                x * 2 - 1, S, mean, std
            ),
            "every channel was normalised with the red channel's mean and std: each channel has its own": (
                clamped - m[:, :1]
            )
            / s[:, :1],
            "the images were inverted (1 - x): CLIP reads the digits as they are, white on black": clip.clip_preprocess(
                1 - x, S, mean, std
            ),
        }
        compare(
            name,
            out,
            ref,
            mistakes,
            tol=1e-5,
            context=f" for images [{B}, 1, {H}, {H}] resized to {S}",
            reference=clip.clip_preprocess,
            args=(images, S, mean, std),
        )
    passed(name, f"sizes {[list(s) for s in sizes]}, seed {seed}")


def _lengths(shape, g):  # embeddings of very different lengths, as raw text-encoder outputs are
    return torch.randn(*shape, generator=g) * (0.2 + 5 * torch.rand(*shape[:-1], 1, generator=g))


def check_prompt_ensemble(student_fn, *, seed: int = 0, sizes=((5, 10, 16), (3, 4, 8), (2, 6, 3))) -> None:
    """student_fn(text_emb [P, K, D]: P phrasings of K captions) -> [K, D]: normalise each embedding, average over
    the phrasings, normalise again (Radford et al. 2021, sec. 3.1.4); reference ``clip.prompt_ensemble``."""
    name = "check_prompt_ensemble"
    g = generator(seed)
    for P, K, D in sizes:
        P, K, D = int(P), int(K), int(D)
        emb = _lengths((P, K, D), g)
        out = call(name, student_fn, emb, names=["text_emb"])
        out = expect_tensor(
            name,
            out,
            (K, D),
            shape_hints={
                (P, D): "averaged over the captions (dim 1): average over the phrasings of each caption, dim 0",
                (P, K, D): "not averaged: one embedding per caption, the mean over the P phrasings",
                (D,): "averaged over everything: keep one embedding per caption, [K, D]",
            },
        )
        e = emb.double()
        ref = clip.prompt_ensemble(e)
        unit = _unit(e)
        mistakes = {
            "the mean was not normalised again: a mean of unit vectors is shorter than 1": unit.mean(0),
            "the phrasings were averaged before normalising: a long embedding would outweigh the others; "
            "normalise each one first": _unit(e.mean(0)),
            "no normalisation at all: normalise each phrasing, average, normalise the mean": e.mean(0),
            "normalised along the wrong dimension: each embedding (dim=-1) gets length 1": _unit(
                _unit(e, 0).mean(0), 0
            ),
            "a sum of unit vectors: divide it by its length (normalise it)": unit.sum(0),
            "the median over the phrasings: prompt ensembling averages them": _unit(unit.median(0).values),
        }
        compare(
            name,
            out,
            ref,
            mistakes,
            tol=1e-5,
            context=f" for P={P} phrasings of K={K} captions, D={D}",
            reference=clip.prompt_ensemble,
            args=(emb,),
        )
    passed(name, f"sizes {[list(s) for s in sizes]}, seed {seed}")


def check_clear_probability(student_fn, *, seed: int = 0, sizes=((6, 16), (3, 4), (9, 32)), scales=(100.0, 20.0)):
    """student_fn(image_emb [N,D], clear_emb [N,D], blurry_emb [N,D], logit_scale) -> [N]: the softmax over the
    two captions of row n, its "clear" entry; reference ``clip.clear_probability``."""
    name = "check_clear_probability"
    g = generator(seed)
    for N, D in sizes:
        N, D = int(N), int(D)
        for scale in scales:
            u, c, b = (_lengths((N, D), g) for _ in range(3))
            # CLIP's cosines are close together: move the captions towards the image a little
            c, b = c + 2 * u * torch.rand(N, 1, generator=g), b + 2 * u * torch.rand(N, 1, generator=g)
            out = call(name, student_fn, u, c, b, float(scale), names=["image_emb", "clear_emb", "blurry_emb"])
            out = expect_tensor(
                name,
                out,
                (N,),
                shape_hints={
                    (N, N): "every image against every caption: compare image n only with its own two captions "
                    "(row n of each), one probability per image",
                    (N, 2): "both probabilities: return only that of the clear caption, [N]",
                    (N, 1): "return [N], not [N, 1]",
                },
            )
            ui, ci, bi = u.double(), c.double(), b.double()
            ref = clip.clear_probability(ui, ci, bi, scale)
            cc, cb = (_unit(ui) * _unit(ci)).sum(1), (_unit(ui) * _unit(bi)).sum(1)
            raw_c, raw_b = (ui * ci).sum(1), (ui * bi).sum(1)
            mistakes = {
                "the probability of the *blurry* caption: the clear caption's logit goes first": 1 - ref,
                "logit_scale is missing: softmax over s * cos, CLIP's learned temperature": torch.sigmoid(cc - cb),
                "no normalisation: cosine similarity uses unit vectors": torch.sigmoid(scale * (raw_c - raw_b)),
                "only the clear caption's score: the softmax compares it with the blurry caption's": torch.sigmoid(
                    scale * cc
                ),
                "the logit difference itself: the probability is its sigmoid (a softmax over two captions)": scale
                * (cc - cb),
                "divided by logit_scale: multiply, s * cos": torch.sigmoid((cc - cb) / scale),
                "the exp of each score without normalising: divide by the sum over the two captions": (
                    scale * cc
                ).exp(),
                "a ratio of cosines: the softmax divides exp(s cos_clear) by the sum of the two exps": cc / (cc + cb),
            }
            compare(
                name,
                out,
                ref,
                mistakes,
                tol=1e-6,
                context=f" for N={N}, D={D}, logit_scale={scale:g}",
                reference=clip.clear_probability,
                args=(u, c, b, float(scale)),
            )
    passed(name, f"sizes {[list(s) for s in sizes]}, scales {list(scales)}, seed {seed}")


def check_clip_score(student_fn, *, seed: int = 0, sizes=((8, 6), (5, 32), (1, 3))) -> None:
    """student_fn(image_emb [N,D], text_emb [N,D]) -> [N]: CLIPScore 100 * max(cos(u_n, v_n), 0) of each image
    with its own caption (Hessel et al. 2021, with torchmetrics' w = 100); reference ``clip.clip_score``."""
    name = "check_clip_score"
    g = generator(seed)
    for N, D in sizes:
        N, D = int(N), int(D)
        u, v = _lengths((N, D), g), _lengths((N, D), g)
        v = v + 0.8 * u * torch.rand(N, 1, generator=g)  # mostly positive cosines, some negative
        v[0] = -v[0].abs() * u[0].sign()  # at least one pair points away: its score is 0
        out = call(name, student_fn, u, v, names=["image_emb", "text_emb"])
        out = expect_tensor(
            name,
            out,
            (N,),
            shape_hints={
                (N, N): "every image against every caption: score image n only with its own caption (row n of "
                "each), one number per image",
                (): "one number for the whole batch: return one score per image-caption pair, [N]",
            },
        )
        ui, vi = u.double(), v.double()
        ref = clip.clip_score(ui, vi)
        cos = (_unit(ui) * _unit(vi)).sum(1)
        mistakes = {
            "negative cosines were kept: CLIPScore clips them at 0, w * max(cos, 0)": 100 * cos,
            "the absolute value: a negative cosine scores 0, w * max(cos, 0)": 100 * cos.abs(),
            "w = 2.5 (Hessel et al.'s choice): this lab uses w = 100, as torchmetrics and most papers": 2.5
            * cos.clamp(min=0),
            "the weight is missing: CLIPScore is 100 * max(cos, 0)": cos.clamp(min=0),
            "no normalisation: the cosine uses unit vectors": 100 * (ui * vi).sum(1).clamp(min=0),
            "max(cos, 1) or a clamp from above: the clip is at 0 from below, w * max(cos, 0)": 100 * cos.clamp(max=0),
            "the cosine distance 1 - cos: CLIPScore uses the similarity itself": 100 * (1 - cos).clamp(min=0),
        }
        compare(
            name,
            out,
            ref,
            mistakes,
            tol=1e-4,
            context=f" for N={N}, D={D}",
            reference=clip.clip_score,
            args=(u, v),
        )
    passed(name, f"sizes {[list(s) for s in sizes]}, seed {seed}")


def check_confusion_matrix(student_fn, *, seed: int = 0, cases=((40, 5), (25, 10), (7, 3))) -> None:
    """student_fn(labels int64 [N], predicted int64 [N], num_classes) -> [K, K] float: row k = the shares of the
    samples of class k given each answer (0 for a class without samples); reference ``measures.confusion_matrix``."""
    name = "check_confusion_matrix"
    g = generator(seed)
    for N, K in cases:
        N, K = int(N), int(K)
        labels = torch.randint(0, K - 1, (N,), generator=g)  # class K - 1 has no samples: an empty row
        wrong = torch.randint(0, K, (N,), generator=g)
        predicted = torch.where(torch.rand(N, generator=g) < 0.6, labels, wrong)  # mostly right, as a judge is
        out = call(name, student_fn, labels, predicted, K, names=["labels", "predicted"])
        if isinstance(out, torch.Tensor) and out.is_floating_point() and bool(torch.isnan(out).any()):
            fail(
                name,
                f"NaN in the result for N={N}, K={K}: a class without samples gives 0 / 0. Leave its row at 0 "
                "(divide by at least 1)",
                mistake="NaN for an empty class",
            )
        out = expect_tensor(name, out, (K, K), shape_hints={(N, N): "one row and column per class: [K, K]"})
        ref = measures.confusion_matrix(labels, predicted, K)
        counts = torch.zeros(K, K, dtype=torch.float64)
        for k, j in zip(labels.tolist(), predicted.tolist()):
            counts[k, j] += 1
        mistakes = {
            "the rows are the answers and the columns the true classes: row k is the true class k": ref.T,
            "counts, not shares: divide each row by its number of samples": counts,
            "each column was normalised: each *row* (a true class) sums to 1": counts
            / counts.sum(0, keepdim=True).clamp(min=1),
            "divided by the number of all samples: divide each row by the samples of its own class": counts / N,
            "transposed and normalised by columns: row k is the true class k, and each row sums to 1": (
                counts / counts.sum(0, keepdim=True).clamp(min=1)
            ).T,
        }
        compare(name, out, ref, mistakes, tol=1e-6, context=f" for N={N}, K={K}")
    passed(name, f"cases {[list(c) for c in cases]}, seed {seed}")


def check_pearson_r(student_fn, *, seed: int = 0, cases=((30, 0.8), (12, -0.5), (50, 0.1))) -> None:
    """student_fn(x [N], y [N]) -> Pearson's r (a float or a 0-d tensor); reference ``measures.pearson_r``."""
    name = "check_pearson_r"
    g = generator(seed)
    for N, slope in cases:
        N = int(N)
        x = 3 + 2 * torch.rand(N, generator=g)  # far from 0 and not unit variance: centring matters
        y = 5 + slope * (x - 4) + 0.3 * torch.randn(N, generator=g)
        out = _number(name, call(name, student_fn, x, y, names=["x", "y"]))
        xd, yd = x.double(), y.double()
        ref = measures.pearson_r(xd, yd).reshape(1)
        dx, dy = xd - xd.mean(), yd - yd.mean()
        cov = (dx * dy).sum()
        r = cov / ((dx * dx).sum() * (dy * dy).sum()).sqrt()
        mistakes = {
            "not centred: subtract each variable's mean first (otherwise it is the cosine of the raw vectors)": (
                (xd * yd).sum() / ((xd * xd).sum() * (yd * yd).sum()).sqrt()
            ).reshape(1),
            "the covariance: divide it by the two standard deviations": (cov / (N - 1)).reshape(1),
            "r squared: return r itself (its sign says whether y rises or falls with x)": (r * r).reshape(1),
            "the covariance uses N - 1 and the standard deviations N (or the other way round): use the same "
            "normaliser, or none, so that they cancel": (
                (cov / (N - 1)) / (dx.pow(2).mean() * dy.pow(2).mean()).sqrt(),
                (cov / N) / (dx.pow(2).sum() / (N - 1) * dy.pow(2).sum() / (N - 1)).sqrt(),
            ),
            "the absolute value: r keeps its sign": r.abs().reshape(1),
            "the denominator lacks its square root: sqrt(sum dx^2 * sum dy^2)": (
                cov / ((dx * dx).sum() * (dy * dy).sum())
            ).reshape(1),
        }
        mistakes = {k: (tuple(t.reshape(1) for t in v) if isinstance(v, tuple) else v) for k, v in mistakes.items()}
        compare(
            name,
            out,
            ref,
            mistakes,
            tol=1e-5,  # r from float32 sums of N products: about 1e-6 off
            context=f" for N={N}",
            reference=lambda a, b: measures.pearson_r(a, b).reshape(1),
            args=(x, y),
        )
    passed(name, f"cases {[list(c) for c in cases]}, seed {seed}")
