"""Experiment tracking: an optional wandb run that receives the config, the metrics and a figure."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from robustart.errors import UserError

log = logging.getLogger("robustart")


def check_logger(cfg: DictConfig) -> None:
    if cfg.logger.name not in ("none", "wandb"):
        raise UserError(f"unknown logger {cfg.logger.name!r}; valid names: none, wandb")
    if cfg.logger.name == "wandb":
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise UserError('logger=wandb needs wandb: pip install "robustart[wandb]"') from None


def log_results(logger, metrics) -> None:
    """Send the run's metrics to wandb: one value per (noise, condition, metric, severity, eps), the whole table,
    and a figure of accuracy per condition (attack budgets and corruption severities on the x axis)."""
    import wandb

    logger.log({f"{r.noise}/{r.condition}/{r.metric}/{r.severity}/{r.eps}": r.value for r in metrics.itertuples()})
    table = metrics.astype({c: "object" for c in metrics.columns if str(metrics[c].dtype) in ("Int64", "Float64")})
    logger.log({"metrics": wandb.Table(dataframe=table)})
    figure = accuracy_figure(metrics)
    if figure is not None:
        logger.log({"accuracy_by_condition": wandb.Image(figure)})
        import matplotlib.pyplot as plt

        plt.close(figure)
    logger.finish()


def accuracy_figure(metrics):
    """One run's accuracy per condition: robust accuracy against eps for each attack, accuracy against
    severity for each corruption (``None`` when the run has neither)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("eps", metrics[(metrics["metric"] == "robust_acc") & metrics["eps"].notna()], "attack budget (eps)"),
        ("severity", metrics[(metrics["metric"] == "acc") & metrics["severity"].notna()], "severity"),
    ]
    panels = [p for p in panels if len(p[1])]
    if not panels:
        return None
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.5), squeeze=False)
    for ax, (x, rows, label) in zip(axes[0], panels, strict=True):
        for name, curve in rows.groupby("condition", sort=False):
            curve = curve.sort_values(x)
            ax.plot(curve[x].astype(float), curve["value"].astype(float), marker="o", label=name)
        ax.set_xlabel(label)
        ax.set_ylabel("accuracy")
        ax.set_ylim(0, 1)
        ax.legend(fontsize="small")
    figure.tight_layout()
    return figure


def start_logger(cfg: DictConfig, run_dir: Path):
    """A wandb run whose files live in the run folder, or None for console-only logging."""
    if cfg.logger.name == "none":
        return None
    import wandb

    run_dir.mkdir(parents=True, exist_ok=True)
    return wandb.init(
        project=cfg.logger.project,
        mode=cfg.logger.mode,
        dir=str(run_dir),
        name=run_dir.name,
        config=OmegaConf.to_container(cfg, resolve=True),
    )
