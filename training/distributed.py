"""Data-parallel training across processes: the process group from torchrun's or Slurm's environment.

``torchrun --nproc_per_node=2 -m robustart training=...`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``; ``srun python -m robustart ...`` sets ``SLURM_PROCID``, ``SLURM_NTASKS``,
``SLURM_LOCALID`` and the job's node list instead, which :func:`environment` translates. One process alone
(no such variables, or a world of one) is not distributed, and nothing is initialised.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    source: str = "single"  # single, torchrun or slurm

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def first_host(nodelist: str) -> str:
    """The first host of a Slurm node list: ``gpu[03-05,09],cpu1`` -> ``gpu03``; ``a,b`` -> ``a``."""
    head = re.match(r"([^,\[]+)(\[([^\]]+)\])?", nodelist.strip())
    if head is None:
        raise ValueError(f"cannot read the Slurm node list {nodelist!r}")
    prefix, ranges = head.group(1), head.group(3)
    if ranges is None:
        return prefix
    return prefix + ranges.split(",")[0].split("-")[0]


def environment(env: dict[str, str] | None = None) -> World:
    """Where this process stands, read from torchrun's variables, else Slurm's, else a world of one."""
    env = dict(os.environ if env is None else env)
    if "WORLD_SIZE" in env and "RANK" in env:
        return World(
            rank=int(env["RANK"]),
            size=int(env["WORLD_SIZE"]),
            local_rank=int(env.get("LOCAL_RANK", 0)),
            master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
            master_port=int(env.get("MASTER_PORT", 29500)),
            source="torchrun",
        )
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env:
        nodes = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or "127.0.0.1"
        job = int(env.get("SLURM_JOB_ID", "0") or 0)
        return World(
            rank=int(env["SLURM_PROCID"]),
            size=int(env["SLURM_NTASKS"]),
            local_rank=int(env.get("SLURM_LOCALID", 0)),
            master_addr=env.get("MASTER_ADDR") or first_host(nodes),
            # one port per job, so that two jobs sharing a node do not collide
            master_port=int(env.get("MASTER_PORT") or 20000 + job % 20000),
            source="slurm",
        )
    return World()


def init(world: World, device: Any) -> None:
    """Join the process group (NCCL for CUDA devices, gloo otherwise); a no-op for a world of one."""
    import torch.distributed as dist

    if not world.distributed or dist.is_initialized():
        return
    os.environ.setdefault("MASTER_ADDR", world.master_addr)
    os.environ.setdefault("MASTER_PORT", str(world.master_port))
    backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
    dist.init_process_group(backend, rank=world.rank, world_size=world.size)
    global _wait_group
    # processes finish their share of an evaluation hours apart: their meeting point waits that long
    _wait_group = dist.new_group(backend="gloo", timeout=timedelta(days=7))


_wait_group = None


def barrier() -> None:
    """Wait until every process gets here (through a gloo group that waits for days); a no-op in one process."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier(group=_wait_group)


def share(value: Any) -> Any:
    """Rank 0's ``value`` (any picklable object) on every process, through the gloo group that waits for days, so
    that the others can wait as long as rank 0 takes to decide (a run lock it waits for); ``value`` in one process."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0, group=_wait_group)
    return box[0]


def shutdown() -> None:
    """Leave the process group if one was joined."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def current() -> tuple[int, int]:
    """``(rank, world size)`` of the initialised process group, ``(0, 1)`` without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1
