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


def one_line(text, limit: int = 300) -> str:
    """``text`` (e.g. ``str(exc)`` of a library's multi-line error) as one line for a LabkitError message.

    Whitespace runs become one space. Text longer than ``limit`` is shortened at a word boundary and ends in
    " [...]", so a message never stops in the middle of a word.
    """
    text = " ".join(str(text).split())
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit)
    return text[: cut if cut > 0 else limit] + " [...]"
