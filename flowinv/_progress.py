"""Progress of a compiled, vmapped solve, seen on the host while it runs.

A solver's loop hands its iteration counter to :func:`passing` on every loop pass and carries
on with what comes back (the same counter): the host sees the counters of the whole batch, and
because the solve depends on the answer, XLA cannot drop the call. Under ``vmap`` it is ONE
host call per pass with the batch's counters stacked (``jax.pure_callback`` with
``vmap_method="expand_dims"``), where ``jax.debug.callback`` would make one call per image.

With the batch split over several devices, ``recover`` runs each device's slice under
``jax.shard_map`` (:func:`per_shard`): each device then calls the host with its own slice, so
nothing is gathered across devices on every pass.

The host side reports to the :class:`IterationBar` made current by :func:`showing`, and
does nothing where there is none (a solve compiled with progress and then run without a bar).
A program holding a host callback is never written to JAX's persistent compilation cache, so
such a solve compiles anew in every process.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

_current: IterationBar | None = None
_shard_axis: str | None = None  # set while a shard_map body is traced (per_shard)


class IterationBar:
    """A tqdm bar of solver iterations over ``chunks`` solves of ``maxiter`` iterations each.

    Its position is the furthest image's iteration count in the running chunk (plus
    ``maxiter`` for each chunk done), its postfix how many images are still running. With
    ``per_pass=False`` no solve reports to it: it moves by a chunk at a time.

    ``chunk_images``: how many of each chunk's problems are the caller's (``recover`` pads its
    last chunk by repeating the final image); the padding is neither counted nor shown. Default:
    every problem is.
    """

    def __init__(self, maxiter: int, chunks: int = 1, desc: str = "recover", *,
                 per_pass: bool = True, chunk_images: Sequence[int] | None = None):
        from tqdm.auto import tqdm

        if chunk_images is not None and len(chunk_images) != chunks:
            raise ValueError(f"chunk_images must have one count per chunk ({chunks}), "
                             f"got {len(chunk_images)}")
        self.maxiter, self.chunks, self.chunk, self.desc = maxiter, chunks, 0, desc
        self.chunk_images = None if chunk_images is None else tuple(map(int, chunk_images))
        self.per_pass = per_pass
        # leave=None: kept on screen on its own, cleared when nested in a caller's bar
        self._bar = tqdm(total=maxiter * chunks, unit="it", leave=None,
                         desc=f"{desc} (compiling)" if per_pass else desc)
        self._postfix, self._position = None, 0
        self._shards: dict[int, tuple[int, int]] = {}  # shard -> (running, size)
        self._lock = threading.Lock()  # devices' callbacks may come from several threads
        self.reports = 0

    def report(self, iteration: int, running: int, size: int, shard: int = 0) -> None:
        """One loop pass of one shard of the batch (the whole batch on one device): its
        furthest ``iteration``, and ``running`` of its ``size`` images."""
        with self._lock:
            if self.reports == 0:  # the solve has started: time (and rate) from here
                self._bar.set_description_str(self.desc, refresh=False)
                self._bar.reset(total=self.maxiter * self.chunks)
                self._bar.update(self._position)
            self.reports += 1
            self._advance_to(self.chunk * self.maxiter + min(iteration, self.maxiter))
            self._shards[shard] = (running, size)
            running = sum(r for r, _ in self._shards.values())
            size = sum(n for _, n in self._shards.values())
            postfix = f"running {running}/{size}" + (
                f", chunk {self.chunk + 1}/{self.chunks}" if self.chunks > 1 else "")
            if postfix != self._postfix:
                self._postfix = postfix
                self._bar.set_postfix_str(postfix, refresh=False)

    def observe(self, iteration: np.ndarray, running: np.ndarray, shard: int = 0) -> None:
        """One loop pass of one shard, as the solve hands it over: the shard's iteration
        counters and running flags (shard ``s`` holds problems ``s·len … (s+1)·len − 1`` of the
        chunk); reported without the chunk's padding."""
        iteration, running = np.ravel(iteration), np.ravel(running)
        size = running.size
        if self.chunk_images is not None and self.chunk < self.chunks:
            size = min(max(self.chunk_images[self.chunk] - shard * running.size, 0), size)
        self.report(int(np.max(iteration[:size], initial=0)), int(np.sum(running[:size])),
                    size, shard)

    def chunk_done(self) -> None:
        """The running chunk has ended (its images may have stopped before ``maxiter``)."""
        with self._lock:
            self.chunk += 1
            self._shards.clear()
            self._advance_to(self.chunk * self.maxiter)
            if self.per_pass and self.chunk == self.chunks:
                self._bar.set_postfix_str("done", refresh=True)
            elif not self.per_pass and self.chunks > 1:
                self._bar.set_postfix_str(f"chunk {self.chunk}/{self.chunks} done",
                                          refresh=True)

    def close(self) -> None:
        self._bar.close()

    @property
    def position(self) -> int:
        """Iterations shown (kept here too: a disabled tqdm bar counts nothing)."""
        return self._position

    def _advance_to(self, n: int) -> None:
        if n > self._position:
            self._bar.update(n - self._position)
            self._position = n


@contextlib.contextmanager
def showing(bar: IterationBar) -> Iterator[IterationBar]:
    """Makes ``bar`` receive the reports of solves run inside the block (wait for their
    results inside it: dispatch is asynchronous), and closes it at the end."""
    global _current
    previous, _current = _current, bar
    try:
        yield bar
    finally:
        _current = previous
        bar.close()


@contextlib.contextmanager
def per_shard(axis: str) -> Iterator[None]:
    """While tracing the body of a ``shard_map`` over mesh axis ``axis``: the solver's reports
    then carry the device's index on it, so the host can add the devices' counts up."""
    global _shard_axis
    previous, _shard_axis = _shard_axis, axis
    try:
        yield
    finally:
        _shard_axis = previous


def _on_host(iteration: np.ndarray, running: np.ndarray, shard: np.ndarray) -> np.ndarray:
    bar = _current
    if bar is not None:
        bar.observe(iteration, running, int(np.ravel(shard)[0]))
    return np.asarray(iteration)


def passing(iteration: Array, running: Array) -> Array:
    """``iteration``, once the host has seen it and whether the problem is ``running``.

    Args:
      iteration: the solver's int32 iteration counter after this loop pass (one problem;
        a batch of them under ``vmap``).
      running: whether the problem was still running when the pass began.

    Returns:
      ``iteration``, unchanged; carry it on in place of the argument.
    """
    shape = jax.ShapeDtypeStruct(iteration.shape, iteration.dtype)
    shard = (jnp.zeros((), jnp.int32) if _shard_axis is None
             else jax.lax.axis_index(_shard_axis).astype(jnp.int32))
    return jax.pure_callback(_on_host, shape, iteration, running, shard,
                             vmap_method="expand_dims")
