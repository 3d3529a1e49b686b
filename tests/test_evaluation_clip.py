"""CLIP scorer end to end on a tiny randomly initialised open_clip model (offline, no weights)."""

import pytest
import torch
import torch.nn.functional as F

from labkit.errors import LabkitError, LabkitTypeError, LabkitValueError
from labkit.evaluation import clip as CL


@pytest.fixture(scope="module")
def scorer():
    return CL.tiny_clip_scorer(seed=0)


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(40, 1, 28, 28, generator=g)
    labels = torch.arange(40) % 10
    return images, labels


def test_tiny_model_is_a_real_open_clip_model(scorer):
    import open_clip

    assert isinstance(scorer.model, open_clip.CLIP)
    assert CL.TINY_CLIP_NAME in open_clip.list_models()
    assert scorer.image_size == 32
    assert torch.allclose(scorer.mean.flatten(), torch.tensor(CL.OPENAI_MEAN))
    assert scorer.logit_scale == pytest.approx(1 / 0.07, rel=1e-5)  # open_clip's initial temperature


def test_tiny_model_is_seeded_and_leaves_global_rng_alone(scorer, batch):
    state = torch.random.get_rng_state()
    other = CL.tiny_clip_scorer(seed=0)
    assert torch.equal(torch.random.get_rng_state(), state)
    images, _ = batch
    assert torch.allclose(other.encode_images(images[:4]), scorer.encode_images(images[:4]), atol=1e-6)
    different = CL.tiny_clip_scorer(seed=1)
    assert not torch.allclose(different.encode_images(images[:4]), scorer.encode_images(images[:4]))


def test_preprocess_makes_normalised_rgb_at_model_size(scorer):
    x = torch.full((2, 1, 28, 28), 0.7)
    y = scorer.preprocess(x)
    assert y.shape == (2, 3, 32, 32)
    expected = (0.7 - torch.tensor(CL.OPENAI_MEAN)) / torch.tensor(CL.OPENAI_STD)
    assert torch.allclose(y[0, :, 16, 16], expected, atol=1e-5)


def test_image_embeddings_unit_norm_and_batch_independent(scorer, batch):
    images, _ = batch
    a = scorer.encode_images(images)
    assert a.shape == (40, 32)
    assert torch.allclose(a.norm(dim=1), torch.ones(40), atol=1e-5)
    small = CL.ClipScorer.from_model(scorer.model, 32, scorer.tokenizer, batch_size=7)
    assert torch.allclose(small.encode_images(images, progress=True), a, atol=1e-5)


def test_scores_shapes_ranges_and_formulas(scorer, batch):
    images, labels = batch
    s = scorer.score(images, labels)
    assert s.probs.shape == (40, 10) and s.cosine.shape == (40, 10)
    assert torch.allclose(s.probs.sum(dim=1), torch.ones(40), atol=1e-5)
    assert ((s.probs >= 0) & (s.probs <= 1)).all()
    assert ((s.cosine >= -1 - 1e-5) & (s.cosine <= 1 + 1e-5)).all()
    assert torch.equal(s.intended_prob, s.probs[torch.arange(40), labels])
    assert torch.equal(s.predicted, s.probs.argmax(1))
    # Recompute the zero-shot probabilities and P(clear) from raw embeddings, independently.
    img = scorer.encode_images(images)
    digit_txt = torch.stack([
        F.normalize(scorer.encode_text(CL.PromptSet.fill(scorer.prompts.digit, k)).mean(0), dim=0) for k in range(10)
    ])
    probs = (scorer.logit_scale * img @ digit_txt.T).softmax(1)
    assert torch.allclose(s.probs, probs, atol=1e-5)
    k = int(labels[3])
    clear = F.normalize(scorer.encode_text(CL.PromptSet.fill(scorer.prompts.clear, k)).mean(0), dim=0)
    blurry = F.normalize(scorer.encode_text(list(scorer.prompts.blurry)).mean(0), dim=0)
    two = (scorer.logit_scale * torch.stack([img[3] @ clear, img[3] @ blurry])).softmax(0)
    assert float(s.clear_prob[3]) == pytest.approx(float(two[0]), abs=1e-5)
    assert ((s.clear_prob > 0) & (s.clear_prob < 1)).all()


def test_per_digit_aggregation(scorer, batch):
    images, labels = batch
    keep = labels != 6
    s = scorer.score(images[keep], labels[keep])
    per = s.per_digit()
    assert per["count"] == [4, 4, 4, 4, 4, 4, 0, 4, 4, 4]
    assert per["intended_prob"][6] is None and per["clear_prob"][6] is None
    mask = s.labels == 2
    assert per["intended_prob"][2] == pytest.approx(float(s.intended_prob[mask].mean()), abs=1e-6)
    assert per["accuracy"][2] == pytest.approx(float((s.predicted[mask] == 2).float().mean()))
    assert s.overall()["clear_prob"] == pytest.approx(float(s.clear_prob.mean()), abs=1e-6)


def test_text_embeddings_are_cached(batch):
    scorer = CL.tiny_clip_scorer(seed=0)
    calls = []
    original = scorer.model.encode_text

    def counting(tokens, *args, **kwargs):
        calls.append(tokens.shape[0])
        return original(tokens, *args, **kwargs)

    scorer.model.encode_text = counting
    images, labels = batch
    scorer.score(images[:10], labels[:10])
    first = sum(calls)
    p = scorer.prompts
    # every distinct caption once: digit and clear captions per digit, blurry ones without {k} only once
    assert first == len(scorer._text_cache) == 10 * len(p.digit) + 10 * len(p.clear) + len(p.blurry)
    scorer.score(images[10:20], labels[10:20])
    assert sum(calls) == first


def test_custom_prompts_change_the_scores(scorer, batch):
    images, labels = batch
    custom = CL.PromptSet(digit=("{name}",), clear=("a {k}",), blurry=("fog {k}",))
    other = CL.ClipScorer.from_model(scorer.model, 32, scorer.tokenizer, prompts=custom)
    a, b = scorer.score(images, labels), other.score(images, labels)
    assert not torch.allclose(a.probs, b.probs)
    assert {"seven", "a 7", "fog 7"} <= set(other._text_cache)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"digit": ("a handwritten number",)}, "must mention the digit"),
        ({"clear": ("clear {digit}",)}, "may only use"),
        ({"blurry": "a blurry number"}, "non-empty tuple"),
        ({"digit": ()}, "non-empty tuple"),
    ],
)
def test_bad_prompt_templates_rejected(kwargs, match):
    with pytest.raises(LabkitValueError, match=match):
        CL.PromptSet(**kwargs)


def test_calibration_and_relative_scores(scorer, batch):
    images, labels = batch
    scorer = CL.ClipScorer.from_model(scorer.model, 32, scorer.tokenizer)
    with pytest.raises(LabkitError, match="calibrate"):
        scorer.relative(scorer.score(images, labels))
    cal = scorer.calibrate(images, labels)
    assert cal["n"] == 40 and set(cal["per_digit"]) == {"accuracy", "intended_prob", "clear_prob", "count"}
    assert all(len(v) == 10 for v in cal["per_digit"].values())
    # the real set against itself: 100% of real everywhere
    same = scorer.score(images, labels)
    assert scorer.relative(same) == pytest.approx([1.0] * 10)
    assert "generated 7s reach 100% of what real 7s get" in "\n".join(scorer.describe(same))
    # a different set: ratios are the quotient of the per-digit means
    other = scorer.score(images.flip(-1), labels)
    expected = [g / r for g, r in zip(other.per_digit()["clear_prob"], cal["per_digit"]["clear_prob"])]
    assert scorer.relative(other, "clear_prob") == pytest.approx(expected)


def test_relative_and_describe_take_the_calibration_explicitly(scorer, batch):
    from dataclasses import FrozenInstanceError

    images, labels = batch
    fresh = CL.ClipScorer.from_model(scorer.model, 32, scorer.tokenizer)
    real = scorer.calibrate(images, labels)
    assert isinstance(real, CL.Calibration) and real.n == 40 and real["n"] == 40
    assert real["per_digit"] is real.per_digit and real["overall"] is real.overall
    with pytest.raises(KeyError):
        real["bogus"]
    with pytest.raises(FrozenInstanceError):
        real.n = 3
    # no calibrate() on this scorer: the calibration is an argument, not state
    same = fresh.score(images, labels)
    assert fresh.relative(same, real) == pytest.approx([1.0] * 10)
    assert fresh.relative(same, real, key="clear_prob") == pytest.approx([1.0] * 10)
    assert "generated 7s reach 100% of what real 7s get" in "\n".join(fresh.describe(same, real))
    # two calibrations side by side; the old form (none given) uses the last one calibrate() returned
    flipped = scorer.calibrate(images.flip(-1), labels)
    expected = [g / r for g, r in zip(same.per_digit()["clear_prob"], flipped.per_digit["clear_prob"])]
    assert fresh.relative(same, flipped, key="clear_prob") == pytest.approx(expected)
    assert scorer.relative(same, key="clear_prob") == pytest.approx(expected)
    assert scorer.relative(same, real) == pytest.approx([1.0] * 10)


def test_from_model_reads_a_torchvision_preprocess(scorer):
    from torchvision import transforms as T

    pre = T.Compose([T.Resize(40), T.CenterCrop(32), T.ToTensor(), T.Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))])
    s = CL.ClipScorer.from_model(scorer.model, pre, scorer.tokenizer)
    assert s.image_size == 32
    assert torch.allclose(s.preprocess(torch.ones(1, 1, 28, 28))[0, :, 5, 5], torch.full((3,), 2.0))


def test_input_validation(scorer, batch):
    images, labels = batch
    with pytest.raises(LabkitValueError, match="shape"):
        scorer.score(images, labels[:5])
    with pytest.raises(LabkitValueError, match="0..9"):
        scorer.score(images[:2], torch.tensor([0, 11]))
    with pytest.raises(LabkitTypeError):
        CL.ClipScorer(object(), scorer.tokenizer, image_size=32)


def test_from_pretrained_offline_gives_one_line_error(monkeypatch):
    import open_clip

    def offline(*args, **kwargs):
        raise RuntimeError("Failed to download weights:\n network is unreachable")

    monkeypatch.setattr(open_clip, "create_model_and_transforms", offline)
    monkeypatch.setattr(CL, "hub_reachable", lambda timeout=3.0: True)  # a download that fails
    with pytest.raises(LabkitError, match="cannot be downloaded") as info:
        CL.ClipScorer.from_pretrained("ViT-B-32", "laion2b_s34b_b79k", device="cpu")
    assert "\n" not in str(info.value) and "ViT-B-32:laion2b_s34b_b79k" in str(info.value)


def test_from_pretrained_offline_and_not_cached_fails_at_once(monkeypatch):
    """No hub and no cached file: a one-line error without trying open_clip's download (~1 min of retries)."""
    import time

    import open_clip

    def must_not_run(*args, **kwargs):
        raise AssertionError("open_clip should not be asked to download offline")

    monkeypatch.setattr(open_clip, "create_model_and_transforms", must_not_run)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert CL.hub_reachable() is False
    monkeypatch.setattr(CL, "cached_weights", lambda m, p: None)
    start = time.perf_counter()
    with pytest.raises(LabkitError, match="not cached") as info:
        CL.ClipScorer.from_pretrained("ViT-B-32", "laion2b_s34b_b79k", device="cpu")
    assert time.perf_counter() - start < 5 and "\n" not in str(info.value)


def test_from_pretrained_offline_uses_the_cached_file(monkeypatch):
    import open_clip

    seen = {}

    def fake(name, pretrained=None, device=None):
        seen["pretrained"] = pretrained
        raise RuntimeError("stop here")

    monkeypatch.setattr(open_clip, "create_model_and_transforms", fake)
    monkeypatch.setattr(CL, "hub_reachable", lambda timeout=3.0: False)
    monkeypatch.setattr(CL, "cached_weights", lambda m, p: "/cache/open_clip_model.safetensors")
    with pytest.raises(LabkitError):
        CL.ClipScorer.from_pretrained("ViT-B-32", "laion2b_s34b_b79k", device="cpu")
    assert seen["pretrained"] == "/cache/open_clip_model.safetensors"


def test_cached_weights_finds_nothing_for_unknown_tags(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    assert CL.cached_weights("ViT-B-32", "no-such-tag") is None


def test_hub_reachable_respects_proxies_and_offline_flag(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")
    assert CL.hub_reachable() is True
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert CL.hub_reachable() is False


def test_parse_clip_spec():
    assert CL.parse_clip_spec("none") is None and CL.parse_clip_spec(None) is None
    assert CL.parse_clip_spec("ViT-B-32:laion2b_s34b_b79k") == ("ViT-B-32", "laion2b_s34b_b79k")
    with pytest.raises(LabkitValueError, match="MODEL:PRETRAINED"):
        CL.parse_clip_spec("ViT-B-32")
