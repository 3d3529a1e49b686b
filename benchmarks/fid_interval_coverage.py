"""Does a 90% FID interval hold the true distance 90% of the time, on real MNIST features? (issue 26 item 4)

tests/test_evaluation_fid.py checks ``fid.fid_interval`` on small Gaussians. This checks it where the labs use
it: 128 classifier features, n of 40 to 1000. The "population" of a generator is a pool of 60000 digits, so the
true distance is known exactly: the Frechet distance between the pool's own mean and covariance and the test
set's. Each trial draws n digits from the pool (with replacement: independent draws from the pool's
distribution) and asks whether the interval holds that truth; the plain percentile bootstrap
(``fid.bootstrap_interval``) gets the same sets.

Pools: real training digits (``--noise 0``: a perfect generator, truth close to 0) and the same digits with
Gaussian pixel noise of the given standard deviations (flawed generators: 0.05 lands at about 2-5x the floor at
n = 100-300, where the labs' comparisons are; 0.3 at about 300x).

    LABKIT_DATA=../shared/data/mnist python benchmarks/fid_interval_coverage.py [--trials 100] [--n 100 300] \
        [--noise 0 0.05 0.3]
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import torch

from labkit.evaluation import fid as FID
from labkit.evaluation.classifier import load_classifier


def coverage(pool, mu, sigma, truth, n, trials, halves, seed):
    g = torch.Generator().manual_seed(seed)
    hits = {"halves": 0, "bootstrap": 0}
    widths = {"halves": 0.0, "bootstrap": 0.0}
    for _ in range(trials):
        x = pool[torch.randint(0, len(pool), (n,), generator=g)]  # [n, 128] one sample set
        iv = FID.fid_interval(x, mu, sigma, level=0.9, halves=halves, generator=g)
        boot = FID.bootstrap_interval(x, partial(FID.fid_of_features, mu, sigma), halves, 0.9, g).tolist()
        for name, (low, high) in (("halves", (iv.low, iv.high)), ("bootstrap", boot)):
            hits[name] += low <= truth <= high
            widths[name] += (high - low) / trials
    return {k: hits[k] / trials for k in hits}, widths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--halves", type=int, default=100)
    ap.add_argument("--n", type=int, nargs="+", default=[100, 300])
    ap.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.05, 0.3])
    args = ap.parse_args()
    real = FID.RealReference.from_mnist(download=False)
    clf = load_classifier()
    mu, sigma = real.test_stats(clf)
    g = torch.Generator().manual_seed(0)
    pools = {
        (f"digits + noise {s:g}" if s else "real digits"): (
            real.train_images + s * torch.randn(real.train_images.shape, generator=g)
        ).clamp(0, 1)
        for s in args.noise
    }
    floor = {n: real.floor(n, clf) for n in args.n}
    print(f"{args.trials} trials per row, 90% intervals, {args.halves} half-sets / resamples each")
    print(f"{'pool':>20} {'n':>5} {'truth':>8} {'floor':>7}   half-sampling (width)   plain bootstrap (width)")
    for name, images in pools.items():
        feats = FID.classifier_features(images, clf).double()  # [60000, 128]
        truth = FID.frechet_distance(*FID.feature_stats(feats), mu, sigma)
        for n in args.n:
            start = time.perf_counter()
            cov, width = coverage(feats, mu, sigma, truth, n, args.trials, args.halves, seed=n)
            print(f"{name:>20} {n:5d} {truth:8.4f} {floor[n]:7.4f}   {cov['halves']:6.0%} ({width['halves']:.3f})"
                  f"          {cov['bootstrap']:6.0%} ({width['bootstrap']:.3f})   [{time.perf_counter() - start:.0f} s]")


if __name__ == "__main__":
    main()
