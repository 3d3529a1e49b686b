"""Check for lab 00 (setup): the one warm-up exercise. Reference: ``labkit.data.to_unit_range``.

check_to_unit_range(fn)   [-1, 1] (the model's range) -> [0, 1] (what a picture shows)
"""

from __future__ import annotations

import torch

from labkit import data
from labkit.checks._common import call, compare, expect_tensor, generator, passed


def check_to_unit_range(student_fn, *, seed: int = 0, sizes=((4, 1, 28, 28), (7,))) -> None:
    """student_fn(x in [-1, 1], any shape) -> (x + 1) / 2 in [0, 1], same shape."""
    name = "check_to_unit_range"
    g = generator(seed)
    for shape in sizes:
        x = torch.rand(*shape, generator=g) * 2 - 1
        x.view(-1)[0] = -1.0
        out = expect_tensor(name, call(name, student_fn, x, names=["x"]), tuple(shape))
        mistakes = {
            "x / 2 maps [-1, 1] to [-0.5, 0.5]: shift the range up by 1 first, then halve it": x / 2,
            "x + 1 maps [-1, 1] to [0, 2]: also divide by 2": x + 1,
            "x / 2 + 1 maps [-1, 1] to [0.5, 1.5]: add 1 before dividing, not after": x / 2 + 1,
            "x * 2 - 1 is the opposite direction ([0, 1] -> [-1, 1])": x * 2 - 1,
            "clamping is not a rescaling: shift the range, then shrink it": x.clamp(0, 1),
            "operator precedence: x + 1 / 2 is x + 0.5, because / binds before +; the shift must happen "
            "before the division, so put it in parentheses": x + 0.5,
            "(x - 1) / 2 maps [-1, 1] to [-1, 0]: shift up by 1, not down": (x - 1) / 2,
            "(x + 1) * 2 maps [-1, 1] to [0, 4]: divide by the width of the range, 2": (x + 1) * 2,
            "the range was shifted by 0.5 only: -1 must land on 0, so add 1 before dividing by 2": (x + 0.5) / 2,
            "rescaled by the data's own min and max: the map from [-1, 1] to [0, 1] is fixed, whatever the values": (
                x - x.min()
            )
            / (x.max() - x.min()),
            "// is floor division (every value becomes 0 or 1): divide with /": torch.div(
                x + 1, 2, rounding_mode="floor"
            ),
        }
        compare(
            name,
            out,
            data.to_unit_range(x.double()),
            mistakes,
            tol=1e-6,
            context=f" for shape {list(shape)}",
            reference=data.to_unit_range,
            args=(x,),
        )
    passed(name, f"{len(sizes)} shapes, seed {seed}")
