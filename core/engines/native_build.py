"""Compiling generated C kernels with the system compiler, and the on-disk kernel cache.

The compiler is ``$LAZYMAT_CC`` (a command, arguments allowed, e.g. ``"ccache gcc"``) or
the first of ``cc``, ``gcc``, ``clang`` on the PATH. It is probed once per process with a
tiny OpenMP program; flags fall back from ``-march=native -fopenmp`` to portable code and
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
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
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
_COMPILE_TIMEOUT_S = 600
#: kernels kept in the cache directory (least recently used ones go first)
MAX_CACHED_KERNELS = 2000
#: age after which a temporary file of a build is considered abandoned
_STALE_TEMP_S = 3600


class CompileError(RuntimeError):
    """The C compiler rejected a generated kernel (a bug in the code generator)."""


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
_loaded: dict[Path, ctypes.CDLL] = {}
_private_dir: list[Path] = []  # fallback when the cache directory cannot be created


def _candidates() -> list[tuple[str, ...]]:
    env = os.environ.get("LAZYMAT_CC")
    if env:
        return [tuple(shlex.split(env))]
    return [(name,) for name in ("cc", "gcc", "clang") if shutil.which(name)]


def _cpu_fingerprint() -> str:
    """What ``-march=native`` depends on: the CPU model and its feature flags."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.machine() + platform.processor()
    keep = [line for line in text.splitlines() if line.startswith(("model name", "flags", "Features"))]
    return platform.machine() + "\n".join(sorted(set(keep)))


def _run(argv: list[str], cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=_COMPILE_TIMEOUT_S, cwd=cwd, check=False
    )


def _probe(command: tuple[str, ...]) -> Compiler | str:
    """A Compiler if ``command`` builds and loads an OpenMP shared object, else the reason."""
    if shutil.which(command[0]) is None:
        return f"{command[0]!r} not found"
    try:
        version = _run([*command, "--version"]).stdout.splitlines()[:1]
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


def _compile(compiler: Compiler, source: str, target: Path) -> None:
    """Compile ``source`` to ``target`` through a private temporary file and an atomic rename."""
    directory = target.parent
    src = directory / (target.stem + ".c")
    _atomic_write(src, source)  # kept next to the library, for reading and debugging
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{target.stem}-", suffix=".so")
    os.close(fd)
    try:
        res = _run([*compiler.command, *compiler.flags, "-o", tmp, str(src), "-lm"])
        if res.returncode != 0:
            raise CompileError(
                f"{' '.join(compiler.command)} could not compile the generated kernel {src}:\n"
                + res.stderr[-4000:]
            )
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


def kernel_path(source: str, compiler: Compiler) -> Path:
    """Where the shared library of ``source`` built by ``compiler`` is cached."""
    key = hashlib.sha256((compiler.identity + "\n" + source).encode()).hexdigest()[:40]
    directory = cache_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:  # read-only home: one private directory for this process
        if not _private_dir:
            _private_dir.append(Path(tempfile.mkdtemp(prefix="lazymat-kernels-")))
        directory = _private_dir[0]
    return directory / f"lm_{key}.so"


def build(source: str, compiler: Compiler) -> ctypes.CDLL:
    """The loaded shared library of ``source``: from this process, the disk cache, or compiled."""
    target = kernel_path(source, compiler)
    with _lock:
        lib = _loaded.get(target)
        if lib is not None:
            return lib
        if target.exists():
            with contextlib.suppress(OSError):
                os.utime(target)  # last use, for the eviction order
        else:
            _compile(compiler, source, target)
            _evict(target.parent)
        try:
            lib = ctypes.CDLL(str(target))
        except OSError:  # damaged by something outside lazymat: build it again
            _compile(compiler, source, target)
            lib = ctypes.CDLL(str(target))
        _loaded[target] = lib
        return lib
