"""Training: the loop learns, the schedule ends where it should, checkpoints round-trip."""

from __future__ import annotations

import json

import pytest
import torch

from robustart import model_zoo
from robustart.data import TensorDataset
from robustart.training import find_checkpoint, fit, save_checkpoint


def _toy_data(n=256):
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (n,), generator=g)
    images = torch.randint(0, 100, (n, 1, 28, 28), generator=g, dtype=torch.uint8)
    images[labels == 1, :, :14] += 120  # class 1 is bright on top
    return TensorDataset(images, labels)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_fit_learns_a_separable_task(optimizer):
    torch.manual_seed(0)
    model = model_zoo.create_model("small_cnn", num_classes=2)
    lr = 0.05 if optimizer == "sgd" else 3e-3
    metrics = fit(model, _toy_data(), epochs=3, batch_size=32, optimizer=optimizer, lr=lr, label_smoothing=0.1)
    assert metrics["steps"] == 24 and metrics["train_acc"] > 0.9
    assert not model.training


def test_fit_is_deterministic_and_two_steps_run():
    results = []
    for _ in range(2):
        torch.manual_seed(0)
        model = model_zoo.create_model("small_cnn", num_classes=2)
        fit(model, _toy_data(64), epochs=2, batch_size=32, seed=3)
        results.append(torch.cat([p.flatten() for p in model.parameters()]))
    assert torch.equal(results[0], results[1])


def test_bad_recipe_values():
    model = model_zoo.create_model("small_cnn", num_classes=2)
    with pytest.raises(ValueError, match="optimizer"):
        fit(model, _toy_data(64), optimizer="lion")
    with pytest.raises(ValueError, match="smaller than one batch"):
        fit(model, _toy_data(8), batch_size=32)


def test_checkpoint_round_trip(tmp_path):
    model = model_zoo.create_model("small_cnn")
    path = save_checkpoint(tmp_path / "ck", model.net, {"config_hash": "abc", "epochs": 1})
    card = find_checkpoint(tmp_path / "ck")
    assert card["config_hash"] == "abc" and len(card["sha256"]) == 64 and card["path"] == str(path)
    loaded = model_zoo.create_model("small_cnn", weights=card["path"], sha256=card["sha256"])
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert json.loads((tmp_path / "ck" / "checkpoint.json").read_text())["weights"] == "model.safetensors"
    assert find_checkpoint(tmp_path / "none") is None
