"""The README's Python examples run, each in a fresh interpreter, next to a finished run's results."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from robustart.run import run
from tests.conftest import FAST, REPO, compose_config

BLOCKS = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)


def test_readme_has_python_examples():
    assert len(BLOCKS) >= 3


def test_readme_commands_are_real_configs():
    text = (REPO / "README.md").read_text()
    assert "make demo" in text and "make test" in text
    assert "python -m robustart model=vit_b noise=imagenet_c data=imagenet data.root=" in text
    assert (REPO / ".ci" / "run").read_text().strip().endswith("make test")


@pytest.fixture(scope="module")
def results_parent(tmp_path_factory, shared_cache):
    """A folder holding ``results/`` with one finished shrunk quickstart (in-process, the shared cache's model)."""
    parent = tmp_path_factory.mktemp("readme")
    run(compose_config([*FAST, f"paths.results_dir={parent / 'results'}", f"paths.cache_dir={shared_cache}"]))
    return parent


@pytest.mark.parametrize("index", range(len(BLOCKS)))
@pytest.mark.cli
def test_readme_example_runs(index, results_parent):
    proc = subprocess.run(
        [sys.executable, "-c", BLOCKS[index]], cwd=results_parent, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
