"""Every zoo entry builds, runs forward and backward, and carries metadata; weights load safely."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file
from timm.models import get_pretrained_cfg

from robustart import model_zoo
from robustart.model_zoo.registry import get_entry
from robustart.model_zoo.weights import read_state_dict
from tests.conftest import REPO, torch_threads

NAMES = model_zoo.list_models()
CONF = REPO / "conf" / "model"

#: what each family must hold (nas_subnet / nas_supernet, the zoo's own search, may come on top)
EXPECTED = {
    "cnn": {
        "alexnet", *(f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn")),
        *(f"resnet{d}" for d in (18, 34, 50, 101, 152)), "resnext50_32x4d", "resnext101_32x8d",
        "wide_resnet50_2", "wide_resnet101_2", "densenet121", "densenet169", "densenet201",
        *(f"mobilenet_v2_{w}" for w in ("050", "075", "100", "140")), "mobilenet_v3_large_075",
        "mobilenet_v3_large_100", *(f"shufflenet_v2_x{w}" for w in ("0_5", "1_0", "1_5", "2_0")),
        *(f"regnetx_{f}" for f in ("400mf", "800mf", "1_6gf", "3_2gf", "6_4gf")),
        *(f"efficientnet_b{i}" for i in range(5)), "efficientnet_lite0", "repvgg_a0", "repvgg_b3",
        "convnext_tiny", "convnext_small", "convnext_base", "small_cnn", "small_resnet", "cifar_resnet18",
    },
    "transformer": {"vit_t", "vit_s", "vit_b", "vit_l", "deit_t", "deit_s", "deit_b", "swin_t", "swin_s", "swin_b",
                    "small_vit", "small_swin"},
    "mlp": {"mixer_b16", "mixer_l16", "resmlp_12", "resmlp_24", "small_mixer", "small_resmlp"},
    "nas": {"mnasnet", "fbnet", "spnasnet", *(f"hardcorenas_{v}" for v in "abcdef"),
            *(f"tinynet_{v}" for v in "abcde")},
}  # fmt: skip

# The forward/backward test runs every entry at 32 px with 10 classes; it is marked slow for the entries with
# more than SLOW_PARAMS parameters at 10 classes (their random initialisation alone takes a second or more) and
# for those that take over ~1.3 s on a 2-core CPU though smaller (DenseNet-169/201, EfficientNet-B3/B4:
# hundreds of small layers to build and count FLOPs of). The quick part still covers every family and every
# builder (timm, torchvision, small-input). The test checks that no unmarked entry crosses the threshold, so
# the set cannot go stale. Within a series that varies only width or depth, the quick part runs its smallest
# and largest quick member; the ones in between (SERIES_MIDDLE) run with the slow part, to keep the quick part
# well under a minute on a shared 2-core machine.
SLOW_PARAMS = 20_000_000
SERIES_MIDDLE = {
    "hardcorenas_b", "hardcorenas_c", "hardcorenas_d", "hardcorenas_e", "tinynet_b", "tinynet_c", "tinynet_d",
    "regnetx_800mf", "regnetx_1_6gf", "mobilenet_v2_075", "mobilenet_v2_100", "efficientnet_b1",
    "shufflenet_v2_x1_0", "shufflenet_v2_x1_5",
}  # fmt: skip
SLOW = SERIES_MIDDLE | {
    *(f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn")), "alexnet", "resnet34", "resnet50",
    "resnet101", "resnet152", "resnext50_32x4d", "resnext101_32x8d", "wide_resnet50_2", "wide_resnet101_2",
    "densenet169", "densenet201", "regnetx_6_4gf", "efficientnet_b3", "efficientnet_b4", "repvgg_b3",
    "convnext_tiny", "convnext_small", "convnext_base", "vit_s", "vit_b", "vit_l", "deit_s", "deit_b", "swin_t",
    "swin_s", "swin_b", "mixer_b16", "mixer_l16", "resmlp_24",
}  # fmt: skip


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Batches of two tiny images gain nothing from intra-op threads, and on a busy 2-core machine OpenMP's
    spin-waiting against other processes makes them 10-100x slower: run this module on one thread."""
    with torch_threads(1):
        yield


def architecture(name: str) -> str:
    """The entry's underlying architecture: what its table-built factory declares, else its metadata's."""
    factory = get_entry(name).factory
    return getattr(factory, "architecture", None) or model_zoo.get_metadata(name).architecture


def tiny_size(name: str) -> int:
    """32 px, or the entry's documented minimum where the architecture needs more (AlexNet: 63 px)."""
    return max(32, getattr(get_entry(name).factory, "min_img_size", 1))


def test_registry_has_each_family():
    for family, names in EXPECTED.items():
        assert names <= set(model_zoo.list_models(family=family)), family
    assert all(get_entry(n).description for n in NAMES)
    assert all(architecture(n) == model_zoo.get_metadata(n).architecture for n in ("vit_s", "alexnet", "small_vit"))
    assert model_zoo.list_models(family="nas") == sorted(n for n in NAMES if get_entry(n).family == "nas")
    with pytest.raises(ValueError, match="family must be one of"):
        model_zoo.list_models(family="rnn")


def test_every_entry_has_its_hydra_config():
    for name in NAMES:
        path = CONF / f"{name}.yaml"
        if name in ("nas_subnet", "nas_supernet") and not path.exists():
            continue  # the zoo's own search keeps its configs with it
        conf = OmegaConf.load(path)
        assert conf.name == name, path
        arch = architecture(name)
        if conf.weights == "pretrained":  # only where weights are published
            assert not arch.startswith("robustart."), path
            if not arch.startswith(("torchvision.", "pyautoattack.")):
                assert get_pretrained_cfg(arch).hf_hub_id, path
        else:
            assert conf.weights == "random", path


def test_duplicate_registration_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        model_zoo.register_model("small_cnn", family="cnn")(lambda **_: None)


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError, match=r"valid names: .*vit_b"):
        model_zoo.create_model("vit_z")


def test_sizes_an_architecture_cannot_take_are_refused():
    with pytest.raises(ValueError, match="at least 63 px"):
        model_zoo.create_model("alexnet", img_size=32)
    with pytest.raises(ValueError, match="multiple of 4"):
        model_zoo.create_model("small_vit", img_size=30)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in NAMES])
def test_model_forward_backward_and_metadata(name):
    size = tiny_size(name)
    model = model_zoo.create_model(name, num_classes=10, img_size=size).train()
    meta = model.metadata
    assert meta.name == name and meta.num_classes == 10 and meta.weights == "random"
    assert meta.params == sum(p.numel() for p in model.parameters()) and meta.flops > 0
    assert name in SLOW or meta.params <= SLOW_PARAMS, f"{name} has {meta.params} parameters: add it to SLOW"
    assert len(meta.mean) == len(meta.std) == meta.in_chans == meta.input_size[0]
    # a searched subnet's input resolution is one of its genes (a scale of img_size)
    side = meta.genes["resolution"] if meta.genes and "resolution" in meta.genes else size
    assert meta.input_size[1:] == (side, side)
    assert model_zoo.get_metadata(name, num_classes=10, img_size=size) == replace(meta, weights="random", sha256=None)
    x = torch.rand(2, *meta.input_size, requires_grad=True)
    out = model(x)
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_small_entries_default_to_fashion_mnist():
    for name in ("small_cnn", "small_resnet", "small_vit", "small_swin", "small_mixer", "small_resmlp"):
        meta = model_zoo.get_metadata(name)
        assert (meta.num_classes, meta.input_size, meta.mean, meta.std) == (10, (1, 28, 28), (0.2860,), (0.3530,))
        assert meta.params < 1_000_000, name
    rgb = model_zoo.get_metadata("small_vit", in_chans=3, img_size=32)
    assert rgb.input_size == (3, 32, 32) and len(rgb.mean) == 3


def test_img_size_reaches_timm_only_where_the_shape_depends_on_it():
    vit = model_zoo.create_model("vit_t", img_size=32)
    assert vit.net.patch_embed.img_size == (32, 32)  # rebuilt: 2x2 patches
    cnn = model_zoo.get_metadata("resnet18", img_size=32)
    assert cnn.input_size == (3, 32, 32) and cnn.params == model_zoo.get_metadata("resnet18").params


def test_torchvision_entries_describe_and_adapt():
    meta = model_zoo.get_metadata("shufflenet_v2_x1_0")
    assert meta.architecture == "torchvision.shufflenet_v2_x1_0" and meta.input_size == (3, 224, 224)
    assert (meta.crop_pct, meta.interpolation, meta.mean) == (0.875, "bilinear", (0.485, 0.456, 0.406))
    assert model_zoo.get_metadata("alexnet", in_chans=1, img_size=63).input_size == (1, 63, 63)
    grey = model_zoo.create_model("shufflenet_v2_x0_5", in_chans=1, num_classes=10, img_size=32)
    assert grey.metadata.input_size == (1, 32, 32) and grey.net.conv1[0].in_channels == 1
    assert grey(torch.rand(2, 1, 32, 32)).shape == (2, 10)


def test_normalisation_lives_inside_the_model():
    model = model_zoo.create_model("resnet18", num_classes=3)
    x = torch.rand(1, 3, 64, 64)
    mean = torch.tensor(model.metadata.mean).view(1, 3, 1, 1)
    std = torch.tensor(model.metadata.std).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(model(x), model.net((x - mean) / std))


def test_weights_file_round_trip_and_checks(tmp_path):
    model = model_zoo.create_model("small_cnn")
    state = {k: v.contiguous() for k, v in model.net.state_dict().items()}
    save_file(state, str(tmp_path / "w.safetensors"))
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "w.pth")
    x = torch.rand(3, 1, 28, 28)
    for file in ("w.safetensors", "w.pth"):
        loaded = model_zoo.create_model("small_cnn", weights=str(tmp_path / file))
        assert loaded.metadata.weights == f"file:{file}" and len(loaded.metadata.sha256) == 64
        with torch.no_grad():
            assert torch.equal(loaded(x), model(x))
    with pytest.raises(ValueError, match="sha256"):
        read_state_dict(tmp_path / "w.safetensors", sha256="ab" * 32)
    with pytest.raises(FileNotFoundError):
        model_zoo.create_model("small_cnn", weights=str(tmp_path / "none.safetensors"))
    with pytest.raises(ValueError, match="has 10 classes but the model has 4"):
        model_zoo.create_model("small_cnn", weights=str(tmp_path / "w.safetensors"), num_classes=4)
    with pytest.raises(ValueError, match="does not fit"):
        model_zoo.create_model("resnet18", weights=str(tmp_path / "w.safetensors"))


def test_pretrained_offline_fails_with_the_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))  # an empty cache
    with pytest.raises(FileNotFoundError, match=r"model\.weights="):
        model_zoo.create_model("vit_t", weights="pretrained")
    with pytest.raises(ValueError, match="no published pretrained weights"):
        model_zoo.create_model("small_cnn", weights="pretrained")


def test_pretrained_loads_from_the_local_hub_cache_offline(monkeypatch, tmp_path):
    """``weights=pretrained`` finds timm's hub file in the Hugging Face cache without the network."""
    import huggingface_hub.constants
    from timm.models import get_pretrained_cfg

    meta = model_zoo.get_metadata("vit_t")
    repo = get_pretrained_cfg(meta.architecture).hf_hub_id
    revision = "0" * 40
    cached_repo = tmp_path / f"models--{repo.replace('/', '--')}"
    snapshot = cached_repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (cached_repo / "refs").mkdir()
    (cached_repo / "refs" / "main").write_text(revision)
    torch.manual_seed(1)
    reference = model_zoo.create_model("vit_t")
    save_file({k: v.contiguous() for k, v in reference.net.state_dict().items()}, str(snapshot / "model.safetensors"))

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    loaded = model_zoo.create_model("vit_t", weights="pretrained")
    assert loaded.metadata.weights == f"timm:{meta.architecture}"
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(loaded(x), reference(x))


def _torch_hub_cache(monkeypatch, tmp_path, name: str) -> Path:
    """An empty torch hub cache under ``tmp_path``, offline; the file that ``name``'s weights go in."""
    from robustart.model_zoo._torchvision import cached_weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _, path = cached_weights(architecture(name))
    assert path.parent == tmp_path / "hub" / "checkpoints"
    return path


def test_torchvision_pretrained_offline_names_the_file_and_url(monkeypatch, tmp_path):
    path = _torch_hub_cache(monkeypatch, tmp_path, "shufflenet_v2_x0_5")
    url = "https://download.pytorch.org/models/shufflenetv2_x0.5-f707e7126e.pth"
    assert path.name == Path(url).name
    with pytest.raises(FileNotFoundError, match=rf"(?s)Download {re.escape(url)}.*{re.escape(str(path))}"):
        model_zoo.create_model("shufflenet_v2_x0_5", weights="pretrained")


def test_torchvision_pretrained_loads_from_the_torch_hub_cache(monkeypatch, tmp_path):
    path = _torch_hub_cache(monkeypatch, tmp_path, "shufflenet_v2_x0_5")
    torch.manual_seed(1)
    reference = model_zoo.create_model("shufflenet_v2_x0_5")
    path.parent.mkdir(parents=True)
    torch.save(reference.net.state_dict(), path)
    loaded = model_zoo.create_model("shufflenet_v2_x0_5", weights="pretrained")
    assert loaded.metadata.weights == "torchvision:ShuffleNet_V2_X0_5_Weights.IMAGENET1K_V1"
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded(x), reference(x))
    # another input and head, as timm adapts: RGB filters summed for grey inputs, a fresh 10-class head
    grey = model_zoo.create_model("shufflenet_v2_x0_5", weights="pretrained", in_chans=1, num_classes=10)
    conv = reference.net.conv1[0].weight
    assert torch.allclose(grey.net.conv1[0].weight, conv.sum(dim=1, keepdim=True))
    assert torch.equal(grey.net.stage2[0].branch1[0].weight, reference.net.stage2[0].branch1[0].weight)
    assert grey.net.fc.out_features == 10
