"""labkit: the reference implementation behind the diffusion-model labs.

Import what you need by name, e.g. ``from labkit import schedules, diffusion, samplers``.
Modules, lowest first (each imports only from those above it):

    schedules -> embeddings -> diffusion -> unet -> guidance -> samplers -> data -> training
    -> evaluation -> plotting / widgets -> checks -> course -> cli
"""

__version__ = "0.1.0"
