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
