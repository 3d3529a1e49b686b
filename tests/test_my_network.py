"""Lab 03 -> lab 04: the student's own U-Net travels as a file (``colab.save_my_network``), lab 04 trains it when it
still passes lab 03's check (``checks.lab04_training.network_to_use``), and the checkpoint loads as labkit's UNet
(``training.run_loop(network=...)``) with the same outputs, so labs 05-09 sample the student's trained network."""

import ast
import importlib.util
from dataclasses import replace
from pathlib import Path

import torch

from labkit import checkpoint, colab, recipes, training
from labkit.checks import lab04_training
from labkit.data import synthetic_digits

REPO = Path(__file__).resolve().parents[1]
MINE = ["sinusoidal_embedding", "film", "TimeEmbedding", "ClassEmbedding", "ConvBlock", "ResBlock", "UNet"]


def _lab03_as_a_module(tmp_path: Path, edit: tuple[str, str] | None = None):
    """The lab 03 solution's imports, functions and classes in a file, imported: what a notebook's namespace
    holds after running the cells (the sources are found through the file, as IPython's cells are)."""
    source = (REPO / "solutions" / "lab03_embeddings" / "lab03_embeddings.py").read_text()
    tree = ast.parse(source)
    keep = [ast.get_source_segment(source, n) for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom)) or (
        isinstance(n, (ast.FunctionDef, ast.ClassDef)) and "### BEGIN SOLUTION" in ast.get_source_segment(source, n))]
    text = "\n\n".join(keep)
    if edit:
        assert edit[0] in text
        text = text.replace(*edit)
    path = tmp_path / "cells.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("cells", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_network_travels_trains_and_loads_as_labkits(tmp_path):
    cells = _lab03_as_a_module(tmp_path)
    path = colab.save_my_network(vars(cells), MINE, folder=str(tmp_path / "runs"))
    assert Path(path).name == "my_unet.py" and "class UNet" in Path(path).read_text()
    mine = colab.load_my_network(str(tmp_path / "runs"))
    network, who = lab04_training.network_to_use(mine)
    assert network is not None and who == "your UNet from lab 03"

    config = recipes.tiny(steps=4, out_dir=str(tmp_path / "run"), checkpoint_every=2)
    config = replace(config, unet=replace(config.unet, attention=False))
    data = synthetic_digits(64, generator=torch.Generator().manual_seed(0))
    result = training.run_loop(training.train_loop, config, data, device="cpu", chunk=2, network=network)
    assert type(result.model).__module__ == "my_unet"  # the student's class trained
    model, _, _ = checkpoint.load_model(result.checkpoint, device="cpu")  # labkit's UNet, the student's weights
    x, t, y = torch.randn(3, 1, 28, 28), torch.tensor([0, 500, 999]), torch.tensor([1, 7, 10])
    with torch.no_grad():
        assert torch.allclose(model(x, t, y), result.ema.eval()(x, t, y), atol=1e-5)

    # resume: 2 more steps from the checkpoint end where 6 unbroken steps end
    more = training.run_loop(training.train_loop, replace(config, total_steps=6), data, device="cpu", chunk=2,
                             network=network)
    unbroken = training.run_loop(training.train_loop, replace(config, total_steps=6, out_dir=str(tmp_path / "u")),
                                 data, device="cpu", chunk=2, network=network)
    for a, b in zip(more.model.parameters(), unbroken.model.parameters()):
        assert torch.equal(a, b)


def test_a_saved_network_that_fails_lab03s_check_is_not_trained(tmp_path, capsys):
    cells = _lab03_as_a_module(tmp_path, ("return h * (1 + scale[:, :, None, None])", "return h * (scale[:, :, None, None])"))
    colab.save_my_network(vars(cells), MINE, folder=str(tmp_path / "runs"))
    network, who = lab04_training.network_to_use(colab.load_my_network(str(tmp_path / "runs")))
    assert network is None and "does not pass lab 03's check" in who
    assert lab04_training.network_to_use(None)[0] is None
    (tmp_path / "runs" / "my_unet.py").write_text("raise RuntimeError('broken')\n")
    assert colab.load_my_network(str(tmp_path / "runs")) is None and "did not import" in capsys.readouterr().out


def test_a_network_that_makes_cpu_tensors_is_not_trained_on_a_gpu_path(tmp_path):
    """A U-Net whose embedding makes its tensors on the CPU (``torch.zeros(n)`` without ``device=``) passes lab
    03's value checks but would crash on Colab's GPU: labs 04 and 10 train labkit's network instead and say why
    (found on PyTorch's meta device, so on this CPU too)."""
    edit = ("emb = torch.zeros(t.shape[0], dim, device=t.device)", "emb = torch.zeros(t.shape[0], dim)")
    cells = _lab03_as_a_module(tmp_path, edit)
    colab.save_my_network(vars(cells), MINE, folder=str(tmp_path / "runs"))
    network, who = lab04_training.network_to_use(colab.load_my_network(str(tmp_path / "runs")))
    assert network is None and "would fail on a GPU" in who and "device" in who, who
    arange = ("torch.arange(dim // 2, dtype=torch.float32, device=t.device)", "torch.arange(dim // 2, dtype=torch.float32)")
    (tmp_path / "arange").mkdir()
    why = lab04_training._mixes_devices(_lab03_as_a_module(tmp_path / "arange", arange).UNet)
    assert why and "not on the expected device" in why, why  # a CPU tensor meets a meta one: what CUDA says
    (tmp_path / "ok").mkdir()
    assert lab04_training._mixes_devices(_lab03_as_a_module(tmp_path / "ok").UNet) is None  # the solution runs


def test_labs_05_to_09_find_the_lab04_run(tmp_path, capsys):
    """``checks.trained_model`` / ``lab04_checkpoint``: the run lab 04 wrote is the model of labs 05, 07 and 09
    when it is in the runs folder; else the shipped one, and the printed line says which."""
    from labkit.checks import fixtures

    assert fixtures.lab04_checkpoint(str(tmp_path / "runs")) is None
    config = recipes.tiny(steps=2, out_dir=str(tmp_path / "runs" / "lab04-cpu"))
    data = synthetic_digits(32, generator=torch.Generator().manual_seed(0))
    training.run_loop(training.train_loop, config, data, device="cpu", chunk=2)
    assert fixtures.lab04_checkpoint(str(tmp_path / "runs")).endswith("lab04-cpu/loop.pt")
    model, schedule, meta = fixtures.trained_model("cpu", runs=str(tmp_path / "runs"))
    assert meta["yours"] and meta["step"] == 2 and "Your lab 04 model" in capsys.readouterr().out
    _, _, meta = fixtures.trained_model("cpu", runs=str(tmp_path / "elsewhere"))
    assert not meta["yours"]
