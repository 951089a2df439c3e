"""Figures for a notebook: images side by side, and how a recovery converged.

Both functions return a :class:`matplotlib.figure.Figure` made through pyplot, so a notebook
shows it and ``plt.show()`` shows it in a script; save it with ``fig.savefig(path)`` and free
it with ``plt.close(fig)``. pyplot is imported when a function is called, so importing this
module leaves the matplotlib backend alone.

Example (after ``r = flowinv.recover(...)`` on a batch ``y`` of noisy images ``x``)::

    from flowinv import plotting
    plotting.image_grid({"truth": x, "noisy": y, "recovered": r.x}, reference="truth")
    plotting.convergence(r)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from flowinv import metrics

__all__ = ["convergence", "displayable", "image_grid"]


def displayable(image: Any) -> tuple[np.ndarray, dict]:
    """One image ready for ``imshow``, with the keyword arguments to pass along.

    Args:
      image: ``(H, W, 1)`` grey or ``(H, W, 3)`` RGB, values meant to lie in ``[0, 1]``.

    Returns:
      ``(array, kwargs)``: the image clipped to ``[0, 1]`` (a grey one as ``(H, W)``), and
      ``{"cmap": "gray", "vmin": 0, "vmax": 1}`` for grey (so 0 is black whatever the
      image's own range), ``{}`` for RGB.
    """
    img = np.clip(np.asarray(image, dtype=np.float64), 0.0, 1.0)
    if img.ndim != 3 or img.shape[-1] not in (1, 3):
        raise ValueError(f"an image must have shape (H, W, 1) or (H, W, 3), got {img.shape}")
    if img.shape[-1] == 1:
        return img[..., 0], {"cmap": "gray", "vmin": 0, "vmax": 1}
    return img, {}


def _checked_columns(columns: Any) -> list[tuple[str, np.ndarray]]:
    items = list(columns.items()) if isinstance(columns, Mapping) else list(columns)
    if not items:
        raise ValueError("columns is empty: give at least one (name, images) pair")
    checked = []
    for item in items:
        if not (isinstance(item, tuple | list) and len(item) == 2):
            raise TypeError(f"columns must be a mapping or (name, images) pairs, got {item!r:.80}")
        name, images = item
        try:
            arr = np.asarray(images, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise TypeError(f"column {name!r}: images must be a numeric array") from e
        given = arr.shape
        if arr.ndim == 3:
            arr = arr[None]
        if arr.ndim != 4 or arr.shape[-1] not in (1, 3):
            raise ValueError(
                f"column {name!r}: images must have shape (N, H, W, C) or (H, W, C) with C = 1 "
                f"or 3, got {given}; a measurement that is not an image (compressed "
                f"sensing) cannot be shown as one")
        checked.append((str(name), arr))
    counts = [(name, len(arr)) for name, arr in checked]  # names may repeat
    if len({count for _, count in counts}) != 1:
        raise ValueError(f"every column needs the same number of images, got {counts}")
    return checked


def image_grid(columns: Any, *, reference: str | None = None, title: str | None = None,
               size: float = 1.5, unscored: Iterable[str] = ()):
    """Images in a grid: one column per entry, one row per image.

    Args:
      columns: a mapping ``{name: images}`` or a sequence of ``(name, images)`` pairs, in
        display order; ``images`` is ``(N, H, W, C)`` or one image ``(H, W, C)``, ``C`` = 1 or
        3, with the same ``N`` in every column. Shown clipped to ``[0, 1]``.
      reference: the name of one column (the truth; the first of that name); each image of
        every other column of the same shape is labelled with its PSNR against the image of its row,
        :func:`flowinv.metrics.psnr` (clipped to ``[0, 1]``); the reference must lie in
        ``[0, 1]``.
      title: a title over the grid.
      size: inches per image.
      unscored: names of columns shown without a PSNR label: images drawn for display only
        (an observation with its missing pixels filled grey, a noise), whose PSNR would not be
        the one a result table reports.

    Returns:
      The :class:`matplotlib.figure.Figure`, ``N`` rows × ``len(columns)`` axes.
    """
    import matplotlib.pyplot as plt

    cols = _checked_columns(columns)
    names = [name for name, _ in cols]
    if reference is not None and reference not in names:
        raise ValueError(f"reference {reference!r} is not a column; columns: {names}")
    ref = next(arr for name, arr in cols if name == reference) if reference is not None else None
    outside = None if ref is None else metrics._range_if_outside(ref, 1.0)
    if outside is not None:
        raise ValueError(
            f"reference column {reference!r} must lie in [0, 1] for its PSNR labels (within "
            f"1%, as flowinv.metrics.psnr), got values in [{outside[0]:g}, {outside[1]:g}]; "
            "rescale the images")
    if isinstance(size, bool) or not (isinstance(size, int | float) and 0 < size < np.inf):
        raise ValueError(f"size must be a positive number of inches, got {size!r}")
    n = len(cols[0][1])
    if isinstance(unscored, str):  # one name, not its characters
        unscored = (unscored,)
    unscored = set(unscored)
    if unscored - set(names):  # a misspelt name would leave its column labelled, silently
        raise ValueError(f"unscored names {sorted(unscored - set(names))} are not columns; "
                         f"columns: {names}")
    fig, axes = plt.subplots(n, len(cols), figsize=(size * len(cols), size * n + 0.4),
                             squeeze=False)
    for j, (name, images) in enumerate(cols):
        labelled = (ref is not None and name != reference and name not in unscored
                    and images.shape == ref.shape)
        for i in range(n):
            ax = axes[i, j]
            img, kw = displayable(images[i])
            ax.imshow(img, **kw)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=7)
            if labelled:
                ax.set_xlabel(f"{metrics.psnr(images[i], ref[i]):.2f} dB", fontsize=6,
                              labelpad=1)
    if title is not None:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def convergence(recovery: Any, *, title: str | None = None):
    """The loss and ``‖z‖`` of a recovery per L-BFGS iteration, one line per image.

    Args:
      recovery: a :class:`flowinv.Recovery` (of one image or a batch) or anything with its
        ``loss_history`` and ``znorm_history``, ``(maxiter,)`` or ``(B, maxiter)``, NaN after
        an image stopped (those iterations are not drawn).
      title: a title over both panels.

    Returns:
      The :class:`matplotlib.figure.Figure` with two axes: the loss (log scale where every
      drawn value is positive) and ``‖z‖``, against the iteration (1 = after the first).
    """
    import matplotlib.pyplot as plt

    try:
        loss = np.asarray(recovery.loss_history, dtype=np.float64)
        znorm = np.asarray(recovery.znorm_history, dtype=np.float64)
    except AttributeError as e:
        raise TypeError(f"recovery must be a flowinv.Recovery (loss_history and znorm_history), "
                        f"got {type(recovery).__name__}") from e
    if loss.ndim == 1:
        loss, znorm = loss[None], znorm[None]
    if loss.ndim != 2 or loss.shape != znorm.shape:
        raise ValueError(f"histories must be (maxiter,) or (B, maxiter) and alike, got "
                         f"{loss.shape} and {znorm.shape}")
    fig, (ax_loss, ax_z) = plt.subplots(1, 2, figsize=(8, 3))
    steps = np.arange(1, loss.shape[1] + 1)
    for i in range(len(loss)):
        drawn = np.isfinite(loss[i])
        label = f"image {i}" if len(loss) <= 10 else None
        ax_loss.plot(steps[drawn], loss[i][drawn], lw=1, label=label)
        ax_z.plot(steps[np.isfinite(znorm[i])], znorm[i][np.isfinite(znorm[i])], lw=1)
    finite = loss[np.isfinite(loss)]
    if finite.size and np.all(finite > 0):
        ax_loss.set_yscale("log")
    for ax, what in ((ax_loss, "loss"), (ax_z, "‖z‖")):
        ax.set_xlabel("iteration")
        ax.set_ylabel(what)
        ax.grid(alpha=0.3)
    if 1 < len(loss) <= 10:
        ax_loss.legend(fontsize=7)
    if title is not None:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
