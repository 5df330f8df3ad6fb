"""The pytest plugin of lazymat (entry point ``pytest11``): report header and settings.

It prints the installed backends and engines at the top of a test run, so that a CI
log says what the conformance suite was run against.
"""

from __future__ import annotations

import pytest


def pytest_report_header(config: pytest.Config) -> str:
    import lazymat

    backends = ", ".join(f"{name} {info['version']}" for name, info in lazymat.backends().items())
    return f"lazymat {lazymat.__version__}: backends [{backends}], engines {sorted(lazymat.engines())}"
