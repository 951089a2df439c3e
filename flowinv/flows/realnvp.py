"""RealNVP (Dinh et al., 2017) as a pure-function flow."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from flowinv.flows.base import Array, Flow, Params, StepStack
from flowinv.flows.layers import ActNorm, MaskedCoupling, SplitPrior, squeeze, unsqueeze
from flowinv.flows.pixel_map import PREPROCESSES, PixelMap


@dataclasses.dataclass(frozen=True)
class RealNVP(PixelMap, Flow):
    """Multi-scale RealNVP with residual coupling networks.

    Normalising direction for one image ``x`` ``(H, W, C)``: ``h = x − ½``, or RealNVP's logit with
    ``preprocess="logit"`` (:class:`~flowinv.flows.pixel_map.PixelMap`, the shipped
    ``realnvp-mnist``); each scale but the last runs 3 checkerboard couplings (alternating
    parity), a squeeze, 3 channel-wise couplings (alternating halves), and factors out half the
    channels as a standard-normal latent; the last scale runs 4 checkerboard couplings. Each
    coupling is preceded by an actnorm (in place of the batch norm of the original, which has no
    per-image inverse). The latent is the concatenation of the factored-out parts and the final
    ``h``, of length ``H·W·C``.

    Use :func:`flowinv.realnvp` to build one.
    """

    image_shape: tuple[int, int, int]
    scales: int
    blocks: int
    width: int
    unroll: int | bool | None = None
    preprocess: str = "center"

    def _stages(self):
        """Yields ``(kind, shape)`` with kind in {"checker", "squeeze", "channel", "split"}."""
        h, w, c = self.image_shape
        out = []
        for s in range(self.scales):
            if s == self.scales - 1:
                out.append(("checker", (h, w, c), 4))
                break
            out.append(("checker", (h, w, c), 3))
            out.append(("squeeze", None, 0))
            h, w, c = h // 2, w // 2, 4 * c
            out.append(("channel", (h, w, c), 3))
            out.append(("split", (h, w, c), 0))
            c = c // 2
        return out

    def _stack(self, kind: str, shape, count: int) -> StepStack:
        mask_kind = "checkerboard" if kind == "checker" else "channel"
        return StepStack(tuple(
            (ActNorm(), MaskedCoupling(shape, mask_kind, k % 2, self.width, self.blocks))
            for k in range(count)), unroll=self.unroll)

    def latent_shapes(self) -> list[tuple[int, int, int]]:
        shapes = [(s[0], s[1], s[2] - s[2] // 2) for k, s, _ in self._stages() if k == "split"]
        return shapes + [self._stages()[-1][1]]

    def _init(self, key: Array, x_batch: Array) -> Params:
        """:meth:`Flow.init`. Params: a list with one entry per coupling stage (stacked
        ``(K, …)``).
        """
        h = jax.vmap(lambda x: self._pre_inverse(x)[0])(x_batch)
        params = []
        stages = self._stages()
        for (kind, shape, count), k in zip(stages, jax.random.split(key, len(stages)),
                                           strict=True):
            if kind == "squeeze":
                h = jax.vmap(squeeze)(h)
            elif kind == "split":
                h = h[..., : shape[2] // 2]
            else:
                p, h = self._stack(kind, shape, count).init(k, h)
                params.append(p)
        return params

    def _inverse(self, params: Params, x: Array) -> tuple[Array, Array]:
        h, logdet = self._pre_inverse(x)
        eps, i = [], 0
        for kind, shape, count in self._stages():
            if kind == "squeeze":
                h = squeeze(h)
            elif kind == "split":
                (h, e), _ = SplitPrior(shape[2], learned=False).inverse_and_log_det({}, h)
                eps.append(e.ravel())
            else:
                h, ld = self._stack(kind, shape, count).inverse_and_log_det(params[i], h)
                logdet, i = logdet + ld, i + 1
        eps.append(h.ravel())
        return jnp.concatenate(eps), logdet

    def _forward(self, params: Params, z: Array, in_box: bool = False) -> tuple[Array, Array]:
        shapes = self.latent_shapes()
        sizes = [math.prod(s) for s in shapes]
        offsets = [sum(sizes[:i]) for i in range(len(sizes))]
        eps = [z[o: o + n].reshape(s) for o, n, s in zip(offsets, sizes, shapes, strict=True)]
        h = eps.pop()
        logdet = jnp.zeros((), z.dtype)
        i = len(params)
        for kind, shape, count in reversed(self._stages()):
            if kind == "squeeze":
                h = unsqueeze(h)
            elif kind == "split":
                h = jnp.concatenate([h, eps.pop()], -1)
            else:
                i -= 1
                h, ld = self._stack(kind, shape, count).forward_and_log_det(params[i], h)
                logdet = logdet + ld
        x, ld = self._pre_forward(h, in_box)
        return x, logdet + ld


def realnvp(
    image_shape: tuple[int, int, int], *, scales: int, blocks: int, width: int,
    unroll: int | bool | None = None,
    preprocess: str = "center",
) -> RealNVP:
    """Builds a RealNVP for images of ``image_shape = (H, W, C)``.

    Args:
      image_shape: ``(H, W, C)``; ``H`` and ``W`` divisible by ``2**(scales - 1)``.
      scales: number of scales (each but the last ends with a squeeze and a split).
      blocks: residual blocks in each coupling network.
      width: hidden channels of the coupling networks.
      unroll: ``lax.scan`` unrolling; ``None`` = full on CPU, rolled elsewhere.
      preprocess: ``"center"`` (``x − ½``) or ``"logit"`` (RealNVP's
        ``logit(α + (1−2α)x)``, α = 1e-6), a fixed bijection with its log-det.
    """
    image_shape = tuple(int(d) for d in image_shape)
    if len(image_shape) != 3 or min(image_shape) < 1:
        raise ValueError(f"image_shape must be (H, W, C) with positive sizes, got {image_shape}")
    for name, value, low in (("scales", scales, 1), ("blocks", blocks, 0), ("width", width, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    factor = 2 ** (scales - 1)
    if image_shape[0] % factor or image_shape[1] % factor:
        raise ValueError(
            f"image_shape {image_shape}: H and W must be divisible by 2**(scales-1) = {factor}")
    if preprocess not in PREPROCESSES:
        raise ValueError(f"preprocess must be one of {PREPROCESSES}, got {preprocess!r}")
    return RealNVP(image_shape, scales, blocks, width, unroll, preprocess)
