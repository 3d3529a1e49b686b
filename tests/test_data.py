"""Where MNIST is found: plain gz folder, torchvision root, LABKIT_DATA, read-only folder, nothing at all.

Fake tiny IDX files (a few 28x28 images) stand in for MNIST, so no real data is needed.
"""

import gzip
import os
import stat
import struct
import urllib.error

import pytest
import torch

from labkit import data
from labkit.data import MNIST_FILES, DataNotFoundError, find_mnist_root, load_mnist


def idx_bytes(name: str, n: int, seed: int = 0) -> bytes:
    """IDX format (LeCun's MNIST files): big-endian magic, sizes, then uint8 data."""
    g = torch.Generator().manual_seed(seed)
    if "images" in name:
        pixels = torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.uint8)
        return struct.pack(">IIII", 2051, n, 28, 28) + pixels.numpy().tobytes()
    labels = (torch.arange(n) % 10).to(torch.uint8)
    return struct.pack(">II", 2049, n) + labels.numpy().tobytes()


def write_fake_mnist(folder, n_train=12, n_test=5, gz=True):
    folder.mkdir(parents=True, exist_ok=True)
    for name in MNIST_FILES:
        raw = idx_bytes(name, n_train if name.startswith("train") else n_test)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / name).write_bytes(raw)
    return folder


@pytest.fixture
def no_env(monkeypatch, tmp_path):
    monkeypatch.delenv("LABKIT_DATA", raising=False)
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))  # fresh, empty cache per test


@pytest.fixture
def offline(monkeypatch):
    """Make torchvision's download fail at once, as on a machine without internet."""
    import torchvision.datasets

    def fail(self):
        raise urllib.error.URLError("no network (test)")

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", fail)


def check_digits(d, n):
    assert d.images.shape == (n, 1, 28, 28) and d.images.dtype == torch.float32
    assert d.labels.dtype == torch.int64 and d.labels.tolist() == [i % 10 for i in range(n)]
    assert -1.0 <= float(d.images.min()) and float(d.images.max()) <= 1.0


def test_plain_gz_folder(tmp_path, no_env, offline):
    folder = write_fake_mnist(tmp_path / "mnist")
    check_digits(load_mnist(folder), 12)
    check_digits(load_mnist(folder, train=False), 5)


def test_torchvision_root(tmp_path, no_env, offline):
    write_fake_mnist(tmp_path / "tv" / "MNIST" / "raw", gz=False)
    assert find_mnist_root(tmp_path / "tv") == tmp_path / "tv"
    check_digits(load_mnist(tmp_path / "tv"), 12)


def test_env_var(tmp_path, no_env, offline, monkeypatch):
    folder = write_fake_mnist(tmp_path / "from-env")
    monkeypatch.setenv("LABKIT_DATA", str(folder))
    assert data.candidate_roots()[0] == folder
    check_digits(load_mnist(), 12)


def test_read_only_folder_is_not_written(tmp_path, no_env, offline):
    folder = write_fake_mnist(tmp_path / "ro")
    before = sorted(os.listdir(folder))
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        check_digits(load_mnist(folder), 12)
    finally:
        folder.chmod(stat.S_IRWXU)
    assert sorted(os.listdir(folder)) == before  # unpacked into the cache, not beside the files


def test_nothing_found_offline_names_the_options(tmp_path, no_env, offline):
    with pytest.raises(DataNotFoundError) as info:
        load_mnist(tmp_path / "empty")
    msg = str(info.value)
    assert "empty" in msg and "LABKIT_DATA" in msg and "--data" in msg and "train-images-idx3-ubyte.gz" in msg
    assert "download failed" in msg and "\n" not in msg


def test_nothing_found_without_download(tmp_path, no_env):
    with pytest.raises(DataNotFoundError, match="LABKIT_DATA"):
        load_mnist(tmp_path / "empty", download=False)


def test_corrupt_gz_is_a_clear_error(tmp_path, no_env, offline):
    folder = write_fake_mnist(tmp_path / "bad")
    (folder / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataNotFoundError, match="could not be read"):
        load_mnist(folder)


def test_synthetic_digits_are_seeded():
    a = data.synthetic_digits(20, generator=torch.Generator().manual_seed(1))
    b = data.synthetic_digits(20, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a.images, b.images) and a.images.shape == (20, 1, 28, 28)
