"""What the labs work with, beside their checks: the model they sample from, CLIP, the digit judge.

    lab_model(device)          (model, schedule, meta): the shipped checkpoint, or an untrained stand-in
    lab_clip(device, prompts)  (scorer, pretrained): real CLIP, or a tiny random one with a loud banner
    DigitJudge(device=...)     classifier accuracy and FID / floor, exactly as ``labkit evaluate`` reports them
    lab_digits(...)            real MNIST or synthetic digits (``labkit.colab.lab_digits``)

The lab modules re-export the ones their notebooks use (``checks.lab_model``, ``checks.DigitJudge``).
"""

from __future__ import annotations

import torch

from labkit.colab import lab_digits  # noqa: F401  (one place to find every lab fixture)

_MODELS: dict = {}


def lab04_checkpoint(runs: str | None = None) -> str | None:
    """The checkpoint your lab 04 run wrote (``<runs>/lab04-gpu/loop.pt`` or ``lab04-cpu/loop.pt``, the newest),
    or None. ``runs``: lab 04's runs folder (``labkit.colab.runs_dir``; default ``runs``)."""
    import os

    found = [os.path.join(runs or "runs", name, "loop.pt") for name in ("lab04-gpu", "lab04-cpu")]
    found = [p for p in found if os.path.isfile(p) and not os.path.islink(p)]
    return max(found, key=os.path.getmtime) if found else None


def model_at(path, device=None, *, verbose: bool = True, label: str = "Your model"):
    """``(model, schedule, meta)``: the checkpoint at ``path`` when it loads, else the shipped one (``lab_model``);
    one printed line says which, and ``meta["yours"]`` too. While grading there is no such file: the shipped model
    is used."""
    from labkit.checkpoint import load_model
    from labkit.errors import LabkitError

    if path:
        try:
            model, schedule, meta = load_model(path, device=device)
            if verbose:
                print(
                    f"{label}: {path} ({meta.get('step')} training steps, schedule {schedule.name}, T = {schedule.T})."
                )
            return model, schedule, dict(meta, pretrained=True, yours=True)
        except (LabkitError, OSError) as exc:
            if verbose:
                print(
                    f"NOTE: could not load {path} ({exc}).\n      Using the shipped checkpoint instead: the "
                    "numbers are then about labkit's model, not yours."
                )
    model, schedule, meta = lab_model(device, verbose=verbose)
    return model, schedule, dict(meta, yours=False)


def trained_model(device=None, *, runs: str | None = None, verbose: bool = True):
    """``model_at`` your lab 04 run when its checkpoint is in ``runs`` (``lab04_checkpoint``), else the shipped one."""
    return model_at(lab04_checkpoint(runs), device, verbose=verbose, label="Your lab 04 model")


def lab_model(device=None, *, verbose: bool = True):
    """``(model, schedule, meta)``: the shipped pretrained checkpoint (``labkit.checkpoint.load_model(None)``),
    or, where it is missing (a checkout without assets), an untrained tiny stand-in whose samples
    are noise; ``meta["pretrained"]`` says which. Cached per device."""
    from labkit.checkpoint import load_model
    from labkit.errors import LabkitError

    key = str(device)
    if key in _MODELS:
        return _MODELS[key]
    try:
        model, schedule, meta = load_model(None, device=device)
        meta = dict(meta, pretrained=True)
        if verbose:
            print(f"Loaded the shipped checkpoint ({meta.get('step')} training steps, schedule {schedule.name}).")
    except LabkitError as exc:
        from labkit import recipes
        from labkit.device import pick_device
        from labkit.schedules import make_schedule
        from labkit.unet import UNet

        if verbose:
            print(
                f"NOTE: {exc}\n      Using an UNTRAINED stand-in model instead: its samples are noise, not digits, and "
                "every number below describes the stand-in, not a real model."
            )
        config = recipes.tiny()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = UNet(config.unet)
        model = model.to(pick_device(device)).eval().requires_grad_(False)
        schedule = make_schedule(config.schedule, config.T)
        meta = {"step": 0, "pretrained": False, "path": None, "schedule": schedule.name, "T": schedule.T}
    _MODELS[key] = (model, schedule, meta)
    return _MODELS[key]


def lab_clip(device=None, prompts=None, *, verbose: bool = True):
    """``(scorer, pretrained)``: real CLIP (ViT-B/32, LAION-2B, downloaded by open_clip) unless in fast mode or
    offline; then a tiny *random* CLIP with a loud warning (its numbers are meaningless). Used by labs 06 and 08."""
    from labkit import colab
    from labkit.errors import LabkitError
    from labkit.evaluation import ClipScorer, tiny_clip_scorer

    kwargs = {"prompts": prompts} if prompts is not None else {}
    if not colab.fast_mode():
        try:
            return ClipScorer.from_pretrained("ViT-B-32", "laion2b_s34b_b79k", device=device, **kwargs), True
        except LabkitError as exc:
            if verbose:
                print(f"Could not load pretrained CLIP: {exc}")
    if verbose:
        print(
            "=" * 78 + "\n!!  TINY RANDOM CLIP MODEL: every CLIP number and picture below is MEANINGLESS.  !!\n"
            "!!  (offline or fast mode). Run in Colab with internet for the real model.       !!\n" + "=" * 78
        )
    return tiny_clip_scorer(device=device, **kwargs), False


def _default_reference(verbose: bool):
    """The reference of ``labkit evaluate`` (MNIST: training digits for the floor, all test digits as the
    reference); synthetic digits, with a note, where MNIST cannot be found (offline, no download in fast mode)."""
    from labkit import colab, data
    from labkit.evaluation.fid import RealReference

    try:
        return RealReference.from_mnist(download=not colab.fast_mode())
    except data.DataNotFoundError as exc:
        if verbose:
            print(f"Note: real MNIST was not found: the judge compares with synthetic digits.\n  ({exc})")
        return RealReference.from_digits(
            data.synthetic_digits(2000, generator=torch.Generator().manual_seed(1)),
            data.synthetic_digits(1000, generator=torch.Generator().manual_seed(2)),
        )


class DigitJudge:
    """Scores generated digits with the shipped MNIST classifier: how often it sees the intended digit
    (fidelity) and the feature-space FID against real held-out digits (fidelity *and* diversity), beside
    the floor: the FID of as many real training digits against the same reference. Both come from
    ``labkit.evaluation.fid.fid_with_floor``, the computation of ``labkit evaluate``: the same samples get
    the same "x the floor" here and in its report.

        judge = DigitJudge(device=DEVICE)   # MNIST, as labkit evaluate (synthetic digits where MNIST is missing)
        judge(images, labels)   # images in [-1, 1] -> {"accuracy", "confidence", "fid", "floor", "fid_ratio", "n",
                                #   "fid_interval", "fid_low_ratio", "fid_high_ratio", "fid_corrected_ratio"}

    The interval (``labkit.evaluation.fid.fid_interval``, 90%) is for the distance itself, with FID's
    small-sample bias removed, written in the unit of the floor: a perfect model's interval holds 0, where its
    plain FID sits near 1x the floor. Two FIDs of the same n differ beyond sampling noise when their intervals
    do not overlap.

    ``real``: None (the above), a ``labkit.evaluation.RealReference``, or real digit images in [-1, 1]
    (digits of your own: the first half, at most ``max_ref``, is the reference, the next as many the floor's pool).
    """

    def __init__(self, real=None, device=None, max_ref: int = 5000, *, verbose: bool = True):
        from labkit.evaluation.classifier import load_classifier
        from labkit.evaluation.fid import RealReference

        self.classifier = load_classifier(device)
        if real is None:
            real = _default_reference(verbose)
        elif isinstance(real, torch.Tensor):
            images = ((real.float().cpu() + 1) / 2).clamp(0, 1)
            half = min(len(images) // 2, max_ref)
            none = torch.zeros(0, dtype=torch.long)
            real = RealReference(images[half : 2 * half], images[:half], none)
        self.real = real

    def floor(self, n: int) -> float:
        """FID of n real digits (not in the reference) against the reference: what a perfect model scores."""
        return self.real.floor(max(2, min(n, len(self.real.train_images))), self.classifier)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> dict:
        from labkit.evaluation.classifier import classifier_accuracy
        from labkit.evaluation.fid import fid_with_floor

        x = ((images.detach().float().cpu() + 1) / 2).clamp(0, 1)  # [-1, 1] -> [0, 1]
        acc = classifier_accuracy(x, labels.cpu(), self.classifier)
        score = fid_with_floor(x, self.classifier, self.real)
        return {
            "accuracy": acc["accuracy"],
            "confidence": acc["confidence"],
            "fid": score.fid,
            "floor": score.floor,
            "fid_ratio": score.ratio if score.ratio is not None else float("nan"),
            "n": len(x),
            "intended_prob": acc["intended_prob"],
            **self.fid_interval(x, score.floor),
        }

    def fid_interval(self, x01: torch.Tensor, floor: float, level: float = 0.9) -> dict:
        """The bias-corrected interval of the FID of images [N,1,28,28] in [0,1] (``fid.fid_interval``, seeded:
        the same images give the same interval), and its ends and centre (cut at 0) divided by the floor (NaN
        below 4 images or at a zero floor)."""
        from labkit import colab
        from labkit.evaluation.fid import classifier_features, fid_interval

        if len(x01) < 4 or not floor:
            nan = float("nan")
            return {"fid_interval": None, "fid_low_ratio": nan, "fid_high_ratio": nan, "fid_corrected_ratio": nan}
        iv = fid_interval(
            classifier_features(x01, self.classifier),
            *self.real.test_stats(self.classifier),
            level=level,
            halves=colab.pick(200, 20),
            generator=torch.Generator().manual_seed(0),
        )
        return {
            "fid_interval": iv,
            "fid_low_ratio": iv.low / floor,
            "fid_high_ratio": iv.high / floor,
            "fid_corrected_ratio": max(0.0, iv.corrected) / floor,  # a distance, cut at 0 like the interval
        }
