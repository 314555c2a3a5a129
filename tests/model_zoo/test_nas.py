"""The NAS search space: subnet ids, the weight-sharing supernet, its zoo entries and its training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from robustart import model_zoo
from robustart.data import TensorDataset
from robustart.model_zoo import nas
from robustart.model_zoo.nas import GENE_NAMES, Genes, SubNet, SuperNet, decode, encode, extract_subnet, recalibrate_bn
from robustart.training import fit, save_checkpoint
from robustart.training.supernet import fit_supernet, sandwich_loss

# ------------------------------------------------------------------------------------------------ helpers


def _randomise_batch_norm(module: nn.Module, seed: int = 0) -> None:
    """Give every batch norm random scales, shifts and statistics (fresh ones are 1/0, and the zero-initialised
    scales of residual blocks would hide those blocks from any comparison)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.2)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)


def _some_genes(n: int = 2, seed: int = 1) -> list[Genes]:
    return [Genes.smallest(), Genes.largest(), *(decode(i) for i in nas.sample(n, seed=seed))]


def _toy_data(n: int = 16, chans: int = 1, size: int = 28) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, chans, size, size), generator=g, dtype=torch.uint8)
    return TensorDataset(images, torch.randint(0, 10, (n,), generator=g))


def _params(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


# ------------------------------------------------------------------------------------------------ the space


def test_space_size_and_its_two_ends():
    assert nas.num_subnets() == 3 * (3 * 3 * 3 * 2) ** 5 >= 1200
    smallest, largest = decode(nas.smallest_id()), decode(nas.largest_id())
    assert nas.smallest_id() == 0 and nas.largest_id() == nas.num_subnets() - 1
    assert smallest == Genes.smallest() and largest == Genes.largest()
    assert smallest.depth == (2,) * 5 and smallest.kernel == (3,) * 5 and smallest.expand == (3,) * 5
    assert smallest.width == (0.75,) * 5 and smallest.resolution == 0
    assert largest.depth == (4,) * 5 and largest.kernel == (7,) * 5 and largest.expand == (6,) * 5
    assert largest.width == (1.0,) * 5 and largest.resolution == 2
    assert nas.resolutions(28) == (24, 28, 32) and nas.resolutions(224) == (192, 224, 256)
    assert largest.channels(28) == (16, 24, 32, 48, 64) and largest.channels(224) == (24, 40, 80, 112, 160)


def test_ids_round_trip_and_name_distinct_architectures():
    ids = [0, 1, 2, nas.largest_id() - 1, nas.largest_id(), *nas.sample(2000, seed=3)]
    genes = [decode(i) for i in ids]
    assert [encode(g) for g in genes] == ids  # encode is decode's inverse: no two ids share genes
    assert len(set(genes)) == len(set(ids)) == len(ids)
    assert all(decode(i) == g and hash(decode(i)) == hash(g) for i, g in zip(ids[:50], genes))  # deterministic
    # the last digit is the last stage's width, the first the resolution (the documented order)
    assert decode(1).width == (0.75,) * 4 + (1.0,) and decode(1).depth == (2,) * 5
    assert decode(nas.num_subnets() // 3).resolution == 1 and decode(nas.num_subnets() // 3 - 1).resolution == 0


@pytest.mark.parametrize("bad", [-1, nas.num_subnets(), 10**12, True, False, 1.0, np.float64(2), "3", None])
def test_bad_ids_are_refused_with_the_valid_range(bad):
    with pytest.raises(ValueError, match=rf"subnet id must be an integer in \[0, {nas.largest_id()}\]"):
        decode(bad)


def test_numpy_integer_ids_are_accepted():
    assert decode(np.int64(5)) == decode(5)


def test_sample_is_deterministic_distinct_and_in_range():
    a, b = nas.sample(500, seed=7), nas.sample(500, seed=7)
    assert a == b and len(set(a)) == 500 and all(type(i) is int and 0 <= i < nas.num_subnets() for i in a)
    assert nas.sample(500, seed=8) != a
    assert nas.sample(0, seed=0) == []
    with pytest.raises(ValueError, match="n must be"):
        nas.sample(-1)


def test_genes_as_dict_gives_the_result_columns():
    genes = Genes(depth=(2, 3, 4, 2, 3), kernel=(3, 5, 7, 3, 5), expand=(3, 4, 6, 3, 4), width=(1, 0.75, 1, 1, 0.75),
                  resolution=1)  # fmt: skip
    row = genes.as_dict(28)
    assert tuple(row) == GENE_NAMES and all(type(v) is int for v in row.values())
    assert row["width_1"] == 16 and row["width_2"] == 20 and row["width_5"] == 48  # 0.75 x 24 rounds to 20
    assert row["resolution"] == 28 and row["total_depth"] == 14 and row["last_depth"] == 3
    assert row["total_kernel"] == 2 * 3 + 3 * 5 + 4 * 7 + 2 * 3 + 3 * 5
    assert genes.as_dict(224)["resolution"] == 224 and genes.as_dict(224)["width_5"] == 120
    assert encode(genes) == encode(Genes(**{**genes.__dict__, "depth": list(genes.depth)}))  # lists are fine


@pytest.mark.parametrize(
    "changes",
    [{"depth": (1, 2, 2, 2, 2)}, {"kernel": (3, 3, 3, 3)}, {"expand": (3, 3, 3, 3, 5)}, {"width": (0.5,) * 5},
     {"resolution": 3}, {"resolution": True}],
)  # fmt: skip
def test_invalid_genes_are_refused(changes):
    with pytest.raises(ValueError, match="genes"):
        Genes(**{**Genes.smallest().__dict__, **changes})


@pytest.mark.parametrize("backbone", [nas.SMALL, nas.IMAGENET])
def test_every_width_choice_gives_its_own_channel_count(backbone):
    for stage in range(nas.NUM_STAGES):
        channels = [backbone.stage_channels(w, stage) for w in nas.WIDTHS]
        assert len(set(channels)) == len(channels) and all(c % backbone.divisor == 0 for c in channels)
    assert len({backbone.head_width(w) for w in nas.WIDTHS}) == len(nas.WIDTHS)


def test_small_inputs_end_at_7x7_and_imagenet_ones_downsample_by_32():
    cases = ((28, decode(nas.num_subnets() // 3), 28, 7), (224, Genes.largest(), 256, 8))
    for img_size, genes, resolution, expected in cases:
        assert genes.resolution_px(img_size) == resolution
        with torch.device("meta"):
            net = SubNet(genes, in_chans=1, img_size=img_size).eval()
            features = net.first(net.stem(torch.empty(1, 1, resolution, resolution)))
            for stage in net.stages:
                features = stage(features)
        assert features.shape[-2:] == (expected, expected)


# ------------------------------------------------------------------------------------------------ the supernet


@pytest.mark.parametrize(("in_chans", "img_size"), [(1, 28), (3, 32)])
def test_supernet_slices_compute_the_standalone_subnets(in_chans, img_size, tmp_path):
    torch.manual_seed(0)
    supernet = SuperNet(num_classes=10, in_chans=in_chans, img_size=img_size)
    _randomise_batch_norm(supernet)
    supernet.eval()
    x = torch.rand(2, in_chans, img_size, img_size)
    for genes in _some_genes(n=2 if in_chans == 1 else 1):
        supernet.set_active(genes)
        subnet = extract_subnet(supernet, genes)
        layers_with_weights = [m for m in subnet.modules() if list(m.parameters(recurse=False))]
        assert all(type(m) in (nn.Conv2d, nn.BatchNorm2d, nn.Linear) for m in layers_with_weights)
        assert not subnet.training
        fresh = SubNet(genes, num_classes=10, in_chans=in_chans, img_size=img_size)
        assert {k: v.shape for k, v in fresh.state_dict().items()} == {
            k: v.shape for k, v in subnet.state_dict().items()
        }
        torch.save(subnet.state_dict(), tmp_path / "subnet.pt")
        fresh.load_state_dict(torch.load(tmp_path / "subnet.pt"), strict=True)
        fresh.eval()
        with torch.no_grad():
            expected = supernet(x)
            assert torch.allclose(subnet(x), expected, rtol=1e-5, atol=1e-6)
            assert torch.allclose(fresh(x), expected, rtol=1e-5, atol=1e-6)
            # an input at another size is resized to the subnet's resolution inside forward
            other = torch.nn.functional.interpolate(x, size=subnet.resolution, mode="bilinear", align_corners=False)
            assert torch.allclose(subnet(other), expected, rtol=1e-5, atol=1e-6)


def test_extract_subnet_copies_and_leaves_the_supernet_alone():
    torch.manual_seed(0)
    supernet = SuperNet()
    before = _params(supernet).clone()
    subnet = extract_subnet(supernet, Genes.smallest())
    with torch.no_grad():
        for p in subnet.parameters():
            p.add_(1.0)
    assert torch.equal(_params(supernet), before) and supernet.active == Genes.largest()
    assert extract_subnet(supernet).genes == Genes.largest()  # default: the active subnet


def test_the_largest_subnet_uses_every_supernet_weight():
    largest = model_zoo.get_metadata("nas_subnet")
    supernet = model_zoo.get_metadata("nas_supernet")
    assert supernet.params == largest.params and supernet.flops == largest.flops


def test_batch_norm_in_training_mode_updates_only_the_active_channels():
    torch.manual_seed(0)
    supernet = SuperNet().train()
    supernet.set_active(Genes.smallest())
    bn = supernet.stages[4][0].expand.bn  # 36 input channels x expand 3 = 108 of its 48 x 6 = 288 active
    seen = []
    bn.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].detach()))
    before_mean, before_var = bn.running_mean.clone(), bn.running_var.clone()
    supernet(torch.rand(8, 1, 28, 28))
    (x,) = seen
    c = x.shape[1]
    assert c < bn.num_features and bn.num_batches_tracked.item() == 1
    reference = nn.BatchNorm2d(c).train()
    reference(x)
    assert torch.allclose(bn.running_mean[:c], reference.running_mean, atol=1e-6)
    assert torch.allclose(bn.running_var[:c], reference.running_var, atol=1e-6)
    assert torch.equal(bn.running_mean[c:], before_mean[c:]) and torch.equal(bn.running_var[c:], before_var[c:])
    assert not torch.equal(bn.running_mean[:c], before_mean[:c])


def test_recalibrate_bn_estimates_the_statistics_of_the_data():
    torch.manual_seed(0)
    genes = decode(nas.sample(1, seed=5)[0])
    subnet = SubNet(genes, img_size=28)
    _randomise_batch_norm(subnet)
    x = torch.rand(64, 1, subnet.resolution, subnet.resolution)
    stale = subnet.stem.bn.running_mean.clone()
    used = recalibrate_bn(subnet, [x, (x, "labels are ignored")], num_batches=1)
    assert used == 1 and not subnet.training and subnet.stem.bn.momentum == 0.1
    with torch.no_grad():
        stem_out = subnet.stem.conv(x)
        assert not torch.allclose(subnet.stem.bn.running_mean, stale)
        assert torch.allclose(subnet.stem.bn.running_mean, stem_out.mean(dim=(0, 2, 3)), atol=1e-5)
        assert torch.allclose(subnet.stem.bn.running_var, stem_out.var(dim=(0, 2, 3)), rtol=1e-4)
        # estimated on one batch, eval mode normalises that batch as training mode's batch statistics do
        eval_out = subnet(x)
        train_out = subnet.train()(x)
    # (up to the unbiased variance the running statistics keep: a factor 1 + 1/n at every layer)
    assert (eval_out - train_out).abs().max() < 0.02 * train_out.abs().max()
    with pytest.raises(ValueError, match="no batch"):
        recalibrate_bn(subnet, [])


@pytest.mark.fidelity
def test_recalibrate_bn_on_the_supernet_matches_the_extracted_subnet():
    torch.manual_seed(0)
    model = model_zoo.create_model("nas_supernet")
    _randomise_batch_norm(model)
    genes = decode(nas.sample(1, seed=9)[0])
    model.net.set_active(genes)
    batches = [torch.rand(32, 1, 28, 28) for _ in range(2)]
    subnet = model_zoo.NormalizedModel(extract_subnet(model.net, genes), model.metadata)
    recalibrate_bn(model, batches)
    recalibrate_bn(subnet, batches)
    with torch.no_grad():
        assert torch.allclose(model(batches[0]), subnet(batches[0]), rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------------ the zoo


def test_zoo_entries_and_metadata():
    assert {"nas_subnet", "nas_supernet"} <= set(model_zoo.list_models(family="nas"))
    small, large = model_zoo.get_metadata("nas_subnet", subnet=0), model_zoo.get_metadata("nas_subnet")
    assert small.params < large.params and small.flops < large.flops
    assert small.input_size == (1, 24, 24) and large.input_size == (1, 32, 32)
    assert small.genes == {**Genes.smallest().as_dict(28), "subnet": 0}
    assert large.genes["subnet"] == nas.largest_id() and set(large.genes) == {*GENE_NAMES, "subnet"}
    assert small.family == "nas" and small.architecture == "robustart.nas.SubNet" and small.mean == (0.2860,)
    supernet = model_zoo.get_metadata("nas_supernet")
    assert supernet.genes is None and supernet.architecture == "robustart.nas.SuperNet"
    assert supernet.input_size == (1, 28, 28)
    rgb = model_zoo.get_metadata("nas_subnet", subnet=5, in_chans=3, img_size=224, num_classes=1000)
    assert rgb.input_size == (3, 192, 192) and rgb.crop_pct == 0.875 and rgb.mean == (0.485, 0.456, 0.406)
    assert rgb.flops > 10 * small.flops


def test_zoo_builds_subnets_and_refuses_bad_ids():
    model = model_zoo.create_model("nas_subnet", subnet=12345)
    assert isinstance(model.net, SubNet) and model.net.genes == decode(12345)
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    for bad in (-1, nas.num_subnets()):
        with pytest.raises(ValueError, match=r"subnet id must be an integer in \[0, "):
            model_zoo.create_model("nas_subnet", subnet=bad)


def test_a_subnet_is_cut_from_a_supernet_checkpoint(tmp_path):
    torch.manual_seed(0)
    supernet = model_zoo.create_model("nas_supernet")
    _randomise_batch_norm(supernet)
    folder = tmp_path / "supernet"
    save_checkpoint(folder, supernet.net, {"config_hash": "abc", "entry": "nas_supernet"})
    subnet_id = nas.sample(1, seed=11)[0]
    cut = model_zoo.create_model("nas_subnet", subnet=subnet_id, weights=str(folder))
    assert isinstance(cut.net, SubNet) and cut.metadata.genes["subnet"] == subnet_id
    expected = extract_subnet(supernet.net, decode(subnet_id)).eval()
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(cut(x), model_zoo.NormalizedModel(expected, cut.metadata)(x), atol=1e-6)


# ------------------------------------------------------------------------------------------------ training


def test_fit_takes_a_custom_training_step():
    calls = []

    def loss_fn(model, images, labels, criterion):
        calls.append(len(images))
        logits = model(images)
        return criterion(logits, labels), logits

    model = model_zoo.create_model("small_cnn")
    metrics = fit(model, _toy_data(32), epochs=1, batch_size=8, loss_fn=loss_fn)
    assert calls == [8, 8, 8, 8] and metrics["steps"] == 4


def test_sandwich_step_trains_largest_smallest_and_random_subnets():
    torch.manual_seed(0)
    model = model_zoo.create_model("nas_supernet").train()
    active = []
    original = model.net.set_active
    model.net.set_active = lambda genes: (active.append(genes), original(genes))
    data = _toy_data(8)
    images, labels = torch.stack([data[i][0] for i in range(8)]), data.labels
    loss, logits = sandwich_loss(num_random=2, seed=0)(model, images, labels, nn.CrossEntropyLoss())
    assert active[:2] == [Genes.largest(), Genes.smallest()] and len(active) == 5 and active[-1] == Genes.largest()
    assert loss.dim() == 0 and logits.shape == (8, 10) and loss.requires_grad
    active.clear()
    sandwich_loss(num_random=2, seed=0)(model, images, labels, nn.CrossEntropyLoss())
    again = list(active)
    active.clear()
    sandwich_loss(num_random=2, seed=1)(model, images, labels, nn.CrossEntropyLoss())
    assert again[2:4] != active[2:4]  # the seed picks the random subnets


@pytest.mark.slow  # two sandwich trainings, about 30 s on 2 cores
def test_fit_supernet_runs_changes_the_weights_and_is_deterministic():
    results = []
    for _ in range(2):
        torch.manual_seed(0)
        model = model_zoo.create_model("nas_supernet")
        before = _params(model).clone()
        metrics = fit_supernet(model, _toy_data(16), epochs=1, batch_size=8, lr=0.05, seed=3, num_random=1)
        assert metrics["steps"] == 2 and not model.training and model.net.active == Genes.largest()
        assert all(p.is_contiguous() for p in model.parameters())  # channels-last only while training
        results.append(_params(model))
        assert not torch.equal(results[-1], before)
    assert torch.equal(results[0], results[1])
    with pytest.raises(TypeError, match="SuperNet"):
        fit_supernet(model_zoo.create_model("small_cnn"), _toy_data(16), epochs=1, batch_size=8)


# ------------------------------------------------------------------------------------------------ end to end


@pytest.mark.slow
def test_a_supernet_trained_on_fashion_mnist_ranks_its_subnets(tmp_path):
    """Train the supernet briefly on real Fashion-MNIST, then cut, recalibrate and score ten subnets."""
    from robustart.data import load_fashion_mnist

    train, _ = load_fashion_mnist(None, tmp_path / "cache", "train")
    test, _ = load_fashion_mnist(None, tmp_path / "cache", "test")
    torch.manual_seed(0)
    model = model_zoo.create_model("nas_supernet")
    fit_supernet(model, train.subset(4096), epochs=1, batch_size=64, lr=0.1, warmup_epochs=0.05, seed=0)

    images, labels = test.images[:1000].float().div(255), test.labels[:1000]
    calibration = [train.images[i : i + 128].float().div(255) for i in range(4096, 4096 + 3 * 128, 128)]
    accuracies = {}
    for subnet_id in [nas.smallest_id(), nas.largest_id(), *nas.sample(8, seed=0)]:
        meta = model_zoo.get_metadata("nas_subnet", subnet=subnet_id)
        subnet = model_zoo.NormalizedModel(extract_subnet(model.net, decode(subnet_id)), meta)
        recalibrate_bn(subnet, calibration)
        with torch.no_grad():
            accuracies[subnet_id] = (subnet(images).argmax(1) == labels).float().mean().item()
    values = list(accuracies.values())
    assert min(values) > 0.5, accuracies  # every subnet learnt (chance is 10%)
    assert len(set(values)) > 1, accuracies
    assert accuracies[nas.largest_id()] >= accuracies[nas.smallest_id()], accuracies
