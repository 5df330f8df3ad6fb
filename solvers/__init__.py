"""Backend-neutral solvers written against the array API and LazyMatrix."""

from .conjugate_gradient import CGInfo, ConvergenceWarning, cg
from .free_barycenter import FreeBarycenterResult, free_support_barycenter
from .grid_barycenter import GridBarycenter, barycenter_grid
from .grid_sinkhorn import solve_grid
from .hamiltonian_flow import flow, hamiltonian, shoot, shoot_with_adjoint
from .images_loss import ImagesLoss
from .kernels import Kernel, cauchy, gaussian
from .laguerre import LaguerreResult, anisotropic_cost, laguerre_cells
from .lazy_plan import TransportPlan
from .lbfgs_minimizer import LBFGSInfo, lbfgs
from .linear_operator import aslinearoperator
from .matrix_ot import solve
from .matrix_plan import MatrixPlan
from .normalized_cometric import NormalizedKernel, normalized
from .ot_result import OTResult
from .preconditioners import jacobi, nystrom
from .registration import KernelNormLoss, RegistrationResult, register
from .samples_loss import SamplesLoss
from .sinkhorn_divergence import sinkhorn

__all__ = [
    "CGInfo",
    "ConvergenceWarning",
    "GridBarycenter",
    "FreeBarycenterResult",
    "ImagesLoss",
    "Kernel",
    "KernelNormLoss",
    "LaguerreResult",
    "LBFGSInfo",
    "MatrixPlan",
    "NormalizedKernel",
    "OTResult",
    "RegistrationResult",
    "SamplesLoss",
    "TransportPlan",
    "anisotropic_cost",
    "aslinearoperator",
    "barycenter_grid",
    "cauchy",
    "cg",
    "flow",
    "free_support_barycenter",
    "gaussian",
    "hamiltonian",
    "jacobi",
    "laguerre_cells",
    "lbfgs",
    "normalized",
    "nystrom",
    "register",
    "shoot",
    "shoot_with_adjoint",
    "sinkhorn",
    "solve",
    "solve_grid",
]
