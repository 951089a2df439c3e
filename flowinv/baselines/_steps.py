"""The host loop that trains the baselines' generators, one compiled step at a time."""

from __future__ import annotations

import math

import jax
import numpy as np


def run_steps(step, state, images, key, *, steps: int, chunk: int, desc: str,
              progress: bool):
    """Calls ``step(state, key_t, images) -> (state, {name: scalar loss})`` ``steps`` times.

    The step keys are ``split(fold_in(key, i), length)`` for chunk ``i``; the losses come back
    to the host, and the tqdm bar shows their means, once per chunk. Returns the final state
    and ``{name: (steps,) array}``. Shared by :func:`flowinv.baselines.dcgan.train_dcgan` and
    :func:`flowinv.baselines.imle.train_imle`.

    One compiled call per step, not a ``lax.scan`` over steps: XLA:CPU runs the weight gradients
    of convolutions several times slower inside a loop.
    """
    from tqdm.auto import tqdm

    history = []
    with tqdm(total=steps, desc=desc, disable=not progress) as bar:
        for i in range(math.ceil(steps / chunk)):
            length = min(chunk, steps - i * chunk)
            losses = []
            for key_step in jax.random.split(jax.random.fold_in(key, i), length):
                state, loss = step(state, key_step, images)
                losses.append(loss)
                bar.update(1)
            losses = {k: np.asarray([v[k] for v in jax.device_get(losses)]) for k in losses[0]}
            history.append(losses)
            bar.set_postfix({k: f"{v.mean():.4f}" for k, v in losses.items()})
    return state, {k: np.concatenate([h[k] for h in history]) for k in history[0]}
