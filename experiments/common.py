"""Shared plumbing of the experiments: CLI options, result tables, figures."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import math
import os
import pathlib
import shlex
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterable

import numpy as np

RESULT_COLUMNS = ("experiment", "dataset", "prior", "method", "param_name", "param_value",
                  "setting_name", "setting_value", "image_id", "psnr", "ssim", "seconds")

DEFAULT_PRIOR = {"mnist": "glow-mnist", "digits": "glow-digits", "patches64": "glow-patches64"}
DEFAULT_GAN = {"mnist": "dcgan-mnist", "patches64": "dcgan-patches64"}
# Any other dataset (a folder of the user's images, a TFDS set, lfw, cartoon) gets the shipped
# prior for its channel count, and the shipped DCGAN of that prior's image shape.
PRIOR_BY_CHANNELS = {1: "glow-mnist", 3: "glow-patches64"}
GAN_BY_SHAPE = {(28, 28, 1): "dcgan-mnist", (64, 64, 3): "dcgan-patches64"}

COMPILATION_CACHE_ENV = "FLOWINV_COMPILATION_CACHE"
DEFAULT_COMPILATION_CACHE = "~/.cache/flowinv/xla"


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def nonnegative_float(text: str) -> float:
    value = _number(text)
    if not np.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def positive_float(text: str) -> float:
    value = _number(text)
    if not np.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


#: Seeds are JAX PRNG keys' 32 bits: a larger one would be truncated to another seed's key.
SEED_RANGE = (0, 2**32)


def seed(text: str) -> int:
    """``--seed``: an integer in ``[0, 2**32)`` (``jax.random.PRNGKey`` keeps 32 bits, so
    2**32 would silently be seed 0's key, and a larger one overflowed inside JAX)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not SEED_RANGE[0] <= value < SEED_RANGE[1]:
        raise argparse.ArgumentTypeError(f"expected an integer in [0, 2**32), got {text!r}")
    return value


def list_entries(text: str, option: str | None = None,
                 allowed: Iterable[str] | None = None) -> tuple[str, ...]:
    """``"a, b,a"`` -> ``("a", "b")``: the comma-separated entries of ``option``'s value,
    stripped, in order, a repeat dropped; each one of ``allowed``, where given. ValueError for
    no entry, an unknown one, or an empty one (``"a,,b"``, ``"a,"``: a typo, better refused
    than silently dropped)."""
    prefix = f"{option}: " if option else ""
    allowed = None if allowed is None else tuple(allowed)
    entries = [t.strip() for t in text.split(",")]
    if not any(entries):
        of = f" of {', '.join(allowed)}" if allowed else ""
        raise ValueError(f"{prefix}name at least one{of}, got {text!r}")
    if not all(entries):
        raise ValueError(f"{prefix}an empty entry in {text!r} (a doubled or trailing comma?)")
    unknown = [e for e in dict.fromkeys(entries) if allowed is not None and e not in allowed]
    if unknown:
        raise ValueError(f"{prefix}unknown {', '.join(map(repr, unknown))}; choose from "
                         f"{', '.join(allowed)}")
    return tuple(dict.fromkeys(entries))


def float_list(text: str) -> tuple[float, ...]:
    """``"0.05,0.1"`` -> ``(0.05, 0.1)``; every entry finite and >= 0; a repeat is dropped (a
    grid with one weight twice would give two rows per image to one weight); an empty entry is
    refused (:func:`list_entries`)."""
    try:
        entries = list_entries(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    try:
        values = tuple(dict.fromkeys(float(t) for t in entries))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}") from None
    if not values or any(not np.isfinite(v) or v < 0 for v in values):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated finite numbers >= 0, got {text!r}")
    return values


def add_common_arguments(parser: argparse.ArgumentParser, name: str, *, quick: dict,
                         full: dict, dataset: str = "mnist", uses_gan: bool = True) -> None:
    """The options every experiment has. ``quick`` and ``full`` are the experiment's default
    settings (its ``QUICK`` and ``FULL``): ``--help`` states them for every option named after
    one of their keys (:class:`PresetHelpFormatter`). An experiment without GAN baselines
    passes ``uses_gan=False``: ``--help`` then says that ``--gan`` is not used (it is accepted,
    for one command line across experiments, and :func:`note_unused_gan` says so)."""
    parser.formatter_class = functools.partial(PresetHelpFormatter, quick=quick, full=full)
    parser.add_argument("--dataset", default=dataset,
                        help="test images: mnist, digits, patches64, patches32, lfw, cartoon, "
                             f"tfds:NAME[:SPLIT] or folder:PATH (default {dataset})")
    parser.add_argument("--prior", default=None,
                        help="flow prior: a shipped name or a checkpoint folder (default: the "
                             "dataset's shipped prior; for other datasets glow-patches64 for "
                             "colour images, glow-mnist for grey)")
    parser.add_argument("--gan", default=None,
                        help="DCGAN checkpoint for the GAN baselines (default: shipped one for "
                             "the dataset; 'none' skips them)" if uses_gan else
                             "DCGAN checkpoint (not used by this experiment)")
    parser.add_argument("--num-images", type=positive_int, default=None,
                        help="number of test images")
    parser.add_argument("--maxiter", type=positive_int, default=None,
                        help="solver iterations" + ("" if "maxiter" in quick or "maxiter" in full
                                                    else " (not used by this experiment)"))
    parser.add_argument("--full", action="store_true", help="paper-scale settings")
    parser.add_argument("--seed", type=seed, default=0,
                        help="seed for noise and operators, in [0, 2**32) (default 0)")
    parser.add_argument("--out", default=f"results/{name}",
                        help=f"output folder (default results/{name})")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def note_unused_gan(args: argparse.Namespace, name: str) -> None:
    """Prints that ``--gan`` is ignored, where an experiment without GAN baselines got one."""
    if args.gan is not None:
        print(f"note: --gan is not used by {name} (ignored)")


def preset_help(quick: dict, full: dict, key: str) -> str | None:
    """The defaults of setting ``key`` in an experiment's ``QUICK`` and ``FULL``, as
    ``"default: quick 4; --full 50"`` (``"default 1"`` where they agree); None where neither
    has it."""
    q, f = quick.get(key), full.get(key)
    if q is None and f is None:
        return None
    if q == f:
        return f"default {_preset_text(q)}"
    return "default: " + "; ".join(f"{label} {_preset_text(v)}" for label, v
                                   in (("quick", q), ("--full", f)) if v is not None)


def _preset_text(value) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(_preset_text(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


class PresetHelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Help that ends each option named after a key of the experiment's presets (``--val-images``
    for ``val_images``) with their defaults (:func:`preset_help`), unless its help already gives
    a default. The text is made when help is printed, so options added later get it too."""

    def __init__(self, prog: str, *, quick: dict, full: dict, **kwargs):
        super().__init__(prog, **kwargs)
        self._presets = (quick, full)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = super()._get_help_string(action)
        preset = preset_help(*self._presets, action.dest)
        if text is None or preset is None or "default" in text:
            return text
        return f"{text} ({preset})"


@dataclasses.dataclass
class ResultTable:
    """Rows of the tidy ``results.csv`` (columns :data:`RESULT_COLUMNS`)."""

    experiment: str
    dataset: str
    prior: str
    rows: list = dataclasses.field(default_factory=list)

    def add(self, *, method: str, psnr: Iterable[float], ssim: Iterable[float], seconds: float,
            param_name: str = "", param_value="", setting_name: str = "",
            setting_value="", image_ids: Iterable[int]) -> None:
        psnr, ssim, ids = list(psnr), list(ssim), list(image_ids)
        for i, p, s in zip(ids, psnr, ssim, strict=True):
            self.rows.append(dict(
                experiment=self.experiment, dataset=self.dataset, prior=self.prior,
                method=method, param_name=param_name, param_value=param_value,
                setting_name=setting_name, setting_value=setting_value, image_id=i,
                psnr=round(float(p), 4), ssim=round(float(s), 4),
                seconds=round(seconds / max(len(ids), 1), 4)))

    def write(self, path: pathlib.Path) -> None:
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=RESULT_COLUMNS)
            w.writeheader()
            w.writerows(self.rows)


def parse_config(parser: argparse.ArgumentParser, config_from_args, argv: list[str] | None):
    """Parses ``argv`` into an experiment's config; a ``ValueError`` from ``config_from_args``,
    or a dataset or checkpoint of the config that cannot be found (:func:`check_sources`),
    becomes the CLI's usage error (exit status 2, message on stderr). Every parser gets
    ``--import MODULE`` (:func:`import_user_modules`, run before the config is made). Also turns
    on the compilation cache of the command line (:func:`use_compilation_cache`)."""
    return parse_args_and_config(parser, config_from_args, argv)[1]


def parse_args_and_config(parser: argparse.ArgumentParser, config_from_args,
                          argv: list[str] | None) -> tuple[argparse.Namespace, object]:
    """:func:`parse_config` for a command line that also needs the parsed arguments:
    returns ``(args, config)``."""
    add_compilation_cache_note(parser)
    add_import_argument(parser)
    args = parser.parse_args(argv)
    import matplotlib

    # The command line only writes figures to files. Set here, not where the figures are
    # drawn, so that run(config) in a notebook leaves the notebook's backend alone.
    matplotlib.use("Agg")
    try:
        import_user_modules(args.imports)
    except ImportError as e:
        parser.error(f"--import: {e}")
    try:
        config = config_from_args(args)
        check_sources(config)
    except (ValueError, OSError, RuntimeError) as e:
        parser.error(str(e))
    use_compilation_cache()
    return args, config


#: Config fields naming a dataset spec, a flow checkpoint and a DCGAN checkpoint.
DATASET_FIELDS = ("dataset", "ood_dataset", "noise_digits")
FLOW_FIELDS = ("prior", "noise_flow")
GAN_FIELDS = ("gan",)


def check_sources(config) -> None:
    """Fails before any work if a dataset, prior or GAN named in ``config`` cannot be found:
    :func:`flowinv.data.check_dataset` for the datasets (and one image loaded of a ``tfds:``
    set, which TFDS may download first, as the run would), :func:`flowinv.checkpoints.
    find_checkpoint` for the checkpoints. ``None`` and ``"none"`` (skip) pass."""
    from flowinv import checkpoints, data

    def named(fields):
        values = (getattr(config, f, None) for f in fields)
        return [v for v in values if v is not None and v != "none"]

    for spec in named(DATASET_FIELDS):
        data.check_dataset(spec)
        if spec.startswith("tfds:"):  # whether TFDS knows it, and can fetch it, shows only here
            data.load_dataset(spec, "test", limit=1)
    needs = _images_beyond_test(config)
    if needs and getattr(config, "val_split", "train") == "test":
        _check_test_split_leaves_validation_images(config.dataset, config.num_images)
    elif needs and str(config.dataset).startswith("folder:"):
        _check_folder_leaves_validation_images(config.dataset, config.num_images, needs)
    elif needs and config.dataset in data.EVALUATION_ONLY:
        _check_evaluation_set_leaves_validation_images(config.dataset, config.num_images, needs)
    for name in named(FLOW_FIELDS):
        checkpoints.find_checkpoint(name, "flow")
    for name in named(GAN_FIELDS):
        checkpoints.find_checkpoint(name, "dcgan")
    if getattr(config, "out", None) is not None:
        check_out_dir(config.out)


def check_out_dir(out, option: str = "--out") -> None:
    """Fails before any work if the output folder ``out`` (given as ``option``) cannot be
    written: it is created (as the run would create it) and a temporary file is written in it
    and removed. Trying is the only reliable test: permission bits say nothing to root, or
    about a read-only file system."""
    if not str(out).strip():
        raise ValueError(f"{option} is empty: name a folder (an empty path would write into "
                         "the current folder)")
    path = pathlib.Path(out)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"cannot write results to {option} {str(out)!r}: it is a "
                                 "file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise OSError(f"cannot write results to {option} {str(out)!r}: {type(e).__name__}: "
                      f"{e.strerror or e}") from e


def check_methods_without_gan(methods, gan: str | None, gan_methods) -> None:
    """ValueError where ``--gan none`` would drop every method asked for (each of them a GAN
    method), leaving a run with nothing to do."""
    if gan == "none" and methods and set(methods) <= set(gan_methods):
        needs = "each needs" if len(methods) > 1 else "needs"
        raise ValueError(f"--methods {','.join(methods)}: {needs} a DCGAN, but --gan none "
                         "skips it; drop --gan none or add another method")


def check_export_dir(path, option: str = "--export-to") -> None:
    """Fails before any training if a checkpoint cannot be exported to folder ``path``: it is
    a file, or it (or, where it does not exist yet, its parent) cannot be written (see
    :func:`check_out_dir`). Nothing is created but the parent folder."""
    path = pathlib.Path(os.path.expanduser(os.fspath(path)))
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"cannot export to {option} {str(path)!r}: it is a file, not "
                                 "a folder")
    check_out_dir(path if path.exists() else path.parent, option)


def _images_beyond_test(config) -> str | None:
    """What ``config`` draws from images other than its test images (:func:`load_train_images`):
    validation images (a ``val_images`` field) or ``init_study``'s ``inverse-train`` starts;
    ``None`` when nothing."""
    if getattr(config, "val_images", None):
        return "validation images"
    if "inverse-train" in (getattr(config, "inits", None) or ()):
        return "'inverse-train' starts"
    return None


def _check_folder_leaves_validation_images(spec: str, num_test: int,
                                           purpose: str = "validation images") -> None:
    """A ``folder:`` whose test and training files are the same (no ``train/`` and ``test/``
    subfolders) takes its validation images (or other ``purpose``) from its images after the
    first ``num_test`` (:func:`load_train_images`), so it needs more than ``num_test`` of them;
    counted from the file names."""
    from flowinv import data

    test = data.folder_files(spec, "test")
    try:
        train = data.folder_files(spec, "train")
    except ValueError:
        train = test
    shared = not {p.resolve() for p in test[:num_test]}.isdisjoint(p.resolve() for p in train)
    if shared and len(test) <= num_test:
        raise ValueError(
            f"{spec!r} holds {len(test)} images and no separate train/ subfolder, so its "
            f"{purpose} come from those after the first --num-images {num_test}: "
            f"{_at_most(len(test))}, or put training images in a train/ subfolder (and test "
            "images in test/)")


def _at_most(total: int) -> str:
    """How to fit ``--num-images`` to a set of ``total`` images that also gives validation
    images (or other images beyond the test images)."""
    if total < 2:
        return f"it needs at least 2 images (one to test, one beyond it), and has {total}"
    return f"ask for at most {total - 1} test images"


def _check_evaluation_set_leaves_validation_images(spec: str, num_test: int,
                                                   purpose: str = "validation images") -> None:
    """:func:`_check_folder_leaves_validation_images` for a bundled evaluation-only set
    (:data:`flowinv.data.EVALUATION_ONLY`), whose ``purpose`` images also come from its test
    images after the first ``num_test``; counted by loading them (0.01 s for ``lfw``)."""
    from flowinv import data

    total = len(data.load_dataset(spec, "test"))
    if total <= num_test:
        raise ValueError(
            f"{spec!r} is an evaluation-only set of {total} images, so its {purpose} come "
            f"from those after the first --num-images {num_test}: {_at_most(total)}")


#: Bundled datasets split by source photograph: every test image is a crop of one of two test
#: photos (at three scales), so test images after the reported ones are crops of the reported
#: ones' photos, and often downscaled views of their very pixels.
SPLIT_BY_PHOTO: tuple[str, ...] = ("patches64", "patches32")


def _refuse_test_validation_by_photo(spec: str) -> None:
    if spec in SPLIT_BY_PHOTO:
        raise ValueError(
            f"--val-split test cannot validate {spec!r}: its split is by photograph, and its "
            "test images after the reported ones are crops of the same test photographs (at "
            "other scales, often of the very pixels reported on); use --val-split train, whose "
            "photographs are never test photographs")


def _check_test_split_leaves_validation_images(spec: str, num_test: int) -> None:
    """With ``--val-split test`` the validation images are the test split's images after the
    first ``num_test``, so it needs more than ``num_test`` of them; counted by file name for a
    ``folder:`` (whose images may differ in size until the run resizes them), else by loading
    at most ``num_test + 1`` (a ``tfds:`` set is left to the run, which fails if none are
    left). A dataset split by photograph (:data:`SPLIT_BY_PHOTO`) is refused."""
    _refuse_test_validation_by_photo(spec)
    if spec.startswith("tfds:"):
        return
    from flowinv import data

    if spec.startswith("folder:"):
        total = len(data.folder_files(spec, "test"))
    else:
        total = len(data.load_dataset(spec, "test", limit=num_test + 1))
    if total <= num_test:
        raise ValueError(
            f"--val-split test takes the validation images from the test images of {spec!r} "
            f"after the first --num-images {num_test}, but it has {total}: "
            f"{_at_most(total)}")


def check_separate_training_split(spec: str) -> None:
    """ValueError for a spec whose training images are its test images: a ``folder:`` without
    ``train/`` and ``test/`` subfolders (its two splits share files), or ``tfds:NAME:SPLIT`` (one
    split for both), on which a model would be tested (and the experiments would report) on the
    images it was trained on; and for an evaluation-only set (``lfw``), which has no training
    split."""
    from flowinv import data

    if spec in data.EVALUATION_ONLY:
        raise ValueError(f"{spec!r} is an evaluation-only set with no training split; train on "
                         "another dataset (its prior is used on it at test time)")
    if spec.startswith("tfds:") and spec.count(":") >= 2:
        raise ValueError(f"{spec!r} names one TFDS split for both training and test; give "
                         "tfds:NAME, whose 'train' and 'test' splits are used")
    if not spec.startswith("folder:"):
        return

    if set(data.folder_files(spec, "train")) & set(data.folder_files(spec, "test")):
        raise ValueError(f"{spec!r} has no train/ and test/ subfolders, so its test images "
                         "would be its training images: put training images in PATH/train "
                         "and test images in PATH/test")


def count(n: int, noun: str) -> str:
    """``n`` and ``noun``, made plural unless ``n`` is 1: ``count(1, "test image")`` is
    ``"1 test image"``, ``count(3, "test image")`` is ``"3 test images"``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def command_line(module: str, argv: list[str] | None) -> str:
    """The shell command that ran ``python -m MODULE`` with ``argv`` (``sys.argv[1:]`` when
    None), quoted so that it can be pasted back, e.g. into a checkpoint's sidecar."""
    args = sys.argv[1:] if argv is None else argv
    return " ".join(["python", "-m", module, *(shlex.quote(a) for a in args)])


IMPORT_HELP = ("import this Python module (a name on the Python path, or a .py file) before "
               "anything else, e.g. one that calls flowinv.checkpoints.register_flow so that a "
               "checkpoint of a flow class of your own can load; repeatable")


def add_import_argument(parser: argparse.ArgumentParser) -> None:
    """Adds ``--import MODULE`` (repeatable, into ``args.imports``) unless the parser has it."""
    if any("--import" in a.option_strings for a in parser._actions):
        return
    parser.add_argument("--import", dest="imports", action="append", default=[],
                        metavar="MODULE", help=IMPORT_HELP)


def import_user_modules(names: Iterable[str]) -> list:
    """Imports each of ``names``, a module name or a path to a ``.py`` file, in order, and
    returns the modules. A file is imported under its stem (which must not name a module
    already imported, e.g. ``json.py``), with its folder on ``sys.path`` so that it can import
    the files beside it, as a script can. The flow registry
    (:func:`flowinv.checkpoints.register_flow`) lives in the process, so a command line can
    load a checkpoint of a flow class of your own only after the module that registers it has
    run. Raises ``ImportError`` naming a module or file that
    cannot be found."""
    import importlib
    import importlib.util

    modules = []
    for name in names:
        if name.endswith(".py"):
            path = pathlib.Path(name).expanduser().resolve()
            if not path.is_file():
                raise ImportError(f"no such file: {name}")
            if path.stem in sys.modules:
                raise ImportError(f"{name}: a module named {path.stem!r} is already imported; "
                                  "rename the file")
            if str(path.parent) not in sys.path:  # its sibling files import, as a script's do
                sys.path.insert(0, str(path.parent))
            spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[path.stem] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                sys.modules.pop(path.stem, None)
                raise
        else:
            module = importlib.import_module(name)
        modules.append(module)
    return modules


def add_compilation_cache_note(parser: argparse.ArgumentParser) -> None:
    """Ends the ``--help`` of an experiment with where its compiled programs are kept."""
    note = (f"Compiled programs are kept in {DEFAULT_COMPILATION_CACHE}, so a rerun skips "
            f"compiling; {COMPILATION_CACHE_ENV}=DIR keeps them in DIR, "
            f"{COMPILATION_CACHE_ENV}=off turns this off.")
    note = textwrap.fill(note, 79)  # raw-text formatters print it as it is
    if note not in (parser.epilog or ""):
        parser.epilog = f"{parser.epilog}\n\n{note}" if parser.epilog else note


def use_compilation_cache() -> pathlib.Path | None:
    """Keeps the compiled XLA programs of an experiment on disk, so that a rerun skips compiling.

    Sets JAX's persistent compilation cache (``jax_compilation_cache_dir``) to the folder named
    by ``$FLOWINV_COMPILATION_CACHE``, or ``~/.cache/flowinv/xla`` when it is unset; ``off``
    (or ``0``, ``none``, ``false``) leaves the cache off. A folder the user already gave JAX
    (``JAX_COMPILATION_CACHE_DIR`` or ``jax.config``) is kept. Entries are keyed by the program,
    the JAX and XLA versions, the backend and the compiler flags, so a cached program is the
    program that would have been compiled: results are identical. JAX stores only programs that
    took at least ``jax_persistent_cache_min_compile_time_secs`` (1 s) to compile, and never
    evicts them. Measured on the 2-core CPU: ``python -m experiments.denoise`` took 295 s with an
    empty cache and 233 s with a full one, with the same numbers.

    The experiments' command lines call this (their ``run(config)`` does not, so a notebook's
    JAX settings stay the user's). Returns the folder in use, or None if the cache is off or the
    folder cannot be created (with a note on stderr).
    """
    import jax

    setting = os.environ.get(COMPILATION_CACHE_ENV, "").strip()
    if setting.lower() in ("off", "0", "none", "false"):
        return None
    if jax.config.jax_compilation_cache_dir:
        return pathlib.Path(jax.config.jax_compilation_cache_dir)
    folder = pathlib.Path(setting or DEFAULT_COMPILATION_CACHE).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        print(f"note: no compilation cache ({e}); set {COMPILATION_CACHE_ENV} to a writable "
              "folder, or to 'off'", file=sys.stderr)
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    return folder


def write_csv(path: pathlib.Path, rows: list[dict]) -> None:
    if not rows:
        path.write_text("")
        return
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def format_table(rows: list[dict]) -> str:
    """A plain-text table of ``rows`` (dicts with the same keys)."""
    if not rows:
        return "(no rows)"
    keys = list(rows[0])
    cells = [[_fmt(r[k]) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    line = "  ".join(k.ljust(w) for k, w in zip(keys, widths, strict=True))
    sep = "  ".join("-" * w for w in widths)
    body = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join([line, sep, *body])


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 1e4 else f"{v:.3g}"
    return str(v)


def sample_sheet(path: pathlib.Path, columns: list[tuple[str, np.ndarray]], title: str, *,
                 reference: str = "truth", unscored: Iterable[str] = ()) -> None:
    """Saves :func:`flowinv.plotting.image_grid` of ``columns`` (name, images ``(N, H, W, C)``)
    to ``path``: one column per entry, one row per image, each image labelled with its PSNR
    against the column named ``reference`` where there is one, except the columns named in
    ``unscored`` (display-only images, whose PSNR is not the one the tables report)."""
    import matplotlib.pyplot as plt

    from flowinv import plotting

    names = [name for name, _ in columns]
    fig = plotting.image_grid(columns, reference=reference if reference in names else None,
                              title=title, unscored=unscored)
    fig.savefig(path, dpi=110)
    plt.close(fig)


_COMPILE_EVENT_PREFIX = "/jax/core/compile/"


class SolveClock:
    r"""Wall time of a block, and the part of it that JAX spent tracing/lowering/compiling.

    ``compile_seconds`` is the length of the union of the spans of JAX's
    ``/jax/core/compile/*`` monitoring events (they nest, so they are not simply summed) and
    ``seconds = wall − compile_seconds`` is the solve time proper: what every experiment writes
    in its ``results.csv``'s ``seconds`` column, so that a method's first setting (which
    compiles its solve) reads like the others, and a method like a baseline that does not
    compile. Block on the results inside the ``with`` (e.g. ``np.asarray``), since JAX
    dispatches asynchronously.
    """

    def __enter__(self):
        self._spans: list[tuple[float, float]] = []

        def listener(event: str, start: float, end: float, **_) -> None:
            if event.startswith(_COMPILE_EVENT_PREFIX):
                self._spans.append((start, end))

        self._listener = listener
        import jax

        jax.monitoring.register_event_time_span_listener(listener)
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self._start
        import jax

        jax.monitoring.unregister_event_time_span_listener(self._listener)
        covered, reach = 0.0, -math.inf
        for start, end in sorted(self._spans):
            if end > reach:
                covered += end - max(start, reach)
                reach = end
        self.compile_seconds = min(covered, self.wall)
        self.seconds = self.wall - self.compile_seconds


def chunk_size() -> int | None:
    """``recover``'s ``chunk_size`` for the experiments: 8 on a CPU, the whole batch elsewhere.

    Measured with jaxopt's L-BFGS (glow-mnist, 40 images, 50 iterations, 2-core CPU): 80.9 s as
    one batch, 42.1 s in chunks of 8, because its vmapped line search waits for its slowest
    image at every iteration. The default ``solvers.lbfgs`` has no such wait (one evaluation
    per loop pass); the 8 is kept until it is measured again.
    """
    import jax

    return 8 if jax.default_backend() == "cpu" else None


def default_prior(spec: str) -> str:
    """The shipped prior an experiment uses for dataset ``spec`` when ``--prior`` is not given.

    ``mnist``, ``digits`` and ``patches64`` have their own; any other dataset gets the natural
    patch prior (``glow-patches64``) for colour images and the MNIST prior for grey ones, judged
    from its first 8 test images (colour if any is: :func:`flowinv.data.dataset_channels`),
    with a note on stderr (the images are then converted to the prior's shape, see
    ``flowinv.data``).
    """
    from flowinv import data

    if spec in DEFAULT_PRIOR:
        return DEFAULT_PRIOR[spec]
    channels = data.dataset_channels(spec, "test")
    name = PRIOR_BY_CHANNELS.get(channels, "glow-patches64")
    print(f"note: prior {name} for dataset {spec!r} ({channels}-channel images; pass --prior "
          "to choose another)", file=sys.stderr)
    return name


#: Distributions whose versions ``environment.json`` records.
RECORDED_PACKAGES = ("jax", "jaxlib", "flax", "optax", "jaxopt", "orbax-checkpoint", "numpy",
                     "scipy", "scikit-image", "bm3d", "PyWavelets")


def _source_commit() -> str | None:
    """The full commit hash of the flowinv checkout these experiments run from (``+dirty``
    with uncommitted changes to tracked files), or None outside a git checkout."""
    import subprocess

    root = pathlib.Path(__file__).resolve().parent.parent
    try:
        def git(*args):
            return subprocess.run(["git", "-C", str(root), *args], capture_output=True,
                                  text=True, timeout=10, check=True).stdout.strip()

        if pathlib.Path(git("rev-parse", "--show-toplevel")).resolve() != root:
            return None  # installed inside some other repository's tree
        commit = git("rev-parse", "HEAD")
        return commit + ("+dirty" if git("status", "--porcelain", "--untracked-files=no")
                         else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else ``platform.processor()``)."""
    import platform

    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def this_command() -> str:
    """This process's command as typed: :func:`command_line` for a ``python -m`` run (whose
    ``sys.argv[0]`` is the module's file path), else ``python`` and the quoted ``sys.argv``."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name:
        return command_line(spec.name, None)
    return shlex.join(["python", *sys.argv])


def environment_record(config, prior_name: str) -> dict:
    """Where and how an experiment ran: command, config, prior, source commit, package
    versions, device and CPU. Float32 results differ by machine in their last digits (and, after
    hundreds of solver iterations, by tenths of a dB), so a reported number needs this."""
    import platform
    from importlib import metadata

    import jax

    def version(name):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    dev = jax.devices()[0]
    return {
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": this_command(),
        "config": dataclasses.asdict(config) if dataclasses.is_dataclass(config) else None,
        "prior": prior_name,
        "flowinv_commit": _source_commit(),
        "versions": {name: version(name) for name in RECORDED_PACKAGES},
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": f"{dev.platform}:{dev.device_kind}",
        "device_count": jax.device_count(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
    }


def setup_run(config) -> tuple[pathlib.Path, str, object, object]:
    """The start of every experiment's ``run``: ``(out, prior_name, flow, params)``.

    Creates the output folder ``config.out``, loads ``config.prior``, or the default prior of
    ``config.dataset`` (:func:`default_prior`) when it is None, and writes
    ``environment.json`` (:func:`environment_record`) there.
    """
    import json

    import flowinv

    out = pathlib.Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    prior_name = config.prior or default_prior(config.dataset)
    flow, params = flowinv.load_prior(prior_name)
    record = environment_record(config, prior_name)
    (out / "environment.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    return out, prior_name, flow, params


def load_gan_or_none(gan: str | None, dataset: str, image_shape: tuple | None = None):
    """``(Generator, params)`` of the DCGAN baseline, or None with a note on stderr.

    ``gan`` is ``"none"`` (skip), None (the shipped DCGAN for ``dataset``, if there is one) or a
    shipped name / checkpoint folder. A missing or unreadable checkpoint, or one whose images
    do not have ``image_shape``, skips the baseline instead of stopping the experiment.
    """
    from flowinv import checkpoints

    if gan == "none":
        return None
    name = gan or DEFAULT_GAN.get(dataset) or GAN_BY_SHAPE.get(
        None if image_shape is None else tuple(int(d) for d in image_shape))
    if name is None:
        print(f"note: DCGAN baseline skipped (no shipped DCGAN for dataset {dataset!r}; "
              "pass --gan)", file=sys.stderr)
        return None
    try:
        generator, params = checkpoints.load_gan(name)
    except ValueError as e:
        print(f"note: DCGAN baseline skipped ({e})", file=sys.stderr)
        return None
    if image_shape is not None and tuple(generator.image_shape) != tuple(image_shape):
        print(f"note: DCGAN baseline skipped (its images are {tuple(generator.image_shape)}, "
              f"the prior's {tuple(image_shape)})", file=sys.stderr)
        return None
    return generator, params


def best_on_validation(candidates: list[dict], key: str = "val_psnr") -> dict:
    """The candidate (one per hyperparameter value) with the highest mean validation PSNR
    ``candidate[key]``; a NaN score (a failed solve) ranks last, and test scores never count."""
    return max(candidates, key=lambda c: np.nan_to_num(float(c[key]), nan=-np.inf))


def grid_edge(grid: Iterable, picked) -> str:
    """Where validation's pick sits in its grid of weights: ``"low"`` or ``"high"`` at an end of
    a grid of two or more numbers (where a better weight may lie beyond it, so widen the
    grid), ``""`` inside it, for a method without a weight, or at a lower end of 0 (no
    smaller weight exists)."""
    values = sorted({float(v) for v in grid if v not in ("", None)})
    if len(values) < 2 or picked in ("", None):
        return ""
    if float(picked) == values[-1]:
        return "high"
    return "low" if float(picked) == values[0] and values[0] != 0 else ""


def grid_edge_note(rows: list[dict], describe) -> str | None:
    """One line naming the summary rows whose pick sits at an end of its grid (their ``edge``
    column), each as ``describe(row)``; None when none does."""
    at = [f"{describe(r)} ({r['edge']})" for r in rows if r.get("edge")]
    if not at:
        return None
    return ("note: validation picked an end of the weight grid for " + "; ".join(at)
            + ": a better weight may lie beyond it (widen the grid)")


def print_grid_edge_note(rows: list[dict], describe) -> None:
    """Prints :func:`grid_edge_note` of a summary, wrapped, if any pick is at a grid's end."""
    note = grid_edge_note(rows, describe)
    if note:
        print(textwrap.fill(note, 100))


COMPARISON_NOTE = (
    "paired per test image (dB; se: standard error of the mean; ci_low/ci_high: its 95 % "
    "t interval, an ordering only where it excludes 0; p: the paired t-test's p-value; ahead: "
    "test images where the first method is higher)")


def paired_difference(rows: list[dict], a: dict, b: dict) -> dict:
    """PSNR of method ``a`` minus method ``b`` on the same test images, paired by image.

    ``a`` and ``b`` select rows of a :class:`ResultTable` (``{column: value}``, e.g. a method
    at its validation-picked weight and setting); each must select one row per image. The
    mean of a paired difference has a standard error far smaller than the spread of PSNR
    across images, which is what decides whether an ordering of two methods is more than noise.

    An ordering is claimed only where the 95 % interval excludes 0: with ``n`` images it is
    ``mean ± t·se``, ``t`` the 0.975 quantile of Student's t with ``n − 1`` degrees of freedom
    (12.7 for 2 images, 3.18 for 4, 2.13 for 16: "two standard errors" is too lax for a
    handful of images), and ``p`` the paired t-test's two-sided p-value. ``ahead`` alone is no
    evidence: "4 of 4" has a sign-test p of 0.125.

    Returns:
      ``{"diff_db": mean of a − b, "se_db": standard error of that mean (ddof = 1),
      "ci_low_db", "ci_high_db": the 95 % t interval, "p": its p-value, "ahead": images where
      a is higher, "images": images in both}``; se, interval and p are NaN for one image, and
      where a difference is not finite.
    """
    def psnr_by_image(selector: dict) -> dict:
        chosen = [r for r in rows if all(r[k] == v for k, v in selector.items())]
        by_image = {r["image_id"]: float(r["psnr"]) for r in chosen}
        if len(by_image) != len(chosen):
            raise ValueError(f"{selector} selects more than one row for an image")
        return by_image

    pa, pb = psnr_by_image(a), psnr_by_image(b)
    ids = sorted(pa.keys() & pb.keys())
    if not ids:
        raise ValueError(f"no image has rows for both {a} and {b}")
    d = np.array([pa[i] - pb[i] for i in ids])
    mean, n = float(np.mean(d)), len(d)
    spread = n > 1 and bool(np.all(np.isfinite(d)))  # an inf PSNR (exact recovery) has none
    se = float(np.std(d, ddof=1) / np.sqrt(n)) if spread else float("nan")
    if spread:
        from scipy import stats

        half = float(stats.t.ppf(0.975, n - 1)) * se
        p = (float(2 * stats.t.sf(abs(mean) / se, n - 1)) if se > 0
             else float(mean == 0.0))  # identical differences: p = 0 unless all are 0
    else:
        half = p = float("nan")
    return {"diff_db": round(mean, 2), "se_db": round(se, 2),
            "ci_low_db": round(mean - half, 2), "ci_high_db": round(mean + half, 2),
            "p": float(f"{p:.2g}"), "ahead": int(np.sum(d > 0)), "images": n}


def compare_picked(rows: list[dict], picked: dict[str, dict], pairs, where: dict) -> list[dict]:
    """For each ``(a, b)`` of ``pairs`` whose methods are both in ``picked`` (method -> its
    summary row, with ``param`` and ``param_value``): ``a`` at its picked weight minus ``b`` at
    its own, over the ``rows`` that also match ``where``, paired per test image
    (:func:`paired_difference`). Each result: ``method, param, vs, vs_param`` and the
    difference's columns."""
    def selector(method: str) -> dict:
        return {**where, "method": method, "param_value": picked[method]["param_value"]}

    return [dict(method=a, param=picked[a]["param"], vs=b, vs_param=picked[b]["param"],
                 **paired_difference(rows, selector(a), selector(b)))
            for a, b in pairs if a in picked and b in picked]


VAL_SPLITS = ("train", "test")


def add_val_split_argument(parser: argparse.ArgumentParser) -> None:
    """``--val-split train|test``: where the validation images that pick the weights come
    from (:func:`load_test_and_val`)."""
    parser.add_argument(
        "--val-split", choices=VAL_SPLITS, default="train",
        help="where the validation images come from: 'train' (default), the training split, "
             "which the shipped priors were trained on, so a prior fits them better than new "
             "images (a dataset without one, such as lfw or a folder without train/ and test/, "
             "gives its test images after the reported ones, as 'test' does); 'test', the test "
             "split's images after the --num-images reported ones, never reported and never "
             "trained on (refused for patches64 and patches32, split by photograph: their "
             "later test images are crops of the reported ones' photographs)")


def validation_text(n: int, val_split: str = "train") -> str:
    """``"3 validation images"``, naming the split where it is the test split."""
    text = count(n, "validation image")
    return text if val_split == "train" else f"{text} (test split, after the reported ones)"


def load_test_and_val(spec: str, shape, num_test: int, num_val: int,
                      val_split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """``num_test`` test images and ``num_val`` validation images, never among them.

    ``val_split="train"``: the validation images come from the *training* split
    (:func:`load_train_images`, which falls back to the test images after the first
    ``num_test`` for a dataset without one). The shipped priors were trained on that split, so
    they fit those images better than unseen ones, and a pick may lean towards weak
    regularisation. ``"test"``: the test split's images after the first ``num_test``, which are
    never reported and never trained on; refused for a dataset split by photograph
    (:data:`SPLIT_BY_PHOTO`), whose later test images are crops of the reported ones' photos.
    Fails if either set is empty; notes a shortfall.
    """
    from flowinv import data

    if val_split not in VAL_SPLITS:
        raise ValueError(f"val_split must be one of {VAL_SPLITS}, got {val_split!r}")
    if val_split == "test":
        _refuse_test_validation_by_photo(spec)
        split = data.load_dataset(spec, "test", image_shape=shape, limit=num_test + num_val)
        test, val = split[:num_test], split[num_test: num_test + num_val]
    else:
        test = data.load_dataset(spec, "test", image_shape=shape, limit=num_test)[:num_test]
        val = load_train_images(spec, shape, num_val, num_test, test=test,
                                purpose="validating")
    if len(test) == 0 or len(val) == 0:
        raise ValueError(f"dataset {spec!r} gave {len(test)} test and {len(val)} validation "
                         f"images; need at least one of each (at least {num_test + 1} images "
                         "when test and validation images come from the same split)")
    if len(test) < num_test or len(val) < num_val:
        print(f"note: dataset {spec!r} gave {len(test)} of the {num_test} test and {len(val)} "
              f"of the {num_val} validation images asked for", file=sys.stderr)
    return test, val


def load_train_images(spec: str, shape, count: int, num_test: int, *,
                      test: np.ndarray | None = None, purpose: str = "training") -> np.ndarray:
    """Up to ``count`` images for choosing hyperparameters or initialisations, none of them one
    of the first ``num_test`` test images (the ones an experiment reports on).

    They come from the training split. Datasets without a separate training split take the
    test images after the first ``num_test`` instead, with a note naming ``purpose``:
    evaluation-only sets such as ``lfw``, a ``folder:`` whose training split holds no image
    (only a ``test/`` subfolder) or reads the same files as its test split (no ``train/`` and
    ``test/`` subfolders), and ``tfds:NAME:SPLIT``, which names one split for both. A separate
    training split that holds copies of test images gives its other images (the copies are
    compared by content and left out, with a note). A training image that cannot be read is
    an error naming the file, as a test image's is. ``test``: the first ``num_test`` test
    images, if already loaded.
    """
    from flowinv import data

    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if test is None:
        test = data.load_dataset(spec, "test", image_shape=shape, limit=num_test)[:num_test]
    images, copies = None, 0
    if _has_own_training_split(spec):
        limit = count
        while True:  # load more as copies are left out, until count remain or none are left
            loaded = _training_split(spec, shape, limit)
            if loaded is None:
                break
            keep = ~data.shared_image_mask(test, loaded)
            images, copies = loaded[keep], int((~keep).sum())
            if len(images) >= count or len(loaded) < limit:
                images = images[:count]
                break
            limit += count - len(images)
    if images is not None and copies:
        print(f"note: {copies} training image{'s' if copies != 1 else ''} of {spec!r} "
              f"equal{'' if copies != 1 else 's'} a test image and "
              f"{'are' if copies != 1 else 'is'} left out; {purpose} on the others",
              file=sys.stderr)
    if images is None or len(images) == 0:
        print(f"note: dataset {spec!r} has no training split apart from its test images; "
              f"{purpose} on its images after the first {num_test}", file=sys.stderr)
        more = data.load_dataset(spec, "test", image_shape=shape, limit=num_test + count)
        images = more[num_test: num_test + count]
    return images


def _has_own_training_split(spec: str) -> bool:
    """False where the training split is missing or is the test split, as
    :func:`check_separate_training_split` refuses it for training (an evaluation-only set,
    ``tfds:NAME:SPLIT``, a folder whose two splits share files), or a folder's training split
    holds no image (only a ``test/`` subfolder)."""
    try:
        check_separate_training_split(spec)
    except ValueError:
        return False
    return True


def _training_split(spec: str, shape, count: int) -> np.ndarray | None:
    """The first ``count`` training images of a ``spec`` that has its own training split, or
    None where a TFDS dataset cannot give one. A folder's unreadable file is raised, not taken
    for a missing split."""
    from flowinv import data

    try:
        return data.load_dataset(spec, "train", image_shape=shape, limit=count)[:count]
    except ValueError:
        if spec.startswith("folder:"):
            raise
        return None
