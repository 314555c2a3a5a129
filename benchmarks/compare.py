"""Wall-clock of ``python -m robustart.compare`` over 500 and 2,000 synthetic runs, and how it scales.

The runs are synthetic but schema-true: each is a folder ``<model>-<recipe>-<data>-<run_id>/`` with a
``metrics.parquet`` written by :func:`robustart.store.write_table` under :func:`robustart.store.metrics_schema`,
a ``manifest.json`` and the ``done`` marker, as ``python -m robustart`` leaves them. The mix follows the
project's metric vocabulary, with the protocol columns a real run fills: clean top-1/top-5; six attacks at eight
budgets each (``robust_acc``, ``ar``; each attack with its norm, steps, restarts, step size and random start); a
worst case over attacks (``wcar``, ``broken_first``); robustness curves over eps and steps (the step count in
``steps``); ImageNet-C (19 corruptions x 5 severities with ``param_set``, ``ce``, ``mean_acc``, ``mce``,
``relative_mce``); ImageNet-S (4 decoders x 15 resizers, ``flip_rate``, ``sys_*``); ImageNet-P (``fp``, ``t5d`` at 3
difficulties, ``mfp``); and, for about one run in sixteen, ImageNet-A or -O rows (``top1``, ``calib_rms``,
``aurra``, ``aupr``, ``auroc``, ``fpr95``). Every row has its ``unit`` and ``ci_method``, every run its training
``recipe`` (ten), so the tidy table keeps each (model, recipe) apart and each budget and protocol its own row.
Families are CNNs, Transformers, MLPs and NAS (published searches, and NAS subnets with their genes, one run in
five); about one non-subnet run in ten is written in schema version 1 (without the model and protocol columns).
About 500 rows per run, so 2,000 runs hold about 1M metric rows. A few unfinished folders (no ``done``) and a
``.sweeps`` folder lie beside them, as after a real sweep.

Each timing is one subprocess, from start to exit, so interpreter start-up and imports count:

    python benchmarks/compare.py [--runs 500,2000] [--repeat 2] [--keep DIR]

Target: 2,000 runs (about 1M rows) in at most 10 s on 2 CPU cores, and time linear in the rows: beyond a fixed
start-up (imports, the first plot), 2,000 runs cost 4x what 500 do. The script prints the time per extra run
and the fixed cost, and the CPU time beside the wall-clock (on a machine busy with other work the wall-clock
exceeds the CPU time).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from robustart.noise.natural.perturbations import P_TEST
from robustart.noise.system.codecs import DECODERS
from robustart.noise.system.resize import RESIZERS

REPO = Path(__file__).resolve().parents[1]
TARGET_S = 10.0

#: (name, family, params, MFLOPs, input size, base clean accuracy): a slice of the zoo with ImageNet-like numbers
MODELS = [
    ("alexnet", "cnn", 61_100_840, 1_430, 224, 0.565),
    ("vgg16_bn", "cnn", 138_365_992, 31_000, 224, 0.736),
    ("resnet18", "cnn", 11_689_512, 3_640, 224, 0.698),
    ("resnet50", "cnn", 25_557_032, 8_180, 224, 0.761),
    ("resnet101", "cnn", 44_549_160, 15_660, 224, 0.774),
    ("resnext50_32x4d", "cnn", 25_028_904, 8_540, 224, 0.776),
    ("wide_resnet50_2", "cnn", 68_883_240, 22_860, 224, 0.785),
    ("densenet121", "cnn", 7_978_856, 5_740, 224, 0.744),
    ("mobilenet_v2_100", "cnn", 3_504_872, 600, 224, 0.720),
    ("mobilenet_v3_large_100", "cnn", 5_483_032, 440, 224, 0.752),
    ("shufflenet_v2_x1_0", "cnn", 2_278_604, 290, 224, 0.694),
    ("regnetx_1_6gf", "cnn", 9_190_136, 3_240, 224, 0.770),
    ("efficientnet_b0", "cnn", 5_288_548, 780, 224, 0.777),
    ("efficientnet_b2", "cnn", 9_109_994, 2_000, 256, 0.801),
    ("repvgg_a0", "cnn", 9_109_994, 2_720, 224, 0.724),
    ("convnext_tiny", "cnn", 28_589_128, 8_920, 224, 0.821),
    ("vit_t", "transformer", 5_717_416, 2_520, 224, 0.755),
    ("vit_s", "transformer", 22_050_664, 9_200, 224, 0.814),
    ("vit_b", "transformer", 86_567_656, 35_140, 224, 0.818),
    ("deit_t", "transformer", 5_717_416, 2_520, 224, 0.722),
    ("deit_s", "transformer", 22_050_664, 9_200, 224, 0.798),
    ("deit_b", "transformer", 86_567_656, 35_140, 224, 0.818),
    ("swin_t", "transformer", 28_288_354, 9_000, 224, 0.812),
    ("swin_s", "transformer", 49_606_258, 17_500, 224, 0.832),
    ("mixer_b16", "mlp", 59_880_472, 25_260, 224, 0.768),
    ("mixer_l16", "mlp", 208_196_168, 88_400, 224, 0.720),
    ("resmlp_12", "mlp", 15_350_872, 6_000, 224, 0.771),
    ("resmlp_24", "mlp", 30_020_680, 11_920, 224, 0.796),
    ("mnasnet", "nas", 4_383_312, 630, 224, 0.734),
    ("fbnet", "nas", 5_572_200, 750, 224, 0.752),
    ("spnasnet", "nas", 4_421_616, 660, 224, 0.740),
    ("hardcorenas_c", "nas", 5_520_000, 440, 224, 0.771),
    ("tinynet_a", "nas", 6_190_000, 700, 192, 0.770),
]
RECIPES = ["standard", "baseline", "mixup", "cutmix", "augmix", "randaugment", "ema", "pgd_at", "trades", "fgsm_at"]
EPS_LINF = [0.5 / 255, 1 / 255, 2 / 255, 3 / 255, 4 / 255, 6 / 255, 8 / 255, 16 / 255]
EPS_L2 = [0.125, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0]
#: (attack, budgets, budget at which accuracy falls to 1/e for a mid-robust model)
ATTACKS = [
    ("pgd_linf", EPS_LINF, 4 / 255),
    ("apgd_ce", EPS_LINF, 3.5 / 255),
    ("mim", EPS_LINF, 4.5 / 255),
    ("square", EPS_LINF, 6 / 255),
    ("fgsm", EPS_LINF, 6 / 255),
    ("pgd_l2", EPS_L2, 0.5),
]
CORRUPTIONS = [
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
    "speckle_noise",
    "gaussian_blur",
    "spatter",
    "saturate",
]
PERTURBATIONS = list(P_TEST)  # the ten benchmark perturbations of ImageNet-P


def wilson(p: np.ndarray, n: np.ndarray, z: float = 1.96) -> tuple[np.ndarray, np.ndarray]:
    """The Wilson score interval of proportions ``p`` over ``n`` samples (what the evaluators store)."""
    denom = 1 + z**2 / n
    centre = (p + z**2 / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denom
    return np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)


#: (steps, step size as a share of the budget, random start) of each attack, as its options would write them
ATTACK_PROTOCOL = {
    "pgd_linf": (10, 0.25, True),
    "apgd_ce": (100, 2.0, False),
    "mim": (10, 0.1, False),
    "square": (5000, None, False),
    "fgsm": (1, 1.0, False),
    "pgd_l2": (10, 0.25, True),
}
PROTOCOL = ("norm", "steps", "restarts", "step_size", "random_start", "targeted", "param_set", "source_model")
PERCENT, SCORE = {"ce", "mce", "relative_mce", "mce_unnormalized"}, {"mfp", "nmfp", "mt5d"}
BOOTSTRAP = {"mean_acc", "sys_mean", "sys_worst"}


def attack_protocol(attack: str, eps: float) -> dict:
    """The protocol columns of an attack's rows at ``eps``."""
    steps, share, random_start = ATTACK_PROTOCOL[attack]
    norm = "L2" if attack.endswith("l2") else "Linf"
    return dict(norm=norm, steps=steps, restarts=1, step_size=share * eps if share else None,
                random_start=random_start, targeted=False)  # fmt: skip


class _Rows:
    """Column lists of one run's metric rows (protocol columns null unless given)."""

    def __init__(self):
        keys = ("noise", "metric", "condition", "severity", "eps", "value", "interval", *PROTOCOL)
        self.cols = {k: [] for k in keys}

    def add(self, noise, metric, condition, value, severity=None, eps=None, interval=True, **protocol):
        for key, v in zip(self.cols, (noise, metric, condition, severity, eps, value, interval)):
            self.cols[key].append(v)
        for key in PROTOCOL:
            self.cols[key].append(protocol.get(key))


def run_rows(rng: np.random.Generator, clean: float, robust: float, data: str) -> _Rows:
    """One run's metric rows: accuracies fall with the budget and the severity, around the model's clean and
    robustness levels (``robust`` in [0, 1]: 0 collapses under attack, 1 resists)."""
    rows = _Rows()
    jitter = lambda s=0.01: float(rng.normal(0, s))  # noqa: E731
    if data in ("imagenet_a", "imagenet_o"):
        if data == "imagenet_a":
            rows.add("clean", "top1", "clean", min(max(0.02 + 0.3 * (clean - 0.55) + jitter(), 0.0), 1.0))
            rows.add("clean", "calib_rms", "clean", 0.4 + jitter(0.05), interval=False)
            rows.add("clean", "aurra", "clean", 0.1 + jitter(0.03), interval=False)
        else:
            for metric, v in (("aupr", 0.2), ("auroc", 0.55), ("fpr95", 0.9)):
                rows.add("imagenet_o", metric, "imagenet_o", v + jitter(0.03), interval=False)
            rows.add("clean", "top1", "clean", clean + jitter())
        return rows
    rows.add("clean", "top1", "clean", clean + jitter(0.005))
    rows.add("clean", "top5", "clean", min(clean + 0.17, 0.99) + jitter(0.003))
    for attack, budgets, scale in ATTACKS:
        for eps in budgets:
            acc = clean * float(np.exp(-eps / (scale * (0.15 + 2 * robust)))) + jitter(0.005)
            acc = min(max(acc, 0.0), clean)
            protocol = attack_protocol(attack, eps)
            rows.add(attack, "robust_acc", attack, acc, eps=eps, **protocol)
            rows.add(attack, "ar", attack, min(acc / clean, 1.0), eps=eps, **protocol)
    for eps in EPS_LINF[2::2]:
        acc = clean * float(np.exp(-eps / (3 / 255 * (0.15 + 2 * robust))))
        for metric, v in (("robust_acc", acc), ("ar", acc / clean), ("wcar", acc / clean)):
            rows.add("wcar", metric, "wcar", min(max(v, 0.0), 1.0), eps=eps, norm="Linf")
        for share, attack in zip(rng.dirichlet([4, 2, 1, 1]), ("apgd-ce", "apgd-t", "fab-t", "square")):
            rows.add("wcar", "broken_first", attack, float(share) * (1 - acc / clean), eps=eps, norm="Linf")
    for eps in np.linspace(0, 16 / 255, 20):
        acc = clean * float(np.exp(-eps / (4 / 255 * (0.15 + 2 * robust))))
        rows.add("pgd_linf", "robust_acc_vs_eps", "pgd_linf", acc, eps=float(eps), **attack_protocol("pgd_linf", eps))
    for eps in EPS_LINF[1::2]:
        for steps in range(1, 21):
            acc = clean * float(np.exp(-eps * (1 - 0.6**steps) / (4 / 255 * (0.15 + 2 * robust))))
            protocol = {**attack_protocol("pgd_linf", eps), "steps": steps}
            rows.add("pgd_linf", "robust_acc_vs_steps", "pgd_linf", acc, eps=eps, **protocol)
    errors, all_accs = [], []
    for c in CORRUPTIONS:
        hardness = rng.uniform(0.03, 0.12)
        accs = [min(max(clean - hardness * s * (1.3 - robust) + jitter(), 0.0), 1.0) for s in range(1, 6)]
        for s, acc in enumerate(accs, start=1):
            rows.add("imagenet_c", "acc", c, acc, severity=s, param_set="imagenet")
            all_accs.append(acc)
        errors.append(sum(1 - a for a in accs))
        if len(errors) <= 15:
            rows.add("imagenet_c", "ce", c, 100 * errors[-1] / 4.0, interval=False, param_set="imagenet")
    mce = 100 * float(np.mean(errors[:15])) / 4.0
    rows.add("imagenet_c", "mean_acc", None, float(np.mean(all_accs[:75])), param_set="imagenet")
    rows.add("imagenet_c", "mce", None, mce, interval=False, param_set="imagenet")
    rows.add("imagenet_c", "relative_mce", None, mce * 1.1, interval=False, param_set="imagenet")
    rows.add("imagenet_c", "mce_unnormalized", None, mce / 100 * 4.0 / 5, interval=False, param_set="imagenet")
    accs = []
    for d in DECODERS:
        for r in RESIZERS:
            acc = clean - abs(float(rng.normal(0, 0.01 + 0.02 * (1 - robust))))
            accs.append(acc)
            rows.add("imagenet_s", "acc", f"{d}/{r}", acc)
            rows.add("imagenet_s", "flip_rate", f"{d}/{r}", min(abs(clean - acc) * 3 + abs(jitter(0.01)), 1.0))
    rows.add("imagenet_s", "sys_mean", None, float(np.mean(accs)))
    rows.add("imagenet_s", "sys_std", None, float(np.std(accs)), interval=False)
    rows.add("imagenet_s", "sys_worst", f"{DECODERS[0]}/{RESIZERS[int(np.argmin(accs[:15]))]}", float(np.min(accs)))
    fps = []
    for p in PERTURBATIONS:
        for difficulty in (1, 2, 3):
            fps.append(abs(0.01 * difficulty + 0.05 * (1 - robust) + jitter(0.01)))
            rows.add("imagenet_p", "fp", p, fps[-1], severity=difficulty, interval=False)
            rows.add("imagenet_p", "t5d", p, 3 * fps[-1], severity=difficulty, interval=False)
    rows.add("imagenet_p", "mfp", None, float(np.mean(fps)), interval=False)
    return rows


def _run_frame(rng, model, recipe: str, seed: int, data: str, subnet: int | None, genes: dict) -> pd.DataFrame:
    """One run's ``metrics.parquet`` rows as a frame with every column of :func:`robustart.store.metrics_schema`."""
    from robustart import store

    name, family, params, mflops, size, clean = model
    robust = {"pgd_at": 0.9, "trades": 0.95, "fgsm_at": 0.7, "augmix": 0.45}.get(recipe, 0.3)
    robust = float(np.clip(robust + {"transformer": 0.08, "mlp": 0.02}.get(family, 0) + rng.normal(0, 0.05), 0, 1))
    clean_acc = clean - (0.08 if robust > 0.6 else 0) + float(rng.normal(0, 0.01))
    rows = run_rows(rng, clean_acc, robust, data)
    frame = pd.DataFrame(rows.cols).assign(category=None)
    n = 7_500 if data == "imagenet_a" else 2_000 if data == "imagenet_o" else 50_000
    value = frame["value"].to_numpy(float)
    low, high = wilson(np.clip(value, 0, 1), np.full(len(frame), n, float))
    frame["ci_low"] = np.where(frame["interval"], low, np.nan)
    frame["ci_high"] = np.where(frame["interval"], high, np.nan)
    metric = frame["metric"]
    frame["unit"] = np.where(metric.isin(PERCENT), "percent", np.where(metric == "broken_first", "count",
                             np.where(metric.isin(SCORE), "score", "fraction")))  # fmt: skip
    frame["ci_method"] = np.where(~frame["interval"], "none", np.where(metric.isin(BOOTSTRAP), "bootstrap", "wilson"))
    run_id = f"{rng.integers(16**10):010x}"
    weights_id = f"{rng.integers(16**12):012x}"
    frame = frame.drop(columns="interval").assign(
        run_id=run_id,
        model=name,
        family=family,
        weights=f"robustart:{weights_id}",
        weights_source="robustart",
        weights_id=weights_id,
        recipe=recipe,
        params=params,
        flops=mflops * 1_000_000,
        input_size=size,
        subnet=subnet,
        data=data,
        n=n,
        **{f"nas_{k}": genes.get(k) for k in _gene_names()},
    )
    for col in ("severity", "subnet", "steps", "restarts"):
        frame[col] = frame[col].astype("Int64")
    frame["step_size"] = frame["step_size"].astype(float)
    for col in ("random_start", "targeted"):
        frame[col] = frame[col].astype("boolean")
    for col in store.model_columns():
        frame[col] = frame[col].astype("Int64")
    return frame


def _gene_names() -> tuple[str, ...]:
    from robustart.model_zoo.nas import GENE_NAMES

    return GENE_NAMES


def v1_schema():
    """The metrics schema as version 1 wrote it: without :func:`robustart.store.model_columns`, the shape-bias
    category and what schema 4 added (protocol columns, ``unit``, ``ci_method``, the split weights)."""
    import pyarrow as pa

    from robustart import store

    schema = store.metrics_schema()
    lacking = {*store.model_columns(), "category", *store.PROTOCOL_COLUMNS, "unit", "ci_method", "weights_source",
               "weights_id"}  # fmt: skip
    fields = [f for f in schema if f.name not in lacking]
    return pa.schema(fields, metadata={**schema.metadata, b"robustart_schema_version": b"1"})


def generate(root: Path, runs: int, seed: int = 0) -> int:
    """Write ``runs`` finished synthetic runs (plus 3 unfinished folders and a ``.sweeps`` folder) under ``root``;
    returns the number of metric rows written."""
    from robustart import store
    from robustart.model_zoo import nas

    rng = np.random.default_rng(seed)
    schema, old = store.metrics_schema(), v1_schema()
    subnets = nas.sample(max(runs // 5, 1), seed=seed)
    total = 0
    for i in range(runs):
        data = rng.choice(["imagenet", "imagenet_a", "imagenet_o"], p=[0.94, 0.03, 0.03])
        recipe = str(rng.choice(RECIPES))
        if i % 5 == 4:  # one run in five: a NAS subnet cut from the supernet
            subnet = subnets[(i // 5) % len(subnets)]
            genes = nas.decode(subnet).as_dict(224)
            acc = 0.70 + 0.04 * (genes["resolution"] - 192) / 64 + 0.002 * genes["total_depth"]
            model = (
                "nas_subnet",
                "nas",
                4_000_000 + 40_000 * genes["total_depth"],
                200 + 25 * genes["total_kernel"],
                genes["resolution"],
                acc,
            )
        else:
            subnet, genes = None, {}
            model = MODELS[int(rng.integers(len(MODELS)))]
        frame = _run_frame(rng, model, recipe, i, str(data), subnet, genes)
        folder = root / f"{model[0]}-{recipe}-{data}-{frame['run_id'].iloc[0]}"
        folder.mkdir(parents=True)
        legacy = subnet is None and rng.random() < 0.1
        store.write_table(frame, old if legacy else schema, folder / store.METRICS_FILE)
        manifest = {
            "schema_version": 1 if legacy else store.SCHEMA_VERSION,
            "run_id": frame["run_id"].iloc[0],
            "model": {"name": model[0], "family": model[1]},
            "synthetic": True,
        }
        store.write_json(manifest, folder / store.MANIFEST_FILE)
        store.mark_done(folder)
        total += len(frame)
    for k in range(3):  # preempted runs: no done marker, so compare ignores them
        (root / f"resnet50-imagenet_c-imagenet-unfinished{k}").mkdir()
    (root / ".sweeps").mkdir()
    return total


def timed(results: Path, out: Path) -> tuple[float, float]:
    """Wall-clock and CPU seconds (user + system) of one ``python -m robustart.compare RESULTS --out OUT``, from
    start to exit; CPU well below twice the wall-clock means the process waited for cores others were using."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "robustart.compare", str(results), "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"robustart.compare failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return elapsed, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="500,2000", help="comma-separated run counts (default 500,2000)")
    parser.add_argument("--repeat", type=int, default=2, help="timings per count; the best is reported")
    parser.add_argument("--keep", type=Path, help="write the runs here and keep them (default: a temporary folder)")
    args = parser.parse_args()
    counts = sorted(int(c) for c in args.runs.split(","))

    with tempfile.TemporaryDirectory() as tmp:
        base = args.keep or Path(tmp)
        largest = base / f"runs{counts[-1]}"
        t = time.perf_counter()
        if not (largest / ".sweeps").is_dir():
            rows = generate(largest, counts[-1])
            print(f"generated {counts[-1]} runs, {rows:,} metric rows, in {time.perf_counter() - t:.0f} s")
        finished = sorted(p for p in largest.iterdir() if (p / "done").is_file())
        print(f"cpus: {os.cpu_count()}, load average: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print(f"{'runs':>6}{'rows':>12}{'seconds (best)':>16}{'cpu s':>8}{'all runs (s)':>20}")
        best = {}
        for count in counts:
            folder = largest
            if count < counts[-1]:  # the first `count` runs of the largest set (its mix is random, so representative)
                folder = base / f"runs{count}"
                if not folder.is_dir():
                    for run in finished[:count]:
                        shutil.copytree(run, folder / run.name)
            rows = sum(_rows(run) for run in sorted(p for p in folder.iterdir() if (p / "done").is_file()))
            times = [timed(folder, base / f"out{count}") for _ in range(args.repeat)]
            best[count], cpu = min(times)
            all_runs = "  ".join(f"{t:.2f}" for t, _ in times)
            print(f"{count:>6}{rows:>12,}{best[count]:>16.2f}{cpu:>8.2f}{all_runs:>20}")
        if len(counts) > 1:
            lo, hi = counts[0], counts[-1]
            per_run = (best[hi] - best[lo]) / (hi - lo)
            fixed = best[lo] - lo * per_run
            print(
                f"ratio {hi}/{lo} runs: {best[hi] / best[lo]:.2f}x (linear: {hi / lo:.1f}x; a fixed start-up "
                f"cost makes it smaller); {1000 * per_run:.2f} ms per extra run, fixed cost {fixed:.1f} s"
            )
        met = "met" if best[counts[-1]] <= TARGET_S else "MISSED"
        print(f"target: {counts[-1]} runs in <= {TARGET_S:.0f} s: {met}; load average now: {os.getloadavg()[0]:.2f}")


def _rows(run: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(run / "metrics.parquet").metadata.num_rows


if __name__ == "__main__":
    main()
