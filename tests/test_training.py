"""The trainer on a tiny U-Net and synthetic digits: resume exactness, NaN detection, config checks."""

import math
from dataclasses import replace

import pytest
import torch

from labkit import recipes, training
from labkit.checkpoint import load_checkpoint
from labkit.data import synthetic_digits
from labkit.errors import LabkitError, LabkitValueError



@pytest.fixture(scope="module")
def digits():
    return synthetic_digits(64, generator=torch.Generator().manual_seed(0))


def run(tmp_path, name, steps=24, **kw):
    config = recipes.tiny(steps=steps, out_dir=str(tmp_path / name), checkpoint_every=8, **kw)
    return config, dict(device="cpu", progress=False)


def assert_same_state(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_after_kill_is_exact(tmp_path, digits):
    config, kw = run(tmp_path, "straight")
    straight = training.train(config, digits, **kw)

    config2, _ = run(tmp_path, "killed")

    def kill(info):
        if info.step == 13:  # between checkpoints (8, 16): steps 9..13 are lost and redone
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        training.train(config2, digits, callback=kill, **kw)
    assert load_checkpoint(tmp_path / "killed" / "last.pt")["step"] == 8
    resumed = training.train(config2, digits, **kw)
    assert resumed.step == 24
    assert_same_state(straight.model.state_dict(), resumed.model.state_dict())
    assert_same_state(straight.ema.state_dict(), resumed.ema.state_dict())
    a, b = (load_checkpoint(tmp_path / n / "last.pt") for n in ("straight", "killed"))
    for pa, pb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(pa[k], pb[k]) for k in pa)
    assert torch.equal(a["rng"]["data"], b["rng"]["data"])


def test_stop_by_callback_then_resume_is_exact(tmp_path, digits):
    config, kw = run(tmp_path, "straight", steps=12)
    straight = training.train(config, digits, **kw)
    config2, _ = run(tmp_path, "stopped", steps=12)
    first = training.train(config2, digits, callback=lambda info: info.step == 5, **kw)
    assert first.stopped_early and first.step == 5
    assert load_checkpoint(first.checkpoint)["step"] == 5  # a requested stop saves at once
    resumed = training.train(config2, digits, **kw)
    assert_same_state(straight.ema.state_dict(), resumed.ema.state_dict())


def test_extending_a_finished_run(tmp_path, digits):
    config, kw = run(tmp_path, "ext", steps=4)
    training.train(config, digits, **kw)
    longer = training.train(config.__class__(**{**config.__dict__, "total_steps": 6}), digits, **kw)
    assert longer.step == 6


def test_config_mismatch_on_resume(tmp_path, digits):
    config, kw = run(tmp_path, "mm", steps=2)
    training.train(config, digits, **kw)
    other, _ = run(tmp_path, "mm", steps=2, lr=1e-4)
    with pytest.raises(LabkitError, match=r"train\.lr=0\.002.*0\.0001.*--no-resume"):
        training.train(other, digits, **kw)
    fresh = training.train(other, digits, resume=False, **kw)  # --no-resume starts over
    assert fresh.step == 2


def test_nan_loss_stops_with_the_step(tmp_path, digits):
    config, kw = run(tmp_path, "nan", steps=20)

    def poison(info):
        if info.step == 6:
            with torch.no_grad():
                next(info.model.parameters()).fill_(float("nan"))

    with pytest.raises(LabkitError, match="NaN/inf at step 7"):
        training.train(config, digits, callback=poison, **kw)


def test_loss_decreases_and_files(tmp_path, digits):
    config, kw = run(tmp_path, "files", steps=40, sample_every=20)
    result = training.train(config, digits, **kw)
    first, last = result.losses[0][1], result.losses[-1][1]
    assert last < 0.8 * first, result.losses
    names = sorted(p.name for p in (tmp_path / "files").iterdir())
    assert names == ["last.pt", "samples_000020.png", "samples_000040.png", "samples_final.png"]
    assert result.images_per_s > 0 and not result.ema.training


def test_time_budget(digits):
    config = recipes.tiny(steps=10**9, time_budget_s=0.5)
    result = training.train(config, digits, device="cpu", progress=False)
    assert 0.5 <= result.seconds < 5 and result.step > 0


def test_training_leaves_global_rng_alone(digits):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    training.train(recipes.tiny(steps=2), digits, device="cpu", progress=False)
    assert torch.equal(torch.rand(3), expected)


def test_lr_schedule():
    c = recipes.tiny(steps=105)  # warmup 5
    assert training.lr_at(0, c) == pytest.approx(c.lr / 5)
    assert training.lr_at(4, c) == pytest.approx(c.lr)
    assert training.lr_at(5, c) == pytest.approx(c.lr)
    assert training.lr_at(55, c) == pytest.approx(c.lr * (c.lr_min_ratio + (1 - c.lr_min_ratio) * 0.5))
    assert training.lr_at(105, c) == pytest.approx(c.lr * c.lr_min_ratio)
    assert training.lr_at(50, c, progress=1.0) == pytest.approx(c.lr * c.lr_min_ratio)


def test_ema_update_matches_formula():
    ema = [torch.zeros(3), torch.ones(2)]
    cur = [torch.ones(3), torch.zeros(2)]
    training.ema_update(ema, cur, 0.9)
    assert torch.allclose(ema[0], torch.full((3,), 0.1)) and torch.allclose(ema[1], torch.full((2,), 0.9))
    assert training.ema_decay_at(0, 0.999) == pytest.approx(0.1)
    assert training.ema_decay_at(10**6, 0.999) == 0.999


def test_precision_and_device():
    cpu = torch.device("cpu")
    assert training.resolve_precision("auto", cpu) == (None, False)
    assert training.resolve_precision("bf16", cpu) == (torch.bfloat16, False)
    with pytest.raises(LabkitValueError, match="fp16"):
        training.resolve_precision("fp16", cpu)
    with pytest.raises(LabkitValueError):
        training.TrainConfig(precision="fp8")
    assert training.pick_device("cpu") == cpu


def test_config_dict_roundtrip():
    for config in (recipes.cpu(), recipes.gpu(), recipes.tiny()):
        assert training.TrainConfig.from_dict(config.to_dict()) == config


@pytest.mark.realdata
def test_real_mnist_short_run(mnist_dir):
    from labkit.data import load_mnist

    data = load_mnist(mnist_dir).subset(5000)
    result = training.train(recipes.tiny(steps=50, batch_size=32), data, device="cpu", progress=False)
    first, last = result.losses[0][1], result.losses[-1][1]
    assert math.isfinite(last) and last < 0.7 * first, result.losses


def test_min_snr_gamma_reaches_the_loss(digits):
    """TrainConfig.min_snr_gamma changes the loss the trainer minimises (same seed, same batches)."""
    plain = training.train(recipes.tiny(steps=5, log_every=5), digits, device="cpu", progress=False)
    weighted = training.train(recipes.tiny(steps=5, log_every=5, min_snr_gamma=0.5), digits, device="cpu",
                              progress=False)
    assert weighted.losses[0][1] < plain.losses[0][1]  # weights <= 1, most of them < 1 at gamma = 0.5
    assert training.TrainConfig.from_dict(weighted.config.to_dict()).min_snr_gamma == 0.5


# --- lab 04's loop: train_loop, drop_labels, ema_update on modules, run_loop -------------------------------


def test_drop_labels_is_the_trainers_label_dropout():
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    y = torch.randint(0, 10, (1000,), generator=torch.Generator().manual_seed(0))
    out = training.drop_labels(y, 0.25, 10, g1)
    drop = torch.rand(1000, generator=g2) < 0.25
    assert torch.equal(out, torch.where(drop, torch.full_like(y, 10), y))
    assert 0.2 < (out == 10).float().mean() < 0.3 and out.dtype == y.dtype


def test_ema_update_on_modules_averages_parameters_and_buffers():
    a, b = torch.nn.BatchNorm1d(3), torch.nn.BatchNorm1d(3)
    with torch.no_grad():
        b.weight.fill_(3.0)
        b.running_mean.fill_(1.0)
    training.ema_update(a, b, 0.75)
    assert torch.allclose(a.weight, torch.full((3,), 1.5)) and torch.allclose(a.running_mean, torch.full((3,), 0.25))
    assert torch.equal(b.weight, torch.full((3,), 3.0))


def test_run_loop_resumes_exactly_and_reports(tmp_path, digits):
    config = recipes.tiny(steps=4, out_dir=str(tmp_path / "a"), checkpoint_every=1)
    seen = []
    first = training.run_loop(training.train_loop, replace(config, total_steps=2), digits, chunk=1)
    second = training.run_loop(training.train_loop, config, digits, chunk=1,
                               report=lambda step, losses, ema: seen.append((step, len(losses))), report_every_s=0)
    unbroken = training.run_loop(training.train_loop, replace(config, out_dir=str(tmp_path / "b")), digits, chunk=1)
    assert (first.step, second.step, unbroken.step) == (2, 4, 4)
    assert seen == [(3, 3), (4, 4)]
    for a, b in zip(list(second.model.parameters()) + list(second.ema.parameters()),
                    list(unbroken.model.parameters()) + list(unbroken.ema.parameters())):
        assert torch.equal(a, b)
    state = load_checkpoint(tmp_path / "a" / "loop.pt")
    assert state["step"] == 4 and len(state["losses"]) == 4 and not second.ema.training


def test_train_loop_lowers_the_loss_and_leaves_global_rng_alone(digits):
    from labkit.unet import UNet

    config = recipes.tiny()
    model = UNet(config.unet)
    ema = __import__("copy").deepcopy(model)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    ab = training.make_schedule("cosine", 1000).alpha_bars
    state = torch.get_rng_state()
    losses = training.train_loop(model, ema, opt, digits.images, digits.labels, ab, 60, 32,
                                 torch.Generator().manual_seed(0), 0.1, 0.9)
    assert torch.equal(state, torch.get_rng_state())
    assert len(losses) == 60 and sum(losses[-10:]) < 0.7 * sum(losses[:10])
