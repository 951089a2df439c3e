"""``flowinv.recover``: from prior, operator, noise and measurements to recovered images."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import math
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from flowinv import _progress, losses, solvers
from flowinv._checks import positive_int, unit_interval_images
from flowinv.flows import Flow
from flowinv.operators import _is_tracer

Array = jax.Array

METHODS = ("asim", "map", "mle", "bora", "latent-map")
INITS = ("zeros", "normal", "inverse", "lasso-wavelet", "null-space")
RANDOM_INITS = ("normal", "null-space")


@dataclasses.dataclass(frozen=True)
class Generator:
    """A prior without a likelihood (e.g. a DCGAN): ``apply(params, z) -> x`` for one latent.

    ``apply`` must be a hashable (module-level) function so compiled solves are reused.
    """

    apply: Callable[[Any, Array], Array]
    latent_dim: int
    image_shape: tuple[int, int, int]


class Recovery(NamedTuple):
    """Recovered images and diagnostics (leading batch axis when ``y`` was a batch).

    Attributes:
      x: recovered images ``G(z)``, not clipped to ``[0, 1]`` (MAP with ``space="x"``: the
        image variable moved into the flow's box, ``prior.into_box(x)``).
      z: the best finite latents.
      loss: their losses (MAP with ``space="x"``: the loss of the unconstrained image variable
        the solver moved, before ``into_box``; it equals the loss of ``x`` where that variable
        stayed inside the box).
      iterations, converged, diverged, stalled: per image (see
        :class:`flowinv.solvers.SolveResult`).
      loss_history, znorm_history: ``(…, maxiter)`` per iteration, NaN after each image stops.
    """

    x: Array
    z: Array
    loss: Array
    iterations: Array
    converged: Array
    diverged: Array
    loss_history: Array
    znorm_history: Array
    stalled: Array


class _Spec(NamedTuple):
    """Everything static about a solve (hashable: one compilation per distinct spec)."""

    prior: Any  # Flow or Generator
    method: str
    penalty: str
    space: str
    solver: str
    maxiter: int
    solver_kwargs: tuple
    progress: bool = False  # the solver reports every loop pass to the host (recover's bar)


def _build_loss(spec: _Spec, params, op, noise, gamma, beta):
    prior = spec.prior
    if isinstance(prior, Flow):
        gen = losses.flow_generator(prior, params)
    else:
        gen = lambda z: prior.apply(params, z)
    if spec.method == "asim":
        return losses.asim_loss(gen, op, gamma=gamma, penalty=spec.penalty)
    if spec.method == "bora":
        return losses.bora_loss(gen, op, lam=gamma)
    if spec.method == "mle":
        return losses.mle_loss(gen, op, noise)
    if spec.method == "latent-map":
        return losses.latent_map_loss(gen, op, noise, beta=beta, penalty=spec.penalty)
    return losses.map_loss(prior, params, op, noise, beta=beta, space=spec.space)


def _solve_one(spec: _Spec, params, y, z0, op, noise, gamma, beta, tol) -> Recovery:
    loss = _build_loss(spec, params, op, noise, gamma, beta)
    solve = solvers.get_solver(spec.solver)
    in_x = spec.method == "map" and spec.space == "x"
    prior = spec.prior
    v0 = prior.forward(params, z0)[0].ravel() if in_x else z0
    r = solve(loss, v0, y, maxiter=spec.maxiter, tol=tol, progress=spec.progress,
              **dict(spec.solver_kwargs))
    # No finite iterate at all (the initial point was already non-finite): fall back to the
    # latent z = 0 (its image under G when optimising x), flagged as diverged.
    zero = jnp.zeros_like(z0)
    v_safe = prior.forward(params, zero)[0].ravel() if in_x else zero
    found = jnp.isfinite(r.loss)
    v = jnp.where(found, r.z, v_safe)
    # loss(v) rather than loss(v_safe): G(v) below is then the same computation, which XLA
    # merges, so the fallback adds no copy of the prior to the compiled program.
    r = r._replace(z=v, loss=jnp.where(found, r.loss, loss(v, y)))
    if in_x:
        x = prior.into_box(r.z.reshape(prior.image_shape))
        z = prior.inverse(params, x)[0]
    else:
        z = r.z
        x = prior.forward(params, z)[0] if isinstance(prior, Flow) else prior.apply(params, z)
    return Recovery(x, z, r.loss, r.iterations, r.converged, r.diverged, r.loss_history,
                    r.znorm_history, r.stalled)


# One image, compiled (an eager recover_one); inside an outer jit/vmap it is simply inlined.
_solve_one_jit = jax.jit(_solve_one, static_argnums=0)


@functools.partial(jax.jit, static_argnames=("spec", "op_batched", "noise_batched", "mesh"))
def _solve_batch(spec, params, y, z0, op, noise, gamma, beta, tol, *, op_batched,
                 noise_batched, mesh=None):
    """The vmapped solve of a batch; with ``mesh`` (progress on several devices), each device
    solves its slice of the batch under ``shard_map`` and reports its own iterations."""
    batched = (False, False, True, True, op_batched, noise_batched, bool(gamma.ndim),
               bool(beta.ndim), False)
    solve = functools.partial(jax.vmap(_solve_one, in_axes=tuple(
        0 if b else None for b in batched)), spec)
    if mesh is None:
        return solve(params, y, z0, op, noise, gamma, beta, tol)
    split, whole = jax.sharding.PartitionSpec("batch"), jax.sharding.PartitionSpec()
    solve = jax.shard_map(solve, mesh=mesh, in_specs=tuple(split if b else whole
                                                           for b in batched[1:]),
                          out_specs=split, check_vma=False)  # the flows' scans predate it
    with _progress.per_shard("batch"):
        return solve(params, y, z0, op, noise, gamma, beta, tol)


def _prior_parts(prior) -> tuple[Any, Any]:
    if isinstance(prior, str):
        from flowinv.checkpoints import load_prior

        return load_prior(prior)
    if (isinstance(prior, tuple) and len(prior) == 2
            and isinstance(prior[0], Flow | Generator)):
        return prior
    raise TypeError("prior must be a (flow, params) or (Generator, params) tuple, or the name "
                    f"of a shipped prior; got {type(prior).__name__}")


def _is_real(value) -> bool:
    """A real number, or an array of them: not a bool, string, complex number or object, each
    of which ``float()`` or ``np.asarray(..., float64)`` would take or convert."""
    try:
        arr = np.asarray(value)
    except ValueError:  # a ragged list
        return False
    return (arr.dtype != np.bool_ and np.issubdtype(arr.dtype, np.number)
            and not np.iscomplexobj(arr))


def _check_weight(name: str, value, batch: int):
    """A loss weight: a number, or one number per image (shape ``(batch,)``), all ≥ 0."""
    if np.ndim(value) == 0:
        return _check_finite_number(name, value)
    try:
        if not _is_real(value):
            raise TypeError
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number or a 1-D array of real numbers") from None
    if arr.shape != (batch,):
        raise ValueError(f"{name} must be a number or have shape ({batch},) (one per image), "
                         f"got shape {arr.shape}")
    if not (np.all(np.isfinite(arr)) and np.all(arr >= 0)):
        raise ValueError(f"{name} must hold finite numbers >= 0, got {arr}")
    return arr


def _check_finite_number(name: str, value, low: float = 0.0) -> float:
    if not _is_real(value):  # float() would take True and "0.5"
        raise TypeError(f"{name} must be a real number, got {value!r}")
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}") from None
    if not math.isfinite(value) or value < low:
        raise ValueError(f"{name} must be a finite number >= {low}, got {value}")
    return value


def _check_model(obj, name: str) -> None:
    """An operator or noise model is a pytree of arrays (``flax.struct.dataclass``, as every
    model of :mod:`flowinv.operators` and :mod:`flowinv.noise`): the solve passes it through
    ``jax.jit``, which cannot take an object of another class."""
    for leaf in jax.tree.leaves(obj):
        if not isinstance(leaf, jax.Array | np.ndarray | np.generic | int | float):
            maker = ("operators.from_function" if name == "operator"
                     else "noise.from_log_prob")
            raise TypeError(
                f"the {name} must be a pytree of arrays, got a leaf of type "
                f"{type(leaf).__name__}: wrap your function with flowinv.{maker}, or make your "
                f"class a flax.struct.dataclass with its arrays as fields")


def _check_layout(obj, name: str, per_image: bool) -> None:
    """The model's own layout check (``check_layout``, where it has one), on one image's slice
    for a per-image model: a shared model flagged per image, or a per-image model not flagged,
    fails it even where the batch size equals an array's first axis."""
    one = jax.tree.map(lambda a: a[0] if np.ndim(a) else a, obj) if per_image else obj
    check = getattr(one, "check_layout", None)
    if callable(check):
        check()


def _leading_axes(tree) -> list:
    """The leading axis of every array leaf of ``tree`` (``None`` for a scalar leaf)."""
    return [leaf.shape[0] if leaf.ndim else None
            for leaf in jax.tree.leaves(tree) if hasattr(leaf, "shape")]


def _batch_mesh(batch: int) -> jax.sharding.Mesh | None:
    """A 1-D mesh ``"batch"`` of all local devices, where they split ``batch`` evenly
    (:func:`recover` pads each chunk to a multiple of the device count, so they do)."""
    devices = jax.local_devices()
    if len(devices) == 1 or batch % len(devices):
        return None
    return jax.sharding.Mesh(np.array(devices), ("batch",))


def _shard(tree, mesh: jax.sharding.Mesh | None):
    """Places the batch axis of every leaf across ``mesh`` (:func:`_batch_mesh`; no-op for
    ``None``)."""
    if mesh is None:
        return tree
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch"))
    return jax.device_put(tree, sharding)


@functools.partial(jax.jit, static_argnums=1)
def _best_start(result: Recovery, restarts: int) -> Recovery:
    """Per image, the start with the lowest final loss (NaN ranks last) of a restart-major
    ``Recovery`` of ``restarts·B`` solves."""
    per_start = jax.tree.map(lambda a: a.reshape(restarts, -1, *a.shape[1:]), result)
    loss = jnp.where(jnp.isnan(per_start.loss), jnp.inf, per_start.loss)
    best, images = jnp.argmin(loss, axis=0), jnp.arange(loss.shape[1])
    return jax.tree.map(lambda a: a[best, images], per_start)


def _work_dtype(dtype) -> Any:
    """The dtype of the starts and weights for measurements of ``dtype``: at least float32. A
    bfloat16 or float16 ``y`` is data of low precision, while the solve itself runs in the
    loss's precision (:func:`flowinv.solvers.in_loss_precision`, float32 for float32
    params): rounding weights, starts or ``x0`` to ``y``'s dtype would change the problem
    (``γ = 0.03`` as bfloat16 is 0.030029…, ``1e-8`` as float16 is 0) and feed a flow a
    bfloat16 image it cannot invert."""
    return jnp.promote_types(dtype, jnp.float32)


def initial_latents(prior, params, y: Array, op, *, init: str, key: Array | None,
                    init_scale: float, x0: Array | None, dim: int) -> Array:
    """Initial latents ``(B, dim)`` for a batch ``y`` ``(B, …)``.

    The random starts are drawn for the batch as a whole (``"normal"`` one ``(B, dim)`` draw
    from ``key``, ``"null-space"`` one ``(B, H, W, C)`` draw from ``key``; with
    ``per_image_operator`` :func:`recover` calls this once per image, image ``i`` with
    ``fold_in(key, i)``), so image ``i``'s start
    depends on its position in the batch: ``recover(y[i:i+1])`` starts it where
    ``recover(y)`` starts image 0, not image ``i``. To reproduce one image of a batch, pass the
    batch's starts as ``z0`` or solve the same batch.

    * ``"zeros"``: ``z0 = 0`` (Asim et al.'s default for compressed sensing).
    * ``"normal"``: ``z0 ~ N(0, init_scale² I)``.
    * ``"inverse"``: ``z0 = G⁻¹(x0)`` of given images ``x0``.
    * ``"lasso-wavelet"``: ``z0 = G⁻¹(x_L)`` with ``x_L`` the Lasso-wavelet recovery from ``y``.
    * ``"null-space"``: ``z0 = G⁻¹(x0 + p)``, ``p`` a random point of the null space of ``A``
      with ``‖p‖ = init_scale·√n`` (Asim et al. supplement: an initialisation consistent with
      the measurements that is not the truth), clipped to ``[0, 1]`` where ``G⁻¹`` is defined
      (a flow with logit preprocessing has no preimage outside it). For a dense matrix
      (:class:`~flowinv.operators.MatrixOperator`) with ``m ≥ n`` the projection is exact,
      from the matrix's SVD (its numerical null space: the right singular vectors whose
      singular value is at most ``σ_max·max(m, n)·ε``, as ``numpy.linalg.matrix_rank``): the
      conjugate gradients leave 5-10 % of the draw on such a matrix of full rank, while a
      zero-padded or rank-deficient one does have a null space, so its shape cannot decide.
      Other operators use :func:`null_space_projection`. Where ``A`` has no null space
      (a full-rank matrix with ``m ≥ n``, the identity), ``p = 0``: the projection of a random
      image then holds only rounding, which the scaling would blow up into a perturbation of
      the measurements.

    For a flow with logit preprocessing every image is first moved to the centre of its 8-bit
    dequantisation bin, ``x ↦ x·(1 − 2δ) + δ`` with ``δ = 1/512`` (:func:`to_flow_support`):
    the flows train on ``(k + u)/256``, so pixels at exactly 0 or 1 sit at ``logit(α) ≈ ±13.8``,
    far in tails the flow never saw, where L-BFGS stalls (measured: CS at m/n = 0.25 from
    ``G⁻¹`` of another training digit, 4 training images, ``glow-mnist``, 60 iterations:
    9.2 dB mean from the raw image, 12.6 dB from its bin centres).
    """
    batch = y.shape[0]
    dtype = _work_dtype(y.dtype)
    if init == "zeros":
        return jnp.zeros((batch, dim), dtype)
    if init == "normal":
        key = jax.random.PRNGKey(0) if key is None else key
        return init_scale * jax.random.normal(key, (batch, dim), dtype)
    if not isinstance(prior, Flow):
        raise ValueError(f"init={init!r} needs an invertible (flow) prior")
    def inverse(x):
        return _invert_images(prior, params, x)[0]

    if init == "lasso-wavelet":
        from flowinv.baselines import classical

        if not getattr(op, "is_linear", False):
            raise ValueError("init='lasso-wavelet' needs a linear operator")
        xl = jax.vmap(lambda yy: classical.lasso_cs(yy, op, basis="wavelet"))(y)
        return inverse(jnp.clip(xl, 0.0, 1.0))
    if x0 is None:
        raise ValueError(f"init={init!r} needs x0 (images of shape (B, H, W, C))")
    x0 = jnp.asarray(x0, dtype).reshape((batch, *prior.image_shape))
    if init == "inverse":
        return inverse(x0)
    if not getattr(op, "is_linear", False):
        raise ValueError("init='null-space' needs a linear operator")
    key = jax.random.PRNGKey(0) if key is None else key
    eps = jax.random.normal(key, x0.shape, dtype)
    if _is_tall_matrix(op):
        p = _dense_null_space_projection(op.matrix, eps)
    else:
        p = jax.vmap(lambda e: null_space_projection(op, e))(eps)
    norms = jnp.sqrt(jnp.sum(p**2, axis=(1, 2, 3), keepdims=True))
    # below √ε of the draw's norm, p is rounding (measured: 1e-5 relative for m = n), not a
    # direction of the null space
    rounding = math.sqrt(float(jnp.finfo(eps.dtype).eps)) * jnp.sqrt(
        jnp.sum(eps**2, axis=(1, 2, 3), keepdims=True))
    p = jnp.where(norms > rounding, p * init_scale * math.sqrt(dim) / jnp.maximum(norms, 1e-12),
                  0.0)
    return inverse(jnp.clip(x0 + p, 0.0, 1.0))


def _is_tall_matrix(op) -> bool:
    """Whether ``op`` is a plain :class:`~flowinv.operators.MatrixOperator` (a subclass may
    apply something else than its ``matrix``) with one ``(m, n)`` matrix, ``m ≥ n``: where the
    conjugate gradients of :func:`null_space_projection` fail (on a full-rank one, ``AAᵀ`` is
    singular and 200 iterations leave 5-10 % of the draw), while a zero-padded or
    rank-deficient one does have a null space, so its shape cannot decide."""
    from flowinv.operators import MatrixOperator

    return (type(op) is MatrixOperator and jnp.ndim(op.matrix) == 2
            and op.matrix.shape[0] >= op.matrix.shape[1])


def _dense_null_space_projection(matrix: Array, v: Array) -> Array:
    """The projections of images ``v`` ``(B, H, W, C)`` onto the numerical null space of the
    ``(m, n)`` ``matrix``, ``v − V_rᵀV_r v`` with ``V_r`` the right singular vectors of
    singular value above ``σ_max·max(m, n)·ε`` (``numpy.linalg.matrix_rank``'s threshold).
    Exact for any shape or rank: a full-rank matrix with ``m ≥ n`` leaves only rounding
    (which :func:`initial_latents` sets to 0), a zero-padded or rank-deficient one its
    null space. One thin SVD, ``O(min(m, n)²·max(m, n))``: ``O(m·n²)`` where it is used,
    ``m ≥ n``, a matrix of at least ``n²`` entries."""
    a = jnp.asarray(matrix, jnp.promote_types(matrix.dtype, v.dtype))
    m, n = a.shape
    _, s, vt = jnp.linalg.svd(a, full_matrices=False)  # vt: (min(m, n), n)
    keep = (s > jnp.max(s, initial=0.0) * max(m, n) * jnp.finfo(a.dtype).eps).astype(a.dtype)
    flat = v.reshape(v.shape[0], n).astype(a.dtype)
    dot = functools.partial(jnp.matmul, precision=jax.lax.Precision.HIGHEST)  # no TF32 on GPU
    ranged = dot(dot(flat, vt.T) * keep, vt)
    return (flat - ranged).astype(v.dtype).reshape(v.shape)


BIN_CENTRE = 1.0 / 512  # half an 8-bit quantisation level


def to_flow_support(flow, x: Array) -> Array:
    """Images ``x`` in ``[0, 1]`` as ``G⁻¹`` of ``flow`` should see them.

    Flows with logit preprocessing: ``x·(1 − 2δ) + δ``, ``δ = 1/512``, the centre of each 8-bit
    dequantisation bin (at most ``δ`` from ``x``); other flows: ``x`` unchanged.
    """
    if getattr(flow, "preprocess", None) == "logit":
        return x * (1 - 2 * BIN_CENTRE) + BIN_CENTRE
    return x


def invert_images(flow: Flow, params, x: Array) -> tuple[Array, Array]:
    """Latents of a batch of images in ``[0, 1]``, as :func:`recover` inverts them.

    ``(B, H, W, C) -> (z, log_det)`` with ``z = G⁻¹(s(x_b))`` of shape ``(B, n)`` and
    ``log_det = log|det ∂G⁻¹/∂x|`` at ``s(x_b)`` of shape ``(B,)``, where ``s`` is
    :func:`to_flow_support`. Compiled once per flow and input shape (params are traced).
    Raises ``TypeError``/``ValueError`` for a non-flow, non-float images, a shape other than
    ``(B, *flow.image_shape)``, or pixels outside ``[0, 1]`` (where ``G⁻¹`` is undefined).
    """
    if not isinstance(flow, Flow):
        raise TypeError(f"flow must be a flowinv Flow, got {type(flow).__name__}")
    x = jnp.asarray(x)
    if x.ndim != 1 + len(flow.image_shape) or tuple(x.shape[1:]) != tuple(flow.image_shape):
        raise ValueError(f"x must have shape (B, *{tuple(flow.image_shape)}), "
                         f"got {tuple(x.shape)}")
    unit_interval_images(x, "x", why="G⁻¹ is only defined there")
    return _invert_images(flow, params, x)


@functools.partial(jax.jit, static_argnums=0)
def _invert_images(flow: Flow, params, x: Array) -> tuple[Array, Array]:
    """:func:`invert_images` without the checks."""
    return jax.vmap(flow.inverse, in_axes=(None, 0))(params, to_flow_support(flow, x))


def null_space_projection(op, v: Array, iters: int = 200) -> Array:
    r"""Projects image ``v`` onto the null space of ``A``: :math:`v - A^T(AA^T)^{-1}Av`.

    ``(AA^T)^{-1}`` is applied by conjugate gradients with ``op.A`` and ``op.A_adjoint`` only.
    """
    av = op.A(v)
    w, _ = jax.scipy.sparse.linalg.cg(lambda u: op.A(op.A_adjoint(u)), av, maxiter=iters)
    return v - op.A_adjoint(w)


def _checked_spec(prior, operator, noise, *, method, penalty, space, solver, maxiter, tol,
                  solver_kwargs):
    """The checks of everything static about a solve, shared by :func:`recover` and
    :func:`recover_one`: ``(prior, params, spec, operator.out_shape)``."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if solver not in solvers.SOLVERS:
        raise ValueError(f"solver must be one of {solvers.SOLVERS}, got {solver!r}")
    if penalty not in losses.PENALTIES:
        raise ValueError(f"penalty must be one of {losses.PENALTIES}, got {penalty!r}")
    if space not in ("z", "x"):
        raise ValueError(f"space must be 'z' or 'x', got {space!r}")
    maxiter = positive_int(maxiter, "maxiter")
    tol = _check_finite_number("tol", tol)
    if method in ("map", "mle", "latent-map") and noise is None:
        raise ValueError(f"method={method!r} needs a noise model (noise=...)")
    if method in ("asim", "bora") and noise is not None:
        warnings.warn(f"method={method!r} ignores noise (its loss is the squared error): "
                      "method='map', 'latent-map' or 'mle' uses a noise model", stacklevel=3)
    prior, params = _prior_parts(prior)
    if method == "map" and not isinstance(prior, Flow):
        raise ValueError("method='map' needs a flow prior (it uses log p_G)")
    if method != "map" and space != "z":
        raise ValueError("space='x' is only defined for method='map'")
    if penalty != "sq" and method not in ("asim", "latent-map"):
        # bora's λ‖z‖² is fixed, and map and mle have no latent penalty
        raise ValueError(f"penalty={penalty!r} applies to method='asim' and 'latent-map' only, "
                         f"not method={method!r}")
    in_shape = tuple(getattr(operator, "in_shape", ()))
    out_shape = tuple(getattr(operator, "out_shape", ()))
    missing = [what for what, ok in (("__call__", callable(operator)), ("in_shape", in_shape),
                                     ("out_shape", hasattr(operator, "out_shape"))) if not ok]
    if missing:
        raise TypeError("operator must be a flowinv operator (a callable pytree with "
                        "in_shape/out_shape; see flowinv.operators.from_function): this "
                        f"{type(operator).__name__} lacks {', '.join(missing)}")
    _check_model(operator, "operator")
    if noise is not None:
        if not callable(getattr(noise, "log_prob", None)):
            raise TypeError("noise must be a flowinv noise model (a pytree with log_prob; see "
                            "flowinv.noise.from_log_prob)")
        _check_model(noise, "noise")
    if in_shape != tuple(prior.image_shape):
        raise ValueError(f"operator.in_shape {in_shape} does not match the prior's image shape "
                         f"{tuple(prior.image_shape)}")
    spec = _Spec(prior, method, penalty, space, solver, int(maxiter),
                 _checked_solver_kwargs(solver, solver_kwargs))
    return prior, params, spec, out_shape


def _check_maps_one_image(operator, prior, out_shape: tuple, dtype) -> None:
    """An operator shared by the batch must map one image to ``out_shape``: one whose arrays
    carry a batch axis (built with ``jax.vmap``) maps it to a stack of measurements, which
    the losses would broadcast against ``y`` and sum, fitting every image to every operator."""
    image = jax.ShapeDtypeStruct(tuple(prior.image_shape), dtype)
    got = tuple(jax.eval_shape(operator, image).shape)
    if got != tuple(out_shape):
        raise ValueError(
            f"the operator maps one image to shape {got}, not its out_shape {tuple(out_shape)}: "
            "an operator with one set of arrays per image (e.g. built with jax.vmap) needs "
            "per_image_operator=True in recover (and a vmap of recover_one)")


def _checked_solver_kwargs(solver: str, solver_kwargs) -> tuple:
    """``solver_kwargs`` as the sorted items of the static spec, once each name is an option
    of the solver and each value hashable (it is compiled in)."""
    kwargs = dict(solver_kwargs or {})
    own = ("loss", "z0", "y", "maxiter", "tol", "progress")
    options = [name for name in inspect.signature(solvers.get_solver(solver)).parameters
               if name not in own]
    unknown = sorted(set(kwargs) - set(options))
    if unknown:
        raise TypeError(f"solver {solver!r} has no option {', '.join(map(repr, unknown))} in "
                        f"solver_kwargs; its options are {options} (maxiter, tol and progress "
                        f"are arguments of recover itself)")
    for name, value in kwargs.items():
        try:
            hash(value)
        except TypeError:
            raise TypeError(f"solver_kwargs[{name!r}] must be hashable, a number rather than "
                            f"an array (it is compiled into the solve), got "
                            f"{type(value).__name__}") from None
    return tuple(sorted(kwargs.items()))


def recover_one(
    prior,
    y: Array,
    *,
    operator,
    noise=None,
    method: str = "asim",
    gamma: float | Array = 0.0,
    beta: float | Array = 1.0,
    penalty: str = "sq",
    space: str = "z",
    solver: str = "lbfgs",
    z0: Array | None = None,
    maxiter: int = 300,
    tol: float = 1e-5,
    solver_kwargs: dict | None = None,
) -> Recovery:
    """Recovers ONE image, as a pure function of its arrays: compose it with ``jax.jit``,
    ``jax.vmap``, ``lax.map`` or a program of your own.

    The loss and solver of :func:`recover` (same arguments, same meaning), without its host-side
    work: ``y``, ``gamma``, ``beta``, ``z0`` and the arrays of ``operator`` and ``noise`` may
    be traced, so their values are not checked (a non-finite ``y`` shows as ``diverged``);
    there is no batching, chunking, sharding or restarts, and the start is ``z0`` (default 0,
    the papers' start; :func:`initial_latents` builds the others). Shapes and every static
    argument are checked as in :func:`recover`. ``jax.vmap(recover_one)`` over a batch runs
    the same per-image solves as ``recover`` of that batch from the same starts. Example, a γ
    sweep of one image in one compiled program::

        sweep = jax.jit(jax.vmap(lambda g: flowinv.recover_one(
            (flow, params), y, operator=op, gamma=g, maxiter=100).x))
        xs = sweep(jnp.array([0.0, 0.01, 0.1]))          # (3, H, W, C)

    Args:
      prior: ``(flow, params)``, ``(Generator, params)`` or a shipped flow prior's name.
      y: one measurement, shape ``operator.out_shape``.
      z0: the starting latent, shape ``(n,)`` (``n`` the prior's latent size); default zeros.
      others: as in :func:`recover`; ``gamma`` and ``beta`` are numbers or scalar arrays.

    Returns:
      A :class:`Recovery` of one image (no batch axis).
    """
    prior, params, spec, out_shape = _checked_spec(
        prior, operator, noise, method=method, penalty=penalty, space=space, solver=solver,
        maxiter=maxiter, tol=tol, solver_kwargs=solver_kwargs)
    y = jnp.asarray(y)
    if not jnp.issubdtype(y.dtype, jnp.floating):
        raise TypeError(f"y must be floating point, got dtype {y.dtype}")
    if tuple(y.shape) != out_shape:
        raise ValueError(f"y must have shape {out_shape} (one image; vmap recover_one for a "
                         f"batch), got {tuple(y.shape)}")
    _check_layout(operator, "operator", False)
    if noise is not None:
        _check_layout(noise, "noise", False)
    _check_maps_one_image(operator, prior, out_shape, y.dtype)
    dim = prior.latent_dim if isinstance(prior, Generator) else prior.dim
    dtype = _work_dtype(y.dtype)
    z0 = jnp.zeros((dim,), dtype) if z0 is None else jnp.asarray(z0, dtype)
    if tuple(z0.shape) != (dim,):
        raise ValueError(f"z0 must have shape ({dim},), got {tuple(z0.shape)}")
    for name, w in (("gamma", gamma), ("beta", beta)):
        if jnp.ndim(w) != 0:
            raise ValueError(f"{name} must be a number or a scalar array for one image, got "
                             f"shape {jnp.shape(w)} (vmap recover_one to sweep it)")
        if not _is_tracer(w):  # a concrete weight is checked as in recover
            _check_finite_number(name, w)
    gamma, beta = jnp.asarray(gamma, dtype), jnp.asarray(beta, dtype)
    return _solve_one_jit(spec, params, y, z0, operator, noise, gamma, beta,
                          jnp.asarray(float(tol)))


def recover(
    prior,
    y: Array,
    *,
    operator,
    noise=None,
    method: str = "asim",
    gamma: float | Array = 0.0,
    beta: float | Array = 1.0,
    penalty: str = "sq",
    space: str = "z",
    solver: str = "lbfgs",
    init: str = "zeros",
    init_scale: float = 0.1,
    x0: Array | None = None,
    key: Array | None = None,
    maxiter: int = 300,
    tol: float = 1e-5,
    per_image_operator: bool = False,
    per_image_noise: bool = False,
    solver_kwargs: dict | None = None,
    chunk_size: int | None = None,
    restarts: int = 1,
    restart_init: str | None = None,
    progress: bool | str = False,
) -> Recovery:
    """Recovers images from measurements ``y = f(x) + δ`` with a generative prior.

    Args:
      prior: ``(flow, params)``, ``(Generator, params)``, or a shipped flow prior's name.
      y: one measurement of shape ``operator.out_shape`` or a batch ``(B, *out_shape)``.
      operator: a :mod:`flowinv.operators` operator (per image with ``per_image_operator``:
        its array leaves then carry a leading batch axis).
      noise: a :mod:`flowinv.noise` model; needed by ``"map"``, ``"latent-map"`` and
        ``"mle"`` (per image with ``per_image_noise``, e.g.
        ``jax.vmap(noise.gaussian)(sigmas)``: its array leaves then carry a leading batch axis).
      method: ``"asim"`` (``‖f(G(z))−y‖² + γ‖z‖²``, or ``γ‖z‖`` with ``penalty="norm"``),
        ``"map"`` (``−log p_Δ(y−f(G(z))) − β log p_G(G(z))``), ``"latent-map"``
        (``−log p_Δ(y−f(G(z))) + β‖z‖²``, or ``β‖z‖`` with ``penalty="norm"``: the noise
        model with the latent's Gaussian instead of the image density; ``β = ½`` is the mode
        of the latent posterior, for a flow or a GAN), ``"mle"``
        (``−log p_Δ(y−f(G(z)))``) or ``"bora"`` (``‖f(G(z))−y‖² + γ‖z‖²`` for a GAN).
      gamma, beta: the weights above: numbers, or one per image (shape ``(B,)``) to sweep a
        weight over a batch in one compiled solve.
      space: ``"z"`` or ``"x"`` (MAP only): optimise the latent or the image. With ``"x"``
        the image variable starts at ``G(z0)``, the prior is read at ``prior.into_box(x)``
        (a logit flow's density ends at ``[0, 1]``), and the recovery is ``into_box(x)``.
        ``solver_kwargs={"lower": 0.0, "upper": 1.0}`` (``"lbfgs"`` only) instead keeps the
        variable itself in the box (projected L-BFGS), so the recovery is the constrained
        MAP image; see the README's design notes for when that helps.
      solver: ``"lbfgs"`` (default), ``"jaxopt-lbfgs"``, ``"optax-lbfgs"`` or ``"adam"``; see
        :mod:`flowinv.solvers` for how the default was chosen.
      init: see :func:`initial_latents`; ``init_scale``, ``x0`` and ``key`` feed it.
      maxiter, tol: stopping rule (gradient norm ≤ tol, or relative loss change ≤ tol·1e-3;
        ``"adam"`` stops on the gradient norm only, and ``"lbfgs"`` also at the float rounding
        floor or when its line search stalls: see :mod:`flowinv.solvers`).
      solver_kwargs: extra keyword arguments of the solver (e.g. ``learning_rate`` for Adam,
        ``lower``/``upper`` numbers for a box-constrained ``"lbfgs"``); hashable values.
      chunk_size: solve the batch in chunks of at most this many images, one after another
        (as few chunks as that allows, of equal size, so one compiled solve serves them all;
        on several devices a chunk is padded up to a multiple of their count, so it may hold
        more images, at most this many per device).
        ``None``: the whole batch at once, best on a GPU.
        On a CPU smaller chunks can be faster with ``"jaxopt-lbfgs"`` and ``"optax-lbfgs"``:
        their vmapped line search runs until its slowest image accepts a step, so a wide batch
        pays for the worst image at every iteration (``"lbfgs"`` has no nested search: a
        batch runs as many loop passes as its image that needs the most evaluations).
      restarts: solve each image from this many starts and keep, per image, the one with the
        lowest final loss (the objective, never the truth: CSGM's "best of R restarts"). Start
        ``r`` is drawn with ``jax.random.fold_in(key, r)``: start 0 from ``init``, the others
        from ``restart_init``. All ``R·B`` solves run as one batch (chunked by
        ``chunk_size``), so on a GPU restarts cost batch width rather than time.
      restart_init: the initialisation of starts ``1 … R−1`` (used when ``restarts > 1``), a
        random one: ``"normal"`` or ``"null-space"``. ``None`` (default): ``init``, which must
        then be random. ``init="zeros", restart_init="normal"`` keeps the paper's ``z0 = 0``
        among the starts, so no image ends at a higher loss than its ``z0 = 0`` solve.
      progress: ``True`` (or ``"iterations"``): a tqdm bar of solver iterations while the
        solve runs, the furthest image's iteration of the running chunk out of ``maxiter``
        per chunk, and how many images are still running. The compiled solve then hands its
        iteration counts to the host once per loop pass, one call for the whole batch: a
        separate program from ``progress=False``, with the same iterates, which JAX's
        persistent compilation cache does not keep (it holds a host callback), so it compiles
        anew in every process. ``"chunks"``: a bar over the chunks, moved by the host between
        them; the solve is the plain one. ``False`` (default): no bar. With a bar, Ctrl-C
        (``KeyboardInterrupt``) comes back at once; with the iteration bar it also stops the
        running solve at its next loop pass, while a ``"chunks"`` solve runs its chunk to the
        end in the background.

    Returns:
      A :class:`Recovery`; every image keeps its own optimiser state, and each result is the
      best finite iterate, with ``diverged`` set where the loss became non-finite (an image
      whose initial point is already non-finite falls back to ``z = 0``, also flagged).
    """
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if progress not in (None, False, True, "iterations", "chunks"):
        raise ValueError(f"progress must be True, False, 'iterations' or 'chunks', "
                         f"got {progress!r}")
    per_pass = progress in (True, "iterations")
    init_scale = _check_finite_number("init_scale", init_scale)
    if chunk_size is not None:
        chunk_size = positive_int(chunk_size, "chunk_size")
    restarts = positive_int(restarts, "restarts")
    if restart_init is not None and restart_init not in RANDOM_INITS:
        raise ValueError(f"restart_init must be one of {RANDOM_INITS} or None, "
                         f"got {restart_init!r}")
    if restarts > 1 and restart_init is None and init not in RANDOM_INITS:
        raise ValueError(f"restarts={restarts} needs a random init {RANDOM_INITS} or a "
                         f"restart_init: every start from init={init!r} would be the same")
    prior, params, spec, out_shape = _checked_spec(
        prior, operator, noise, method=method, penalty=penalty, space=space, solver=solver,
        maxiter=maxiter, tol=tol, solver_kwargs=solver_kwargs)
    if any(_is_tracer(a) for a in jax.tree.leaves((y, gamma, beta, x0))):
        raise TypeError(
            "flowinv.recover cannot run inside jax.jit, jax.vmap or jax.grad (it got traced "
            "arrays): it checks values, chunks and shards on the host, and batches by itself, "
            "so pass the whole batch to it. To compose a solve with jax.jit or jax.vmap, use "
            "flowinv.recover_one, the same solve of one image as a pure function (it runs "
            "under forward-mode jax.jvp too, but not jax.grad: its loop has no reverse-mode "
            "derivative).")
    y = jnp.asarray(y)
    if not jnp.issubdtype(y.dtype, jnp.floating):
        raise TypeError(f"y must be floating point, got dtype {y.dtype}")
    if tuple(y.shape) == out_shape:
        single = True
        y = y[None]
    elif tuple(y.shape[1:]) == out_shape and y.shape[0] >= 1:
        single = False
    else:
        raise ValueError(f"y must have shape {out_shape} (one image) or (B, *{out_shape}), "
                         f"got {tuple(y.shape)}")
    if not bool(jnp.all(jnp.isfinite(y))):
        raise ValueError("y contains NaN or inf")
    batch = y.shape[0]
    gamma = _check_weight("gamma", gamma, batch)
    beta = _check_weight("beta", beta, batch)
    for flag, obj, name in ((per_image_operator, operator, "operator"),
                            (per_image_noise, noise, "noise")):
        axes = _leading_axes(obj) if flag else [batch]
        if not axes or any(a != batch for a in axes):
            raise ValueError(f"per_image_{name}=True needs a leading batch axis of {batch} on "
                             f"every one of the {name}'s arrays (build it with jax.vmap), got "
                             f"leading axes {axes}")
    _check_layout(operator, "operator", per_image_operator)
    if noise is not None:
        _check_layout(noise, "noise", per_image_noise)
    if not per_image_operator:
        _check_maps_one_image(operator, prior, out_shape, y.dtype)
    if x0 is not None:
        x0 = jnp.asarray(x0)
        if tuple(x0.shape) not in ((batch, *prior.image_shape),) + (
                ((tuple(prior.image_shape)),) if single else ()):
            raise ValueError(f"x0 must have shape {(batch, *prior.image_shape)}, "
                             f"got {tuple(x0.shape)}")
        unit_interval_images(x0, "x0", why="G⁻¹ is only defined there")
    dim = prior.latent_dim if isinstance(prior, Generator) else prior.dim

    def starts(key, init):
        if init in ("lasso-wavelet", "null-space") and per_image_operator:
            key = jax.random.PRNGKey(0) if key is None else key
            return jnp.concatenate([  # a key of its own per image: each draws its own start
                initial_latents(prior, params, y[i: i + 1],
                                jax.tree.map(lambda a, i=i: a[i], operator), init=init,
                                key=jax.random.fold_in(key, i),
                                init_scale=init_scale,
                                x0=None if x0 is None else x0.reshape(batch, -1)[i: i + 1],
                                dim=dim)
                for i in range(batch)])
        return initial_latents(prior, params, y, operator, init=init, key=key,
                               init_scale=init_scale, x0=x0, dim=dim)

    if restarts == 1:
        z0 = starts(key, init)
    else:  # restart-major: solve r·B + b is image b from start r
        key = jax.random.PRNGKey(0) if key is None else key
        later = init if restart_init is None else restart_init
        z0 = jnp.concatenate([starts(jax.random.fold_in(key, r), init if r == 0 else later)
                              for r in range(restarts)])
        tile = lambda a: jnp.tile(jnp.asarray(a), (restarts,) + (1,) * (jnp.ndim(a) - 1))
        y, batch = tile(y), batch * restarts
        gamma, beta = (tile(w) if jnp.ndim(w) else w for w in (gamma, beta))
        if per_image_operator:
            operator = jax.tree.map(tile, operator)
        if per_image_noise:
            noise = jax.tree.map(tile, noise)
    gamma, beta = (jnp.asarray(w, _work_dtype(y.dtype)) for w in (gamma, beta))
    per_image = (y, z0, operator if per_image_operator else None,
                 noise if per_image_noise else None, gamma if gamma.ndim else None,
                 beta if beta.ndim else None)
    # As few chunks as chunk_size allows, of equal size (18 images in chunks of at most 8: 3 of
    # 6, not 8 + 8 + a padded 8).
    size = batch if chunk_size is None else -(-batch // -(-batch // chunk_size))
    devices = jax.local_device_count()
    if devices > 1 and size % devices:  # padded to a multiple of the devices, so that every
        size += devices - size % devices  # chunk is sharded over all of them (_batch_mesh)
    chunks = []
    starts_of_chunks = range(0, batch, size)
    bar = _progress.IterationBar(
        spec.maxiter, len(starts_of_chunks), per_pass=per_pass,
        chunk_images=[min(size, batch - start) for start in starts_of_chunks]) \
        if progress else None
    if per_pass:
        spec = spec._replace(progress=True)
    mesh = _batch_mesh(size)
    with _progress.showing(bar) if progress else contextlib.nullcontext():
        for start in starts_of_chunks:
            # Every chunk has `size` images (the last is padded by repeating its final image),
            # so all chunks share one compiled solve.
            idx = np.minimum(np.arange(start, start + size), batch - 1)
            cy, cz, cop, cnoise, cg, cb = per_image if size == batch else jax.tree.map(
                lambda a, idx=idx: a[idx], per_image)
            cy, cz = _shard((cy, cz), mesh)
            if per_image_operator:
                cop = _shard(cop, mesh)
            try:
                r = _solve_batch(spec, params, cy, cz, cop if per_image_operator else operator,
                                 cnoise if per_image_noise else noise,
                                 gamma if cg is None else cg, beta if cb is None else cb,
                                 jnp.asarray(float(tol)), op_batched=per_image_operator,
                                 noise_batched=per_image_noise,
                                 mesh=mesh if per_pass else None)
            except Exception:
                if bar is not None and bar.cancelled:  # Ctrl-C stopped the solve (_progress)
                    raise KeyboardInterrupt from None
                raise
            n = min(size, batch - start)
            chunks.append(jax.tree.map(lambda a, n=n: a[:n], r))
            if progress:  # the bar reports this chunk until its results are here
                _progress.wait(chunks[-1], bar if per_pass else None)
                bar.chunk_done()
    result = chunks[0] if len(chunks) == 1 else jax.tree.map(
        lambda *a: jnp.concatenate(a), *chunks)
    if restarts > 1:
        result = _best_start(result, restarts)
    if single:
        result = jax.tree.map(lambda a: a[0], result)
    return result
