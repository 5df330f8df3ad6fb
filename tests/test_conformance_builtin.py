"""The conformance suite on the built-in backends (numpy and array-api-strict)."""

from __future__ import annotations

import lazymat.testing


class TestNumpyReference(lazymat.testing.BackendConformance):
    backend = "numpy"
    engine = "reference"


class TestArrayApiStrict(lazymat.testing.BackendConformance):
    backend = "array_api_strict"
    engine = "reference"
