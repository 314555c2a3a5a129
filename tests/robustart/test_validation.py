"""Input a user can get wrong is refused before any work, with one message naming it (in-process, through run)."""

from __future__ import annotations

import pytest

from robustart.errors import USER_ERROR, UserError
from robustart.run import run
from tests.conftest import compose_config, run_cli, run_dirs

BASE = ["model=small_cnn", "noise=pgd_linf", "evaluation.max_samples=8"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["+model.foo=1"], "unknown option model.foo; the options of model are: name, weights"),
        (["+model._target_=x"], "unknown option model._target_"),
        (["+evaluation.foo=1"], "unknown option evaluation.foo"),
        (["+foo=1"], "unknown option foo; the options of the config are: model, data, noise"),
        (["training=standard", "+training.adversarial.bogus=1"], "unknown option training.adversarial.bogus"),
        (["+noise.foo=2"], "noise 'pgd_linf' has no option 'foo'; its options: eps, steps"),
        (["noise=quickstart", "+noise.members.imagenet_c.foo=1"], "noise 'imagenet_c' has no option 'foo'"),
        (["noise=quickstart", "+noise.foo=1"], "unknown option noise.foo of noise suite 'quickstart'"),
        (["paths.results_dir=/proc/robustart-results"], "paths.results_dir=/proc/robustart-results cannot be written"),
    ],
)
def test_bad_config_is_refused_before_work(overrides, message, workspace):
    results, _ = workspace
    with pytest.raises(UserError, match=message.replace(".", r"\.")):
        run(compose_config([*BASE, *overrides]))
    assert run_dirs(results) == []


def test_weights_that_are_no_checkpoint(tmp_path, workspace):
    junk = tmp_path / "weights.pth"
    junk.write_bytes(b"\x80\x02not a pickle at all" * 10)
    header = tmp_path / "weights.safetensors"
    header.write_text("{}")
    for path in (junk, header):
        with pytest.raises(UserError, match=f"{path} is not a checkpoint: neither a safetensors file nor a state"):
            run(compose_config([*BASE, f"model.weights={path}"]))


@pytest.mark.cli
def test_unwritable_hydra_folder_exits_2_with_one_message(workspace):
    proc = run_cli(*BASE, "hydra.run.dir=/proc/robustart-run")
    assert proc.returncode == USER_ERROR
    assert proc.stderr.strip() == (
        "error: hydra.run.dir=/proc/robustart-run cannot be written (No such file or directory); "
        "choose a writable folder"
    )
