"""Lab 02's classes with one plausible mistake each, made from the instructor's solution by one edit:
``WRONG`` = [(class graded, {solution text: wrong text}, words the check's message must hold)]. Used by
tests/test_checks_lab02_modules.py and tests/mistake_suite.py."""

WRONG = [
    # (class graded, {solution text: wrong text}, words the message must hold)
    ("ConvBlock", {"return self.conv(F.silu(self.norm(x)))": "return self.conv(self.norm(F.silu(x)))"},
     "activation before the norm"),
    ("ConvBlock", {"return self.conv(F.silu(self.norm(x)))": "return self.conv(F.relu(self.norm(x)))"}, "ReLU"),
    ("ConvBlock", {"return self.conv(F.silu(self.norm(x)))": "return self.conv(F.silu(x))"}, "no normalisation"),
    ("ConvBlock", {"self.norm = nn.GroupNorm(groups, c_in)": "self.norm = nn.GroupNorm(1, c_in)"}, "1 group"),
    ("ConvBlock", {"self.norm = nn.GroupNorm(groups, c_in)": "self.norm = nn.GroupNorm(8, c_in)"},
     "divisible by num_groups"),
    ("ConvBlock", {"self.norm = nn.GroupNorm(groups, c_in)": "self.norm = nn.GroupNorm(c_in, groups)"},
     "in that order"),
    ("ConvBlock", {"self.norm = nn.GroupNorm(groups, c_in)": "self.norm = nn.BatchNorm2d(c_in)"}, "BatchNorm"),
    ("ConvBlock", {"nn.Conv2d(c_in, c_out, 3, padding=1)": "nn.Conv2d(c_in, c_out, 3)"}, "padding=1"),
    ("ConvBlock", {"self.norm = nn.GroupNorm(groups, c_in)\n        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)":
                   "self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)\n        self.norm = nn.GroupNorm(groups, c_out)"},
     "parameters do not match"),
    ("ResBlock", {"return self.shortcut(x) + self.block2(self.block1(x))": "return self.block2(self.block1(x))"},
     "missing residual"),
    ("ResBlock", {"return self.shortcut(x) + self.block2(self.block1(x))":
                  "return F.silu(self.shortcut(x) + self.block2(self.block1(x)))"}, "activation after the addition"),
    ("ResBlock", {"if c_in != c_out else nn.Identity()": ""}, "only when c_in != c_out"),
    ("ResBlock", {"self.shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()":
                  "self.shortcut = nn.Identity()"}, "shortcut"),
    ("Down", {"return self.downsample(h), h": "return h, self.downsample(h)"}, "wrong order"),
    ("Down", {"return self.downsample(h), h": "return self.downsample(h), self.downsample(h)"}, "before down-sampling"),
    ("Down", {"nn.Conv2d(c_out, c_out, 3, stride=2, padding=1) if downsample else nn.Identity()":
              "nn.AvgPool2d(2, ceil_mode=True) if downsample else nn.Identity()"}, "not pooling"),
    ("Down", {"stride=2, padding=1)": "stride=2)"}, "padding=1"),
    ("Up", {"h = upsample_merge(h, skip)": "h = torch.cat([F.interpolate(h, size=skip.shape[-2:]), skip][::-1], dim=1)"},
     "wrong order"),
    ("Up", {"h = upsample_merge(h, skip)": "h = torch.cat([F.interpolate(h, scale_factor=2), skip], dim=1)"},
     "exactly the skip's size"),
    ("Up", {"h = upsample_merge(h, skip)": "h = torch.cat([F.interpolate(h, size=skip.shape[-2:], mode='bilinear'), "
                                          "skip], dim=1)"}, "bilinear"),
    ("UNet", {"return F.pixel_shuffle(self.out(F.silu(self.out_norm(h))), self.patch)":
              "return F.pixel_shuffle(self.out(h), self.patch)"}, "without its GroupNorm and SiLU"),
    ("UNet", {"skip = saved.pop()": "skip = saved.pop(0)"}, "first-in-first-out"),
    ("UNet", {"return F.pixel_shuffle(self.out(F.silu(self.out_norm(h))), self.patch)":
              "return self.out(F.silu(self.out_norm(h)))"}, "pixel_shuffle"),
    ("UNet", {"        self.mid1 = ResBlock(chans[-1], chans[-1], groups)\n        self.mid2 = ResBlock(chans[-1], chans[-1], groups)\n": "",
              "h = self.mid2(self.mid1(h))": "pass"},
     "parameters do not match"),
    ("UNet", {"h = up(h, skip if self.skips else skip[:, :0])": "h = up(h, skip)"}, "skips=False"),
]



def wrong_class(name: str, edit: dict):
    from solution_code import solution_namespace

    return solution_namespace("lab02_unet", edit)[name]
