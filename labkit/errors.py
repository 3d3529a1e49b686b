"""One exception type for every error a user should see as a single clear line.

The command line catches LabkitError and prints its message without a traceback; library callers
can catch it too. Bad arguments raise ValueError/TypeError subclasses of it, so ``except ValueError``
keeps working for code that expects the built-in types.
"""


class LabkitError(Exception):
    """An error with a message meant for a person: what went wrong and what to do."""


class LabkitValueError(LabkitError, ValueError):
    """A bad argument value (wrong range, unknown name, wrong shape)."""


class LabkitTypeError(LabkitError, TypeError):
    """A bad argument type (numpy array where a tensor is expected, wrong dtype)."""
