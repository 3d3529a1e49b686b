"""Grading where the student's code cannot reach the verdict.

nbgrader executes a submission cell by cell in a kernel. labkit's executor (``TrustedExecute``, used in
place of nbgrader's ``Execute``) changes two things:

* the kernel runs in a sandbox (``labkit.course.sandbox``) holding none of the course's files;
* **test cells never run in the student's kernel.** The grader runs each one itself, in its own process,
  with the real ``labkit.checks`` module of the lab. Where a check calls the student's function, the
  grader sends the inputs it chose to the kernel (over its own socket, ``labkit.course.channel``: nothing
  passes through the student's folder), the kernel runs the student's function on them and
  sends back data only (``labkit.course.wire``), and the comparison against the reference happens here.
  Whatever the student's code patched in its kernel (``checks``, ``torch.Tensor.item``, builtins,
  ``sys.modules``), it patched a kernel that decides nothing. Hidden tests' source and reference values
  never enter the kernel (their inputs do, so their seeds are drawn anew for every graded notebook:
  ``labkit.course.hidden_seeds``); the test cell's outputs are written by the grader: the check's one-line
  verdict, or its ``CheckFailed`` message with no traceback.

A student working in Jupyter or Colab runs the same checks in their own kernel and sees the same
messages: only the grading path differs.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import importlib
import io
import re
import time
import warnings

MAX_OUTPUT_CHARS = 200_000  # per student cell; the rest is dropped (a cell printing gigabytes)
REPLY_GRACE_SECONDS = 10.0  # after the kernel says a call is done, the most the grader waits for its reply

_TRUSTED_EXECUTE = None

# A test cell's outcome, as data (cell.metadata["labkit"]["outcome"]["status"]), from the error it ended with.
OUTCOMES = {
    "CheckFailed": "failed",
    "AssertionError": "failed",
    "CellTimeoutError": "timed out",
    "DeadKernelError": "kernel died",
    "NotImplementedError": "not implemented",
}


class _StudentNames(dict):
    """The namespace a test cell runs in on the grader's side: ``checks`` is the real module; any other
    unknown name is one of the student's functions, reached in the kernel through ``RemoteFunction``."""

    def __init__(self, executor, checks_module):
        super().__init__(checks=checks_module)
        self._executor = executor

    def __missing__(self, key):
        if hasattr(builtins, key):
            raise KeyError(key)  # fall through to the builtins
        return RemoteFunction(self._executor, key)


def hidden_seeds_for(nb, config) -> tuple[bytes, str]:
    """(the course's secret, a new run id) for one graded notebook; the run id goes into the notebook's
    metadata, so that the same hidden inputs can be drawn again (``labkit.course.hidden_seeds``)."""
    import secrets

    from labkit.course.hidden_seeds import course_secret

    root = (config.get("CourseDirectory") or {}).get("root")
    secret = course_secret(root) if root else secrets.token_hex(32).encode()  # no course: seeds never replayed
    run = secrets.token_hex(8)
    nb.metadata.setdefault("labkit", {})["hidden_seed_run"] = run
    return secret, run


class RemoteFunction:
    """Stands for the student's function ``name``: calling it runs it in the student's kernel."""

    def __init__(self, executor, name: str):
        self._executor, self.__name__ = executor, name

    def __call__(self, *args, **kwargs):
        return self._executor.remote_call(self.__name__, args, kwargs)

    def _labkit_probe(self, request: dict):
        """For a module check: build the student's class ``name`` in the kernel, load the grader's weights, run
        it on the grader's inputs (``labkit.checks._modules.probe``); only data comes back."""
        return self._executor.remote_call(self.__name__, (request,), {}, mode="probe")

    def __repr__(self) -> str:
        return f"<the student's {self.__name__}>"


def _check_failed():
    from labkit.checks._common import CheckFailed

    return CheckFailed


class RemoteTimeout(Exception):
    """The student's function did not return in time (reported like a timed-out cell)."""


class RemoteDied(Exception):
    """The kernel died while running the student's function (reported like a dead kernel)."""


def _exception_type(name: str) -> type:
    """An exception class named like the one the student's function raised (for the checks' hints)."""
    clean = re.sub(r"\W", "", name)[:80] or "Exception"
    if clean == "NotImplementedError":
        return NotImplementedError
    return type(clean if clean[0].isalpha() else "E" + clean, (Exception,), {})


def _as_check_failure(exc: Exception) -> Exception:
    """``exc`` as a CheckFailed too, so that the checks' ``call`` passes it through unchanged."""
    cls = type(type(exc).__name__, (type(exc), _check_failed()), {})
    return cls(str(exc))


def apply_after(args: tuple, after) -> None:
    """Bring the grader's copies of the arguments to the state the student's function left them in, so that
    the checks see in-place edits (tensors), a training step's effect (a module's parameters) and what
    small helper objects recorded (``_labkit_apply``)."""
    import torch

    from labkit.checks._common import CheckFailed

    if not isinstance(after, (list, tuple)):
        return
    for arg, state in zip(args, after):
        if isinstance(arg, torch.Tensor):
            if not isinstance(state, torch.Tensor):
                continue
            if tuple(state.shape) != tuple(arg.shape) or state.dtype != arg.dtype:
                raise CheckFailed(
                    "your function changed the shape or dtype of one of its inputs in place; "
                    "compute a new tensor instead"
                )
            if "meta" in (arg.device.type, state.device.type):  # a device probe's input: shapes only, no values
                continue
            if not torch.equal(state, arg.detach().cpu()):
                with torch.no_grad():
                    arg.copy_(state)
        elif isinstance(arg, torch.nn.Module) and isinstance(state, dict):
            current = arg.state_dict()
            if set(state) != set(current) or any(
                not isinstance(state[k], torch.Tensor) or state[k].shape != current[k].shape for k in current
            ):
                raise CheckFailed("the model's parameters changed names or shapes inside your function")
            with torch.no_grad():
                for k, v in current.items():
                    v.copy_(state[k])
        else:
            apply = getattr(type(arg), "_labkit_apply", None)
            if callable(apply):
                apply(arg, state)


def clear_ipc_paths(km) -> list[str]:
    """Before every start of a sandboxed kernel (restarts too), remove whatever sits at its unix-socket paths
    (``<ip>-<port>`` in the student's work folder): a link the student's code planted there would otherwise
    lead the grader's connection to another socket of the host. ``os.unlink`` removes a link itself, never its
    target. Nothing of the student's runs between this and the new kernel binding fresh sockets there (the
    old kernel's processes ended with its sandbox, and no cell runs before the grader has connected).
    Returns the paths removed."""
    import os

    if getattr(km, "transport", "tcp") != "ipc":
        return []
    removed = []
    for port in (km.shell_port, km.iopub_port, km.stdin_port, km.control_port, km.hb_port):
        if port:
            path = f"{km.ip}-{port}"
            try:
                os.unlink(path)
                removed.append(path)
            except OSError:  # nothing there, or a folder: then the kernel cannot bind and fails its own start
                pass
    return removed


def trusted_execute_class(base):
    """The executor class, built on ``base`` (``nbgrader_setup.guarded_execute_class()``: kernel restarts,
    memory cap); created on first use, since importing nbgrader's preprocessors is slow."""
    global _TRUSTED_EXECUTE
    if _TRUSTED_EXECUTE is not None:
        return _TRUSTED_EXECUTE
    from queue import Empty

    from jupyter_client.manager import AsyncKernelManager
    from jupyter_core.utils import ensure_async, run_sync
    from nbformat.notebooknode import NotebookNode
    from traitlets import Any, Bool, Integer, Unicode

    from labkit.course import channel, sandbox, wire
    from labkit.course.review import dynamic_finding
    from labkit.course.hidden_seeds import passes_with_library, reseed_hidden_tests

    class SandboxKernelManager(AsyncKernelManager):
        box = Any(None, allow_none=True)

        def format_kernel_cmd(self, extra_arguments=None):
            clear_ipc_paths(self)
            cmd = super().format_kernel_cmd(extra_arguments)
            # the connection file is the grader's: hand it to the kernel's user (nobody, when grading as root)
            return self.box.wrap(cmd, give=(self.connection_file,)) if self.box is not None else cmd

        async def interrupt_kernel(self):
            """Interrupt through the kernel's control channel: a SIGINT to the process group would reach
            bubblewrap itself, which ends the whole sandbox instead of interrupting the cell."""
            if self.box is None:
                return await super().interrupt_kernel()
            msg = self.session.msg("interrupt_request", content={})
            self._connect_control_socket()
            self.session.send(self._control_socket, msg)

    class TrustedExecute(base):
        sandbox = Bool(True, help="run the student's kernel in the bubblewrap sandbox").tag(config=True)
        checks_module = Unicode("", help="module that test cells call `checks` (default labkit.checks.<lab>)").tag(
            config=True
        )
        max_output_chars = Integer(MAX_OUTPUT_CHARS, help="characters of output kept per cell").tag(config=True)

        def preprocess(self, nb, resources=None, km=None):
            resources = resources or {}
            lab = (resources.get("nbgrader") or {}).get("assignment") or ""
            name = self.checks_module or f"labkit.checks.{lab}"
            try:
                self._checks = importlib.import_module(name)
            except ImportError:
                self._checks = None
            here = (resources.get("metadata") or {}).get("path")
            self._box = sandbox.Sandbox.create(
                here,
                limits=sandbox.Limits(data_gb=self.memory_limit_gb or 0, total_gb=(self.memory_limit_gb or 4) * 1.5),
            )
            # the graded calls' line: a socket in a folder of the grader's, which the sandbox sees read-only
            self._channel = channel.Channel()
            self._box = dataclasses.replace(self._box, extra_ro=self._box.extra_ro + (str(self._channel.folder),))
            self._calls, self._dead, self._out_chars = 0, False, {}
            self._seeds = hidden_seeds_for(nb, self.config)  # (secret, run): this notebook's hidden inputs
            km = SandboxKernelManager(kernel_name=self.kernel_name or "python3", config=self.config)
            if self.sandbox:
                km.box = self._box
                km.transport = "ipc"  # unix sockets in the shared work folder: the sandbox has no network
                km.ip = str(self._box.workdir / "kernel")
            # the kernel only reads its connection file: it lives in the grader's folder, so that a kernel
            # restart never writes where the student could have left a link
            km.connection_file = str(self._channel.folder / "kernel.json")
            if resources.get("metadata") is not None:
                resources["metadata"]["path"] = str(self._box.workdir)  # the kernel's working folder
            try:
                return super().preprocess(nb, resources, km)
            finally:
                with contextlib.suppress(Exception):
                    if km.has_kernel:
                        run_sync(km.shutdown_kernel)(now=True)
                self._box.cleanup()
                self._channel.close()

        def preprocess_cell(self, cell, resources, index):
            if self.out_of_time(cell, index):  # the notebook's time is up (GuardedExecute.notebook_timeout)
                return cell, self.resources
            md = cell.metadata.get("nbgrader", {}) if cell.cell_type == "code" else {}
            if md.get("grade") and not md.get("solution"):
                return self._judge(cell, index), self.resources
            return super().preprocess_cell(cell, resources, index)

        def output(self, outs, msg, display_id, cell_index):
            content = msg.get("content", {})
            size = len(content.get("text", "")) + sum(len(str(v)) for v in (content.get("data") or {}).values())
            used = self._out_chars.get(cell_index, 0)
            self._out_chars[cell_index] = used + size
            if used + size > self.max_output_chars:
                if used <= self.max_output_chars:
                    outs.append(
                        NotebookNode(
                            output_type="stream",
                            name="stdout",
                            text=f"\n[output cut: more than {self.max_output_chars:,} characters]\n",
                        )
                    )
                return None
            return super().output(outs, msg, display_id, cell_index)

        # --- test cells: run here ------------------------------------------------------------------

        def _judge(self, cell, index):
            from labkit.checks._common import CheckFailed

            self._skip.add(index)  # never replayed in the kernel after a restart
            self._library = []  # what each call of this cell ran of labkit (review.dynamic_finding)
            printed, error = io.StringIO(), None
            outcome: dict = {}  # what the class report counts: the check and the named mistake, when known
            if self._checks is None:
                error = ("CheckFailed", "the grader found no checks for this lab")
            else:
                names = _StudentNames(self, self._checks)
                scope = {"__builtins__": builtins, "__name__": "__labkit_test__"}
                gid = (cell.metadata.get("nbgrader") or {}).get("grade_id") or str(index)
                source = reseed_hidden_tests(cell.source, *self._seeds, gid, passes_with_library(self._checks))
                try:
                    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
                        with warnings.catch_warnings():  # the grader's own sockets, collected mid-cell, are
                            warnings.simplefilter("ignore", ResourceWarning)  # not the student's output
                            exec(compile(source, "<test cell>", "exec"), scope, names)
                except RemoteTimeout as exc:
                    error = ("CellTimeoutError", str(exc))
                except RemoteDied as exc:
                    error = ("DeadKernelError", str(exc))
                except CheckFailed as exc:
                    error = ("CheckFailed", str(exc))
                    outcome.update(
                        check=getattr(exc, "check", None),
                        mistake=getattr(exc, "mistake", None),
                        status=getattr(exc, "outcome", None),
                    )
                except AssertionError as exc:
                    error = ("AssertionError", str(exc))
                except Exception as exc:
                    error = (type(exc).__name__, str(exc))
            outputs = []
            if printed.getvalue():
                outputs.append(NotebookNode(output_type="stream", name="stdout", text=printed.getvalue()))
            if error:
                ename, evalue = error
                outputs.append(
                    NotebookNode(output_type="error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"])
                )
            cell.outputs = outputs
            if error:
                outcome["status"] = outcome.get("status") or OUTCOMES.get(error[0], "error")
            else:
                outcome["status"] = "passed"
            if error:
                outcome["message"] = str(error[1]).splitlines()[0][:500] if error[1] else error[0]
            cell.metadata["labkit"] = {"outcome": {k: v for k, v in outcome.items() if v is not None}}
            if self._library:
                cell.metadata["labkit"]["library"] = self._library[:20]  # read by review.dynamic_notes
            # a count like the kernel's: the cell did run (in the grader), one after the cell above it
            counts = [c.get("execution_count") or 0 for c in self.nb.cells[:index] if c.cell_type == "code"]
            cell.execution_count = max(counts, default=0) + 1
            if self._dead:
                self._dead = False
                self._recover(index)
            return cell

        def remote_call(self, name: str, args: tuple, kwargs: dict, mode: str = "call"):
            from labkit.checks._common import CheckFailed

            if self._dead:
                raise CheckFailed(
                    "the kernel had to be restarted earlier in this test cell: your function was not run again"
                )
            self._calls += 1
            call = self._channel.call(
                wire.encode_call(args, kwargs), (self.timeout or 120) + self.responsive_timeout + 30
            )
            code = (
                f"__import__('labkit.course.kernel_side', fromlist=['serve']).serve(globals(), {name!r}, "
                f"{self._channel.address!r}, {call.token!r}" + (f", {mode!r})" if mode != "call" else ")")
            )
            try:
                with warnings.catch_warnings():  # the grader's own (zmq sockets collected...) are not the student's
                    warnings.simplefilter("ignore")
                    status = run_sync(self._remote)(code, self.timeout or 120)
                if status == "timeout":
                    raise _as_check_failure(
                        RemoteTimeout(
                            f"your function `{name}` did not finish within {self.timeout} s (an endless loop?)"
                        )
                    )
                if status == "dead":
                    self._dead = True
                    raise _as_check_failure(
                        RemoteDied(f"the kernel died while running your function `{name}` (it exited or crashed)")
                    )
                try:
                    data = call.reply(grace=REPLY_GRACE_SECONDS)
                    if data is None:
                        raise CheckFailed(
                            f"your notebook's kernel did not run `{name}` for the grader (did the "
                            "notebook replace labkit, `globals` or `__import__`?)"
                        )
                    reply = wire.decode_reply(data)
                except wire.WireError as exc:
                    raise CheckFailed(f"the result of `{name}` could not be read: {exc}") from None
            finally:
                call.cancel()
            if not isinstance(reply, dict):
                raise CheckFailed(f"the result of `{name}` could not be read")
            self._library.append(dynamic_finding(name, reply))
            state = reply.get("status")
            printed = str(reply.get("printed") or "")
            if printed:
                print(
                    printed[:4000] + ("\n[...]" if len(printed) > 4000 else ""),
                    end="" if printed.endswith("\n") else "\n",
                )
            for w in (reply.get("warnings") or [])[:3]:
                print(f"note: your function warned: {str(w)[:300]}")
            if state == "missing":
                raise CheckFailed(
                    f"`{name}` is not defined when this test runs: run the cell that defines it, "
                    "and keep the function's name"
                )
            if state == "not_callable":
                raise CheckFailed(f"`{name}` should be a function, but it is a {str(reply.get('type'))[:100]}")
            if state == "not_implemented":
                raise NotImplementedError()
            if state == "raised":
                raise _exception_type(str(reply.get("type")))(str(reply.get("message"))[:2000])
            if state != "ok":
                raise CheckFailed(f"the result of `{name}` could not be sent back: {str(reply.get('message'))[:300]}")
            apply_after(args, reply.get("after"))
            return reply.get("result")

        async def _remote(self, code: str, timeout: float) -> str:
            """Run ``code`` silently in the kernel: "ok", "error", "timeout" (interrupted) or "dead"."""
            msg_id = await ensure_async(
                self.kc.execute(code, silent=True, store_history=False, stop_on_error=False, allow_stdin=False)
            )
            deadline = time.monotonic() + timeout
            interrupted = False
            while True:
                await self._drain_iopub()
                left = deadline - time.monotonic()
                if left <= 0:
                    if interrupted:
                        self._dead = True  # it ignores interrupts: restart it after this cell
                        return "timeout"
                    interrupted = True
                    with contextlib.suppress(Exception):
                        await ensure_async(self.km.interrupt_kernel())
                    deadline = time.monotonic() + self.responsive_timeout
                    continue
                try:
                    msg = await ensure_async(self.kc.shell_channel.get_msg(timeout=min(left, 0.5)))
                except Empty:
                    if not await ensure_async(self.kc.is_alive()):
                        return "dead"
                    continue
                if msg["parent_header"].get("msg_id") == msg_id:
                    if interrupted:
                        return "timeout"
                    return "ok" if msg["content"].get("status") == "ok" else "error"

        async def _drain_iopub(self) -> None:
            """Discard what the kernel printed while serving the grader (never shown, never kept)."""
            for _ in range(10_000):
                try:
                    await ensure_async(self.kc.iopub_channel.get_msg(timeout=0))
                except Empty:
                    return

    _TRUSTED_EXECUTE = TrustedExecute
    return TrustedExecute
