"""The flow contract, and a stack of identical steps run with ``lax.scan``."""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Params = Any


@dataclasses.dataclass(frozen=True)
class StepStack:
    """``K`` flow steps of identical structure, run with ``lax.scan`` over stacked params.

    ``steps[k]`` is the tuple of layers of step ``k`` in normalising order; steps differ only
    in their constants (permutations, signs, masks), which are stacked and scanned alongside the
    stacked params. Params: a tuple with one entry per layer position, each leaf of shape
    ``(K, ...)``.

    A layer may offer ``prepare_forward(params, consts)`` and ``forward_prepared(prepared, h)``
    (the 1×1 convolution does, for ``W⁻¹`` and ``log|det W|``): its ``z``-independent work in
    the generative direction is then done for all ``K`` steps in one vmapped call before the
    scan, instead of once inside every (unrolled) step.

    ``clip``: in the generative direction, activations are clipped to ``[-clip, clip]`` after
    every step (Asim et al. supplement §1.2.1). Clipping only acts where the flow would otherwise
    overflow; the log-det ignores it.

    ``unroll``: passed to ``lax.scan``. ``None`` (default) fully unrolls on the CPU backend and
    keeps a rolled loop elsewhere: XLA:CPU runs convolution gradients inside a while loop about
    16× slower than unrolled (measured: Glow 28×28, K=8, width 128, batch 64 on 2 cores:
    8.6 s vs 0.53 s per value-and-grad, and the unrolled one also compiled faster, 4.9 s vs
    10.9 s), while on GPU the rolled scan keeps compile time flat in ``K``.
    """

    steps: tuple[tuple[Any, ...], ...]
    clip: float | None = None
    unroll: int | bool | None = None

    def _unroll(self) -> int | bool:
        """``lax.scan``'s ``unroll``; ``None`` picks by backend (see the class docstring)."""
        if self.unroll is not None:
            return self.unroll
        return jax.default_backend() == "cpu"

    def _consts(self) -> tuple[Any, ...]:
        template = self.steps[0]
        out = []
        for j, layer in enumerate(template):
            if hasattr(layer, "constants"):
                out.append(jax.tree.map(lambda *a: np.stack(a),
                                        *[step[j].constants() for step in self.steps]))
            else:
                out.append(None)
        return tuple(out)

    def _apply_layer(self, layer, params, consts, h, direction):
        fn = getattr(layer, f"{direction}_and_log_det")
        return fn(params, h) if consts is None else fn(params, h, consts)

    def inverse_and_log_det(self, params: Params, x: Array) -> tuple[Array, Array]:
        template = self.steps[0]

        def body(carry, xs):
            h, logdet = carry
            p, c = xs
            for j, layer in enumerate(template):
                h, ld = self._apply_layer(layer, p[j], c[j], h, "inverse")
                logdet = logdet + ld
            return (h, logdet), None

        (z, logdet), _ = jax.lax.scan(body, (x, jnp.zeros((), x.dtype)),
                                      (params, self._consts()), unroll=self._unroll())
        return z, logdet

    def _prepare_forward(self, params: Params, consts: tuple[Any, ...]) -> tuple[Any, ...]:
        """Per layer position, the result of ``prepare_forward`` (a layer's ``z``-independent
        work in the generative direction, e.g. the 1×1 convolution's ``W⁻¹``) for all ``K``
        steps in one batched call; ``None`` where a layer has no such hook. Done before the
        scan, it appears once in the compiled program rather than once per unrolled step."""
        return tuple(jax.vmap(layer.prepare_forward)(params[j], consts[j])
                     if hasattr(layer, "prepare_forward") else None
                     for j, layer in enumerate(self.steps[0]))

    def forward_and_log_det(self, params: Params, z: Array) -> tuple[Array, Array]:
        template = self.steps[0]
        consts = self._consts()
        prepared = self._prepare_forward(params, consts)

        def body(carry, xs):
            h, logdet = carry
            p, c, prep = xs
            for j in reversed(range(len(template))):
                if prep[j] is None:
                    h, ld = self._apply_layer(template[j], p[j], c[j], h, "forward")
                else:
                    h, ld = template[j].forward_prepared(prep[j], h)
                logdet = logdet + ld
            if self.clip is not None:
                h = jnp.clip(h, -self.clip, self.clip)
            return (h, logdet), None

        (x, logdet), _ = jax.lax.scan(
            body, (z, jnp.zeros((), z.dtype)), (params, consts, prepared), reverse=True,
            unroll=self._unroll())
        return x, logdet

    def init(self, key: Array, x_batch: Array) -> tuple[Params, Array]:
        """``(params, z_batch)``: the steps initialised in sequence on ``x_batch``
        ``(N, H, W, C)``, each layer on the batch its predecessor maps, step ``k`` with the key
        ``split(split(key, K)[k], len(step))[j]`` for its layer ``j``.

        One rolled ``lax.scan`` over the steps, with each layer's :meth:`init_constants` stacked
        alongside the keys, so a compiled initialisation holds one step per stack whatever
        ``K`` (it runs once; its compile time is what counts).
        """
        template = self.steps[0]
        init_consts = tuple(
            jax.tree.map(lambda *a: np.stack(a), *[step[j].init_constants()
                                                  for step in self.steps])
            if hasattr(layer, "init_constants") else None
            for j, layer in enumerate(template))

        def body(h, xs):
            k, c = xs
            params = []
            for layer, kj, cj in zip(template, jax.random.split(k, len(template)), c,
                                     strict=True):
                p, h = layer.init(kj, h) if cj is None else layer.init(kj, h, cj)
                params.append(p)
            return h, tuple(params)

        x_batch, params = jax.lax.scan(
            body, x_batch, (jax.random.split(key, len(self.steps)), init_consts))
        return params, x_batch


class Flow:
    """Base class of the flows: the density and sampling built on ``forward``/``inverse``.

    Subclasses are frozen (hashable) dataclasses with ``image_shape`` and implement ``_init``
    (the parameters, see :meth:`init`), ``_forward`` (``z -> (x, log|det ∂x/∂z|)``) and
    ``_inverse`` (``x -> (z, log|det ∂z/∂x|)``), one event per call: ``x`` is ``(H, W, C)`` and
    ``z`` is flat with ``H·W·C`` entries. The public :meth:`forward` and :meth:`inverse` check
    the shape and run them compiled.
    """

    image_shape: tuple[int, int, int]

    def init(self, key: Array, x_batch: Array) -> Params:
        """Parameters, with every actnorm initialised from the statistics of ``x_batch``
        ``(N, H, W, C)`` (data-dependent initialisation); every float leaf in ``x_batch``'s dtype.
        The layout of the params is given by the subclass's ``_init``.

        One compiled program on every backend, cached per flow, batch shape and dtype. Each
        stack of ``K`` steps is initialised in one rolled ``lax.scan``
        (:meth:`StepStack.init`), so the program holds one step per level whatever ``K``.
        Measured on 2 cores, first call of a fresh process (two runs each): the README's
        28×28 Glow (L = 2, K = 4, width 32) on 64 images 2.1 s, the architecture of
        ``glow-patches64`` (K = 8, width 64) on 64 images 4.3–4.6 s, the paper-size 64×64×3
        Glow (K = 18, width 512) on 16 images 7.2–7.6 s, of which 3.7 s is running it; with
        every step unrolled into the program they took 2.8–2.9, 8.3–8.8 and 22–25 s
        (``python -m benchmarks.compile_time --functions init`` times the compilation alone).
        Before, accelerators ran it op by op, because an unrolled program of every step would
        compile slowly there.
        """
        x_batch = self._check_batch(x_batch)
        return _compiled_init(self, key, x_batch)

    def _init(self, key: Array, x_batch: Array) -> Params:
        """The subclass's initialisation, given a batch that :meth:`init` has checked."""
        raise NotImplementedError

    def inverse(self, params: Params, x: Array) -> tuple[Array, Array]:
        """``z = G⁻¹(x)`` and ``log|det ∂z/∂x|``; ``x`` ``(H, W, C)``, ``z`` ``(H·W·C,)``.

        A compiled program, cached per flow, parameter structure, shape and dtype (``jax.jit``
        with the flow static), so a call outside any transformation, as in a notebook, runs as
        one program instead of op by op; under ``jit``, ``vmap`` or ``grad`` it is traced into
        the caller's program like any other function. Op by op, every call re-traced and
        recompiled its ``lax.scan`` loops (each a new closure) and dispatched hundreds of
        operations. Measured on 2 cores (``python -m benchmarks.eager_calls``): ``forward`` of
        the README's 28×28 Glow took 14.3 s on its first call and 2.8 s on each later one op
        by op, 3.8 s and 3.5 ms compiled; with the architecture of ``glow-patches64``, 56.6 s
        and 11.4 s against 18.9 s and 22 ms.
        """
        self._check_image(x)
        return _compiled_inverse(self, params, x)

    def forward(self, params: Params, z: Array) -> tuple[Array, Array]:
        """``x = G(z)`` and ``log|det ∂x/∂z|``; ``z`` ``(H·W·C,)``, ``x`` ``(H, W, C)``.

        Compiled like :meth:`inverse`.
        """
        self._check_latent(z)
        return _compiled_forward(self, params, z)

    def _inverse(self, params: Params, x: Array) -> tuple[Array, Array]:
        """The subclass's ``G⁻¹``, given an image that :meth:`inverse` has checked."""
        raise NotImplementedError

    def _forward(self, params: Params, z: Array) -> tuple[Array, Array]:
        """The subclass's ``G``, given a latent that :meth:`forward` has checked."""
        raise NotImplementedError

    @property
    def dim(self) -> int:
        """``n = H·W·C``, the length of the flat latent."""
        return math.prod(self.image_shape)

    def log_prob(self, params: Params, x: Array) -> Array:
        r"""Log density of one image ``x`` (pixel space, ``[0, 1]``-valued data).

        .. math:: \log p_G(x) = \log \mathcal N(G^{-1}(x); 0, I)
                  + \log|\det \partial G^{-1}/\partial x|
        """
        z, logdet = self.inverse(params, x)
        return standard_normal_log_prob(z) + logdet

    def forward_log_prob(self, params: Params, z: Array) -> tuple[Array, Array]:
        r"""``x = G(z)`` and the log density of the generated image, from one forward pass:

        .. math:: \log p_G(G(z)) = \log \mathcal N(z; 0, I) - \log|\det \partial G/\partial z|

        (Whang et al.'s prior term in latent space), equal to :meth:`log_prob` of ``G(z)``
        wherever ``G(z)`` lies in the data box ``[0, 1]``. A flow whose pixel map is RealNVP's
        logit (``preprocess="logit"``) can generate pixels a hair outside the box, where the
        exact log-det falls without bound and this density would grow without bound (a MAP
        solve finds that direction: +10⁸ nats, NaN a few iterations later); there every such
        pixel counts the log-det at the box's edge (:meth:`Logit.forward_log_det_in_box`), so
        the density is bounded, as the data's is. For other flows it is exact everywhere.

        Traced, not compiled on its own: it is meant for losses under ``jit``/``grad``.
        """
        self._check_latent(z)
        x, logdet = self._forward_in_box(params, z)
        return x, standard_normal_log_prob(z) - logdet

    def _forward_in_box(self, params: Params, z: Array) -> tuple[Array, Array]:
        """``_forward`` with the log-det restricted to the data box (see
        :meth:`forward_log_prob`); a flow without an unbounded edge returns ``_forward``."""
        return self._forward(params, z)

    @property
    def box(self) -> tuple[float, float] | None:
        r"""``(low, high)``: the pixel range outside which :meth:`log_prob` is not defined
        (``(0, 1)`` for a flow whose pixel map is RealNVP's logit), or ``None`` (this default)
        for a density defined on all of :math:`\mathbb R^n`."""
        return None

    def into_box(self, x: Array) -> Array:
        r"""The nearest image at which :meth:`log_prob` is finite, for an image variable:
        ``x`` clipped to :attr:`box`, or ``x`` itself where there is no box. Shape
        ``(H, W, C)`` in, the same out. The ``space="x"`` MAP loss reads the prior at
        ``into_box(x)``, so its prior term, like :meth:`forward_log_prob`'s, counts a pixel
        beyond the box at the box's edge.
        """
        box = self.box
        return x if box is None else jnp.clip(x, *box)

    def sample(self, params: Params, key: Array, temperature: float = 1.0) -> Array:
        """One image ``G(T·ε)``, ``ε ~ N(0, I)``, at temperature ``T``.

        The generative direction can overflow far from the data: a Glow's affine coupling
        divides by ``σ(h + 2)``, which underflows to 0 for some latents, and the image is then
        inf or NaN (the shipped ``glow-mnist``: 15 of 256 samples at ``T = 1``, none at 0.7;
        ``python -m experiments.samples`` counts them). A Glow with ``clip=40`` (Asim et al.)
        clips the activations after every step and avoids most of it.
        """
        dtype = jax.tree.leaves(params)[0].dtype
        z = temperature * jax.random.normal(key, (self.dim,), dtype)
        return self.forward(params, z)[0]

    def _check_static(self) -> None:
        """A flow is a static (hashable, compared by value) argument of compiled programs: a
        subclass that is not a frozen dataclass would fail inside ``jax.jit`` (unhashable) or
        compile anew for every equal instance (compared by identity)."""
        params = getattr(type(self), "__dataclass_params__", None)
        if params is None or not params.frozen:
            raise TypeError(
                f"{type(self).__name__} must be a frozen dataclass "
                f"(@dataclasses.dataclass(frozen=True)), as every flowinv.Flow is: flows are "
                f"static, hashable arguments of compiled programs")

    def _check_image(self, x: Array) -> None:
        self._check_static()
        if tuple(x.shape) != tuple(self.image_shape):
            raise ValueError(
                f"x must have shape {tuple(self.image_shape)} (one image; use jax.vmap for "
                f"batches), got {tuple(x.shape)}")

    def _check_latent(self, z: Array) -> None:
        self._check_static()
        if tuple(z.shape) != (self.dim,):
            raise ValueError(
                f"z must be flat with shape ({self.dim},) (one latent; use jax.vmap for "
                f"batches), got {tuple(z.shape)}")

    def _check_batch(self, x_batch: Array) -> Array:
        self._check_static()
        x_batch = jnp.asarray(x_batch)
        if x_batch.ndim != 4 or tuple(x_batch.shape[1:]) != tuple(self.image_shape):
            raise ValueError(
                f"x_batch must have shape (N, {', '.join(map(str, self.image_shape))}), "
                f"got {tuple(x_batch.shape)}")
        if not jnp.issubdtype(x_batch.dtype, jnp.floating):
            raise TypeError(f"x_batch must be floating point, got {x_batch.dtype}")
        return x_batch


@functools.partial(jax.jit, static_argnums=0)
def _compiled_init(flow: Flow, key: Array, x_batch: Array) -> Params:
    return flow._init(key, x_batch)


@functools.partial(jax.jit, static_argnums=0)
def _compiled_inverse(flow: Flow, params: Params, x: Array) -> tuple[Array, Array]:
    return flow._inverse(params, x)


@functools.partial(jax.jit, static_argnums=0)
def _compiled_forward(flow: Flow, params: Params, z: Array) -> tuple[Array, Array]:
    return flow._forward(params, z)


def standard_normal_log_prob(z: Array) -> Array:
    r""":math:`\log \mathcal N(z; 0, I) = -\tfrac12\|z\|^2 - \tfrac n2 \log 2\pi` for flat ``z``."""
    return -0.5 * jnp.sum(z**2) - 0.5 * z.size * jnp.log(2 * jnp.pi).astype(z.dtype)


def num_params(params: Params) -> int:
    """Number of scalar parameters in a pytree."""
    return int(sum(np.size(leaf) for leaf in jax.tree.leaves(params)))
