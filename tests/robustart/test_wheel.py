"""A built wheel works from any folder: the pillars and the config groups install inside the robustart package,
and a user's own ``evaluation.py``, ``noise.py``, ``training.py`` or ``model_zoo.py`` beside the command changes
nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import REPO

SHADOWS = ("evaluation.py", "noise.py", "training.py", "model_zoo.py")


def _sh(*args, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600, **kwargs)
    assert proc.returncode == 0, f"{args}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory):
    """A fresh virtual environment with the wheel installed (no editable finder), its dependencies taken from this
    environment's site-packages (added to the path, so this environment's .pth files do not run there)."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"  # the tracked files only: the build leaves nothing in the checkout
    files = _sh("git", "ls-files", "-co", "--exclude-standard", cwd=REPO).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    _sh(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(root / "dist"),
        str(source))  # fmt: skip
    [wheel] = (root / "dist").glob("robustart-*.whl")
    venv = root / "venv"
    _sh(sys.executable, "-m", "venv", "--without-pip", str(venv))
    python = venv / "bin" / "python"
    site = Path(_sh(str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _sh(sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel))
    return python, site, wheel


@pytest.mark.slow
@pytest.mark.cli
def test_wheel_holds_the_namespaced_pillars_and_configs(wheel_env):
    import zipfile

    _, _, wheel = wheel_env
    names = zipfile.ZipFile(wheel).namelist()
    expected = [
        "noise/base.py",
        "model_zoo/registry.py",
        "training/fit.py",
        "evaluation/scoring.py",
        "conf/config.yaml",
        "conf/noise/pgd_linf.yaml",
        "evaluation/baselines/alexnet_imagenet_c.csv",
        "classes/imagenet_200.json",
    ]
    for path in expected:
        assert f"robustart/{path}" in names, path
    assert not any(n.split("/")[0] in ("noise", "evaluation", "training", "model_zoo", "conf") for n in names)


@pytest.mark.slow
@pytest.mark.cli
def test_wheel_runs_from_a_folder_of_shadowing_files(wheel_env, tmp_path):
    python, site, _ = wheel_env
    work = tmp_path / "work"
    work.mkdir()
    for name in SHADOWS:
        (work / name).write_text("raise ImportError('the user file was imported instead of robustart')\n")
    env = {**os.environ, "ROBUSTART_RESULTS": str(tmp_path / "results"), "ROBUSTART_CACHE": str(tmp_path / "cache"),
           "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}  # fmt: skip
    where = "import robustart.evaluation as e, robustart.conf as c; print(e.__file__, c.__file__)"
    where = _sh(str(python), "-c", where, cwd=work, env=env).stdout.split()
    assert all(Path(p).is_relative_to(site) for p in where), where
    overrides = ["model=small_cnn", "noise=pgd_linf", "noise.eps=[2/255]", "noise.steps=2", "evaluation.max_samples=32"]
    proc = _sh(str(python), "-m", "robustart", *overrides, cwd=work, env=env)
    assert "robust_acc" in proc.stdout and "top1" in proc.stdout
    [run_dir] = (tmp_path / "results").iterdir()
    assert (run_dir / "done").is_file() and (run_dir / "metrics.parquet").is_file()
    script = Path(python).parent / "robustart"
    if not script.exists():  # pip --target leaves console scripts in <target>/bin
        script = site / "bin" / "robustart"
    assert "robustart: robustness benchmark" in _sh(str(python), str(script), "--help", cwd=work, env=env).stdout
