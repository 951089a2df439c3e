r"""Noise models :math:`p_\Delta` of :math:`y = f(x) + \delta` (Whang et al.; Asim et al.).

A noise model is a ``flax.struct.dataclass`` pytree with

- ``log_prob(delta) -> scalar``: :math:`\log p_\Delta(\delta)` summed over all entries of one
  measurement-shaped ``delta``;
- ``sample(key, shape=None) -> delta``: one draw.

Array parameters (standard deviations, means, flow params) are leaves, so a noise model can be
passed to ``jax.jit`` and vmapped over (e.g. ``jax.vmap(gaussian)(sigmas)`` gives one noise
level per image; validation is skipped for traced values). Each constructor records the shapes
of one model's arrays and ``log_prob``/``sample`` check them (``check_layout``), so a per-image
model used as a shared one, or the reverse, raises ``ValueError``. Python floats become strongly
typed arrays, so ``gaussian(0.1)`` and ``gaussian(jnp.float32(0.1))`` share one compiled solve.

Constructors:

- :func:`gaussian` (isotropic), :func:`cs_gaussian` (Asim et al.'s CS noise,
  :math:`\sqrt{\mathbb E\|\eta\|^2} = 0.1`), :func:`diagonal_gaussian` (any std map and mean),
- :func:`sinusoidal`, :func:`positive_mean_sinusoidal`, :func:`radial`: the heteroscedastic
  recipes of Whang et al.,
- :func:`flow_noise`: a density given by a normalizing flow,
- :func:`from_log_prob`: any differentiable log density of your own (e.g. Laplace).
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from flowinv.operators import (
    _check_int,
    _check_layout,
    _check_shape,
    _is_tracer,
    _leaf_shapes,
    _strong_floats,
)

Array = jax.Array
Shape = tuple[int, ...]

__all__ = [
    "DiagonalGaussian",
    "FlowNoise",
    "FunctionNoise",
    "cs_gaussian",
    "diagonal_gaussian",
    "flow_noise",
    "from_log_prob",
    "gaussian",
    "positive_mean_sinusoidal",
    "radial",
    "radial_std",
    "sinusoidal",
    "sinusoidal_std",
]

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def _check_positive(value: Any, name: str) -> None:
    """Raises ``ValueError`` unless every entry of a concrete ``value`` is finite and > 0."""
    if _is_tracer(value):
        return
    arr = np.asarray(value)
    if not np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_:
        raise ValueError(f"{name} must be a positive number or array, got {value!r}")
    if arr.size == 0 or not np.all(np.isfinite(arr)) or not np.all(arr > 0):
        shown = value if arr.ndim == 0 else f"an array with min {arr.min() if arr.size else '-'}"
        raise ValueError(f"{name} must be finite and > 0, got {shown}")


def _check_real(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a Python float, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)


# --------------------------------------------------------------------------------------------
# Gaussians


@struct.dataclass
class DiagonalGaussian:
    r"""Independent Gaussian noise, :math:`\delta_i \sim \mathcal N(\mu_i, \sigma_i^2)`:

    .. math:: \log p_\Delta(\delta) = \sum_i \Big[-\tfrac12 \big(\tfrac{\delta_i - \mu_i}
              {\sigma_i}\big)^2 - \log\sigma_i - \tfrac12\log 2\pi\Big].

    ``std`` and ``mean`` are arrays broadcastable to the measurement shape (scalars for
    isotropic noise). ``log_prob`` broadcasts them to ``delta.shape``, so a scalar ``std``
    counts once per entry of ``delta``.
    """

    std: Array
    mean: Array
    built_shapes: tuple[Shape, ...] | None = struct.field(pytree_node=False, default=None)

    def check_layout(self) -> None:
        """Raises ``ValueError`` unless ``std`` and ``mean`` have the shapes they were built
        with (``built_shapes``; not checked when ``None``)."""
        _check_layout("noise", (self.std, self.mean), self.built_shapes)

    def _check_delta(self, delta: Array) -> None:
        self.check_layout()
        try:
            out = jnp.broadcast_shapes(delta.shape, self.std.shape, self.mean.shape)
        except ValueError:
            out = None
        if out != tuple(delta.shape):
            raise ValueError(
                f"delta of shape {tuple(delta.shape)} does not match the noise model "
                f"(std {tuple(self.std.shape)}, mean {tuple(self.mean.shape)})"
            )

    @jax.jit  # compiled once per shape; inlined inside an outer jit
    def log_prob(self, delta: Array) -> Array:
        """``delta``: measurement shape -> scalar log density (sum over entries)."""
        self._check_delta(delta)
        z = (delta - self.mean) / self.std
        per_entry = -0.5 * z * z - jnp.log(self.std) - _HALF_LOG_2PI
        return jnp.sum(jnp.broadcast_to(per_entry, delta.shape))

    def sample(self, key: Array, shape: Shape | None = None) -> Array:
        """One draw :math:`\\mu + \\sigma \\odot \\varepsilon`, :math:`\\varepsilon \\sim
        \\mathcal N(0, I)`.

        Args:
          key: PRNG key.
          shape: measurement shape; defaults to the shape of ``std``/``mean`` (required when
            both are scalars, i.e. for isotropic noise).
        """
        self.check_layout()
        own = jnp.broadcast_shapes(self.std.shape, self.mean.shape)
        if shape is None:
            if own == ():
                raise ValueError("shape is required to sample isotropic (scalar-std) noise")
            shape = own
        shape = tuple(shape)
        try:
            ok = jnp.broadcast_shapes(shape, own) == shape
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"shape {shape} is incompatible with the noise model shape {own}")
        return self._sample(key, shape)

    @functools.partial(jax.jit, static_argnums=(2,))
    def _sample(self, key: Array, shape: Shape) -> Array:
        dtype = jnp.result_type(self.std, self.mean)
        return self.mean + self.std * jax.random.normal(key, shape, dtype)


def diagonal_gaussian(std_map: Any, mean: Any = None) -> DiagonalGaussian:
    r"""Heteroscedastic Gaussian noise :math:`\delta \sim \mathcal N(\mu, \mathrm{diag}(
    \sigma^2))` from a standard-deviation map.

    Args:
      std_map: standard deviations, any shape (usually the measurement shape), all > 0.
      mean: optional mean, broadcastable to ``std_map`` (default 0). A nonzero mean gives the
        positive-mean noise of Whang et al.'s noisy / 1-bit compressed sensing.
    """
    std = jnp.asarray(std_map)
    if not jnp.issubdtype(std.dtype, jnp.floating):
        std = std.astype(jnp.float32)
    std = _strong_floats(std)
    _check_positive(std, "std_map")
    mean = jnp.zeros((), std.dtype) if mean is None else jnp.asarray(mean, std.dtype)
    if not _is_tracer(mean) and not np.all(np.isfinite(np.asarray(mean))):
        raise ValueError("mean must be finite")
    try:
        # broadcastable *to* std_map: the noise has std_map's shape (a (3,) mean beside an
        # (8, 8, 1) map broadcasts with it, but to (8, 8, 3))
        fits = jnp.broadcast_shapes(std.shape, mean.shape) == tuple(std.shape)
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(
            f"mean of shape {tuple(mean.shape)} is not broadcastable to std_map of shape "
            f"{tuple(std.shape)}")
    return DiagonalGaussian(std=std, mean=mean, built_shapes=_leaf_shapes((std, mean)))


def gaussian(sigma: Any) -> DiagonalGaussian:
    r"""Isotropic zero-mean Gaussian noise :math:`\delta \sim \mathcal N(0, \sigma^2 I)`.

    Args:
      sigma: standard deviation ``> 0``; a Python number or a (possibly traced) scalar array,
        so ``jax.vmap(gaussian)(sigmas)`` gives one noise level per image.
    """
    _check_positive(sigma, "sigma")
    std = jnp.asarray(sigma)
    if not jnp.issubdtype(std.dtype, jnp.floating):
        std = std.astype(jnp.float32)
    std = _strong_floats(std)
    _check_positive(std, f"sigma (as {std.dtype})")  # 1e-50 or 1e39 is 0 or inf in float32
    if std.ndim != 0:
        raise ValueError(f"sigma must be a scalar, got shape {tuple(std.shape)}; "
                         "use diagonal_gaussian for a std map")
    mean = jnp.zeros((), std.dtype)
    return DiagonalGaussian(std=std, mean=mean, built_shapes=_leaf_shapes((std, mean)))


def cs_gaussian(m: int, *, rms: float = 0.1) -> DiagonalGaussian:
    r"""Asim et al. (2020) compressed-sensing noise: i.i.d. Gaussian
    :math:`\eta \in \mathbb R^m` normalised so that :math:`\sqrt{\mathbb E\|\eta\|^2} =`
    ``rms`` (0.1 in the paper), i.e. per-entry :math:`\sigma = \mathrm{rms}/\sqrt m`.

    Args:
      m: number of measurements (``>= 1``).
      rms: root expected squared norm of the noise vector, ``> 0``.

    Returns:
      a :class:`DiagonalGaussian` of shape ``(m,)``, so ``sample(key)`` draws one ``η``.
    """
    m = _check_int(m, "m", 1)
    _check_positive(rms, "rms")
    return diagonal_gaussian(jnp.full((m,), rms / math.sqrt(m), jnp.float32))


# --------------------------------------------------------------------------------------------
# Whang et al.'s heteroscedastic recipes


def _clamp(std: np.ndarray, scale: float, min_std: float | None, max_std: float | None):
    lo = 1e-3 * scale if min_std is None else _check_real(min_std, "min_std")
    if lo <= 0:
        raise ValueError(f"min_std must be > 0, got {min_std}")
    hi = math.inf if max_std is None else _check_real(max_std, "max_std")
    if hi < lo:
        raise ValueError(f"max_std must be >= min_std, got max_std={hi}, min_std={lo}")
    return np.clip(std, lo, hi)


def sinusoidal_std(
    shape: Shape,
    *,
    scale: float = 1.0,
    period: float = 16.0,
    axis: int = 0,
    min_std: float | None = None,
    max_std: float | None = None,
) -> Array:
    r"""The std map of Whang et al.'s sinusoidal noise (see :func:`sinusoidal`).

    .. math:: \sigma_k = \mathrm{clamp}\Big(\mathrm{scale}\cdot
              \frac{\exp(\sin(2\pi k / \mathrm{period}))}{\max_{k'} \exp(\sin(2\pi k'/
              \mathrm{period}))},\ \mathrm{min\_std},\ \mathrm{max\_std}\Big),

    for index ``k = 0 .. shape[axis] - 1`` along ``axis``, constant along the other axes.

    Returns:
      float32 array of shape ``shape``.
    """
    shape = _check_shape(shape)
    scale = _check_real(scale, "scale")
    period = _check_real(period, "period")
    if scale <= 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    if period <= 0:
        raise ValueError(f"period must be > 0, got {period}")
    if isinstance(axis, bool | np.bool_) or not isinstance(axis, numbers.Integral) \
            or not -len(shape) <= axis < len(shape):
        raise ValueError(f"axis must be an int in [-{len(shape)}, {len(shape)}), got {axis!r}")
    axis = int(axis) % len(shape)
    k = np.arange(shape[axis], dtype=np.float64)
    profile = np.exp(np.sin(2.0 * np.pi * k / period))
    profile = _clamp(scale * profile / profile.max(), scale, min_std, max_std)
    bshape = [1] * len(shape)
    bshape[axis] = shape[axis]
    return jnp.asarray(np.broadcast_to(profile.reshape(bshape), shape), jnp.float32)


def sinusoidal(
    shape: Shape,
    *,
    scale: float = 1.0,
    period: float = 16.0,
    axis: int = 0,
    mean: Any = 0.0,
    min_std: float | None = None,
    max_std: float | None = None,
) -> DiagonalGaussian:
    r"""Whang et al.'s SINUSOIDAL noise: Gaussian, independent per entry, with a standard
    deviation that varies sinusoidally with the row index ``k``:

    .. math:: \sigma(k) \propto \exp\big(\sin(2\pi k / 16)\big),

    "normalized to have the maximum variance of 1" (Whang et al. 2020 §5.4.2; Whang et al. 2021
    §5.1.3 and appendix B.1, which also clamps :math:`\sigma_k` to a range and varies a
    coefficient). Here ``scale`` is that coefficient (the maximum std; 1 = the paper's
    normalisation) and ``[min_std, max_std]`` the clamp range; see :func:`sinusoidal_std`.

    Generalisation and choices (documented because our text copy of 2021 appendix B.1 lost its
    equations and clamp bounds):

    - the period is 16 pixels/entries whatever the size (the paper uses 64x64 images); pass
      ``period`` to keep a fixed number of cycles per image instead;
    - ``axis=0`` varies the std over rows of an ``(H, W, C)`` image; for a 1-D measurement of
      shape ``(m,)`` it varies over entries: the "1-dimensional version" of noisy / 1-bit CS
      (Whang et al. 2020 §5.4.4, 2021 §5.1.2);
    - ``min_std`` defaults to ``1e-3 * scale`` (a floor that only keeps log densities finite;
      the unclamped minimum is ``scale / e^2``), ``max_std`` to no cap.

    Args:
      shape: measurement shape, e.g. ``(H, W, C)`` or ``(m,)``.
      scale: maximum standard deviation ``> 0``.
      period: period of the sinusoid in entries along ``axis``.
      axis: axis along which the std varies.
      mean: mean (scalar or broadcastable array); see :func:`positive_mean_sinusoidal`.
      min_std: lower clamp ``> 0`` (default ``1e-3 * scale``).
      max_std: upper clamp (default none).
    """
    std = sinusoidal_std(shape, scale=scale, period=period, axis=axis, min_std=min_std,
                         max_std=max_std)
    return diagonal_gaussian(std, mean=mean)


def positive_mean_sinusoidal(
    shape: Shape,
    *,
    scale: float = 1.0,
    shift: float | None = None,
    period: float = 16.0,
    axis: int = 0,
    min_std: float | None = None,
    max_std: float | None = None,
) -> DiagonalGaussian:
    r"""Positive-mean sinusoidal noise of Whang et al.'s noisy and 1-bit compressed sensing:
    the 1-D sinusoidal noise (:func:`sinusoidal` on ``shape = (m,)``) "with a constant shift so
    that the mean is positive for all dimensions" (2020 §5.4.4; 2021 §5.1.2):
    :math:`\delta_k \sim \mathcal N(\mathrm{shift}, \sigma_k^2)`.

    The papers do not state the shift; ``shift`` defaults to ``scale`` (one maximum standard
    deviation), so varying ``scale`` rescales the whole distribution.

    Args:
      shape: measurement shape, usually ``(m,)``.
      scale, period, axis, min_std, max_std: as in :func:`sinusoidal`.
      shift: the constant positive mean (default ``scale``).
    """
    shift = scale if shift is None else shift
    shift = _check_real(shift, "shift")
    if shift <= 0:
        raise ValueError(f"shift must be > 0 for positive-mean noise, got {shift}")
    return sinusoidal(shape, scale=scale, period=period, axis=axis, mean=shift,
                      min_std=min_std, max_std=max_std)


def radial_std(
    shape: Shape,
    *,
    scale: float = 1.0,
    decay: float = 0.005,
    center: tuple[float, float] | None = None,
    min_std: float | None = None,
    max_std: float | None = None,
) -> Array:
    r"""The std map of Whang et al.'s radial noise (see :func:`radial`):

    .. math:: \sigma(d) = \mathrm{clamp}\big(\mathrm{scale}\cdot\exp(-\mathrm{decay}\cdot d^2),
              \ \mathrm{min\_std},\ \mathrm{max\_std}\big),

    with ``d`` the Euclidean distance in pixels from pixel ``(h, w)`` to ``center``.

    Returns:
      float32 array of shape ``shape = (H, W, C)``, constant over channels.
    """
    h, w, c = _check_shape(shape, ndim=3)
    scale = _check_real(scale, "scale")
    decay = _check_real(decay, "decay")
    if scale <= 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    if decay < 0:
        raise ValueError(f"decay must be >= 0, got {decay}")
    if center is None:
        center = ((h - 1) // 2, (w - 1) // 2)
    if not isinstance(center, (tuple, list)) or len(center) != 2:
        raise ValueError(f"center must be a pair (row, col), got {center!r}")
    ch, cw = (_check_real(v, "center") for v in center)
    rows = np.arange(h, dtype=np.float64)[:, None]
    cols = np.arange(w, dtype=np.float64)[None, :]
    d2 = (rows - ch) ** 2 + (cols - cw) ** 2
    std = _clamp(scale * np.exp(-decay * d2), scale, min_std, max_std)
    return jnp.asarray(np.broadcast_to(std[:, :, None], (h, w, c)), jnp.float32)


def radial(
    shape: Shape,
    *,
    scale: float = 1.0,
    decay: float = 0.005,
    center: tuple[float, float] | None = None,
    mean: Any = 0.0,
    min_std: float | None = None,
    max_std: float | None = None,
) -> DiagonalGaussian:
    r"""Whang et al.'s RADIAL noise: Gaussian per pixel with a std that decays with the squared
    distance ``d`` to the centre pixel, :math:`\sigma(d) = \exp(-0.005\, d^2)` (Whang et al.
    2020 §5.4.3; 2021 appendix B.1/B.2: centre pixel ``(31, 31)`` of a 64x64 image, clamped to a
    range). See :func:`radial_std`.

    Generalisation and choices: ``center`` defaults to ``((H-1)//2, (W-1)//2)``, which is
    ``(31, 31)`` at 64x64; ``decay`` is per squared pixel, so the profile keeps its width in
    pixels at other sizes (pass ``decay=0.005 * (64 / H)**2`` to keep it relative to the image
    instead); ``min_std`` defaults to ``1e-3 * scale``, a floor that keeps log densities finite
    (unclamped, float32 ``exp`` underflows to 0 at ``d > ~144``, e.g. in the corners of 256x256
    images), and ``max_std`` to no cap. ``scale`` is the coefficient (maximum std).

    Args:
      shape: image shape ``(H, W, C)``; the std is constant over channels.
      scale: std at the centre ``> 0``.
      decay: coefficient of ``d^2`` in the exponent, ``>= 0``.
      center: ``(row, col)`` of the centre.
      mean: mean (scalar or broadcastable array).
      min_std: lower clamp ``> 0`` (default ``1e-3 * scale``).
      max_std: upper clamp (default none).
    """
    std = radial_std(shape, scale=scale, decay=decay, center=center, min_std=min_std,
                     max_std=max_std)
    return diagonal_gaussian(std, mean=mean)


# --------------------------------------------------------------------------------------------
# flow-based noise


@struct.dataclass
class FlowNoise:
    r"""Noise with a flow density (Whang et al. 2021 §3): :math:`\delta = \mathrm{offset} +
    \mathrm{scale}\cdot u`, :math:`u \sim p_{\mathrm{flow}}`, so by change of variables

    .. math:: \log p_\Delta(\delta) = \log p_{\mathrm{flow}}\big((\delta - \mathrm{offset})
              / \mathrm{scale}\big) - \sum_i \log \mathrm{scale}_i,

    the sum running over the ``n`` entries of ``delta`` (``n log scale`` for a scalar scale).
    ``flow`` is static (a frozen, hashable flow config); ``params``, ``scale`` and ``offset``
    are leaves. ``delta`` has the flow's ``image_shape``.
    """

    params: Any
    scale: Array
    offset: Array
    flow: Any = struct.field(pytree_node=False)
    built_shapes: tuple[Shape, ...] | None = struct.field(pytree_node=False, default=None)

    def check_layout(self) -> None:
        """Raises ``ValueError`` unless ``params``, ``scale`` and ``offset`` have the shapes
        they were built with (``built_shapes``; not checked when ``None``)."""
        _check_layout("noise", (self.params, self.scale, self.offset), self.built_shapes)

    def _check(self, shape: Shape, name: str) -> None:
        self.check_layout()
        if tuple(shape) != tuple(self.flow.image_shape):
            raise ValueError(
                f"{name} must have the flow's image_shape {tuple(self.flow.image_shape)}, "
                f"got {tuple(shape)}"
            )

    def log_prob(self, delta: Array) -> Array:
        """``delta``: ``flow.image_shape`` -> scalar log density."""
        self._check(delta.shape, "delta")
        u = (delta - self.offset) / self.scale
        log_scale = jnp.sum(jnp.broadcast_to(jnp.log(self.scale), delta.shape))
        return self.flow.log_prob(self.params, u) - log_scale

    def sample(self, key: Array, shape: Shape | None = None, *, temperature: float = 1.0) -> Array:
        """One draw ``offset + scale * flow.sample(params, key, temperature)``."""
        self._check(self.flow.image_shape if shape is None else shape, "shape")
        u = self.flow.sample(self.params, key, temperature=temperature)
        return self.offset + self.scale * u


def flow_noise(flow: Any, params: Any, *, scale: Any = 1.0, offset: Any = 0.0) -> FlowNoise:
    r"""A noise model whose density is a normalizing flow's, :math:`\delta = \mathrm{offset}
    + \mathrm{scale}\cdot u`, :math:`u \sim` ``flow`` (e.g. Whang et al.'s MNIST-digit noise,
    a second flow trained on the noise). See :class:`FlowNoise`.

    Args:
      flow: a flowinv flow (frozen, hashable; ``log_prob``, ``sample``, ``image_shape``).
      params: the flow's parameter pytree.
      scale: positive scale, scalar or broadcastable to ``flow.image_shape``.
      offset: additive offset, scalar or broadcastable to ``flow.image_shape``.
    """
    for attr in ("log_prob", "sample", "image_shape"):
        if not hasattr(flow, attr):
            raise ValueError(f"flow must provide {attr!r} (a flowinv flow), "
                             f"got {type(flow).__name__}")
    try:
        hash(flow)
    except TypeError:
        raise ValueError(f"flow must be hashable (a frozen config), got {type(flow).__name__}") \
            from None
    _check_positive(scale, "scale")
    scale, offset = _strong_floats((jnp.asarray(scale), jnp.asarray(offset)))
    _check_positive(scale, f"scale (as {scale.dtype})")  # 1e-50 is 0 in float32
    if not _is_tracer(offset) and not np.all(np.isfinite(np.asarray(offset))):
        raise ValueError(f"offset must be finite, got {offset}")
    shape = tuple(flow.image_shape)
    for name, v in (("scale", scale), ("offset", offset)):
        try:
            ok = jnp.broadcast_shapes(v.shape, shape) == shape
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"{name} of shape {tuple(v.shape)} is not broadcastable to the "
                             f"flow's image_shape {shape}")
    return FlowNoise(params=params, scale=scale, offset=offset, flow=flow,
                     built_shapes=_leaf_shapes((params, scale, offset)))


@struct.dataclass
class FunctionNoise:
    r"""A noise density of your own: :math:`\log p_\Delta(\delta)` = ``log_prob(delta)``, or
    ``log_prob(delta, params)`` with arrays ``params`` (a scale, a covariance factor, any
    pytree of arrays), and optionally a sampler ``sample(key)`` / ``sample(key, params)``.

    The functions are static (a compiled solve is cached per function object: build them
    once); ``params`` are leaves, so per-image noise is the construction vmapped over them.
    ``shape`` is the measurement shape of ``delta``.
    """

    params: Any
    log_prob_fn: Any = struct.field(pytree_node=False)
    sample_fn: Any = struct.field(pytree_node=False)
    shape: Shape = struct.field(pytree_node=False)
    param_shapes: tuple[Shape, ...] | None = struct.field(pytree_node=False, default=None)

    def check_layout(self) -> None:
        """Raises ``ValueError`` unless the arrays of ``params`` have the shapes
        :func:`from_log_prob` saw (``param_shapes``; not checked when ``None``)."""
        _check_layout("noise", self.params, self.param_shapes)

    def _call(self, fn, arg):
        self.check_layout()
        return fn(arg) if self.params is None else fn(arg, self.params)

    def log_prob(self, delta: Array) -> Array:
        """``delta``: ``shape`` -> scalar log density."""
        if tuple(delta.shape) != self.shape:
            raise ValueError(f"delta must have shape {self.shape}, got {tuple(delta.shape)}")
        return self._call(self.log_prob_fn, delta)

    def sample(self, key: Array, shape: Shape | None = None) -> Array:
        """One draw of shape ``shape`` from the sampler given to :func:`from_log_prob`."""
        if self.sample_fn is None:
            raise ValueError("this noise model has no sampler: pass sample=... to "
                             "from_log_prob")
        if shape is not None and tuple(shape) != self.shape:
            raise ValueError(f"shape must be the model's {self.shape}, got {tuple(shape)}")
        return self._call(self.sample_fn, key)


def from_log_prob(log_prob: Any, shape: Shape, *, params: Any = None,
                  sample: Any = None) -> FunctionNoise:
    r"""Wraps any differentiable log density of the noise as a noise model, for ``"map"``,
    ``"latent-map"`` and ``"mle"`` recovery (Whang et al.: any noise density :math:`p_\Delta`).

    ``log_prob(delta[, params])`` maps one measurement-shaped ``delta`` to the scalar
    :math:`\log p_\Delta(\delta)` (summed over entries; constants may be dropped, they do not
    move the minimiser). Both functions are traced once here (:func:`jax.eval_shape`), so a
    wrong output shape shows now rather than inside a compiled solve. Example, Laplace noise
    of scale ``b``::

        laplace = from_log_prob(
            lambda d, b: jnp.sum(-jnp.abs(d) / b - jnp.log(2 * b)), (28, 28, 1), params=0.05,
            sample=lambda key, b: b * jax.random.laplace(key, (28, 28, 1)))

    Args:
      log_prob: the log density, differentiable in ``delta`` (almost everywhere).
      shape: the measurement shape of ``delta``.
      params: optional pytree of arrays passed as both functions' second argument.
      sample: optional ``sample(key[, params]) -> delta`` for :meth:`FunctionNoise.sample`.

    Returns:
      A :class:`FunctionNoise`.
    """
    if not callable(log_prob):
        raise TypeError(f"log_prob must be callable, got {type(log_prob).__name__}")
    if sample is not None and not callable(sample):
        raise TypeError(f"sample must be callable, got {type(sample).__name__}")
    shape = _check_shape(shape)
    params = _strong_floats(params)
    model = FunctionNoise(params=params, log_prob_fn=log_prob, sample_fn=sample, shape=shape,
                          param_shapes=_leaf_shapes(params))
    dtype = jnp.asarray(0.0).dtype
    try:
        out = jax.eval_shape(model.log_prob, jax.ShapeDtypeStruct(shape, dtype))
    except Exception as e:  # any error of the user's function on a delta of this shape
        raise ValueError(f"log_prob fails on a delta of shape {shape}: {type(e).__name__}: "
                         f"{e}") from e
    if not (isinstance(out, jax.ShapeDtypeStruct) and out.shape == ()
            and jnp.issubdtype(out.dtype, jnp.floating)):
        raise ValueError(f"log_prob must return one real scalar (the sum over entries), got "
                         f"{out}")
    if sample is not None:
        try:
            drawn = jax.eval_shape(model.sample, jax.random.PRNGKey(0))
        except Exception as e:
            raise ValueError(f"sample fails: {type(e).__name__}: {e}") from e
        if not isinstance(drawn, jax.ShapeDtypeStruct) or tuple(drawn.shape) != shape \
                or not jnp.issubdtype(drawn.dtype, jnp.floating):
            raise ValueError(f"sample must return one real floating array of shape {shape}, "
                             f"got {drawn}")
    return model
