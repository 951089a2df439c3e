"""Orbax checkpoints with a JSON sidecar, and the shipped priors.

A checkpoint is one folder::

    NAME/
      params/          orbax StandardCheckpointer folder (the params pytree)
      metadata.json    sidecar: architecture, data and split, steps, command, test bits/dim

:func:`load` restores against the structure the sidecar's architecture implies (built with
``jax.eval_shape``), so a checkpoint whose arrays do not match its sidecar is an error, not a
silently mis-shaped model.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import pathlib
import shutil
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flowinv.flows import Flow, Glow, LayerChain, RealNVP, glow, realnvp

Params = Any

SIDECAR = "metadata.json"
PARAMS_DIR = "params"

FLOW_BUILDERS: dict[str, Callable[..., Flow]] = {"glow": glow, "realnvp": realnvp}
"""Sidecar ``"type"`` -> builder ``builder(image_shape, **fields) -> Flow``. Extend it with
:func:`register_flow`, which also tells :func:`flow_config` the class."""

_FLOW_TYPES: dict[type, str] = {Glow: "glow", RealNVP: "realnvp"}
_BUILT_IN = frozenset(FLOW_BUILDERS)


def register_flow(name: str, builder: Callable[..., Flow], cls: type) -> None:
    """Makes flows of a class of your own describable and rebuildable from a sidecar.

    After ``register_flow("leakyglow", leakyglow, LeakyGlow)``, :func:`flow_config` describes a
    ``LeakyGlow`` as ``{"type": "leakyglow", **its dataclass fields}``, and
    :func:`flow_from_config` (so :func:`load_prior`, :func:`load` without ``target``,
    ``recover("path/to/checkpoint", ...)`` and :func:`flowinv.train.train`) rebuilds it as
    ``builder(image_shape, **the other fields)``, which must give a flow equal to the one
    described. The registry lives in the process: register before loading, in every process
    that loads (an experiment's command line runs a module of yours that registers with
    ``--import MODULE``). Registering a name
    again replaces its builder and class (re-running a notebook cell that defines the class).

    Args:
      name: the sidecar's ``"type"``; not ``"glow"`` or ``"realnvp"``.
      builder: ``builder(image_shape, **fields) -> Flow``.
      cls: the class of the flows it builds: a dataclass subclass of :class:`Flow`, described
        by its exact type (a subclass of it is not).
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty str, got {name!r}")
    if name in _BUILT_IN:
        raise ValueError(f"{name!r} is a built-in flow type; register yours under another name")
    if not callable(builder):
        raise TypeError(f"builder must be callable, got {type(builder).__name__}")
    if not (isinstance(cls, type) and issubclass(cls, Flow) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"cls must be a dataclass subclass of flowinv.Flow, got {cls!r}")
    for known, kind in list(_FLOW_TYPES.items()):
        if kind == name or known is cls:
            if kind in _BUILT_IN:
                raise ValueError(f"{cls.__name__} is described as the built-in type {kind!r}")
            del _FLOW_TYPES[known]
    FLOW_BUILDERS[name] = builder
    _FLOW_TYPES[cls] = name


def flow_from_config(arch: dict) -> Flow:
    """Builds a flow from a sidecar's ``{"type": "glow" | "realnvp", "image_shape": …, …}``
    (or a type added with :func:`register_flow`)."""
    if not isinstance(arch, dict) or arch.get("type") not in FLOW_BUILDERS:
        raise ValueError(
            f"architecture must be a dict with 'type' in {sorted(FLOW_BUILDERS)}, got {arch!r}"
            " (a flow class of your own: checkpoints.register_flow, which an experiment's "
            "command line runs from a module of yours with --import MODULE)")
    builder = FLOW_BUILDERS[arch["type"]]
    kwargs = {k: v for k, v in arch.items() if k not in ("type", "image_shape")}
    params = inspect.signature(builder).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        known = set(params) - {"image_shape"}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise ValueError(f"architecture of type {arch['type']!r} has unknown keys "
                             f"{unknown}; expected some of {sorted(known)}")
    if "image_shape" not in arch:
        raise ValueError(f"architecture must give 'image_shape', got {arch!r}")
    return builder(tuple(arch["image_shape"]), **kwargs)


def flow_config(flow: Flow) -> dict:
    """The inverse of :func:`flow_from_config`: a JSON-able description of ``flow`` (a
    :class:`Glow`, a :class:`RealNVP`, or a flow of a class added with :func:`register_flow`)."""
    kind = _FLOW_TYPES.get(type(flow))
    if kind is None and type(flow) is LayerChain:
        raise ValueError(
            "a flowinv.chain of layer objects cannot be described in a sidecar: subclass "
            "flowinv.Chain with fields that give its layers (bijections()) and register that "
            "class, or save without an architecture and restore with load(path, "
            "target=abstract_flow_params(flow))")
    if kind is None:
        raise ValueError(
            f"flow_config describes flows of the registered classes "
            f"({', '.join(c.__name__ for c in _FLOW_TYPES)}), got a {type(flow).__name__}: "
            f"register its class with checkpoints.register_flow(name, builder, cls), or save "
            f"without an architecture and restore with load(path, "
            f"target=abstract_flow_params(flow))")
    fields = dataclasses.asdict(flow)
    fields["image_shape"] = list(fields["image_shape"])
    return {"type": kind, **fields}


def save(path: str | os.PathLike, params: Params, metadata: dict) -> pathlib.Path:
    """Writes ``params`` (orbax) and ``metadata`` (JSON sidecar) into folder ``path``.

    An existing checkpoint at ``path`` is replaced, by renames once the new one is written in
    full: a process killed while saving leaves the old checkpoint or the new one, but for the
    instants between the renames of the weights and of the sidecar. (Before, orbax deleted the
    old weights first, and a kill during the write left a sidecar without weights.) Metadata
    holding NaN or inf is refused (strict JSON has neither). For :func:`load_prior` (and
    :func:`load` without ``target``) to rebuild a flow, the sidecar must hold its
    architecture::

        checkpoints.save("my-prior", params,
                         metadata={"architecture": checkpoints.flow_config(flow)})
        flow, params = checkpoints.load_prior("my-prior")

    ``load_prior`` refuses a sidecar without ``"architecture"`` (``ValueError``), or one whose
    ``"kind"`` is set and not ``"flow"`` (a DCGAN's: use :func:`save_gan` and
    :func:`load_gan`).

    Params whose floats are all of one dtype other than ``float32`` (``float64`` under x64,
    ``bfloat16``) get ``"param_dtype"`` in the sidecar, and :func:`load` restores them in it;
    without it they load as ``float32``.
    """
    import orbax.checkpoint as ocp

    path = pathlib.Path(path).absolute()
    params = jax.tree.map(np.asarray, params)
    floats = {a.dtype.name for a in jax.tree.leaves(params)
              if jnp.issubdtype(a.dtype, jnp.floating)}
    if len(floats) == 1 and floats != {"float32"}:
        metadata = {**metadata, "param_dtype": floats.pop()}
    try:
        sidecar = json.dumps(metadata, indent=2, sort_keys=True, allow_nan=False) + "\n"
    except ValueError as e:
        raise ValueError(f"metadata holds NaN or inf, which a JSON sidecar cannot: {e}") from e
    path.mkdir(parents=True, exist_ok=True)
    for leftover in (*path.glob(f".{PARAMS_DIR}.new-*"), *path.glob(f".{PARAMS_DIR}.old-*"),
                     *path.glob(f".{SIDECAR}.new-*")):  # of a save killed before its renames
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
    tag = f"{os.getpid()}-{time.monotonic_ns()}"
    new_params, new_sidecar = path / f".{PARAMS_DIR}.new-{tag}", path / f".{SIDECAR}.new-{tag}"
    old_params = path / f".{PARAMS_DIR}.old-{tag}"
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(new_params, params)
        ckptr.wait_until_finished()
    new_sidecar.write_text(sidecar)
    if (path / PARAMS_DIR).exists():
        os.replace(path / PARAMS_DIR, old_params)
    os.replace(new_params, path / PARAMS_DIR)
    os.replace(new_sidecar, path / SIDECAR)
    shutil.rmtree(old_params, ignore_errors=True)
    return path


def read_metadata(path: str | os.PathLike) -> dict:
    """The sidecar of checkpoint folder ``path``; ValueError if missing or not valid JSON."""
    path = pathlib.Path(path)
    sidecar = path / SIDECAR
    if not sidecar.is_file():
        raise ValueError(f"checkpoint {str(path)!r}: no {SIDECAR} sidecar found")
    try:
        return json.loads(sidecar.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"checkpoint {str(path)!r}: {SIDECAR} is not valid JSON ({e})") from e


def load(path: str | os.PathLike, target: Params | None = None) -> tuple[Params, dict]:
    """Restores ``(params, metadata)`` from folder ``path``.

    Args:
      path: a folder written by :func:`save`.
      target: a pytree (or ``jax.ShapeDtypeStruct`` tree) giving the expected structure; when
        omitted and the sidecar has an ``architecture`` of a flow, it is derived from it, in
        the sidecar's ``param_dtype`` (default ``float32``; see :func:`save`).
    """
    import orbax.checkpoint as ocp

    path = pathlib.Path(path).absolute()
    if not path.is_dir():
        raise ValueError(f"checkpoint path {str(path)!r} does not exist or is not a folder")
    metadata = read_metadata(path)
    if target is None and "architecture" in metadata:
        target = abstract_flow_params(flow_from_config(metadata["architecture"]),
                                      dtype=jnp.dtype(metadata.get("param_dtype", "float32")))
    if not (path / PARAMS_DIR).is_dir():
        raise ValueError(f"checkpoint {str(path)!r}: no {PARAMS_DIR}/ folder with the weights")
    try:
        with ocp.StandardCheckpointer() as ckptr:
            params = ckptr.restore(path / PARAMS_DIR, target)
    except Exception as e:  # orbax raises many types; all mean "this checkpoint is unusable"
        raise ValueError(
            f"checkpoint {str(path)!r} could not be restored (corrupted, or its arrays do not "
            f"match the architecture in its sidecar): {type(e).__name__}: {e}") from e
    if target is not None:
        _check_matches(path, params, target)
    return jax.tree.map(jnp.asarray, params), metadata


def _check_matches(path: pathlib.Path, params: Params, target: Params) -> None:
    """Orbax restores the saved arrays whatever the target's shapes: check them ourselves."""
    got, want = jax.tree.structure(params), jax.tree.structure(target)
    if got != want:
        raise ValueError(f"checkpoint {str(path)!r} could not be restored: its structure does "
                         f"not match the architecture in its sidecar")
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(target), strict=True):
        if tuple(np.shape(a)) != tuple(b.shape):
            raise ValueError(
                f"checkpoint {str(path)!r} could not be restored: an array of shape "
                f"{tuple(np.shape(a))} is {tuple(b.shape)} in the sidecar's architecture")


def abstract_flow_params(flow: Flow, dtype=jnp.float32) -> Params:
    """The params structure of ``flow`` as ``ShapeDtypeStruct``s, without computing anything."""
    x = jax.ShapeDtypeStruct((2, *flow.image_shape), dtype)
    return jax.eval_shape(lambda xb: flow.init(jax.random.PRNGKey(0), xb), x)


def checkpoint_root() -> pathlib.Path:
    """Where shipped priors live: ``$FLOWINV_CHECKPOINTS`` or the repository's ``checkpoints/``."""
    env = os.environ.get("FLOWINV_CHECKPOINTS")
    if env:
        return pathlib.Path(env)
    return pathlib.Path(__file__).resolve().parents[1] / "checkpoints"


def checkpoint_path(name: str | os.PathLike) -> pathlib.Path:
    """The folder of a checkpoint given as a folder path or a shipped name (under
    :func:`checkpoint_root`); it may not exist, callers say what was expected."""
    path = pathlib.Path(name)
    return path if path.is_dir() else checkpoint_root() / str(name)


def available_priors(kind: str | None = None) -> list[str]:
    """Names of the checkpoints under :func:`checkpoint_root` that have a sidecar; with
    ``kind`` (``"flow"`` or ``"dcgan"``), only those whose sidecar declares that kind."""
    root = checkpoint_root()
    if not root.is_dir():
        return []
    names = sorted(p.name for p in root.iterdir() if (p / SIDECAR).is_file())
    if kind is None:
        return names
    out = []
    for name in names:
        try:
            if read_metadata(root / name).get("kind") == kind:
                out.append(name)
        except ValueError:
            continue
    return out


def find_checkpoint(name: str | os.PathLike, kind: str) -> tuple[pathlib.Path, dict]:
    """``(folder, sidecar)`` of a ``kind`` (``"flow"`` or ``"dcgan"``) checkpoint given as a
    shipped name or a folder, without reading its weights; ValueError if there is none, or (for
    ``"dcgan"``) its sidecar is not a DCGAN's, or (for ``"flow"``) another kind's.
    :func:`load_prior`, :func:`load_gan` and the experiments' command lines (before any work)
    call it."""
    what = {"flow": "prior", "dcgan": "GAN"}[kind]
    if not isinstance(name, str | os.PathLike):
        raise TypeError(f"name must be a {what} name or a path, got {type(name).__name__}")
    path = checkpoint_path(name)
    if not path.is_dir():
        raise ValueError(
            f"unknown {what} {str(name)!r}: not a checkpoint folder and not one of "
            f"{available_priors(kind)} (under {checkpoint_root()})")
    metadata = read_metadata(path)
    if kind == "dcgan" and (metadata.get("kind") != "dcgan" or "dcgan" not in metadata):
        raise ValueError(f"checkpoint {str(path)!r} is not a DCGAN (sidecar kind "
                         f"{metadata.get('kind', 'flow')!r})")
    if kind == "flow" and metadata.get("kind", "flow") != "flow":
        raise ValueError(
            f"checkpoint {str(path)!r} is not a flow prior (sidecar kind {metadata['kind']!r}); "
            "load a DCGAN with flowinv.checkpoints.load_gan, and pass it to recover as "
            "(generator, params), or to an experiment as --gan")
    return path, metadata


def load_prior(name: str) -> tuple[Flow, Params]:
    """Loads a shipped flow prior by name (e.g. ``"glow-mnist"``) or a checkpoint folder path.

    Returns ``(flow, params)``; ``flow.log_prob(params, x)`` is the density of an image ``x`` in
    ``[0, 1]`` pixel space.
    """
    path, metadata = find_checkpoint(name, "flow")
    if "architecture" not in metadata:
        raise ValueError(f"checkpoint {str(path)!r}: sidecar has no 'architecture'")
    flow = flow_from_config(metadata["architecture"])
    params, _ = load(path)
    return flow, params


def save_gan(path: str | os.PathLike, params: Params, config: Any, metadata: dict) -> pathlib.Path:
    """Writes DCGAN generator weights with a sidecar ``{"kind": "dcgan", "dcgan": config, …}``.

    Args:
      path: the checkpoint folder.
      params: generator weights from :func:`flowinv.baselines.dcgan.train_dcgan`.
      config: its :class:`flowinv.baselines.dcgan.DCGANConfig`.
      metadata: further sidecar fields (data, training, command, ...).
    """
    return save(path, params, {**metadata, "kind": "dcgan", "dcgan": config.to_dict()})


def load_gan(name: str | os.PathLike):
    """Loads a shipped DCGAN (e.g. ``"dcgan-mnist"``) or a DCGAN checkpoint folder.

    Returns ``(generator, params)`` for ``flowinv.recover((generator, params), ...)``:
    ``generator`` is a :class:`flowinv.Generator`. ValueError if there is no such
    checkpoint, it is not a DCGAN, or its weights do not match its sidecar.
    """
    from flowinv.baselines import dcgan

    path, metadata = find_checkpoint(name, "dcgan")
    config = dcgan.DCGANConfig.from_dict(metadata["dcgan"])
    target = jax.eval_shape(lambda: dcgan.init_params(jax.random.PRNGKey(0), config)["generator"])
    params, _ = load(path, target)
    return dcgan.as_generator(config), params
