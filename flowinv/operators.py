r"""Forward operators ``f`` of imaging inverse problems, :math:`y = f(x) + \delta`.

Every operator acts on ONE image ``x`` of shape ``in_shape = (H, W, C)`` and returns one
measurement ``y`` of shape ``out_shape``. Operators are ``flax.struct.dataclass`` pytrees: their
arrays (matrices, masks, signs, row indices) are leaves and their shapes / configuration are
static metadata, so an operator can be passed to ``jax.jit`` / ``jax.vmap`` as an argument.

A *per-image* operator (e.g. one random Gaussian matrix per image, as in Asim et al. 2020 and
Whang et al. 2021) is the same pytree with a leading batch axis on its array leaves. Every
random constructor validates only its static arguments, so it can itself be vmapped over keys::

    keys = jax.random.split(key, batch)
    ops = jax.vmap(lambda k: gaussian_cs(k, (64, 64, 3), 2000))(keys)   # matrix: (B, m, n)
    ys = jax.vmap(lambda op, x: op(x))(ops, xs)                         # ys: (B, m)

Each operator with arrays knows their shapes for one image (from its static fields, or recorded
by its constructor) and checks them, at trace time, whenever it is applied (``check_layout``):
a per-image operator applied as a shared one, or a shared one sliced as if per image, raises
``ValueError`` even where the batch size happens to equal the size of an array's first axis.
The noise models of :mod:`flowinv.noise` do the same.

Linear operators (``is_linear = True``) also provide ``A(x)`` (same as ``op(x)``) and the
adjoint ``A_adjoint(y)`` with :math:`\langle A x, y\rangle = \langle x, A^T y\rangle`;
``adjoint_check`` measures how well that holds. The 1-bit operator (``is_linear = False``)
returns :math:`\mathrm{sign}(Ax)` with a straight-through gradient and exposes its linear part
as ``.linear``.

Constructors:

- :func:`identity` (denoising), :func:`matrix_operator` (any dense matrix),
- :func:`gaussian_cs` (dense i.i.d. :math:`\mathcal N(0, 1/m)` compressed sensing),
- :func:`fast_cs` (structured :math:`O(n\log n)` compressed sensing, no ``m x n`` matrix),
- :func:`inpainting` with :func:`center_box_mask` / :func:`random_mask`,
  :func:`subpixel` (sub-pixel imputation),
- :func:`one_bit_cs` / :func:`sign_measurements` (1-bit CS with straight-through gradient),
- :func:`downsample` (average-pooling super-resolution),
- :func:`from_function`: any differentiable JAX function, e.g. a blur (linear or not).
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax import lax
from jax.scipy.fft import dct, idct

Array = jax.Array
Shape = tuple[int, ...]

__all__ = [
    "Downsample",
    "FastCS",
    "FunctionOperator",
    "Identity",
    "Mask",
    "MatrixOperator",
    "SignMeasurements",
    "adjoint_check",
    "center_box_mask",
    "downsample",
    "fast_cs",
    "from_function",
    "gaussian_cs",
    "identity",
    "inpainting",
    "matrix_operator",
    "one_bit_cs",
    "random_mask",
    "sign_measurements",
    "subpixel",
]


# --------------------------------------------------------------------------------------------
# validation helpers (static arguments only, so constructors stay vmappable over keys)


def _is_tracer(x: Any) -> bool:
    return isinstance(x, jax.core.Tracer)


def _check_shape(shape: Any, name: str = "shape", ndim: int | None = None) -> Shape:
    """Returns ``shape`` as a tuple of positive Python ints, or raises ``ValueError``."""
    try:
        out = tuple(shape)
    except TypeError:
        raise ValueError(f"{name} must be a tuple of positive ints, got {shape!r}") from None
    if not out or not all(
        isinstance(s, numbers.Integral) and not isinstance(s, bool) and s > 0 for s in out
    ):
        raise ValueError(f"{name} must be a non-empty tuple of positive ints, got {shape!r}")
    if ndim is not None and len(out) != ndim:
        raise ValueError(f"{name} must have {ndim} entries (H, W, C), got {shape!r}")
    return tuple(int(s) for s in out)


def _check_int(value: Any, name: str, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    value = int(value)
    if value < lo or (hi is not None and value > hi):
        rng = f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise ValueError(f"{name} must be {rng}, got {value}")
    return value


def _check_fraction(value: Any, name: str, *, low_open: bool, high_open: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a Python float, got {value!r}")
    value = float(value)
    lo_ok = value > 0.0 if low_open else value >= 0.0
    hi_ok = value < 1.0 if high_open else value <= 1.0
    if not (lo_ok and hi_ok and math.isfinite(value)):
        rng = ("(" if low_open else "[") + "0, 1" + (")" if high_open else "]")
        raise ValueError(f"{name} must be in {rng}, got {value}")
    return value


_COMPLEX_HINT = ("for complex measurements, stack their real and imaginary parts (e.g. with "
                 "from_function)")


def _check_float_dtype(dtype: Any) -> None:
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"dtype must be a real floating dtype, got {jnp.dtype(dtype)}: "
                         f"{_COMPLEX_HINT}")


def _check_input(x: Array, shape: Shape, what: str) -> None:
    if tuple(x.shape) != tuple(shape):
        raise ValueError(f"{what} must have shape {shape}, got {tuple(x.shape)}")


def _leaf_shapes(tree: Any) -> tuple[Shape, ...]:
    """The shape of every array leaf of ``tree``, in leaf order: the layout of one image's
    arrays, which a model built by a factory keeps as static metadata."""
    return tuple(tuple(np.shape(leaf)) for leaf in jax.tree.leaves(tree))


def _strong_floats(tree: Any) -> Any:
    """``tree`` with its Python floats and weakly typed float arrays made strongly typed, in
    their own float dtype. JAX compiles a weak and a strong ``float32`` apart, so without this
    ``gaussian(0.1)`` and ``gaussian(jnp.float32(0.1))`` would each compile the whole solve."""
    def strong(leaf):
        if isinstance(leaf, float):
            return jnp.asarray(leaf, jnp.asarray(leaf).dtype)
        if (isinstance(leaf, jax.Array) and leaf.weak_type
                and jnp.issubdtype(leaf.dtype, jnp.floating)):
            return jnp.asarray(leaf, leaf.dtype)
        return leaf

    return jax.tree.map(strong, tree)


def _layout_error(what: str, got: Any, expected: Any) -> ValueError:
    """A model's arrays do not have the layout it was built with. This is how a per-image model
    used as a shared one (an extra leading axis), or a shared model sliced as if per image (its
    first axis gone), shows up; ``what`` is ``"operator"`` or ``"noise"``."""
    return ValueError(
        f"the {what}'s arrays have shapes {got}, but it was built for one image with {expected}: "
        f"{'an operator' if what == 'operator' else 'a noise model'} built per image (with "
        f"jax.vmap) needs per_image_{what}=True in recover (or a vmap of recover_one over it), "
        f"and one shared by the batch must not set it")


def _check_layout(what: str, tree: Any, built: tuple[Shape, ...] | None) -> None:
    """Raises :func:`_layout_error` unless the array shapes of ``tree`` are ``built`` (``None``
    for a model constructed directly rather than by its factory: not checked)."""
    if built is not None and _leaf_shapes(tree) != tuple(built):
        raise _layout_error(what, list(_leaf_shapes(tree)), list(built))


def _jit_method(method):
    """Runs ``method(self, arg)`` under ``jax.jit`` with ``self`` as a pytree argument.

    Eager calls then compile once per operator configuration instead of dispatching (and
    compiling) every primitive separately; inside an outer ``jit``/``vmap``/``grad`` the inner
    jit is simply inlined. Shape checks run at trace time, so they still raise ``ValueError``.
    """
    jitted = jax.jit(method)

    @functools.wraps(method)
    def wrapper(self, arg):
        return jitted(self, arg)

    return wrapper


class _Linear:
    """Mixin for linear operators: ``A(x)`` is ``op(x)``; subclasses define ``A_adjoint``."""

    is_linear: ClassVar[bool] = True

    def A(self, x: Array) -> Array:  # noqa: N802 (the usual name of the matrix)
        """Same as ``op(x)``."""
        return self(x)


# --------------------------------------------------------------------------------------------
# identity


@struct.dataclass
class Identity(_Linear):
    """:math:`y = x` (denoising). ``in_shape == out_shape``; self-adjoint."""

    in_shape: Shape = struct.field(pytree_node=False)

    @property
    def out_shape(self) -> Shape:
        return self.in_shape

    @_jit_method
    def __call__(self, x: Array) -> Array:
        """``x``: ``in_shape`` -> ``y = x``: ``in_shape``."""
        _check_input(x, self.in_shape, "x")
        return x

    @_jit_method
    def A_adjoint(self, y: Array) -> Array:  # noqa: N802
        """:math:`A^T y = y`."""
        _check_input(y, self.out_shape, "y")
        return y


def identity(shape: Shape) -> Identity:
    """The identity operator on images of shape ``shape`` (denoising, :math:`y = x + \\delta`).

    Args:
      shape: ``(H, W, C)``.
    """
    return Identity(in_shape=_check_shape(shape))


# --------------------------------------------------------------------------------------------
# dense matrices (Gaussian compressed sensing)


@struct.dataclass
class MatrixOperator(_Linear):
    r""":math:`y = A\,\mathrm{vec}(x)` with a dense matrix ``matrix`` of shape ``(m, n)``.

    ``vec`` is the row-major ravel of the ``(H, W, C)`` image (``n = H W C``);
    :math:`A^T y` is reshaped back to ``in_shape``. Products use ``Precision.HIGHEST`` so that
    accelerators do not silently drop to reduced-precision matmuls.
    """

    matrix: Array
    in_shape: Shape = struct.field(pytree_node=False)

    @property
    def out_shape(self) -> Shape:  # also of a batch of them, as recover reads it
        if self.matrix.ndim < 2:  # one row of a shared matrix, sliced as if per image
            self.check_layout()
        return (self.matrix.shape[-2],)

    def check_layout(self) -> None:
        """Raises ``ValueError`` unless ``matrix`` is ``(m, n)`` with ``n = prod(in_shape)``."""
        n = math.prod(self.in_shape)
        if self.matrix.ndim != 2 or self.matrix.shape[1] != n:
            raise _layout_error("operator", tuple(self.matrix.shape), f"a matrix (m, {n})")

    @_jit_method
    def __call__(self, x: Array) -> Array:
        """``x``: ``in_shape`` -> ``A vec(x)``: ``(m,)``."""
        self.check_layout()
        _check_input(x, self.in_shape, "x")
        return jnp.matmul(self.matrix, x.reshape(-1), precision=lax.Precision.HIGHEST)

    @_jit_method
    def A_adjoint(self, y: Array) -> Array:  # noqa: N802
        """``y``: ``(m,)`` -> :math:`A^T y`: ``in_shape``."""
        self.check_layout()
        _check_input(y, self.out_shape, "y")
        return jnp.matmul(y, self.matrix, precision=lax.Precision.HIGHEST).reshape(self.in_shape)


def matrix_operator(matrix: Any, shape: Shape) -> MatrixOperator:
    """Wraps a dense ``(m, n)`` matrix as an operator on images of shape ``shape``.

    Args:
      matrix: array of shape ``(m, n)`` with ``n = prod(shape)``.
      shape: image shape, e.g. ``(H, W, C)``.
    """
    shape = _check_shape(shape)
    matrix = jnp.asarray(matrix)
    if jnp.iscomplexobj(matrix):
        raise ValueError(f"matrix must be real, got dtype {matrix.dtype}: {_COMPLEX_HINT}")
    n = math.prod(shape)
    if matrix.ndim != 2 or matrix.shape[1] != n:
        raise ValueError(
            f"matrix must have shape (m, {n}) for shape={shape}, got {tuple(matrix.shape)}"
        )
    return MatrixOperator(matrix=matrix, in_shape=shape)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _gaussian_matrix(key: Array, m: int, n: int, dtype: Any) -> Array:
    return jax.random.normal(key, (m, n), dtype) / jnp.sqrt(jnp.asarray(m, dtype))


def gaussian_cs(key: Array, shape: Shape, m: int, *, dtype: Any = jnp.float32) -> MatrixOperator:
    r"""Dense Gaussian compressed sensing: :math:`y = A\,\mathrm{vec}(x)`,
    :math:`A_{ij} \sim \mathcal N(0, 1/m)` i.i.d. (Asim et al. 2020 §4; Whang et al.).

    With this scaling :math:`\mathbb E[A^T A] = I_n` and each row has expected squared norm
    ``n / m``. Only static arguments are validated, so the constructor can be vmapped over keys
    to get one matrix per image: ``jax.vmap(lambda k: gaussian_cs(k, shape, m))(keys)``.

    Args:
      key: PRNG key.
      shape: image shape ``(H, W, C)``; ``n = H W C``.
      m: number of measurements, ``1 <= m <= n``.
      dtype: floating dtype of the matrix.

    Returns:
      A :class:`MatrixOperator` with ``matrix`` of shape ``(m, n)``.
    """
    shape = _check_shape(shape)
    n = math.prod(shape)
    m = _check_int(m, "m", 1, n)
    _check_float_dtype(dtype)
    return MatrixOperator(matrix=_gaussian_matrix(key, m, n, dtype), in_shape=shape)


# --------------------------------------------------------------------------------------------
# fast structured compressed sensing


def _fwht(v: Array) -> Array:
    """Orthonormal fast Walsh–Hadamard transform (Sylvester order) of a length-2^k vector."""
    n = v.shape[-1]
    h = 1
    while h < n:
        u = v.reshape(n // (2 * h), 2, h)
        v = jnp.concatenate([u[:, :1] + u[:, 1:], u[:, :1] - u[:, 1:]], axis=1).reshape(n)
        h *= 2
    return v / jnp.sqrt(jnp.asarray(n, v.dtype))


TRANSFORMS = ("dct", "hadamard")


@struct.dataclass
class FastCS(_Linear):
    r"""Subsampled randomised orthonormal transform:
    :math:`y = \sqrt{n/m}\; S\,T\,D\,\mathrm{vec}(x)`.

    ``D = diag(signs)`` (random :math:`\pm 1`), ``T`` an orthonormal transform of the flattened
    image (orthonormal DCT-II, or the orthonormal Walsh–Hadamard transform when ``n`` is a power
    of two), ``S`` keeps the ``m`` rows ``rows``. Adjoint:
    :math:`A^T y = \sqrt{n/m}\; D\,T^T S^T y` (``T^T`` = orthonormal DCT-III / the Hadamard
    transform itself). :math:`A A^T = (n/m) I_m` exactly and, over the random rows,
    :math:`\mathbb E[A^T A] = I_n`, the same normalisation as :func:`gaussian_cs`. Cost
    :math:`O(n \log n)` time and :math:`O(n)` memory: no ``m x n`` matrix is formed.
    """

    signs: Array  # (n,)
    rows: Array  # (m,) int32
    in_shape: Shape = struct.field(pytree_node=False)
    m: int = struct.field(pytree_node=False)
    transform: str = struct.field(pytree_node=False, default="dct")

    @property
    def out_shape(self) -> Shape:
        return (self.m,)

    def check_layout(self) -> None:
        """Raises ``ValueError`` unless ``signs`` is ``(n,)`` and ``rows`` is ``(m,)``."""
        n = math.prod(self.in_shape)
        if self.signs.shape != (n,) or self.rows.shape != (self.m,):
            raise _layout_error("operator", [tuple(self.signs.shape), tuple(self.rows.shape)],
                                [(n,), (self.m,)])

    @property
    def _scale(self) -> float:
        return math.sqrt(math.prod(self.in_shape) / self.m)

    def _t(self, v: Array) -> Array:
        return _fwht(v) if self.transform == "hadamard" else dct(v, norm="ortho")

    def _t_adjoint(self, v: Array) -> Array:
        return _fwht(v) if self.transform == "hadamard" else idct(v, norm="ortho")

    @_jit_method
    def __call__(self, x: Array) -> Array:
        """``x``: ``in_shape`` -> ``y``: ``(m,)``."""
        self.check_layout()
        _check_input(x, self.in_shape, "x")
        v = self._t(self.signs * x.reshape(-1))
        return self._scale * v[self.rows]

    @_jit_method
    def A_adjoint(self, y: Array) -> Array:  # noqa: N802
        """``y``: ``(m,)`` -> :math:`A^T y`: ``in_shape``."""
        self.check_layout()
        _check_input(y, self.out_shape, "y")
        n = math.prod(self.in_shape)
        dtype = jnp.result_type(y, self.signs)
        v = jnp.zeros((n,), dtype).at[self.rows].set(self._scale * y)
        return (self.signs * self._t_adjoint(v)).reshape(self.in_shape)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _signs_and_rows(key: Array, n: int, m: int, dtype: Any) -> tuple[Array, Array]:
    k_sign, k_rows = jax.random.split(key)
    signs = jax.random.rademacher(k_sign, (n,), dtype=dtype)
    rows = jnp.sort(jax.random.permutation(k_rows, n)[:m]).astype(jnp.int32)
    return signs, rows


def fast_cs(
    key: Array, shape: Shape, m: int, *, transform: str = "dct", dtype: Any = jnp.float32
) -> FastCS:
    r"""Fast structured compressed sensing, :math:`y = \sqrt{n/m}\,S\,T\,D\,\mathrm{vec}(x)`.

    A drop-in replacement for :func:`gaussian_cs` at high resolution (e.g. ``128x128x3`` and
    beyond), with the same normalisation :math:`\mathbb E[A^T A] = I`; see :class:`FastCS`. The
    leaves are the sign vector ``(n,)`` and the sorted row indices ``(m,)`` (int32). Vmappable
    over ``key`` for per-image operators.

    Args:
      key: PRNG key.
      shape: image shape ``(H, W, C)``.
      m: number of measurements, ``1 <= m <= n``.
      transform: ``"dct"`` (any ``n``) or ``"hadamard"`` (``n`` a power of two).
      dtype: floating dtype of the sign vector.
    """
    shape = _check_shape(shape)
    n = math.prod(shape)
    m = _check_int(m, "m", 1, n)
    _check_float_dtype(dtype)
    if transform not in TRANSFORMS:
        raise ValueError(f"transform must be one of {TRANSFORMS}, got {transform!r}")
    if transform == "hadamard" and n & (n - 1):
        raise ValueError(
            f"transform='hadamard' needs n = prod(shape) a power of two, got n={n} "
            f"for shape={shape}; use transform='dct'"
        )
    signs, rows = _signs_and_rows(key, n, m, dtype)
    return FastCS(signs=signs, rows=rows, in_shape=shape, m=m, transform=transform)


# --------------------------------------------------------------------------------------------
# masks: inpainting and sub-pixel imputation


@struct.dataclass
class Mask(_Linear):
    r"""Masking, :math:`y = M \odot x`, with a binary mask ``mask`` of shape ``(H, W, 1)`` (one
    value per pixel, broadcast over channels) or ``(H, W, C)`` (one per sub-pixel).

    Convention: the output keeps the image shape, ``out_shape == in_shape``, with zeros at the
    dropped entries (the measurement is the masked image, not the vector of kept entries), so
    that measurements of different random masks batch together. The operator is an orthogonal
    projection, hence self-adjoint: :math:`A^T y = M \odot y`.
    """

    mask: Array
    in_shape: Shape = struct.field(pytree_node=False)

    @property
    def out_shape(self) -> Shape:
        return self.in_shape

    def check_layout(self) -> None:
        """Raises ``ValueError`` unless ``mask`` is ``(H, W, 1)`` or ``(H, W, C)``."""
        h, w, c = self.in_shape
        if self.mask.ndim != 3 or self.mask.shape[:2] != (h, w) or self.mask.shape[2] not in (
                1, c):
            raise _layout_error("operator", tuple(self.mask.shape), f"a mask {(h, w, 1)}" + (
                f" or {(h, w, c)}" if c > 1 else ""))

    @_jit_method
    def __call__(self, x: Array) -> Array:
        """``x``: ``(H, W, C)`` -> ``mask * x``: ``(H, W, C)``."""
        self.check_layout()
        _check_input(x, self.in_shape, "x")
        return self.mask * x

    @_jit_method
    def A_adjoint(self, y: Array) -> Array:  # noqa: N802
        """:math:`A^T y = M \\odot y`."""
        self.check_layout()
        _check_input(y, self.out_shape, "y")
        return self.mask * y


def inpainting(mask: Any, shape: Shape | None = None) -> Mask:
    r"""Inpainting, :math:`y = M \odot x`, for any binary mask (1 = observed, 0 = missing).

    Args:
      mask: ``(H, W)`` (one value per pixel, broadcast over channels) or ``(H, W, C)`` array of
        zeros and ones (bool, int or float).
      shape: the image shape ``(H, W, C)``. Optional: defaults to ``mask.shape`` for a 3-D mask
        and to ``(H, W, 1)`` for a 2-D mask; give it to apply a 2-D mask to colour images.

    Returns:
      A :class:`Mask` operator; see there for the output-shape convention. Binarity is checked
      when ``mask`` is concrete (so ``jax.vmap(inpainting)(masks)`` also works).
    """
    mask = jnp.asarray(mask)
    if mask.ndim not in (2, 3):
        raise ValueError(f"mask must have shape (H, W) or (H, W, C), got {tuple(mask.shape)}")
    if not _is_tracer(mask):
        vals = np.unique(np.asarray(mask))
        if not np.all(np.isin(vals, (0, 1))):
            raise ValueError(
                f"mask must be binary (only 0 and 1), got values such as {vals[:5].tolist()}"
            )
    if mask.ndim == 2:
        mask = mask[:, :, None]
    if shape is None:
        shape = tuple(mask.shape)
    shape = _check_shape(shape, ndim=3)
    if mask.shape[:2] != shape[:2] or mask.shape[2] not in (1, shape[2]):
        raise ValueError(
            f"mask of shape {tuple(mask.shape)} does not fit images of shape={shape}: "
            "expected (H, W), (H, W, 1) or (H, W, C)"
        )
    dtype = mask.dtype if jnp.issubdtype(mask.dtype, jnp.floating) else jnp.float32
    return Mask(mask=mask.astype(dtype), in_shape=shape)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _bernoulli_mask(key: Array, keep: float, shape: Shape, out_shape: Shape) -> Array:
    """float32 Bernoulli(keep) mask of ``shape``, broadcast to ``out_shape``."""
    return jnp.broadcast_to(jax.random.bernoulli(key, keep, shape).astype(jnp.float32), out_shape)


def center_box_mask(shape: Shape, box_size: int | tuple[int, int]) -> Array:
    """Mask that hides a centred box (Asim et al. 2020 inpainting), ones elsewhere.

    Args:
      shape: image shape ``(H, W, C)``.
      box_size: side of the hidden box, an int or ``(bh, bw)``; the box starts at row
        ``(H - bh) // 2`` and column ``(W - bw) // 2``.

    Returns:
      float32 mask of shape ``(H, W, C)`` (the same value in every channel).
    """
    h, w, c = _check_shape(shape, ndim=3)
    if isinstance(box_size, numbers.Integral) and not isinstance(box_size, bool):
        box_size = (box_size, box_size)
    try:
        bh, bw = box_size
    except (TypeError, ValueError):
        raise ValueError(f"box_size must be an int or (bh, bw), got {box_size!r}") from None
    bh = _check_int(bh, "box_size", 1, h)
    bw = _check_int(bw, "box_size", 1, w)
    mask = np.ones((h, w, c), np.float32)
    top, left = (h - bh) // 2, (w - bw) // 2
    mask[top : top + bh, left : left + bw, :] = 0.0
    return jnp.asarray(mask)


def random_mask(key: Array, shape: Shape, keep_fraction: float) -> Array:
    """Random pixel mask: each pixel kept with probability ``keep_fraction``, the same value in
    every channel. Vmappable over ``key``.

    Args:
      key: PRNG key.
      shape: image shape ``(H, W, C)``.
      keep_fraction: probability in ``(0, 1]`` that a pixel is observed.

    Returns:
      float32 mask of shape ``(H, W, C)``.
    """
    h, w, c = _check_shape(shape, ndim=3)
    keep = _check_fraction(keep_fraction, "keep_fraction", low_open=True, high_open=False)
    return _bernoulli_mask(key, keep, (h, w, 1), (h, w, c))


def subpixel(key: Array, shape: Shape, p: float = 0.25) -> Mask:
    r"""Sub-pixel imputation (Whang et al. 2020 §5.4.5): :math:`y = M \odot x` with
    :math:`M_{hwc} \sim \mathrm{Bernoulli}(1 - p)` i.i.d. for every sub-pixel ``(h, w, c)``.

    Args:
      key: PRNG key (vmappable for one mask per image).
      shape: image shape ``(H, W, C)``.
      p: fraction of sub-pixels dropped, in ``[0, 1)``; the paper drops 25% (``p = 0.25``).

    Returns:
      A :class:`Mask` with a ``(H, W, C)`` float32 mask.
    """
    shape = _check_shape(shape, ndim=3)
    p = _check_fraction(p, "p", low_open=False, high_open=True)
    return Mask(mask=_bernoulli_mask(key, 1.0 - p, shape, shape), in_shape=shape)


# --------------------------------------------------------------------------------------------
# 1-bit compressed sensing


@struct.dataclass
class SignMeasurements:
    r"""Quantised measurements :math:`y = \mathrm{sign}(A x)` of a linear operator ``linear``.

    Forward value: ``sign(A x)`` (``sign(0) = 0``). Gradient: straight-through estimator
    (Bengio et al. 2013, as in Whang et al. §5.4.4), i.e. the sign is differentiated as the
    identity, :math:`\partial y / \partial x := A`, implemented as
    ``stop_gradient(sign(z)) + (z − stop_gradient(z))`` with ``z = A x``: the forward value is
    ``sign(z)`` exactly (``z + stop_gradient(sign(z) − z)``, the textbook form, rounds it away in
    float32 once ``|z|`` passes about 10⁷).
    """

    linear: Any
    is_linear: ClassVar[bool] = False

    @property
    def in_shape(self) -> Shape:
        return self.linear.in_shape

    @property
    def out_shape(self) -> Shape:
        return self.linear.out_shape

    def check_layout(self) -> None:
        """The linear operator's check (``ValueError`` where its arrays are not one image's)."""
        check = getattr(self.linear, "check_layout", None)
        if callable(check):
            check()

    @_jit_method
    def __call__(self, x: Array) -> Array:
        """``x``: ``in_shape`` -> ``sign(A x)``: ``out_shape``."""
        z = self.linear(x)
        return lax.stop_gradient(jnp.sign(z)) + (z - lax.stop_gradient(z))


def sign_measurements(linear: Any) -> SignMeasurements:
    """1-bit measurements ``sign(linear(x))`` of any linear operator of this module."""
    if not getattr(linear, "is_linear", False):
        raise ValueError(f"linear must be a linear operator, got {type(linear).__name__}")
    return SignMeasurements(linear=linear)


def one_bit_cs(key: Array, shape: Shape, m: int, *, dtype: Any = jnp.float32) -> SignMeasurements:
    r"""1-bit compressed sensing (Whang et al.): :math:`y = \mathrm{sign}(A x)` with the dense
    Gaussian ``A`` of :func:`gaussian_cs` (:math:`A_{ij} \sim \mathcal N(0, 1/m)`) and a
    straight-through gradient. ``.linear`` is the underlying :class:`MatrixOperator`.
    Vmappable over ``key``.
    """
    return SignMeasurements(linear=gaussian_cs(key, shape, m, dtype=dtype))


# --------------------------------------------------------------------------------------------
# super-resolution


@struct.dataclass
class Downsample(_Linear):
    r"""Average pooling by ``factor``: ``(H, W, C) -> (H/f, W/f, C)``,
    :math:`y_{ijc} = f^{-2} \sum_{a,b<f} x_{fi+a,\,fj+b,\,c}`.

    Adjoint: nearest-neighbour upsampling divided by :math:`f^2`,
    :math:`(A^T y)_{hwc} = f^{-2}\, y_{\lfloor h/f\rfloor \lfloor w/f\rfloor c}`.
    """

    in_shape: Shape = struct.field(pytree_node=False)
    factor: int = struct.field(pytree_node=False)

    @property
    def out_shape(self) -> Shape:
        h, w, c = self.in_shape
        return (h // self.factor, w // self.factor, c)

    @_jit_method
    def __call__(self, x: Array) -> Array:
        """``x``: ``(H, W, C)`` -> ``y``: ``(H/f, W/f, C)``."""
        _check_input(x, self.in_shape, "x")
        ho, wo, c = self.out_shape
        f = self.factor
        return x.reshape(ho, f, wo, f, c).mean(axis=(1, 3))

    @_jit_method
    def A_adjoint(self, y: Array) -> Array:  # noqa: N802
        """``y``: ``(H/f, W/f, C)`` -> ``x``: ``(H, W, C)``."""
        _check_input(y, self.out_shape, "y")
        f = self.factor
        return jnp.repeat(jnp.repeat(y, f, axis=0), f, axis=1) / (f * f)


def downsample(shape: Shape, factor: int) -> Downsample:
    """Average-pooling super-resolution operator; ``H`` and ``W`` must be divisible by
    ``factor``.

    Args:
      shape: image shape ``(H, W, C)``.
      factor: integer pooling factor ``f >= 1``.
    """
    shape = _check_shape(shape, ndim=3)
    factor = _check_int(factor, "factor", 1)
    if shape[0] % factor or shape[1] % factor:
        raise ValueError(f"factor={factor} must divide H and W of shape={shape}")
    return Downsample(in_shape=shape, factor=factor)


# --------------------------------------------------------------------------------------------
# any differentiable function


@struct.dataclass
class FunctionOperator:
    r"""A forward operator of your own: :math:`y = f(x)`, or :math:`y = f(x, \theta)` with
    arrays :math:`\theta` (``params``: a blur kernel, a phase mask, any pytree of arrays).

    ``fn`` is static: the compiled solve is cached per function object, so build it once and
    reuse it (a new ``lambda`` in every call recompiles). ``params`` are pytree leaves, so a
    per-image operator is the same construction vmapped over its parameters.

    With ``is_linear`` (``from_function(..., linear=True)``) ``A_adjoint`` is the transpose
    of ``fn`` in ``x`` (:func:`jax.linear_transpose`), which the ``"null-space"`` and
    ``"lasso-wavelet"`` initialisations and :func:`adjoint_check` use.
    """

    params: Any
    fn: Any = struct.field(pytree_node=False)
    in_shape: Shape = struct.field(pytree_node=False)
    out_shape: Shape = struct.field(pytree_node=False)
    is_linear: bool = struct.field(pytree_node=False)
    param_shapes: tuple[Shape, ...] | None = struct.field(pytree_node=False, default=None)

    def check_layout(self) -> None:
        """Raises ``ValueError`` unless the arrays of ``params`` have the shapes
        :func:`from_function` saw (``param_shapes``; not checked when ``None``)."""
        _check_layout("operator", self.params, self.param_shapes)

    def _apply(self, x: Array) -> Array:
        self.check_layout()
        return self.fn(x) if self.params is None else self.fn(x, self.params)

    @_jit_method
    def __call__(self, x: Array) -> Array:
        """``x``: ``in_shape`` -> ``fn(x[, params])``: ``out_shape``."""
        _check_input(x, self.in_shape, "x")
        return self._apply(x)

    def A(self, x: Array) -> Array:  # noqa: N802
        """Same as ``op(x)``; only for a linear operator."""
        self._require_linear("A")
        return self(x)

    @_jit_method
    def A_adjoint(self, y: Array) -> Array:  # noqa: N802
        r"""``y``: ``out_shape`` -> :math:`(\partial f/\partial x)^T y`: ``in_shape``."""
        self._require_linear("A_adjoint")
        _check_input(y, self.out_shape, "y")
        # fn may promote (float64 params) or cast (to float32): the transpose is taken at
        # y's dtype promoted with fn's output's, as the built-in operators promote, and its
        # cotangent must have fn's own output dtype.
        out_dtype = jax.eval_shape(self._apply,
                                   jax.ShapeDtypeStruct(self.in_shape, y.dtype)).dtype
        x_spec = jax.ShapeDtypeStruct(self.in_shape, jnp.promote_types(y.dtype, out_dtype))
        out_dtype = jax.eval_shape(self._apply, x_spec).dtype
        return jax.linear_transpose(self._apply, x_spec)(y.astype(out_dtype))[0]

    def _require_linear(self, name: str) -> None:
        if not self.is_linear:
            raise ValueError(f"{name} needs a linear operator: build it with "
                             "from_function(..., linear=True)")


def from_function(fn: Any, shape: Shape, *, params: Any = None,
                  linear: bool = False) -> FunctionOperator:
    r"""Wraps any differentiable JAX function as a forward operator on images of ``shape``.

    ``fn(x)`` (or ``fn(x, params)`` when ``params`` is given) maps ONE image ``x`` of shape
    ``shape`` to a real floating measurement; its shape becomes ``out_shape``, found by
    tracing ``fn`` once (:func:`jax.eval_shape`), so a mistake shows here rather than inside a
    compiled solve. Example, a 5×5 Gaussian blur of a grey image::

        k = jnp.exp(-(jnp.arange(-2, 3) ** 2) / 2.0); k = jnp.outer(k, k) / jnp.sum(k) ** 2
        blur = lambda x, k: jax.scipy.signal.convolve2d(x[..., 0], k, mode="same")[..., None]
        op = from_function(blur, (28, 28, 1), params=k, linear=True)

    Args:
      fn: a function of JAX arrays; differentiable in ``x`` for gradient-based recovery.
      shape: image shape ``(H, W, C)`` (any non-empty shape of positive sizes).
      params: optional pytree of arrays passed as ``fn``'s second argument.
      linear: ``fn`` is linear in ``x``: checked by tracing its transpose and, outside
        ``jit``/``vmap`` (where ``fn(0)`` is known), by ``fn(0) = 0``; a nonlinear or affine
        ``fn`` raises ``ValueError``. ``A``/``A_adjoint`` become available.

    Returns:
      A :class:`FunctionOperator`.
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    shape = _check_shape(shape)
    params = _strong_floats(params)
    dtype = jnp.asarray(0.0).dtype
    spec = jax.ShapeDtypeStruct(shape, dtype)
    params_spec = jax.tree.map(lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)),
                               params)
    call = (lambda x, p: fn(x)) if params is None else fn
    try:
        out = jax.eval_shape(call, spec, params_spec)
    except Exception as e:  # any error of the user's function on an image of this shape
        raise ValueError(f"fn fails on an image of shape {shape}: {type(e).__name__}: {e}") from e
    if not isinstance(out, jax.ShapeDtypeStruct):
        raise ValueError(f"fn must return one array, got {type(out).__name__}")
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise ValueError(f"fn must return real floating measurements, got dtype {out.dtype} "
                         "(for complex measurements return the real and imaginary parts)")
    op = FunctionOperator(params=params, fn=fn, in_shape=shape, out_shape=tuple(out.shape),
                          is_linear=bool(linear), param_shapes=_leaf_shapes(params))
    if op.is_linear:
        try:
            jax.eval_shape(op.A_adjoint, jax.ShapeDtypeStruct(op.out_shape, out.dtype))
        except Exception as e:
            raise ValueError(f"linear=True but fn is not linear in x: {type(e).__name__}: "
                             f"{e}") from e
        at_zero = op(jnp.zeros(shape, dtype))
        if not _is_tracer(at_zero):  # an affine offset (unknowable while tracing)
            offset = float(jnp.max(jnp.abs(at_zero)))
            if offset != 0.0:
                raise ValueError(f"linear=True but fn(0) != 0 (max |fn(0)| = {offset:g}): an "
                                 "affine fn is not linear; subtract fn(0) from y instead")
    return op


# --------------------------------------------------------------------------------------------
# checks


def adjoint_check(op: Any, key: Array, *, dtype: Any = None) -> Array:
    r"""Relative error of the adjoint identity :math:`\langle Ax, y\rangle = \langle x,
    A^T y\rangle` at random Gaussian ``x`` (``in_shape``) and ``y`` (``out_shape``):

    .. math:: \frac{|\langle Ax, y\rangle - \langle x, A^T y\rangle|}
                   {\max(\|Ax\|\,\|y\|,\ \|x\|\,\|A^T y\|)}

    The denominator is the Cauchy–Schwarz bound of both sides, so the ratio is scale-free and
    well defined even when the inner products themselves are close to zero; a zero operator
    (an all-zero mask), where it is 0/0, reads 0.

    Args:
      op: a linear operator of this module (one image, not a batched pytree).
      key: PRNG key.
      dtype: dtype of ``x`` and ``y``; default float64 when x64 is enabled, else float32.
    """
    if not getattr(op, "is_linear", False):
        raise ValueError(f"op must be a linear operator, got {type(op).__name__}")
    if callable(getattr(op, "check_layout", None)):
        try:
            op.check_layout()
        except ValueError as e:
            raise ValueError(
                f"adjoint_check takes one image's operator, but this {type(op).__name__}'s "
                f"arrays do not have the shapes it was built with (one built per image with "
                f"jax.vmap? check image i with jax.tree.map(lambda a: a[i], op))") from e
    dtype = jnp.asarray(0.0).dtype if dtype is None else dtype
    kx, ky = jax.random.split(key)
    x = jax.random.normal(kx, op.in_shape, dtype)
    y = jax.random.normal(ky, op.out_shape, dtype)
    ax, aty = op.A(x), op.A_adjoint(y)
    lhs, rhs = jnp.vdot(ax, y), jnp.vdot(x, aty)
    norm = lambda v: jnp.sqrt(jnp.sum(v * v))
    bound = jnp.maximum(norm(ax) * norm(y), norm(x) * norm(aty))
    # A zero operator (an all-zero mask) has bound 0 and both sides exactly 0; a NaN anywhere
    # stays NaN, so a broken operator never passes a `< tol` check.
    return jnp.where(bound == 0, 0.0, jnp.abs(lhs - rhs) / jnp.where(bound == 0, 1.0, bound))
