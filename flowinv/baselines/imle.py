r"""Implicit maximum-likelihood estimation (IMLE; Li & Malik, 2018) of a DCGAN generator.

A non-adversarial way to fit the generator :math:`G` of :mod:`flowinv.baselines.dcgan`. Each
step draws ``B`` training images :math:`x_i` and ``K >= B`` latents
:math:`z_k \sim \mathcal N(0, I)`, matches every image to its nearest sample,

.. math:: k(i) = \arg\min_k \|G(z_k) - x_i\|_2^2,

and takes one Adam step on

.. math:: L = \frac{1}{B\,n} \sum_i \|G(z_{k(i)}) - x_i\|_2^2 \qquad (n = H W C).

Every training image pulls *some* sample towards itself, so :math:`G` cannot drop part of
the data, which is how adversarial training fails on a few thousand images (mode collapse).
The price is the usual one of a pixel-space loss: samples are blurrier than a good GAN's.
The result is an ordinary DCGAN generator (same weights, same :func:`dcgan.generator_apply`,
samples ``G(z)`` with ``z ~ N(0, I)``), so it drops into CSGM and the MLE losses unchanged.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax

from flowinv._checks import finite_real, positive_int
from flowinv.baselines import dcgan
from flowinv.baselines._steps import run_steps

Array = jax.Array

__all__ = ["imle_loss", "train_imle"]


def imle_loss(g_params: Any, images: Array, z: Array, *,
              config: dcgan.DCGANConfig) -> tuple[Array, Array]:
    r"""The IMLE loss of a batch, and which candidate each image was matched to.

    Args:
      g_params: generator weights.
      images: ``(B, H, W, C)`` training images in ``[0, 1]``.
      z: ``(K, latent_dim)`` candidate latents, ``K >= 1``.
      config: the generator's architecture.

    Returns:
      ``(loss, nearest)``: :math:`\frac{1}{Bn}\sum_i \min_k \|G(z_k) - x_i\|^2` (a scalar; its
      gradient flows through the matched samples only) and ``nearest`` ``(B,)``, the index
      :math:`k(i)` of each image's nearest candidate.
    """
    gen = dcgan.Generator.from_config(config)
    b = images.shape[0]
    cand = jax.lax.stop_gradient(gen.apply(g_params, z)).reshape(z.shape[0], -1)
    flat = images.reshape(b, -1)
    # ‖x − s‖² = ‖x‖² − 2 x·s + ‖s‖², one matrix product for all B × K pairs
    dist = (jnp.sum(flat**2, 1)[:, None] - 2.0 * flat @ cand.T + jnp.sum(cand**2, 1)[None])
    nearest = jnp.argmin(dist, axis=1)
    matched = gen.apply(g_params, z[nearest])
    return jnp.mean((matched - images) ** 2), nearest


@functools.lru_cache(maxsize=16)
def _make_step(config: dcgan.DCGANConfig, lr: float, batch_size: int, candidates: int):
    """A jitted step ``(state, key, images) -> (state, loss)`` (one call per step, as in
    :func:`dcgan.train_dcgan`, for the same XLA:CPU reason)."""
    opt = optax.adam(lr)
    loss_fn = functools.partial(imle_loss, config=config)

    @jax.jit
    def step(state, key, images):
        g, opt_state = state
        k_idx, k_z = jax.random.split(key)
        real = images[jax.random.randint(k_idx, (batch_size,), 0, images.shape[0])]
        z = jax.random.normal(k_z, (candidates, config.latent_dim))
        (loss, _), grad = jax.value_and_grad(loss_fn, has_aux=True)(g, real, z)
        upd, opt_state = opt.update(grad, opt_state, g)
        return (optax.apply_updates(g, upd), opt_state), {"loss": loss}

    return step


def train_imle(
    key: Array,
    images: Any,
    *,
    config: dcgan.DCGANConfig,
    steps: int = 2000,
    batch_size: int = 32,
    candidates: int = 256,
    lr: float = 1e-3,
    chunk: int = 100,
    progress: bool = True,
    return_history: bool = False,
):
    r"""Fits a DCGAN generator to ``images`` by IMLE (see the module docstring).

    Args:
      key: PRNG key (initial weights as :func:`dcgan.init_params`, batches, latents).
      images: training images ``(N, H, W, C)`` in ``[0, 1]``, ``config.image_shape`` each.
      config: the generator's architecture.
      steps: Adam steps.
      batch_size: training images per step (``B``).
      candidates: latents drawn per step to match them against (``K >= B``).
      lr: Adam learning rate.
      chunk: steps per key split and per host synchronisation of the losses.
      progress: show a tqdm progress bar.
      return_history: also return the per-step losses.

    Returns:
      the generator weights (for :func:`dcgan.generator_apply`), or, with ``return_history``,
      ``(weights, {"loss": (steps,)})``. Deterministic given ``key`` on a given machine.
    """
    if not isinstance(config, dcgan.DCGANConfig):
        raise TypeError(f"config must be a DCGANConfig, got {type(config).__name__}")
    imgs = dcgan.check_training_images(images, config)
    steps = positive_int(steps, "steps")
    batch_size = positive_int(batch_size, "batch_size")
    candidates = positive_int(candidates, "candidates")
    chunk = positive_int(chunk, "chunk")
    if candidates < batch_size:
        raise ValueError(f"candidates must be >= batch_size, got {candidates} < {batch_size}")
    lr = finite_real(lr, "lr", positive=True)

    k_init, k_train = jax.random.split(key)
    g = dcgan.init_params(k_init, config)["generator"]
    state = (g, optax.adam(lr).init(g))
    step = _make_step(config, lr, batch_size, candidates)
    state, history = run_steps(step, state, jnp.asarray(imgs), k_train, steps=steps,
                               chunk=chunk, desc="imle", progress=progress)
    if return_history:
        return state[0], history
    return state[0]
