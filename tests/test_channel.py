"""The grader's channel to a student's kernel (labkit/course/channel.py) and the pool that survives a dead
worker (labkit/course/executors.py), tested on their own, in seconds. The same attacks in a real `labkit grade`
run are in tests/test_redteam_files.py."""

from __future__ import annotations

import os
import socket
import stat
import struct
import threading
import time

import pytest
import torch

from labkit.course import channel, executors, kernel_side, wire


@pytest.fixture
def chan():
    c = channel.Channel()
    yield c
    c.close()


def _kernel(chan, call, namespace):
    """The kernel's half, run in a thread as the sandboxed kernel would run it."""
    t = threading.Thread(target=kernel_side.serve, args=(namespace, "f", chan.address, call.token))
    t.start()
    return t


def _connect(chan, token: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(chan.address)
    s.sendall(token.encode())
    (n,) = struct.unpack("<Q", s.recv(8))
    while n:
        n -= len(s.recv(n))
    return s


def test_a_call_goes_both_ways_and_the_folder_is_the_graders(chan):
    call = chan.call(wire.encode_call((torch.ones(3),), {"y": 2.0}), 10)
    _kernel(chan, call, {"f": lambda x, y: x * 3 + y}).join()
    reply = wire.decode_reply(call.reply(grace=5))
    assert torch.equal(reply["result"], torch.full((3,), 5.0))
    mode = os.stat(chan.folder).st_mode
    assert stat.S_IMODE(mode) == 0o711 and os.stat(chan.folder).st_uid == os.geteuid()
    assert os.listdir(chan.folder) == [os.path.basename(chan.address)]  # no file ever written for a call


def test_a_stranger_with_the_wrong_token_is_dropped(chan):
    call = chan.call(wire.encode_call((torch.ones(2),), {}), 10)
    stranger = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stranger.connect(chan.address)
    stranger.sendall(b"0" * channel.TOKEN_CHARS)  # e.g. a thread the student's code left running
    _kernel(chan, call, {"f": lambda x: x + 1}).join()
    assert torch.equal(wire.decode_reply(call.reply(grace=5))["result"], torch.full((2,), 2.0))
    stranger.close()


def test_an_oversized_reply_is_refused_unread(chan):
    call = chan.call(b"inputs", 10)
    s = _connect(chan, call.token)
    s.sendall(struct.pack("<Q", wire.MAX_REPLY_BYTES + 1))
    with pytest.raises(wire.WireError, match="limit"):
        call.reply(grace=2)
    s.close()


def test_a_late_or_silent_reply_fails_at_the_deadline(chan):
    call = chan.call(b"inputs", 1.5)
    s = _connect(chan, call.token)
    s.sendall(struct.pack("<Q", 100) + b"x")  # promises 100 bytes, sends 1
    t0 = time.monotonic()
    with pytest.raises(wire.WireError, match="in time"):
        call.reply(grace=30)
    assert time.monotonic() - t0 < 5
    s.close()


def test_a_kernel_that_never_comes_is_not_waited_for(chan):
    call = chan.call(b"inputs", 60)
    t0 = time.monotonic()
    assert call.reply(grace=30) is None
    assert time.monotonic() - t0 < 3


def test_a_truncated_reply_is_an_error(chan):
    call = chan.call(b"inputs", 10)
    s = _connect(chan, call.token)
    s.sendall(struct.pack("<Q", 100) + b"x")
    s.close()
    with pytest.raises(wire.WireError, match="truncated"):
        call.reply(grace=5)


# --- the pool --------------------------------------------------------------------------------------------

def _task(k: int) -> int:
    if k == 2:
        os.kill(os.getpid(), 9)  # as the out-of-memory killer ends a worker
    time.sleep(0.2)
    return k * 10


def _fails(k: int) -> int:
    raise ValueError(f"bad {k}")


def test_the_pool_survives_a_worker_that_dies():
    seen = []
    with executors.worker_pool(2) as run:
        out = run(_task, [(k,) for k in range(6)], on_result=seen.append)
        again = run(_fails, [(1,)])  # the pool still works afterwards
    assert [o for i, o in enumerate(out) if i != 2] == [0, 10, 30, 40, 50]
    assert isinstance(out[2], executors.WorkerDied) and "signal 9" in str(out[2])
    assert sorted(seen) == [0, 10, 30, 40, 50]
    assert isinstance(again[0], ValueError) and str(again[0]) == "bad 1"
