"""The training batch of every global step, a pure function of the step (resumable runs)."""

from __future__ import annotations

import functools

import numpy as np


@functools.lru_cache(maxsize=4)
def _epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    perm = np.random.default_rng((seed, epoch)).permutation(n)
    perm.setflags(write=False)
    return perm


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Indices of the training batch of global step ``step``: a pure function of its arguments.

    With ``S = n // batch_size`` steps per epoch (the last partial batch is dropped), step ``s``
    is batch ``j = s mod S`` of epoch ``e = s // S``:
    ``default_rng((seed, e)).permutation(n)[j·batch_size : (j+1)·batch_size]``. A run resumed at
    step ``s`` therefore continues at exactly the same data position.

    Args:
      n: dataset size.
      batch_size: in ``[1, n]``.
      seed: non-negative int.
      step: non-negative global step.

    Returns:
      int64 ``(batch_size,)`` distinct indices in ``[0, n)``.
    """
    for arg, value, low in (("n", n, 1), ("batch_size", batch_size, 1), ("seed", seed, 0),
                            ("step", step, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{arg} must be an int >= {low}, got {value!r}")
    if batch_size > n:
        raise ValueError(f"batch_size must be <= n = {n}, got {batch_size}")
    per_epoch = n // batch_size
    epoch, j = divmod(int(step), per_epoch)
    perm = _epoch_permutation(int(n), int(seed), epoch)
    return perm[j * batch_size: (j + 1) * batch_size].astype(np.int64)
