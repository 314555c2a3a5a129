"""Every message a user's command line can end with (exit status 2), checked in-process as one table: the config is
composed as the command line composes it and run through :func:`robustart.run.run`. Composition errors (an unknown
name, a misspelt key, a wrong type) come from Hydra; every other refusal is a :class:`UserError` raised before any
result is written. ``tests/robustart/test_cli.py`` checks, in a subprocess, that both kinds end in exit status 2
with one message and no traceback."""

from __future__ import annotations

import pytest
import torch
from hydra.errors import HydraException
from safetensors.torch import save_file

from robustart.errors import UserError
from robustart.run import run
from tests.conftest import FAST, compose_config, write_photo_folder, write_released_imagenet_c

CARD = ["model=vit_b", "noise=imagenet_c", "data=imagenet"]
SMALL = ["model=small_cnn", "noise=clean", "data=fashion_mnist", "evaluation.max_samples=16"]
QUICK = ["experiment=quickstart", "training.epochs=0.05", "evaluation.max_samples=16"]
SUPERNET = ["model=nas_subnet", "training=supernet", "training.epochs=0.001", "training.batch_size=32", "noise=fgsm",
            "noise.eps=[0.1]", "evaluation.max_samples=8"]  # fmt: skip
RELEASED = ["model=resnet18", "model.weights=random", "noise=imagenet_c", "data=imagenet_c", "data.root={released}"]


def _small_cnn_weights(path, num_classes=10):
    from robustart.model_zoo import create_model

    net = create_model("small_cnn", num_classes=num_classes).net
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The folders and weight files the table's overrides name (``{name}`` placeholders)."""
    tmp = tmp_path_factory.mktemp("inputs")
    (tmp / "empty").mkdir()
    (tmp / "wrong" / "cats").mkdir(parents=True)
    (tmp / "no_images" / "n01440764").mkdir(parents=True)
    (tmp / "not_fashion").mkdir()
    torch.save({"not": "weights"}, tmp / "junk.pt")
    return {
        "nope": tmp / "nope",
        "empty": tmp / "empty",
        "wrong": tmp / "wrong",
        "no_images": tmp / "no_images",
        "not_fashion": tmp / "not_fashion",
        "ten": _small_cnn_weights(tmp / "ten.safetensors"),
        "five": _small_cnn_weights(tmp / "five.safetensors", num_classes=5),
        "junk": tmp / "junk.pt",
        "missing": tmp / "missing.safetensors",
        "photos": write_photo_folder(tmp / "photos"),
        "released": write_released_imagenet_c(tmp / "ImageNet-C", tmp / "photos"),
    }


# (overrides, fragments of the one message): composition errors first, then what run() refuses
CASES = [
    (["model=resnet5"], ["Could not find 'model/resnet5'", "vit_b", "small_cnn"]),
    (["noise=imagenet_x"], ["Could not find 'noise/imagenet_x'", "pgd_linf"]),
    (["data=cifar"], ["Could not find 'data/cifar'", "fashion_mnist"]),
    ([*FAST, "evaluation.max_sample=3"], ["max_sample"]),
    ([*FAST, "noise.members.pgd_linf.stepz=3"], ["stepz"]),
    ([*FAST, "evaluation.batch_size=big"], ["batch_size"]),
    ([*FAST, "model.name=resnet5"], ["unknown model 'resnet5'", "small_cnn"]),
    ([*FAST, "noise.members.imagenet_c.severities=[0,1]"], ["severity must be an integer in 1..5"]),
    ([*FAST, "noise.members.imagenet_c.severities=[6]"], ["severity must be an integer in 1..5"]),
    ([*FAST, "noise.members.pgd_linf.eps=[-2/255]"], ["eps must be a finite number >= 0"]),
    ([*FAST, "evaluation.max_samples=0"], ["max_samples must be a positive number"]),
    ([*FAST, "noise.members.imagenet_c.corruptions=[fogg]"], ["unknown corruption 'fogg'"]),
    ([*FAST, "evaluation.if_locked=later"], ["evaluation.if_locked='later' is not valid", "wait, exit"]),
    (["noise=pgd_linf", "noise.eps=[-1]"], ["eps must be"]),
    (["noise=imagenet_c", "noise.severities=[7]"], ["severity"]),
    ([*FAST, "logger.name=tensorboard"], ["unknown logger 'tensorboard'"]),
    ([*FAST, "data.root={not_fashion}"], ["lacks the Fashion-MNIST files"]),
    (CARD, ["data.root=/path/to/imagenet/val"]),
    ([*CARD, "data.root={nope}"], ["does not exist"]),
    ([*CARD, "data.root={empty}"], ["has no class folders"]),
    ([*CARD, "data.root={wrong}"], ["not ImageNet-1k wnids"]),
    ([*CARD, "data.root={no_images}"], ["no images"]),
    ([*CARD, "data.root={photos}"], ["model.weights=", "HF_HUB_OFFLINE"]),  # pretrained weights, offline
    ([*SMALL, "model.weights={missing}"], ["not found"]),
    ([*SMALL, "model.weights={ten}", f"model.sha256={'0' * 64}"], ["sha256"]),
    ([*SMALL, "model.weights={five}"], ["has 5 classes but the model has 10"]),
    ([*SMALL, "model.weights={junk}"], ["state dict"]),
    (RELEASED, ["lacks", "noise.severities"]),  # the folder holds severities 1 and 3 only
    ([*RELEASED[:2], "noise=clean", *RELEASED[3:]], ["use it with noise=imagenet_c"]),
    ([*RELEASED[:3], "data=imagenet_c"], ["data.root=/path/to/ImageNet-C"]),
    # attacks
    ([*QUICK, "noise=square", "noise.norm=L1"], ["does not support norm 'L1'"]),
    ([*QUICK, "noise=pgd_l2", "noise.steps=0"], ["steps must be > 0"]),
    ([*QUICK, "noise=wcar", "noise.attacks=[fgsm,pgd_l2]"], ["must share one norm"]),
    ([*QUICK, "noise=deepfool", "noise.overshoot=-1"], ["overshoot must be >= 0"]),
    (
        [*QUICK, "noise=transfer", "noise.source=no_such_model"],
        ["unknown noise.source='no_such_model'", "cifar_resnet18"],
    ),
    # precision, training, NAS subnets
    ([*SMALL, "evaluation.device=cpu", "evaluation.amp=fp16"], ["evaluation.amp=fp16 needs a CUDA device"]),
    (["training=[standard,mixupp]", "noise=clean"], ["Could not load 'training/mixupp'"]),
    (["training=pgd_at", "training.adversarial.eps=3", "noise=clean"], ["Linf eps must be at most 1"]),
    ([*SUPERNET, "model.subnet=-1"], ["subnet"]),
    ([*SUPERNET, "model=small_cnn", "model.subnet=3", "training.sandwich_random=null"], ["does not take ['subnet']"]),
    (
        [*SUPERNET, "model=small_cnn", "training.sandwich_random=2"],
        ["trains a weight-sharing supernet for model=nas_subnet"],
    ),
]


@pytest.mark.parametrize(("overrides", "fragments"), CASES, ids=[" ".join(o[-2:]) for o, _ in CASES])
def test_bad_input_ends_with_one_message_and_no_result(overrides, fragments, files, workspace, monkeypatch):
    results, _ = workspace
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # as on a machine without internet: pretrained weights fail at once
    overrides = [o.format(**files) for o in overrides]
    with pytest.raises((UserError, HydraException)) as raised:
        run(compose_config(overrides))
    message = str(raised.value)
    if raised.value.__cause__ is not None:  # Hydra's type errors name the key in their cause, as the CLI prints
        message += f"\n{raised.value.__cause__}"
    for fragment in fragments:
        assert fragment in message, message[-2000:]
    assert not list(results.glob("*/done"))


def test_a_good_checkpoint_after_the_bad_ones_runs(files, workspace):
    results, _ = workspace
    result = run(compose_config([*SMALL, f"model.weights={files['ten']}"]))
    assert (result.run_dir / "done").is_file() and result.run_dir.parent == results
