"""The U-Net: shapes, conditioning, skips, shape trace, summary, gradients and parameter counts."""

import re
from pathlib import Path

import pytest
import torch

from labkit.diffusion import diffusion_loss
from labkit.schedules import make_schedule
from labkit.unet import ResBlock, UNet, UNetConfig



DOC = Path(__file__).resolve().parents[1] / "docs" / "core.md"
SMALL = UNetConfig(base_channels=8, channel_mults=(1, 2), groups=4)  # tiny: the tests run on busy CPUs
S = 12  # image side for the tests that do not need 28x28
CPU_CONFIG = UNetConfig(base_channels=32, channel_mults=(1, 2), patch=2)


def _perturb(model: UNet, seed: int = 0) -> UNet:
    """Give random weights to the layers that start at zero.

    Both the output conv *and* the last conv of every residual block are zero-initialised, so a fresh
    U-Net outputs exactly 0 and (since each block is then the identity) ignores t and y: re-initialising
    only ``model.out`` would not make the output depend on time or class.
    """
    g = torch.Generator().manual_seed(seed)
    convs = [model.out] + [m.block2.conv for m in model.modules() if isinstance(m, ResBlock)]
    with torch.no_grad():
        for conv in convs:
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 0.05)
            conv.bias.copy_(torch.randn(conv.bias.shape, generator=g) * 0.05)
    return model


def _inputs(cfg: UNetConfig, size: int, batch: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, cfg.in_channels, size, size, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    y = torch.randint(0, cfg.num_classes, (batch,), generator=g)
    return x, t, y


def _expected_parameters(cfg: UNetConfig) -> int:
    """Parameter count worked out by hand from the architecture described in labkit.unet."""

    def conv(a, b, k):
        return a * b * k * k + b

    def linear(a, b):
        return a * b + b

    def norm(c):
        return 2 * c

    def resblock(a, b):
        n = norm(a) + conv(a, b, 3) + linear(E, 2 * b) + norm(b) + conv(b, b, 3)
        return n + (conv(a, b, 1) if a != b else 0)

    E = cfg.emb_dim
    chans = [cfg.base_channels * m for m in cfg.channel_mults]
    c_img = cfg.in_channels * cfg.patch**2
    n = linear(cfg.base_channels, E) + linear(E, E)  # time MLP
    n += (cfg.num_classes + 1) * E  # class table
    n += conv(c_img, chans[0], 3)  # stem
    c = chans[0]
    for i, ch in enumerate(chans):  # down path
        n += resblock(c, ch) + (cfg.blocks_per_level - 1) * resblock(ch, ch)
        c = ch
        if i < len(chans) - 1:
            n += conv(ch, ch, 3)
    n += 2 * resblock(c, c)  # middle
    if cfg.attention:
        n += norm(c) + 3 * c * c + 3 * c + c * c + c  # GroupNorm + in/out projections of attention
    for i in reversed(range(len(chans))):  # up path
        ch = chans[i]
        n += resblock(c + (ch if cfg.skips else 0), ch) + (cfg.blocks_per_level - 1) * resblock(ch, ch)
        c = ch
        if i > 0:
            n += conv(ch, chans[i - 1], 3)
            c = chans[i - 1]
    n += norm(chans[0]) + conv(chans[0], c_img, 3)  # output
    return n


@pytest.mark.parametrize("size", [28, 32])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("patch", [1, 2])
def test_output_shape_equals_input_shape(size, channels, patch):
    cfg = UNetConfig(in_channels=channels, base_channels=8, channel_mults=(1, 2), groups=4, patch=patch)
    model = _perturb(UNet(cfg).eval())
    x, t, y = _inputs(cfg, size, batch=1)
    with torch.no_grad():
        out = model(x, t, y)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert bool(torch.isfinite(out).all())


def test_three_levels_on_28x28():
    """The default (1, 2, 2) goes 28 -> 14 -> 7 and back, including the odd 7 -> 4 -> 7 case with patch=2."""
    for patch in (1, 2):
        cfg = UNetConfig(base_channels=8, channel_mults=(1, 2, 2), groups=4, patch=patch)
        model = UNet(cfg).eval()
        x, t, y = _inputs(cfg, 28, batch=1)
        with torch.no_grad():
            assert model(x, t, y).shape == x.shape


def test_fresh_model_outputs_zero_and_ignores_conditioning():
    model = UNet(SMALL).eval()
    x, t, y = _inputs(SMALL, S)
    with torch.no_grad():
        out = model(x, t, y)
        assert float(out.abs().max()) == 0.0, "the zero-initialised output layer starts by predicting 0 noise"


def test_class_and_time_change_the_output():
    model = _perturb(UNet(SMALL).eval())
    x = torch.randn(1, 1, S, S, generator=torch.Generator().manual_seed(1)).expand(3, -1, -1, -1)
    with torch.no_grad():
        by_class = model(x, torch.tensor([500, 500, 500]), torch.tensor([0, 7, SMALL.null_class]))
        by_time = model(x, torch.tensor([0, 500, 999]), torch.tensor([3, 3, 3]))
        same = model(x, torch.tensor([500, 500, 500]), torch.tensor([4, 4, 4]))
    for out in (by_class, by_time):
        for i in range(3):
            for j in range(i + 1, 3):
                assert float((out[i] - out[j]).abs().max()) > 1e-4
    # identical inputs give identical outputs (the differences above come from t and y alone)
    assert float((same[0] - same[2]).abs().max()) < 1e-6


def test_batch_items_are_independent():
    model = _perturb(UNet(SMALL).eval())
    x, t, y = _inputs(SMALL, S, batch=4)
    with torch.no_grad():
        together = model(x, t, y)
        alone = torch.cat([model(x[i : i + 1], t[i : i + 1], y[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)


def test_turning_skips_off_changes_the_architecture():
    with_skips = UNet(SMALL)
    cfg = UNetConfig(base_channels=8, channel_mults=(1, 2), groups=4, skips=False)
    no_skips = UNet(cfg)
    assert no_skips.num_parameters() < with_skips.num_parameters()
    expected_gap = _expected_parameters(SMALL) - _expected_parameters(cfg)
    assert with_skips.num_parameters() - no_skips.num_parameters() == expected_gap
    x, t, y = _inputs(cfg, S)
    names_on = [name for name, _ in with_skips.shape_trace(x, t, y)]
    names_off = [name for name, _ in no_skips.shape_trace(x, t, y)]
    assert sum("skip" in n for n in names_on) == len(SMALL.channel_mults)
    assert not any("skip" in n for n in names_off)
    # the concatenation adds the down level's channels
    trace = dict(with_skips.shape_trace(x, t, y))
    assert trace["up level 0 + skip"][1] == trace["up level 1"][1] + trace["down level 0"][1]
    # ... and the skip-less net still runs and trains one step
    _perturb(no_skips)
    opt = torch.optim.SGD(no_skips.parameters(), lr=0.1)
    before = [p.detach().clone() for p in no_skips.parameters()]
    x0 = torch.rand(4, 1, S, S, generator=torch.Generator().manual_seed(0)) * 2 - 1
    y = torch.tensor([0, 1, 2, 3])
    loss = diffusion_loss(no_skips, x0, y, make_schedule("cosine"), generator=torch.Generator().manual_seed(0))
    assert bool(torch.isfinite(loss))
    loss.backward()
    opt.step()
    changed = sum(not torch.equal(b, p) for b, p in zip(before, no_skips.parameters()))
    assert changed > len(before) // 2


@pytest.mark.parametrize(
    "cfg",
    [
        UNetConfig(),
        CPU_CONFIG,
        SMALL,
        UNetConfig(base_channels=16, channel_mults=(1, 2, 2), skips=False),
        UNetConfig(base_channels=16, channel_mults=(1, 2), attention=False, blocks_per_level=1, groups=4),
        UNetConfig(in_channels=3, base_channels=24, channel_mults=(1, 2, 4), patch=2, num_classes=5),
    ],
)
def test_parameter_count_matches_hand_count(cfg):
    model = UNet(cfg)
    assert model.num_parameters() == _expected_parameters(cfg)
    assert model.num_parameters() == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("patch", [1, 2])
def test_shape_trace_rows(patch):
    cfg = UNetConfig(base_channels=8, channel_mults=(1, 2, 2), groups=4, patch=patch)
    model = UNet(cfg)
    B, size = 2, 28
    x, t, y = _inputs(cfg, size, batch=B)
    trace = model.shape_trace(x, t, y)
    names = [name for name, _ in trace]
    shapes = dict(trace)
    assert trace[0] == ("input", (B, 1, size, size))
    assert trace[-1] == ("output (eps_hat)", (B, 1, size, size))
    assert shapes["embedding (time + class)"] == (B, cfg.emb_dim)
    s = size // patch
    if patch > 1:
        assert shapes[f"pixel_unshuffle x{patch}"] == (B, patch * patch, s, s)
    else:
        assert not any("pixel_unshuffle" in n for n in names)
    assert shapes["stem"] == (B, 8, s, s)
    sizes = [s, (s + 1) // 2, ((s + 1) // 2 + 1) // 2]  # stride-2 conv with padding 1 rounds up
    for i, (mult, side) in enumerate(zip(cfg.channel_mults, sizes)):
        assert shapes[f"down level {i}"] == (B, 8 * mult, side, side)
        next_mult = cfg.channel_mults[i - 1] if i else mult  # each up level ends with the next level's channels
        assert shapes[f"up level {i}"] == (B, 8 * next_mult, side, side)
    assert shapes["middle"] == (B, 16, sizes[-1], sizes[-1])
    assert names.index("middle") < names.index("up level 2") < names.index("up level 1") < names.index("up level 0")
    assert len(trace) == len(set(names)), "each stage is listed once"


def test_summary_text():
    model = UNet(SMALL)
    text = model.summary()
    lines = text.splitlines()
    for name, shape in model.shape_trace(*_inputs(SMALL, 28, batch=1)):  # summary() defaults to 28x28
        assert any(line.startswith(name) and str(list(shape)) in line for line in lines), name
    counts = {}
    parts = ("embeddings", "stem", "down level 0", "down level 1", "middle", "up level 1", "up level 0", "output",
             "total parameters")
    for part in parts:
        match = [m for line in lines if (m := re.fullmatch(rf"{part}\s+([\d,]+)", line))]
        assert len(match) == 1, part
        counts[part] = int(match[0].group(1).replace(",", ""))
    assert counts["total parameters"] == model.num_parameters() == _expected_parameters(SMALL)
    assert sum(v for k, v in counts.items() if k != "total parameters") == counts["total parameters"]
    emb = SMALL.emb_dim
    assert counts["embeddings"] == (8 * emb + emb) + (emb * emb + emb) + 11 * emb
    assert "[1, 1, 32, 32]" in model.summary(image_size=32)
    assert "[4, 1, 28, 28]" in model.summary(batch=4)


def test_gradient_reaches_every_parameter():
    model = _perturb(UNet(SMALL))
    x0 = torch.rand(6, 1, S, S, generator=torch.Generator().manual_seed(0)) * 2 - 1
    y = torch.tensor([0, 1, 2, 3, 4, SMALL.null_class])
    loss = diffusion_loss(model, x0, y, make_schedule("cosine"), generator=torch.Generator().manual_seed(1))
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert bool(torch.isfinite(p.grad).all()), name
        assert float(p.grad.abs().max()) > 0, f"no gradient reaches {name}"
    # only the rows of the classes in the batch are used
    used = model.class_embed.table.weight.grad.abs().sum(dim=1) > 0
    assert used.tolist() == [True] * 5 + [False] * 5 + [True]


def test_fresh_model_trains_from_zero_init():
    """From the zero init, one step moves the zero layers, after which gradients reach everything."""
    model = UNet(SMALL)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    sch = make_schedule("cosine")
    x0 = torch.rand(4, 1, S, S, generator=torch.Generator().manual_seed(0)) * 2 - 1
    y = torch.tensor([0, 1, 2, 3])
    diffusion_loss(model, x0, y, sch, generator=torch.Generator().manual_seed(0)).backward()
    assert float(model.out.weight.grad.abs().max()) > 0
    opt.step()
    opt.zero_grad()
    assert float(model.out.weight.detach().abs().max()) > 0


def test_unet_config_validation_and_round_trip():
    with pytest.raises(ValueError):
        UNetConfig(base_channels=12, groups=8)
    with pytest.raises(ValueError):
        UNetConfig(patch=0)
    assert UNetConfig.from_dict(CPU_CONFIG.to_dict()) == CPU_CONFIG
    assert UNetConfig().null_class == 10 and UNetConfig().emb_dim == 256


def test_docs_state_the_parameter_counts():
    """docs/core.md prints the summary tables; their totals must match the code."""
    text = DOC.read_text()
    for cfg in (UNetConfig(), CPU_CONFIG):
        total = f"{UNet(cfg).num_parameters():,}"
        assert re.search(rf"total parameters\s+{re.escape(total)}", text), f"docs/core.md lacks {total}"
