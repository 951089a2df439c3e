r"""Image-adaptive GAN reconstruction (IAGAN; Hussein, Tirer & Giryes, AAAI 2020).

A trained generator :math:`G_\theta` is adapted to ONE image at recovery time. From the CSGM
latent :math:`\hat z_0 = \arg\min_z \|f(G_{\theta_0}(z)) - y\|^2` (Bora et al. 2017; e.g.
``flowinv.recover((gen, params), y, operator=op, method="bora")``) and the trained weights
:math:`\theta_0`, the weights and the latent are fitted jointly,

.. math:: (\hat\theta, \hat z) = \arg\min_{\theta,\,z} \|f(G_\theta(z)) - y\|_2^2,

by ``steps`` Adam steps (learning rate ``lr_weights`` for :math:`\theta`, ``lr_latent`` for
:math:`z`). The step count is the regulariser: adapted weights can fit anything, the noise
included. For a linear ``f = A`` an optional back-projection (BP) step then moves the image
towards the measurements,

.. math:: \hat x = x + A^T (A A^T + \delta I)^{-1} (y - A x), \qquad x = G_{\hat\theta}(\hat z),

which for :math:`\delta = 0` makes :math:`A\hat x = y` exactly (the paper's noiseless BP);
:math:`\delta > 0` damps it under noise. :math:`(AA^T + \delta I)^{-1}` is applied by
conjugate gradients with ``op.A`` and ``op.A_adjoint`` only.

Asim et al. (2020, Fig. 5) compare their Glow prior with IAGAN on the CSGM generator (their
supplement's "IA-DCGAN": all weights adapted, 291 times more parameters than pixels).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from flowinv._checks import finite_real, float_array, positive_int

Array = jax.Array

__all__ = ["back_project", "iagan_fit", "iagan_recover"]


def back_project(op: Any, x: Array, y: Array, damping: float | Array = 0.0, *,
                 iters: int = 100, tol: float = 1e-5) -> Array:
    r"""``x + Aᵀ(AAᵀ + δI)⁻¹(y − Ax)`` for ONE image ``x`` ``(H, W, C)`` and its linear
    measurements ``y`` (``op.out_shape``); ``δ = damping >= 0``. With ``δ = 0`` the result
    satisfies ``A x̂ = y`` and differs from ``x`` only in the row space of ``A``, up to the
    conjugate-gradient solve (at most ``iters`` steps, relative residual ``tol``)."""
    if not hasattr(op, "A_adjoint"):
        raise TypeError(f"back-projection needs a linear operator with A_adjoint; "
                        f"{type(op).__name__} has none")
    if not isinstance(damping, jax.core.Tracer) and not np.all(np.asarray(damping) >= 0):
        raise ValueError(f"damping must be >= 0, got {damping!r}")
    residual = y - op.A(x)
    w, _ = jax.scipy.sparse.linalg.cg(lambda u: op.A(op.A_adjoint(u)) + damping * u,
                                      residual, maxiter=iters, tol=tol)
    return x + op.A_adjoint(w)


def _check_args(generator, y, op, z0, steps, lr_weights, lr_latent, back_projection):
    for attr in ("apply", "latent_dim", "image_shape"):
        if not hasattr(generator, attr):
            raise TypeError(f"generator must be a flowinv.Generator (apply, latent_dim, "
                            f"image_shape); {type(generator).__name__} has no {attr!r}")
    if not callable(op) or not hasattr(op, "out_shape") or not hasattr(op, "in_shape"):
        raise TypeError(f"op must be a forward operator with in_shape, out_shape and op(x); "
                        f"got {type(op).__name__}")
    if tuple(op.in_shape) != tuple(generator.image_shape):
        raise ValueError(f"op takes images of shape {tuple(op.in_shape)}, the generator makes "
                         f"{tuple(generator.image_shape)}")
    y, z0 = float_array(y), jnp.asarray(z0)
    if tuple(y.shape) != tuple(op.out_shape):
        raise ValueError(f"y must have shape op.out_shape = {tuple(op.out_shape)}, got "
                         f"{tuple(y.shape)}")
    if z0.shape != (generator.latent_dim,):
        raise ValueError(f"z0 must be one latent of shape ({generator.latent_dim},), got "
                         f"{z0.shape}")
    if back_projection is not None:
        back_projection = finite_real(back_projection, "back_projection")
        if back_projection < 0:
            raise ValueError(f"back_projection (the damping δ) must be >= 0 or None, got "
                             f"{back_projection}")
        if not hasattr(op, "A_adjoint"):
            raise TypeError(f"back_projection needs a linear operator with A_adjoint; "
                            f"{type(op).__name__} has none (pass back_projection=None)")
    return (y, z0, positive_int(steps, "steps"),
            finite_real(lr_weights, "lr_weights", positive=True),
            finite_real(lr_latent, "lr_latent", positive=True), back_projection)


@functools.partial(jax.jit, static_argnames=("apply", "steps", "use_bp", "cg_iters"))
def _fit(params, y, op, z0, lr_weights, lr_latent, damping, *, apply, steps, use_bp, cg_iters):
    opt_w, opt_z = optax.adam(lr_weights), optax.adam(lr_latent)

    def loss_fn(theta, z):
        return jnp.sum((op(apply(theta, z)) - y) ** 2)

    def step(carry, _):
        theta, z, s_w, s_z = carry
        loss, (g_w, g_z) = jax.value_and_grad(loss_fn, argnums=(0, 1))(theta, z)
        u_w, s_w = opt_w.update(g_w, s_w, theta)
        u_z, s_z = opt_z.update(g_z, s_z, z)
        return (optax.apply_updates(theta, u_w), optax.apply_updates(z, u_z), s_w, s_z), loss

    carry = (params, z0, opt_w.init(params), opt_z.init(z0))
    (params, z, _, _), losses = lax.scan(step, carry, None, length=steps)
    x = apply(params, z)
    if use_bp:
        x = back_project(op, x, y, damping, iters=cg_iters)
    return x, losses


def iagan_fit(generator: Any, params: Any, y: Array, op: Any, z0: Array, *, steps: int = 300,
              lr_weights: float = 1e-4, lr_latent: float = 1e-3,
              back_projection: float | None = None, cg_iters: int = 100) -> tuple[Array, Array]:
    r"""IAGAN recovery of ONE image; returns the image and the losses (see the module doc).

    ``steps`` Adam steps on :math:`\|f(G_\theta(z)) - y\|^2` over the weights and the latent
    from ``(params, z0)``, in one ``jit``-compiled ``lax.scan``; then, if ``back_projection``
    is a damping :math:`\delta \ge 0`, the BP step. Batches: ``jax.vmap`` over ``y`` and ``z0``
    (and ``op`` for one operator per image) with ``params`` shared; each image adapts its own
    copy of the weights.

    Args:
      generator: a :class:`flowinv.Generator` (hashable ``apply(params, z)``), e.g.
        the first element of :func:`flowinv.checkpoints.load_gan`.
      params: its trained weights, the start of the adaptation.
      y: measurements of one image, shape ``op.out_shape``.
      op: forward operator with ``in_shape = generator.image_shape``, ``out_shape`` and
        ``op(x)`` (any differentiable ``f``); BP needs a linear one (``A``, ``A_adjoint``).
      z0: the start latent ``(latent_dim,)``, normally the CSGM solution.
      steps: Adam steps.
      lr_weights, lr_latent: Adam learning rates of the weights and of the latent.
      back_projection: ``None`` (no BP) or the damping ``δ >= 0``.
      cg_iters: conjugate-gradient steps of the BP.

    Returns:
      ``(x, losses)``: the image ``(H, W, C)`` (in ``(0, 1)`` before BP, which can leave it),
      and the loss before each step, ``(steps,)``.
    """
    y, z0, steps, lr_weights, lr_latent, back_projection = _check_args(
        generator, y, op, z0, steps, lr_weights, lr_latent, back_projection)
    return _fit(params, y, op, z0, jnp.asarray(lr_weights, y.dtype),
                jnp.asarray(lr_latent, y.dtype), jnp.asarray(back_projection or 0.0, y.dtype),
                apply=generator.apply, steps=steps, use_bp=back_projection is not None,
                cg_iters=positive_int(cg_iters, "cg_iters"))


def iagan_recover(generator: Any, params: Any, y: Array, op: Any, z0: Array, **kwargs) -> Array:
    """:func:`iagan_fit` without the losses: the recovered image ``(H, W, C)``."""
    return iagan_fit(generator, params, y, op, z0, **kwargs)[0]
