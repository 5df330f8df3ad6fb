"""Plugin loading: no heavy import, broken plugins skipped with a warning, blocking by
name, third-party plugins found through entry points, every hook documented.

Each scenario runs in a fresh interpreter (plugins load once per process), with a
throw-away distribution (a ``*.dist-info`` folder with an ``entry_points.txt``) put on
``PYTHONPATH``: exactly what ``pip install`` of a plugin leaves behind.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import array_api_strict
import numpy as np
import pytest

import lazymat as lm
from lazymat import hookspecs

ROOT = Path(__file__).resolve().parents[1]

#: a reduction the subprocesses run and print, with its dense value for comparison
CHECK = """
import json, numpy as np, lazymat as lm
x = np.linspace(0, 1, 12).reshape(4, 3)
y = np.linspace(-1, 1, 15).reshape(5, 3)
value = (-lm.Vi(x).sqdist(lm.Vj(y))).exp().sum(axis=1)[:, 0].tolist()
"""


def dense_check_value() -> list[float]:
    x = np.linspace(0, 1, 12).reshape(4, 3)
    y = np.linspace(-1, 1, 15).reshape(5, 3)
    return list(np.exp(-((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)).sum(1))


def run_python(code: str, path: Path | None = None, **env: str) -> dict[str, Any]:
    """Run ``code`` in a fresh interpreter; it prints one JSON object as its last line."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("LAZYMAT_")}
    full_env.update(env)
    if path is not None:
        full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(path), full_env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=ROOT,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def make_distribution(where: Path, name: str, entry_points: dict[str, str], modules: dict[str, str]) -> None:
    """A minimal installed distribution: dist-info with entry points, and its modules."""
    info = where / f"{name}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    lines = "".join(f"{ep} = {target}\n" for ep, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[lazymat]\n{lines}")
    for module, source in modules.items():
        (where / f"{module}.py").write_text(textwrap.dedent(source))


BROKEN_IMPORT = "raise RuntimeError('the broken plugin exploded on import')\n"
TOY_ENGINE = """
import lazymat.plugin as lp


class ToyEngine(lp.Engine):
    '''Delegates to the best other engine (a third-party plugin, declared API only).'''

    name = "toy-engine"
    priority = -5
    runs = 0

    def supports(self, request):
        return True

    def run(self, request):
        ToyEngine.runs += 1
        return lp.run_request(request, exclude=[self.name])


@lp.hookimpl
def lazymat_register_engines(registry):
    registry.add_engine(ToyEngine())
"""


@pytest.fixture
def plugins(tmp_path: Path) -> Path:
    """A site folder with a plugin that fails to import and a working one."""
    make_distribution(
        tmp_path,
        "lazymat_test_plugins",
        {"broken": "lazymat_broken_import", "toy": "lazymat_toy_engine"},
        {"lazymat_broken_import": BROKEN_IMPORT, "lazymat_toy_engine": TOY_ENGINE},
    )
    return tmp_path


LOAD_AND_REPORT = """
import json, warnings
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    import lazymat as lm
    engines = sorted(lm.engines())
    from lazymat.plugin_manager import get_registry
print(json.dumps({
    "warnings": [f"{w.category.__name__}: {w.message}" for w in caught],
    "failed": get_registry().failed,
    "engines": engines,
}))
"""


def test_import_lazymat_imports_no_heavy_library() -> None:
    """Neither ``import lazymat`` nor loading the plugins (first reduction) imports torch/jax/cupy."""
    code = (
        "import sys, json\n"
        "heavy = ('torch', 'jax', 'jaxlib', 'cupy', 'pykeops')\n"
        "import lazymat\n"
        "at_import = [m for m in heavy if m in sys.modules]\n"
        + CHECK
        + "after = [m for m in heavy if m in sys.modules]\n"
        "print(json.dumps({'at_import': at_import, 'after_reduction': after, 'value': value}))\n"
    )
    out = run_python(code)
    assert out["at_import"] == []
    assert out["after_reduction"] == []
    np.testing.assert_allclose(out["value"], dense_check_value(), rtol=1e-13)


def test_disabled_plugins_are_not_loaded(plugins: Path) -> None:
    loaded = run_python(LOAD_AND_REPORT, plugins)
    assert "broken" in loaded["failed"] and "toy-engine" in loaded["engines"]
    out = run_python(LOAD_AND_REPORT, plugins, LAZYMAT_DISABLE_PLUGINS="broken, toy")
    assert not [w for w in out["warnings"] if "'broken'" in w]  # blocked before import: no warning
    assert "toy-engine" not in out["engines"]
    assert "broken" not in out["failed"]


def test_installed_plugins_can_be_disabled_by_name() -> None:
    """The real entry points (torch, jax, cupy plugins, when installed) obey the same switch."""
    from importlib.metadata import entry_points

    names = sorted(ep.name for ep in entry_points(group="lazymat"))
    code = (
        "import json\nfrom lazymat.plugin_manager import get_registry as r\n"
        "print(json.dumps({'b': sorted(r().backends), 'e': sorted(r().engines)}))"
    )
    everything = run_python(code)
    blocked = run_python(code, LAZYMAT_DISABLE_PLUGINS=",".join(names))
    assert set(blocked["b"]) == {"numpy", "array_api_strict"}
    assert set(blocked["e"]) <= set(everything["e"])
    assert "reference" in blocked["e"]
    for name in names:
        if name in everything["b"]:
            assert name not in blocked["b"]


def test_builtin_backends_are_listed_with_their_versions() -> None:
    listed = lm.backends()
    assert listed["numpy"]["version"] == np.__version__
    assert listed["array_api_strict"]["version"] == array_api_strict.__version__
    for name in ("numpy", "array_api_strict"):
        assert "cpu" in listed[name]["devices"]
    assert "reference" in lm.engines()


def hook_names() -> list[str]:
    """Every hook specification declared in lazymat.hookspecs."""
    return [
        name
        for name, obj in inspect.getmembers(hookspecs, inspect.isfunction)
        if hasattr(obj, "lazymat_spec") or name.startswith("lazymat_")
    ]


def test_every_hook_is_documented_in_the_readme() -> None:
    names = hook_names()
    assert {"lazymat_register_backends", "lazymat_register_engines"} <= set(names)
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"^## Hooks\n(.*?)(?=^## |\Z)", readme, flags=re.S | re.M)
    assert match, "README.md has no '## Hooks' section"
    section = match.group(1)
    missing = [name for name in names if f"`{name}(" not in section and f"`{name}`" not in section]
    assert not missing, f"hooks missing from the README's Hooks section: {missing}"
