"""Backend-neutral solvers written against the array API and LazyMatrix."""

from .samples_loss import SamplesLoss
from .sinkhorn import SinkhornResult, sinkhorn

__all__ = ["SamplesLoss", "SinkhornResult", "sinkhorn"]
