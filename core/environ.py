"""Reading environment variables on the hot path of a reduction.

``os.environ.get`` encodes its key and checks it at every call (about 1.5 us); options such as
``LAZYMAT_ENGINE`` are read several times per reduction, and a small reduction costs about 25 us
in all. This module has no lazymat imports, so every layer may use it.
"""

from __future__ import annotations

import os

#: os.environ's own table on POSIX (bytes -> bytes); None elsewhere
_ENVIRON: dict[bytes, bytes] | None = getattr(os.environ, "_data", None) if os.name == "posix" else None


def getenv(name: str) -> str | None:
    """``os.environ.get(name)`` without its per-call key encoding (1.5 us of a small
    reduction's 25, read several times per call): the same table, so a change made through
    ``os.environ[...] = ...`` is seen at once."""
    if _ENVIRON is None:
        return os.environ.get(name)
    value = _ENVIRON.get(name.encode())
    return None if value is None else os.fsdecode(value)
