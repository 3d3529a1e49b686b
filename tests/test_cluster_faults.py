"""Exactly once under worker loss (issue 27, item 3), on a real ``dask scheduler`` and two ``dask worker``
processes on loopback started here, each failure injected at a chosen point:

1. a worker SIGKILLed while it computes a submission (its first run blocks until it is killed);
2. a worker SIGKILLed after it computed a submission and before the client fetched the result: once while the
   client is fetching it, once before the client looked at it (the future is then "lost": the case that
   left "failed, not graded: unknown" and exit 1 while the scheduler recomputed it elsewhere);
3. the client SIGKILLed between a gradebook commit and its manifest line, then started again.

Every submission must end merged exactly once (one merge, one manifest line, one gradebook record), nothing
merged is computed again, and no result is "failed". The task is ``cluster_fakes.fake_grade_task`` (no
kernel, no nbgrader course), so this costs about half a minute; tests/test_cluster.py grades real notebooks
on a LocalCluster, and ``test_labkit_grade_survives_worker_loss`` below does it on this cluster (slow).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("distributed", reason="dask.distributed (pip install 'labkit[cluster]')")
pytestmark = pytest.mark.slow  # 10-25 s each (processes on loopback), about a minute for the module

import cluster_fakes  # noqa: E402  (tests/ is on sys.path: pytest's rootdir conftest)
from cluster_fakes import LAB  # noqa: E402
from dask_loopback import LoopbackCluster, wait_until  # noqa: E402
from labkit.course import cluster  # noqa: E402

TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def loopback(tmp_path_factory):
    log = tmp_path_factory.mktemp("fake-log")
    with LoopbackCluster(tmp_path_factory.mktemp("loopback"), workers=2, env={"LABKIT_FAKE_LOG": str(log)}) as lc:
        lc.log = log
        yield lc


@pytest.fixture
def fakes(loopback, monkeypatch, tmp_path):
    monkeypatch.setenv("LABKIT_FAKE_LOG", str(loopback.log))
    cluster_fakes.install_client_fakes(monkeypatch.setattr, tmp_path / "merges.log")
    loopback.wait_for_workers()  # a killed worker's nanny has started its successor
    return loopback


def _merges(folder: Path) -> list[str]:
    path = folder / "merges.log"
    return path.read_text().splitlines() if path.exists() else []


def _manifest(folder: Path) -> list[dict]:
    path = folder / "out" / cluster.MANIFEST_NAME
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def assert_exactly_once(folder: Path, students: dict, results) -> None:
    names = sorted(students)
    assert sorted(_merges(folder)) == [f"{LAB} {s}" for s in names]  # merged once each, across every run
    assert sorted(m["student"] for m in _manifest(folder)) == names
    merged = cluster.merged_in_gradebook(folder / "out" / "nbgrader" / LAB)
    assert sorted(m["student"] for m in merged) == names
    got = {r.student: r for r in results}
    for s in names:
        assert (got[s].status, got[s].score) == ("graded", students[s]["score"]), got[s]


def holders(client, key: str) -> list[str]:
    """The workers that hold ``key``'s result in memory, as the scheduler sees them."""
    def ask(dask_scheduler):
        ts = dask_scheduler.tasks.get(key)
        return sorted(ws.address for ws in ts.who_has) if ts is not None and ts.who_has else []

    return client.run_on_scheduler(ask)


def class_of(prefix: str, n: int, **special) -> dict:
    """``n`` students named ``<prefix>00``... (a prefix per test: the workers' log is shared)."""
    students = {f"{prefix}{i:02d}": {"score": float(i % 2), "seconds": 0.2} for i in range(n)}
    students.update(special)
    return students


def test_a_worker_killed_during_compute(fakes, tmp_path):
    students = class_of("a", 6, avictim={"score": 1.0, "block_once": True})
    subs = cluster_fakes.write_class(tmp_path, students)
    killed = {}

    def killer():
        wait_until(lambda: cluster_fakes.runs("avictim"), 120, "the victim's task never started")
        pid = int(cluster_fakes.runs("avictim")[0].split("-")[2])
        addr = next(a for a, w in fakes.client.scheduler_info()["workers"].items()
                    if fakes.worker_pid(a) == pid)
        killed["addr"], killed["pid"] = addr, fakes.kill_worker(addr)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    stats = {}
    results = cluster_fakes.grade(tmp_path, subs, fakes.address, stats)
    t.join(60)
    assert killed, "the victim's worker was not killed"
    started, done = cluster_fakes.runs("avictim"), cluster_fakes.runs("avictim", "done")
    assert len(started) == 2 and len(done) == 1 and str(killed["pid"]) not in done[0], (started, done)
    assert_exactly_once(tmp_path, students, results)
    assert stats["failed_tasks"] == 0, stats


def before_fetch(monkeypatch, hook) -> None:
    """Call ``hook(keys)`` each time the client is about to fetch results from the workers that hold them
    (``Client._gather``: what the executor's future waits for before it answers), off the client's event
    loop so that the hook may use the client. The point between "computed" and "fetched"."""
    import asyncio

    from distributed import Client

    real = Client._gather

    async def _gather(self, futures, *args, **kwargs):
        keys = [f.key for f in futures if hasattr(f, "key")] if isinstance(futures, list) else []
        await asyncio.get_running_loop().run_in_executor(None, hook, keys)
        return await real(self, futures, *args, **kwargs)

    monkeypatch.setattr(Client, "_gather", _gather)


@pytest.mark.parametrize("when", ["while fetching", "before the client looked"])
def test_a_worker_killed_after_compute_before_fetch(fakes, tmp_path, monkeypatch, when):
    prefix = "b" if when == "while fetching" else "c"
    victim = f"{prefix}victim"
    students = class_of(prefix, 6, **{victim: {"score": 1.0, "seconds": 1.5}})
    subs = cluster_fakes.write_class(tmp_path, students)
    seen = {}
    client = {}
    real_connect = cluster.connect
    victim_key = cluster.task_key(LAB, victim, cluster.sha256_of(next(s.path for s in subs if s.student == victim)))

    def connect(scheduler, timeout="30s"):
        client["c"], lc = real_connect(scheduler, timeout)
        return client["c"], lc

    def kill_the_holder(keys):  # the victim's result is computed and not fetched yet: its worker dies
        if victim_key not in keys or seen:
            return
        c = client["c"]
        seen["holder"] = holders(c, victim_key)
        seen["pid"] = fakes.kill_worker(seen["holder"][0])
        if when == "before the client looked":  # 2b: the scheduler has told the client the result is lost
            wait_until(lambda: c.futures[victim_key].status != "finished", 30, "no lost-data message")
        seen["status"] = c.futures[victim_key].status  # 2a: fetched at once, as the news is still coming

    monkeypatch.setattr(cluster, "connect", connect)
    before_fetch(monkeypatch, kill_the_holder)
    stats = {}
    results = cluster_fakes.grade(tmp_path, subs, fakes.address, stats)
    assert seen.get("pid"), "the worker holding the victim's result was not killed"
    done = cluster_fakes.runs(victim, "done")
    assert len(done) == 2 and sum(f"-{seen['pid']}-" in d for d in done) == 1, done  # computed again elsewhere
    assert_exactly_once(tmp_path, students, results)
    assert stats["failed_tasks"] == 0, stats
    if when == "before the client looked":
        assert seen["status"] in ("lost", "pending"), seen


def test_the_client_killed_between_gradebook_and_manifest_then_restarted(fakes, tmp_path):
    students = class_of("d", 6)
    die_after = 3
    child = cluster_fakes.CHILD.format(tests=str(TESTS), students=students)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS)])}
    proc = subprocess.run([sys.executable, "-c", child, str(tmp_path), fakes.address, str(die_after)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-3000:]  # it killed itself at the chosen point
    merged_before = _merges(tmp_path)
    assert len(merged_before) == die_after and len(_manifest(tmp_path)) == die_after - 1
    in_gradebook = {m["student"] for m in cluster.merged_in_gradebook(tmp_path / "out" / "nbgrader" / LAB)}
    assert len(in_gradebook) == die_after
    computed_before = {s: cluster_fakes.runs(s, "done") for s in students}

    subs = cluster_fakes.write_class(tmp_path, students)
    stats = {}
    results = cluster_fakes.grade(tmp_path, subs, fakes.address, stats)
    assert stats["recovered"] == 1 and stats["skipped"] == die_after, stats
    assert stats["submitted"] == len(students) - die_after, stats
    for s in in_gradebook:  # nothing merged is computed again
        assert cluster_fakes.runs(s, "done") == computed_before[s], s
    assert_exactly_once(tmp_path, students, results)
    recovered = [m for m in _manifest(tmp_path) if m.get("recovered")]
    assert len(recovered) == 1 and recovered[0]["student"] in in_gradebook
    again = {}
    cluster_fakes.grade(tmp_path, subs, fakes.address, again)
    assert again["submitted"] == 0 and again["recovered"] == 0 and again["skipped"] == len(students), again


# --- the same three failures, grading real notebooks with `labkit grade` (minutes: not in the default run) ---

GRADE_AND_DIE = """
import os, signal, sys
from labkit.course import cli, cluster

die_after, real_record, merged = int(sys.argv[1]), cluster.Manifest.record, []

def record(self, *args, **kw):
    merged.append(1)
    if len(merged) == die_after:  # the gradebook holds this merge; its manifest line is never written
        os.kill(os.getpid(), signal.SIGKILL)
    return real_record(self, *args, **kw)

cluster.Manifest.record = record
sys.exit(cli.main(sys.argv[2:]))
"""


def processing(client) -> dict:
    """{key: worker address} of the tasks the scheduler has sent to a worker and not yet got back."""
    def ask(dask_scheduler):
        return {k: ts.processing_on.address for k, ts in dask_scheduler.tasks.items()
                if ts.state == "processing" and ts.processing_on is not None}

    return client.run_on_scheduler(ask)


@pytest.mark.slow
@pytest.mark.nbgrader
@pytest.mark.extended
@pytest.mark.timeout(1800)
def test_labkit_grade_survives_worker_loss(tmp_path, monkeypatch):
    """``labkit grade --scheduler`` on the loopback cluster, lab00_setup, 8 students: the client killed
    between the third gradebook commit and its manifest line; started again, with one worker killed while
    it grades a notebook and another after computing a result the client had not fetched yet. Exit 0, every
    student in the gradebook once with the right score, nothing merged graded again."""
    from test_cluster import EXPECTED, _gradebook_rows, make

    lab = "lab00_setup"
    kinds = ["honest", "blank", "wrong", "honest", "honest", "blank", "honest", "wrong"]
    students = {f"s{i}-{k}": k for i, k in enumerate(kinds)}
    subs, out = tmp_path / "subs", tmp_path / "out"
    for name, kind in students.items():
        make(kind, lab, subs / name)
    env = {"LABKIT_CACHE": str(tmp_path / "cache"), "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS)])}
    monkeypatch.delenv("LABKIT_DATA", raising=False)  # synthetic digits, as tests/test_cluster.py
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    argv = ["grade", str(subs), "--out", str(out), "--lab", lab, "--timeout", "60"]
    with LoopbackCluster(tmp_path / "loopback", workers=2, env=env) as lc:
        # 1. the client dies at a chosen point, then is started again (below)
        proc = subprocess.run([sys.executable, "-c", GRADE_AND_DIE, "3", *argv, "--scheduler", lc.address],
                              env={**os.environ, **env}, capture_output=True, text=True, timeout=900, cwd=str(TESTS.parent))
        assert proc.returncode == -9, proc.stderr[-3000:]
        first = {m["student"]: m for m in cluster.merged_in_gradebook(out / "nbgrader" / lab)}
        assert len(first) == 3 and len(_manifest(tmp_path)) == 2
        lc.wait_for_workers()

        # 2. started again: a worker killed mid-notebook, another after a result the client has not fetched
        killed = {}

        def mid_notebook():
            try:
                wait_until(lambda: processing(lc.client), 300, "nothing was sent to a worker")
                key, addr = next(iter(processing(lc.client).items()))
                time.sleep(3)  # well into its notebook
                if processing(lc.client).get(key) == addr:
                    killed["mid"] = (key, addr, lc.kill_worker(addr))
            except Exception as exc:  # reported below
                killed["error"] = exc

        def fetch(keys):  # the first result the client fetches: its holder dies first
            if "fetch" not in killed and keys:
                addr = holders(lc.client, keys[0])[0]
                killed["fetch"] = (keys[0], addr, lc.kill_worker(addr))

        before_fetch(monkeypatch, fetch)
        t = threading.Thread(target=mid_notebook, daemon=True)
        t.start()
        from labkit.course import cli

        code = cli.main([*argv, "--scheduler", lc.address])
        t.join(60)
    print(f"\nkilled: {killed}")
    assert code == 0
    assert "error" not in killed and "mid" in killed and "fetch" in killed, killed
    expect = sorted((s, float(EXPECTED[lab][k][0])) for s, k in students.items())
    assert _gradebook_rows(out, lab) == expect  # one submission per student, its score right
    lines = _manifest(tmp_path)
    assert sorted(m["student"] for m in lines) == sorted(students)  # one line each (one of them recovered)
    assert sum(bool(m.get("recovered")) for m in lines) == 1
    merged = {m["student"]: m for m in cluster.merged_in_gradebook(out / "nbgrader" / lab)}
    for s, m in first.items():  # merged before the client died: not graded again
        assert merged[s]["merged_at"] == m["merged_at"], s
    for key, addr, _ in (killed["mid"], killed["fetch"]):
        m = next(m for m in lines if cluster.task_key(lab, m["student"], m["sha256"]) == key)
        assert m["worker"] != f"worker {addr}", m
    rows = (out / "scores.csv").read_text().splitlines()[1:]
    assert len(rows) == len(students) and not any(",failed," in r for r in rows)
