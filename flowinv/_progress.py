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

The same call lets the host stop a solve at Ctrl-C: the solve's next report raises
:class:`Cancelled` inside the callback, which ends the compiled program there (XLA fails a
program whose host callback fails), so the cores are free again and no report of it can reach a
later bar. Python runs its ``KeyboardInterrupt`` only in the main thread, between bytecodes,
so two ways in:

* where the main thread waits in Python (dispatch is asynchronous), :func:`wait` polls for the
  results, and when interrupted cancels the bar and waits for the solve to end;
* where it is blocked inside XLA (on the CPU a program holding a host callback runs in the
  dispatching call: measured, ``recover(progress=True)`` returned only when the solve had
  ended), :func:`showing` points CPython's signal wakeup descriptor at a socket that the
  callback reads: a Ctrl-C cancels at the next pass, and the main thread raises its
  ``KeyboardInterrupt`` as soon as the failed program returns.
A program holding a host callback is never written to JAX's persistent compilation cache, so
such a solve compiles anew in every process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
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
        self.cancelled = False  # set at Ctrl-C: the solve's next report raises Cancelled
        self._interrupts: _InterruptWatch | None = None  # set by showing()

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


class Cancelled(Exception):
    """Raised in a solve's host callback to end a solve whose caller has stopped waiting."""


class _DropCancelled(logging.Filter):
    """JAX logs every failing host callback with its traceback; a cancellation is no error."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, Cancelled)


logging.getLogger("jax._src.callback").addFilter(_DropCancelled())


def wait(tree, bar: IterationBar | None = None, poll_s: float = 0.01):
    """``tree`` once all its arrays are ready, polled from Python so that a ``KeyboardInterrupt``
    lands at once. On any exception, ``bar`` (the one the solve reports to) is cancelled, the
    wait goes on until the solve has ended at its next report, and the exception propagates;
    without a bar (a solve that does not report) the solve is left to finish on its own."""
    leaves = [a for a in jax.tree.leaves(tree) if isinstance(a, jax.Array)]
    try:
        while not all(a.is_ready() for a in leaves):
            time.sleep(poll_s)
    except BaseException:
        if bar is not None:
            bar.cancelled = True
            for a in leaves:
                try:
                    a.block_until_ready()
                except Exception:  # noqa: BLE001 - the cancellation failing the program
                    pass
        raise
    return tree


class _InterruptWatch:
    """A Ctrl-C seen from any thread: CPython's C-level signal handler writes the signal's
    number to the wakeup descriptor (:func:`signal.set_wakeup_fd`) at once, whatever the main
    thread is doing; this points it at a socket while the block runs and forwards what it reads
    to the descriptor that was there before. Only the main thread may set it: elsewhere
    (``recover`` called from another thread) this sees nothing."""

    def __enter__(self) -> _InterruptWatch:
        self._read = self._write = None
        self._previous = -1
        self._seen = False
        if threading.current_thread() is not threading.main_thread():
            return self
        try:
            self._read, self._write = socket.socketpair()
        except OSError:  # no local sockets here (a sandbox): no watch, as off the main thread
            return self
        for sock in (self._read, self._write):
            sock.setblocking(False)
        try:
            self._previous = signal.set_wakeup_fd(self._write.fileno(),
                                                  warn_on_full_buffer=False)
        except ValueError:
            self._close()
        return self

    def interrupted(self) -> bool:
        """Whether a SIGINT has arrived since the block began."""
        if not self._seen:
            self._seen = signal.SIGINT in self._forward()
        return self._seen

    def _forward(self) -> bytes:
        """The signal numbers written since the last call, passed on to the previous
        descriptor."""
        if self._read is None:
            return b""
        try:
            data = self._read.recv(512)
        except OSError:  # nothing to read
            return b""
        if self._previous >= 0:
            with contextlib.suppress(OSError):
                os.write(self._previous, data)
        return data

    def __exit__(self, *exc) -> None:
        if self._read is not None:
            self._forward()  # what came last, also after a SIGINT was seen
            signal.set_wakeup_fd(self._previous)
            self._close()

    def _close(self) -> None:
        for sock in (self._read, self._write):
            sock.close()
        self._read = self._write = None


@contextlib.contextmanager
def showing(bar: IterationBar) -> Iterator[IterationBar]:
    """Makes ``bar`` receive the reports of solves run inside the block (wait for their
    results inside it, with :func:`wait`: dispatch may be asynchronous), and closes it at the
    end. A Ctrl-C inside the block cancels the bar (see the module docstring)."""
    global _current
    previous, _current = _current, bar
    try:
        with _InterruptWatch() as bar._interrupts:
            yield bar
    finally:
        bar._interrupts = None
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
        if bar.cancelled or (bar._interrupts is not None and bar._interrupts.interrupted()):
            bar.cancelled = True
            raise Cancelled("the caller stopped waiting for this solve")
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
