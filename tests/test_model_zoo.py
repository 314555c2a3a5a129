"""Every zoo entry builds, runs forward and backward, and carries metadata; weights load safely."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

import model_zoo
from model_zoo.weights import read_state_dict

NAMES = model_zoo.list_models()


def test_registry_has_each_family():
    assert {model_zoo.get_metadata(n).family for n in NAMES} >= {"cnn", "transformer", "mlp"}
    assert "vit_b" in model_zoo.list_models(family="transformer")
    assert model_zoo.list_models(family="mlp") == ["mixer_b16"]
    with pytest.raises(ValueError, match="family must be one of"):
        model_zoo.list_models(family="rnn")


def test_duplicate_registration_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        model_zoo.register_model("small_cnn", family="cnn")(lambda **_: None)


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError, match=r"valid names: .*vit_b"):
        model_zoo.create_model("vit_z")


@pytest.mark.parametrize("name", NAMES)
def test_model_forward_backward_and_metadata(name):
    meta = model_zoo.get_metadata(name)
    assert meta.params > 0 and len(meta.mean) == meta.in_chans == meta.input_size[0]
    model = model_zoo.create_model(name, num_classes=7).train()
    assert model.metadata.num_classes == 7 and model.metadata.weights == "random"
    # CNNs take any size from their own up, so they run small; patch models need their own size
    size = 28 if name == "small_cnn" else (min(64, meta.input_size[1]) if meta.family == "cnn" else meta.input_size[1])
    x = torch.rand(2, meta.in_chans, size, size, requires_grad=True)
    out = model(x)
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


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
