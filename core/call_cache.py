"""Bounded, thread-safe caches of the call path: per formula structure, never per data.

A reduction inside an optimisation loop is called thousands of times on new arrays of the
same shapes. Everything that depends only on the formula's *structure*, the arrays'
*signatures* (type, shape, dtype, device) and the configuration is computed once and
kept here:

- ``prepared``: a LazyMatrix's formula -> its canonical spec and argument order
  (:meth:`lazymat.lazymatrix.LazyMatrix.prepare`), keyed on the formula's structure with
  the variables numbered in order of appearance, which bindings alias, the reduction, the
  axis, K and the block-sparsity ranges;
- ``requests``: the checked facts of a request (dtype, device, batch shape, N, M,
  namespace) per (spec, backend, tile budget, argument signatures)
  (:func:`lazymat.request.build_request`);
- ``engines``: the engines that support a request, per request key, exclusions and the
  registry's engines (:mod:`lazymat.dispatch`); an engine's ``supports`` is therefore asked
  once per key, and must depend only on what the key holds (spec, signatures, backend,
  tile budget, the installed software). Priorities (``priority_for``) are asked on every
  call, so an engine may still rank by size or by the environment;
- ``derivatives``: the VJP and JVP reductions of a spec (:mod:`lazymat.autodiff`): the
  symbolic derivatives are built once per (spec, wanted arguments, shapes of the extras),
  not at every backward.

Every cache is an LRU of bounded size behind a lock (threads share them). Keys hold
everything the cached value depends on, configuration included (the tile budget, the
forced engine, the registry object itself), so a change of configuration or a new
registry (``lazymat.plugin_manager.reset``) selects other entries rather than stale ones.
:func:`clear_caches` empties them all (tests, benchmarks of cold calls), and
:func:`cache_info` reports hits and misses.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

__all__ = ["LRUCache", "cache_info", "clear_caches"]

_MISSING = object()


class LRUCache:
    """A dict of at most ``maxsize`` entries, least recently used out first, behind a lock."""

    def __init__(self, name: str, maxsize: int) -> None:
        self.name = name
        self.maxsize = maxsize
        self.hits = 0
        self.misses = 0
        self._data: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        _CACHES[name] = self

    def get(self, key: Hashable, default: Any = None) -> Any:
        with self._lock:
            value = self._data.get(key, _MISSING)
            if value is _MISSING:
                self.misses += 1
                return default
            self._data.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def pop(self, key: Hashable) -> None:
        with self._lock:
            self._data.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._data)


_CACHES: dict[str, LRUCache] = {}


def clear_caches() -> None:
    """Empty every cache of the call path (the next calls recompute and refill them)."""
    for cache in list(_CACHES.values()):
        cache.clear()


def cache_info() -> dict[str, dict[str, int]]:
    """Entries, hits and misses of each cache, by name."""
    return {
        name: {"entries": len(c), "hits": c.hits, "misses": c.misses, "maxsize": c.maxsize}
        for name, c in _CACHES.items()
    }
