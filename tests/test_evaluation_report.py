"""evaluate_samples, samples files, table/JSON/plots and run_evaluate, on synthetic digits (no real data)."""

import argparse
import json

import matplotlib
import pytest
import torch

from labkit.data import synthetic_digits
from labkit.errors import LabkitError, LabkitValueError
from labkit.evaluation import fid as FID
from labkit.evaluation import command as C
from labkit.evaluation import figures as FIG
from labkit.evaluation import report as R
from labkit.evaluation.clip import tiny_clip_scorer

matplotlib.use("Agg")


def to01(d):
    return (d.images + 1) / 2


@pytest.fixture(scope="module")
def real():
    train = synthetic_digits(400, generator=torch.Generator().manual_seed(20))
    test = synthetic_digits(300, generator=torch.Generator().manual_seed(21))
    return R.RealReference.from_digits(train, test)


@pytest.fixture(scope="module")
def generated():
    d = synthetic_digits(200, generator=torch.Generator().manual_seed(22))
    return to01(d), d.labels


@pytest.fixture(scope="module")
def clip():
    return tiny_clip_scorer(seed=0)


@pytest.fixture(scope="module")
def result(generated, real, clip):
    images, labels = generated
    return R.evaluate_samples(images, labels, clip_scorer=clip, real=real, n_real=200,
                              generator=torch.Generator().manual_seed(0))


# --- samples files -----------------------------------------------------------------------------------


def _save(tmp_path, obj, name="s.pt"):
    path = tmp_path / name
    torch.save(obj, path)
    return path


def test_load_samples_file_round_trip(tmp_path, generated):
    images, labels = generated
    got_images, got_labels = R.load_samples_file(_save(tmp_path, {"images": images, "labels": labels, "extra": 1}))
    assert torch.equal(got_images, images) and torch.equal(got_labels, labels)
    assert got_images.dtype == torch.float32 and got_labels.dtype == torch.int64


GOOD_IMAGES = torch.rand(4, 1, 28, 28)
GOOD_LABELS = torch.tensor([0, 1, 2, 3])


@pytest.mark.parametrize(
    "obj, match",
    [
        ([GOOD_IMAGES, GOOD_LABELS], "must hold a dict"),
        ({"images": GOOD_IMAGES}, "lacks 'labels'"),
        ({"images": GOOD_IMAGES.numpy(), "labels": GOOD_LABELS}, "other than tensors"),
        ({"images": [0.5] * 4, "labels": GOOD_LABELS}, "'images' must be a tensor"),
        ({"images": (GOOD_IMAGES * 255).to(torch.uint8), "labels": GOOD_LABELS}, "float tensor"),
        ({"images": GOOD_IMAGES[:, 0], "labels": GOOD_LABELS}, r"shape \[N, 1, 28, 28\]"),
        ({"images": GOOD_IMAGES * 2 - 1, "labels": GOOD_LABELS}, r"\(x \+ 1\) / 2"),
        ({"images": GOOD_IMAGES * 255, "labels": GOOD_LABELS}, r"must be in \[0, 1\]"),
        ({"images": GOOD_IMAGES.clone().fill_(float("nan")), "labels": GOOD_LABELS}, "NaN"),
        ({"images": GOOD_IMAGES, "labels": GOOD_LABELS.float()}, "integers"),
        ({"images": GOOD_IMAGES, "labels": torch.tensor([0, 1, 2, 12])}, "0..9"),
        ({"images": GOOD_IMAGES, "labels": GOOD_LABELS[:3]}, "match the images"),
        ({"images": GOOD_IMAGES[:1], "labels": GOOD_LABELS[:1]}, "at least 2"),
    ],
)
def test_load_samples_file_rejects_bad_files(tmp_path, obj, match):
    path = _save(tmp_path, obj)
    with pytest.raises(LabkitError, match=match) as info:
        R.load_samples_file(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_load_samples_file_missing_or_not_torch(tmp_path):
    with pytest.raises(LabkitError, match="does not exist"):
        R.load_samples_file(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_text("hello")
    with pytest.raises(LabkitError, match="not a readable torch file") as info:
        R.load_samples_file(bad)
    assert "\n" not in str(info.value)


# --- evaluate_samples ------------------------------------------------------------------------------------


def test_result_structure_and_ranges(result):
    assert result["n"] == 200 and result["n_real"] == 200 and result["n_fid_reference"] == 300
    assert result["clip_model"].startswith("labkit-tiny-clip")
    assert result["classifier"].startswith("shipped sha256")
    rows = result["per_digit"]
    assert [r["digit"] for r in rows] == list(range(10)) and [r["count"] for r in rows] == [20] * 10
    for r in rows:
        for key in ("accuracy", "real_accuracy", "confidence", "real_confidence",
                    "clip_prob", "real_clip_prob", "clip_clear", "real_clip_clear"):
            assert 0 <= r[key] <= 1, key
        assert r["clip_prob_rel"] == pytest.approx(r["clip_prob"] / r["real_clip_prob"])
    o = result["overall"]
    assert o["accuracy"] == pytest.approx(sum(r["accuracy"] for r in rows) / 10)  # balanced classes
    assert o["fid_ratio"] == pytest.approx(o["fid"] / o["fid_floor"])
    json.dumps(result)  # JSON-ready as is


def test_real_like_samples_score_like_real(result):
    o = result["overall"]
    # same distribution as the reference: near the floor and near the classifier's accuracy on "real" digits
    assert 0.4 < o["fid_ratio"] < 2.5
    assert abs(o["accuracy"] - o["real_accuracy"]) < 0.15
    assert abs(o["clip_clear"] - o["real_clip_clear"]) < 0.1


def test_noise_and_shuffled_labels_score_worse(generated, real, result):
    images, labels = generated
    g = torch.Generator().manual_seed(1)
    noise = R.evaluate_samples(torch.rand(200, 1, 28, 28, generator=g), labels, real=real, n_real=200, generator=g,
                               floor_repeats=1)
    assert noise["overall"]["fid_ratio"] > 10 * result["overall"]["fid_ratio"]
    assert noise["overall"]["accuracy"] < 0.3 and noise["clip_model"] is None
    assert all(r["clip_prob"] is None for r in noise["per_digit"])
    shuffled = labels[torch.randperm(200, generator=g)]
    wrong = R.evaluate_samples(images, shuffled, real=real, n_real=200, generator=g, floor_repeats=1)
    assert wrong["overall"]["accuracy"] < 0.25 < result["overall"]["accuracy"]
    assert wrong["overall"]["fid"] == pytest.approx(result["overall"]["fid"], rel=1e-6)  # FID ignores labels


def test_missing_digit_is_none(generated, real):
    images, labels = generated
    keep = labels != 9
    r = R.evaluate_samples(images[keep], labels[keep], real=real, n_real=100, floor_repeats=1)
    assert r["per_digit"][9]["count"] == 0 and r["per_digit"][9]["accuracy"] is None
    assert r["per_digit"][9]["real_accuracy"] is not None


def test_evaluate_rejects_bad_input(real):
    with pytest.raises(LabkitValueError, match="at least 2"):
        R.evaluate_samples(torch.rand(1, 1, 28, 28), torch.tensor([1]), real=real)


# --- output ----------------------------------------------------------------------------------------------


def test_format_table(result, generated, real):
    table = R.format_table(result)
    lines = table.splitlines()
    assert "200 generated digits" in lines[0] and "labkit-tiny-clip" in lines[0] and "200 MNIST test" in lines[0]
    assert "clip p" in lines[1]
    assert sum(line.strip().startswith(tuple("0123456789")) for line in lines) == 10
    assert any(line.strip().startswith("all") for line in lines)
    assert f"{result['overall']['fid']:.3g}" in table and f"{result['overall']['fid_floor']:.3g}" in table
    assert "vs 300 MNIST test digits" in table  # FID reference: the whole reference set
    images, labels = generated
    plain = R.format_table(R.evaluate_samples(images, labels, real=real, n_real=50, floor_repeats=1))
    assert "clip p" not in plain and "CLIP scores off" in plain


def test_save_json_round_trip(tmp_path, result):
    path = R.save_json({**result, "nan": float("nan")}, tmp_path / "sub" / "r.json")
    loaded = json.loads(path.read_text())
    assert loaded["nan"] is None
    assert loaded["overall"]["fid"] == pytest.approx(result["overall"]["fid"])
    assert loaded["per_digit"][3] == pytest.approx(result["per_digit"][3])


def test_plot_per_digit_scores(tmp_path, result):
    import matplotlib.pyplot as plt

    fig = FIG.plot_per_digit_scores(result, tmp_path / "scores.png")
    assert (tmp_path / "scores.png").stat().st_size > 1000
    assert len(fig.axes) == 4  # accuracy, confidence, CLIP p, CLIP clear
    fig2, ax = plt.subplots()
    assert FIG.plot_per_digit_scores(result, ax, metric="clip_clear") is fig2
    assert len(ax.patches) == 20  # 10 generated + 10 real bars
    assert ax.patches[0].get_height() == pytest.approx(result["per_digit"][0]["clip_clear"])
    plt.close(fig2)
    with pytest.raises(LabkitValueError, match="metric"):
        FIG.plot_per_digit_scores(result, None, metric="fid")


def test_best_worst(tmp_path, generated):
    images, labels = generated
    scores = torch.arange(200, dtype=torch.float32)  # later samples score higher
    picks = FIG.best_worst_indices(labels, scores, 3)
    assert picks[4] == ([194, 184, 174], [4, 14, 24])
    fig = FIG.plot_best_worst(images, labels, scores, k=3, path=tmp_path / "bw.png")
    assert len(fig.axes) == 2 and (tmp_path / "bw.png").exists()
    with pytest.raises(LabkitValueError):
        FIG.plot_best_worst(images, labels, scores[:5], k=3)


# --- run_evaluate (what `labkit evaluate` calls) ----------------------------------------------------------


@pytest.fixture
def synthetic_mnist(monkeypatch, real):
    """Make data_root='synthetic' resolve to the synthetic reference instead of real MNIST."""
    monkeypatch.setitem(FID._MNIST_REFS, "synthetic", real)
    return "synthetic"


def test_run_evaluate_writes_json_and_plot(tmp_path, generated, synthetic_mnist):
    images, labels = generated
    samples = _save(tmp_path, {"images": images, "labels": labels})
    table = C.run_evaluate(samples, json_path=tmp_path / "r.json", plot_path=tmp_path / "r.png",
                           data_root=synthetic_mnist, device="cpu")
    assert "200 generated digits" in table and "FID" in table
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["n"] == 200 and saved["clip_model"] is None
    assert (tmp_path / "r.png").stat().st_size > 1000
    # seeded: the same command gives the same table
    assert C.run_evaluate(samples, data_root=synthetic_mnist, device="cpu") == table
    ns = argparse.Namespace(samples=str(samples), json=None, plot=None, clip="none", data=synthetic_mnist, device="cpu")
    assert C.evaluate_samples_cli(ns) == table


def test_run_evaluate_clip_offline_suggests_clip_none(tmp_path, generated, synthetic_mnist, monkeypatch):
    images, labels = generated
    samples = _save(tmp_path, {"images": images, "labels": labels})

    def offline(*args, **kwargs):
        raise LabkitError("CLIP weights ViT-B-32:laion2b_s34b_b79k cannot be downloaded or loaded (offline).")

    monkeypatch.setattr(R.ClipScorer, "from_pretrained", offline)
    with pytest.raises(LabkitError, match="--clip none") as info:
        C.run_evaluate(samples, clip="ViT-B-32:laion2b_s34b_b79k", data_root=synthetic_mnist, device="cpu")
    assert "\n" not in str(info.value) and "cannot be downloaded" in str(info.value)
    with pytest.raises(LabkitValueError, match="MODEL:PRETRAINED"):
        C.run_evaluate(samples, clip="ViT-B-32", data_root=synthetic_mnist, device="cpu")
