"""lazymat's conformance suite on the sample plugin (run by tests/test_sample_plugin.py).

Not collected by the main run (its name has no ``test_`` prefix): the plugin must be on the
path before lazymat loads its plugins, so it runs in a fresh pytest process.
"""

from __future__ import annotations

import lazymat.testing
from lazymat.plugin_manager import get_registry


class TestSample(lazymat.testing.BackendConformance):
    backend = "sample"


def test_zz_the_split_engine_ran_and_delegated() -> None:
    """Last in the file: the suite above went through the splitting engine, in many blocks."""
    engine = get_registry().engine("sample-split")
    assert engine.runs > 100 and engine.blocks > 4 * engine.runs
