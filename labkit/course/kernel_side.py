"""The kernel's half of a graded call: run one of the student's functions on the grader's inputs.

While grading, the grader never sends a test cell to the student's kernel. It runs the test cell itself
and, each time a check calls the student's function, asks the kernel to run

    serve(globals(), "q_sample", "/tmp/lkc-.../<name>.sock", "<this call's token>")

which connects to the grader's socket (``labkit.course.channel``: a folder the kernel can only read), gets
the inputs, calls the function, and sends back only data (``wire.encode_reply``): the
result, or the exception's type and message, and the state of each argument afterwards (so that the
grader can see in-place edits and what a training step did to a model). Nothing here decides a grade:
code in the student's kernel can replace this module, and then it only loses the student's points.
"""

from __future__ import annotations

import contextlib
import io
import sys
import warnings

from labkit.course import channel, wire


def serve(namespace: dict, name: str, address: str, token: str) -> None:
    channel.kernel_exchange(address, token, lambda inputs: answer(namespace, name, inputs))
    sys.stdout.flush()


def answer(namespace: dict, name: str, inputs: bytes) -> bytes:
    """The reply to one call, as bytes: ``namespace[name]`` run on the decoded ``inputs``."""
    reply: dict = {"status": "ok"}
    fn = namespace.get(name)
    if fn is None:
        reply = {"status": "missing"}
    elif not callable(fn):
        reply = {"status": "not_callable", "type": f"{type(fn).__module__}.{type(fn).__qualname__}"}
    else:
        args, kwargs = wire.decode_call(inputs)
        out = None
        printed = io.StringIO()
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stderr(printed), \
                contextlib.redirect_stdout(printed):
            warnings.simplefilter("always")
            try:
                out = fn(*args, **kwargs)
            except NotImplementedError:
                reply = {"status": "not_implemented"}
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # SystemExit too: the student's function must not end the kernel
                reply = {"status": "raised", "type": type(exc).__name__[:100], "message": str(exc)[:2000]}
        reply["warnings"] = [f"{w.category.__name__}: {str(w.message)[:300]}" for w in caught[:3]]
        reply["printed"] = printed.getvalue()[:5000]  # shown under the test, as when the student runs it
        if reply["status"] == "ok":
            reply["result"] = out
        reply["after"] = [wire.state_of(a) for a in args]
    try:
        return wire.encode_reply(reply)
    except Exception as exc:  # e.g. a tensor that cannot be copied to the CPU
        return wire.encode_reply({"status": "unsendable", "message": f"{type(exc).__name__}: {str(exc)[:300]}"})
