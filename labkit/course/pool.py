"""Run grading tasks one by one or in a pool of spawned processes, never stopping on one failure.

A worker process that dies in the middle of a task (the out-of-memory killer, a crash in native code)
fails that task alone: the pool notices it through the process's sentinel, answers that task with a
``WorkerDied`` error, starts a fresh worker and goes on, so every other task still gets its result.
(``concurrent.futures.ProcessPoolExecutor`` does not: one dead worker breaks the whole pool, and every
task still queued fails with it.)
"""

from __future__ import annotations

import contextlib
from collections import deque


class WorkerDied(Exception):
    """The process running a task ended before it answered."""


@contextlib.contextmanager
def worker_pool(jobs: int):
    """``run(fn, list_of_arg_tuples, on_result=None)`` -> results in order; an exception raised by a call
    (or ``WorkerDied``) is returned in its place. ``jobs`` > 1: calls run in that many spawned processes."""
    if jobs == 1:

        def run(fn, arglist, on_result=None):
            out = []
            for args in arglist:
                try:
                    out.append(fn(*args))
                except Exception as exc:
                    out.append(exc)
                if on_result and not isinstance(out[-1], BaseException):
                    on_result(out[-1])
            return out

        yield run
        return
    pool = _Pool(jobs)
    try:
        yield pool.run
    finally:
        pool.close()


class _Worker:
    def __init__(self, ctx):
        self.conn, child = ctx.Pipe()
        # spawn, not fork: no copy of a process that may hold threads
        self.process = ctx.Process(target=_serve_tasks, args=(child,), name="labkit-grader")
        self.process.start()
        child.close()
        self.task: int | None = None


class _Pool:
    def __init__(self, jobs: int):
        import multiprocessing

        self._ctx = multiprocessing.get_context("spawn")
        self._jobs = jobs
        self._idle: list[_Worker] = []

    def run(self, fn, arglist, on_result=None) -> list:
        from multiprocessing.connection import wait

        results: list = [None] * len(arglist)
        todo, busy = deque(range(len(arglist))), []
        while todo or busy:
            while todo and len(busy) < self._jobs:
                worker = self._idle.pop() if self._idle else _Worker(self._ctx)
                worker.task = todo.popleft()
                worker.conn.send((fn, arglist[worker.task]))
                busy.append(worker)
            ready = set(wait([w.conn for w in busy] + [w.process.sentinel for w in busy]))
            for worker in [w for w in busy if w.conn in ready or w.process.sentinel in ready]:
                busy.remove(worker)
                i, (ok, value) = worker.task, self._answer(worker)
                results[i] = value
                if ok and on_result:
                    on_result(value)
        return results

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
        why = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        return False, WorkerDied(f"the grading process died ({why}; out of memory?)")

    def close(self) -> None:
        for worker in self._idle:
            with contextlib.suppress(OSError):
                worker.conn.send(None)
        for worker in self._idle:
            worker.process.join(10)
            if worker.process.is_alive():
                worker.process.terminate()
            worker.conn.close()
        self._idle.clear()


def _serve_tasks(conn) -> None:
    """A worker process: run ``(fn, args)`` tasks until told to stop (None) or the parent is gone."""
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        fn, args = task
        try:
            answer = (True, fn(*args))
        except Exception as exc:
            answer = (False, exc)
        try:
            conn.send(answer)
        except Exception as exc:  # a result or exception that does not pickle
            conn.send((False, RuntimeError(f"{type(exc).__name__}: {str(exc)[:300]}")))
