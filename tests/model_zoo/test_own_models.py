"""Any model on the command line: ``model=timm model.tag=<any timm model>`` and ``model=custom
model.target=MODULE:FACTORY``, evaluated in-process through ``run(cfg)`` on small data written here (offline)."""

from __future__ import annotations

import gzip
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from robustart import store
from robustart.errors import USER_ERROR, UserError
from robustart.models import model_metadata
from robustart.run import run, run_directory
from tests.conftest import compose_config, run_cli, run_dirs

#: a model the project has never seen, in a module of its own (imported from a folder on sys.path)
MODULE = """
import torch
from torch import nn

CONSTANT = 3


class PinwheelNet(nn.Module):
    def __init__(self, width, classes, in_chans):
        super().__init__()
        self.conv = nn.Conv2d(in_chans, width, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.head = nn.Linear(width * 4, classes)

    def forward(self, x):
        return self.head(self.pool(torch.relu(self.conv(x))).flatten(1))


def build(width=4, classes=1000, in_chans=3):
    return PinwheelNet(width, classes, in_chans)


def not_a_model():
    return {"conv": None}
"""

#: ImageNet-layout class folders (data=imagenet labels them by the ImageNet-1k index: a 1000-logit model fits)
WNIDS = ("n01440764", "n01443537", "n01484850")


@pytest.fixture
def mymodule(tmp_path, monkeypatch):
    """``mymodule`` (a tiny CNN and its factory ``build``) in a folder on sys.path; its weights as ``w.pt``."""
    folder = tmp_path / "code"
    folder.mkdir()
    (folder / "mymodule.py").write_text(MODULE)
    (folder / "brokenmodule.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(folder))
    for name in ("mymodule", "brokenmodule"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    import mymodule

    torch.manual_seed(123)
    net = mymodule.build(width=4).eval()
    torch.save(net.state_dict(), tmp_path / "w.pt")
    yield net, tmp_path / "w.pt"
    for name in ("mymodule", "brokenmodule"):
        sys.modules.pop(name, None)


@pytest.fixture
def image_folder(tmp_path):
    """Three class folders of two 32 px PNGs each (random pixels), written with Pillow."""
    from PIL import Image

    root, rng = tmp_path / "images", np.random.default_rng(0)
    for wnid in WNIDS:
        (root / wnid).mkdir(parents=True)
        for k in range(2):
            pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / wnid / f"img_{k}.png")
    return root


@pytest.fixture
def fashion_folder(tmp_path):
    """A Fashion-MNIST test split of 12 random 28 px images in the published IDX format (offline)."""
    root, rng = tmp_path / "fashion", np.random.default_rng(1)
    root.mkdir()
    images, labels = rng.integers(0, 256, (12, 28, 28), dtype=np.uint8), np.arange(12, dtype=np.uint8) % 10
    for name, array in (("t10k-images-idx3-ubyte.gz", images), ("t10k-labels-idx1-ubyte.gz", labels)):
        header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
        with gzip.open(root / name, "wb") as f:
            f.write(header + array.tobytes())
    return root


def read_tables(result):
    assert store.is_done(result.run_dir)
    return pd.read_parquet(result.run_dir / "predictions.parquet"), store.read_run(result.run_dir)[2]


def test_custom_module_from_the_command_line_predicts_as_the_module_does(mymodule, image_folder, tmp_path, workspace):
    # data=folder: class folders of any names, labelled by their sorted names; a 3-class model fits them
    import mymodule as code

    torch.manual_seed(123)
    net = code.build(width=4, classes=3).eval()
    weights = tmp_path / "three" / "w.pt"
    weights.parent.mkdir()
    torch.save(net.state_dict(), weights)
    cfg = compose_config(["model=custom", "model.target=mymodule:build", f"model.weights={weights}",
                          "+model.kwargs.classes=3", "model.input_size=[3,32,32]", "data=folder",
                          f"data.root={image_folder}", "data.num_workers=0", "noise=clean"])  # fmt: skip
    result = run(cfg)
    predictions, manifest = read_tables(result)
    assert len(predictions) == 6 and predictions["model"].unique().tolist() == ["mymodule.build"]

    from PIL import Image

    files = sorted(image_folder.glob("*/*.png"))  # the data's order: class folders sorted, files sorted in each
    predictions = predictions.sort_values("sample_id")
    assert predictions["label"].tolist() == [sorted(WNIDS).index(f.parent.name) for f in files]
    assert predictions["path"].tolist() == [f.relative_to(image_folder).as_posix() for f in files]
    images = torch.stack([torch.from_numpy(np.asarray(Image.open(f))).permute(2, 0, 1).float() / 255 for f in files])
    with torch.no_grad():
        probs = net(images).softmax(1)
    assert predictions["pred"].tolist() == probs.argmax(1).tolist()
    assert np.allclose(predictions["confidence"], probs.max(1).values.numpy(), atol=1e-5)

    meta = manifest["model"]
    assert meta["name"] == "mymodule.build" and meta["family"] == "cnn" and meta["architecture"] == "mymodule:build"
    assert meta["weights"] == "file:w.pt" and meta["sha256"] == model_zoo_sha(weights)
    assert meta["params"] == sum(p.numel() for p in net.parameters()) and meta["flops"] > 0
    assert tuple(meta["input_size"]) == (3, 32, 32) and meta["num_classes"] == 3
    assert manifest["data"]["classes"] == sorted(WNIDS) and manifest["data"]["num_classes"] == 3
    assert result.run_dir.name.startswith("mymodule.build-clean-folder-")
    metrics = result.metrics
    assert set(metrics["weights"]) == {"file:w.pt"} and set(metrics["family"]) == {"cnn"}


def model_zoo_sha(path) -> str:
    from robustart.model_zoo import sha256_file

    return sha256_file(path)


def test_custom_module_on_in_memory_data_gets_its_preprocessing_inside(mymodule, fashion_folder, workspace):
    cfg = compose_config(["model=custom", "model.target=mymodule:build", "+model.kwargs.classes=10",
                          "+model.kwargs.in_chans=1", "model.input_size=[1,32,32]", "model.mean=[0.5]",
                          "model.family=transformer", "data=fashion_mnist", f"data.root={fashion_folder}",
                          "noise=clean"])  # fmt: skip
    result = run(cfg)
    _, manifest = read_tables(result)
    meta = manifest["model"]
    assert meta["family"] == "transformer" and tuple(meta["input_size"]) == (1, 32, 32) and meta["mean"] == [0.5]
    assert meta["weights"].startswith("module:") and meta["num_classes"] == 10  # the factory's own weights
    assert set(result.metrics["family"]) == {"transformer"}


def test_any_timm_model_with_its_pretrained_config(fashion_folder, workspace):
    meta = model_metadata({"name": "timm", "tag": "convnext_nano.in12k_ft_in1k", "family": "cnn"})
    assert meta.input_size == (3, 224, 224) and meta.mean == (0.485, 0.456, 0.406)
    assert meta.std == (0.229, 0.224, 0.225) and meta.crop_pct == 0.95 and meta.interpolation == "bicubic"
    assert meta.name == "convnext_nano.in12k_ft_in1k" and meta.params > 1_000_000 and meta.flops > 0

    cfg = compose_config(["model=timm", "model.tag=resnet10t", "model.weights=random", "model.num_classes=10",
                          "model.in_chans=1", "data=fashion_mnist", f"data.root={fashion_folder}", "noise=clean",
                          "evaluation.max_samples=8"])  # fmt: skip
    result = run(cfg)
    predictions, manifest = read_tables(result)
    assert len(predictions) == 8 and set(predictions["model"]) == {"resnet10t"}
    meta = manifest["model"]
    assert meta["architecture"] == "resnet10t.c3_in1k" and meta["weights"] == "random" and meta["family"] == "cnn"
    assert tuple(meta["input_size"]) == (1, 176, 176) and meta["crop_pct"] == 0.875  # the pretrained config's
    assert meta["mean"] == [pytest.approx(np.mean((0.485, 0.456, 0.406)))]  # grey: the channels' average
    assert meta["num_classes"] == 10 and meta["in_chans"] == 1


def test_timm_model_on_image_files_is_read_at_its_size(image_folder, workspace):
    cfg = compose_config(["model=timm", "model.tag=resnet10t", "model.weights=random", "model.family=nas",
                          "data=imagenet", f"data.root={image_folder}", "noise=clean"])  # fmt: skip
    result = run(cfg)
    _, manifest = read_tables(result)
    assert manifest["model"]["family"] == "nas" and tuple(manifest["model"]["input_size"]) == (3, 176, 176)
    assert set(result.metrics["model"]) == {"resnet10t"}


def test_timm_pretrained_weights_come_from_the_local_hub_cache(monkeypatch, tmp_path, image_folder, workspace):
    import huggingface_hub.constants
    from safetensors.torch import save_file

    from robustart import model_zoo

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # empty
    cfg = compose_config(["model=timm", "model.tag=resnet10t", "data=imagenet", f"data.root={image_folder}",
                          "noise=clean"])  # fmt: skip
    assert cfg.model.weights == "pretrained"  # model=timm's default
    with pytest.raises(UserError, match=r"\(timm resnet10t.c3_in1k\) are not in the local Hugging Face cache"):
        run(cfg)
    revision, repo = "0" * 40, tmp_path / "hub" / "models--timm--resnet10t.c3_in1k"
    (repo / "snapshots" / revision).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    torch.manual_seed(1)
    reference = model_zoo.create_timm_model("resnet10t")
    state = {k: v.contiguous() for k, v in reference.net.state_dict().items()}
    save_file(state, str(repo / "snapshots" / revision / "model.safetensors"))
    result = run(cfg)
    assert set(result.metrics["weights"]) == {"timm:resnet10t.c3_in1k"}


def test_run_id_follows_target_kwargs_tag_and_weights(workspace):
    custom = ["model=custom", "model.target=mymodule:build", "noise=clean"]
    timm = ["model=timm", "model.tag=resnet10t", "noise=clean"]
    variants = [
        custom,
        [*custom[:1], "model.target=mymodule:other", *custom[2:]],
        [*custom, "+model.kwargs.width=8"],
        [*custom, "+model.kwargs.width=16"],
        [*custom, "model.weights=w.pt"],
        [*custom, "model.family=mlp"],
        [*custom, "model.input_size=[3,64,64]"],
        timm,
        ["model=timm", "model.tag=convnext_atto", "noise=clean"],
        [*timm, "model.weights=random"],
    ]
    ids = [run_directory(compose_config(v))[0] for v in variants]
    assert len(set(ids)) == len(ids)
    assert run_directory(compose_config(custom))[0] == ids[0]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model=custom", "model.target=no_such_module_xyz:build"], "no module named 'no_such_module_xyz'"),
        (
            ["model=custom", "model.target=brokenmodule:build"],
            "importing module 'brokenmodule' failed: RuntimeError: boom at import",
        ),
        (["model=custom", "model.target=mymodule.build"], "model=custom needs model.target=MODULE:FACTORY"),
        (["model=custom"], "model=custom needs model.target=MODULE:FACTORY"),
        (["model=custom", "model.target=mymodule:nope"], "module 'mymodule' has no attribute 'nope'"),
        (["model=custom", "model.target=mymodule:CONSTANT"], "is a int, not a callable returning an nn.Module"),
        (["model=custom", "model.target=mymodule:not_a_model"], "returned a dict, not an nn.Module"),
        (
            ["model=custom", "model.target=mymodule:build", "+model.kwargs.depth=3"],
            "does not take model.kwargs.depth; it takes width, classes, in_chans",
        ),
        (
            ["model=custom", "model.target=mymodule:build", "+model.kwargs.width=8", "model.weights=WEIGHTS"],
            "parameter conv.weight has shape (4, 3, 3, 3), expected (8, 3, 3, 3)",
        ),
        (
            ["model=custom", "model.target=mymodule:PinwheelNet", "model.weights=WEIGHTS"],
            "its arguments do not fit model.kwargs {}: missing a required argument: 'width'",
        ),
        (["model=custom", "model.target=mymodule:build", "model.weights=EXTRA"], "1 unexpected keys (e.g. ['extra'])"),
        (
            ["model=custom", "model.target=mymodule:build", "model.weights=WEIGHTS", "model.sha256=" + "0" * 64],
            "expected 0000",
        ),
        (["model=custom", "model.target=mymodule:build", "model.weights=pretrained"], "model=custom takes"),
        (
            ["model=custom", "model.target=mymodule:build", "model.img_size=64"],
            "model=custom does not take model.img_size",
        ),
        (
            ["model=custom", "model.target=mymodule:build", "model.family=rnn"],
            "model.family must be one of cnn, transformer, mlp, nas, got 'rnn'",
        ),
        (
            ["model=custom", "model.target=mymodule:build", "+model.kwargs.classes=10"],
            "has 10 classes but data imagenet has 1000; make the factory return 1000 logits",
        ),
        (
            ["model=custom", "model.target=mymodule:build", "model.input_size=[1,32,32]"],
            "the model takes 1 channels but the data has 3",
        ),
        (["model=custom", "model.target=mymodule:build", "training=standard"], "training=... trains zoo entries"),
        (["model=timm", "model.tag=resnet10x"], "timm does not know the model 'resnet10x'; did you mean"),
        (["model=timm", "model.tag=resnet50.no_such_weights"], "timm does not know the model 'resnet50.no_such"),
        (["model=timm"], "model=timm needs model.tag=<timm model name>"),
        (["model=timm", "model.tag=resnet10t", "model.family=rnn"], "model.family must be one of"),
        (
            ["model=timm", "model.tag=resnet10t", "model.input_size=[3,32,32]"],
            "model=timm does not take model.input_size",
        ),
        (
            ["model=timm", "model.tag=resnet10t", "model.weights=random", "+model.kwargs.no_such_option=1"],
            "does not take these options",
        ),
        (["model=resnet18", "model.tag=resnet10t"], "model.tag is an option of model=timm and model=custom"),
        (["model=small_cnn", "model.family=mlp"], "model.family is an option of model=timm and model=custom"),
    ],
)
def test_bad_model_input_is_one_user_error(overrides, message, mymodule, image_folder, tmp_path, workspace):
    results, _ = workspace
    _, weights = mymodule
    extra = tmp_path / "extra.pt"
    torch.save({**torch.load(weights, weights_only=True), "extra": torch.zeros(1)}, extra)
    paths = {"WEIGHTS": str(weights), "EXTRA": str(extra)}
    overrides = [o.split("=")[0] + "=" + paths.get(o.split("=", 1)[1], o.split("=", 1)[1]) for o in overrides]
    if "model=custom" in overrides and not any(o.startswith("model.input_size=") for o in overrides):
        overrides.append("model.input_size=[3,32,32]")  # the size image files are read at
    with pytest.raises(UserError) as caught:
        run(compose_config([*overrides, "data=imagenet", f"data.root={image_folder}", "noise=clean"]))
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
    assert run_dirs(results) == []


@pytest.mark.cli
def test_bad_target_exits_2_with_one_message(workspace):
    proc = run_cli("model=custom", "model.target=no_colon", "noise=clean")
    assert proc.returncode == USER_ERROR
    assert proc.stderr.strip() == (
        "error: model=custom needs model.target=MODULE:FACTORY (e.g. mymodule:build), got 'no_colon'"
    )
