"""The grader's private line to a student's kernel: a unix socket in a folder only the grader can write.

Why not files? The kernel's work folder is the student's: whatever the grader reads or writes there, the
student's code can have replaced beforehand, with a symlink to a host file (the grader, often root, would
overwrite it), a FIFO (a read that never ends) or a link to ``/dev/zero`` (a read that never stops growing).
So nothing of a graded call passes through a path the student can write:

* the grader makes a folder of its own (``lkc-...``, mode 0711: it can be passed through, not listed) and
  listens there on a unix socket with a random name; the sandbox binds that folder **read-only**, so the
  student can connect to the socket but cannot replace, rename or add anything beside it;
* for each call the grader sends the kernel a one-time token in the code it runs; the kernel connects,
  sends the token, receives the inputs and sends back its reply, both as ``<8-byte length><bytes>``;
  a connection that brings a wrong token (something the student's code left behind) is dropped unread;
* every read has a deadline and the reply a size cap (``wire.MAX_REPLY_BYTES``), checked from the length
  before a byte of the reply is read. A late, oversized, truncated or silent reply fails that one call.

The socket is read in a thread of the grader so that a large reply never waits for the grader to look:
the kernel's ``sendall`` finishes before the kernel reports the call done.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import struct
import tempfile
import threading
import time
from pathlib import Path

from labkit.course import wire

TOKEN_CHARS = 32  # hex characters of a call's token
HELLO_SECONDS = 5.0  # how long a connection may take to say which call it belongs to


class Channel:
    """A listening unix socket in a fresh grader-owned folder; ``call(inputs, seconds)`` serves one call."""

    def __init__(self):
        self.folder = Path(tempfile.mkdtemp(prefix="lkc-"))  # short: a socket path has at most 107 bytes
        os.chmod(self.folder, 0o711)  # a kernel under another user may reach the socket, never list the folder
        self.address = str(self.folder / f"{secrets.token_hex(6)}.sock")
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self.address)
        os.chmod(self.address, 0o666)  # connecting needs write permission on the socket, nothing else
        self._listener.listen(8)
        self._listener.settimeout(0.2)  # accept() wakes up often enough to see a deadline or a cancel

    def call(self, inputs: bytes, seconds: float) -> "Exchange":
        """Start serving one call: ``inputs`` go to the connection that brings the returned token."""
        return Exchange(self._listener, inputs, time.monotonic() + seconds)

    def close(self) -> None:
        self._listener.close()
        shutil.rmtree(self.folder, ignore_errors=True)


class Exchange:
    """One call in flight. ``token`` goes into the code the kernel runs; ``reply(grace)`` waits for the
    answer: its bytes, None when the kernel never came, or ``wire.WireError`` for a bad or late one."""

    def __init__(self, listener: socket.socket, inputs: bytes, deadline: float):
        self.token = secrets.token_hex(TOKEN_CHARS // 2)
        self._listener, self._inputs, self._deadline = listener, inputs, deadline
        self._stop = threading.Event()
        self._reply: bytes | None = None
        self._error: str | None = None
        self._came = False
        self._thread = threading.Thread(target=self._serve, name="labkit-channel", daemon=True)
        self._thread.start()

    def reply(self, grace: float) -> bytes | None:
        """Call it once the kernel says the call is done: waits at most ``grace`` seconds more for the reply
        to be complete (its kernel has sent it all by then), then stops listening."""
        self._thread.join(1.0)  # a kernel that never connected (its labkit replaced) is not waited for
        if self._came:
            self._thread.join(max(0.0, min(grace, self._deadline - time.monotonic())))
        late = self._thread.is_alive()
        self.cancel()
        if self._error:
            raise wire.WireError(self._error)
        if late and self._came:
            raise wire.WireError("the reply did not arrive in time")
        return self._reply

    def cancel(self) -> None:
        self._stop.set()
        self._thread.join(1.0)

    # --- the thread -------------------------------------------------------------------------------

    def _serve(self) -> None:
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            try:
                conn, _ = self._listener.accept()
            except (socket.timeout, BlockingIOError):
                continue
            except OSError:
                return  # the channel was closed
            with conn:
                hello_by = min(self._deadline, time.monotonic() + HELLO_SECONDS)
                try:
                    if self._receive(conn, TOKEN_CHARS, hello_by) != self.token.encode():
                        continue  # not this call's kernel: dropped unread
                except (OSError, EOFError, TimeoutError):
                    continue
                self._came = True
                try:
                    self._exchange(conn)
                except TimeoutError:
                    self._error = "the reply did not arrive in time"
                except (OSError, EOFError):
                    self._error = "the reply is truncated (the connection closed early)"
                return

    def _exchange(self, conn: socket.socket) -> None:
        conn.settimeout(max(0.01, self._deadline - time.monotonic()))
        conn.sendall(struct.pack("<Q", len(self._inputs)) + self._inputs)
        (size,) = struct.unpack("<Q", self._receive(conn, 8, self._deadline))
        if size > wire.MAX_REPLY_BYTES:  # refused before a byte of it is read
            self._error = f"the reply is {size / 2**20:.0f} MB (limit {wire.MAX_REPLY_BYTES // 2**20} MB)"
            return
        self._reply = self._receive(conn, size, self._deadline)

    def _receive(self, conn: socket.socket, size: int, deadline: float) -> bytes:
        """Exactly ``size`` bytes, or TimeoutError at ``deadline`` (or on cancel), EOFError on a short read."""
        chunks, got = [], 0
        while got < size:
            left = deadline - time.monotonic()
            if left <= 0 or self._stop.is_set():
                raise TimeoutError
            conn.settimeout(min(left, 0.5))
            try:
                chunk = conn.recv(min(size - got, 1 << 20))
            except socket.timeout:
                continue
            if not chunk:
                raise EOFError
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)


# --- the kernel's end ------------------------------------------------------------------------------------


def kernel_exchange(address: str, token: str, answer) -> None:
    """In the kernel: connect, say which call this is, get the inputs, send ``answer(inputs)`` back."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(address)
        s.sendall(token.encode())
        (size,) = struct.unpack("<Q", _recv_all(s, 8))
        data = answer(_recv_all(s, size))
        s.sendall(struct.pack("<Q", len(data)) + data)


def _recv_all(s: socket.socket, size: int) -> bytes:
    buf = bytearray()
    while len(buf) < size:
        chunk = s.recv(min(size - len(buf), 1 << 20))
        if not chunk:
            raise EOFError("the grader closed the channel")
        buf += chunk
    return bytes(buf)
