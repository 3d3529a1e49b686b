"""Where grading tasks run: the executors, in one place.

* ``LocalExecutor(jobs)``: a ``concurrent.futures.Executor`` of ``jobs`` spawned processes on this machine
  (``jobs`` = 1: calls run here, one after the other). A worker process that dies in the middle of a task
  (the out-of-memory killer, a crash in native code) fails that task alone: the executor notices it through
  the process's sentinel, answers that task's future with a ``WorkerDied`` error, starts a fresh worker and
  goes on, so every other task still gets its result. (``concurrent.futures.ProcessPoolExecutor`` does not:
  one dead worker breaks the whole pool, and every task still queued fails with it.)
* ``worker_pool(jobs)``: the same, as ``run(fn, list_of_arg_tuples)`` -> results in order (preparing the
  labs, feedback).
* ``connect(scheduler)``: a Dask ``distributed.Client`` (``local:N``: a LocalCluster of N worker processes
  here; otherwise the address of a scheduler). ``labkit.course.cluster`` drives it.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import tempfile
import threading
from collections import deque
from concurrent.futures import Executor, Future, as_completed

from labkit.errors import LabkitError

ALLOWED_FAILURES = 3  # worker deaths a task may see before Dask gives up on it (KilledWorker)
LOCAL_RE = re.compile(r"local:(\d+)")


class WorkerDied(Exception):
    """The process running a task ended before it answered."""


# --- on this machine ------------------------------------------------------------------------------------


class _Worker:
    def __init__(self, ctx):
        self.conn, child = ctx.Pipe()
        # a task's private course in a folder of its own, removed with the worker, even when it is killed in
        # the middle of a task
        self.scratch = tempfile.mkdtemp(prefix="labkit-worker-")
        # spawn, not fork: no copy of a process that may hold threads
        self.process = ctx.Process(target=_serve_tasks, args=(child, self.scratch), name="labkit-grader")
        self.process.start()
        child.close()
        self.task: Future | None = None


class LocalExecutor(Executor):
    """``submit(fn, *args, **kwargs)`` -> a ``concurrent.futures.Future``; at most ``jobs`` calls at a time,
    each in a spawned worker process (reused for the next call while it lives). An exception raised by a call
    becomes its future's exception; a worker that dies answers its call with ``WorkerDied`` and is replaced."""

    def __init__(self, jobs: int = 1):
        self.jobs = max(1, int(jobs))
        self._lock = threading.Lock()
        self._todo: deque = deque()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._idle: list[_Worker] = []
        self._busy: list[_Worker] = []
        if self.jobs > 1:
            import multiprocessing

            self._ctx = multiprocessing.get_context("spawn")
            self._wake_in, self._wake_out = self._ctx.Pipe(duplex=False)  # wakes the dispatcher

    def submit(self, fn, /, *args, **kwargs) -> Future:
        fut: Future = Future()
        if self.jobs == 1:  # here and now
            if fut.set_running_or_notify_cancel():
                try:
                    fut.set_result(fn(*args, **kwargs))
                except Exception as exc:
                    fut.set_exception(exc)
            return fut
        with self._lock:
            if self._closing:
                raise RuntimeError("cannot submit to a LocalExecutor after shutdown")
            self._todo.append((fut, fn, args, kwargs))
            if self._thread is None:
                self._thread = threading.Thread(target=self._dispatch, name="labkit-executor", daemon=True)
                self._thread.start()
        self._wake_out.send(None)
        return fut

    def _dispatch(self) -> None:
        """The dispatcher thread: hands calls to workers, answers futures, replaces dead workers."""
        from multiprocessing.connection import wait

        busy = self._busy
        while True:
            with self._lock:
                while self._todo and len(busy) < self.jobs:
                    fut, fn, args, kwargs = self._todo.popleft()
                    if not fut.set_running_or_notify_cancel():
                        continue
                    worker = self._idle.pop() if self._idle else _Worker(self._ctx)
                    try:
                        worker.conn.send((fn, args, kwargs))  # pickled whole before anything is written
                    except Exception as exc:  # an argument that does not pickle
                        fut.set_exception(exc)
                        self._idle.append(worker)
                        continue
                    worker.task = fut
                    busy.append(worker)
                if self._closing and not self._todo and not busy:
                    break
            ready = set(wait([self._wake_in] + [w.conn for w in busy] + [w.process.sentinel for w in busy]))
            if self._wake_in in ready:
                while self._wake_in.poll():
                    self._wake_in.recv()
            for worker in [w for w in busy if w.conn in ready or w.process.sentinel in ready]:
                busy.remove(worker)
                ok, value = self._answer(worker)
                if ok:
                    worker.task.set_result(value)
                else:
                    worker.task.set_exception(value)
        self._close_idle()

    def _answer(self, worker: _Worker):
        """``(ok, value)`` of the worker's task; a dead worker is replaced (never reused)."""
        try:
            if worker.conn.poll():
                ok, value = worker.conn.recv()
                self._idle.append(worker)
                return ok, value
        except (EOFError, OSError):
            pass
        worker.process.join(5)
        code = worker.process.exitcode
        worker.conn.close()
        shutil.rmtree(worker.scratch, ignore_errors=True)
        why = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        return False, WorkerDied(f"the grading process died ({why}; out of memory?)")

    def _close_idle(self) -> None:
        for worker in self._idle:
            with contextlib.suppress(OSError):
                worker.conn.send(None)
        for worker in self._idle:
            worker.process.join(10)
            if worker.process.is_alive():
                worker.process.terminate()
            worker.conn.close()
            shutil.rmtree(worker.scratch, ignore_errors=True)
        self._idle.clear()

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.shutdown(wait=True)
        else:  # Ctrl-C or an error in the caller: no waiting for the notebooks in flight
            self.shutdown(wait=False, cancel_futures=True)
            for worker in list(self._busy):
                with contextlib.suppress(Exception):
                    worker.process.terminate()
                    worker.process.join(5)
                shutil.rmtree(worker.scratch, ignore_errors=True)
        return False

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._closing = True
            if cancel_futures:
                while self._todo:
                    self._todo.popleft()[0].cancel()
            thread = self._thread
        if thread is None:
            return
        self._wake_out.send(None)
        if wait:
            thread.join()


WORKER_SCRATCH: str | None = None  # in a LocalExecutor's worker: its own folder (``task.grade_task`` uses it)


def _serve_tasks(conn, scratch: str) -> None:
    """A worker process: run ``(fn, args, kwargs)`` tasks until told to stop (None) or the parent is gone."""
    global WORKER_SCRATCH
    WORKER_SCRATCH = scratch  # (not tempfile.tempdir: the sandbox's and the channel's folders stay in /tmp)
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        fn, args, kwargs = task
        try:
            answer = (True, fn(*args, **kwargs))
        except Exception as exc:
            answer = (False, exc)
        try:
            conn.send(answer)
        except Exception as exc:  # a result or exception that does not pickle
            conn.send((False, RuntimeError(f"{type(exc).__name__}: {str(exc)[:300]}")))


@contextlib.contextmanager
def worker_pool(jobs: int):
    """``run(fn, list_of_arg_tuples, on_result=None)`` -> results in order; an exception raised by a call
    (or ``WorkerDied``) is returned in its place; ``on_result`` sees each result as it comes. ``jobs`` > 1:
    calls run in that many spawned processes (a ``LocalExecutor``)."""
    with LocalExecutor(jobs) as executor:

        def run(fn, arglist, on_result=None) -> list:
            futures = [executor.submit(fn, *args) for args in arglist]
            if on_result:
                for fut in as_completed(futures):
                    if fut.exception() is None:
                        on_result(fut.result())
            return [fut.exception() or fut.result() for fut in futures]

        yield run


# --- on a Dask cluster ----------------------------------------------------------------------------------


def connect(scheduler: str, timeout: str = "30s"):
    """``(client, cluster or None)``: a LocalCluster of N single-threaded worker processes for ``local:N``,
    otherwise a client of the scheduler at that address."""
    try:
        import dask
        from distributed import Client, LocalCluster
    except ImportError:
        raise LabkitError("grading on a Dask cluster needs dask.distributed: pip install 'labkit[cluster]'") from None
    m = LOCAL_RE.fullmatch(scheduler)
    if m:
        with dask.config.set({"distributed.scheduler.allowed-failures": ALLOWED_FAILURES}):
            cluster = LocalCluster(
                n_workers=int(m.group(1)),
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",
                silence_logs=logging.ERROR,
            )
            try:
                return Client(cluster), cluster
            except BaseException:
                cluster.close()
                raise
    try:
        return Client(scheduler, timeout=timeout), None
    except (OSError, TimeoutError) as exc:
        raise LabkitError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None


def dashboard_link(client) -> str | None:
    try:
        return client.dashboard_link or None
    except Exception:
        return None
