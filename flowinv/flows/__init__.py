"""Normalizing flows as pure functions: Glow, RealNVP and their layers."""

from flowinv.flows.base import Flow, StepStack, num_params, standard_normal_log_prob
from flowinv.flows.chain import Chain, LayerChain, Squeeze, chain
from flowinv.flows.glow import Glow, glow
from flowinv.flows.realnvp import RealNVP, realnvp

__all__ = ["Chain", "Flow", "Glow", "LayerChain", "RealNVP", "Squeeze", "StepStack", "chain",
           "glow", "num_params", "realnvp", "standard_normal_log_prob"]
