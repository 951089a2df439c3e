r"""A flow of your own from flowinv's layers (or yours): :class:`Chain` and :func:`chain`.

A chain applies its layers in turn in the normalising direction and undoes them in reverse:

.. math:: G^{-1} = f_L \circ \dots \circ f_1, \qquad
          \log\Big|\det \frac{\partial z}{\partial x}\Big|
          = \sum_{l=1}^{L} \log\Big|\det \frac{\partial f_l}{\partial h_{l-1}}\Big|,
          \quad h_0 = x,\ z = \operatorname{vec}(h_L).

Every layer follows the contract of :mod:`flowinv.flows.layers`: ``init(key, x_batch) ->
(params, h_batch)``, ``inverse_and_log_det(params, h)`` and ``forward_and_log_det(params, h)``,
one event per call. That covers :class:`~flowinv.flows.layers.ActNorm`,
:class:`~flowinv.flows.layers.InvConv1x1`, the couplings, :class:`~flowinv.flows.layers.Logit`,
:class:`Squeeze`, a :class:`~flowinv.flows.StepStack` (``K`` identical steps in one
``lax.scan``), and a layer of your own. The latent is the last layer's output, flattened, and is
modelled as standard normal; there are no multi-scale split priors (a Glow has them).

The chain's layers are a Python sequence, traced once into one program: for many identical
steps put them in a :class:`~flowinv.flows.StepStack`, whose ``lax.scan`` keeps the compile time
flat in the number of steps.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp

from flowinv.flows.base import Array, Flow, Params
from flowinv.flows.layers import Logit, squeeze, unsqueeze

_CONTRACT = ("init", "inverse_and_log_det", "forward_and_log_det")


@dataclasses.dataclass(frozen=True)
class Squeeze:
    """Space-to-depth ``(H, W, C) -> (H/2, W/2, 4C)`` as a layer (no params, log-det 0); the
    generative direction is its exact inverse, depth-to-space."""

    def inverse_and_log_det(self, params: Params, x: Array) -> tuple[Array, Array]:
        del params
        return squeeze(x), jnp.zeros((), x.dtype)

    def forward_and_log_det(self, params: Params, z: Array) -> tuple[Array, Array]:
        del params
        return unsqueeze(z), jnp.zeros((), z.dtype)

    def init(self, key: Array, x_batch: Array) -> tuple[Params, Array]:
        del key
        return {}, jax.vmap(squeeze)(x_batch)


class Chain(Flow):
    """Base class of the flows made of a sequence of layers (see the module docstring).

    A subclass is a frozen dataclass with ``image_shape`` and fields of its own, and gives its
    layers, in normalising order, from :meth:`bijections`. Its fields are then all a sidecar
    needs: after :func:`flowinv.checkpoints.register_flow`, it saves, loads and trains like a
    shipped flow::

        @dataclasses.dataclass(frozen=True)
        class SmallFlow(Chain):
            image_shape: tuple[int, int, int]
            width: int = 32

            def bijections(self):
                c = 4 * self.image_shape[-1]
                return (Squeeze(),) + tuple(
                    layer for k in range(4) for layer in
                    (ActNorm(), InvConv1x1(c, seed=(k,)), ChannelCoupling(c, self.width)))

    For a chain in a notebook that needs no sidecar, :func:`chain` takes the layers directly.

    Params: a tuple with one entry per layer. ``box`` is ``(0, 1)`` where the first layer
    after any :class:`Squeeze` is a :class:`~flowinv.flows.layers.Logit` (the density ends at
    the data box there, and :meth:`Flow.forward_log_prob` counts the logit's log-det at the
    box's edge beyond it).
    """

    def bijections(self) -> tuple[Any, ...]:
        """The layers, in normalising order (``x`` side first)."""
        raise NotImplementedError

    def _layers(self) -> tuple[Any, ...]:
        layers = tuple(self.bijections())
        if not layers:
            raise ValueError(f"{type(self).__name__} has no layers")
        for layer in layers:
            missing = [m for m in _CONTRACT if not callable(getattr(layer, m, None))]
            if missing:
                raise TypeError(
                    f"{type(layer).__name__} is not a layer: it lacks {', '.join(missing)} (the "
                    "contract of flowinv.flows.layers)")
        return layers

    def _pixel_logit(self) -> int | None:
        """The index of the layer that maps pixels by a logit: the first after any
        :class:`Squeeze` (which only moves pixels), if it is a Logit; else ``None``."""
        for j, layer in enumerate(self._layers()):
            if not isinstance(layer, Squeeze):
                return j if isinstance(layer, Logit) else None
        return None

    @property
    def box(self) -> tuple[float, float] | None:
        return (0.0, 1.0) if self._pixel_logit() is not None else None

    def latent_shapes(self) -> list[tuple[int, ...]]:
        """``[shape]``: the shape of the last layer's output, of which ``z`` is the flattening
        (one entry: a chain has no multi-scale splits; found by tracing, nothing is
        computed)."""
        return [_latent_shape(self)]

    def _init(self, key: Array, x_batch: Array) -> Params:
        layers, params, h = self._layers(), [], x_batch
        for layer, k in zip(layers, jax.random.split(key, len(layers)), strict=True):
            p, h = layer.init(k, h)
            params.append(p)
        return tuple(params)

    def _run_inverse(self, params: Params, x: Array) -> tuple[Array, Array]:
        layers = self._layers()
        if len(params) != len(layers):
            raise ValueError(f"params hold {len(params)} layers' entries, the chain has "
                             f"{len(layers)} layers")
        h, logdet = x, jnp.zeros((), x.dtype)
        for layer, p in zip(layers, params, strict=True):
            h, ld = layer.inverse_and_log_det(p, h)
            logdet = logdet + ld
        return h, logdet

    def _inverse(self, params: Params, x: Array) -> tuple[Array, Array]:
        h, logdet = self._run_inverse(params, x)
        if h.size != self.dim:
            raise ValueError(f"the layers map an image of {self.dim} values to {h.size}: a "
                             "flow's layers must keep the dimension")
        return h.reshape(-1), logdet

    def _forward(self, params: Params, z: Array, in_box: bool = False) -> tuple[Array, Array]:
        layers = self._layers()
        h = z.reshape(self.latent_shapes()[0])
        logdet = jnp.zeros((), z.dtype)
        logit = self._pixel_logit() if in_box else None
        for j in reversed(range(len(layers))):
            x, ld = layers[j].forward_and_log_det(params[j], h)
            if j == logit:
                ld = layers[j].forward_log_det_in_box(h)
            h, logdet = x, logdet + ld
        return h, logdet

    def _forward_in_box(self, params: Params, z: Array) -> tuple[Array, Array]:
        return self._forward(params, z, in_box=True)


@functools.lru_cache(maxsize=256)
def _latent_shape(flow: Chain) -> tuple[int, ...]:
    """The shape of ``flow``'s last layer output, found by tracing once per (equal) flow."""
    dummy = jax.ShapeDtypeStruct(tuple(flow.image_shape), jnp.float32)
    params = jax.eval_shape(lambda x: flow._init(jax.random.PRNGKey(0), x[None]), dummy)
    return tuple(jax.eval_shape(lambda p, x: flow._run_inverse(p, x)[0], params, dummy).shape)


@dataclasses.dataclass(frozen=True)
class LayerChain(Chain):
    """A :class:`Chain` of the layers given (:func:`chain`); not describable in a sidecar (its
    layers are objects, not JSON): save its params with :func:`flowinv.checkpoints.save` and
    restore them with ``load(path, target=abstract_flow_params(flow))``, or subclass
    :class:`Chain` for a flow that loads by name."""

    image_shape: tuple[int, int, int]
    layers: tuple[Any, ...]

    def bijections(self) -> tuple[Any, ...]:
        return self.layers


def chain(image_shape: tuple[int, int, int], layers) -> LayerChain:
    """A flow of images of ``image_shape`` ``(H, W, C)`` made of ``layers`` (a sequence, in
    normalising order; see :class:`Chain`). Checks the shapes by tracing the layers once
    (nothing is computed): each layer must take its predecessor's output, and the last must
    give ``H·W·C`` values. ``init(key, x_batch)`` then initialises every layer in turn on the
    batch its predecessor maps (the actnorms from the data)."""
    shape = tuple(int(d) for d in image_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"image_shape must be (H, W, C) with positive sizes, got {image_shape}")
    flow = LayerChain(shape, tuple(layers))
    flow._layers()  # each one a layer
    try:
        hash(flow)
    except TypeError as e:  # a flow is a static argument of compiled programs
        raise TypeError(f"every layer must be hashable, as a frozen dataclass is ({e})") from e
    try:
        (latent,) = flow.latent_shapes()
    except Exception as e:  # whatever a layer raises on an input of the wrong shape
        raise ValueError(f"the layers do not fit images of shape {shape}: "
                         f"{type(e).__name__}: {e}") from e
    if math.prod(latent) != flow.dim:
        raise ValueError(f"the layers map an image of shape {shape} ({flow.dim} values) to "
                         f"shape {latent}: a flow's layers must keep the dimension")
    return flow
