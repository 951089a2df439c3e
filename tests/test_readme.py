"""Every ```python block of the README runs as written (the quick start is a contract), and
every experiment and benchmark command line the docs print parses."""

from __future__ import annotations

import pathlib
import re

import numpy as np
import pytest

from experiments import common
from flowinv import checkpoints

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_python_examples():
    assert len(BLOCKS) >= 2


# Blocks that load a shipped prior run hundreds of solver iterations on it: compiled fully
# optimised, as a user's would be (tests/conftest.py), block 1 took 124 s; without, 619 s.
CASES = [pytest.param(i, marks=[pytest.mark.optimised] if "load_prior(" in code else [])
         for i, code in enumerate(BLOCKS)]


@pytest.mark.parametrize("index", CASES)
def test_readme_block_runs(index):
    code = BLOCKS[index]
    if "load_prior(\"glow-mnist\")" in code and "glow-mnist" not in checkpoints.available_priors():
        pytest.fail("the README uses the shipped glow-mnist checkpoint, which is missing")
    exec(compile(code, f"README.md block {index}", "exec"), {"__name__": "__readme__"})


# ------------------------------------------------------------------------------------------
# Command lines: every `python -m experiments.NAME ...` that the docs print, and the training
# command each shipped checkpoint records, parses into a valid config of that experiment; every
# `python -m benchmarks.NAME ...` parses with that benchmark's parser.

ROOT = README.parent
DOCS = [README, ROOT / "benchmarks" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMAND = re.compile(r"python3? -m ((?:experiments|benchmarks)\.\w+)(.*)")


def _command_lines(text: str) -> list[tuple[str, str]]:
    """``(module, arguments)`` of each command in fenced blocks (a line, continuations joined,
    up to a ``#`` comment or a shell ``&&``/``;``/``|``) and in inline code spans, which may
    wrap across lines of the Markdown source."""
    fence = re.compile(r"```[a-z]*\n(.*?)```", re.S)
    pieces = [line.split("#")[0] for block in fence.findall(text)
              for line in block.replace("\\\n", " ").splitlines()]
    pieces += [" ".join(span.split()) for span in re.findall(r"`([^`]*)`", fence.sub("", text))]
    found = []
    for piece in pieces:
        for part in re.split(r"&&|;|\|", piece):
            m = COMMAND.search(part)
            if m and not m.group(1).endswith(".NAME") and "NAME" not in m.group(2).split():
                found.append((m.group(1), m.group(2).strip()))
    return found


def _documented_commands() -> list:
    import json

    cases = {}
    for doc in DOCS:
        for module, args in _command_lines(doc.read_text()):
            cases.setdefault((module, args), doc.relative_to(ROOT).as_posix())
    for meta in sorted((ROOT / "checkpoints").glob("*/metadata.json")):
        m = COMMAND.search(json.loads(meta.read_text()).get("command", ""))
        if m:
            cases.setdefault((m.group(1), m.group(2).strip()), meta.relative_to(ROOT).as_posix())
    return [pytest.param(module, args, id=f"{where}: {module} {args}".strip())
            for (module, args), where in cases.items()]


_ALL_COMMANDS = _documented_commands()
COMMANDS = [c for c in _ALL_COMMANDS if c.values[0].startswith("experiments.")]
BENCHMARK_COMMANDS = [c for c in _ALL_COMMANDS if c.values[0].startswith("benchmarks.")]


def test_the_docs_print_experiment_command_lines():
    # README: the main job, the 16- and 32-image reruns, training; checkpoints: 6 recipes
    assert len(COMMANDS) >= 20
    assert len(BENCHMARK_COMMANDS) >= 10  # both READMEs: the GPU session, sweeps, quick runs


@pytest.mark.parametrize("module,args", COMMANDS)
def test_documented_command_line_parses(module, args, tmp_path, monkeypatch):
    """The module's own parser and ``config_from_args`` accept it, as ``main`` would (a
    ``ValueError`` there is the command line's usage error). Folders under ``~`` are a
    reader's own: here a home with a few images in each of them."""
    import importlib
    import shlex

    import matplotlib.image

    monkeypatch.setenv("HOME", str(tmp_path))
    for folder in re.findall(r"folder:~/([\w./-]+)", args):
        for split in ("train", "test"):
            (tmp_path / folder / split).mkdir(parents=True)
            for i in range(3):
                matplotlib.image.imsave(tmp_path / folder / split / f"{i}.png",
                                        np.full((8, 8, 3), i / 3.0))
    experiment = importlib.import_module(module)
    parser = experiment.build_parser()
    common.add_import_argument(parser)  # main adds it (common.parse_args_and_config)
    args_ns = parser.parse_args(shlex.split(args))
    experiment.config_from_args(args_ns)


class _Parsed(Exception):
    pass


@pytest.mark.parametrize("module,args", BENCHMARK_COMMANDS)
def test_documented_benchmark_command_line_parses(module, args, monkeypatch):
    """The benchmark's ``main`` parses it (flags and their types); it stops right after
    parsing, before any work. (Its checks of values against the models and tasks it knows come
    after parsing, in ``main``, and are tested in ``tests/test_benchmarks.py``.)"""
    import argparse
    import importlib
    import shlex

    import jax

    parse = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, argv=None, namespace=None):
        raise _Parsed(parse(self, argv, namespace))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    cache = jax.config.jax_enable_compilation_cache  # benchmarks switch it off for the process
    try:
        with pytest.raises(_Parsed):
            importlib.import_module(module).main(shlex.split(args))
    finally:
        jax.config.update("jax_enable_compilation_cache", cache)
