"""Every ```python block of the README runs as written (the quick start is a contract)."""

from __future__ import annotations

import pathlib
import re

import pytest

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
