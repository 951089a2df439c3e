r"""The Deep Decoder (Heckel & Hand, ICLR 2019): an untrained generative network as image prior.

A fixed random input tensor :math:`B_0 \in \mathbb R^{h_0 \times w_0 \times k}` goes through
``depth`` layers, each

.. math:: B_{i+1} = \mathrm{cn}\big(\mathrm{relu}(U_2(B_i C_i))\big),

with :math:`C_i` a ``1x1`` convolution (``k`` to ``k`` channels, no bias), :math:`U_2` bilinear
upsampling by 2, and ``cn`` channel normalisation (each channel normalised to zero mean and
unit variance over its pixels, then a learned scale and shift). The output is
:math:`x = \mathrm{sigmoid}(B_d C_d)` with :math:`C_d` a ``1x1`` convolution to ``C`` channels.
For compressed sensing only the weights are fitted,

.. math:: \min_{C} \|A\,\mathrm{DD}_C(B_0) - y\|_2^2,

with Adam. Asim et al. (2020) use an *overparametrised* variant with ``k = 250``, ``d = 5`` for
64px — the defaults here. Their supplement (§1.2.1, Fig. 1) counts 253,753 weights (254,753
with the 2×2×250 input) > 12,288 pixels. This network at the same ``k`` and ``depth`` has
315,753 weights (316,753 with the input), 62,000 more: it has ``depth`` ``k×k`` convolutions
of 62,500 weights each, about one more than the paper's count implies.

Spatial sizes: the input is ``ceil(H / 2^depth) x ceil(W / 2^depth)``; the network produces
``2^depth`` times that, which is centre-cropped to ``H x W`` when ``H`` or ``W`` is not a
multiple of ``2^depth`` (e.g. 28x28 MNIST with ``depth = 4`` is generated at 32x32).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax import lax

from flowinv._checks import finite_real, float_array, positive_int

Array = jax.Array

__all__ = ["DeepDecoder", "deep_decoder_fit", "deep_decoder_recover", "input_shape"]


class DeepDecoder(nn.Module):
    """Deep Decoder network on ONE input tensor ``(h0, w0, k)`` (no batch axis).

    Attributes:
      out_shape: image shape ``(H, W, C)``.
      k: channels of every hidden layer.
      depth: number of upsampling layers ``d``.
    """

    out_shape: tuple[int, int, int]
    k: int
    depth: int

    @nn.compact
    def __call__(self, b: Array) -> Array:
        """``b``: ``(h0, w0, k)`` -> image ``(H, W, C)`` in ``(0, 1)``."""
        for i in range(self.depth):
            b = nn.Dense(self.k, use_bias=False, name=f"conv{i}")(b)  # 1x1 convolution
            h, w, _ = b.shape
            b = jax.image.resize(b, (2 * h, 2 * w, self.k), method="bilinear")
            b = nn.relu(b)
            mean = jnp.mean(b, axis=(0, 1))
            var = jnp.var(b, axis=(0, 1))
            b = (b - mean) * lax.rsqrt(var + 1e-5)
            scale = self.param(f"scale{i}", nn.initializers.ones, (self.k,))
            shift = self.param(f"shift{i}", nn.initializers.zeros, (self.k,))
            b = b * scale + shift
        x = nn.sigmoid(nn.Dense(self.out_shape[2], name="out")(b))
        hh, ww = self.out_shape[0], self.out_shape[1]
        top, left = (x.shape[0] - hh) // 2, (x.shape[1] - ww) // 2
        return x[top: top + hh, left: left + ww]


def input_shape(out_shape: tuple[int, ...], k: int, depth: int) -> tuple[int, int, int]:
    """Shape ``(ceil(H / 2^depth), ceil(W / 2^depth), k)`` of the fixed random input."""
    f = 2**depth
    return (-(-int(out_shape[0]) // f), -(-int(out_shape[1]) // f), int(k))


def max_depth(out_shape: tuple[int, ...]) -> int:
    """The most upsampling layers for images of ``out_shape`` ``(H, W, ...)`` whose random
    input is still at least 2 pixels across both ways (``2^depth < min(H, W)``); 0 for an
    image too small for any."""
    return max(0, (min(int(out_shape[0]), int(out_shape[1])) - 1).bit_length() - 1)


def _check_args(y, op, k, depth, steps, lr):
    for attr in ("in_shape", "out_shape"):
        if not hasattr(op, attr):
            raise TypeError(f"op must be a forward operator with in_shape and out_shape; "
                            f"{type(op).__name__} has no {attr!r}")
    if not callable(op):
        raise TypeError(f"op must be callable (op(x) -> y), got {type(op).__name__}")
    in_shape = tuple(int(s) for s in op.in_shape)
    if len(in_shape) != 3:
        raise ValueError(f"op.in_shape must be an image shape (H, W, C), got {in_shape}")
    k = positive_int(k, "k")
    depth = positive_int(depth, "depth")
    steps = positive_int(steps, "steps")
    lr = finite_real(lr, "lr", positive=True)
    y = float_array(y)
    if tuple(y.shape) != tuple(op.out_shape):
        raise ValueError(f"y must have shape op.out_shape = {tuple(op.out_shape)}, got "
                         f"{tuple(y.shape)}")
    deepest = max_depth(in_shape)
    if depth > deepest:  # the random input would be 1 pixel across
        if deepest < 1:
            raise ValueError(f"images of {in_shape[0]}x{in_shape[1]} are too small for a Deep "
                             "Decoder: one upsampling layer needs at least 3 pixels each way")
        raise ValueError(
            f"depth={depth} is too deep for images of {in_shape[0]}x{in_shape[1]}: the random "
            "input would be 1 pixel across, and bilinear upsampling of it is constant (the "
            f"decoder could only make a flat image); use depth <= {deepest}")
    return y, in_shape, k, depth, steps, lr


@functools.partial(jax.jit, static_argnames=("in_shape", "k", "depth", "steps"))
def _fit(key, y, op, lr, *, in_shape, k, depth, steps):
    net = DeepDecoder(out_shape=in_shape, k=k, depth=depth)
    k_in, k_w = jax.random.split(key)
    # Heckel & Hand's input: i.i.d. uniform on [0, 0.1), fixed during fitting.
    b0 = 0.1 * jax.random.uniform(k_in, input_shape(in_shape, k, depth), y.dtype)
    params = net.init(k_w, b0)
    opt = optax.adam(lr)

    def loss_fn(p):
        return jnp.sum((op(net.apply(p, b0)) - y) ** 2)

    def step(carry, _):
        p, s = carry
        loss, g = jax.value_and_grad(loss_fn)(p)
        updates, s = opt.update(g, s, p)
        return (optax.apply_updates(p, updates), s), loss

    (params, _), losses = lax.scan(step, (params, opt.init(params)), None, length=steps)
    return net.apply(params, b0), losses


def deep_decoder_fit(
    key: Array,
    y: Array,
    op: Any,
    *,
    k: int = 250,
    depth: int = 5,
    steps: int = 2000,
    lr: float = 0.01,
) -> tuple[Array, Array]:
    r"""Fits a Deep Decoder to measurements ``y = f(x) + noise``; returns image and losses.

    Minimises :math:`\|f(\mathrm{DD}_C(B_0)) - y\|_2^2` over the weights :math:`C` with
    ``steps`` Adam steps (one ``jit``-compiled ``lax.scan``), from weights and input drawn
    from ``key``. ``f`` is ``op(x)`` (``op.A`` for linear operators), so any differentiable
    operator works.

    Args:
      key: PRNG key (input tensor and initial weights).
      y: measurements of one image, shape ``op.out_shape`` (integers are cast to float32).
      op: forward operator pytree with ``in_shape = (H, W, C)``, ``out_shape``, ``op(x)``.
      k: channels per layer (250 for 64px in Asim et al.).
      depth: upsampling layers (5 for 64px); at most :func:`max_depth` of the image shape
        (ValueError beyond: the input would be 1 pixel across, and the output flat).
      steps: Adam steps.
      lr: Adam learning rate.

    Returns:
      ``(x, losses)``: the image ``DD(B_0)`` after the last step, ``(H, W, C)`` in ``(0, 1)``,
      and the loss before each step, ``(steps,)``.
    """
    y, in_shape, k, depth, steps, lr = _check_args(y, op, k, depth, steps, lr)
    return _fit(key, y, op, jnp.asarray(lr, y.dtype), in_shape=in_shape, k=k, depth=depth,
                steps=steps)


def deep_decoder_recover(
    key: Array,
    y: Array,
    op: Any,
    *,
    k: int = 250,
    depth: int = 5,
    steps: int = 2000,
    lr: float = 0.01,
) -> Array:
    """Deep Decoder recovery of one image: :func:`deep_decoder_fit` without the losses.

    Returns:
      the recovered image ``(H, W, C)`` in ``(0, 1)``.
    """
    return deep_decoder_fit(key, y, op, k=k, depth=depth, steps=steps, lr=lr)[0]
