"""Glow (Kingma & Dhariwal, 2018) as a pure-function flow."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from flowinv._checks import positive_int
from flowinv.flows.base import Array, Flow, Params, StepStack
from flowinv.flows.layers import (
    ACTNORM_EPS,
    ActNorm,
    ChannelCoupling,
    InvConv1x1,
    SplitPrior,
    TopPrior,
    squeeze,
    unsqueeze,
)
from flowinv.flows.pixel_map import PREPROCESSES, PixelMap

COUPLINGS = ("affine", "additive")


@dataclasses.dataclass(frozen=True)
class Glow(PixelMap, Flow):
    """Multi-scale Glow: ``levels`` × (squeeze, ``steps`` × [actnorm, 1×1 conv, coupling], split).

    Normalising direction ``G⁻¹`` for one image ``x`` of shape ``(H, W, C)``: ``h = x − ½`` (or
    RealNVP's logit with ``preprocess="logit"``, see
    :class:`~flowinv.flows.pixel_map.PixelMap`); at each level ``l = 1..L``: squeeze, ``K``
    steps (scanned), and, for ``l < L``, factor out half the channels as the latent ``ε_l``
    (standardised by a learned conditional Gaussian when ``learn_prior``); the remaining ``h``
    is standardised by a learned top Gaussian (``learn_prior``) into ``ε_L``. The latent is
    ``z = concat(ε_1.ravel(), …, ε_L.ravel())``, of length ``n = H·W·C``, and ``z ~ N(0, I)``
    under the model, so

        log p_G(x) = log N(G⁻¹(x); 0, I) + log|det ∂G⁻¹/∂x|.

    Use :func:`flowinv.glow` to build one.
    """

    image_shape: tuple[int, int, int]
    levels: int
    steps: int
    width: int
    coupling: str = "affine"
    learn_prior: bool = True
    lu: bool = True
    clip: float | None = None
    seed: int = 0
    unroll: int | bool | None = None
    preprocess: str = "center"
    actnorm_eps: float = ACTNORM_EPS

    # ---- structure ------------------------------------------------------------------------

    def _level_shapes(self) -> list[tuple[int, int, int]]:
        """Shape of ``h`` after the squeeze of each level."""
        h, w, c = self.image_shape
        shapes = []
        for level in range(self.levels):
            h, w, c = h // 2, w // 2, c * 4
            shapes.append((h, w, c))
            if level < self.levels - 1:
                c = c // 2
        return shapes

    def latent_shapes(self) -> list[tuple[int, int, int]]:
        """Shapes of ``ε_1, …, ε_L`` in the order they are concatenated into ``z``."""
        out = []
        for level, (h, w, c) in enumerate(self._level_shapes()):
            out.append((h, w, c - c // 2) if level < self.levels - 1 else (h, w, c))
        return out

    def step_layers(self, level: int, k: int, channels: int) -> tuple:
        """The layers of step ``k`` of level ``level`` (0-based), which acts on ``channels``
        channels, in the normalising direction: actnorm, 1×1 convolution, coupling.

        The extension point for a Glow of your own: a frozen dataclass subclass that overrides
        it adds or replaces layers (any layer of the contract in :mod:`flowinv.flows.layers`),
        e.g. ``return (*super().step_layers(level, k, channels), MyLayer(channels))``. The steps
        of a level are stacked for ``lax.scan``, so they must have the same layers with the
        same parameter shapes. Build the subclass directly, ``MyGlow(image_shape, levels=…,
        steps=…, width=…)`` (:func:`flowinv.glow` builds a plain Glow), and register it with
        :func:`flowinv.checkpoints.register_flow` to save and load it by its sidecar.
        """
        return (ActNorm(self.actnorm_eps),
                InvConv1x1(channels, seed=(self.seed, level, k), lu=self.lu),
                ChannelCoupling(channels, self.width, additive=self.coupling == "additive"))

    def _stack(self, level: int) -> StepStack:
        c = self._level_shapes()[level][2]
        steps = tuple(self.step_layers(level, k, c) for k in range(self.steps))
        return StepStack(steps, clip=self.clip, unroll=self.unroll)

    def _split(self, level: int) -> SplitPrior:
        return SplitPrior(self._level_shapes()[level][2], learned=self.learn_prior)

    # ---- contract --------------------------------------------------------------------------

    def _init(self, key: Array, x_batch: Array) -> Params:
        """:meth:`Flow.init`. Params: ``{"levels": [{"steps": stacked (K, …), "split": …}, …],
        "top": …}``, every float leaf in ``x_batch``'s dtype.
        """
        h = jax.vmap(lambda x: self._pre_inverse(x)[0])(x_batch)
        keys = jax.random.split(key, 2 * self.levels + 1)
        levels = []
        for level in range(self.levels):
            h = jax.vmap(squeeze)(h)
            steps, h = self._stack(level).init(keys[2 * level], h)
            entry = {"steps": steps}
            if level < self.levels - 1:
                split = self._split(level)
                entry["split"] = split.init(keys[2 * level + 1], h)
                h = jax.vmap(lambda a, p=entry["split"], s=split:
                             s.inverse_and_log_det(p, a)[0][0])(h)
            levels.append(entry)
        params = {"levels": levels}
        if self.learn_prior:
            params["top"] = TopPrior().init(keys[-1], h)
        return params

    def _inverse(self, params: Params, x: Array) -> tuple[Array, Array]:
        h, logdet = self._pre_inverse(x)
        eps = []
        for level in range(self.levels):
            h = squeeze(h)
            h, ld = self._stack(level).inverse_and_log_det(params["levels"][level]["steps"], h)
            logdet = logdet + ld
            if level < self.levels - 1:
                (h, e), ld = self._split(level).inverse_and_log_det(
                    params["levels"][level]["split"], h)
                logdet = logdet + ld
                eps.append(e.ravel())
        if self.learn_prior:
            h, ld = TopPrior().inverse_and_log_det(params["top"], h)
            logdet = logdet + ld
        eps.append(h.ravel())
        return jnp.concatenate(eps), logdet

    def _forward(self, params: Params, z: Array, in_box: bool = False) -> tuple[Array, Array]:
        shapes = self.latent_shapes()
        sizes = [math.prod(s) for s in shapes]
        offsets = [sum(sizes[:i]) for i in range(len(sizes))]
        eps = [z[o: o + n].reshape(s) for o, n, s in zip(offsets, sizes, shapes, strict=True)]
        h = eps[-1]
        logdet = jnp.zeros((), z.dtype)
        if self.learn_prior:
            h, ld = TopPrior().forward_and_log_det(params["top"], h)
            logdet = logdet + ld
        for level in reversed(range(self.levels)):
            if level < self.levels - 1:
                h, ld = self._split(level).forward_and_log_det(
                    params["levels"][level]["split"], h, eps[level])
                logdet = logdet + ld
            h, ld = self._stack(level).forward_and_log_det(params["levels"][level]["steps"], h)
            logdet = logdet + ld
            h = unsqueeze(h)
        x, ld = self._pre_forward(h, in_box)
        return x, logdet + ld


def glow(
    image_shape: tuple[int, int, int],
    *,
    levels: int,
    steps: int,
    width: int,
    coupling: str = "affine",
    learn_prior: bool = True,
    lu: bool = True,
    clip: float | None = None,
    seed: int = 0,
    unroll: int | bool | None = None,
    preprocess: str = "center",
    actnorm_eps: float = ACTNORM_EPS,
) -> Glow:
    """Builds a Glow for images of ``image_shape = (H, W, C)``.

    Args:
      image_shape: ``(H, W, C)``; ``H`` and ``W`` must be divisible by ``2**levels``.
      levels: number of scales ``L`` (squeeze + steps + split).
      steps: flow steps ``K`` per level (stacked and run with ``lax.scan``).
      width: hidden channels of the coupling networks.
      coupling: ``"affine"`` (Glow, ``s = sigmoid(h + 2)``) or ``"additive"``.
      learn_prior: learned conditional Gaussians on split-off latents and the top latent;
        otherwise standard normals.
      lu: LU-parametrised 1×1 convolutions (default) or plain matrices.
      clip: if set (the supplement uses 40), clip activations to ``[-clip, clip]`` after every
        step in the generative direction.
      seed: seeds the fixed permutations of the LU 1×1 convolutions.
      unroll: ``lax.scan`` unrolling of the steps; ``None`` = full on CPU, rolled elsewhere
        (see :class:`flowinv.flows.StepStack`).
      preprocess: ``"center"`` (``h = x − ½``, Glow) or ``"logit"``
        (``h = logit(α + (1−2α)x)``, RealNVP; α = 1e-6), a fixed bijection with its log-det.
      actnorm_eps: the constant added to every actnorm scale (default 5e-4, the supplement's
        stabiliser; 0 gives plain Glow actnorm). It is part of the trained function.
    """
    image_shape = tuple(int(d) for d in image_shape)
    if len(image_shape) != 3 or min(image_shape) < 1:
        raise ValueError(f"image_shape must be (H, W, C) with positive sizes, got {image_shape}")
    levels, steps, width = (positive_int(v, name) for v, name in
                            ((levels, "levels"), (steps, "steps"), (width, "width")))
    factor = 2**levels
    if image_shape[0] % factor or image_shape[1] % factor:
        raise ValueError(
            f"image_shape {image_shape}: H and W must be divisible by 2**levels = {factor} "
            f"(levels={levels})")
    if coupling not in COUPLINGS:
        raise ValueError(f"coupling must be one of {COUPLINGS}, got {coupling!r}")
    if preprocess not in PREPROCESSES:
        raise ValueError(f"preprocess must be one of {PREPROCESSES}, got {preprocess!r}")
    if clip is not None and not clip > 0:
        raise ValueError(f"clip must be None or > 0, got {clip!r}")
    if isinstance(actnorm_eps, bool) or not isinstance(actnorm_eps, int | float) \
            or not actnorm_eps >= 0 or actnorm_eps == float("inf"):
        raise ValueError(f"actnorm_eps must be a finite number >= 0, got {actnorm_eps!r}")
    return Glow(image_shape, levels, steps, width, coupling, bool(learn_prior), bool(lu),
                None if clip is None else float(clip), int(seed), unroll, preprocess,
                float(actnorm_eps))
