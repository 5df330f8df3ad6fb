"""Outside code cannot break lazymat: every way a plugin can go wrong, as installed code.

Each broken plugin is a real installed distribution (a ``*.dist-info`` with entry points,
on ``PYTHONPATH``: what ``pip install`` leaves) loaded by a fresh interpreter. The checks:
one warning naming the plugin, the problem and the fix; nothing the plugin registered
stays; a numpy reduction still equals its dense value, ``lazymat info`` still reports, the
other plugins (a toy engine written against the declared API) still run, and pytest runs
with all of them installed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from test_plugins import CHECK, TOY_ENGINE, dense_check_value, make_distribution, run_python

_ORPHAN_AND_FAKE_NUMPY = """
import lazymat.plugin as lp

class Fake(lp.Backend):
    name, module = "numpy", "fakelib"

class Orphan(lp.Engine):
    name = "orphan"
    def supports(self, request):
        return False
    def run(self, request):
        return ()

@lp.hookimpl
def lazymat_register_engines(registry):
    registry.add_engine(Orphan())

@lp.hookimpl
def lazymat_register_backends(registry):
    registry.add_backend(Fake())
"""

#: one broken plugin per way a plugin can go wrong: name -> (module source, warning pattern)
BROKEN: dict[str, tuple[str, str]] = {
    "import_error": (
        "raise RuntimeError('the broken plugin exploded on import')\n",
        r"failed to import: RuntimeError: the broken plugin exploded on import",
    ),
    "system_exit": ("import sys\nsys.exit(3)\n", r"failed to import: SystemExit: 3"),
    "misspelt_hook": (
        "import lazymat.plugin as lp\n@lp.hookimpl\ndef lazymat_register_backend(registry):\n    pass\n",
        r"implements 'lazymat_register_backend', which is not a lazymat hook "
        r"\(did you mean 'lazymat_register_backends'\?\); fix the plugin's hook names",
    ),
    "wrong_arguments": (
        "import lazymat.plugin as lp\n@lp.hookimpl\ndef lazymat_register_engines(registry, device):\n"
        "    pass\n",
        r"PluginValidationError: .*lazymat_register_engines.*device",
    ),
    "hook_raises": (
        "import lazymat.plugin as lp\n@lp.hookimpl\ndef lazymat_register_engines(registry):\n"
        "    raise KeyError('no such device')\n",
        r"failed in lazymat_register_engines: KeyError: 'no such device'",
    ),
    "engine_without_supports": (
        "import lazymat.plugin as lp\nclass Half(lp.Engine):\n    name = 'half'\n"
        "    def run(self, request):\n        return ()\n"
        "@lp.hookimpl\ndef lazymat_register_engines(registry):\n    registry.add_engine(Half())\n",
        r"engine Half does not define supports\(request\): an Engine subclass must define",
    ),
    "backend_name_taken": (
        _ORPHAN_AND_FAKE_NUMPY,
        r"a backend named 'numpy' is already registered by plugin 'builtin', so plugin "
        r"'backend_name_taken' cannot register another one: rename one of them",
    ),
}

#: run in a subprocess: warnings, registry, a numpy reduction, the toy engine, ``lazymat info``
LOAD_AND_REPORT = """
import contextlib, io, json, warnings
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    import numpy as np, lazymat as lm
    from lazymat import cli
    from lazymat.plugin_manager import get_registry
    x = np.linspace(0, 1, 12).reshape(4, 3)
    y = np.linspace(-1, 1, 15).reshape(5, 3)
    value = (-lm.Vi(x).sqdist(lm.Vj(y))).exp().sum(axis=1)[:, 0].tolist()
    toy = get_registry().engines.get("toy-engine")
    with lm.config(engine="toy-engine") if toy else contextlib.nullcontext():
        toy_value = (-lm.Vi(x).sqdist(lm.Vj(y))).exp().sum(axis=1)[:, 0].tolist()
    info = cli.collect_info()
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        cli.print_info(info)
print(json.dumps({
    "toy_runs": getattr(toy, "runs", None),
    "warnings": [f"{w.category.__name__}: {w.message}" for w in caught],
    "failed": get_registry().failed,
    "engines": sorted(lm.engines()),
    "owners": {f"{k}:{n}": o for (k, n), o in get_registry().owners.items()},
    "value": value,
    "toy_value": toy_value,
    "info_plugins": info["plugins"],
    "printed": printed.getvalue(),
}))
"""


def broken_site(where: Path, *names: str) -> Path:
    """A site folder: one distribution per broken plugin of ``names``, and the toy engine."""
    for name in names:
        module = f"lazymat_{name}"
        make_distribution(where, module, {name: module}, {module: BROKEN[name][0]})
    make_distribution(where, "lazymat_toy", {"toy": "lazymat_toy_engine"}, {"lazymat_toy_engine": TOY_ENGINE})
    return where


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_a_broken_plugin_is_skipped_whole_with_one_warning(name: str, tmp_path: Path) -> None:
    out = run_python(LOAD_AND_REPORT, broken_site(tmp_path, name))
    mine = [w for w in out["warnings"] if f"lazymat plugin {name!r} is skipped" in w]
    assert len(mine) == 1, out["warnings"]
    assert mine[0].startswith("PluginWarning: "), mine[0]
    assert re.search(BROKEN[name][1], mine[0]), mine[0]
    assert name in out["failed"] and name in out["info_plugins"]["failed"]
    assert name not in out["info_plugins"]["loaded"]
    assert re.search(rf"^  {name} +\S+ +FAILED: ", out["printed"], flags=re.M), out["printed"]
    assert not [key for key, owner in out["owners"].items() if owner == name]
    assert "orphan" not in out["engines"]  # a plugin that lost a name keeps none of its engines
    np.testing.assert_allclose(out["value"], dense_check_value(), rtol=1e-13)
    np.testing.assert_allclose(out["toy_value"], dense_check_value(), rtol=1e-13)
    assert out["toy_runs"] == 1 and "toy" in out["info_plugins"]["loaded"]


def test_two_distributions_with_one_entry_point_name(tmp_path: Path) -> None:
    """One loads, the other is ignored; the warning and ``lazymat info`` name both distributions."""
    other = TOY_ENGINE.replace("toy-engine", "other-engine")
    for dist, module, source in (
        ("first_dist", "lazymat_toy_a", TOY_ENGINE),
        ("second_dist", "lazymat_toy_b", other),
    ):
        make_distribution(tmp_path, dist, {"toy": module}, {module: source})
    code = LOAD_AND_REPORT.replace(
        '"engines": sorted(lm.engines()),', '"engines": sorted(get_registry().engines),'
    )
    out = run_python(code, tmp_path)
    dup = [w for w in out["warnings"] if "two installed distributions provide the lazymat plugin 'toy'" in w]
    assert len(dup) == 1, out["warnings"]
    found = re.search(r": (\w+) 0\.1 \((\w+)\) is loaded, (\w+) 0\.1 \((\w+)\) is ignored", dup[0])
    assert found and {found[1], found[3]} == {"first_dist", "second_dist"}, dup[0]
    loaded, ignored = (
        ("toy-engine", "other-engine") if found[2] == "lazymat_toy_a" else ("other-engine", "toy-engine")
    )
    assert loaded in out["engines"] and ignored not in out["engines"]
    assert "toy" in out["info_plugins"]["shadowed"]
    assert re.search(r"^  toy +DUPLICATE: two installed", out["printed"], flags=re.M)
    np.testing.assert_allclose(out["value"], dense_check_value(), rtol=1e-13)


def test_pytest_runs_with_every_broken_plugin_installed(tmp_path: Path) -> None:
    """lazymat installs a pytest plugin: broken third-party plugins must not break a test run."""
    site = broken_site(tmp_path / "site", *BROKEN)
    test_file = tmp_path / "test_user.py"
    test_file.write_text(
        textwrap.dedent(CHECK)
        + "\n\ndef test_user():\n"
        + f"    np.testing.assert_allclose(value, {dense_check_value()!r}, rtol=1e-13)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAZYMAT_")}
    env["PYTHONPATH"] = str(site)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test_file)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "INTERNALERROR" not in proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout
