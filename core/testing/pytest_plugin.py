"""The pytest plugin of lazymat (entry point ``pytest11``): report header and selection.

It prints the installed backends and engines at the top of a test run, so that a CI
log says what the conformance suite was run against, and deselects the conformance tests
that a class's ``selection`` predicate rejects (see :mod:`lazymat.testing`).
"""

from __future__ import annotations

import pytest


def pytest_report_header(config: pytest.Config) -> str:
    try:  # a header must never break a test run
        import lazymat

        backends = ", ".join(f"{name} {info['version']}" for name, info in lazymat.backends().items())
        return f"lazymat {lazymat.__version__}: backends [{backends}], engines {sorted(lazymat.engines())}"
    except Exception as exc:
        return f"lazymat: could not list backends and engines ({type(exc).__name__}: {exc})"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from lazymat.testing import BackendConformance

    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        cls = getattr(item, "cls", None)
        conformance = isinstance(cls, type) and issubclass(cls, BackendConformance)
        select = getattr(cls, "selection", None) if conformance else None
        (kept if select is None or select(item.name) else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
