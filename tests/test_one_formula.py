"""Each exercise's formula exists once (issue 16, item 3).

For every function a lab asks the student to write (a ``def`` holding ``### BEGIN SOLUTION`` in
``solutions/``), labkit has a function of the same name and the same arguments, the one its own
higher-level code calls; the lab's check compares the student's answer against that function (in float64).
These tests read the exercises from the solutions, so a new exercise without its library function fails.
"""

from __future__ import annotations

import importlib
import inspect

import pytest
import torch

import solution_code

# exercise (lab, name) -> the module holding labkit's version of it
LIBRARY = {
    ("lab00_setup", "to_unit_range"): "labkit.data",
    ("lab01_forward", "alpha_bars_from_betas"): "labkit.schedules",
    ("lab01_forward", "snr"): "labkit.schedules",
    ("lab01_forward", "q_sample"): "labkit.diffusion",
    ("lab01_forward", "forward_chain"): "labkit.diffusion",
    ("lab01_forward", "linear_betas"): "labkit.schedules",
    ("lab01_forward", "cosine_alpha_bars"): "labkit.schedules",
    ("lab01_forward", "predict_x0_from_eps"): "labkit.diffusion",
    ("lab01_forward", "q_posterior"): "labkit.diffusion",
    ("lab02_unet", "concat_skip"): "labkit.unet",
    ("lab02_unet", "upsample_merge"): "labkit.unet",
    ("lab03_embeddings", "sinusoidal_embedding"): "labkit.embeddings",
    ("lab03_embeddings", "cosine_similarity"): "labkit.embeddings",
    ("lab03_embeddings", "film"): "labkit.unet",
    ("lab04_training", "noise_prediction_loss"): "labkit.diffusion",
    ("lab04_training", "train_step"): "labkit.training",
    ("lab04_training", "drop_labels"): "labkit.training",
    ("lab04_training", "ema_update"): "labkit.training",
    ("lab04_training", "train_loop"): "labkit.training",
    ("lab04_training", "warmup_cosine_lr"): "labkit.training",
    ("lab05_sampling", "p_sample_step"): "labkit.samplers",
    ("lab05_sampling", "sample_loop"): "labkit.samplers",
    ("lab06_clip", "cosine_similarity"): "labkit.embeddings",
    ("lab06_clip", "zero_shot_probs"): "labkit.evaluation.clip",
    ("lab06_clip", "feature_stats"): "labkit.evaluation.fid",
    ("lab06_clip", "frechet_distance"): "labkit.evaluation.fid",
    ("lab06_clip", "bootstrap_interval"): "labkit.evaluation.fid",
    ("lab05_sampling", "respaced"): "labkit.samplers",
    ("lab05_sampling", "sigma_squared"): "labkit.samplers",
    ("lab05_sampling", "total_variation"): "labkit.evaluation.measures",
    ("lab05_sampling", "t_from"): "labkit.evaluation.measures",
    ("lab06_clip", "clip_preprocess"): "labkit.evaluation.clip",
    ("lab06_clip", "prompt_ensemble"): "labkit.evaluation.clip",
    ("lab06_clip", "clear_probability"): "labkit.evaluation.clip",
    ("lab06_clip", "clip_score"): "labkit.evaluation.clip",
    ("lab06_clip", "confusion_matrix"): "labkit.evaluation.measures",
    ("lab06_clip", "pearson_r"): "labkit.evaluation.measures",
    ("lab07_improvements", "cfg_combine"): "labkit.guidance",
    ("lab07_improvements", "ddim_step"): "labkit.samplers",
    ("lab07_improvements", "dpmpp_2m_step"): "labkit.samplers",
    ("lab07_improvements", "cfg_eps"): "labkit.guidance",
    ("lab07_improvements", "ddim_loop"): "labkit.samplers",
    ("lab07_improvements", "dpmpp_2m_loop"): "labkit.samplers",
    ("lab08_beyond", "guided_eps"): "labkit.clip_guidance",
    ("lab08_beyond", "classifier_grad"): "labkit.guidance",
    ("lab08_beyond", "classifier_guided_loop"): "labkit.samplers",
    ("lab09_report", "recognisable_from"): "labkit.evaluation.measures",
    ("lab09_report", "quartiles_per_digit"): "labkit.evaluation.measures",
    ("lab09_report", "relative_clip_score"): "labkit.evaluation.measures",
    ("lab09_report", "within_class_diversity"): "labkit.evaluation.measures",
    ("lab09_report", "speedup_at_quality"): "labkit.evaluation.measures",
    ("lab09_report", "heldout_x0_error"): "labkit.evaluation.measures",
    ("lab09_report", "accuracy_margin"): "labkit.evaluation.measures",
    ("lab10_flow", "flow_matching_loss"): "labkit.flow",
    ("lab10_flow", "euler_step"): "labkit.flow",
    ("lab10_flow", "euler_loop"): "labkit.flow",
    ("lab10_flow", "heun_loop"): "labkit.flow",
    ("lab10_flow", "cfg_velocity"): "labkit.flow",
    # labs 07 and 09, more of the student's own code (issue 25)
    ("lab07_improvements", "enforce_zero_terminal_snr"): "labkit.schedules",
    ("lab07_improvements", "spaced_timesteps"): "labkit.samplers",
    ("lab09_report", "above_control"): "labkit.evaluation.measures",
    ("lab09_report", "later_than_rest"): "labkit.evaluation.measures",
    ("lab09_report", "pareto_front"): "labkit.evaluation.measures",
    ("lab07_improvements", "ddim_sigma"): "labkit.samplers",
    ("lab09_report", "wilson_interval"): "labkit.evaluation.measures",
    ("lab07_improvements", "dynamic_threshold"): "labkit.samplers",
    ("lab07_improvements", "fewest_evaluations"): "labkit.evaluation.measures",
    ("lab10_flow", "shifted_time_grid"): "labkit.flow",
    ("lab10_flow", "reflow_pairs"): "labkit.flow",
    ("lab10_flow", "reflow_train"): "labkit.flow",
    ("lab10_flow", "straightness"): "labkit.flow",
}


EXERCISES = solution_code.EXERCISES
_test_calls = solution_code.test_calls


def _library(lab: str, name: str):
    return getattr(importlib.import_module(LIBRARY[(lab, name)]), name)


def test_every_exercise_has_a_library_function():
    assert len(EXERCISES) >= 23
    assert set(EXERCISES) == set(LIBRARY), "add the new exercise's library function to LIBRARY (and to labkit)"


@pytest.mark.parametrize("lab, name", sorted(EXERCISES))
def test_library_function_has_the_students_arguments(lab, name):
    """Same name, same positional arguments in the same order; anything more is optional."""
    params = list(inspect.signature(_library(lab, name)).parameters.values())
    student = EXERCISES[(lab, name)]
    shared = [k for k, module in LIBRARY.items() if module == LIBRARY[(lab, name)] and k[1] == name]
    if len(shared) == 1:
        assert [p.name for p in params[:len(student)]] == student
    else:  # one function for two labs (cosine_similarity: lab 03's rows, lab 06's images against captions)
        assert any([p.name for p in params[:len(EXERCISES[k])]] == EXERCISES[k] for k in shared)
    assert all(p.kind is p.POSITIONAL_OR_KEYWORD for p in params[:len(student)])
    assert all(p.default is not p.empty for p in params[len(student):]), "extra arguments need defaults"


@pytest.mark.parametrize("lab, name", sorted(EXERCISES))
def test_library_function_passes_the_labs_checks(lab, name, capsys):
    """Every visible and hidden test line of the lab, with labkit's function as the answer."""
    checks = importlib.import_module(f"labkit.checks.{lab}")
    for line in _test_calls(lab, name):
        eval(line, {"checks": checks, name: _library(lab, name), "torch": torch})  # noqa: S307 (our own source)
    assert capsys.readouterr().out.count("passed") == len(_test_calls(lab, name))


def _spoiled(fn):
    """fn, but with a wrong result: tensors (also in a tuple) and numbers shifted by 0.25, or (a training step)
    every weight nudged."""
    def wrong(*args, **kwargs):
        out = fn(*args, **kwargs)
        if isinstance(out, torch.Tensor) or (isinstance(out, float) and not isinstance(args[0], torch.nn.Module)):
            return out + 0.25
        if isinstance(out, tuple) and all(isinstance(v, torch.Tensor) for v in out):
            return tuple(v + 0.25 for v in out)
        model = args[0]
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.25)
        return out
    return wrong


@pytest.mark.parametrize("lab, name", sorted(EXERCISES))
def test_the_check_takes_its_answer_from_the_library(lab, name, monkeypatch):
    """Spoil labkit's function and a correct answer fails its check: the check computes nothing of its own."""
    correct = _library(lab, name)
    module = importlib.import_module(LIBRARY[(lab, name)])
    monkeypatch.setattr(module, name, _spoiled(correct))
    checks = importlib.import_module(f"labkit.checks.{lab}")
    line = _test_calls(lab, name)[0]
    with pytest.raises(AssertionError):
        eval(line, {"checks": checks, name: correct, "torch": torch})  # noqa: S307 (our own source)


def test_library_code_calls_the_exercise_functions(monkeypatch):
    """The higher-level code runs through the same functions: spoil one and the result changes."""
    from labkit import diffusion, samplers, schedules

    schedule = schedules.make_schedule("cosine", 50)
    model = lambda x, t, y: 0.1 * x  # noqa: E731
    y = torch.zeros(2, dtype=torch.long)
    before = {s: samplers.sample(model, (2, 1, 4, 4), y, schedule, sampler=s, steps=5,
                                 generator=torch.Generator().manual_seed(0)) for s in samplers.SAMPLERS}
    for sampler, step in (("ddpm", "p_sample_step"), ("ddim", "ddim_step"), ("dpmpp_2m", "dpmpp_2m_step")):
        with monkeypatch.context() as m:
            m.setattr(samplers, step, _spoiled(getattr(samplers, step)))
            after = samplers.sample(model, (2, 1, 4, 4), y, schedule, sampler=sampler, steps=5,
                                    generator=torch.Generator().manual_seed(0))
        assert (after - before[sampler]).abs().max() > 0.1, f"sample(sampler={sampler!r}) does not call {step}"
    x0 = torch.randn(2, 1, 4, 4)
    loss = diffusion.diffusion_loss(model, x0, y, schedule, generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(diffusion, "noise_prediction_loss", _spoiled(diffusion.noise_prediction_loss))
    assert diffusion.diffusion_loss(model, x0, y, schedule, generator=torch.Generator().manual_seed(0)) != loss


@pytest.mark.parametrize("piece, module", [("drop_labels", "labkit.training"), ("ema_update", "labkit.training"),
                                           ("train_step", "labkit.training"),
                                           ("noise_prediction_loss", "labkit.diffusion")])
def test_the_training_loop_calls_the_exercise_functions(piece, module, monkeypatch):
    """labkit.training.train_loop (lab 04's reference loop) runs through lab 04's other exercise functions."""
    from labkit import training
    from labkit.checks.lab04_training import ToyEpsModel, _state

    def run():
        g = torch.Generator().manual_seed(0)
        images, labels = torch.rand(20, 1, 4, 4, generator=g), torch.randint(0, 10, (20,), generator=g)
        model = ToyEpsModel(1, 10)
        ema = __import__("copy").deepcopy(model)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        ab = torch.linspace(0.99, 0.1, 10, dtype=torch.float64)
        training.train_loop(model, ema, opt, images, labels, ab, 3, 4, g, 0.3, 0.9)
        return _state(model, ema)

    before = run()
    target = importlib.import_module(module)
    original = getattr(target, piece)
    if piece == "drop_labels":
        monkeypatch.setattr(target, piece, lambda y, p, n, g: original(y, 1.0 - p, n, g))
    elif piece == "noise_prediction_loss":  # a constant shift has no gradient: scale it
        monkeypatch.setattr(target, piece, lambda *a: 2 * original(*a))
    else:
        monkeypatch.setattr(target, piece, _spoiled(original))
    assert (run() - before).abs().max() > 1e-3, f"train_loop does not call {piece}"
# --- the modules the student builds (lab 02): labkit's class is the reference the checks load -------------

CLASS_LIBRARY = {
    ("lab02_unet", "ConvBlock"): "labkit.unet",
    ("lab02_unet", "ResBlock"): "labkit.unet",
    ("lab02_unet", "Down"): "labkit.unet",
    ("lab02_unet", "Up"): "labkit.unet",
    ("lab02_unet", "UNet"): "labkit.unet",
    ("lab03_embeddings", "TimeEmbedding"): "labkit.embeddings",
    ("lab03_embeddings", "ClassEmbedding"): "labkit.embeddings",
    ("lab03_embeddings", "ConvBlock"): "labkit.unet",
    ("lab03_embeddings", "ResBlock"): "labkit.unet",
    ("lab03_embeddings", "UNet"): "labkit.unet",
}
CLASS_CHECKS = {"ConvBlock": "check_conv_block", "ResBlock": "check_res_block", "Down": "check_down", "Up": "check_up",
                "UNet": "check_unet", "TimeEmbedding": "check_time_embedding", "ClassEmbedding": "check_class_embedding"}


def test_every_module_exercise_has_a_library_class():
    assert set(solution_code.CLASSES) == set(CLASS_LIBRARY)


@pytest.mark.parametrize("lab, name", sorted(CLASS_LIBRARY))
def test_library_class_has_the_students_arguments(lab, name):
    """labkit's class takes the student's constructor arguments, in order (the U-Net: through the lab's
    ``labkit_unet``, which maps them onto a UNetConfig)."""
    student = solution_code.CLASSES[(lab, name)]
    if name == "UNet":
        checks = importlib.import_module(f"labkit.checks.{lab}")
        config = getattr(checks, f"{lab[:5]}_config")  # lab02_config, lab03_config
        cfg = config(**{a: checks.DEFAULTS[a] for a in student if a in checks.DEFAULTS})
        assert all(hasattr(cfg, a) for a in student)
        return
    params = list(inspect.signature(getattr(importlib.import_module(CLASS_LIBRARY[(lab, name)]), name)).parameters)
    assert params[:len(student)] == student


@pytest.mark.parametrize("lab, name", sorted(CLASS_LIBRARY))
def test_library_class_passes_the_labs_checks(lab, name, capsys):
    checks = importlib.import_module(f"labkit.checks.{lab}")
    answer = checks.labkit_unet if name == "UNet" else getattr(importlib.import_module(CLASS_LIBRARY[(lab, name)]), name)
    lines = [line.strip() for line in solution_code._source(lab).splitlines()
             if line.strip().startswith(f"checks.{CLASS_CHECKS[name]}({name}")]
    assert len(lines) >= 2
    for line in lines:
        eval(line, {"checks": checks, name: answer, "torch": torch})  # noqa: S307 (our own source)
    assert capsys.readouterr().out.count("passed") == len(lines)
