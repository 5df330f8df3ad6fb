"""Registration of the jax backend and its engine (the ``lazymat`` entry point).

Loading this module must stay cheap: it does not import jax.
"""

from __future__ import annotations

from lazymat.plugin import Registry, hookimpl

from .backend import JaxBackend
from .engine import JaxXlaEngine


@hookimpl
def lazymat_register_backends(registry: Registry) -> None:
    registry.add_backend(JaxBackend())


@hookimpl
def lazymat_register_engines(registry: Registry) -> None:
    registry.add_engine(JaxXlaEngine())
