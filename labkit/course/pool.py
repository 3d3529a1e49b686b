"""Run grading tasks one by one or in a pool of spawned processes, never stopping on one failure."""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def worker_pool(jobs: int):
    """``run(fn, list_of_arg_tuples, on_result=None)`` -> results in order; an exception raised by a call
    is returned in its place. ``jobs`` > 1: calls run in that many spawned processes."""
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
    import concurrent.futures
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")  # no fork of a process that may hold threads
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=ctx) as pool:
        def run(fn, arglist, on_result=None):
            futures = [pool.submit(fn, *args) for args in arglist]
            for fut in concurrent.futures.as_completed(futures):
                if on_result and fut.exception() is None:
                    on_result(fut.result())
            return [f.exception() if f.exception() is not None else f.result() for f in futures]

        yield run
