"""Recovery losses: pure functions of ``(z, y)`` built by small factories.

``generator`` below is any callable ``z -> x`` on one latent (a flow's ``G``, or a GAN's
generator); ``op`` is a forward operator (``op(x) -> y``) and ``noise`` a noise model with
``log_prob(delta)``. Build losses inside ``jax.vmap`` when operators or noise differ per image.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from flowinv.flows import Flow

Array = jax.Array
Loss = Callable[[Array, Array], Array]

PENALTIES = ("sq", "norm")


def flow_generator(flow: Flow, params: Any) -> Callable[[Array], Array]:
    """``z -> G(z)``: a flow's generative map as a plain generator."""
    return lambda z: flow.forward(params, z)[0]


def _latent_penalty(penalty: str) -> Callable[[Array], Array]:
    r"""``z -> ‖z‖²`` (``"sq"``) or ``z -> ‖z‖`` (``"norm"``, as :math:`\sqrt{\|z\|^2 +
    10^{-12}}`, which keeps the gradient finite at ``z = 0``, where the optimiser starts)."""
    if penalty not in PENALTIES:
        raise ValueError(f"penalty must be one of {PENALTIES}, got {penalty!r}")
    if penalty == "sq":
        return lambda z: jnp.sum(z**2)
    return lambda z: jnp.sqrt(jnp.sum(z**2) + 1e-12)


def asim_loss(generator: Callable[[Array], Array], op: Any, *, gamma: float,
              penalty: str = "sq") -> Loss:
    r"""Asim et al. (2020): :math:`\|f(G(z)) - y\|^2 + \gamma\|z\|^2` (``penalty="sq"``) or
    :math:`+\ \gamma\|z\|` (``penalty="norm"``). ``γ = 0`` with ``z0 = 0`` is their
    compressed-sensing formulation (regularised by the optimiser alone)."""
    size = _latent_penalty(penalty)

    def loss(z: Array, y: Array) -> Array:
        return jnp.sum((op(generator(z)) - y) ** 2) + gamma * size(z)

    return loss


def bora_loss(generator: Callable[[Array], Array], op: Any, *, lam: float) -> Loss:
    r"""Bora et al. (2017), CSGM: :math:`\|f(G(z)) - y\|^2 + \lambda\|z\|^2`."""

    def loss(z: Array, y: Array) -> Array:
        return jnp.sum((op(generator(z)) - y) ** 2) + lam * jnp.sum(z**2)

    return loss


def mle_loss(generator: Callable[[Array], Array], op: Any, noise: Any) -> Loss:
    r"""Whang et al. (2021) §3.3, for priors without a likelihood (GANs):
    :math:`-\log p_\Delta(y - f(G(z)))`."""

    def loss(z: Array, y: Array) -> Array:
        return -noise.log_prob(y - op(generator(z)))

    return loss


def latent_map_loss(generator: Callable[[Array], Array], op: Any, noise: Any, *, beta: float,
                    penalty: str = "sq") -> Loss:
    r"""The noise model's likelihood with a latent penalty:
    :math:`-\log p_\Delta(y - f(G(z))) + \beta\|z\|^2` (``penalty="sq"``) or
    :math:`+\ \beta\|z\|` (``"norm"``).

    With ``"sq"`` and ``β = ½`` it is the mode of the *latent* posterior
    :math:`p(z \mid y) \propto p_\Delta(y - f(G(z)))\,\mathcal N(z; 0, I)`, for a flow or a
    GAN alike: Whang et al.'s MAP (:func:`map_loss`) reads the prior as the image density
    :math:`p_G(G(z))`, which adds :math:`\log|\det \partial G/\partial z|`; this one keeps
    only the latent's Gaussian. Against :func:`asim_loss` (the same penalties) it swaps the
    squared error for the noise model."""
    size = _latent_penalty(penalty)

    def loss(z: Array, y: Array) -> Array:
        return -noise.log_prob(y - op(generator(z))) + beta * size(z)

    return loss


def map_loss(flow: Flow, params: Any, op: Any, noise: Any, *, beta: float,
             space: str = "z") -> Loss:
    r"""Whang et al. MAP loss :math:`-\log p_\Delta(y - f(G(z))) - \beta \log p_G(G(z))`.

    With ``space="z"`` the variable is the latent and
    :math:`\log p_G(G(z)) = \log\mathcal N(z; 0, I) - \log|\det \partial G/\partial z|`
    comes from one forward pass (:meth:`Flow.forward_log_prob`, which keeps it bounded where a
    logit flow generates pixels outside ``[0, 1]``: without that, the loss has no minimum).
    With ``space="x"`` the variable is the image itself, flattened
    (``x = v.reshape(H, W, C)``), and :math:`\log p_G` comes from the inverse pass at
    :meth:`Flow.into_box` of ``x`` (``x`` clipped to ``[0, 1]`` for a logit flow, whose density
    ends there; ``x`` itself otherwise), while the noise density sees ``x``: a pixel pushed
    beyond the box costs the prior term the box edge's density and the data term pulls it
    back, where reading the prior at ``x`` itself would be NaN. :func:`flowinv.recover`
    returns ``into_box(x)`` and its latent.
    """
    if space not in ("z", "x"):
        raise ValueError(f"space must be 'z' or 'x', got {space!r}")

    if space == "z":
        def loss(z: Array, y: Array) -> Array:
            x, log_pg = flow.forward_log_prob(params, z)
            return -noise.log_prob(y - op(x)) - beta * log_pg
    else:
        def loss(v: Array, y: Array) -> Array:
            x = v.reshape(flow.image_shape)
            return (-noise.log_prob(y - op(x))
                    - beta * flow.log_prob(params, flow.into_box(x)))

    return loss
