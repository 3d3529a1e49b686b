"""Checkpoints: atomic writes, clear errors for bad files, release export and load_model."""

import os
import pickle

import pytest
import torch

from labkit import checkpoint, recipes, training
from labkit.checkpoint import export_release, load_checkpoint, load_model, save_checkpoint
from labkit.data import synthetic_digits
from labkit.errors import LabkitError



def test_roundtrip_and_tag(tmp_path):
    path = save_checkpoint(tmp_path / "a.pt", {"step": 3, "w": torch.arange(4.0), "cfg": {"mults": [1, 2]}})
    state = load_checkpoint(path)
    assert state["step"] == 3 and torch.equal(state["w"], torch.arange(4.0))
    assert state["labkit"] == {"format": checkpoint.FORMAT, "version": checkpoint.VERSION}
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600


def test_crash_mid_write_keeps_previous(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "last.pt", {"step": 1, "w": torch.ones(3)})
    real_save = torch.save

    def crash(obj, f, *a, **k):
        f.write(b"PK\x03\x04 half a zip file")  # some bytes reach the disk...
        raise KeyboardInterrupt  # ...then the process is stopped

    monkeypatch.setattr(checkpoint.torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"step": 2, "w": torch.zeros(3)})
    monkeypatch.setattr(checkpoint.torch, "save", real_save)
    state = load_checkpoint(path)
    assert state["step"] == 1 and torch.equal(state["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left behind


def test_missing_file(tmp_path):
    with pytest.raises(LabkitError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_file(tmp_path, damage):
    path = save_checkpoint(tmp_path / "c.pt", {"w": torch.randn(1000)})
    raw = path.read_bytes()
    path.write_bytes({"truncate": raw[: len(raw) // 2], "garbage": b"\x00\x01garbage" * 50, "empty": b""}[damage])
    with pytest.raises(LabkitError, match="truncated or corrupt") as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)


def test_not_a_labkit_checkpoint(tmp_path):
    torch.save({"model": {}}, tmp_path / "other.pt")
    with pytest.raises(LabkitError, match="not a labkit checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


class Evil:
    def __reduce__(self):
        return (print, ("code ran",))


def test_pickle_with_code_is_refused(tmp_path, capsys):
    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"labkit": Evil()}, protocol=2))
    with pytest.raises(LabkitError, match="truncated or corrupt"):
        load_checkpoint(tmp_path / "evil.pt")
    assert "code ran" not in capsys.readouterr().out  # weights_only=True never ran it


def test_newer_version_is_refused(tmp_path):
    torch.save({"labkit": {"format": checkpoint.FORMAT, "version": 99}}, tmp_path / "future.pt")
    with pytest.raises(LabkitError, match="upgrade labkit"):
        load_checkpoint(tmp_path / "future.pt")


def test_release_export_and_load_model(tmp_path):
    config = recipes.tiny(steps=6, out_dir=str(tmp_path / "run"))
    result = training.train(config, synthetic_digits(40, generator=torch.Generator().manual_seed(0)),
                            device="cpu", progress=False)
    release = export_release(result.checkpoint, tmp_path / "release.pt")
    assert release.stat().st_size < result.checkpoint.stat().st_size
    model, schedule, meta = load_model(release, device="cpu")
    assert meta["step"] == 6 and schedule.T == config.T and not model.training
    x, t, y = torch.randn(4, 1, 28, 28), torch.tensor([0, 10, 500, 999]), torch.tensor([0, 3, 7, 10])
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, y), result.ema(x, t, y), atol=2e-3, rtol=1e-2)  # fp16 weights
    full, _, _ = load_model(result.checkpoint, device="cpu")  # a training checkpoint works too (EMA weights)
    with torch.no_grad():
        torch.testing.assert_close(full(x, t, y), result.ema(x, t, y))


def test_load_model_wrong_shapes(tmp_path):
    state = {"ema": {"stem.weight": torch.zeros(3)}, "unet": recipes.tiny().unet.to_dict(), "schedule": "cosine", "T": 1000}
    save_checkpoint(tmp_path / "bad.pt", state)
    with pytest.raises(LabkitError, match="usable model"):
        load_model(tmp_path / "bad.pt", device="cpu")


def test_shipped_checkpoint():
    if not checkpoint.ASSET_PATH.exists():
        pytest.skip("no shipped checkpoint in this checkout")
    model, schedule, meta = load_model(None, device="cpu")
    assert meta["path"].endswith("mnist_ddpm.pt") and model.config.num_classes == 10


def test_shipped_checkpoint_checksum(monkeypatch):
    if not checkpoint.ASSET_PATH.exists():
        pytest.skip("no shipped checkpoint in this checkout")
    monkeypatch.setattr(checkpoint, "ASSET_SHA256", "0" * 64)
    with pytest.raises(LabkitError, match="corrupt"):
        load_model(None, device="cpu")
