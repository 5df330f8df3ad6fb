"""The ``lazymat`` command: ``lazymat info`` and ``lazymat demo``, run as a user runs them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_plugins import BROKEN_IMPORT, make_distribution

import lazymat as lm
from lazymat import cli, demo

SCRIPT = Path(sys.executable).parent / "lazymat"
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "lazymat.cli"]


def lazymat(*args: str, pythonpath: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("LAZYMAT_")}
    full_env.update(env)
    if pythonpath is not None:
        full_env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run([*COMMAND, *args], capture_output=True, text=True, env=full_env, timeout=1800)


def test_info_lists_backends_engines_and_config() -> None:
    proc = lazymat("info")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert re.search(rf"^  numpy +{re.escape(np.__version__)} +devices: cpu", out, flags=re.M)
    for name, description in lm.engines().items():
        assert re.search(
            rf"^  {re.escape(name)} +priority +-?\d+  {re.escape(description)}$", out, flags=re.M
        )
    assert re.search(r"^  backend +inferred from the inputs  \[default\]$", out, flags=re.M)
    assert "no LAZYMAT_* variable set" in out


def test_info_json_and_where_the_config_comes_from(tmp_path: Path) -> None:
    make_distribution(
        tmp_path,
        "lazymat_broken_cli",
        {"broken-cli": "lazymat_broken_cli_mod"},
        {"lazymat_broken_cli_mod": BROKEN_IMPORT},
    )
    proc = lazymat(
        "info", "--json", pythonpath=tmp_path, LAZYMAT_ENGINE="reference", LAZYMAT_TILE_BYTES="65536"
    )
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["lazymat"] == lm.__version__
    assert info["backends"]["numpy"]["version"] == np.__version__
    assert info["backends"]["numpy"]["devices"] == ["cpu"]
    assert set(info["engines"]) == set(lm.engines())
    priorities = [e["priority"] for e in info["engines"].values()]
    assert priorities == sorted(priorities, reverse=True)
    assert "the broken plugin exploded on import" in info["plugins"]["failed"]["broken-cli"]
    assert info["config"]["engine"] == {"value": "reference", "source": "environment LAZYMAT_ENGINE"}
    assert info["config"]["tile_bytes"] == {"value": 65536, "source": "environment LAZYMAT_TILE_BYTES"}
    assert info["environment"] == {"LAZYMAT_ENGINE": "reference", "LAZYMAT_TILE_BYTES": "65536"}


def test_info_reports_a_bad_environment_instead_of_crashing() -> None:
    proc = lazymat("info", LAZYMAT_ENGINE="nope", LAZYMAT_DISABLE_PLUGINS="torch")
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"engine +None  \[error: environment variable LAZYMAT_ENGINE='nope'", proc.stdout)
    if "torch" in lm.plugin_manager.get_registry().backends:
        assert re.search(r"^  torch +\S+ +disabled by LAZYMAT_DISABLE_PLUGINS$", proc.stdout, flags=re.M)


def test_demo_runs_and_checks_itself() -> None:
    proc = lazymat("demo", "--n", "2000", "--quick")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "N = M = 2000 points" in out
    assert "a dense N x M float32 matrix would take 15.3 MB" in out  # 2000^2 * 4 bytes
    for task in ("nearest neighbours \\(argKmin\\)", "Gaussian kernel product"):
        assert re.search(rf"{task}.*: [\d.]+ s, peak numpy allocations [\d.]+ [KMG]?B", out), task
    # the demo compares with dense numpy itself; the errors it prints must be small
    knn = re.search(r"neighbour distances off by at most ([\d.e+-]+)", out)
    kp = re.search(r"kernel product relative error ([\d.e+-]+)", out)
    assert knn and kp, out
    assert float(knn.group(1)) < 1e-5
    assert float(kp.group(1)) < 1e-5


def test_demo_rejects_a_bad_size() -> None:
    proc = lazymat("demo", "--n", "0")
    assert proc.returncode == 2
    assert "--n must be a positive number of points, got 0" in proc.stderr


def test_no_command_is_an_error() -> None:
    proc = lazymat()
    assert proc.returncode == 2
    assert "info" in proc.stderr and "demo" in proc.stderr


def test_extra_demos_run_after_the_main_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[bool] = []

    def extra(quick: bool) -> None:
        calls.append(quick)
        print("extra demo ran")

    monkeypatch.setattr(demo, "EXTRA_DEMOS", [extra])
    assert cli.main(["demo", "--n", "300", "--quick"]) == 0
    out = capsys.readouterr().out
    assert calls == [True]
    assert out.index("kernel product relative error") < out.index("extra demo ran")


def test_demo_size_follows_the_engine(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With only the reference engine, the default N is the one sized for it (patched small here)."""
    monkeypatch.setattr(demo, "REFERENCE_N", 400)
    with lm.config(engine="reference"):
        demo.main_demo()
    out = capsys.readouterr().out
    assert "N = M = 400 points" in out
    assert "only the reference engine runs numpy here" in out
    assert "engines: 'reference' (nearest neighbours), 'reference' (kernel product)" in out
