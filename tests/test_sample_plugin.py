"""A third-party plugin written against ``lazymat.plugin`` only passes the conformance suite.

``tests/sample_plugin`` is an installed distribution (``lazymat_sample-0.1.dist-info`` with its
``lazymat`` entry point, and the package): an array library of its own (a Tensor type and its
array-API namespace), a backend, and an engine that splits every request into blocks of
rows and columns, delegates each block to the best other engine and merges the partial
results. With it on the path, a fresh pytest process runs lazymat's whole conformance suite
on the sample backend (every reduction and gradient against dense float64, block-sparsity,
far-from-origin data, every operation); the plugin's imports are checked in
``tests/test_plugin_api.py``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SITE = Path(__file__).resolve().parent / "sample_plugin"


@pytest.mark.slow
def test_the_sample_plugin_passes_the_conformance_suite() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAZYMAT_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SITE), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:xdist",
            str(SITE / "conformance_sample.py"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=SITE,
        timeout=3600,
    )
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed.group(1)) > 200, summary
    assert "failed" not in summary and "error" not in summary, summary
