"""The training stage: fit the planned model with its recipe and save the checkpoint keyed by its hash; share
it between processes; cut a subnet from a trained supernet."""

from __future__ import annotations

import json
import logging
import time

from omegaconf import OmegaConf

from robustart.identity import recipe_label, training_key
from robustart.plan import Plan, adversarial_options

log = logging.getLogger("robustart")

#: recipe options that robustart resolves itself instead of passing to training.fit
_NOT_FIT_OPTIONS = ("name", "techniques", "sandwich_random", "inplace_distill", "drop_rate", "drop_path_rate",
                    "teacher", "teacher_weights", "init_from", "resume")  # fmt: skip


def train(plan: Plan, timings: dict, logger=None) -> None:
    from robustart.training import distributed, fit, save_checkpoint

    cfg = plan.cfg
    tcfg = OmegaConf.to_container(cfg.training, resolve=True)
    rank, world = distributed.current()
    log.info("training %s with recipe %r on %s/%s (%d samples%s)", cfg.model.name, recipe_label(tcfg), cfg.data.name,
             cfg.data.train_split, len(plan.train_data), f", {world} processes" if world > 1 else "")  # fmt: skip
    t = time.monotonic()
    train_hash, key = training_key(cfg)
    kwargs = {k: v for k, v in tcfg.items() if k not in _NOT_FIT_OPTIONS}
    kwargs["adversarial"] = adversarial_options(tcfg)
    kwargs.update(state_file=plan.state_file, state_key=train_hash, device=plan.device, progress=log.info,
                  log_metrics=logger.log if logger is not None else None)  # fmt: skip
    if tcfg.get("sandwich_random") is not None:
        from robustart.training.supernet import fit_supernet

        num_random, distill = tcfg["sandwich_random"], tcfg["inplace_distill"]
        log.info("supernet: each step trains the largest, the smallest and %d random subnets%s", num_random,
                 ", distilled from the largest" if distill else "")  # fmt: skip
        kwargs.pop("channels_last")
        metrics = fit_supernet(plan.model, plan.train_data, num_random=num_random, distill=distill, **kwargs)
    else:
        metrics = fit(plan.model, plan.train_data, teacher=plan.teacher, **kwargs)
    timings["train_s"] = time.monotonic() - t
    meta = plan.model.metadata
    card = {
        "config_hash": train_hash,
        "entry": plan.trained_entry,
        "recipe": tcfg,
        "model": key["model"],
        "num_classes": meta.num_classes,
        "in_chans": meta.in_chans,
        "data": {**key["data"], "num_samples": len(plan.train_data)},
        "epochs": tcfg["epochs"],
        "processes": world,
        "final_metrics": metrics,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if rank == 0:
        save_checkpoint(plan.checkpoint_dir, plan.model.net, card)
        if plan.state_file is not None and plan.state_file.parent == plan.checkpoint_dir:
            plan.state_file.unlink(missing_ok=True)  # the finished checkpoint supersedes it
        plan.checkpoint = {**card, **(json.loads((plan.checkpoint_dir / "checkpoint.json").read_text()))}
        plan.checkpoint["path"] = str(plan.checkpoint_dir / plan.checkpoint["weights"])
        log.info("checkpoint saved to %s", plan.checkpoint_dir)


def share_checkpoint(plan: Plan) -> None:
    """After data-parallel training, every process evaluates the weights rank 0 saved (batch-norm statistics
    differ between processes until then)."""
    from robustart import model_zoo
    from robustart.training import distributed, find_checkpoint

    distributed.barrier()
    if plan.world.rank == 0:
        return
    plan.checkpoint = find_checkpoint(plan.checkpoint_dir)
    if plan.trained_entry == plan.cfg.model.name:  # a subnet is cut from the saved supernet in any case
        meta = plan.model.metadata
        plan.model = model_zoo.create_model(plan.cfg.model.name, weights=str(plan.checkpoint_dir),
                                            num_classes=meta.num_classes, in_chans=meta.in_chans,
                                            img_size=plan.cfg.model.img_size)  # fmt: skip


def cut_subnet(plan: Plan, timings: dict) -> None:
    """Replace the supernet by the configured subnet with its sliced weights, then re-estimate the subnet's
    batch-norm statistics on ``model.bn_batches`` training batches (the supernet's are a mix of every subnet's)."""
    import torch
    from torch.utils.data import DataLoader, Subset

    from robustart import model_zoo
    from robustart.model_zoo.nas import recalibrate_bn

    cfg, t = plan.cfg, time.monotonic()
    if plan.checkpoint_dir is not None:  # trained here: the subnet is cut from the checkpoint just written
        meta = plan.model.metadata
        plan.model = model_zoo.create_model(cfg.model.name, weights=str(plan.checkpoint_dir), subnet=cfg.model.subnet,
                                            num_classes=meta.num_classes, in_chans=meta.in_chans,
                                            img_size=cfg.model.img_size)  # fmt: skip
    batch = cfg.evaluation.batch_size
    count = min(len(plan.train_data), cfg.model.bn_batches * batch)
    order = torch.randperm(len(plan.train_data), generator=torch.Generator().manual_seed(cfg.seed))[:count]
    loader = DataLoader(Subset(plan.train_data, order.tolist()), batch_size=batch, num_workers=cfg.data.num_workers)
    recalibrate_bn(plan.model.to(plan.device), (images.to(plan.device) for images, *_ in loader))
    genes = plan.model.metadata.genes or {}
    log.info("subnet %s cut from %s; batch norm re-estimated on %d training images (%.1f s)", genes.get("subnet"),
             plan.trained_entry, count, time.monotonic() - t)  # fmt: skip
    timings["bn_recalibration_s"] = time.monotonic() - t
