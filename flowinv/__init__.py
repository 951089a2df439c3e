"""flowinv: imaging inverse problems with normalizing-flow priors, in JAX."""

from flowinv.flows import Flow, Glow, RealNVP, glow, num_params, realnvp

__version__ = "0.1.0"

__all__ = ["Flow", "Glow", "RealNVP", "glow", "num_params", "realnvp"]
