"""The results store: declared schemas, atomic writes, the done marker."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from robustart import store


def test_metrics_schema_has_the_contract_columns():
    names = set(store.metrics_schema().names)
    contract = [
        "run_id",
        "model",
        "family",
        "noise",
        "metric",
        "condition",
        "severity",
        "eps",
        "value",
        "n",
        "ci_low",
        "ci_high",
    ]
    assert set(contract) <= names
    protocol = {"norm", "steps", "restarts", "step_size", "random_start", "targeted", "param_set", "source_model",
                "recipe"}  # fmt: skip
    assert protocol | {"unit", "ci_method", "weights_source", "weights_id"} <= names
    assert protocol | {"data", "family", "weights_source", "weights_id"} <= set(store.predictions_schema().names)


@pytest.mark.parametrize(
    ("weights", "split"),
    [("random", ("random", None)), ("pretrained", ("pretrained", None)), ("robustart:ab12", ("robustart", "ab12")),
     ("timm:convnext_nano.in12k", ("timm", "convnext_nano.in12k")), ("/w/model.safetensors",
     ("file", "/w/model.safetensors")), ("C:/w/m.pt", ("file", "C:/w/m.pt"))],
)  # fmt: skip
def test_weights_split_into_source_and_id(weights, split):
    assert store.split_weights(weights) == split


def test_write_table_casts_to_schema_and_records_version(tmp_path):
    frame = pd.DataFrame(
        {
            "run_id": ["r"], "model": ["m"], "family": ["cnn"], "weights": ["random"], "params": [3],
            "data": ["d"], "noise": ["clean"], "metric": ["top1"], "condition": ["clean"],
            "severity": pd.array([None], dtype="Int64"), "eps": [None], "value": [0.5], "n": [10],
            "ci_low": [0.2], "ci_high": [0.8], "extra": ["dropped"], "category": [None],
            **{name: [None] for name in store.model_columns()},
            **{name: [None] for name in (*store.PROTOCOL_COLUMNS, "weights_source", "weights_id", "unit", "ci_method")},
        }
    )  # fmt: skip
    store.write_table(frame, store.metrics_schema(), tmp_path / "m.parquet")
    table = pq.read_table(tmp_path / "m.parquet")
    assert table.schema.metadata[b"robustart_schema_version"] == str(store.SCHEMA_VERSION).encode()
    assert "extra" not in table.column_names and table.column("severity").null_count == 1
    assert table.column("nas_resolution").type == pa.int64() and table.column("flops").null_count == 1
    with pytest.raises(KeyError):
        store.write_table(frame.drop(columns=["value"]), store.metrics_schema(), tmp_path / "bad.parquet")
    assert not (tmp_path / "bad.parquet").exists()


def test_failed_write_leaves_no_file(tmp_path):
    def boom(tmp):
        Path(tmp).write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        store.atomic_write(tmp_path / "x.json", boom)
    assert list(tmp_path.iterdir()) == []


def test_done_marker(tmp_path):
    assert not store.is_done(tmp_path)
    store.mark_done(tmp_path)
    assert store.is_done(tmp_path)
