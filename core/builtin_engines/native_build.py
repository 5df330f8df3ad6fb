"""Compiling generated C kernels with the system compiler, and the on-disk kernel cache.

The compiler is ``$LAZYMAT_CC`` (a command, arguments allowed, e.g. ``"ccache gcc"``) or
the first of ``cc``, ``gcc``, ``clang`` on the PATH (looked up once per value of ``PATH``
and ``LAZYMAT_CC``: engines ask for the compiler at every request). It is probed once per
process with a tiny OpenMP program; flags fall back from ``-march=native -fopenmp`` to portable code and
to ``-fopenmp-simd`` (vectorised, single-threaded) when OpenMP is missing. No fast-math:
only ``-fno-math-errno -fno-trapping-math``, which keep NaN/inf semantics (they only
drop errno updates and floating-point exception flags) and let sqrt/rint vectorise.

Shared objects live in ``$LAZYMAT_CACHE_DIR``, else ``$XDG_CACHE_HOME/lazymat/kernels``,
else ``~/.cache/lazymat/kernels``, named by a hash of the source, the compiler command,
its version line, the flags and the CPU (``-march=native`` code must not run on another
machine sharing the directory). Writes are process-safe: each process compiles to a
temporary file of its own in the cache directory and moves it into place with
``os.replace`` (atomic), so concurrent builders of one kernel all succeed and a reader
never sees a half-written file. The directory keeps the ``MAX_CACHED_KERNELS`` most
recently used kernels: each compilation deletes older ones (a process that has a kernel
loaded keeps it; one that finds it gone compiles it again) and temporary files abandoned
by killed builds. The thread count is OpenMP's (``OMP_NUM_THREADS``).

Integrity: each shared object ends with a trailer (after the ELF data, which the loader
ignores) holding the full cache key (the hash of source, compiler identity and flags),
the size and the SHA-256 of the library's bytes. A cached file is verified before
``dlopen`` (a truncated library would kill the process with SIGBUS when touched, another
kernel's library would compute another formula): one that fails (truncated, swapped,
overwritten) is rebuilt with a warning, never loaded. A cache directory that cannot be
written (read-only) is replaced, with one warning, by a per-user directory under the
system's temporary directory (a private fresh one if that is not safely ours).

Time limit: a compiler that does not finish within ``$LAZYMAT_COMPILE_TIMEOUT`` seconds
(default :data:`COMPILE_TIMEOUT_S`, for the probe and for each kernel) is killed with its
whole process group and marked as unusable for this process: the build raises
:class:`CompileError` naming it (dispatch then falls back to the next engine with a
warning) and :func:`find_compiler` reports it, so that the engine declines afterwards.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

_BASE_FLAGS = ("-O3", "-fno-math-errno", "-fno-trapping-math", "-shared", "-fPIC")
#: flag sets tried in order by the probe
_FLAG_CHOICES = (
    ("-march=native", "-fopenmp"),
    ("-fopenmp",),
    ("-march=native", "-fopenmp-simd"),
    ("-fopenmp-simd",),
)
_PROBE = """
#include <stdint.h>
int64_t lm_probe(int64_t n) {
    int64_t s = 0;
    #pragma omp parallel for reduction(+ : s)
    for (int64_t i = 0; i < n; i++) s += i;
    return s;
}
"""
#: seconds a compiler may take for one kernel (or the probe), unless $LAZYMAT_COMPILE_TIMEOUT says
COMPILE_TIMEOUT_S = 120.0
#: kernels kept in the cache directory (least recently used ones go first)
MAX_CACHED_KERNELS = 2000
#: age after which a temporary file of a build is considered abandoned
_STALE_TEMP_S = 3600


#: the trailer appended to each cached library: magic, key, SHA-256 of the library, its size
_MAGIC = b"\nlazymat-kernel-v1 "
_TRAILER = len(_MAGIC) + 64 + 1 + 64 + 1 + 20 + 1


class CompileError(RuntimeError):
    """The C compiler rejected a generated kernel (a bug in the code generator), or did
    not finish within the compile timeout."""


@dataclass(frozen=True)
class Compiler:
    """A working C compiler: command, flags that passed the probe, identity for the cache key."""

    command: tuple[str, ...]
    flags: tuple[str, ...]
    identity: str

    @property
    def openmp(self) -> bool:
        return "-fopenmp" in self.flags


_probed: dict[tuple[str, ...], Compiler | str] = {}
_lock = threading.Lock()
_loaded: dict[str, ctypes.CDLL] = {}  # by cache key
_building: dict[str, threading.Lock] = {}  # a lock per kernel being compiled, by cache key
_fallback_dir: list[Path] = []  # where kernels go when the cache directory cannot be written


def _candidates() -> list[tuple[str, ...]]:
    """The compiler commands to try: ``$LAZYMAT_CC``, else cc, gcc, clang found on the PATH
    (looked up once per value of the two variables: ``shutil.which`` stats every PATH entry)."""
    env = os.environ.get("LAZYMAT_CC")
    if env:
        return [tuple(shlex.split(env))]
    path = os.environ.get("PATH")
    found = _on_path.get(path)
    if found is None:
        found = _on_path[path] = [(name,) for name in ("cc", "gcc", "clang") if shutil.which(name)]
    return found


_on_path: dict[str | None, list[tuple[str, ...]]] = {}


def _cpu_fingerprint() -> str:
    """What ``-march=native`` depends on: the CPU model and its feature flags."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.machine() + platform.processor()
    keep = [line for line in text.splitlines() if line.startswith(("model name", "flags", "Features"))]
    return platform.machine() + "\n".join(sorted(set(keep)))


def compile_timeout() -> float:
    """Seconds a compiler may take: ``$LAZYMAT_COMPILE_TIMEOUT``, else :data:`COMPILE_TIMEOUT_S`."""
    env = os.environ.get("LAZYMAT_COMPILE_TIMEOUT")
    if env is None:
        return COMPILE_TIMEOUT_S
    try:
        value = float(env)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"LAZYMAT_COMPILE_TIMEOUT must be a positive number of seconds, got {env!r}")
    return value


def _run(argv: list[str], cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a compiler command within the compile timeout; on expiry, kill its whole process
    group (the driver's cc1, as, ld included, which would keep the pipes open) and raise
    ``subprocess.TimeoutExpired``."""
    timeout = compile_timeout()
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd, start_new_session=True
    ) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def _probe(command: tuple[str, ...]) -> Compiler | str:
    """A Compiler if ``command`` builds and loads an OpenMP shared object, else the reason."""
    if shutil.which(command[0]) is None:
        return f"{command[0]!r} not found"
    try:
        version = _run([*command, "--version"]).stdout.splitlines()[:1]
    except subprocess.TimeoutExpired:
        return _timed_out(command)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{' '.join(command)} --version failed: {exc}"
    errors: list[str] = []
    with tempfile.TemporaryDirectory(prefix="lazymat-probe-") as tmp:
        src = Path(tmp) / "probe.c"
        src.write_text(_PROBE)
        for choice in _FLAG_CHOICES:
            flags = _BASE_FLAGS + choice
            so = Path(tmp) / f"probe{len(errors)}.so"
            try:
                res = _run([*command, *flags, "-o", str(so), str(src)])
            except subprocess.TimeoutExpired:
                return _timed_out(command)
            except (OSError, subprocess.SubprocessError) as exc:
                return f"{' '.join(command)} failed to run: {exc}"
            if res.returncode == 0:
                try:
                    lib = ctypes.CDLL(str(so))
                except OSError as exc:
                    errors.append(f"{' '.join(flags)}: cannot load the result ({exc})")
                    continue
                fn = lib.lm_probe
                fn.restype = ctypes.c_int64
                fn.argtypes = [ctypes.c_int64]
                if fn(100) == 4950:
                    identity = "\n".join([*command, *version, *flags, _cpu_fingerprint()])
                    return Compiler(command, flags, identity)
            errors.append(f"{' '.join(flags)}: {res.stderr.strip()[:300]}")
    return f"{' '.join(command)} cannot build OpenMP shared libraries: " + "; ".join(errors)


def _timed_out(command: tuple[str, ...]) -> str:
    return (
        f"the C compiler {' '.join(command)!r} did not finish within {compile_timeout():g} s "
        "(LAZYMAT_COMPILE_TIMEOUT); it is not used again in this process"
    )


def find_compiler() -> Compiler | str:
    """The compiler to use, or a sentence saying why there is none (probed once per command)."""
    candidates = _candidates()
    if not candidates:
        return "no C compiler found (looked for cc, gcc, clang on the PATH; set LAZYMAT_CC)"
    reasons = []
    for command in candidates:
        with _lock:
            if command not in _probed:
                _probed[command] = _probe(command)
            found = _probed[command]
        if isinstance(found, Compiler):
            return found
        reasons.append(found)
    return "; ".join(reasons)


def cache_dir() -> Path:
    """Where compiled kernels are kept (see the module docstring)."""
    explicit = os.environ.get("LAZYMAT_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "lazymat" / "kernels"


def _user_temp_dir(create: bool) -> Path | None:
    """The per-user kernel directory under the temporary directory (created private when
    ``create``), or None when it is missing or not ours alone (another user's, or writable
    by others: its libraries could be anyone's code)."""
    path = Path(tempfile.gettempdir()) / f"lazymat-{os.getuid()}" / "kernels"
    if create:
        with contextlib.suppress(OSError):
            path.parent.mkdir(mode=0o700, exist_ok=True)
            path.mkdir(mode=0o700, exist_ok=True)
    try:
        for part in (path.parent, path):
            st = part.lstat()
            if st.st_uid != os.getuid() or st.st_mode & 0o022 or not os.path.isdir(part):
                return None
    except OSError:
        return None
    return path if os.access(path, os.W_OK | os.X_OK) else None


def _writable(directory: Path) -> bool:
    """Whether a file can be created in ``directory`` (tried: permission bits do not stop
    root, a read-only mount or a pseudo-filesystem does)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".lm_probe-")
    except OSError:
        return False
    os.close(fd)
    os.unlink(probe)
    return True


def _directories() -> list[Path]:
    """The directories searched for a kernel: the cache directory, then this process's
    fallback (once the cache directory proved read-only) or the per-user one if it exists."""
    fallback = _fallback_dir[0] if _fallback_dir else _user_temp_dir(create=False)
    return [cache_dir()] if fallback is None else [cache_dir(), fallback]


def _write_dir() -> Path:
    """Where a new kernel is written: the cache directory, else (one warning) the fallback."""
    primary = cache_dir()
    if _fallback_dir:
        return _fallback_dir[0]
    if _writable(primary):
        return primary
    _fallback_dir.append(_user_temp_dir(create=True) or Path(tempfile.mkdtemp(prefix="lazymat-kernels-")))
    warnings.warn(
        f"lazymat: the kernel cache directory {primary} cannot be written; compiled kernels go to "
        f"{_fallback_dir[0]} instead (set LAZYMAT_CACHE_DIR to a writable directory)",
        RuntimeWarning,
        stacklevel=5,
    )
    return _fallback_dir[0]


def _atomic_write(path: Path, data: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _trailer(key: str, library: bytes) -> bytes:
    digest = hashlib.sha256(library).hexdigest()
    return _MAGIC + f"{key} {digest} {len(library):020d}\n".encode()


def verify(path: Path, key: str) -> str | None:
    """None if ``path`` is the intact library of cache key ``key``, else what is wrong
    (checked on the bytes, before anything loads them)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"cannot be read ({exc})"
    if len(data) < _TRAILER or not data[-_TRAILER:].startswith(_MAGIC):
        return f"has no lazymat trailer ({len(data)} bytes: truncated, or not written by lazymat)"
    fields = data[-_TRAILER + len(_MAGIC) :].split()
    library = data[:-_TRAILER]
    if len(fields) != 3 or fields[0].decode(errors="replace") != key:
        return "was built for another kernel (swapped or overwritten)"
    if not fields[2].isdigit() or int(fields[2]) != len(library):
        return f"holds {len(library)} bytes of library, its trailer says {fields[2].decode(errors='replace')}"
    if hashlib.sha256(library).hexdigest() != fields[1].decode(errors="replace"):
        return "does not match its content hash (damaged)"
    return None


def _compile(compiler: Compiler, source: str, target: Path, key: str) -> None:
    """Compile ``source`` to ``target`` (trailer appended) through a private temporary
    file and an atomic rename."""
    directory = target.parent
    src = directory / (target.stem + ".c")
    _atomic_write(src, source)  # kept next to the library, for reading and debugging
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{target.stem}-", suffix=".so")
    os.close(fd)
    try:
        try:
            res = _run([*compiler.command, *compiler.flags, "-o", tmp, str(src), "-lm"])
        except subprocess.TimeoutExpired:
            reason = _timed_out(compiler.command)
            _probed[compiler.command] = reason  # find_compiler reports it from now on
            raise CompileError(reason) from None
        if res.returncode != 0:
            raise CompileError(
                f"{' '.join(compiler.command)} could not compile the generated kernel {src}:\n"
                + res.stderr[-4000:]
            )
        with open(tmp, "r+b") as f:
            f.seek(0, os.SEEK_END)
            f.write(_trailer(key, Path(tmp).read_bytes()))
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _evict(directory: Path) -> None:
    """Delete the least recently used kernels beyond ``MAX_CACHED_KERNELS``, and stale temp files."""
    now = time.time()
    kernels = []
    for entry in os.scandir(directory):
        try:
            mtime = entry.stat().st_mtime
        except OSError:  # deleted by another process meanwhile
            continue
        if entry.name.startswith(".") and now - mtime > _STALE_TEMP_S:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
        elif entry.name.startswith("lm_") and entry.name.endswith(".so"):
            kernels.append((mtime, Path(entry.path)))
    kernels.sort()
    for _, path in kernels[: max(0, len(kernels) - MAX_CACHED_KERNELS)]:
        for stale in (path, path.with_suffix(".c")):
            with contextlib.suppress(OSError):
                os.unlink(stale)


def kernel_key(source: str, compiler: Compiler) -> str:
    """The cache key of ``source`` built by ``compiler`` (SHA-256, hex)."""
    return hashlib.sha256((compiler.identity + "\n" + source).encode()).hexdigest()


def _file_name(key: str) -> str:
    """The library's file name: ``lm_v2_`` (libraries with a trailer; the older ``lm_<key>.so``
    are never looked up, and leave by eviction) and 40 digits of the key."""
    return f"lm_v2_{key[:40]}.so"


def _cached(key: str) -> Path | None:
    """A verified library of ``key`` in the searched directories; damaged ones are warned
    about and left for the rebuild to replace."""
    for directory in _directories():
        path = directory / _file_name(key)
        if not path.exists():
            continue
        problem = verify(path, key)
        if problem is None:
            with contextlib.suppress(OSError):
                os.utime(path)  # last use, for the eviction order
            return path
        warnings.warn(
            f"lazymat: the cached kernel {path} {problem}; it is not loaded, the kernel is rebuilt",
            RuntimeWarning,
            stacklevel=4,
        )
    return None


def load(source: str, compiler: Compiler) -> ctypes.CDLL | None:
    """The loaded shared library of ``source`` if this process or the disk cache (verified)
    has it, else None: never compiles."""
    key = kernel_key(source, compiler)
    with _lock:
        return _load(key)


def _load(key: str) -> ctypes.CDLL | None:
    """The library of ``key`` from this process or the disk cache (``_lock`` held)."""
    lib = _loaded.get(key)
    if lib is None:
        target = _cached(key)
        if target is not None:
            lib = _loaded[key] = ctypes.CDLL(str(target))
    return lib


def build(source: str, compiler: Compiler) -> ctypes.CDLL:
    """The loaded shared library of ``source``: from this process, the disk cache (verified),
    or compiled. A compilation holds a lock of its own kernel only: other kernels load (and
    compile) meanwhile, so a kernel built in a background thread delays no other request."""
    key = kernel_key(source, compiler)
    with _lock:
        lib = _load(key)
        if lib is not None:
            return lib
        building = _building.setdefault(key, threading.Lock())
    with building:
        with _lock:
            lib = _loaded.get(key)  # another thread built it meanwhile
            if lib is not None:
                return lib
            target = _write_dir() / _file_name(key)
        _compile(compiler, source, target, key)
        _evict(target.parent)
        problem = verify(target, key)  # another process may have written it since
        if problem is not None:
            raise CompileError(f"the kernel just compiled to {target} {problem}")
        with _lock:
            lib = _loaded[key] = ctypes.CDLL(str(target))
            _building.pop(key, None)
        return lib
