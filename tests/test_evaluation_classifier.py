"""The shipped MNIST classifier: weights file, loading, accuracy bookkeeping, training recipe (no real data)."""

import shutil

import pytest
import torch

from labkit.data import synthetic_digits
from labkit.errors import LabkitError, LabkitTypeError, LabkitValueError
from labkit.evaluation import classifier as C


@pytest.fixture(scope="module")
def clf():
    return C.load_classifier()


@pytest.fixture(scope="module")
def synth():
    d = synthetic_digits(200, generator=torch.Generator().manual_seed(2))
    return (d.images + 1) / 2, d.labels


def test_shipped_weights_match_recorded_sha256():
    assert C.WEIGHTS_PATH.is_file()
    assert C.file_sha256(C.WEIGHTS_PATH) == C.WEIGHTS_SHA256
    assert C.WEIGHTS_PATH.stat().st_size < 1_000_000  # small enough to ship in the wheel


def test_shipped_weights_are_a_plain_state_dict():
    state = torch.load(C.WEIGHTS_PATH, weights_only=True)
    assert set(state) == set(C.MnistClassifier().state_dict())
    assert all(isinstance(v, torch.Tensor) for v in state.values())


def test_loaded_classifier_shapes_and_mode(clf):
    x = torch.rand(3, 1, 28, 28)
    assert clf(x).shape == (3, 10)
    assert clf.features(x).shape == (3, C.FEATURE_DIM)
    assert not clf.training
    assert all(not p.requires_grad for p in clf.parameters())
    assert C.load_classifier() is clf  # cached


def test_corrupted_weights_raise_clear_error(tmp_path, monkeypatch):
    bad = tmp_path / "mnist_classifier.pt"
    shutil.copy(C.WEIGHTS_PATH, bad)
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    monkeypatch.setattr(C, "WEIGHTS_PATH", bad)
    monkeypatch.setattr(C, "_LOADED", {})
    with pytest.raises(LabkitError, match="corrupted") as info:
        C.load_classifier()
    assert "\n" not in str(info.value)


def test_missing_weights_raise_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(C, "WEIGHTS_PATH", tmp_path / "nope.pt")
    monkeypatch.setattr(C, "_LOADED", {})
    with pytest.raises(LabkitError, match="not found"):
        C.load_classifier()


def test_unreadable_other_weights_file(tmp_path):
    path = tmp_path / "other.pt"
    path.write_bytes(b"not a torch file")
    with pytest.raises(LabkitError, match="could not be loaded"):
        C.load_classifier(path=path)


def test_accuracy_bookkeeping(clf, synth):
    images, labels = synth
    r = C.classifier_accuracy(images, labels, clf)
    pred, p = r["predicted"], r["intended_prob"]
    assert pred.shape == labels.shape and p.shape == labels.shape
    assert r["accuracy"] == pytest.approx(float((pred == labels).float().mean()))
    assert r["confidence"] == pytest.approx(float(p.mean()), abs=1e-6)
    assert ((p >= 0) & (p <= 1)).all()
    with torch.no_grad():  # independently: softmax of the logits at the intended digit
        expected = clf(images).softmax(dim=1)[torch.arange(len(labels)), labels]
    assert torch.allclose(p, expected, atol=1e-5)
    assert r["per_digit"]["count"] == [20] * 10
    for k in range(10):
        mask = labels == k
        assert r["per_digit"]["accuracy"][k] == pytest.approx(float((pred[mask] == k).float().mean()))
    # The shipped classifier recognises most seven-segment digits even though it never saw one.
    assert r["accuracy"] > 0.5


def test_shuffled_labels_drop_to_chance(clf, synth):
    images, labels = synth
    shuffled = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))]
    true_acc = C.classifier_accuracy(images, labels, clf)["accuracy"]
    shuffled_acc = C.classifier_accuracy(images, shuffled, clf)["accuracy"]
    assert shuffled_acc < 0.25 < true_acc


def test_absent_digit_is_none(clf, synth):
    images, labels = synth
    keep = labels != 3
    r = C.classifier_accuracy(images[keep], labels[keep], clf)
    assert r["per_digit"]["accuracy"][3] is None and r["per_digit"]["count"][3] == 0
    assert r["per_digit"]["accuracy"][4] is not None


def test_per_digit_mean_known_values():
    values = torch.tensor([1.0, 0.0, 0.5, 0.25])
    labels = torch.tensor([0, 0, 2, 2])
    assert C.per_digit_mean(values, labels, 3) == [0.5, None, 0.375]


@pytest.mark.parametrize(
    "images, error",
    [
        (torch.rand(2, 1, 28, 28).numpy(), LabkitTypeError),
        (torch.zeros(2, 1, 28, 28, dtype=torch.uint8), LabkitTypeError),
        (torch.rand(2, 28, 28), LabkitValueError),
        (torch.rand(2, 3, 28, 28), LabkitValueError),
    ],
)
def test_bad_images_rejected(clf, images, error):
    with pytest.raises(error):
        C.classifier_accuracy(images, torch.zeros(2, dtype=torch.long), clf)


def test_bad_labels_rejected(clf):
    with pytest.raises(LabkitValueError, match="0..9"):
        C.classifier_accuracy(torch.rand(2, 1, 28, 28), torch.tensor([0, 10]), clf)
    with pytest.raises(LabkitValueError, match="shape"):
        C.classifier_accuracy(torch.rand(2, 1, 28, 28), torch.tensor([0, 1, 2]), clf)


def test_random_shift_moves_content_and_keeps_shape():
    x = torch.zeros(64, 1, 28, 28)
    x[:, 0, 14, 14] = 1.0
    g = torch.Generator().manual_seed(0)
    y = C.random_shift(x, 2, g)
    assert y.shape == x.shape
    assert torch.equal(y.sum(dim=(1, 2, 3)), torch.ones(64))  # the dot moved but stayed inside
    pos = y[:, 0].flatten(1).argmax(1)
    rows, cols = pos // 28, pos % 28
    assert ((rows - 14).abs() <= 2).all() and ((cols - 14).abs() <= 2).all()
    assert len(set(zip(rows.tolist(), cols.tolist()))) > 5  # shifts differ between images
    assert torch.equal(C.random_shift(x, 2, torch.Generator().manual_seed(0)), y)  # seeded
    assert C.random_shift(x, 0) is x


@pytest.mark.slow  # 40 optimiser steps: 3-20 s on 2 busy cores
def test_train_classifier_learns_synthetic_digits(synth):
    train = synthetic_digits(300, generator=torch.Generator().manual_seed(1))
    cfg = C.ClassifierTrainConfig(epochs=4, batch_size=32)
    with torch.random.fork_rng():
        torch.manual_seed(2)
        model = C.train_classifier((train.images + 1) / 2, train.labels, config=cfg,
                                   generator=torch.Generator().manual_seed(0), log=None)
    assert isinstance(model, C.MnistClassifier) and not model.training
    images, labels = synth
    assert C.classifier_accuracy(images, labels, model)["accuracy"] > 0.6  # chance is 0.1
