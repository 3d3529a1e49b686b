"""``GradingSettings``: how ``labkit grade`` grades, in one frozen value.

One value travels from the command line to every step that needs it (preparing a lab's course, grading a
submission locally or in a Dask task, writing feedback) instead of five loose arguments, and it is written
once into nbgrader's configuration (``configure``), which every course folder's ``nbgrader_config.py`` and
the repository's own call: the formgrader then grades with the same settings as ``labkit grade``.

``fingerprint()`` names the settings a score depends on; the cluster's manifest keeps it (with the lab's
source and the grading code), so that changing one of them grades every submission again, and changing one
that only shapes the report (``feedback``) does not.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace

from labkit.course.sources import DEFAULT_MEMORY_LIMIT_GB, DEFAULT_NOTEBOOK_TIMEOUT, DEFAULT_TIMEOUT


@dataclass(frozen=True)
class GradingSettings:
    """How each submission is graded.

    timeout           seconds per cell: a student's endless loop costs this much, then the cell fails
    notebook_timeout  seconds for the whole notebook (restarts included); the cells not run by then score 0
    memory_limit_gb   memory cap of each grading kernel (Linux RLIMIT_DATA); 0: none
    sandbox           run the student's kernel in the bubblewrap sandbox (False only for trusted notebooks)
    feedback          write each student's feedback page (does not change a score)
    """

    timeout: int = DEFAULT_TIMEOUT
    notebook_timeout: int = DEFAULT_NOTEBOOK_TIMEOUT
    memory_limit_gb: float = DEFAULT_MEMORY_LIMIT_GB
    sandbox: bool = True
    feedback: bool = True

    def __post_init__(self):
        # Normalised once, here: ``int``/``float``/``bool`` whatever a caller passed (a CLI string, None).
        object.__setattr__(self, "timeout", int(self.timeout))
        object.__setattr__(self, "notebook_timeout", int(self.notebook_timeout or 0))
        object.__setattr__(self, "memory_limit_gb", float(self.memory_limit_gb or 0))
        object.__setattr__(self, "sandbox", bool(self.sandbox))
        object.__setattr__(self, "feedback", bool(self.feedback))
        if self.timeout <= 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {self.timeout}")

    # The settings a score depends on, in the order (and form) the manifest has always hashed them, so that
    # a manifest written before this class existed stays valid with the default settings.
    def fingerprint(self) -> list:
        """What a result depends on among these settings (``feedback`` is not: it only writes pages)."""
        out = [self.timeout, self.memory_limit_gb, self.sandbox]
        if self.notebook_timeout != DEFAULT_NOTEBOOK_TIMEOUT:
            out.append(self.notebook_timeout)
        return out

    def with_(self, **changes) -> "GradingSettings":
        return replace(self, **changes)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def source(self) -> str:
        """This value as Python source, for a config file: only the fields that differ from the default."""
        default = GradingSettings()
        args = ", ".join(
            f"{f.name}={getattr(self, f.name)!r}"
            for f in fields(self)
            if getattr(self, f.name) != getattr(default, f.name)
        )
        return f"GradingSettings({args})"

    def configure(self, c, *, root=None, add_missing_cells: bool = True):
        """Apply these settings to a traitlets Config ``c`` (nbgrader's configuration); returns ``c``."""
        from labkit.course.nbgrader_setup import configure_nbgrader

        return configure_nbgrader(
            c,
            root=root,
            timeout=self.timeout,
            add_missing_cells=add_missing_cells,
            memory_limit_gb=self.memory_limit_gb,
            sandbox=self.sandbox,
            notebook_timeout=self.notebook_timeout,
        )
