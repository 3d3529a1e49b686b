"""Bad inputs to every public function and command: one clear, one-line labkit error each (issue 8).

Library: each row is (what, call, error type, words the message must contain). The error must be a
LabkitError (a LabkitValueError/LabkitTypeError is also a ValueError/TypeError), its message one line,
never a raw torch error from deep inside the model.
CLI: each row is argv for ``labkit.cli.main``: exit status 2, exactly one stderr line starting with
``labkit: error:``, no traceback.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from labkit import checkpoint, cli, data, diffusion, embeddings, guidance, recipes, samplers, schedules, training
from labkit.data import DataNotFoundError, Digits
from labkit.errors import LabkitError, LabkitTypeError, LabkitValueError
from labkit.evaluation import report
from labkit.unet import UNet, UNetConfig

CFG = recipes.tiny().unet
MODEL = UNet(CFG).eval()
SCH = schedules.make_schedule("cosine", 1000)
X = torch.randn(2, 1, 28, 28)
T = torch.tensor([0, 5])
Y = torch.tensor([1, 2])
SHAPE = (2, 1, 28, 28)



def write(path, content):
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    return path


def corrupt_gz_folder(tmp):
    folder = tmp / "mnist"
    folder.mkdir()
    for name in data.MNIST_FILES:
        (folder / f"{name}.gz").write_bytes(b"this is not gzip data")
    return folder


def truncated_gz_folder(tmp):
    folder = tmp / "mnist"
    folder.mkdir()
    for name in data.MNIST_FILES:
        (folder / f"{name}.gz").write_bytes(gzip.compress(b"\x00" * 5000)[:40])
    return folder


def train_tiny(tmp, data_=None, **kw):
    d = data_ if data_ is not None else data.synthetic_digits(8)
    return training.train(recipes.tiny(steps=1, **kw), d, device="cpu", progress=False)


def digits(images=None, labels=None):
    return Digits(torch.zeros(4, 1, 28, 28) if images is None else images,
                  torch.tensor([0, 1, 2, 3]) if labels is None else labels)


V, Ty = LabkitValueError, LabkitTypeError
CASES = [
    # schedules
    ("schedule T=0", lambda tmp: schedules.make_schedule("cosine", 0), V, "positive integer"),
    ("schedule T=1.5", lambda tmp: schedules.make_schedule("cosine", 1.5), V, "positive integer"),
    ("schedule unknown name", lambda tmp: schedules.make_schedule("quadratic"), V, "unknown schedule"),
    ("linear schedule T too small", lambda tmp: schedules.linear_betas(10), V, "beta_end"),
    ("Schedule betas 2-D", lambda tmp: schedules.Schedule("x", torch.full((2, 2), 0.1)), V, "1-D"),
    ("Schedule betas >= 1", lambda tmp: schedules.Schedule("x", torch.tensor([0.5, 1.0])), V, "(0, 1)"),
    ("Schedule betas a list", lambda tmp: schedules.Schedule("x", [0.1, 0.2]), Ty, "torch.Tensor"),
    # diffusion
    ("q_sample t = T", lambda tmp: diffusion.q_sample(X, torch.tensor([0, 1000]), X, SCH), V, "[0, 1000)"),
    ("q_sample t < 0", lambda tmp: diffusion.q_sample(X, torch.tensor([0, -1]), X, SCH), V, "[0, 1000)"),
    ("q_sample t wrong length", lambda tmp: diffusion.q_sample(X, torch.tensor([0, 1, 2]), X, SCH), V, "shape [B]"),
    ("q_sample noise wrong shape", lambda tmp: diffusion.q_sample(X, T, torch.randn(2, 1, 14, 14), SCH), V, "noise"),
    ("q_sample numpy x0", lambda tmp: diffusion.q_sample(np.zeros(SHAPE), T, X, SCH), Ty, "torch.Tensor"),
    ("predict_x0 t out of range", lambda tmp: diffusion.predict_x0_from_eps(X, torch.tensor([5, 2000]), X, SCH), V, "[0, 1000)"),
    ("diffusion_loss y wrong length", lambda tmp: diffusion.diffusion_loss(MODEL, X, torch.tensor([1]), SCH), V, "y must have shape [2]"),
    # embeddings
    ("sinusoidal dim 0", lambda tmp: embeddings.sinusoidal_embedding(T, 0), V, "dim"),
    ("sinusoidal t 2-D", lambda tmp: embeddings.sinusoidal_embedding(torch.zeros(2, 2), 8), V, "1-D"),
    ("sinusoidal numpy t", lambda tmp: embeddings.sinusoidal_embedding(np.zeros(2), 8), Ty, "torch.Tensor"),
    # UNetConfig / UNet
    ("UNetConfig groups", lambda tmp: UNetConfig(base_channels=12, groups=8), V, "divisible by groups"),
    ("UNetConfig patch 0", lambda tmp: UNetConfig(patch=0), V, "patch"),
    ("UNetConfig no levels", lambda tmp: UNetConfig(channel_mults=()), V, "channel_mults"),
    ("UNetConfig num_classes 0", lambda tmp: UNetConfig(num_classes=0), V, "num_classes"),
    ("UNetConfig dropout 2", lambda tmp: UNetConfig(dropout=2.0), V, "dropout"),
    ("UNet x 3-D", lambda tmp: MODEL(torch.randn(1, 28, 28), T[:1], Y[:1]), V, "[B, C, H, W]"),
    ("UNet x 3 channels", lambda tmp: MODEL(torch.randn(2, 3, 28, 28), T, Y), V, "3 channels"),
    ("UNet x size not / patch", lambda tmp: MODEL(torch.randn(2, 1, 27, 27), T, Y), V, "divisible by patch"),
    ("UNet x int64", lambda tmp: MODEL(torch.zeros(SHAPE, dtype=torch.long), T, Y), Ty, "float tensor"),
    ("UNet x float64 vs float32 weights", lambda tmp: MODEL(X.double(), T, Y), Ty, "weights are torch.float32"),
    ("UNet x numpy", lambda tmp: MODEL(np.zeros(SHAPE, np.float32), T, Y), Ty, "torch.Tensor"),
    ("UNet t wrong length", lambda tmp: MODEL(X, torch.tensor([1, 2, 3]), Y), V, "t must have shape [2]"),
    ("UNet t scalar", lambda tmp: MODEL(X, torch.tensor(5), Y), V, "t must have shape [2]"),
    ("UNet t negative", lambda tmp: MODEL(X, torch.tensor([0, -5]), Y), V, ">= 0"),
    ("UNet y > null class", lambda tmp: MODEL(X, T, torch.tensor([0, 11])), V, "[0, 10]"),
    ("UNet y negative", lambda tmp: MODEL(X, T, torch.tensor([0, -1])), V, "[0, 10]"),
    ("UNet y float", lambda tmp: MODEL(X, T, torch.tensor([0.0, 1.0])), Ty, "integer"),
    ("UNet y wrong length", lambda tmp: MODEL(X, T, torch.tensor([0])), V, "y must have shape [2]"),
    ("UNet y a list", lambda tmp: MODEL(X, T, [1, 2]), Ty, "torch.Tensor"),
    # guidance
    ("guidance w < 0", lambda tmp: guidance.ClassifierFreeGuidance(MODEL, -1, 10), V, ">= 0"),
    ("guidance w NaN", lambda tmp: guidance.guided(MODEL, float("nan"), 10), V, ">= 0"),
    ("guidance w a string", lambda tmp: guidance.guided(MODEL, "2", 10), Ty, "number"),
    # samplers
    ("sample unknown sampler", lambda tmp: samplers.sample(MODEL, SHAPE, Y, SCH, sampler="euler"), V, "unknown sampler"),
    ("sample steps 0", lambda tmp: samplers.sample(MODEL, SHAPE, Y, SCH, steps=0), V, "positive integer"),
    ("sample steps -1", lambda tmp: samplers.sample(MODEL, SHAPE, Y, SCH, steps=-1), V, "positive integer"),
    ("sample steps > T", lambda tmp: samplers.sample(MODEL, SHAPE, Y, SCH, steps=5000), V, "more than the schedule's T"),
    ("sample steps 2.5", lambda tmp: samplers.sample(MODEL, SHAPE, Y, SCH, steps=2.5), V, "positive integer"),
    ("sample y 2-D", lambda tmp: samplers.sample(MODEL, SHAPE, Y[:, None], SCH, steps=2), V, "1-D"),
    ("sample y wrong length", lambda tmp: samplers.sample(MODEL, SHAPE, Y[:1], SCH, steps=2), V, "1 labels"),
    ("sample y float", lambda tmp: samplers.sample(MODEL, SHAPE, Y.float(), SCH, steps=2), Ty, "integer"),
    ("sample y numpy", lambda tmp: samplers.sample(MODEL, SHAPE, np.array([1, 2]), SCH, steps=2), Ty, "tensor"),
    ("sample y out of range", lambda tmp: samplers.sample(MODEL, SHAPE, torch.tensor([1, 12]), SCH, steps=2), V, "[0, 10]"),
    ("sample guidance < 0", lambda tmp: samplers.sample(MODEL, SHAPE, Y, SCH, steps=2, guidance=-1), V, ">= 0"),
    ("sample guidance NaN", lambda tmp: samplers.sample(MODEL, SHAPE, Y, SCH, steps=2, guidance=float("nan")), V, ">= 0"),
    ("sample shape 3-D", lambda tmp: samplers.sample(MODEL, (2, 28, 28), Y, SCH, steps=2), V, "[B, C, H, W]"),
    ("sample shape not ints", lambda tmp: samplers.sample(MODEL, (2, 1, 28.0, 28), Y, SCH, steps=2), V, "shape"),
    ("sample x_T wrong shape", lambda tmp: samplers.sample(MODEL, SHAPE, Y, SCH, steps=2, x_T=torch.randn(3, 1, 28, 28)), V, "x_T"),
    ("sample x_T numpy", lambda tmp: samplers.sample(MODEL, SHAPE, Y, SCH, steps=2, x_T=np.zeros(SHAPE)), Ty, "x_T"),
    ("sample eta < 0", lambda tmp: samplers.sample(MODEL, SHAPE, Y, SCH, sampler="ddim", steps=2, eta=-1), V, "eta"),
    ("sample clip 0", lambda tmp: samplers.sample(MODEL, SHAPE, Y, SCH, steps=2, clip=0), V, "clip"),
    ("sample spacing", lambda tmp: samplers.sample(MODEL, SHAPE, Y, SCH, steps=2, spacing="log"), V, "unknown spacing"),
    ("sample schedule a string", lambda tmp: samplers.sample(MODEL, SHAPE, Y, "cosine", steps=2), Ty, "Schedule"),
    # data
    ("load_mnist missing folder", lambda tmp: data.load_mnist(tmp / "none", download=False), DataNotFoundError, "MNIST not found"),
    ("load_mnist corrupt gz", lambda tmp: data.load_mnist(corrupt_gz_folder(tmp), download=False), DataNotFoundError, "could not be read"),
    ("load_mnist truncated gz", lambda tmp: data.load_mnist(truncated_gz_folder(tmp), download=False), DataNotFoundError, "could not be read"),
    ("synthetic_digits n < 0", lambda tmp: data.synthetic_digits(-1), V, "n must be"),
    # training: TrainConfig
    ("TrainConfig lr < 0", lambda tmp: training.TrainConfig(lr=-1), V, "TrainConfig.lr"),
    ("TrainConfig lr NaN", lambda tmp: training.TrainConfig(lr=float("nan")), V, "TrainConfig.lr"),
    ("TrainConfig lr a string", lambda tmp: training.TrainConfig(lr="1e-3"), V, "TrainConfig.lr"),
    ("TrainConfig batch 0", lambda tmp: training.TrainConfig(batch_size=0), V, "TrainConfig.batch_size"),
    ("TrainConfig batch 2.5", lambda tmp: training.TrainConfig(batch_size=2.5), V, "TrainConfig.batch_size"),
    ("TrainConfig label_dropout 1.5", lambda tmp: training.TrainConfig(label_dropout=1.5), V, "label_dropout"),
    ("TrainConfig label_dropout -0.1", lambda tmp: training.TrainConfig(label_dropout=-0.1), V, "label_dropout"),
    ("TrainConfig precision fp8", lambda tmp: training.TrainConfig(precision="fp8"), V, "precision"),
    ("TrainConfig schedule", lambda tmp: training.TrainConfig(schedule="quad"), V, "TrainConfig.schedule"),
    ("TrainConfig T 0", lambda tmp: training.TrainConfig(T=0), V, "TrainConfig.T"),
    ("TrainConfig ema_decay 1", lambda tmp: training.TrainConfig(ema_decay=1.0), V, "ema_decay"),
    ("TrainConfig min_snr_gamma 0", lambda tmp: training.TrainConfig(min_snr_gamma=0), V, "min_snr_gamma"),
    ("TrainConfig grad_clip 0", lambda tmp: training.TrainConfig(grad_clip=0), V, "grad_clip"),
    ("TrainConfig log_every 0", lambda tmp: training.TrainConfig(log_every=0), V, "log_every"),
    ("TrainConfig checkpoint_every < 0", lambda tmp: training.TrainConfig(checkpoint_every=-1), V, "checkpoint_every"),
    ("TrainConfig time budget < 0", lambda tmp: training.TrainConfig(time_budget_s=-1), V, "time_budget_s"),
    ("TrainConfig sampler", lambda tmp: training.TrainConfig(sampler="euler"), V, "TrainConfig.sampler"),
    ("TrainConfig sample_steps > T", lambda tmp: training.TrainConfig(sample_steps=2000), V, "sample_steps"),
    ("TrainConfig guidance < 0", lambda tmp: training.TrainConfig(guidance=-1), V, "TrainConfig.guidance"),
    ("TrainConfig unet a dict", lambda tmp: training.TrainConfig(unet={"base_channels": 8}), Ty, "UNetConfig"),
    ("TrainConfig.from_dict unknown key", lambda tmp: training.TrainConfig.from_dict({**recipes.tiny().to_dict(), "lr2": 1}), V, "lr2"),
    ("recipes.get unknown", lambda tmp: recipes.get("huge"), V, "unknown recipe"),
    # training: train()
    ("train config a dict", lambda tmp: training.train({"lr": 1}, digits()), Ty, "TrainConfig"),
    ("train data a tensor", lambda tmp: train_tiny(tmp, torch.zeros(4, 1, 28, 28)), Ty, "Digits"),
    ("train images uint8", lambda tmp: train_tiny(tmp, digits(images=torch.zeros(4, 1, 28, 28, dtype=torch.uint8))), V, "float"),
    ("train images 3-D", lambda tmp: train_tiny(tmp, digits(images=torch.zeros(4, 28, 28))), V, "[N, C, H, W]"),
    ("train images NaN", lambda tmp: train_tiny(tmp, digits(images=torch.full((4, 1, 28, 28), float("nan")))), V, "NaN"),
    ("train labels out of range", lambda tmp: train_tiny(tmp, digits(labels=torch.tensor([0, 1, 2, 30]))), V, "[0, 10]"),
    ("train labels wrong length", lambda tmp: train_tiny(tmp, digits(labels=torch.tensor([0, 1]))), V, "int64 [4]"),
    ("train empty data", lambda tmp: train_tiny(tmp, Digits(torch.zeros(0, 1, 28, 28), torch.zeros(0, dtype=torch.long))), V, "empty"),
    ("train bogus device", lambda tmp: training.train(recipes.tiny(steps=1), digits(), device="gpu0"), V, "unknown device"),
    ("train out_dir a file", lambda tmp: train_tiny(tmp, out_dir=str(write(tmp / "f", b"x"))), V, "is a file"),
    ("pick_device bogus", lambda tmp: training.pick_device("gpu0"), V, "unknown device"),
    ("fp16 on CPU", lambda tmp: training.resolve_precision("fp16", torch.device("cpu")), V, "fp16"),
    # checkpoint
    ("load_checkpoint missing", lambda tmp: checkpoint.load_checkpoint(tmp / "none.pt"), LabkitError, "not found"),
    ("load_checkpoint a folder", lambda tmp: checkpoint.load_checkpoint(tmp), LabkitError, "is a folder"),
    ("load_checkpoint garbage", lambda tmp: checkpoint.load_checkpoint(write(tmp / "g.pt", b"\x00\x01garbage" * 9)), LabkitError, "truncated or corrupt"),
    ("load_checkpoint a text file", lambda tmp: checkpoint.load_checkpoint(write(tmp / "notes.txt", b"train loss 0.03\n" * 9)), LabkitError, "not a labkit checkpoint (it is a text file"),
    ("load_checkpoint empty", lambda tmp: checkpoint.load_checkpoint(write(tmp / "e.pt", b"")), LabkitError, "truncated or corrupt"),
    ("load_checkpoint other torch file", lambda tmp: checkpoint.load_checkpoint(write(tmp / "o.pt", {"w": torch.ones(1)})), LabkitError, "not a labkit checkpoint"),
    ("load_model a samples file", lambda tmp: checkpoint.load_model(write(tmp / "s.pt", {"images": torch.zeros(1)})), LabkitError, "not a labkit checkpoint"),
    ("load_model no model inside", lambda tmp: checkpoint.load_model(checkpoint.save_checkpoint(tmp / "n.pt", {"step": 1})), LabkitError, "usable model"),
    ("save_checkpoint onto a folder", lambda tmp: checkpoint.save_checkpoint(tmp, {"step": 1}), LabkitError, "cannot write checkpoint"),
    ("export_release missing source", lambda tmp: checkpoint.export_release(tmp / "none.pt", tmp / "r.pt"), LabkitError, "not found"),
    # evaluation report
    ("load_samples_file missing", lambda tmp: report.load_samples_file(tmp / "none.pt"), LabkitError, "does not exist"),
    ("load_samples_file garbage", lambda tmp: report.load_samples_file(write(tmp / "g.pt", b"garbage")), LabkitError, "not a readable torch file"),
    ("load_samples_file a tensor", lambda tmp: report.load_samples_file(write(tmp / "t.pt", torch.zeros(3))), LabkitError, "must hold a dict"),
    ("load_samples_file no labels", lambda tmp: report.load_samples_file(write(tmp / "n.pt", {"images": torch.zeros(2, 1, 28, 28)})), LabkitError, "lacks 'labels'"),
    ("load_samples_file numpy arrays", lambda tmp: report.load_samples_file(write(tmp / "np.pt", {"images": np.zeros((2, 1, 28, 28)), "labels": np.zeros(2)})), LabkitError, "numpy"),
    ("load_samples_file images in [-1, 1]", lambda tmp: report.load_samples_file(write(tmp / "r.pt", {"images": -torch.ones(2, 1, 28, 28), "labels": torch.zeros(2, dtype=torch.long)})), LabkitError, "(x + 1) / 2"),
    ("load_samples_file float labels", lambda tmp: report.load_samples_file(write(tmp / "f.pt", {"images": torch.zeros(2, 1, 28, 28), "labels": torch.zeros(2)})), LabkitError, "integers"),
    ("load_samples_file labels 10", lambda tmp: report.load_samples_file(write(tmp / "l.pt", {"images": torch.zeros(2, 1, 28, 28), "labels": torch.tensor([0, 10])})), LabkitError, "0..9"),
    ("check_samples wrong label count", lambda tmp: report.check_samples(torch.zeros(3, 1, 28, 28), torch.zeros(2, dtype=torch.long)), V, "shape [3]"),
]


@pytest.mark.parametrize("call, error, words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gives_one_clear_line(tmp_path, call, error, words):
    with pytest.raises(error) as info:
        call(tmp_path)
    assert isinstance(info.value, LabkitError), f"{type(info.value).__name__}: {info.value}"
    text = str(info.value)
    assert words in text, text
    assert "\n" not in text, text


def test_value_and_type_errors_are_still_builtin_types():
    with pytest.raises(ValueError):
        training.TrainConfig(lr=0)
    with pytest.raises(TypeError):
        MODEL(np.zeros(SHAPE, np.float32), T, Y)


def test_validation_keeps_good_inputs_working():
    """The checks do not refuse what worked before: float t, the null class, t as int32, bf16 autocast."""
    with torch.no_grad():
        assert MODEL(X, T.float() + 0.5, torch.tensor([10, 0])).shape == SHAPE
        assert MODEL(X, T.int(), Y.int()).shape == SHAPE
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert MODEL(X, T, Y).shape == SHAPE
    assert samplers.sample(MODEL, SHAPE, torch.tensor([3, 10]), SCH, steps=2, guidance=torch.tensor(1.5)).shape == SHAPE


# --- the command line -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny training checkpoint, a valid samples file and a garbage file."""
    root = tmp_path_factory.mktemp("badcli")
    torch.set_num_threads(1)
    result = training.train(recipes.tiny(steps=1, out_dir=str(root / "run")), data.synthetic_digits(8),
                            device="cpu", progress=False)
    torch.save({"images": torch.rand(20, 1, 28, 28), "labels": torch.arange(20) % 10}, root / "samples.pt")
    (root / "garbage.pt").write_bytes(b"\x00\x01garbage" * 10)
    (root / "notes.txt").write_text("step 100: loss 0.031\nstep 200: loss 0.027\n")
    (root / "truncated.pt").write_bytes(Path(result.checkpoint).read_bytes()[:5000])
    (root / "afile").write_text("x")
    torch.save({"images": np.zeros((2, 1, 28, 28)), "labels": np.zeros(2)}, root / "numpy.pt")
    return {"ckpt": str(result.checkpoint), "samples": str(root / "samples.pt"), "garbage": str(root / "garbage.pt"),
            "text": str(root / "notes.txt"), "truncated": str(root / "truncated.pt"),
            "file": str(root / "afile"), "dir": str(root), "numpy": str(root / "numpy.pt"), "out": str(root / "o")}


CLI_CASES = [
    # train
    (["train", "--device", "gpu0"], "unknown device"),
    (["train", "--recipe", "huge"], "invalid choice"),
    (["train", "--steps", "-1"], "must be >= 0"),
    (["train", "--steps", "many"], "invalid _nonneg_int value"),
    (["train", "--batch-size", "0"], "must be >= 1"),
    (["train", "--minutes", "nan"], "must be >= 0"),
    (["train", "--threads", "-2"], "must be >= 0"),
    (["train", "--seed", "x"], "invalid int value"),
    (["train", "--synthetic", "0"], "must be >= 1"),
    (["train", "--bogus"], "unrecognized arguments"),
    (["train", "--recipe", "tiny", "--synthetic", "8", "--out", "{file}"], "is a file, not a folder"),
    (["train", "--recipe", "tiny", "--synthetic", "8", "--export", "{dir}", "--out", "{out}"], "is a folder"),
    (["train", "--data", "{dir}/nowhere", "--out", "{out}"], "MNIST not found"),
    # sample
    (["sample", "--checkpoint", "{dir}"], "is a folder"),
    (["sample", "--checkpoint", "{garbage}"], "truncated or corrupt"),
    (["sample", "--checkpoint", "{truncated}"], "truncated or corrupt"),
    (["sample", "--checkpoint", "{text}"], "is not a labkit checkpoint (it is a text file"),
    (["sample", "--checkpoint", "{samples}"], "not a labkit checkpoint"),
    (["sample", "--checkpoint", "{ckpt}", "--sampler", "euler"], "unknown sampler"),
    (["sample", "--checkpoint", "{ckpt}", "--steps", "5000"], "more than the model's T"),
    (["sample", "--steps", "0"], "must be >= 1"),
    (["sample", "--guidance", "-1"], "must be >= 0"),
    (["sample", "--per-class", "0"], "must be >= 1"),
    (["sample", "--batch-size", "0"], "must be >= 1"),
    (["sample", "--checkpoint", "{ckpt}", "--device", "gpu0"], "unknown device"),
    (["sample", "--checkpoint", "{ckpt}", "--out", "{dir}"], "is a folder"),
    (["sample", "--checkpoint", "{ckpt}", "--out", "{file}/x.pt"], "is a file, not a folder"),
    (["sample", "--checkpoint", "{ckpt}", "--out", "{out}/s.pt", "--grid", "{out}/g.foo"], "unsupported file type"),
    # evaluate
    (["evaluate"], "the following arguments are required"),
    (["evaluate", "{dir}/none.pt"], "does not exist"),
    (["evaluate", "{garbage}"], "not a readable torch file"),
    (["evaluate", "{numpy}"], "numpy"),
    (["evaluate", "{ckpt}"], "lacks 'images'"),
    (["evaluate", "{samples}", "--json", "{dir}"], "is a folder"),
    (["evaluate", "{samples}", "--plot", "{out}/p.foo"], "unsupported file type"),
    (["evaluate", "{samples}", "--clip", "ViT-B-32"], "MODEL:PRETRAINED"),
    (["evaluate", "{samples}", "--device", "gpu0"], "unknown device"),
    # info, build, grade, unknown command
    (["info", "--device", "gpu0"], "unknown device"),
    (["info", "--bogus"], "unrecognized arguments"),
    (["build", "--bogus-flag"], "unrecognized arguments"),
    (["grade", "--bogus-flag"], "unrecognized arguments"),
    (["frobnicate"], "invalid choice"),
]
if torch.cuda.is_available():
    CLI_CASES = [c for c in CLI_CASES if c[0][-2:] != ["--device", "cuda"]]
else:
    CLI_CASES += [(["train", "--device", "cuda"], "CUDA is not available"),
                  (["sample", "--checkpoint", "{ckpt}", "--device", "cuda"], "CUDA is not available")]


@pytest.mark.parametrize("argv, words", CLI_CASES, ids=[" ".join(a) for a, _ in CLI_CASES])
def test_cli_bad_arguments_one_line(capsys, monkeypatch, files, argv, words):
    import torchvision.datasets

    monkeypatch.setattr(cli, "_course", lambda: None)  # build/grade: argument errors, without labkit.course
    monkeypatch.delenv("LABKIT_DATA", raising=False)
    monkeypatch.setattr(torchvision.datasets.MNIST, "download", lambda self: (_ for _ in ()).throw(OSError("offline")))
    argv = [a.format(**files) for a in argv]
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("labkit: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert words in err, err


# --- first contact (issue 14): what a new user runs into -------------------------------------------------


def _cli_error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("labkit: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err.strip()


@pytest.fixture
def dns_fails(monkeypatch, tmp_path):
    """torchvision's own MNIST.download, offline: each mirror fails with the URLError a missing DNS gives
    (torchvision then raises one RuntimeError spanning several lines, one 'Tried <mirror>' per mirror)."""
    import urllib.error

    import torchvision.datasets.mnist as tv_mnist

    def fail(url, *args, **kwargs):
        raise urllib.error.URLError(OSError(-2, "Name or service not known"))

    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", fail)
    monkeypatch.delenv("LABKIT_DATA", raising=False)
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))


def test_bad_data_folder_is_never_created_and_the_message_is_whole(capsys, tmp_path, dns_fails):
    nowhere = tmp_path / "typo" / "mnist"
    err = _cli_error(capsys, ["train", "--recipe", "tiny", "--data", str(nowhere), "--out", str(tmp_path / "run")])
    assert not nowhere.exists() and not (tmp_path / "typo").exists(), "a failed lookup created the user's folder"
    assert "MNIST not found in " + str(nowhere) in err
    assert "(download failed: [Errno -2] Name or service not known)" in err, err  # the reason, once, whole
    assert "Tried" not in err and err.endswith("so torchvision can download it."), err
    assert list((tmp_path / "cache").glob("mnist-download-*")) == []  # the temporary download folder is gone
    capsys.readouterr()
    assert cli.main(["info", "--data", str(nowhere)]) == 0
    out = capsys.readouterr().out
    assert f"  {nowhere}\n" in out and "(exists)" not in out and "MNIST found  no" in out


def test_labkit_data_folder_is_not_created_either(capsys, tmp_path, dns_fails, monkeypatch):
    monkeypatch.setenv("LABKIT_DATA", str(tmp_path / "not-yet"))
    err = _cli_error(capsys, ["train", "--recipe", "tiny", "--out", str(tmp_path / "run")])
    assert "Name or service not known" in err and not (tmp_path / "not-yet").exists()


def _idx(name: str, n: int) -> bytes:
    if "images" in name:
        return struct.pack(">IIII", 2051, n, 28, 28) + bytes(n * 28 * 28)
    return struct.pack(">II", 2049, n) + bytes(i % 10 for i in range(n))


def test_a_download_that_works_lands_in_the_named_folder(tmp_path, monkeypatch):
    """The other side of the temporary folder: files that all arrived are moved into the folder the user named."""
    import torchvision.datasets.mnist as tv_mnist

    def fake_download(url, download_root, filename, md5=None, **kwargs):
        name = filename[: -len(".gz")]
        Path(download_root, name).write_bytes(_idx(name, 7 if name.startswith("train") else 3))

    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", fake_download)
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))
    digits = data.load_mnist(tmp_path / "new" / "mnist", train=False)
    assert len(digits) == 3
    assert sorted(p.name for p in (tmp_path / "new" / "mnist" / "MNIST" / "raw").iterdir()) == sorted(data.MNIST_FILES)
    assert list((tmp_path / "cache").glob("mnist-download-*")) == []


def test_error_text_is_shortened_at_a_word_never_inside_one():
    from labkit.errors import one_line

    text = "Error downloading train-images-idx3-ubyte.gz:\nTried https://example.org/mnist/, got:\n" * 5
    short = one_line(text, 100)
    assert len(short) <= 106 and short.endswith(" [...]") and "\n" not in short
    assert text.replace("\n", " ").startswith(short[: -len(" [...]")] + " "), short  # whole words only
    assert one_line("a\n  b") == "a b"


def test_info_names_the_users_mnist_folder(capsys, tmp_path, monkeypatch):
    folder = tmp_path / "my-mnist"
    folder.mkdir()
    for name in data.MNIST_FILES:
        (folder / f"{name}.gz").write_bytes(gzip.compress(_idx(name, 2)))
    monkeypatch.setenv("LABKIT_DATA", str(folder))
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))
    assert cli.main(["info"]) == 0
    found = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("MNIST found"))
    assert found.startswith(f"MNIST found  {folder}  (unpacked into {tmp_path / 'cache'}"), found


def test_a_text_file_is_not_a_checkpoint_and_a_cut_checkpoint_is_truncated(tmp_path, files):
    text = write(tmp_path / "README.md", b"# my run\n\nloss went down\n")
    with pytest.raises(LabkitError, match=r"is not a labkit checkpoint \(it is a text file") as info:
        checkpoint.load_checkpoint(text)
    assert "KeyError" not in str(info.value) and "truncated" not in str(info.value)
    with pytest.raises(LabkitError, match="truncated or corrupt"):
        checkpoint.load_checkpoint(files["truncated"])


@pytest.fixture
def synthetic_reference(monkeypatch):
    """``--data synthetic`` resolves to synthetic real digits (no MNIST needed)."""
    from labkit.evaluation import fid

    train = data.synthetic_digits(200, generator=torch.Generator().manual_seed(20))
    test = data.synthetic_digits(100, generator=torch.Generator().manual_seed(21))
    monkeypatch.setitem(fid._MNIST_REFS, "synthetic", fid.RealReference.from_digits(train, test))
    return "synthetic"


def test_evaluate_says_in_one_line_why_clip_was_skipped(capsys, monkeypatch, files, synthetic_reference):
    from labkit.evaluation import clip as clip_module

    monkeypatch.setattr(clip_module, "cached_weights", lambda *a: None)
    monkeypatch.setattr(clip_module, "hub_reachable", lambda *a, **k: False)
    assert cli.main(["evaluate", files["samples"], "--data", synthetic_reference, "--device", "cpu"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.endswith("; CLIP scores skipped: the weights of ViT-B-32:laion2b_s34b_b79k are not cached and the "
                          "Hugging Face hub cannot be reached (run once online to download them)"), first
    assert cli.main(["evaluate", files["samples"], "--data", synthetic_reference, "--device", "cpu", "--clip", "none"]) == 0
    assert capsys.readouterr().out.splitlines()[0].endswith("; CLIP scores off")


def test_evaluate_tries_clip_by_default_when_its_weights_are_there(capsys, monkeypatch, files, synthetic_reference):
    from labkit.evaluation import clip as clip_module

    asked = []

    def from_pretrained(model_name, pretrained, device=None, **kwargs):
        asked.append((model_name, pretrained))
        scorer = clip_module.tiny_clip_scorer(device=device)  # no download: a tiny random open_clip model
        scorer.name = f"{model_name}:{pretrained}"
        return scorer

    monkeypatch.setattr(clip_module, "cached_weights", lambda *a: "/cache/open_clip_model.safetensors")
    monkeypatch.setattr(clip_module, "hub_reachable", lambda *a, **k: False)
    monkeypatch.setattr(report.ClipScorer, "from_pretrained", staticmethod(from_pretrained))
    assert cli.main(["evaluate", files["samples"], "--data", synthetic_reference, "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert asked == [("ViT-B-32", "laion2b_s34b_b79k")]
    assert out.splitlines()[0].endswith("; CLIP ViT-B-32:laion2b_s34b_b79k") and "clip p" in out, out[:300]


def test_sample_grid_separates_black_background_digits(capsys, tmp_path, files):
    from PIL import Image

    grid = tmp_path / "grid.png"
    assert cli.main(["sample", "--checkpoint", files["ckpt"], "--per-class", "2", "--out", str(tmp_path / "s.pt"),
                     "--grid", str(grid), "--device", "cpu"]) == 0
    img = np.asarray(Image.open(grid).convert("L"), dtype=np.int64)
    assert img.shape == (2 + 2 * 30, 2 + 10 * 30)  # 2 rows x 10 digits of 28 px, 2-px borders
    borders = np.concatenate([img[:2].ravel(), img[:, :2].ravel(), img[30:32].ravel(), img[:, 30:32].ravel()])
    assert (np.abs(borders - 128) <= 1).all(), "digits are separated by a mid-grey border, not black"
