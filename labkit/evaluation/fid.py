"""Frechet distance between feature distributions (FID), in the MNIST classifier's feature space.

FID (Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
Equilibrium", eq. 6) fits a Gaussian to the features of each image set and measures the Frechet
(2-Wasserstein) distance between the two Gaussians N(mu1, S1) and N(mu2, S2) (Dowson & Landau 1982):

    d^2 = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))

Two things make a raw FID hard to read, and this module handles both:
  * Scale. Here features come from a small MNIST classifier (``classifier.py``), not Inception, so the
    numbers are not comparable with published FIDs.
  * Bias. The estimate depends strongly on the number of samples (Chong & Forsyth 2020): even two sets
    of real digits are not at 0. So every FID is reported beside the *floor*: the FID of the same number
    of real training digits against the same reference (the MNIST test set). "3x the floor" means
    something; "FID 4.2" alone does not.
"""

from __future__ import annotations

import os
import weakref
from dataclasses import dataclass, field

import torch

from labkit.errors import LabkitValueError
from labkit.evaluation.classifier import load_classifier, predict


def feature_stats(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean [D] and covariance [D,D] of features [N,D], in float64 (covariance with N-1, like np.cov)."""
    if features.dim() != 2 or features.shape[0] < 2:
        raise LabkitValueError(f"FID needs features of shape [N, D] with N >= 2, got {list(features.shape)}.")
    f = features.double()
    mu = f.mean(dim=0)  # [D]
    centred = f - mu  # [N,D]
    sigma = centred.T @ centred / (f.shape[0] - 1)  # [D,D]
    return mu, sigma


def _sqrt_psd(s: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a symmetric positive semi-definite matrix through its eigendecomposition."""
    vals, vecs = torch.linalg.eigh((s + s.T) / 2)
    return (vecs * vals.clamp(min=0).sqrt()) @ vecs.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Squared Frechet distance between N(mu1, sigma1) and N(mu2, sigma2) (Heusel et al. 2017, eq. 6).

    Computed in float64. The awkward term Tr((S1 S2)^(1/2)) uses that S1 S2 = A (A S2) with A = S1^(1/2)
    has the same eigenvalues as the symmetric PSD matrix A S2 A; so the trace is the sum of square roots
    of eigenvalues of A S2 A. Unlike ``scipy.linalg.sqrtm(S1 @ S2)`` this never produces complex numbers
    from rounding, and it runs in torch on any device. Accepts tensors or numpy arrays.
    """
    mu1, mu2 = torch.as_tensor(mu1).double(), torch.as_tensor(mu2).double()
    s1, s2 = torch.as_tensor(sigma1).double(), torch.as_tensor(sigma2).double()
    if mu1.shape != mu2.shape or mu1.dim() != 1 or s1.shape != s2.shape or s1.shape != (len(mu1), len(mu1)):
        raise LabkitValueError(
            f"frechet_distance needs means [D] and covariances [D, D] of one size D, got "
            f"{list(mu1.shape)}, {list(s1.shape)}, {list(mu2.shape)}, {list(s2.shape)}."
        )
    s2 = s2.to(s1.device)
    a = _sqrt_psd(s1)  # [D,D]
    middle = a @ s2 @ a  # [D,D], symmetric PSD
    eig = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0)
    trace_sqrt = eig.sqrt().sum()  # Tr((S1 S2)^(1/2))
    diff = mu1 - mu2.to(mu1.device)
    d2 = diff @ diff + torch.trace(s1) + torch.trace(s2) - 2 * trace_sqrt
    return float(d2.clamp(min=0))  # tiny negatives are rounding


def bootstrap_interval(
    samples: torch.Tensor, statistic, resamples: int, level: float, generator: torch.Generator
) -> torch.Tensor:
    """Percentile bootstrap interval of ``statistic(samples)`` (Efron 1979; Efron & Tibshirani 1993, ch. 13):

        idx_b = N indices drawn uniformly from 0..N-1 *with replacement*, b = 1..B   (B = resamples)
        s_b   = statistic(samples[idx_b])
        interval = (q_{(1 - level)/2}, q_{(1 + level)/2}) of s_1..s_B   (linear interpolation, torch.quantile)

    The B resamples mimic drawing B fresh sets of N from the population the N samples came from, so the
    spread of the s_b estimates how much the statistic would move with another sample of the same size.
    All indices come from one ``torch.randint(0, N, (B, N), generator=generator)`` call, so a run is replayed
    exactly from the generator's seed. samples [N, ...] (resampled along dim 0); statistic: a resample
    [N, ...] -> a number (a float or a 0-d tensor); returns float64 [2]: (low, high)."""
    n = samples.shape[0]
    idx = torch.randint(0, n, (int(resamples), n), generator=generator, device=samples.device)  # [B, N]
    values = torch.tensor([float(statistic(samples[i])) for i in idx], dtype=torch.float64)  # [B] the s_b
    tail = (1 - level) / 2  # e.g. level 0.9: the 5th and the 95th percentile
    return torch.quantile(values, torch.tensor([tail, 1 - tail], dtype=torch.float64))


@dataclass(frozen=True)
class FidInterval:
    """An FID with its small-sample bias removed and a confidence interval for the distance itself.

    fid: the plain FID of the n samples; bias: its estimated excess over the true distance (about b / n);
    corrected = fid - bias; (low, high): the interval at ``level`` for the true Frechet distance between the
    population the samples came from and the reference. A perfect generator's interval contains 0."""

    fid: float
    bias: float
    low: float
    high: float
    level: float
    n: int

    @property
    def corrected(self) -> float:
        return self.fid - self.bias

    def overlaps(self, other: FidInterval) -> bool:
        """True when the two intervals share a point: the difference between the two FIDs is within noise."""
        return self.low <= other.high and other.low <= self.high


def fid_interval(
    features: torch.Tensor,
    mu: torch.Tensor,
    sigma: torch.Tensor,
    *,
    level: float = 0.9,
    halves: int = 200,
    generator: torch.Generator,
) -> FidInterval:
    """Bias-corrected half-sampling interval for the true Frechet distance of features [N, D] from the
    reference (mu [D], sigma [D, D]).

    Why not ``bootstrap_interval``: FID is biased upwards by about b / n (Chong & Forsyth 2020, "Effectively
    Unbiased FID and Inception Score and where to find them", section 3: FID is linear in 1 / n). A resample
    *with replacement* holds only about 63% distinct samples, so its FID carries a larger bias than the set's
    own, and every percentile interval lies above the set's FID, which itself lies above the truth (lab 06).
    Here both halves of the problem are handled by subsampling *without replacement* (Politis & Romano 1994):

        h_k = FID(m of the N samples, drawn without replacement),  m = N // 2,  k = 1..K  (K = halves)
        bias  = (mean(h) - FID_N) * (1/N) / (1/m - 1/N)      the 1/n law: E[h] - FID_N = b (1/m - 1/N)
        corrected = FID_N - bias                              = 2 FID_N - mean(h) for m = N/2 (Chong &
                                                                Forsyth's extrapolation to n = infinity)
        spread: h_k - mean(h), times sqrt(m / (N - m))        a half-sample varies around the full set
                                                                by sigma^2 (1/m - 1/N) = sigma^2 / N for m = N/2,
                                                                as much as the full set around its mean
        interval = corrected - (upper, lower) quantile of the spread   (the "basic" interval: the deviations
                                                                        of the halves, reflected), cut at 0

    Tested on Gaussians with a known distance (tests/test_evaluation_fid.py): a 90% interval covers the true
    distance in about 90% of trials, where the percentile bootstrap of FID covers it in far fewer.
    All subsets come from ``torch.randperm(N, generator=generator)``: a run is replayed from the seed."""
    n = features.shape[0]
    if n < 4:
        raise LabkitValueError(f"fid_interval needs at least 4 samples, got {n}.")
    m = n // 2
    fid_n = fid_of_features(mu, sigma, features)
    h = torch.tensor(
        [
            fid_of_features(mu, sigma, features[torch.randperm(n, generator=generator)[:m].to(features.device)])
            for _ in range(int(halves))
        ],
        dtype=torch.float64,
    )  # [K] FIDs of half-sets
    bias = float(h.mean() - fid_n) * (1 / n) / (1 / m - 1 / n)  # b / N under the 1/n law
    tail = (1 - level) / 2
    spread = (h - h.mean()) * (m / (n - m)) ** 0.5  # [K] deviations at the scale of an N-sample FID
    lower_dev, upper_dev = torch.quantile(spread, torch.tensor([tail, 1 - tail], dtype=torch.float64)).tolist()
    corrected = fid_n - bias
    low, high = (max(0.0, corrected - upper_dev), max(0.0, corrected - lower_dev))  # a distance is never below 0
    return FidInterval(fid_n, bias, low, high, level, n)


def fid_of_features(mu: torch.Tensor, sigma: torch.Tensor, features: torch.Tensor) -> float:
    """FID of features [N,D] against reference statistics (mu [D], sigma [D,D]): a ``statistic`` for
    ``bootstrap_interval`` (``functools.partial(fid_of_features, mu, sigma)``)."""
    return frechet_distance(*feature_stats(features), mu, sigma)


def classifier_features(images: torch.Tensor, classifier=None, *, batch_size: int = 1000) -> torch.Tensor:
    """Penultimate-layer features [N, 128] of images [N,1,28,28] in [0,1]."""
    classifier = classifier if classifier is not None else load_classifier(images.device)
    return predict(classifier, images, batch_size=batch_size, features=True)


def image_stats(images: torch.Tensor, classifier) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu [D], sigma [D,D]) of the classifier features of images [N,1,28,28] in [0,1]."""
    return feature_stats(classifier_features(images, classifier))


def fid_to_stats(images: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor], classifier) -> float:
    """FID of images [N,1,28,28] in [0,1] against reference statistics (mu, sigma): the one FID formula
    every caller of this package goes through."""
    return frechet_distance(*image_stats(images, classifier), *stats)


def classifier_fid(images_a: torch.Tensor, images_b: torch.Tensor, classifier=None) -> float:
    """FID between two image sets [N,1,28,28] in [0,1], in the classifier's feature space."""
    classifier = classifier if classifier is not None else load_classifier(images_a.device)
    return fid_to_stats(images_a, image_stats(images_b, classifier), classifier)


# --- Against real MNIST ---------------------------------------------------------------------------
# The reference is always the 10k MNIST *test* digits: held out from the classifier's training and from
# the diffusion model's, so neither can have memorised it. The floor draws from the 60k *training* digits.


FLOOR_SEED = 0  # the floor's draws of real training digits: fixed, so equal sample counts get equal floors
FLOOR_REPEATS = 3  # draws averaged (one draw of 1000 digits varies by about +-20%)


@dataclass(frozen=True)
class RealReference:
    """Real digits in [0,1] to compare with: ``test`` is the FID reference (and the per-digit reference of
    the report), ``train`` the pool the FID floor draws from. ``from_mnist`` gives the real thing (loaded
    once per data folder); tests pass synthetic digits through ``from_digits``."""

    train_images: torch.Tensor  # [M,1,28,28] in [0,1]
    test_images: torch.Tensor  # [T,1,28,28] in [0,1]
    test_labels: torch.Tensor  # [T] int64
    train_labels: torch.Tensor | None = None  # [M] int64 (optional: lets real training digits pose as samples)
    # classifier -> (mu, sigma); weak keys, so a discarded classifier's entry goes with it
    _stats: weakref.WeakKeyDictionary = field(default_factory=weakref.WeakKeyDictionary, compare=False, repr=False)

    @classmethod
    def from_digits(cls, train, test) -> "RealReference":
        """From two ``labkit.data.Digits`` (in [-1,1], as load_mnist returns them)."""
        return cls((train.images + 1) / 2, (test.images + 1) / 2, test.labels.long(), train.labels.long())

    @classmethod
    def from_mnist(cls, data_root=None, *, download: bool = True) -> "RealReference":
        """MNIST train (floor pool) and test (reference), from ``data_root``, LABKIT_DATA or the cache."""
        from labkit.data import load_mnist

        key = str(data_root or os.environ.get("LABKIT_DATA", ""))
        if key not in _MNIST_REFS:
            _MNIST_REFS[key] = cls.from_digits(
                load_mnist(data_root, train=True, download=download),
                load_mnist(data_root, train=False, download=download),
            )
        return _MNIST_REFS[key]

    # classifier -> {(n, repeats): floor}
    _floors: weakref.WeakKeyDictionary = field(default_factory=weakref.WeakKeyDictionary, compare=False, repr=False)

    def test_stats(self, classifier) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu [128], sigma [128,128]) of the test digits' features, computed once per classifier object
        (retrain a classifier in place and the cached statistics go stale: build a new RealReference)."""
        if classifier not in self._stats:
            self._stats[classifier] = image_stats(self.test_images, classifier)
        return self._stats[classifier]

    def floor(self, n: int, classifier, *, repeats: int = FLOOR_REPEATS) -> float:
        """The floor of record for n samples: ``real_floor`` averaged over ``repeats`` draws made with a
        generator seeded FLOOR_SEED, so it depends on n alone (cached per classifier and n)."""
        cache = self._floors.setdefault(classifier, {})
        if (n, repeats) not in cache:
            cache[n, repeats] = real_floor(
                n, classifier, real=self, repeats=repeats, generator=torch.Generator().manual_seed(FLOOR_SEED)
            )
        return cache[n, repeats]


@dataclass(frozen=True)
class FidScore:
    """FID of n samples against the test digits, beside the floor of the same n: ratio = fid / floor
    ("3x the floor"; None when the floor is 0)."""

    fid: float
    floor: float
    n: int

    @property
    def ratio(self) -> float | None:
        return self.fid / self.floor if self.floor else None


def fid_with_floor(
    images: torch.Tensor, classifier, real: "RealReference", *, floor_repeats: int = FLOOR_REPEATS
) -> FidScore:
    """FID of images [N,1,28,28] in [0,1] vs all of ``real``'s test digits, and the floor of record for N
    (``RealReference.floor``). ``labkit evaluate``, the labs' ``DigitJudge`` and the benchmarks all call
    this, so the same samples give the same "x the floor" everywhere."""
    return FidScore(
        fid_to_stats(images, real.test_stats(classifier), classifier),
        real.floor(len(images), classifier, repeats=floor_repeats),
        len(images),
    )


_MNIST_REFS: dict[str, RealReference] = {}


def fid_vs_test(images: torch.Tensor, classifier=None, *, data_root=None, real: RealReference | None = None) -> float:
    """FID of images [N,1,28,28] in [0,1] against the MNIST test set. Report it beside ``real_floor(N)``."""
    classifier = classifier if classifier is not None else load_classifier(images.device)
    real = real if real is not None else RealReference.from_mnist(data_root)
    return fid_to_stats(images, real.test_stats(classifier), classifier)


def real_floor(
    n: int,
    classifier=None,
    *,
    data_root=None,
    real: RealReference | None = None,
    generator: torch.Generator | None = None,
    repeats: int = 1,
) -> float:
    """The FID floor for n samples: FID of n random real *training* digits vs the test set.

    A perfect generator, drawing from the true digit distribution, would score about this with n samples;
    it shrinks as n grows, which is why a generated set is always compared with the floor of its own size.
    One draw of 1000 digits varies by about +-20%: ``repeats`` averages that many independent draws.
    ``real`` replaces MNIST (tests use synthetic digits).
    """
    classifier = classifier if classifier is not None else load_classifier()
    real = real if real is not None else RealReference.from_mnist(data_root)
    pool = real.train_images
    if not 2 <= n <= len(pool):
        raise LabkitValueError(f"real_floor needs 2 <= n <= {len(pool)} real digits, got n={n}.")
    reference = real.test_stats(classifier)
    floors = []
    for _ in range(max(1, repeats)):
        idx = torch.randperm(len(pool), generator=generator)[:n]
        floors.append(fid_to_stats(pool[idx], reference, classifier))
    return sum(floors) / len(floors)
