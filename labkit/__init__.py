"""labkit: the reference implementation behind the diffusion-model labs.

Import what you need by name, e.g. ``from labkit import schedules, diffusion, samplers``.
The modules form layers (errors and device at the bottom, the CLI at the top); the order is written
down once, in docs/architecture.md, and tests/test_layering.py enforces it.
"""

__version__ = "0.1.0"
