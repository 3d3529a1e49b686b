"""Checks for lab 06 (CLIP evaluation). References: ``labkit.embeddings.cosine_similarity`` and
``labkit.evaluation.clip.zero_shot_probs`` (both used by ``ClipScorer.score``), in float64.

    check_cosine_similarity(cosine_similarity)   normalise each row, then [N,D] @ [K,D]^T -> [N,K]
    check_zero_shot_probs(zero_shot_probs)       softmax over the K prompts of logit_scale * cosine
                                                 (Radford et al. 2021, Figure 3's pseudocode)
"""

from __future__ import annotations

import torch

from labkit import embeddings
from labkit.evaluation import clip
from labkit.checks._common import call, compare, expect_tensor, fail, generator, passed
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
        out = expect_tensor(name, out, (N, K), shape_hints={
            (K, N): "the result is transposed: image_emb @ text_emb.T gives [N, K] (one row per image)",
            (N, N): "you multiplied the images with themselves; use the text embeddings",
            (D, D): "a matrix product over the wrong dimension: image_emb [N, D] @ text_emb.T [D, K]",
        })
        i, t = img.double(), txt.double()
        ref = embeddings.cosine_similarity(i, t)
        mistakes = {
            "no normalisation: divide each embedding by its own length before the product":
                i @ t.T,
            "only the image embeddings were normalised; normalise the text embeddings too": _unit(i) @ t.T,
            "only the text embeddings were normalised; normalise the image embeddings too": i @ _unit(t).T,
            "normalised along the wrong dimension: each *row* (one embedding, dim=-1) must have length 1":
                _unit(i, 0) @ _unit(t, 0).T,
            "a softmax was applied: cosine similarity is the plain product of unit vectors": (_unit(i) @ _unit(t).T).softmax(1),
            "divided by squared lengths: a unit vector is v / ||v||, not v / ||v||^2":
                (i / (i * i).sum(1, keepdim=True)) @ (t / (t * t).sum(1, keepdim=True)).T,
        }
        mistakes.update({
            "divided by the product of the matrices' total lengths: normalise each row by its own length":
                (i @ t.T) / (i.norm() * t.norm()),
            "that is the cosine *distance* 1 - cos; return the similarity itself": 1 - ref,
            "each embedding divided by its squared length on one side only: a unit vector is v / ||v||":
                (i / (i * i).sum(1, keepdim=True)) @ _unit(t).T,
        })
        compare(name, out, ref, mistakes, tol=1e-5, context=f" for N={N}, K={K}, D={D}",
                reference=embeddings.cosine_similarity, args=(img, txt))
    passed(name, f"sizes {[list(s) for s in sizes]}, seed {seed}")


def check_zero_shot_probs(student_fn, *, seed: int = 0, sizes=((4, 10), (3, 2), (6, 5)), scales=(100.0, 12.5)) -> None:
    """student_fn(cosine [N,K], logit_scale: float) -> probabilities [N,K], each row summing to 1."""
    name = "check_zero_shot_probs"
    g = generator(seed)
    for N, K in sizes:
        for scale in scales:
            cos = 0.15 + 0.2 * torch.rand(N, K, generator=g)  # CLIP cosines are small and close together
            out = call(name, student_fn, cos, float(scale), names=["cosine"])
            out = expect_tensor(name, out, (N, K), shape_hints={
                (K, N): "the result is transposed: keep one row per image",
                (N,): "you returned one number per image (the argmax or the max?); return the whole [N, K] softmax",
            })
            c = cos.double()
            ref = clip.zero_shot_probs(c, scale)
            mistakes = {
                "the softmax runs over the images (dim=0); it runs over the prompts of each image (dim=1)":
                    (scale * c).softmax(dim=0),
                "logit_scale is missing: softmax(logit_scale * cosine), CLIP's learned temperature makes "
                "the distribution sharp": c.softmax(dim=1),
                "divided by logit_scale; multiply: logits = logit_scale * cosine": (c / scale).softmax(dim=1),
                "log-probabilities (log_softmax); return probabilities": (scale * c).log_softmax(dim=1),
                "logit_scale applied after the softmax": scale * c.softmax(dim=1),
                "a sigmoid per prompt; the zero-shot classifier is a softmax over all prompts": torch.sigmoid(scale * c),
                "normalised by the sum without exp: use a softmax": (scale * c) / (scale * c).sum(1, keepdim=True),
            }
            mistakes.update({
                "the exponentials were normalised over the whole matrix: each image's row is its own softmax":
                    (scale * c).exp() / (scale * c).exp().sum(),
                "the maximum was subtracted without the exp (or the exp without normalising): use a softmax "
                "over each row": (scale * c).exp(),
                "the logits were normalised before the softmax: softmax(logit_scale * cosine) uses them as they are":
                    (scale * c / (scale * c).norm(dim=1, keepdim=True)).softmax(dim=1),
            })
            compare(name, out, ref, mistakes, tol=1e-5, context=f" for N={N}, K={K}, logit_scale={scale:g}",
                    reference=clip.zero_shot_probs, args=(cos, float(scale)))
            rows = out.double().sum(dim=1)
            if (rows - 1).abs().max().item() > 1e-4:
                fail(name, "rows do not sum to 1")
    passed(name, f"sizes {[list(s) for s in sizes]}, scales {list(scales)}, seed {seed}")
