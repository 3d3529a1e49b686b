"""Lab 02's module checks (ConvBlock, ResBlock, Down, Up, UNet), both ways: the instructor's solution and
labkit's classes pass; each plausible wrong class, made from the solution by one edit, fails with a message
that names the mistake (or the parameter, shape or error hint that leads to it)."""

import pytest
import torch

from labkit.checks import lab02_unet as checks
from labkit.checks._common import CheckFailed
from labkit import unet
from solution_code import solution_namespace

LAB = "lab02_unet"
CHECK = {"ConvBlock": checks.check_conv_block, "ResBlock": checks.check_res_block, "Down": checks.check_down,
         "Up": checks.check_up, "UNet": checks.check_unet}


@pytest.mark.parametrize("name", sorted(CHECK))
def test_the_solution_passes(name, capsys):
    CHECK[name](solution_namespace(LAB)[name])
    assert "passed" in capsys.readouterr().out


def test_labkits_classes_pass(capsys):
    for name in ("ConvBlock", "ResBlock", "Down", "Up"):
        CHECK[name](getattr(unet, name))
    checks.check_unet(checks.labkit_unet)
    assert capsys.readouterr().out.count("passed") == 5


from lab02_modules import WRONG  # noqa: E402  (each wrong class: one edit of the solution)


@pytest.mark.parametrize("name, edit, phrase", WRONG, ids=[f"{w[0]}-{w[2][:24]}" for w in WRONG])
def test_a_wrong_class_fails_with_a_message_that_names_it(name, edit, phrase):
    wrong = solution_namespace(LAB, edit)[name]
    with pytest.raises(CheckFailed) as err:
        CHECK[name](wrong)
    assert phrase.lower() in str(err.value).lower(), str(err.value)


def test_a_class_that_is_not_written_yet_is_named():
    stub = solution_namespace(LAB, {"        self.norm = nn.GroupNorm(groups, c_in)\n": "        raise NotImplementedError()\n"})
    with pytest.raises(CheckFailed, match="not implemented yet"):
        checks.check_conv_block(stub["ConvBlock"])


def test_an_in_place_forward_is_named():
    wrong = solution_namespace(LAB, {"return self.shortcut(x) + self.block2(self.block1(x))":
                                     "h = self.block2(self.block1(x))\n        x += h if x.shape == h.shape else 0\n"
                                     "        return self.shortcut(x) + h"})["ResBlock"]
    with pytest.raises(CheckFailed, match="in place"):
        checks.check_res_block(wrong)


def test_a_function_instead_of_a_module_is_named():
    with pytest.raises(CheckFailed, match="nn.Module"):
        checks.check_conv_block(lambda c_in, c_out, groups: torch.zeros(1))


def test_a_wrong_network_is_located_level_by_level():
    """No catalogue entry for this one: the message says where the network first differs from labkit's (the
    probe records each level's output; the check runs labkit's network with the same weights)."""
    wrong = solution_namespace(LAB, {"h = self.mid2(self.mid1(h))": "h = self.mid1(self.mid2(h))"})["UNet"]
    with pytest.raises(CheckFailed) as err:
        checks.check_unet(wrong)
    assert "first differs from labkit's at `mid2` (same shape" in str(err.value), str(err.value)
