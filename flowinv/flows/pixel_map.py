"""The fixed pixel map that opens a flow's normalising direction: centring or RealNVP's logit."""

from __future__ import annotations

import jax.numpy as jnp

from flowinv.flows.base import Array, Params
from flowinv.flows.layers import Logit

PREPROCESSES = ("center", "logit")


class PixelMap:
    r"""Mixin of the flows whose first layer (normalising direction) is a fixed pixel map,
    chosen by the dataclass field ``preprocess``:

    * ``"center"``: :math:`h = x - \tfrac12` (Glow), log-det 0, defined on all of
      :math:`\mathbb R^n`;
    * ``"logit"``: :math:`h = \operatorname{logit}(\alpha + (1-2\alpha)x)` (RealNVP,
      :class:`~flowinv.flows.layers.Logit`), whose density ends at the data box ``[0, 1]``.

    The class supplies ``preprocess`` and ``_forward(params, z, in_box=False)``; the mixin
    gives the map in both directions, the box, and the in-box generative log-det of
    :meth:`Flow.forward_log_prob`. Put it before :class:`Flow` in the bases.
    """

    preprocess: str

    @property
    def box(self) -> tuple[float, float] | None:
        """``(0, 1)`` for a logit flow (its density is NaN outside), else ``None``."""
        return (0.0, 1.0) if self.preprocess == "logit" else None

    def _pre_inverse(self, x: Array) -> tuple[Array, Array]:
        """``x -> h`` and its log-det."""
        if self.preprocess == "logit":
            return Logit().inverse_and_log_det({}, x)
        return x - 0.5, jnp.zeros((), x.dtype)

    def _pre_forward(self, h: Array, in_box: bool = False) -> tuple[Array, Array]:
        """``h -> x`` and its log-det (the logit's restricted to the box with ``in_box``)."""
        if self.preprocess == "logit":
            x, logdet = Logit().forward_and_log_det({}, h)
            return x, Logit().forward_log_det_in_box(h) if in_box else logdet
        return h + 0.5, jnp.zeros((), h.dtype)

    def _forward_in_box(self, params: Params, z: Array) -> tuple[Array, Array]:
        return self._forward(params, z, in_box=True)
