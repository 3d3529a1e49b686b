"""Scoring generated digits, always beside real MNIST digits scored the same way.

    classifier  the shipped MNIST CNN: accuracy / confidence of the intended digit, and FID features
    fid         Frechet distance (Heusel et al. 2017) in classifier feature space, the real floor, and the
                percentile bootstrap interval (Efron 1979) lab 06 teaches
    clip        optional CLIP zero-shot scores on open_clip (Radford et al. 2021), calibrated on real digits
    report      evaluate_samples -> dict (rows: DigitRow, Overall), format_table, save_json
    figures     per-digit bars of generated vs real, best and worst samples
    command     run_evaluate: what ``labkit evaluate`` does (samples file, optional CLIP, JSON, plot)
    measures    lab 09's small measurements (quartiles per digit, relative scores, diversity, speed-up)

All functions take images [N,1,28,28] in [0,1] (convert labkit.data's [-1,1] with (x + 1) / 2).
open_clip and matplotlib are imported only when CLIP scores or plots are asked for.
"""

from labkit.evaluation.classifier import (
    ClassifierTrainConfig,
    MnistClassifier,
    classifier_accuracy,
    load_classifier,
    train_classifier,
)
from labkit.evaluation.clip import ClipScorer, ClipScores, PromptSet, tiny_clip_scorer
from labkit.evaluation.fid import (
    RealReference,
    bootstrap_interval,
    classifier_features,
    classifier_fid,
    FidInterval,
    feature_stats,
    fid_interval,
    fid_vs_test,
    frechet_distance,
    real_floor,
)
from labkit.evaluation.command import evaluate_samples_cli, run_evaluate
from labkit.evaluation.figures import plot_best_worst, plot_per_digit_scores
from labkit.evaluation.report import evaluate_samples, format_table, load_samples_file, save_json

__all__ = [
    "ClassifierTrainConfig",
    "MnistClassifier",
    "classifier_accuracy",
    "load_classifier",
    "train_classifier",
    "ClipScorer",
    "ClipScores",
    "PromptSet",
    "tiny_clip_scorer",
    "bootstrap_interval",
    "classifier_features",
    "classifier_fid",
    "FidInterval",
    "feature_stats",
    "fid_interval",
    "fid_vs_test",
    "frechet_distance",
    "real_floor",
    "RealReference",
    "evaluate_samples",
    "evaluate_samples_cli",
    "format_table",
    "load_samples_file",
    "plot_best_worst",
    "plot_per_digit_scores",
    "run_evaluate",
    "save_json",
]
