"""The labkit command, called in-process through main([...])."""

import pytest
import torch

from labkit import cli



@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny checkpoint made by `labkit train` on synthetic digits."""
    out = tmp_path_factory.mktemp("cli") / "run"
    torch.set_num_threads(1)
    assert cli.main(["train", "--recipe", "tiny", "--synthetic", "40", "--steps", "4", "--out", str(out), "--quiet"]) == 0
    return out / "last.pt"


def error_line(capsys, argv) -> str:
    """Run argv, expect exit status 2 and exactly one line on stderr; return it."""
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("labkit: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_train_prints_and_saves(trained, capsys, tmp_path):
    assert trained.exists()
    out = tmp_path / "run"
    cli.main(["train", "--recipe", "tiny", "--synthetic", "40", "--steps", "3", "--out", str(out), "--quiet",
              "--export", str(tmp_path / "release.pt")])
    text = capsys.readouterr().out
    assert "recipe tiny, 3 steps" in text and "trained to step 3" in text and "release checkpoint" in text
    cli.main(["train", "--recipe", "tiny", "--synthetic", "40", "--steps", "5", "--out", str(out), "--quiet"])
    assert "trained to step 5" in capsys.readouterr().out  # resumed from step 3


def test_sample_writes_samples_file(trained, tmp_path, capsys):
    out = tmp_path / "s.pt"
    assert cli.main(["sample", "--checkpoint", str(trained), "--per-class", "2", "--steps", "3",
                     "--guidance", "1.5", "--out", str(out)]) == 0
    data = torch.load(out, weights_only=True)
    assert data["images"].shape == (20, 1, 28, 28) and data["images"].dtype == torch.float32
    assert 0 <= float(data["images"].min()) and float(data["images"].max()) <= 1
    assert data["labels"].dtype == torch.int64 and data["labels"].tolist() == [d for d in range(10) for _ in range(2)]
    assert (tmp_path / "s.png").exists() and "20 samples" in capsys.readouterr().out
    # no --sampler: the checkpoint's recipe decides (the tiny recipe keeps TrainConfig's dpmpp_2m)
    assert data["sampler"] == torch.load(trained, weights_only=True)["train"]["sampler"] == "dpmpp_2m"


def test_sample_defaults_come_from_the_checkpoint(trained, tmp_path, capsys):
    """A checkpoint whose recipe samples with DDPM and 3 steps is sampled that way unless told otherwise."""
    state = torch.load(trained, weights_only=True)
    state["train"].update(sampler="ddpm", sample_steps=3, guidance=0.5)
    ckpt = tmp_path / "ddpm.pt"
    torch.save(state, ckpt)
    out = tmp_path / "s.pt"
    assert cli.main(["sample", "--checkpoint", str(ckpt), "--per-class", "1", "--out", str(out), "--grid", "none"]) == 0
    data = torch.load(out, weights_only=True)
    assert (data["sampler"], data["steps"], data["guidance"]) == ("ddpm", 3, 0.5)
    assert "(ddpm, 3 steps, guidance 0.5)" in capsys.readouterr().out


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_sample_other_samplers_are_seeded(trained, tmp_path, sampler):
    files = []
    for name in ("a", "b"):
        files.append(tmp_path / f"{name}.pt")
        cli.main(["sample", "--checkpoint", str(trained), "--sampler", sampler, "--per-class", "1", "--steps", "2",
                  "--out", str(files[-1]), "--grid", "none", "--seed", "3"])
    a, b = (torch.load(f, weights_only=True)["images"] for f in files)
    assert torch.equal(a, b) and not (tmp_path / "a.png").exists()


def test_info(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    for word in ("python", "torch", "torchvision", "device", "MNIST is looked for", "shipped checkpoint"):
        assert word in out


def test_missing_checkpoint(capsys, tmp_path):
    assert "not found" in error_line(capsys, ["sample", "--checkpoint", str(tmp_path / "nope.pt")])


def test_corrupt_checkpoint(capsys, tmp_path, trained):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(trained.read_bytes()[:1000])
    assert "truncated or corrupt" in error_line(capsys, ["sample", "--checkpoint", str(bad)])


def test_not_a_checkpoint(capsys, tmp_path):
    torch.save({"images": torch.zeros(1)}, tmp_path / "x.pt")
    assert "not a labkit checkpoint" in error_line(capsys, ["sample", "--checkpoint", str(tmp_path / "x.pt")])


def test_unknown_sampler(capsys, trained):
    assert "unknown sampler 'euler'" in error_line(capsys, ["sample", "--checkpoint", str(trained), "--sampler", "euler"])


@pytest.mark.parametrize("argv, words", [
    (["sample", "--steps", "-3"], "--steps: must be >= 1"),
    (["sample", "--steps", "0"], "--steps: must be >= 1"),
    (["sample", "--guidance", "-1"], "--guidance: must be >= 0"),
    (["train", "--steps", "-1"], "--steps: must be >= 0"),
    (["train", "--recipe", "huge"], "invalid choice"),
    (["sample", "--per-class", "x"], "invalid _pos_int value"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_arguments(capsys, argv, words):
    assert words in error_line(capsys, argv)


def test_too_many_steps(capsys, trained):
    assert "more than the model's T" in error_line(capsys, ["sample", "--checkpoint", str(trained), "--steps", "5000"])


def test_train_missing_data(capsys, tmp_path, monkeypatch):
    import torchvision.datasets

    monkeypatch.delenv("LABKIT_DATA", raising=False)
    monkeypatch.setattr(torchvision.datasets.MNIST, "download", lambda self: (_ for _ in ()).throw(OSError("offline")))
    assert "MNIST not found" in error_line(capsys, ["train", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "o")])


def test_resume_mismatch_is_one_line(capsys, trained):
    err = error_line(capsys, ["train", "--recipe", "tiny", "--synthetic", "40", "--steps", "6", "--batch-size", "8",
                              "--out", str(trained.parent), "--quiet"])
    assert "cannot resume" in err and "batch_size" in err


def test_evaluate_missing_file(capsys, tmp_path):
    assert "does not exist" in error_line(capsys, ["evaluate", str(tmp_path / "none.pt")])


@pytest.mark.parametrize("command", ["build", "grade"])
def test_course_commands_without_labkit_course(capsys, monkeypatch, command):
    monkeypatch.setattr(cli, "_course", lambda: None)
    assert "labkit.course" in error_line(capsys, [command])


def test_course_commands_dispatch(monkeypatch):
    from types import SimpleNamespace

    seen = {}
    fake = SimpleNamespace(
        add_build_arguments=lambda p: p.add_argument("--labs", nargs="*"),
        cli_build=lambda args: seen.setdefault("labs", args.labs) and 0,
    )
    monkeypatch.setattr(cli, "_course", lambda: fake)
    assert cli.main(["build", "--labs", "lab01"]) == 0 and seen["labs"] == ["lab01"]


def test_no_command_prints_help(capsys):
    assert cli.main([]) == 2
    assert "train" in capsys.readouterr().out


# --- network evaluations per digit, and the fast model (issue 28) ---------------------------------------------


@pytest.mark.parametrize("sampler, steps, guidance, nfe", [("dpmpp_2m", 3, "1.5", 6), ("ddpm", 3, "0", 3),
                                                           ("ddim", 2, "0.5", 4), ("consistency", 2, "1", 4)])
def test_sample_prints_the_network_evaluations_it_counted(trained, tmp_path, capsys, sampler, steps, guidance, nfe):
    assert cli.main(["sample", "--checkpoint", str(trained), "--sampler", sampler, "--steps", str(steps),
                     "--guidance", guidance, "--per-class", "1", "--out", str(tmp_path / "s.pt"), "--grid", "none"]) == 0
    assert f"{nfe} network evaluations per digit" in capsys.readouterr().out
    assert torch.load(tmp_path / "s.pt", weights_only=True)["nfe"] == nfe


@pytest.fixture(scope="module")
def tiny_fast(tmp_path_factory):
    """A fast checkpoint made by labkit.distill from a tiny teacher (4 teacher steps, 4 training steps)."""
    from labkit import distill
    from labkit.checkpoint import load_model

    tmp = tmp_path_factory.mktemp("fast")
    torch.set_num_threads(1)
    teacher = load_model(str(_tiny_trained(tmp)), device="cpu")
    config = distill.DistillConfig(trajectories=10, chunk=10, batch_size=4, checkpoint_every=2, teacher_steps=4)
    distill.run(tmp / "run", minutes=None, steps=2, config=config, teacher=teacher, log=lambda *a: None)
    return distill.export_fast(tmp / "run" / "last.pt", tmp / "fast.pt")


def _tiny_trained(tmp):
    out = tmp / "teacher"
    cli.main(["train", "--recipe", "tiny", "--synthetic", "40", "--steps", "2", "--out", str(out), "--quiet"])
    return out / "last.pt"


@pytest.mark.parametrize("steps, nfe", [(None, 2), ("1", 1), ("2", 2)])
def test_sample_a_fast_checkpoint_on_its_own_grid(tiny_fast, tmp_path, capsys, steps, nfe):
    argv = ["sample", "--checkpoint", str(tiny_fast), "--per-class", "1", "--out", str(tmp_path / "s.pt"), "--grid", "none"]
    assert cli.main(argv + (["--steps", steps] if steps else [])) == 0
    out = capsys.readouterr().out
    assert f"(consistency, {nfe} steps, guidance 0), {nfe} network evaluations per digit" in out, out


def test_fast_model_refuses_guidance_and_odd_steps(tiny_fast, capsys):
    assert "guidance built in" in error_line(capsys, ["sample", "--checkpoint", str(tiny_fast), "--guidance", "1"])
    assert "divides 2" in error_line(capsys, ["sample", "--checkpoint", str(tiny_fast), "--steps", "3"])


def test_sample_model_fast_uses_the_shipped_fast_model(tmp_path, capsys):
    from labkit.checkpoint import FAST_ASSET_PATH

    if not FAST_ASSET_PATH.exists():
        pytest.skip("no shipped fast model in this checkout")
    assert cli.main(["sample", "--model", "fast", "--per-class", "1", "--out", str(tmp_path / "s.pt"), "--grid", "none"]) == 0
    assert "(consistency, 4 steps, guidance 0), 4 network evaluations per digit" in capsys.readouterr().out
    assert cli.main(["sample", "--model", "fast", "--steps", "1", "--per-class", "1", "--out", str(tmp_path / "s.pt"),
                     "--grid", "none"]) == 0
    assert "1 network evaluations per digit" in capsys.readouterr().out
    assert "invalid choice" in error_line(capsys, ["sample", "--model", "slow"])
