"""Invertible layers with explicit log-determinants.

Every layer follows one contract (distrax-style, one event per call):

* ``forward_and_log_det(params, z) -> (x, log|det ∂x/∂z|)`` — the *generative* direction;
* ``inverse_and_log_det(params, x) -> (z, log|det ∂z/∂x|)`` — the *normalising* direction;
* ``init(key, x_batch) -> (params, z_batch)`` — data-dependent initialisation on a batch of
  image-side inputs, returning the parameters and the batch mapped to the latent side so layers
  can be initialised in sequence.

:class:`SplitPrior` and :class:`TopPrior`, the learned Gaussians at the ends of a level, are the
exceptions: their ``init`` returns the parameters only, and a split's directions take and give
the two halves (see each class).

A layer whose initialisation needs numbers that differ from step to step (a mask, a starting
rotation) offers ``init_constants()``, a numpy pytree of them, and takes it back as
``init(key, x_batch, init_consts)``; :class:`~flowinv.flows.base.StepStack` stacks them over
its steps and initialises all steps in one ``lax.scan``.

Events are ``(H, W, C)`` arrays; batches are handled by ``jax.vmap``. Log-determinants are
computed in closed form by each layer and never by autodiff. Every floating-point leaf of
``params`` is unconstrained: any real value keeps the layer invertible (except the plain-matrix
1×1 convolution, whose matrix may become singular — that is why LU is the default). Fixed
permutations, signs and masks are constants derived from the layer's static configuration and
never live in ``params``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

Array = jax.Array
Params = Any

ACTNORM_EPS = 5e-4  # Asim et al. supplement §1.2.1: added to the actnorm scale.
ACTNORM_MIN_STD = 1e-3  # the smallest channel std ActNorm's init divides by (≤ 1000×)


# --------------------------------------------------------------------------------------------
# ActNorm
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ActNorm:
    r"""Per-channel affine normalisation (Kingma & Dhariwal, 2018) with a stabilised scale.

    Normalising direction, for ``x`` of shape ``(H, W, C)``:

    .. math:: z = (x + b) \odot s,\qquad s = \exp(\ell) + \epsilon,\qquad
              \log|\det \partial z/\partial x| = H W \sum_c \log s_c

    Generative direction: :math:`x = z / s - b`, with log-det :math:`-HW\sum_c \log s_c`.
    ``ε = 5e-4`` bounds ``1/s`` by 2000, which prevents the division blow-ups the Asim et al.
    supplement (§1.2.1) reports during inversion. Data-dependent init sets ``b = -mean`` and
    ``s ≈ 1/max(std, 10⁻³)`` per channel over the first batch: a channel constant over that
    batch (a colour channel that is 0 everywhere, padding) would otherwise start at
    ``s = 10⁶``, and one grey level's change in it would move ``log p`` by ~10⁷ nats.

    Params: ``{"bias": (C,), "log_scale": (C,)}``.
    """

    eps: float = ACTNORM_EPS

    def scale(self, params: Params) -> Array:
        return jnp.exp(params["log_scale"]) + self.eps

    def inverse_and_log_det(self, params: Params, x: Array) -> tuple[Array, Array]:
        s = self.scale(params)
        z = (x + params["bias"]) * s
        return z, x.shape[0] * x.shape[1] * jnp.sum(jnp.log(s))

    def forward_and_log_det(self, params: Params, z: Array) -> tuple[Array, Array]:
        s = self.scale(params)
        x = z / s - params["bias"]
        return x, -z.shape[0] * z.shape[1] * jnp.sum(jnp.log(s))

    def init(self, key: Array, x_batch: Array) -> tuple[Params, Array]:
        del key
        mean = jnp.mean(x_batch, axis=(0, 1, 2))
        std = jnp.std(x_batch, axis=(0, 1, 2))
        target = 1.0 / (jnp.maximum(std, ACTNORM_MIN_STD) + 1e-6)
        log_scale = jnp.log(jnp.maximum(target - self.eps, 1e-6))
        params = {"bias": -mean, "log_scale": log_scale.astype(x_batch.dtype)}
        z = jax.vmap(lambda x: self.inverse_and_log_det(params, x)[0])(x_batch)
        return params, z


# --------------------------------------------------------------------------------------------
# Invertible 1×1 convolution
# --------------------------------------------------------------------------------------------


@functools.cache
def _lu_constants(channels: int, seed: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    """A random rotation's LU factors: (P, L, U, sign) with W0 = P L U (numpy, cached)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((channels, channels)))
    p, lower, upper = scipy.linalg.lu(q)
    return p, lower, upper, np.sign(np.diag(upper))


def lower_triangular_inverse(lower: Array) -> Array:
    r"""``L⁻¹`` of a lower-triangular ``(C, C)`` matrix with nonzero diagonal, in plain XLA ops.

    Recursive block inversion, vectorised over the blocks of each size: with ``L`` padded by
    the identity to ``n = 2^J ≥ C``, the inverses of its diagonal blocks of size ``s`` give those
    of size ``2s`` through

    .. math:: \begin{pmatrix} A & 0 \\ B & D \end{pmatrix}^{-1}
              = \begin{pmatrix} A^{-1} & 0 \\ -D^{-1} B A^{-1} & D^{-1} \end{pmatrix},

    starting from ``1 / diag(L)``: ``J`` stages of batched ``s×s`` matmuls (at full float32
    precision), as stable as substitution (it is LAPACK's ``trtri`` recursion).

    Why not ``jax.scipy.linalg.solve_triangular``: on the CPU that is a LAPACK custom call that
    splits its batch over XLA's intra-op thread pool and blocks until the pieces finish; when
    every worker of the pool is inside such a call (a vmapped L-BFGS solve of the 64×64×3 Glow
    on 2 cores does this) nothing is left to run the pieces and the program deadlocks.
    """
    c = lower.shape[-1]
    n = 1 << max(c - 1, 0).bit_length()
    full = jnp.eye(n, dtype=lower.dtype).at[:c, :c].set(lower)
    blocks = (1.0 / jnp.diagonal(full)).reshape(n, 1, 1)  # inverses of the 1×1 diagonal blocks
    mm = functools.partial(jnp.matmul, precision=jax.lax.Precision.HIGHEST)
    s = 1
    while s < n:
        m = n // (2 * s)
        idx = jnp.arange(m)
        diag2 = full.reshape(m, 2 * s, m, 2 * s)[idx, :, idx, :]  # (m, 2s, 2s) diagonal blocks
        a_inv, d_inv = blocks[0::2], blocks[1::2]
        off = -mm(mm(d_inv, diag2[:, s:, :s]), a_inv)
        top = jnp.concatenate([a_inv, jnp.zeros_like(a_inv)], axis=2)
        bottom = jnp.concatenate([off, d_inv], axis=2)
        blocks = jnp.concatenate([top, bottom], axis=1)
        s *= 2
    return blocks[0, :c, :c]


#: A matmul at full float32 precision (the 1×1 convolution's products; see InvConv1x1).
_mm = functools.partial(jnp.matmul, precision=jax.lax.Precision.HIGHEST)


@dataclasses.dataclass(frozen=True)
class InvConv1x1:
    r"""Invertible 1×1 convolution, a channel-mixing matrix applied at every pixel.

    Normalising direction: :math:`z_{hw} = W x_{hw}`, log-det :math:`HW \log|\det W|`.
    Every product here is at full float32 precision (``Precision.HIGHEST``), whatever JAX's
    default matmul precision: at TF32 (the default for float32 on recent NVIDIA GPUs; a 10-bit
    mantissa) ``W`` and ``W⁻¹`` would not invert each other to ~10⁻³ per step, and
    ``G(G⁻¹(x))`` would drift by percents over a deep Glow, while the log-det ``Σ log s`` stays
    exact. These matrices are ``C×C``, so it costs little.
    Generative direction: :math:`x_{hw} = W^{-1} z_{hw}`, log-det :math:`-HW \log|\det W|`.

    With ``lu=True`` (default) ``W = P L (U + \mathrm{diag}(\mathrm{sign} \cdot e^{\log s}))``
    with a fixed permutation ``P`` and fixed signs (constants drawn from ``seed``), ``L`` unit
    lower-triangular and ``U`` strictly upper-triangular, so ``log|det W| = Σ log s`` and any
    real parameters give an invertible ``W``. Params: ``{"lower", "upper": (C, C),
    "log_s": (C,)}``; ``W⁻¹`` is computed with matmuls only
    (:func:`lower_triangular_inverse`). With ``lu=False``, ``W`` is a free ``(C, C)`` matrix
    (``{"weight"}``), initialised to a random rotation, with ``log|det W|`` from ``slogdet`` and
    ``W⁻¹`` from ``inv``: LAPACK custom calls on the CPU, which can deadlock a vmapped solve on
    a machine with few cores (see :func:`lower_triangular_inverse`); prefer ``lu=True`` there.
    """

    channels: int
    seed: tuple[int, ...] = (0,)
    lu: bool = True

    def constants(self) -> tuple[np.ndarray, np.ndarray]:
        """The fixed ``(P, sign)``; scanned stacks of layers pass them in as ``consts``."""
        p, _, _, sign = _lu_constants(self.channels, self.seed)
        return p, sign

    def _lu_factors(self, params: Params, consts=None) -> tuple[Array, Array, Array]:
        """``(P, L, U)`` with ``W = P L U`` (LU case): ``L`` unit lower-, ``U`` upper-triangular."""
        dtype = params["log_s"].dtype
        p, sign = self.constants() if consts is None else consts
        p, sign = jnp.asarray(p, dtype), jnp.asarray(sign, dtype)
        lower = jnp.tril(params["lower"], -1) + jnp.eye(self.channels, dtype=dtype)
        upper = jnp.triu(params["upper"], 1) + jnp.diag(sign * jnp.exp(params["log_s"]))
        return p, lower, upper

    def _log_abs_det(self, params: Params) -> Array:
        """``log|det W|``: ``Σ log s`` in the LU case."""
        if not self.lu:
            return jnp.linalg.slogdet(params["weight"])[1]
        return jnp.sum(params["log_s"])

    def weight(self, params: Params, consts=None) -> tuple[Array, Array]:
        """Returns ``(W, log|det W|)``."""
        if not self.lu:
            return params["weight"], self._log_abs_det(params)
        p, lower, upper = self._lu_factors(params, consts)
        return _mm(_mm(p, lower), upper), self._log_abs_det(params)

    def inverse_weight(self, params: Params, consts=None) -> Array:
        """``W⁻¹``, from the inverses of its triangular factors in the LU case."""
        if not self.lu:
            return jnp.linalg.inv(params["weight"])
        p, lower, upper = self._lu_factors(params, consts)
        lower_inv = lower_triangular_inverse(lower)
        upper_inv = lower_triangular_inverse(upper.T).T
        return _mm(_mm(upper_inv, lower_inv), p.T)

    def inverse_and_log_det(self, params: Params, x: Array, consts=None) -> tuple[Array, Array]:
        w, logdet = self.weight(params, consts)
        return _mm(x, w.T), x.shape[0] * x.shape[1] * logdet

    def forward_and_log_det(self, params: Params, z: Array, consts=None) -> tuple[Array, Array]:
        return self.forward_prepared(self.prepare_forward(params, consts), z)

    def prepare_forward(self, params: Params, consts=None) -> dict[str, Array]:
        """What the generative direction needs, computed once per set of params:
        ``{"inverse_weight": W⁻¹ (C, C), "log_det": log|det W|}``.

        :class:`~flowinv.flows.base.StepStack` computes it for all ``K`` steps at once, before
        its scan, so a compiled Glow holds one batched ``W⁻¹`` per level instead of ``K``.
        """
        return {"inverse_weight": self.inverse_weight(params, consts),
                "log_det": self._log_abs_det(params)}

    def forward_prepared(self, prepared: dict[str, Array], z: Array) -> tuple[Array, Array]:
        """``x = W⁻¹ z`` at every pixel, log-det ``-HW log|det W|``; ``prepared`` from
        :meth:`prepare_forward`."""
        x = _mm(z, prepared["inverse_weight"].T)
        return x, -z.shape[0] * z.shape[1] * prepared["log_det"]

    def init_constants(self) -> tuple[dict[str, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """``(start, constants())``: the starting params (numpy, a random rotation ``W0 = P L U``
        drawn from ``seed``) and the fixed ``(P, sign)``, for :meth:`init`."""
        p, lower, upper, sign = _lu_constants(self.channels, self.seed)
        if self.lu:
            start = {"lower": np.tril(lower, -1), "upper": np.triu(upper, 1),
                     "log_s": np.log(np.abs(np.diag(upper)))}
        else:
            start = {"weight": p @ lower @ upper}
        return start, (p, sign)

    def init(self, key: Array, x_batch: Array, init_consts=None) -> tuple[Params, Array]:
        """The rotation ``W0`` (data-independent); ``init_consts`` from :meth:`init_constants`."""
        del key
        start, consts = self.init_constants() if init_consts is None else init_consts
        params = jax.tree.map(lambda a: jnp.asarray(a, x_batch.dtype), start)
        z = jax.vmap(lambda x: self.inverse_and_log_det(params, x, consts)[0])(x_batch)
        return params, z


# --------------------------------------------------------------------------------------------
# Coupling networks (Flax) and coupling layers
# --------------------------------------------------------------------------------------------


class ZeroConv(nn.Module):
    """3×3 convolution initialised to zero, with Glow's learned output scale ``exp(3·logs)``."""

    features: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        h = nn.Conv(self.features, (3, 3), kernel_init=nn.initializers.zeros,
                    bias_init=nn.initializers.zeros, dtype=x.dtype, param_dtype=x.dtype)(x)
        logs = self.param("logs", nn.initializers.zeros, (self.features,), x.dtype)
        return h * jnp.exp(3.0 * logs)


class GlowNet(nn.Module):
    """Glow's coupling network: conv3×3 → ReLU → conv1×1 → ReLU → zero-initialised conv3×3."""

    width: int
    features: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kw = dict(dtype=x.dtype, param_dtype=x.dtype)
        h = nn.relu(nn.Conv(self.width, (3, 3), **kw)(x))
        h = nn.relu(nn.Conv(self.width, (1, 1), **kw)(h))
        return ZeroConv(self.features)(h)


class ResNet(nn.Module):
    """RealNVP's residual coupling network: conv3×3, ``blocks`` residual blocks, zero conv."""

    width: int
    blocks: int
    features: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kw = dict(dtype=x.dtype, param_dtype=x.dtype)
        h = nn.Conv(self.width, (3, 3), **kw)(x)
        for _ in range(self.blocks):
            r = nn.Conv(self.width, (3, 3), **kw)(nn.relu(h))
            r = nn.Conv(self.width, (3, 3), **kw)(nn.relu(r))
            h = h + r
        return ZeroConv(self.features)(nn.relu(h))


@dataclasses.dataclass(frozen=True)
class ChannelCoupling:
    r"""Glow coupling on channel halves ``x = (x_a, x_b)``, ``x_a`` the first ``⌊C/2⌋`` channels.

    Affine (``additive=False``), with ``(t, r) = \mathrm{NN}(x_a)`` and
    :math:`s = \sigma(r + 2)`:

    * normalising: :math:`z_a = x_a,\ z_b = (x_b + t) \odot s`,
      log-det :math:`\sum \log s`;
    * generative: :math:`x_b = z_b / s - t`, log-det :math:`-\sum \log s`.

    Additive (volume-preserving): :math:`z_b = x_b + t`, log-det 0.
    The network's last layer starts at zero (Glow), so an affine coupling starts as
    ``z_b = σ(2)·x_b``. Params: ``{"net": flax params}``.
    """

    channels: int
    width: int
    additive: bool = False

    @property
    def split(self) -> int:
        return self.channels // 2

    def _net(self) -> GlowNet:
        nb = self.channels - self.split
        return GlowNet(self.width, nb if self.additive else 2 * nb)

    def _shift_scale(self, params: Params, xa: Array) -> tuple[Array, Array | None]:
        h = self._net().apply(params["net"], xa)
        if self.additive:
            return h, None
        return h[..., 0::2], jax.nn.sigmoid(h[..., 1::2] + 2.0)

    def inverse_and_log_det(self, params: Params, x: Array) -> tuple[Array, Array]:
        xa, xb = x[..., : self.split], x[..., self.split :]
        t, s = self._shift_scale(params, xa)
        if s is None:
            return jnp.concatenate([xa, xb + t], -1), jnp.zeros((), x.dtype)
        return jnp.concatenate([xa, (xb + t) * s], -1), jnp.sum(jnp.log(s))

    def forward_and_log_det(self, params: Params, z: Array) -> tuple[Array, Array]:
        za, zb = z[..., : self.split], z[..., self.split :]
        t, s = self._shift_scale(params, za)
        if s is None:
            return jnp.concatenate([za, zb - t], -1), jnp.zeros((), z.dtype)
        return jnp.concatenate([za, zb / s - t], -1), -jnp.sum(jnp.log(s))

    def init(self, key: Array, x_batch: Array) -> tuple[Params, Array]:
        params = {"net": self._net().init(key, x_batch[0, ..., : self.split])}
        z = jax.vmap(lambda x: self.inverse_and_log_det(params, x)[0])(x_batch)
        return params, z


@dataclasses.dataclass(frozen=True)
class MaskedCoupling:
    r"""RealNVP affine coupling with a binary mask ``b`` (checkerboard or channel-wise).

    With ``(r, t) = \mathrm{NN}(b \odot x)`` and :math:`s = e^{\rho}\tanh(r)` (``ρ`` learned):

    * normalising: :math:`z = b \odot x + (1-b) \odot (x \odot e^{s} + t)`,
      log-det :math:`\sum (1-b) \odot s`;
    * generative: :math:`x = b \odot z + (1-b) \odot (z - t) \odot e^{-s}`,
      log-det :math:`-\sum (1-b) \odot s`.

    ``mask`` is a constant built from ``(kind, parity)``; it never lives in params.
    Params: ``{"net": flax params, "log_rescale": (C,)}``.
    """

    shape: tuple[int, int, int]
    kind: str  # "checkerboard" | "channel"
    parity: int
    width: int
    blocks: int

    def constants(self) -> np.ndarray:
        """The fixed mask; scanned stacks of layers pass it in as ``consts``."""
        return coupling_mask(self.shape, self.kind, self.parity)

    def _net(self) -> ResNet:
        return ResNet(self.width, self.blocks, 2 * self.shape[-1])

    def _shift_log_scale(self, params: Params, xm: Array, b: Array) -> tuple[Array, Array]:
        h = self._net().apply(params["net"], xm)
        r, t = h[..., 0::2], h[..., 1::2]
        s = jnp.exp(params["log_rescale"]) * jnp.tanh(r)
        return t * (1 - b), s * (1 - b)

    def inverse_and_log_det(self, params: Params, x: Array, consts=None) -> tuple[Array, Array]:
        b = jnp.asarray(self.constants() if consts is None else consts, x.dtype)
        t, s = self._shift_log_scale(params, x * b, b)
        return b * x + (1 - b) * (x * jnp.exp(s) + t), jnp.sum(s)

    def forward_and_log_det(self, params: Params, z: Array, consts=None) -> tuple[Array, Array]:
        b = jnp.asarray(self.constants() if consts is None else consts, z.dtype)
        t, s = self._shift_log_scale(params, z * b, b)
        return b * z + (1 - b) * ((z - t) * jnp.exp(-s)), -jnp.sum(s)

    def init_constants(self) -> np.ndarray:
        """The mask, for :meth:`init`."""
        return self.constants()

    def init(self, key: Array, x_batch: Array, init_consts=None) -> tuple[Params, Array]:
        """``init_consts``: the mask, from :meth:`init_constants`."""
        mask = self.constants() if init_consts is None else init_consts
        b = jnp.asarray(mask, x_batch.dtype)
        params = {
            "net": self._net().init(key, x_batch[0] * b),
            "log_rescale": jnp.zeros((self.shape[-1],), x_batch.dtype),
        }
        z = jax.vmap(lambda x: self.inverse_and_log_det(params, x, mask)[0])(x_batch)
        return params, z


def coupling_mask(shape: tuple[int, int, int], kind: str, parity: int) -> np.ndarray:
    """Binary mask ``(H, W, C)``: 1 marks the entries that condition (pass through unchanged)."""
    h, w, c = shape
    if kind == "checkerboard":
        m = (np.add.outer(np.arange(h), np.arange(w)) + parity) % 2
        return np.broadcast_to(m[:, :, None], shape).astype(np.float32)
    if kind == "channel":
        m = (np.arange(c) < c // 2).astype(np.float32)
        if parity:
            m = 1.0 - m
        return np.broadcast_to(m[None, None, :], shape).astype(np.float32)
    raise ValueError(f"kind must be 'checkerboard' or 'channel', got {kind!r}")


@dataclasses.dataclass(frozen=True)
class Logit:
    r"""Pixel preprocessing :math:`h = \operatorname{logit}(\alpha + (1 - 2\alpha)x)` (RealNVP).

    Normalising direction, elementwise with :math:`u = \alpha + (1-2\alpha)x`:
    :math:`\log|\det| = \sum \log(1-2\alpha) - \log u - \log(1-u)`.
    Generative direction: :math:`x = (\sigma(h) - \alpha)/(1-2\alpha)`, the negated log-det at
    the matching point. It spreads saturated pixels (MNIST's background at 0) over a wide range,
    and keeps every generated image inside ``(−α/(1−2α), 1 + α/(1−2α))``. No params.
    """

    alpha: float = 1e-6

    def inverse_and_log_det(self, params, x: Array) -> tuple[Array, Array]:
        del params
        u = self.alpha + (1 - 2 * self.alpha) * x
        logdet = jnp.sum(jnp.log1p(-2 * self.alpha) - jnp.log(u) - jnp.log1p(-u))
        return jnp.log(u) - jnp.log1p(-u), logdet

    def forward_and_log_det(self, params, h: Array) -> tuple[Array, Array]:
        del params
        u = jax.nn.sigmoid(h)
        # log σ(h) + log(1 − σ(h)) = −softplus(−h) − softplus(h), stable for large |h|
        logdet = jnp.sum(-jax.nn.softplus(-h) - jax.nn.softplus(h) - jnp.log1p(-2 * self.alpha))
        return (u - self.alpha) / (1 - 2 * self.alpha), logdet

    def forward_log_det_in_box(self, h: Array) -> Array:
        r"""The generative log-det restricted to the data box: that of
        :meth:`forward_and_log_det` at :math:`\operatorname{clip}(h, -L, L)`,
        :math:`L = \operatorname{logit}(1-\alpha)`, the pre-images of ``x = 0`` and ``x = 1``.

        Where the generated pixel lies in ``[0, 1]`` it is the exact log-det; beyond, it stays at
        the edge's value. The exact one falls like :math:`-|h|` without bound as ``h`` leaves
        ``[−L, L]`` while ``x`` moves by less than α, so a density read off the generative
        direction, :math:`\log p(z) - \log|\det|`, grows without bound outside the box, where
        no data lies; this one stops at the box (:meth:`Flow.forward_log_prob`).
        """
        edge = jnp.log1p(-self.alpha) - jnp.log(self.alpha)
        h = jnp.clip(h, -edge, edge)
        return jnp.sum(-jax.nn.softplus(-h) - jax.nn.softplus(h) - jnp.log1p(-2 * self.alpha))

    def init(self, key: Array, x_batch: Array) -> tuple[Params, Array]:
        del key
        return {}, jax.vmap(lambda x: self.inverse_and_log_det({}, x)[0])(x_batch)


# --------------------------------------------------------------------------------------------
# Squeeze and multi-scale split
# --------------------------------------------------------------------------------------------


def squeeze(x: Array) -> Array:
    """Space-to-depth ``(H, W, C) -> (H/2, W/2, 4C)``; volume preserving (log-det 0)."""
    h, w, c = x.shape
    x = x.reshape(h // 2, 2, w // 2, 2, c)
    return x.transpose(0, 2, 1, 3, 4).reshape(h // 2, w // 2, 4 * c)


def unsqueeze(x: Array) -> Array:
    """Depth-to-space ``(H, W, 4C) -> (2H, 2W, C)``, the exact inverse of :func:`squeeze`."""
    h, w, c4 = x.shape
    c = c4 // 4
    x = x.reshape(h, w, 2, 2, c).transpose(0, 2, 1, 3, 4)
    return x.reshape(2 * h, 2 * w, c)


@dataclasses.dataclass(frozen=True)
class SplitPrior:
    r"""Factor out the second channel half ``h_2`` of ``h = (h_1, h_2)`` as a latent.

    With ``learned=True`` (Glow), ``h_2 | h_1 ~ N(μ(h_1), diag(e^{2ℓ(h_1)}))`` with
    ``(μ, ℓ)`` from a zero-initialised conv of ``h_1``. The standardisation is folded into the
    bijection so that the latent is standard normal:

    * normalising: :math:`\varepsilon = (h_2 - \mu) \odot e^{-\ell}`, log-det :math:`-\sum\ell`;
    * generative: :math:`h_2 = \mu + e^{\ell} \odot \varepsilon`, log-det :math:`\sum\ell`.

    With ``learned=False``, ``ε = h_2`` (a plain standard normal). Params:
    ``{"net": flax params}`` or ``{}``.
    """

    channels: int
    learned: bool = True

    @property
    def keep(self) -> int:
        return self.channels // 2

    def _stats(self, params: Params, h1: Array) -> tuple[Array, Array]:
        out = ZeroConv(2 * (self.channels - self.keep)).apply(params["net"], h1)
        return out[..., 0::2], out[..., 1::2]

    def inverse_and_log_det(self, params: Params, h: Array) -> tuple[tuple[Array, Array], Array]:
        """``h -> ((h_1, ε), log-det)``."""
        h1, h2 = h[..., : self.keep], h[..., self.keep :]
        if not self.learned:
            return (h1, h2), jnp.zeros((), h.dtype)
        mu, logs = self._stats(params, h1)
        return (h1, (h2 - mu) * jnp.exp(-logs)), -jnp.sum(logs)

    def forward_and_log_det(self, params: Params, h1: Array, eps: Array) -> tuple[Array, Array]:
        """``(h_1, ε) -> (h, log-det)``."""
        if not self.learned:
            return jnp.concatenate([h1, eps], -1), jnp.zeros((), h1.dtype)
        mu, logs = self._stats(params, h1)
        return jnp.concatenate([h1, mu + jnp.exp(logs) * eps], -1), jnp.sum(logs)

    def init(self, key: Array, h_batch: Array) -> Params:
        if not self.learned:
            return {}
        return {"net": ZeroConv(2 * (self.channels - self.keep)).init(
            key, h_batch[0, ..., : self.keep])}


@dataclasses.dataclass(frozen=True)
class TopPrior:
    r"""Learned diagonal Gaussian on the top latent, folded into the bijection.

    Normalising: :math:`\varepsilon = (h - \mu) \odot e^{-\ell}` (log-det :math:`-\sum\ell`);
    generative: :math:`h = \mu + e^{\ell}\odot\varepsilon`. Params: ``{"mean", "log_std"}``
    of the top shape, initialised at zero (so it starts as the identity).
    """

    def inverse_and_log_det(self, params: Params, h: Array) -> tuple[Array, Array]:
        return (h - params["mean"]) * jnp.exp(-params["log_std"]), -jnp.sum(params["log_std"])

    def forward_and_log_det(self, params: Params, eps: Array) -> tuple[Array, Array]:
        return params["mean"] + jnp.exp(params["log_std"]) * eps, jnp.sum(params["log_std"])

    def init(self, key: Array, h_batch: Array) -> Params:
        del key
        zeros = jnp.zeros(h_batch.shape[1:], h_batch.dtype)
        return {"mean": zeros, "log_std": zeros}
