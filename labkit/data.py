"""MNIST for the labs, and small synthetic digits for fast tests.

Where MNIST is looked for:
  1. the ``root`` argument (``--data DIR`` on the command line) - only there, when it is given: a wrong
     path is reported, never silently replaced by data from elsewhere;
  2. otherwise the environment variable ``LABKIT_DATA``, then ``~/.cache/labkit/data``
     (torchvision downloads into the first of these when the machine is online).

A root may be either a torchvision root (holding ``MNIST/raw/``) or a plain folder with the four gzip
files ``train-images-idx3-ubyte.gz`` ... (like ``../shared/data/mnist``). Plain folders are unpacked
once into labkit's cache (``LABKIT_CACHE``, default ``~/.cache/labkit``), so a read-only folder works too.

Images come back as one tensor, not a DataLoader: the whole of MNIST is 47 MB of uint8, so the trainer
keeps it on the GPU and draws batches by indexing, which is far faster than a Python loader.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from labkit.errors import LabkitError, LabkitValueError

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")  # for captions

MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
ENV_VAR = "LABKIT_DATA"


def to_unit_range(x: torch.Tensor) -> torch.Tensor:
    """The model's range [-1, 1] -> a picture's range [0, 1], linearly: (x + 1) / 2.   (lab 00)

    x: any shape -> the same shape and dtype. Values outside [-1, 1] map outside [0, 1]: clamp afterwards
    where a picture needs it.
    """
    return (x + 1) / 2


class DataNotFoundError(LabkitError):
    """MNIST could not be found or downloaded."""


@dataclass(frozen=True)
class Digits:
    """A set of digit images in memory.

    images: float32 [N, 1, H, W] scaled to [-1, 1] (the range the diffusion model works in)
    labels: int64 [N]
    """

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return self.images.shape[0]

    def to(self, device) -> "Digits":
        return Digits(self.images.to(device), self.labels.to(device))

    def subset(self, n: int) -> "Digits":
        return Digits(self.images[:n], self.labels[:n])


def default_cache_dir() -> Path:
    return Path(os.environ.get("LABKIT_CACHE", Path.home() / ".cache" / "labkit"))


def candidate_roots(root: str | os.PathLike | None = None) -> list[Path]:
    """The folders searched for MNIST, in order (shown by ``labkit info``): just ``root`` when given."""
    if root is not None:
        return [Path(root).expanduser()]
    roots = []
    if os.environ.get(ENV_VAR):
        roots.append(Path(os.environ[ENV_VAR]).expanduser())
    roots.append(default_cache_dir() / "data")
    return roots


def _has_raw(folder: Path) -> bool:
    return all((folder / name).exists() for name in MNIST_FILES)


def _has_gz(folder: Path) -> bool:
    return all((folder / f"{name}.gz").exists() for name in MNIST_FILES)


def _unpack_gz(src: Path, raw_dir: Path) -> None:
    """Decompress the four gzip files into ``raw_dir`` (atomically, file by file)."""
    raw_dir.mkdir(parents=True, exist_ok=True)
    for name in MNIST_FILES:
        target = raw_dir / name
        if target.exists():
            continue
        tmp = target.with_name(f"{name}.{os.getpid()}.part")  # unique: parallel runs may unpack at once
        try:
            with gzip.open(src / f"{name}.gz", "rb") as f_in, open(tmp, "wb") as f_out:
                shutil.copyfileobj(f_in, f_out)
        except (OSError, EOFError) as exc:  # not gzip, truncated download, ...
            tmp.unlink(missing_ok=True)
            raise DataNotFoundError(f"MNIST files in {src} could not be read: {name}.gz: {exc}") from None
        os.replace(tmp, target)


def locate_mnist(root: str | os.PathLike | None = None) -> tuple[Path, Path] | None:
    """``(folder, torchvision root)`` for the first candidate folder that holds MNIST, or None.

    ``folder`` is where the user's files are (what ``labkit info`` shows); the torchvision root (a folder
    holding ``MNIST/raw/``) is the same folder, or labkit's cache when the files are gzip files.
    """
    for folder in candidate_roots(root):
        if _has_raw(folder / "MNIST" / "raw"):
            return folder, folder
        for gz_dir in (folder, folder / "MNIST" / "raw", folder / "mnist"):
            if _has_gz(gz_dir):
                # Unpack into our own cache, keyed by the source folder; never write beside the
                # user's files (they may be read-only, or shared with a class).
                key = hashlib.sha1(str(gz_dir.resolve()).encode()).hexdigest()[:10]
                target = default_cache_dir() / "unpacked" / key
                _unpack_gz(gz_dir, target / "MNIST" / "raw")
                return gz_dir, target
    return None


def find_mnist_root(root: str | os.PathLike | None = None) -> Path | None:
    """Return a torchvision root (a folder holding ``MNIST/raw/``) or None if none is found."""
    found = locate_mnist(root)
    return found[1] if found else None


def _download(target: Path, train: bool) -> tuple[Path | None, Exception | None]:
    """Download MNIST with torchvision into ``target`` (a torchvision root): ``(target, None)`` or ``(None, error)``.

    The files go to a temporary folder in labkit's cache first and are moved into ``target`` only when all of
    them arrived: a failed download leaves nothing behind, and never creates the folder the user named.
    """
    from torchvision.datasets import MNIST

    tmp = None
    try:
        default_cache_dir().mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix="mnist-download-", dir=default_cache_dir()))
        MNIST(str(tmp), train=train, download=True)
        raw = target / "MNIST" / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        for f in (tmp / "MNIST" / "raw").iterdir():
            shutil.move(str(f), str(raw / f.name))
        return target, None
    except Exception as exc:  # offline: URLError, socket errors, HTTP errors; an unwritable folder...
        return None, exc
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _download_reason(error: Exception) -> str:
    """Why a download failed, in a few words and never cut: torchvision's message repeats one
    ``<urlopen error ...>`` per mirror over several lines; keep each distinct reason once."""
    text = str(error)
    reasons = list(dict.fromkeys(" ".join(r.split()) for r in re.findall(r"<urlopen error (.*?)>", text, re.S)))
    if reasons:
        return "; ".join(reasons)
    return f"{type(error).__name__}: {' '.join(text.split())}"


def _missing_message(root, error: Exception | None) -> str:
    where = ", ".join(str(p) for p in candidate_roots(root))
    why = f" (download failed: {_download_reason(error)})" if error else ""
    return (
        f"MNIST not found in {where}{why}. Either pass a folder holding the four files "
        f"train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
        f"t10k-labels-idx1-ubyte.gz (--data DIR or load_mnist(root=DIR)), set {ENV_VAR}=DIR, "
        f"or run once with internet access so torchvision can download it."
    )


def load_mnist(root: str | os.PathLike | None = None, *, train: bool = True, download: bool = True) -> Digits:
    """Real MNIST through torchvision, scaled to [-1, 1].

    Returns Digits with images float32 [N, 1, 28, 28] (N = 60000 train / 10000 test), labels int64 [N].
    Raises DataNotFoundError with the options spelled out when MNIST is missing and cannot be downloaded.
    """
    from torchvision.datasets import MNIST  # imported here: torchvision is slow to import

    found = find_mnist_root(root)
    error = None
    if found is None and download:
        found, error = _download(candidate_roots(root)[0], train)
    if found is None:
        raise DataNotFoundError(_missing_message(root, error))
    try:
        ds = MNIST(str(found), train=train, download=False)
    except Exception as exc:  # corrupt or truncated files
        raise DataNotFoundError(f"MNIST files in {found} could not be read: {exc}") from exc
    images = ds.data.unsqueeze(1).float().div(127.5).sub(1.0)  # uint8 [N,28,28] -> [-1,1] [N,1,28,28]
    return Digits(images, ds.targets.long())


# --- Synthetic digits ---------------------------------------------------------------------------
# Seven-segment digits with random position, size and stroke width: recognisable, class-dependent
# and generated in milliseconds, so tests never need the real data.
#
#   -a-
#  f   b
#   -g-
#  e   c
#   -d-
_SEGMENTS = {
    0: "abcdef",
    1: "bc",
    2: "abged",
    3: "abgcd",
    4: "fgbc",
    5: "afgcd",
    6: "afgedc",
    7: "abc",
    8: "abcdefg",
    9: "abcdfg",
}


def synthetic_digits(
    n: int, *, size: int = 28, generator: torch.Generator | None = None, num_classes: int = 10
) -> Digits:
    """n seven-segment digits, labels cycling 0..num_classes-1, as Digits in [-1, 1].

    images: float32 [n, 1, size, size]; labels: int64 [n]
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise LabkitValueError(f"n must be an integer >= 0, got {n!r}")
    if not isinstance(size, int) or isinstance(size, bool) or size < 4:
        raise LabkitValueError(f"size must be an integer >= 4, got {size!r}")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise LabkitValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    g = generator
    labels = torch.arange(n) % num_classes
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    images = torch.zeros(n, 1, size, size)
    # per-image jitter: centre, height, width, stroke
    cx = 0.5 + 0.08 * (torch.rand(n, generator=g) - 0.5)
    cy = 0.5 + 0.08 * (torch.rand(n, generator=g) - 0.5)
    h = 0.55 + 0.15 * torch.rand(n, generator=g)
    w = 0.30 + 0.12 * torch.rand(n, generator=g)
    s = 0.05 + 0.03 * torch.rand(n, generator=g)
    for i in range(n):
        top, mid, bot = cy[i] - h[i] / 2, cy[i], cy[i] + h[i] / 2
        left, right = cx[i] - w[i] / 2, cx[i] + w[i] / 2
        segs = {
            "a": ((left, top), (right, top)),
            "g": ((left, mid), (right, mid)),
            "d": ((left, bot), (right, bot)),
            "f": ((left, top), (left, mid)),
            "b": ((right, top), (right, mid)),
            "e": ((left, mid), (left, bot)),
            "c": ((right, mid), (right, bot)),
        }
        img = torch.zeros(size, size)
        for name in _SEGMENTS[int(labels[i]) % 10]:
            (x0, y0), (x1, y1) = segs[name]
            inside_x = (xx >= min(x0, x1) - s[i]) & (xx <= max(x0, x1) + s[i])
            inside_y = (yy >= min(y0, y1) - s[i]) & (yy <= max(y0, y1) + s[i])
            img = torch.maximum(img, (inside_x & inside_y).float())
        images[i, 0] = img
    return Digits(images * 2 - 1, labels.long())
