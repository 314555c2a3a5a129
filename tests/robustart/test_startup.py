"""The command line starts without PyTorch: composing a config, checking it, naming its run and skipping a finished
run import none of torch, torchvision, timm, torchattacks or pandas (they cost seconds); work imports them.

Each check runs in a fresh interpreter, since the test process has long imported them all.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

HEAVY = ("torch", "torchvision", "timm", "torchattacks", "pandas")

#: configs that reach every noise's options, a suite, training, and each kind of model
CASES = [
    [],
    ["experiment=quickstart"],
    *[[f"noise={n}"] for n in ("wcar", "min_eps", "imagenet_p", "imagenet_s", "autoattack", "cw")],
    ["noise=transfer", "noise.source=small_resnet"],
    ["training=[baseline_cnn,mixup,ema]", "noise=clean"],
    ["model=timm", "model.tag=resnet10t", "noise=pgd_l2"],
    ["model=custom", "model.target=mymodule:build", "noise=clean"],
]

SCRIPT = """
import json, sys

from hydra import compose, initialize_config_module

from robustart.config import register_configs
from robustart.identity import run_directory
from robustart.plan import validate_config

cases, results, heavy = json.loads(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
register_configs()
ids = []
for overrides in cases:
    with initialize_config_module("robustart.conf", version_base="1.3"):
        cfg = compose("config", [*overrides, f"paths.results_dir={results}"])
    validate_config(cfg)
    ids.append(run_directory(cfg)[0])
composed = sorted(m for m in heavy if m in sys.modules)

# the command line on a finished run: its folder holds a 'done' file
from robustart import store
from robustart.__main__ import main

import shutil

run_dir = run_directory(cfg)[1]
run_dir.mkdir(parents=True)
for name in (store.METRICS_FILE, store.PREDICTIONS_FILE):  # readable tables: a done run without them is redone
    shutil.copy(sys.argv[4], run_dir / name)  # written by the test (pyarrow writes through pandas)
(run_dir / store.MANIFEST_FILE).write_text("{}")
(run_dir / store.DONE_FILE).write_text("done\\n")  # as store.mark_done writes it (which imports torch to write)
sys.argv = ["robustart", *cases[-1], f"paths.results_dir={results}"]
main()
print(json.dumps({"ids": ids, "composed": composed, "skipped": sorted(m for m in heavy if m in sys.modules)}))
"""


@pytest.mark.cli
def test_composing_checking_naming_and_skipping_a_run_import_no_torch(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = tmp_path / "table.parquet"
    pq.write_table(pa.table({"run_id": ["x"]}), table)
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(CASES), str(tmp_path / "results"), json.dumps(HEAVY), str(table)],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("already done: "), proc.stdout
    out = json.loads(lines[-1])
    assert len(set(out["ids"])) == len(CASES)
    assert out["composed"] == [] and out["skipped"] == [], out


@pytest.mark.cli
def test_a_misspelt_key_is_reported_without_torch(tmp_path):
    code = (
        "import json, sys\nfrom robustart.__main__ import main\nsys.argv = ['robustart', '+foo=1']\n"
        "try:\n    main()\nexcept SystemExit as exit_:\n"
        f"    print(json.dumps([exit_.code, sorted(m for m in {HEAVY!r} if m in sys.modules)]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.stderr.strip().startswith("error: unknown option foo;"), proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [2, []]
