"""lazymat-jax: the JAX backend of lazymat.

It brings, registered through the ``lazymat`` entry point (``lazymat_jax.plugin``):

- :class:`~lazymat_jax.backend.JaxBackend`: recognises jax arrays and tracers (under
  ``jit``, ``grad``, ``vmap``), their devices and dtypes, ``stop_gradient``, and the
  generic autodiff hook ``custom_vjp`` (a ``jax.custom_vjp`` function);
- the ``lazymat_reduce`` primitive (:mod:`lazymat_jax.primitive`): every reduction is one
  jax primitive whose forward-mode, transposition and batching rules are new reductions
  built from the core's symbolic derivatives, so ``jit``, ``vmap``, ``grad`` of any order,
  ``jvp``, ``jacfwd`` and ``hessian`` all work in linear memory;
- the ``jax-xla`` engine (:mod:`lazymat_jax.engine`): tiled reductions traced into XLA
  with ``lax.map`` over row tiles and ``lax.scan`` over column tiles.

Importing this package does not import jax; the plugin imports it on first real use.
"""

__version__ = "0.1.0"
