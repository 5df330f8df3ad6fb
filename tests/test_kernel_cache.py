"""The native-cpu kernel cache under damage (issue 21): truncated and swapped libraries, a
read-only cache directory, a compiler that never returns.

Each case runs lazymat in a child process (a library that the fix fails to catch would
kill it with SIGBUS, not the test run) on a fresh cache directory; the child's results
are compared with dense float64 numpy written here.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from lazymat.builtin_engines import native_build
from lazymat.builtin_engines.native_build import find_compiler

pytestmark = pytest.mark.skipif(isinstance(find_compiler(), str), reason=f"no C compiler: {find_compiler()}")

X = np.linspace(-1, 1, 30).reshape(10, 3)
Y = np.linspace(0, 2, 60).reshape(20, 3)

#: the child: Gaussian sums of X, Y at the scales argv[2:] on native-cpu (forced unless
#: argv[1] is "dispatch"), printed as JSON, with the warnings it saw (but plugin loading's)
_CHILD = """
import json, sys, warnings, numpy as np, lazymat as lm
warnings.simplefilter("always")
x = np.linspace(-1, 1, 30).reshape(10, 3); y = np.linspace(0, 2, 60).reshape(20, 3)
engine = None if sys.argv[1] == "dispatch" else "native-cpu"
with warnings.catch_warnings(record=True) as seen:
    sums = [(-lm.Vi(x).sqdist(lm.Vj(y)) * float(c)).exp().sum(axis=1, engine=engine)[:, 0].tolist()
            for c in sys.argv[2:]]
# what other plugins say while loading is not this test's business
said = [str(w.message) for w in seen if "failed to load and is skipped" not in str(w.message)]
print(json.dumps({"sums": sums, "warnings": said}))
"""


def _dense(c: float) -> np.ndarray:
    return np.exp(-c * ((X[:, None] - Y[None]) ** 2).sum(-1)).sum(1)


def _scales(count: int) -> list[float]:
    """Scales no cache has seen (new kernels)."""
    return [1.0 + k + uuid.uuid4().int % 10**6 / 10**7 for k in range(count)]


def _run(tmp_path: Path, scales: list[float], mode: str = "forced", **env: str) -> dict[str, list]:
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(_CHILD))
    full_env = {**os.environ, "LAZYMAT_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1", **env}
    res = subprocess.run(
        [sys.executable, str(script), mode, *map(str, scales)], env=full_env, capture_output=True, text=True
    )
    assert res.returncode == 0, f"child died ({res.returncode}): {res.stderr[-3000:]}"
    out: dict[str, list] = json.loads(res.stdout.splitlines()[-1])
    for c, got in zip(scales, out["sums"], strict=True):
        np.testing.assert_allclose(got, _dense(c), rtol=1e-12)
    return out


def _libraries(directory: Path) -> list[Path]:
    return sorted(directory.glob("lm_*.so"))


@pytest.mark.parametrize("keep", [1024, "half"])
def test_a_truncated_library_is_rebuilt_not_loaded(tmp_path: Path, keep: int | str) -> None:
    scales = _scales(1)
    assert _run(tmp_path, scales)["warnings"] == []
    (lib,) = _libraries(tmp_path / "cache")
    data = lib.read_bytes()
    lib.write_bytes(data[: len(data) // 2 if keep == "half" else keep])
    second = _run(tmp_path, scales)
    assert len(second["warnings"]) == 1 and "is not loaded, the kernel is rebuilt" in second["warnings"][0]
    assert lib.read_bytes() == data  # rebuilt in place
    assert _run(tmp_path, scales)["warnings"] == []


def test_swapped_libraries_are_rebuilt(tmp_path: Path) -> None:
    """Two valid kernels' libraries exchanged: each would compute the other's formula (the
    issue saw errors of 221); both are caught by their key and rebuilt."""
    scales = _scales(2)
    _run(tmp_path, scales)
    first, second = _libraries(tmp_path / "cache")
    swap = tmp_path / "swap.so"
    shutil.move(first, swap)
    shutil.move(second, first)
    shutil.move(swap, second)
    out = _run(tmp_path, scales)
    assert len(out["warnings"]) == 2
    assert all("built for another kernel" in w for w in out["warnings"]), out["warnings"]


def test_a_flipped_byte_fails_verification(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    compiler = find_compiler()
    assert not isinstance(compiler, str)
    monkeypatch.setenv("LAZYMAT_CACHE_DIR", str(tmp_path))
    source = f"int lm_probe_{uuid.uuid4().hex}(void) {{ return 7; }}\n"
    native_build.build(source, compiler)
    key = native_build.kernel_key(source, compiler)
    (lib,) = _libraries(tmp_path)
    assert native_build.verify(lib, key) is None
    assert "another kernel" in str(native_build.verify(lib, key[::-1]))
    data = bytearray(lib.read_bytes())
    data[len(data) // 3] ^= 0x10
    # a new file put in place, as damage on disk would be: this process has the library
    # mapped, and rewriting that inode in place corrupts the running code (the test process
    # then died with SIGSEGV at exit, in the library's destructor)
    damaged = lib.with_name(lib.name + ".damaged")
    damaged.write_bytes(bytes(data))
    os.replace(damaged, lib)
    assert "content hash" in str(native_build.verify(lib, key))


@pytest.fixture
def read_only_cache() -> Iterator[Path]:
    """A cache directory that refuses new files: chmod 0o555 for a normal user; for root, whom
    permission bits do not stop, /sys (sysfs refuses file creation with EACCES, the error
    the issue saw)."""
    if os.geteuid() == 0:
        yield Path("/sys")
        return
    directory = Path(tempfile.mkdtemp(prefix="lazymat-ro-"))
    directory.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    yield directory
    directory.chmod(0o700)
    shutil.rmtree(directory)


def test_a_read_only_cache_directory_falls_back_with_one_warning(
    tmp_path: Path, read_only_cache: Path
) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    out = _run(tmp_path, _scales(2), LAZYMAT_CACHE_DIR=str(read_only_cache), TMPDIR=str(temp))
    assert len(out["warnings"]) == 1 and "cannot be written" in out["warnings"][0], out["warnings"]
    fallback = temp / f"lazymat-{os.getuid()}" / "kernels"
    assert len(_libraries(fallback)) == 2
    assert stat.S_IMODE((fallback.parent).stat().st_mode) == 0o700
    # the next process finds them there: nothing compiled, nothing to warn about
    assert _run(tmp_path, [], LAZYMAT_CACHE_DIR=str(read_only_cache), TMPDIR=str(temp))["warnings"] == []


#: a compiler that passes lazymat's probe (through the real one) and never finishes a kernel
_HANGING_CC = """#!/bin/sh
case "$*" in
  *--version*|*probe*) exec {cc} "$@" ;;
esac
echo kernel >> {log}
exec sleep 600
"""


def test_a_compiler_that_never_returns_times_out_and_dispatch_falls_back(tmp_path: Path) -> None:
    compiler = find_compiler()
    assert not isinstance(compiler, str)
    log = tmp_path / "compiles.log"
    fake = tmp_path / "hanging-cc"
    fake.write_text(_HANGING_CC.format(cc=" ".join(compiler.command), log=log))
    fake.chmod(0o755)
    env = {"LAZYMAT_CC": str(fake), "LAZYMAT_COMPILE_TIMEOUT": "2", "LAZYMAT_NATIVE_MIN_PAIRS": "0"}
    out = _run(tmp_path, _scales(2), mode="dispatch", **env)  # native-cpu would be first
    assert log.read_text().count("kernel") == 1  # one timeout, then the engine declines
    text = " ".join(out["warnings"])
    assert str(fake) in text and "did not finish within 2 s" in text, out["warnings"]
    assert "falling back to engine" in text


def test_compile_timeout_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LAZYMAT_COMPILE_TIMEOUT", raising=False)
    assert native_build.compile_timeout() == native_build.COMPILE_TIMEOUT_S == 120.0
    monkeypatch.setenv("LAZYMAT_COMPILE_TIMEOUT", "7.5")
    assert native_build.compile_timeout() == 7.5
    for bad in ("soon", "0", "-3"):
        monkeypatch.setenv("LAZYMAT_COMPILE_TIMEOUT", bad)
        expected = f"LAZYMAT_COMPILE_TIMEOUT must be a positive number of seconds, got '{bad}'"
        with pytest.raises(ValueError, match=expected):
            native_build.compile_timeout()
