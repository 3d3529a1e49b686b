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
import os
import sys
import threading
import warnings

from labkit.course import channel, wire
from labkit.course.exercises import GIVEN, LIBRARY_ANSWERS


def serve(namespace: dict, name: str, address: str, token: str, mode: str = "call") -> None:
    channel.kernel_exchange(address, token, lambda inputs: answer(namespace, name, inputs, mode))
    sys.stdout.flush()


def answer(namespace: dict, name: str, inputs: bytes, mode: str = "call") -> bytes:
    """The reply to one call, as bytes: ``namespace[name]`` run on the decoded ``inputs``; in mode "probe",
    the class ``namespace[name]`` built and run by ``labkit.checks._modules.probe`` on the grader's request."""
    reply: dict = {"status": "ok"}
    fn = namespace.get(name)
    if mode == "probe" and callable(fn):
        from labkit.checks._modules import probe

        cls = fn
        fn = lambda request: probe(cls, request)  # noqa: E731
    if fn is None:
        reply = {"status": "missing"}
    elif not callable(fn):
        reply = {"status": "not_callable", "type": f"{type(fn).__module__}.{type(fn).__qualname__}"}
    else:
        args, kwargs = wire.decode_call(inputs)
        out = None
        printed = io.StringIO()
        with (
            warnings.catch_warnings(record=True) as caught,
            contextlib.redirect_stderr(printed),
            contextlib.redirect_stdout(printed),
        ):
            warnings.simplefilter("always")
            seen = None
            try:
                with watch_library(name) as seen:
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
        reply["library"] = seen  # the dynamic review: data only, and only a hint (see watch_library)
    try:
        return wire.encode_reply(reply)
    except Exception as exc:  # e.g. a tensor that cannot be copied to the CPU
        return wire.encode_reply({"status": "unsendable", "message": f"{type(exc).__name__}: {str(exc)[:300]}"})


# --- the dynamic review: did this call run labkit's own answer? ---------------------------------------


@contextlib.contextmanager
def watch_library(graded: str):
    """Watch one call of the student's function ``graded`` and fill in ``{"ran": [...], "watched": bool}``:
    the exercise functions of labkit (``LIBRARY_ANSWERS``) it entered, however their names were spelled or
    reached (an alias, ``getattr``, ``sys.modules``, ``gc``...), since what is recognised is the function's
    code, by name and file. Counted: one called straight from code outside labkit, or labkit's function
    of the graded name at any depth. Not counted: labkit code calling its own functions (a U-Net's forward
    runs ``concat_skip``; a training step may run the model).

    ``sys.settrace`` with a global hook sees only function entries and returns None, so it costs
    one Python call per function call, and nothing per line. This runs in the student's kernel, which the
    student controls: ``watched`` is False when the hook was gone by the end of the call, and a reply
    saying nothing ran is a hint, never proof."""
    import labkit

    home = os.path.dirname(os.path.abspath(labkit.__file__))
    files = {}
    for name, module in LIBRARY_ANSWERS.items():
        path = os.path.join(home, *module.split(".")[1:]) + ".py"
        files.setdefault(name, set()).update({path, os.path.realpath(path)})
    seen = {"ran": [], "watched": True}

    def hook(frame, event, arg):
        code = frame.f_code
        owner = code.co_qualname.split(".")[0]  # a function's own name; a method's class
        if owner in files and code.co_filename in files[owner]:
            caller = frame.f_back.f_code.co_filename if frame.f_back is not None else ""
            outside = not (caller.startswith(home) or os.path.realpath(caller).startswith(home))
            if (outside or owner == graded) and len(seen["ran"]) < 20:
                what = f"{LIBRARY_ANSWERS[owner]}.{owner}"
                if what not in seen["ran"] and what not in GIVEN.get(graded, ()):
                    seen["ran"].append(what)
        return None  # no line-by-line tracing

    before, before_threads = sys.gettrace(), threading.gettrace()
    sys.settrace(hook)
    threading.settrace(hook)
    try:
        yield seen
    finally:
        seen["watched"] = sys.gettrace() is hook
        sys.settrace(before)
        threading.settrace(before_threads)
