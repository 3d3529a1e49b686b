"""``labkit evaluate SAMPLES``: load a samples file, score it (``evaluate_samples``), write the JSON and the plot,
return the table. CLIP is optional: ``--clip auto`` uses the default weights when they are cached or can be
downloaded, and says why not otherwise.
"""

from __future__ import annotations

import torch

from labkit.device import pick_device
from labkit.errors import LabkitError, LabkitValueError, one_line
from labkit.evaluation.clip import ClipScorer, parse_clip_spec
from labkit.evaluation.figures import plot_per_digit_scores
from labkit.evaluation.report import evaluate_samples, format_table, save_json
from labkit.evaluation.samples_file import load_samples_file


def run_evaluate(
    samples_path,
    *,
    json_path=None,
    plot_path=None,
    clip: str | None = "none",
    data_root=None,
    device=None,
    seed: int = 0,
) -> str:
    """What ``labkit evaluate SAMPLES [--json F] [--plot F] [--clip MODEL:PRETRAINED|auto|none] [--data DIR]``
    does: load and check the samples, score them, write the optional JSON and plot, return the table.

    clip: "auto" (the command's default) adds the CLIP scores of ``DEFAULT_CLIP`` when its weights are cached
    or can be downloaded, and otherwise says in the table's first line why they were skipped; an explicit
    MODEL:PRETRAINED that cannot be loaded is an error.
    """
    images, labels = load_samples_file(samples_path)
    device = pick_device(device)  # the same choice as labkit sample and train (cuda, mps, cpu)
    scorer = skipped = None
    if clip is not None and clip.strip().lower() == "auto":
        scorer, skipped = auto_clip_scorer(device)
    else:
        spec = parse_clip_spec(clip)
        if spec is not None:
            try:
                scorer = ClipScorer.from_pretrained(*spec, device=device)
            except LabkitError as exc:
                raise LabkitError(f"{exc} Run with --clip none to skip the CLIP scores.") from None
    result = evaluate_samples(
        images.to(device),
        labels.to(device),
        clip_scorer=scorer,
        data_root=data_root,
        generator=torch.Generator().manual_seed(seed),
    )
    if skipped is not None:
        result["clip_skipped"] = skipped
    if json_path is not None:
        save_json(result, json_path)
    if plot_path is not None:
        plot_per_digit_scores(result, plot_path)
    return format_table(result)


DEFAULT_CLIP = ("ViT-B-32", "laion2b_s34b_b79k")  # what ``--clip auto`` loads


def auto_clip_scorer(device=None) -> tuple[ClipScorer | None, str | None]:
    """``(scorer, None)`` with ``DEFAULT_CLIP`` when its weights are cached or the Hugging Face hub can be
    reached, else ``(None, why)``: one line saying why the CLIP scores are skipped."""
    from labkit.evaluation.clip import cached_weights, hub_reachable

    model, pretrained = DEFAULT_CLIP
    try:
        cached = cached_weights(model, pretrained)
    except ImportError as exc:  # open_clip missing or broken
        return None, f"open_clip cannot be imported ({exc})"
    if cached is None and not hub_reachable():
        return None, (
            f"the weights of {model}:{pretrained} are not cached and the Hugging Face hub cannot be "
            "reached (run once online to download them)"
        )
    try:
        return ClipScorer.from_pretrained(model, pretrained, device=device), None
    except LabkitError as exc:
        return None, one_line(exc, 240)


def evaluate_samples_cli(args=None, **kwargs) -> str:
    """``run_evaluate`` from an argparse namespace (attributes samples, json, plot, clip, data, device)
    or from keyword arguments with those names."""
    values = dict(vars(args)) if args is not None else {}
    values.update(kwargs)
    if "samples" not in values:
        raise LabkitValueError("evaluate needs the path of a samples file.")
    return run_evaluate(
        values["samples"],
        json_path=values.get("json"),
        plot_path=values.get("plot"),
        clip=values.get("clip") or "none",
        data_root=values.get("data"),
        device=values.get("device"),
    )
