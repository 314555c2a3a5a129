"""Mixed precision and channels-last evaluation (``evaluation.amp``, ``evaluation.channels_last``) on the CPU."""

from __future__ import annotations

import pytest
import torch

from robustart import model_zoo
from robustart.evaluation.precision import Precision, amp_dtype, check_precision, with_precision
from robustart.run import UserError, identity, run
from tests.conftest import cifar10_samples, compose_config


def test_amp_values():
    assert [amp_dtype(v) for v in (None, False, "off", "false", "False")] == [None] * 5
    assert amp_dtype("bf16") is torch.bfloat16 and amp_dtype("FP16") is torch.float16
    with pytest.raises(ValueError, match="use null \\(float32\\), bf16 or fp16"):
        amp_dtype("fp8")
    check_precision("bf16", "cpu")
    with pytest.raises(ValueError, match=r"fp16 needs a CUDA device.*use evaluation\.amp=bf16 on the CPU"):
        check_precision("fp16", "cpu")


def test_both_off_leaves_the_model_alone():
    model = torch.nn.Linear(3, 2)
    assert with_precision(model) is model and with_precision(model, "off", False) is model
    assert isinstance(with_precision(model, channels_last=True), Precision)


def test_channels_last_gives_the_same_predictions_on_a_real_model():
    """pyautoattack's CIFAR-10 ResNet-18 on foolbox's real CIFAR-10 images: the same logits (up to summation
    order) and the same predictions, and the weights really are in channels-last layout."""
    model = model_zoo.create_model("cifar_resnet18", weights="pretrained")
    x, y = cifar10_samples()
    with torch.inference_mode():
        reference = model(x)
        wrapped = with_precision(model, channels_last=True)
        logits = wrapped(x)
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert wrapped.metadata is model.metadata
    assert torch.equal(logits.argmax(1), reference.argmax(1)) and (logits.argmax(1) == y).all()
    torch.testing.assert_close(logits, reference, rtol=1e-4, atol=1e-4)


def test_bf16_runs_on_the_cpu_with_float32_logits_and_gradients(fashion_subset_model):
    model, x, y = fashion_subset_model
    with torch.inference_mode():
        reference = model(x)
        logits = with_precision(model, "bf16")(x)
    assert logits.dtype is torch.float32
    assert not torch.equal(logits, reference)  # really computed in bfloat16
    agree = (logits.argmax(1) == reference.argmax(1)).float().mean().item()
    assert agree >= 0.95, agree
    images = x[:8].clone().requires_grad_(True)  # attacks differentiate through the wrapper
    loss = torch.nn.functional.cross_entropy(with_precision(model, "bf16", True)(images), y[:8])
    (grad,) = torch.autograd.grad(loss, images)
    assert grad.dtype is torch.float32 and grad.abs().sum() > 0


def test_amp_is_part_of_the_run_identity_and_channels_last_is_not():
    base = compose_config(["experiment=quickstart"])
    assert "amp" not in identity(base)["evaluation"]
    off = compose_config(["experiment=quickstart", "evaluation.amp=false"])
    layout = compose_config(["experiment=quickstart", "evaluation.channels_last=true"])
    bf16 = compose_config(["experiment=quickstart", "evaluation.amp=bf16"])
    assert identity(base) == identity(off) == identity(layout)
    assert identity(bf16)["evaluation"]["amp"] == "bf16"


@pytest.mark.slow
def test_an_attack_run_in_bf16_and_channels_last(workspace, tmp_path, fashion_subset_model):
    """FGSM through the run with both options on: the run completes and its numbers match float32's closely."""
    from safetensors.torch import save_file

    model, _, _ = fashion_subset_model
    weights = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in model.net.state_dict().items()}, str(weights))
    base = ["model=small_cnn", f"model.weights={weights}", "data=fashion_mnist", "noise=fgsm",
            "evaluation.max_samples=64", "evaluation.batch_size=32"]  # fmt: skip
    plain = run(compose_config(base))
    mixed = run(compose_config([*base, "evaluation.amp=bf16", "evaluation.channels_last=true"]))
    assert plain.run_dir != mixed.run_dir
    a, b = (r.metrics.fillna({"eps": 0}).set_index(["metric", "eps"])["value"] for r in (plain, mixed))
    assert set(a.index) == set(b.index) and len(a) == 8
    assert (a - b).abs().max() <= 3 / 64  # a few images near the decision boundary may move


def test_an_unknown_precision_is_refused(workspace):  # fp16 on the CPU: tests/test_user_errors.py
    with pytest.raises(UserError, match="is not a precision"):
        run(compose_config(["model=small_cnn", "noise=clean", "data=fashion_mnist", "evaluation.amp=half"]))
