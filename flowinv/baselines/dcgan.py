r"""DCGAN (Radford et al., 2016) in Flax: the GAN prior of the CSGM baseline (Bora et al., 2017).

Generator :math:`G: \mathbb R^{d} \to [0,1]^{H \times W \times C}`: a dense projection of
``z`` to an ``h0 x w0 x k0`` feature map, then ``u`` stride-2 ``4x4`` transposed convolutions,
halving the channels after each upsampling, and a sigmoid. Hidden layers use ReLU after a
normalisation. With ``image_shape = (64, 64, 3)``, ``latent_dim = 100`` and
``base_channels = 64`` this is the architecture of Asim et al.'s 64px DCGAN (``k0 = 512``
channels at 4x4, then 256, 128, 64, 3; the dense projection equals their first ``4x4``
transposed convolution on a ``1x1`` input): about 3.58M weights. For 28x28 MNIST the design
is 7 -> 14 -> 28 (``u = 2``), so no cropping is needed.

The number of upsamplings ``u`` is the largest such that ``H`` and ``W`` are divisible by
``2^u`` with ``min(H, W) / 2^u >= 4``; ``k0 = base_channels * 2^(u-1)``.

Differences from the original DCGAN, on purpose:

* **Per-sample normalisation** (layer normalisation over ``(H, W, C)`` with a per-channel
  scale and shift) instead of batch normalisation, in both networks. A generator with batch
  norm either depends on the other latents of its batch (train mode) or on running averages
  that differ from the statistics it was trained with (eval mode); CSGM and the MLE losses
  call ``G`` on ONE latent at a time (``vmap``), so ``G(z)`` must be a function of ``z``
  alone. With per-sample normalisation ``G`` is the same function in training and inversion.
* Sigmoid output in ``[0, 1]`` (flowinv's image range) instead of tanh in ``[-1, 1]``; the
  discriminator maps its input to ``[-1, 1]`` itself.

Training (:func:`train_dcgan`) uses the non-saturating GAN loss with Adam(2e-4, b1 = 0.5), as
Radford et al., optionally with Mescheder et al.'s (2018) R1 gradient penalty on the
discriminator (:func:`discriminator_loss`). :func:`flowinv.baselines.imle.train_imle` fits the
same generator without a discriminator, where adversarial training collapses.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from flowinv._checks import finite_real, positive_int
from flowinv.baselines._steps import run_steps

Array = jax.Array

__all__ = [
    "DCGANConfig",
    "Discriminator",
    "Generator",
    "GeneratorApply",
    "as_generator",
    "check_training_images",
    "discriminator_apply",
    "discriminator_loss",
    "generator_apply",
    "init_params",
    "sample",
    "train_dcgan",
]


def _num_upsamples(h: int, w: int) -> int:
    u = 0
    while h % 2 == 0 and w % 2 == 0 and min(h, w) // 2 >= 4:
        h, w, u = h // 2, w // 2, u + 1
    return u


@dataclasses.dataclass(frozen=True)
class DCGANConfig:
    """Architecture of a DCGAN (hashable; recorded in checkpoint sidecars via :meth:`to_dict`).

    Attributes:
      image_shape: ``(H, W, C)`` of generated images; ``H, W`` even and ``>= 8``.
      latent_dim: length ``d`` of the latent ``z``.
      base_channels: channels of the last hidden generator layer / first discriminator layer;
        the widest layer has ``base_channels * 2^(u-1)``.
    """

    image_shape: tuple[int, int, int]
    latent_dim: int = 100
    base_channels: int = 64

    def __post_init__(self):
        try:
            shape = tuple(self.image_shape)
        except TypeError:
            raise ValueError(f"image_shape must be (H, W, C), got {self.image_shape!r}") from None
        if len(shape) != 3:
            raise ValueError(f"image_shape must be (H, W, C), got {self.image_shape!r}")
        shape = tuple(positive_int(s, "image_shape entries") for s in shape)
        if _num_upsamples(shape[0], shape[1]) < 1:
            raise ValueError(f"image_shape must have an even H and W of at least 8 (the "
                             f"generator upsamples by 2 at least once), got {shape}")
        object.__setattr__(self, "image_shape", shape)
        object.__setattr__(self, "latent_dim", positive_int(self.latent_dim, "latent_dim"))
        object.__setattr__(self, "base_channels", positive_int(self.base_channels, "base_channels"))

    @property
    def num_upsamples(self) -> int:
        """Number ``u`` of stride-2 layers in each network."""
        return _num_upsamples(self.image_shape[0], self.image_shape[1])

    @property
    def start_shape(self) -> tuple[int, int, int]:
        """Shape ``(h0, w0, k0)`` of the generator's first feature map."""
        f = 2**self.num_upsamples
        return (self.image_shape[0] // f, self.image_shape[1] // f,
                self.base_channels * 2 ** (self.num_upsamples - 1))

    def to_dict(self) -> dict:
        """JSON-ready dict (``{"architecture": "dcgan", ...}``) for checkpoint sidecars."""
        return {"architecture": "dcgan", "image_shape": list(self.image_shape),
                "latent_dim": self.latent_dim, "base_channels": self.base_channels}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DCGANConfig:
        """Inverse of :meth:`to_dict` (extra keys such as ``"architecture"`` are ignored)."""
        try:
            return cls(image_shape=tuple(d["image_shape"]), latent_dim=d["latent_dim"],
                       base_channels=d["base_channels"])
        except KeyError as e:
            raise ValueError(f"a DCGAN config dict needs image_shape, latent_dim and "
                             f"base_channels; missing {e}") from None


def _norm() -> nn.Module:
    # per-sample layer norm over (H, W, C) with a per-channel scale and shift (see module doc)
    return nn.LayerNorm(reduction_axes=(-3, -2, -1), feature_axes=-1)


class Generator(nn.Module):
    """DCGAN generator on a batch: ``z (B, latent_dim)`` -> images ``(B, H, W, C)`` in (0, 1).

    Attributes: as :class:`DCGANConfig` (use :meth:`from_config` to build from one).
    """

    image_shape: tuple[int, int, int]
    latent_dim: int = 100
    base_channels: int = 64

    @classmethod
    def from_config(cls, config: DCGANConfig) -> Generator:
        return cls(config.image_shape, config.latent_dim, config.base_channels)

    @nn.compact
    def __call__(self, z: Array) -> Array:
        cfg = DCGANConfig(self.image_shape, self.latent_dim, self.base_channels)
        h0, w0, k0 = cfg.start_shape
        x = nn.Dense(h0 * w0 * k0, use_bias=False, name="project")(z)
        x = nn.relu(_norm()(x.reshape(z.shape[0], h0, w0, k0)))
        for i in range(1, cfg.num_upsamples):
            x = nn.ConvTranspose(k0 // 2**i, (4, 4), strides=(2, 2), padding="SAME",
                                 use_bias=False, name=f"up{i}")(x)
            x = nn.relu(_norm()(x))
        x = nn.ConvTranspose(cfg.image_shape[2], (4, 4), strides=(2, 2), padding="SAME",
                             name="out")(x)
        return nn.sigmoid(x)


class Discriminator(nn.Module):
    """DCGAN discriminator on a batch: images ``(B, H, W, C)`` in [0, 1] -> logits ``(B,)``.

    Attributes: as :class:`DCGANConfig` (use :meth:`from_config` to build from one).
    """

    image_shape: tuple[int, int, int]
    latent_dim: int = 100
    base_channels: int = 64

    @classmethod
    def from_config(cls, config: DCGANConfig) -> Discriminator:
        return cls(config.image_shape, config.latent_dim, config.base_channels)

    @nn.compact
    def __call__(self, x: Array) -> Array:
        cfg = DCGANConfig(self.image_shape, self.latent_dim, self.base_channels)
        x = 2.0 * x - 1.0
        for i in range(cfg.num_upsamples):
            x = nn.Conv(cfg.base_channels * 2**i, (4, 4), strides=(2, 2), padding="SAME",
                        use_bias=i == 0, name=f"down{i}")(x)
            if i > 0:
                x = _norm()(x)
            x = nn.leaky_relu(x, 0.2)
        return nn.Dense(1, name="logit")(x.reshape(x.shape[0], -1))[:, 0]


def init_params(key: Array, config: DCGANConfig) -> dict:
    """Initial weights ``{"generator": ..., "discriminator": ...}`` drawn from ``key``."""
    if not isinstance(config, DCGANConfig):
        raise TypeError(f"config must be a DCGANConfig, got {type(config).__name__}")
    return _init_params(key, config)


@functools.partial(jax.jit, static_argnums=1)
def _init_params(key: Array, config: DCGANConfig) -> dict:
    kg, kd = jax.random.split(key)
    g = Generator.from_config(config).init(kg, jnp.zeros((1, config.latent_dim)))
    d = Discriminator.from_config(config).init(kd, jnp.zeros((1, *config.image_shape)))
    return {"generator": g, "discriminator": d}


def _config(image_shape, latent_dim, base_channels) -> DCGANConfig:
    if isinstance(image_shape, DCGANConfig):
        return image_shape
    return DCGANConfig(tuple(image_shape), latent_dim, base_channels)


def generator_apply(
    params: Any,
    z: Array,
    *,
    image_shape: tuple[int, int, int] | DCGANConfig,
    latent_dim: int = 100,
    base_channels: int = 64,
) -> Array:
    r"""The generator on ONE latent: :math:`x = G(z)`.

    Args:
      params: generator weights (``init_params(...)["generator"]`` or :func:`train_dcgan`'s
        result).
      z: one latent, ``(latent_dim,)``; use ``jax.vmap`` for batches.
      image_shape: ``(H, W, C)``, or a whole :class:`DCGANConfig` (then the other two
        arguments are ignored).
      latent_dim, base_channels: the rest of the architecture (see :class:`DCGANConfig`).

    Returns:
      image ``(H, W, C)`` in ``(0, 1)``.
    """
    cfg = _config(image_shape, latent_dim, base_channels)
    z = jnp.asarray(z)
    if z.shape != (cfg.latent_dim,):
        raise ValueError(f"z must be one latent of shape ({cfg.latent_dim},), got {z.shape}")
    return Generator.from_config(cfg).apply(params, z[None])[0]


def discriminator_apply(params: Any, x: Array, *, config: DCGANConfig) -> Array:
    """The discriminator's logit for ONE image ``x`` ``(H, W, C)`` -> scalar."""
    x = jnp.asarray(x)
    if x.shape != config.image_shape:
        raise ValueError(f"x must be one image of shape {config.image_shape}, got {x.shape}")
    return Discriminator.from_config(config).apply(params, x[None])[0]


@dataclasses.dataclass(frozen=True)
class GeneratorApply:
    """Hashable ``apply(params, z) -> x`` for one latent, fixed to a :class:`DCGANConfig`.

    Equal configs give equal (and equally hashed) functions, so compiled solves that take
    the generator as static data are reused across calls.
    """

    config: DCGANConfig

    def __call__(self, params: Any, z: Array) -> Array:
        return generator_apply(params, z, image_shape=self.config)


def as_generator(config: DCGANConfig):
    """A :class:`flowinv.Generator` for ``flowinv.recover((gen, params), ...)``."""
    from flowinv.recover import Generator as PriorGenerator

    if not isinstance(config, DCGANConfig):
        raise TypeError(f"config must be a DCGANConfig, got {type(config).__name__}")
    return PriorGenerator(apply=GeneratorApply(config), latent_dim=config.latent_dim,
                          image_shape=config.image_shape)


def sample(params: Any, key: Array, num: int, *, config: DCGANConfig) -> Array:
    """``num`` images ``G(z)``, ``z ~ N(0, I)``: ``(num, H, W, C)`` (jit-compiled)."""
    if not isinstance(config, DCGANConfig):
        raise TypeError(f"config must be a DCGANConfig, got {type(config).__name__}")
    return _sample(params, key, positive_int(num, "num"), config)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _sample(params, key, num, config):
    z = jax.random.normal(key, (num, config.latent_dim))
    return jax.vmap(lambda zz: generator_apply(params, zz, image_shape=config))(z)


# --------------------------------------------------------------------------------------------
# training


def _adam(lr: float, b1: float) -> optax.GradientTransformation:
    return optax.adam(lr, b1=b1, b2=0.999)


def discriminator_loss(d_params: Any, g_params: Any, real: Array, z: Array, *,
                       config: DCGANConfig, r1: float = 0.0) -> Array:
    r"""The discriminator's loss on a batch, a scalar.

    .. math:: \mathbb E_x[-\log\sigma(D(x))] + \mathbb E_z[-\log(1 - \sigma(D(G(z))))]
              + \tfrac{r_1}{2}\,\mathbb E_x \|\nabla_x D(x)\|^2

    over real images ``x`` (``real``, ``(B, H, W, C)`` in ``[0, 1]``) and latents ``z``
    (``(B, latent_dim)``), with ``D`` the logit and no gradient through ``G``. The last term is
    the R1 penalty (Mescheder et al., 2018), gradients taken w.r.t. pixels in ``[0, 1]``: it
    stops the discriminator from growing steep around the data, the usual cause of the
    mode collapse of GANs trained on a few thousand images.
    """
    gen, disc = Generator.from_config(config), Discriminator.from_config(config)
    fake = lax.stop_gradient(gen.apply(g_params, z))
    real_logits, pull_back = jax.vjp(lambda x: disc.apply(d_params, x), real)
    loss = (jnp.mean(jax.nn.softplus(-real_logits))
            + jnp.mean(jax.nn.softplus(disc.apply(d_params, fake))))
    if r1:
        # D scores each image alone, so one pull-back of ones gives every ∇_x D(x_i).
        (grad,) = pull_back(jnp.ones_like(real_logits))
        loss = loss + 0.5 * r1 * jnp.mean(jnp.sum(grad**2, axis=(1, 2, 3)))
    return loss


@functools.lru_cache(maxsize=16)
def _make_step(config: DCGANConfig, lr: float, b1: float, batch_size: int, r1: float = 0.0):
    """A jitted training step ``(state, key, images) -> (state, {"d_loss", "g_loss"})``.

    One step per compiled call, not a ``lax.scan`` over many: XLA:CPU runs the weight
    gradients of convolutions several times slower inside a loop (``dcgan-patches64``, batch
    32, 2 cores: 1.52 s per step scanned, 0.40 s per step called one at a time). Cached so
    that repeated trainings with the same settings compile once.
    """
    opt = _adam(lr, b1)
    gen, disc = Generator.from_config(config), Discriminator.from_config(config)
    d_loss_fn = functools.partial(discriminator_loss, config=config, r1=r1)

    def g_loss_fn(g_params, d_params, z):
        return jnp.mean(jax.nn.softplus(-disc.apply(d_params, gen.apply(g_params, z))))

    @jax.jit
    def step(state, key, images):
        g, d, g_opt, d_opt = state
        k_idx, k_zd, k_zg = jax.random.split(key, 3)
        idx = jax.random.randint(k_idx, (batch_size,), 0, images.shape[0])
        real = images[idx]
        zd = jax.random.normal(k_zd, (batch_size, config.latent_dim))
        d_loss, d_grad = jax.value_and_grad(d_loss_fn)(d, g, real, zd)
        upd, d_opt = opt.update(d_grad, d_opt, d)
        d = optax.apply_updates(d, upd)
        zg = jax.random.normal(k_zg, (batch_size, config.latent_dim))
        g_loss, g_grad = jax.value_and_grad(g_loss_fn)(g, d, zg)
        upd, g_opt = opt.update(g_grad, g_opt, g)
        g = optax.apply_updates(g, upd)
        return (g, d, g_opt, d_opt), {"d_loss": d_loss, "g_loss": g_loss}

    return step


def check_training_images(images: Any, config: DCGANConfig) -> np.ndarray:
    """``images`` as float32 ``(N, *config.image_shape)``, N >= 1, finite, in [0, 1]; else
    ValueError."""
    imgs = np.asarray(images, dtype=np.float32)
    if imgs.ndim != 4 or imgs.shape[1:] != config.image_shape:
        raise ValueError(f"images must have shape (N, {', '.join(map(str, config.image_shape))})"
                         f" to match image_shape, got {imgs.shape}")
    if imgs.shape[0] < 1:
        raise ValueError("images must hold at least one image, got 0")
    if not (np.all(np.isfinite(imgs)) and imgs.min() >= 0.0 and imgs.max() <= 1.0):
        raise ValueError(f"images must be finite and in [0, 1], got values in "
                         f"[{imgs.min()}, {imgs.max()}]")
    return imgs


def train_dcgan(
    key: Array,
    images: Any,
    *,
    config: DCGANConfig | None = None,
    image_shape: tuple[int, int, int] | None = None,
    latent_dim: int = 100,
    base_channels: int = 64,
    steps: int = 10_000,
    batch_size: int = 64,
    lr: float = 2e-4,
    b1: float = 0.5,
    r1: float = 0.0,
    chunk: int = 100,
    progress: bool = True,
    return_history: bool = False,
):
    r"""Trains a DCGAN on ``images`` and returns the generator weights.

    Each step draws a batch of real images (uniformly, with replacement) and latents
    :math:`z \sim \mathcal N(0, I)`, then takes one Adam step on the discriminator loss
    :math:`-\log\sigma(D(x)) - \log(1 - \sigma(D(G(z))))` and one on the non-saturating
    generator loss :math:`-\log\sigma(D(G(z')))` with fresh latents. Each step is one
    ``jit``-compiled call (see :func:`_make_step` for why not a ``lax.scan``); the losses come
    back to the host, and the tqdm bar shows their means, every ``chunk`` steps. The result is
    a deterministic function of ``key`` (and the inputs, and ``chunk``, which splits the keys)
    on a given machine.

    Args:
      key: PRNG key (initial weights, batches, latents).
      images: training images ``(N, H, W, C)`` in ``[0, 1]``.
      config: the architecture; default ``DCGANConfig(image_shape or images.shape[1:],
        latent_dim, base_channels)``.
      image_shape, latent_dim, base_channels: used when ``config`` is None.
      steps: training steps (each one D and one G update).
      batch_size: images per step.
      lr, b1: Adam learning rate and first-moment decay (Radford et al.: 2e-4, 0.5).
      r1: weight of the R1 penalty in :func:`discriminator_loss` (0: none, as Radford et al.).
      chunk: steps per key split and per host synchronisation of the losses (the last chunk
        may be shorter).
      progress: show a tqdm progress bar.
      return_history: also return the per-step losses.

    Returns:
      the generator weights (for :func:`generator_apply`), or, with ``return_history``,
      ``(generator_weights, {"d_loss": (steps,), "g_loss": (steps,), "discriminator": ...})``.
    """
    imgs = np.asarray(images, dtype=np.float32)
    if imgs.ndim != 4:
        raise ValueError(f"images must have shape (N, H, W, C), got {imgs.shape}")
    if config is None:
        config = DCGANConfig(tuple(image_shape or imgs.shape[1:]), latent_dim, base_channels)
    elif not isinstance(config, DCGANConfig):
        raise TypeError(f"config must be a DCGANConfig or None, got {type(config).__name__}")
    imgs = check_training_images(imgs, config)
    steps = positive_int(steps, "steps")
    batch_size = positive_int(batch_size, "batch_size")
    chunk = positive_int(chunk, "chunk")
    lr, b1, r1 = (finite_real(v, name) for name, v in (("lr", lr), ("b1", b1), ("r1", r1)))
    if not lr > 0 or not 0 <= b1 < 1 or not r1 >= 0:
        raise ValueError(f"need lr > 0, 0 <= b1 < 1 and r1 >= 0, got lr={lr}, b1={b1}, "
                         f"r1={r1}")

    k_init, k_train = jax.random.split(key)
    params = init_params(k_init, config)
    opt = _adam(lr, b1)
    state = (params["generator"], params["discriminator"], opt.init(params["generator"]),
             opt.init(params["discriminator"]))
    step = _make_step(config, lr, b1, batch_size, r1)
    state, history = run_steps(step, state, jnp.asarray(imgs), k_train, steps=steps,
                               chunk=chunk, desc="dcgan", progress=progress)
    g_params = state[0]
    if return_history:
        return g_params, {**history, "discriminator": state[1]}
    return g_params
