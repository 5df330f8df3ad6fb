"""lazymat-torch: the PyTorch backend of lazymat.

It brings three things, registered through the ``lazymat`` entry point
(``lazymat_torch.plugin``):

- :class:`~lazymat_torch.backend.TorchBackend`: recognises torch tensors, their devices
  and dtypes, and wires reductions into ``torch.autograd`` with one generic
  ``torch.autograd.Function`` (gradients of any order);
- the ``torch-tiled`` engine (:mod:`lazymat_torch.tiled_engine`): blocked reductions
  with torch operations, squared distances and kernel products through GEMM;
- the ``keops`` engine (:mod:`lazymat_torch.keops_engine`): the same requests compiled
  by pykeops, when it is installed.

Importing this package does not import torch; the plugin imports it on first real use.
"""

__version__ = "0.1.0"
