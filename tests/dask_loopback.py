"""A real Dask cluster on loopback for the tests: a ``dask scheduler`` process and ``dask worker`` processes
(each with its nanny, which starts a fresh worker when one is killed), started and stopped by the test.

Workers import labkit from this checkout (PYTHONPATH), and the tests folder too (``cluster_fakes``).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DASK = str(Path(sys.executable).with_name("dask"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LoopbackCluster:
    """``with LoopbackCluster(tmp, workers=2, env={...}) as lc: lc.address``; ``lc.client`` watches it."""

    def __init__(self, folder: Path, workers: int = 2, env: dict | None = None, allowed_failures: int = 3):
        self.folder, self.n, self.procs = Path(folder), workers, []
        self.address = f"tcp://127.0.0.1:{free_port()}"
        self.env = {**os.environ, **(env or {}),
                    "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]),
                    "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": str(allowed_failures),
                    "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
        self.client = None

    def _start(self, name: str, *args: str) -> None:
        log = open(self.folder / f"{name}.log", "wb")
        self.procs.append(subprocess.Popen([DASK, *args], env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True, cwd=str(self.folder)))
        log.close()

    def __enter__(self) -> "LoopbackCluster":
        from distributed import Client

        self.folder.mkdir(parents=True, exist_ok=True)
        port = self.address.rsplit(":", 1)[1]
        self._start("scheduler", "scheduler", "--host", "127.0.0.1", "--port", port, "--no-dashboard")
        for i in range(self.n):
            self._start(f"worker{i}", "worker", self.address, "--nthreads", "1", "--nworkers", "1",
                        "--no-dashboard", "--name", f"w{i}", "--local-directory", str(self.folder / f"w{i}"))
        try:
            self.client = Client(self.address, timeout="60s")
            self.wait_for_workers()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def wait_for_workers(self, n: int | None = None, within: float = 120) -> None:
        self.client.wait_for_workers(n or self.n, timeout=within)

    def worker_pid(self, address: str) -> int:
        return self.client.run(os.getpid, workers=[address])[address]

    def kill_worker(self, address: str, within: float = 60) -> int:
        """SIGKILL the worker process at ``address`` (its nanny starts another) and wait until the
        scheduler has removed it. Returns its pid."""
        pid = self.worker_pid(address)
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: address not in self.client.scheduler_info()["workers"], within,
                   f"the scheduler still lists {address}")
        return pid

    def __exit__(self, *exc) -> None:
        if self.client is not None:
            self.client.close()
        for p in reversed(self.procs):
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in reversed(self.procs):
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def wait_until(cond, within: float, what: str, every: float = 0.1) -> None:
    end = time.monotonic() + within
    while not cond():
        if time.monotonic() > end:
            raise TimeoutError(what)
        time.sleep(every)
