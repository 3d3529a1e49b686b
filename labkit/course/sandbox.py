"""A sandbox per submission: the student's kernel runs inside bubblewrap (Linux namespaces).

What the kernel sees (everything else of the machine does not exist for it):

    its own work folder           writable, fresh per submission, deleted afterwards (also $HOME); when the
                                  grader is root, an in-memory file system of a fixed size (``work_mb``)
    /tmp                          an empty in-memory folder (capped), gone with the kernel
    Python, the venv, labkit      read-only: the interpreter, its standard library, site-packages and the
                                  installed ``labkit`` package folder (not the repository around it: no
                                  ``solutions/``, no course folder, no gradebook, no other student)
    /usr /bin /lib*               read-only system files
    /etc                          only what Python needs (``ETC_FILES``: the dynamic linker's cache, time
                                  zone, ...) and a passwd/group written for the sandbox: no shadow, no host
                                  configuration
    its user                      never root: when the grader runs as root, the kernel becomes ``nobody``
                                  (uid 65534) inside the sandbox before anything of the student's runs
    MNIST (``LABKIT_DATA``)       read-only, when the grader has it
    the grader's channel folder   read-only: the socket of the graded calls (``labkit.course.channel``)
    network                       none (a new network namespace holds only loopback)
    processes                     only its own (new PID namespace): when the kernel ends, the namespace's
                                  init ends and the Linux kernel kills every process left in it, detached
                                  or not

Limits, inherited by everything the kernel starts: data memory per process, size of one written file,
open files, no core dumps (``setrlimit``); the number of processes and threads: ``RLIMIT_NPROC`` on top of
the grading user's own processes, or, when the grader runs as root (which ``RLIMIT_NPROC`` does not bind),
a cgroup of its own per sandbox (``pids.max``, and ``memory.max`` for all its processes together), so one
student's fork bomb can neither take the machine nor starve another student's kernel.

bubblewrap is the tool Flatpak uses to sandbox applications (``apt install bubblewrap``,
``dnf install bubblewrap``); it needs unprivileged user namespaces, which current Linux distributions
allow. ``probe()`` tells whether it works here; ``labkit grade`` refuses to grade without it unless
``--unsafe-no-sandbox`` is given.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

INSTALL_HINT = (
    "install bubblewrap (Debian/Ubuntu: apt install bubblewrap; Fedora: dnf install bubblewrap) and "
    "allow unprivileged user namespaces, or pass --unsafe-no-sandbox to grade without isolation "
    "(only for trusted notebooks)"
)

NOBODY = 65534  # the kernel's user (and group) when the grader runs as root: "nobody" on every Linux
# The host's /etc files a kernel may read: the dynamic linker's cache (torch's libraries are found through it),
# the time zone, how names are looked up, and fontconfig's settings. Nothing else: no shadow, no users, no
# host names, no service configuration. passwd, group and hosts are written for the sandbox (``_write_etc``).
ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "nsswitch.conf", "fonts")

# Run inside the sandbox when the grader is root, before the kernel: become ``nobody`` (no supplementary
# groups, real = effective = saved ids, so no way back; the Linux kernel clears every capability on that
# change), check it, enter the work folder (only nobody may) and start the kernel.
# ``python -I -S -c BECOME uid gid folder cmd...``.
BECOME = (
    "import os, sys\n"
    "uid, gid = int(sys.argv[1]), int(sys.argv[2])\n"
    "os.setgroups([])\nos.setresgid(gid, gid, gid)\nos.setresuid(uid, uid, uid)\n"
    "if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid):\n"
    "    sys.exit('labkit sandbox: could not become uid %d' % uid)\n"
    "os.chdir(sys.argv[3])\n"
    "os.execv(sys.argv[4], sys.argv[4:])\n"
)


@dataclass(frozen=True)
class Limits:
    nproc: int = 256  # processes + threads of the sandbox's user
    data_gb: float = 4.0  # heap and anonymous memory per process (RLIMIT_DATA); 0: none
    total_gb: float = 6.0  # memory of all its processes together (cgroup, when the grader is root)
    file_mb: int = 512  # largest file it may write (RLIMIT_FSIZE)
    nofile: int = 1024  # open files per process
    tmp_mb: int = 512  # size of its in-memory /tmp
    work_mb: int = 1024  # size of its work folder, all files together (an in-memory file system; grader as root)


@dataclass
class Sandbox:
    """One sandboxed work folder; ``wrap(cmd)`` turns a kernel command into a sandboxed one."""

    workdir: Path
    limits: Limits = field(default_factory=Limits)
    extra_ro: tuple[str, ...] = ()
    uid: int | None = None  # the kernel's user when the grader is root (NOBODY); None: the grader's own user
    etc: Path | None = None  # the passwd, group and hosts written for this sandbox (a folder of the grader's)
    sized: bool = False  # the work folder is a tmpfs of limits.work_mb, mounted by the grader (root)

    @classmethod
    def create(cls, files_from: str | os.PathLike | None = None, *, limits: Limits | None = None) -> "Sandbox":
        """A fresh work folder (short path: it holds the kernel's IPC sockets), with copies of the files of
        ``files_from`` except notebooks (the graded notebook may hold hidden tests). When the grader is root,
        the folder is a fresh tmpfs of ``limits.work_mb`` owned by ``nobody``, who runs the kernel."""
        limits = limits or Limits()
        workdir = Path(tempfile.mkdtemp(prefix="lk-"))
        uid = NOBODY if os.geteuid() == 0 else None
        if uid is not None:
            try:
                mount_tmpfs(workdir, limits.work_mb, uid)
            except OSError as exc:
                workdir.rmdir()
                raise RuntimeError(f"could not mount the sandbox's {limits.work_mb} MB work folder ({exc})") from None
        if files_from and Path(files_from).is_dir():
            for src in Path(files_from).rglob("*"):
                rel = src.relative_to(files_from)
                if src.suffix == ".ipynb" or ".ipynb_checkpoints" in rel.parts or src.is_symlink():
                    continue
                if src.is_dir():
                    (workdir / rel).mkdir(parents=True, exist_ok=True)
                elif src.is_file() and src.stat().st_size <= 64 * 2**20:
                    (workdir / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(src, workdir / rel)
        _seed_matplotlib_cache(workdir / ".matplotlib")
        if uid is not None:  # what the grader just put there becomes the kernel's (nothing else is in it yet)
            for path in [workdir, *workdir.rglob("*")]:
                os.chown(path, uid, uid, follow_symlinks=False)
        data = os.environ.get("LABKIT_DATA")
        extra = (str(Path(data).resolve()),) if data and Path(data).is_dir() else ()
        etc = _write_etc(uid if uid is not None else os.getuid(), workdir)
        return cls(workdir, limits, extra, uid, etc, uid is not None)

    def readonly_paths(self) -> list[str]:
        """Host folders the kernel may read: system files, Python, site-packages, the labkit package."""
        import labkit

        wanted = ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/opt/conda"]  # /etc: etc_binds
        wanted += [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]
        wanted += [sysconfig.get_path(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")]
        roots = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix)}
        for entry in sys.path:  # only entries inside a Python installation: never a repository folder
            real = os.path.realpath(entry) if entry else ""
            if real and any(real == r or real.startswith(r + os.sep) for r in roots):
                wanted.append(entry)
        wanted.append(str(Path(labkit.__file__).resolve().parent))  # the package folder only
        wanted += list(self.extra_ro)
        out: list[str] = []
        for p in wanted:
            if not p or not os.path.exists(p):
                continue
            for q in {p, os.path.realpath(p)}:  # both the path and where a symlink leads
                if q not in out:
                    out.append(q)
        # a folder already inside another bound folder needs no bind of its own
        out.sort(key=len)
        kept: list[str] = []
        for p in out:
            if not any(p == k or p.startswith(k.rstrip("/") + "/") for k in kept):
                kept.append(p)
        return kept

    def etc_binds(self) -> list[str]:
        """bubblewrap arguments for the sandbox's /etc: the few host files of ``ETC_FILES``, and the passwd,
        group and hosts written for it."""
        args = []
        for name in ETC_FILES:
            if os.path.exists(f"/etc/{name}"):
                args += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
        if self.etc is not None:
            for name in ("passwd", "group", "hosts"):
                args += ["--ro-bind", str(self.etc / name), f"/etc/{name}"]
        return args

    def hand_over(self, path: str | os.PathLike) -> None:
        """Give a file the grader wrote for the kernel (its connection file) to the kernel's user, so that
        ``nobody`` can read it. Only a regular file, never through a link (the work folder is the student's)."""
        if self.uid is None:
            return
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise RuntimeError(f"{path} is not a regular file")
            os.fchown(fd, self.uid, self.uid)
        finally:
            os.close(fd)

    def environment(self) -> dict[str, str]:
        home = str(self.workdir)
        env = {
            "HOME": home,
            "USER": "student",
            "LOGNAME": "student",
            "TMPDIR": "/tmp",
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"]),
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "PYTHONNOUSERSITE": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "IPYTHONDIR": f"{home}/.ipython",
            "MPLCONFIGDIR": f"{home}/.matplotlib",
            "XDG_CACHE_HOME": f"{home}/.cache",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "NO_PROXY": "*",
        }
        # the kernel imports the grader's own labkit (its half of the graded calls must match this one's):
        # for a source checkout that is the folder above the package, where the sandbox holds the package only
        import labkit

        env["PYTHONPATH"] = str(Path(labkit.__file__).resolve().parent.parent)
        for key in (
            "LABKIT_FAST",
            "LABKIT_DATA",
            "NBGRADER_EXECUTION",
            "OMP_NUM_THREADS",
            "MKL_NUM_THREADS",
            "OPENBLAS_NUM_THREADS",
            "OPENBLAS_CORETYPE",
            "OPENBLAS_L2_SIZE",
            "MPLBACKEND",
            "TZ",
        ):
            if os.environ.get(key):
                env[key] = os.environ[key]
        return env

    def wrap(self, cmd: list[str], *, quiet: bool = True, give: tuple[str, ...] = ()) -> list[str]:
        """``cmd`` run inside the sandbox, through ``python -m labkit.course.sandbox`` (limits); ``quiet``:
        its stdin, stdout and stderr are /dev/null (a kernel's are: they would reach the grader's terminal);
        ``give``: files the grader wrote for the kernel (``hand_over``).

        Grading as root, bubblewrap makes no user namespace (in one, the kernel's only user would be root
        again, with root's access to every bound file): it keeps just the right to change users, and
        ``BECOME`` turns the kernel into ``nobody`` before it starts."""
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            raise RuntimeError("bubblewrap (bwrap) is not installed: " + INSTALL_HINT)
        for path in give:
            self.hand_over(path)
        lim = self.limits
        if self.uid is None:
            args = [bwrap, "--unshare-all", "--cap-drop", "ALL"]
        else:
            args = [
                bwrap,
                "--unshare-ipc",
                "--unshare-pid",
                "--unshare-net",
                "--unshare-uts",
                "--unshare-cgroup-try",
                "--cap-drop",
                "ALL",
                "--cap-add",
                "CAP_SETUID",
                "--cap-add",
                "CAP_SETGID",
            ]
        args += [
            "--die-with-parent",
            "--hostname",
            "grading",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--perms",
            "1777",
            "--size",
            str(lim.tmp_mb * 2**20),
            "--tmpfs",
            "/tmp",
        ]
        binds = self.readonly_paths()
        etc = self.etc_binds()
        # the folders above what is bound: bubblewrap would make them 0700, which nobody could pass
        for folder in _parents(binds + etc[2::3] + [str(self.workdir)]):
            args += ["--perms", "0755", "--dir", folder]
        for p in binds:
            args += ["--ro-bind", p, p]
        args += etc
        args += ["--bind", str(self.workdir), str(self.workdir), "--clearenv"]
        if self.uid is None:
            args += ["--chdir", str(self.workdir)]
        for k, v in self.environment().items():
            args += ["--setenv", k, v]
        launcher = [
            sys.executable,
            "-I",
            "-m",
            "labkit.course.sandbox",
            "--nproc",
            str(lim.nproc),
            "--data-gb",
            str(lim.data_gb),
            "--total-gb",
            str(lim.total_gb),
            "--file-mb",
            str(lim.file_mb),
            "--nofile",
            str(lim.nofile),
            "--cgroup",
            self.cgroup,
        ] + (["--quiet"] if quiet else [])
        if self.uid is not None:
            launcher += ["--uid", str(self.uid)]
            cmd = [sys.executable, "-I", "-S", "-c", BECOME, str(self.uid), str(self.uid), str(self.workdir)] + list(
                cmd
            )
        return launcher + ["--"] + args + ["--"] + list(cmd)

    @property
    def cgroup(self) -> str:
        return f"labkit-{self.workdir.name}"

    def cleanup(self) -> None:
        """Kill anything left of the sandbox and delete its folder."""
        if os.geteuid() == 0:
            remove_cgroup(self.cgroup)
        if self.sized:
            unmount(self.workdir)
        shutil.rmtree(self.workdir, ignore_errors=True)
        if self.etc is not None:
            shutil.rmtree(self.etc, ignore_errors=True)


def _parents(paths: list[str]) -> list[str]:
    """The folders above ``paths`` that the sandbox must create (not / or /tmp, not one that is bound), shortest
    first."""
    out: set[str] = set()
    for p in paths:
        parent = os.path.dirname(p.rstrip("/"))
        while parent not in ("/", "", "/tmp"):
            out.add(parent)
            parent = os.path.dirname(parent)
    return sorted(out - set(paths), key=lambda q: (q.count("/"), q))


def _write_etc(uid: int, home: Path) -> Path:
    """A grader-owned folder with the sandbox's passwd, group and hosts: the kernel's user is "student" (so
    that tools asking who runs them get an answer), root exists by name only; no other account of the host."""
    folder = Path(tempfile.mkdtemp(prefix="lk-etc-"))
    folder.chmod(0o755)
    files = {
        "passwd": f"root:x:0:0:root:/nonexistent:/usr/sbin/nologin\nstudent:x:{uid}:{uid}:student:{home}:/usr/sbin/nologin\n",
        "group": f"root:x:0:\nstudent:x:{uid}:\n",
        "hosts": "127.0.0.1 localhost grading\n::1 localhost\n",
    }
    for name, text in files.items():
        (folder / name).write_text(text)
        (folder / name).chmod(0o644)
    return folder


def _libc():
    import ctypes
    import ctypes.util

    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def mount_tmpfs(target: Path, size_mb: int, uid: int) -> None:
    """Root only: mount a fresh tmpfs of ``size_mb`` on ``target``, owned by ``uid``, mode 0700, no setuid
    files, no devices. Whatever the kernel writes there, all files together, stops at the size (ENOSPC)."""
    import ctypes

    ms_nosuid, ms_nodev = 2, 4
    options = f"size={int(size_mb)}m,mode=0700,uid={uid},gid={uid}".encode()
    if _libc().mount(b"labkit-sandbox", str(target).encode(), b"tmpfs", ms_nosuid | ms_nodev, options) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def unmount(target: Path) -> None:
    """Detach the work folder's tmpfs (lazily: the memory is freed once nothing uses it any more)."""
    mnt_detach = 2
    _libc().umount2(str(target).encode(), mnt_detach)


def _seed_matplotlib_cache(target: Path) -> None:
    """Copy the grader's matplotlib font list into the sandbox's fresh config folder: without it every
    kernel rebuilds it (about 1 s per notebook). Grader -> sandbox only; nothing comes back."""
    try:
        import matplotlib

        source = Path(matplotlib.get_cachedir())
        fonts = sorted(source.glob("fontlist-*.json"))
    except Exception:
        return
    if fonts:
        target.mkdir(exist_ok=True)
        for f in fonts:
            shutil.copyfile(f, target / f.name)


def probe(timeout: float = 20.0) -> str | None:
    """None when a sandboxed Python starts here; otherwise one line saying why not."""
    if not sys.platform.startswith("linux"):
        return f"the grading sandbox needs Linux (this is {sys.platform}): " + INSTALL_HINT
    if shutil.which("bwrap") is None:
        return "bubblewrap (bwrap) is not installed: " + INSTALL_HINT
    try:
        box = Sandbox.create()
    except RuntimeError as exc:
        return f"{exc}: grading as root needs the right to mount (CAP_SYS_ADMIN), or grade as an ordinary user"
    try:
        cmd = box.wrap([sys.executable, "-c", "import os, labkit; print('ok', os.getuid())"], quiet=False)
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if res.returncode != 0 or "ok" not in res.stdout:
            why = (res.stderr.strip().splitlines() or ["no output"])[-1][:200]
            return f"bubblewrap is installed but cannot start a sandbox here ({why}): " + INSTALL_HINT
        if res.stdout.split()[-1] == "0":
            return "the sandbox would run the student's kernel as root: " + INSTALL_HINT
        return None
    except subprocess.TimeoutExpired:
        return f"bubblewrap did not start a sandbox within {timeout:g} s: " + INSTALL_HINT
    finally:
        box.cleanup()


def _count_processes(uid: int) -> int:
    n = 0
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.stat(f"/proc/{d}").st_uid == uid:
                    n += len(os.listdir(f"/proc/{d}/task"))
            except OSError:
                pass
    return n


CGROUP_ROOT = Path("/sys/fs/cgroup")


def _cgroup_dirs(name: str) -> list[Path]:
    """The cgroup folders a sandbox called ``name`` uses: cgroup v2 (unified) or v1 ``pids`` + ``memory``."""
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        return [CGROUP_ROOT / name]
    return [CGROUP_ROOT / "pids" / name, CGROUP_ROOT / "memory" / name]


def _join_cgroup(name: str, nproc: int, memory_bytes: int) -> bool:
    """Root only: put this process (and so the whole sandbox) into a fresh cgroup with a cap on the number
    of tasks and, where the memory controller is there, on the memory of all its processes together.
    False when cgroups cannot be written here (the caller falls back to what rlimits give)."""
    try:
        for d in _cgroup_dirs(name):
            d.mkdir(exist_ok=True)
            if (d / "pids.max").exists():
                (d / "pids.max").write_text(str(nproc))
            if memory_bytes and (d / "memory.max").exists():
                (d / "memory.max").write_text(str(memory_bytes))
            if memory_bytes and (d / "memory.limit_in_bytes").exists():
                (d / "memory.limit_in_bytes").write_text(str(memory_bytes))
            (d / "cgroup.procs").write_text(str(os.getpid()))
        return any((d / "pids.max").exists() for d in _cgroup_dirs(name))
    except OSError:
        return False


def remove_cgroup(name: str) -> None:
    """Kill what is left in the sandbox's cgroup and remove it (no-op when there is none)."""
    import signal
    import time

    for d in _cgroup_dirs(name):
        if not d.exists():
            continue
        for _ in range(50):
            try:
                pids = [int(p) for p in (d / "cgroup.procs").read_text().split()]
            except OSError:
                break
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.05)
        try:
            d.rmdir()
        except OSError:
            pass


def _launch(argv: list[str]) -> None:
    """``python -m labkit.course.sandbox [limits] -- bwrap ...``: set the limits, then become bubblewrap
    (exec: no extra process). As root, the task cap is a cgroup's (``RLIMIT_NPROC`` does not bind root);
    otherwise ``RLIMIT_NPROC`` counted on top of the user's own processes."""
    import argparse
    import resource

    parser = argparse.ArgumentParser(prog="labkit.course.sandbox")
    parser.add_argument("--nproc", type=int, default=256)
    parser.add_argument("--data-gb", type=float, default=4.0)
    parser.add_argument("--total-gb", type=float, default=6.0)
    parser.add_argument("--file-mb", type=int, default=512)
    parser.add_argument("--nofile", type=int, default=1024)
    parser.add_argument("--cgroup", default=None)
    parser.add_argument("--uid", type=int, default=None, help="the user the kernel becomes (grader as root)")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("cmd", nargs=argparse.REMAINDER)
    a = parser.parse_args(argv)
    cmd = a.cmd[1:] if a.cmd and a.cmd[0] == "--" else a.cmd

    def cap(kind, value):
        soft, hard = resource.getrlimit(kind)
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(kind, (value, value))

    if os.geteuid() == 0:
        if not (a.cgroup and _join_cgroup(a.cgroup, a.nproc, int(a.total_gb * 2**30))):
            print(
                "labkit sandbox: no cgroup for a task cap (running as root without writable cgroups)", file=sys.stderr
            )
            if a.uid is not None:  # binds once the kernel is that user; shared by every sandbox of that user
                cap(resource.RLIMIT_NPROC, a.nproc + _count_processes(a.uid))
    else:
        cap(resource.RLIMIT_NPROC, a.nproc + _count_processes(os.getuid()))
    if a.data_gb > 0:
        cap(resource.RLIMIT_DATA, int(a.data_gb * 2**30))
    cap(resource.RLIMIT_FSIZE, a.file_mb * 2**20)
    cap(resource.RLIMIT_NOFILE, a.nofile)
    cap(resource.RLIMIT_CORE, 0)
    if a.quiet:  # a kernel talks through its sockets; what it writes to its own stdout/stderr goes nowhere
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
    os.execv(cmd[0], cmd)


if __name__ == "__main__":
    _launch(sys.argv[1:])
