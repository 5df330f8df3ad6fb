"""The epsilon-scaling (annealing) schedule of the Sinkhorn loop, as in GeomLoss.

The temperature eps starts at diameter**p, where the entropic problem is nearly a
convolution and Sinkhorn converges in a step, and decreases geometrically by a factor
scaling**p per iteration down to the target blur**p (J. Feydy, "Geometric data analysis,
beyond convolutions", 2020, section 3.3.3). With blur = sigma, eps = sigma**p is the
temperature of the Gibbs kernel exp(-|x - y|**p / (p eps)).

The list is the one GeomLoss 0.3 builds, value for value:
``[d**p] + [exp(e) for e in arange(p log d, p log blur, p log scaling)] + [blur**p]``,
so that the iterations, and hence the results, agree step for step.
"""

from __future__ import annotations

import math
from typing import Any

import lazymat


def epsilon_schedule(p: float, diameter: float, blur: float, scaling: float) -> list[float]:
    """Temperatures of the successive Sinkhorn iterations, from diameter**p to blur**p."""
    start, stop, step = p * math.log(diameter), p * math.log(blur), p * math.log(scaling)
    count = max(0, math.ceil((stop - start) / step))  # numpy.arange's length rule
    return [diameter**p] + [math.exp(start + k * step) for k in range(count)] + [blur**p]


def max_diameter(xp: Any, x: Any, y: Any) -> float:
    """Diagonal of the bounding box of both clouds (all batches): an upper bound of |x_i - y_j|."""
    stop = lazymat.backend_for(x).stop_gradient
    x, y = stop(x), stop(y)
    d = x.shape[-1]
    pts = xp.concat((xp.reshape(x, (-1, d)), xp.reshape(y, (-1, d))), axis=0)
    extent = xp.max(pts, axis=0) - xp.min(pts, axis=0)
    try:
        return float(xp.sqrt(xp.sum(extent * extent)))
    except TypeError as err:  # jax's ConcretizationTypeError: traced under jax.jit
        raise TypeError(
            "the clouds' diameter is needed to build the annealing schedule before the "
            "computation, but these arrays have no values yet (jax.jit?): pass diameter=..."
        ) from err


def check_scales(blur: float, reach: float | None, diameter: float | None, scaling: float) -> None:
    """Clear errors for scales that define no schedule or no problem."""
    for name, v in (("blur", blur), ("reach", reach), ("diameter", diameter)):
        if v is None and name != "blur":
            continue
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v <= 0:
            raise ValueError(f"{name} must be a positive finite number, got {v!r}")
    if not isinstance(scaling, (int, float)) or not 0 < scaling < 1:
        raise ValueError(f"scaling must be a number in (0, 1), got {scaling!r}")
