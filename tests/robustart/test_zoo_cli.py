"""``python -m robustart.zoo`` and robustart checkpoints as zoo weights."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from robustart import model_zoo, zoo
from robustart.training import save_checkpoint


def test_list_prints_every_entry_of_a_family_with_counted_flops(capsys):
    assert zoo.main(["list", "--family", "mlp"]) == 0
    out = capsys.readouterr().out
    names = model_zoo.list_models(family="mlp")
    lines = [line for line in out.splitlines() if line.split(" ")[0] in names]
    assert len(lines) == len(names) and all(" mlp " in line for line in lines)
    meta = model_zoo.get_metadata("mixer_b16")
    assert f"{meta.flops / 1e9:.2f}G" in out and f"{meta.params / 1e6:.2f}M" in out
    assert meta.flops > 2 * meta.params  # a forward pass costs at least a multiply-add per weight


def test_list_csv_and_show(capsys):
    assert zoo.main(["list", "--family", "transformer", "--csv"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0] == ",".join(zoo.COLUMNS) and len(rows) == 1 + len(model_zoo.list_models(family="transformer"))
    assert zoo.main(["show", "vit_t", "--img-size", "32", "--num-classes", "10"]) == 0
    out = capsys.readouterr().out
    assert "input_size      (3, 32, 32)" in out and "num_classes     10" in out


def test_show_a_subnet_prints_its_genes(capsys):
    assert zoo.main(["show", "nas_subnet", "--subnet", "0"]) == 0
    out = capsys.readouterr().out
    assert "genes:" in out and "resolution" in out and "total_kernel" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["list", "--family", "rnn"], "family must be one of"),
        (["show", "vit_z"], "unknown model 'vit_z'"),
        (["show", "vit_t", "--subnet", "3"], "does not take ['subnet']"),
        (["show", "nas_subnet", "--subnet", "-1"], "subnet"),
    ],
)
def test_bad_input_exits_2_with_a_message(argv, message, capsys):
    assert zoo.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


@pytest.mark.cli
def test_runs_as_a_module():
    done = subprocess.run(
        [sys.executable, "-m", "robustart.zoo", "list", "--family", "rnn"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 2 and "family must be one of" in done.stderr and "Traceback" not in done.stderr


def _checkpoint(tmp_path, name="small_cnn", **overrides):
    torch.manual_seed(0)
    model = model_zoo.create_model(name, **overrides)
    folder = tmp_path / f"{name}-ckpt"
    save_checkpoint(folder, model.net, {"config_hash": "abc123", "entry": name, "model": {"name": name}})
    return model, folder


def test_a_robustart_checkpoint_loads_by_folder_and_refuses_other_models(tmp_path):
    model, folder = _checkpoint(tmp_path)
    loaded = model_zoo.create_model("small_cnn", weights=str(folder))
    assert loaded.metadata.weights == "robustart:abc123" and len(loaded.metadata.sha256) == 64
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert model_zoo.create_model("small_cnn", weights=str(folder / "checkpoint.json")).metadata.sha256 == (
        loaded.metadata.sha256
    )
    with pytest.raises(ValueError, match="holds weights of model 'small_cnn', not 'small_resnet'"):
        model_zoo.create_model("small_resnet", weights=str(folder))
    with pytest.raises(ValueError, match="has 10 classes but the model has 3"):
        model_zoo.create_model("small_cnn", weights=str(folder), num_classes=3)
    with pytest.raises(ValueError, match="sha256"):
        model_zoo.create_model("small_cnn", weights=str(folder), sha256="00" * 32)
