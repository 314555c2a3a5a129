"""``robustart.evaluate`` on a model of one's own: a module defined here, trained briefly on real Fashion-MNIST."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

import robustart
from robustart.errors import UserError


class TinyNet(nn.Module):
    """Not a zoo model: a researcher's own class, taking grey floats in [0, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Linear(8 * 14 * 14, 10)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """TinyNet after one pass over 6,000 training images, and 96 test images as a ``TensorDataset``."""
    from robustart.data import load_fashion_mnist

    cache = tmp_path_factory.mktemp("cache")
    train, _ = load_fashion_mnist(None, cache, "train")
    test, _ = load_fashion_mnist(None, cache, "test")
    torch.manual_seed(0)
    net = TinyNet()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    for start in range(0, 6000, 64):
        x, y = train.images[start : start + 64].float() / 255, train.labels[start : start + 64]
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    data = torch.utils.data.TensorDataset(test.images[:96], test.labels[:96])  # uint8 images, as stored
    return net.eval(), data


def direct_accuracy(net, data) -> float:
    images, labels = data.tensors
    with torch.no_grad():
        return int((net(images.float() / 255).argmax(1) == labels).sum()) / len(labels)


def test_evaluate_own_module_clean_and_pgd(trained):
    net, data = trained
    results = robustart.evaluate(net, data, {"pgd_linf": {"eps": ["8/255"], "steps": 3}}, batch_size=32)
    top1 = results.value("top1", noise="clean")
    assert top1 == pytest.approx(direct_accuracy(net, data), abs=1e-12)
    assert top1 > 0.5  # trained, not chance
    robust = results.metrics.query("metric == 'robust_acc'")
    assert len(robust) == 1 and robust["eps"].item() == pytest.approx(8 / 255)
    assert robust["value"].item() < top1
    assert results.run_dir is None
    preds = results.predictions
    assert len(preds[preds["noise"] == "clean"]) == 96 and sorted(preds["sample_id"].unique()) == list(range(96))
    meta = results.manifest["model"]
    assert meta["name"] == "tinynet" and meta["family"] == "cnn" and meta["num_classes"] == 10
    assert meta["weights"].startswith("module:") and meta["params"] == sum(p.numel() for p in net.parameters())


def test_evaluate_writes_a_run_that_compare_reads(trained, tmp_path, capsys):
    from robustart import compare, store

    net, data = trained
    first = robustart.evaluate(net, data, "clean", results_dir=tmp_path / "results", name="tiny")
    assert first.run_dir is not None and store.is_done(first.run_dir) and not first.cached
    again = robustart.evaluate(net, data, "clean", results_dir=tmp_path / "results", name="tiny")
    assert again.cached and again.run_dir == first.run_dir
    assert again.value("top1") == first.value("top1")
    assert compare.main([str(tmp_path / "results")]) == 0
    assert "tiny" in capsys.readouterr().out


def test_evaluate_forms_of_noise(trained):
    from robustart.noise import create_noise

    net, data = trained
    by_name = robustart.evaluate(net, data, ["imagenet_c"], max_samples=16, batch_size=16)
    as_object = robustart.evaluate(
        net, data, create_noise("imagenet_c", corruptions=["contrast"], severities=[5], params="cifar"), max_samples=16
    )
    assert set(by_name.metrics.query("metric == 'acc'")["severity"]) == {1, 2, 3, 4, 5}
    assert as_object.metrics.query("metric == 'acc'")["condition"].tolist() == ["contrast"]


def test_evaluate_resizes_for_a_given_input_size(trained):
    net, data = trained

    class Upsampled(nn.Module):  # takes 56 px images: robustart resizes the 28 px data inside the model
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            assert x.shape[-1] == 56
            return self.net(nn.functional.avg_pool2d(x, 2))

    results = robustart.evaluate(Upsampled(), data, "clean", input_size=(1, 56, 56), max_samples=32)
    assert tuple(results.manifest["model"]["input_size"]) == (1, 56, 56)
    assert results.value("top1") > 0.5  # the same trained weights, seen through the resize and pooling


@pytest.mark.parametrize(
    ("noise", "options", "message"),
    [
        ("fog_and_rain", {}, "unknown noise 'fog_and_rain'"),
        ({"pgd_linf": {"stepz": 3}}, {}, "stepz"),
        ("clean", {"batchsize": 3}, "takes no option(s) ['batchsize']"),
        ("clean", {"results_dir": "/proc/robustart-results"}, "cannot be written"),
        ("clean", {"family": "rnn"}, "family must be one of"),
        ("clean", {"num_classes": 7}, "num_classes=7 but the model returns 10"),
    ],
)
def test_evaluate_refuses_bad_input(trained, noise, options, message):
    net, data = trained
    with pytest.raises(UserError, match=re.escape(message)):
        robustart.evaluate(net, data, noise, max_samples=8, **options)


def test_evaluate_refuses_data_the_model_cannot_take(trained):
    net, _ = trained
    colour = torch.utils.data.TensorDataset(torch.rand(4, 3, 28, 28), torch.zeros(4, dtype=torch.long))
    with pytest.raises(UserError, match="fails on one data image"):
        robustart.evaluate(net, colour)
