"""Small helpers for DistributedDataParallel training launched by ``torchrun`` (bundle ``multi_gpu_train.json``).

Everything here is a no-op or returns the single-process answer when no process group is initialised, so the
trainer can call the collective helpers unconditionally. See ``docs/multi_gpu.md`` for the launch commands.
"""

from __future__ import annotations

import datetime
import inspect
import logging
import os
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

__all__ = [
    "all_reduce_mean_",
    "any_across_ranks",
    "batchnorm_statistics",
    "check_validation_split",
    "destroy_distributed",
    "init_distributed",
    "is_distributed",
    "local_device",
    "log_on_first_rank",
    "on_first_rank",
    "wrap_ddp",
]


def is_distributed() -> bool:
    """``True`` when a default process group with more than one rank is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def local_device() -> torch.device:
    """``cuda:LOCAL_RANK`` when CUDA is available (``LOCAL_RANK`` is set by torchrun, default 0), else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def init_distributed(timeout_minutes: float = 60.0) -> torch.device:
    """Initialise the default process group from torchrun's environment and return this rank's device.

    The backend is NCCL when CUDA is available (after ``torch.cuda.set_device(cuda:LOCAL_RANK)``), else Gloo.
    Calling it again once the group exists only returns the device. The timeout bounds how long a rank waits
    in a collective while another one works alone (rank 0 writing a checkpoint, for example).

    Args:
        timeout_minutes: collective timeout.

    Returns:
        :func:`local_device`.

    Raises:
        ValueError: when torchrun's ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT`` are not set.
    """
    device = local_device()
    if dist.is_initialized():
        return device
    missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise ValueError(
            f"environment variables {missing} are not set: launch multi-GPU training with torchrun "
            "(`torchrun --nproc_per_node=N -m monai.bundle run training ...`), see docs/multi_gpu.md."
        )
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=timeout_minutes))
    return device


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def on_first_rank(value: Any, otherwise: Any = None) -> Any:
    """``value`` on rank 0 (or without a process group), ``otherwise`` on the other ranks: what only one rank does
    (the progress log, TensorBoard, the history file, validation's handlers) is configured through this call."""
    return value if _rank() == 0 else otherwise


def log_on_first_rank() -> None:
    """The root logger at INFO on rank 0 and WARNING elsewhere, so one rank reports progress and all report faults."""
    logging.getLogger().setLevel(on_first_rank(logging.INFO, logging.WARNING))


def destroy_distributed() -> None:
    """Destroy the default process group if there is one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wrap_ddp(
    network: nn.Module,
    device: str | torch.device,
    ignore_prefixes: Sequence[str] = ("rectifier.",),
    find_unused_parameters: bool = False,
) -> DistributedDataParallel:
    """Wrap the student in ``DistributedDataParallel`` for :class:`~crln_monai.engines.SemiSupervisedTrainer`.

    * Parameters whose name starts with one of ``ignore_prefixes`` are left out of DDP's gradient reducer. The
      rectifier gets no gradient from the student objective (it is trained by the separate μ step, which calls
      ``network.rectifier`` directly and all-reduces its own gradient), and without this DDP would wait for it
      in every backward (or need ``find_unused_parameters=True``, an extra graph walk per forward).
    * The trainer calls the wrapper twice before one backward (labelled batch with the DIM, unlabelled batch
      without): every other parameter receives its summed gradient once, so DDP's reducer fires once per
      parameter and averages over the ranks.
    * Buffers are synchronised once at construction (from rank 0) and not at every forward: the trainer
      averages the BatchNorm statistics of student and teacher itself after each iteration.
    * ``find_unused_parameters`` is for ablations whose student leaves other modules unused (e.g. a network
      built with a DIM trained with ``use_dim=False``); the bundle builds only the modules it trains.

    Args:
        network: the student (on ``device``).
        device: its device; CUDA devices become ``device_ids``.
        ignore_prefixes: parameter-name prefixes kept out of DDP.
        find_unused_parameters: passed to DDP.

    Returns:
        the wrapper; the student stays reachable as ``.module``.

    Raises:
        ValueError: without an initialised process group.
    """
    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError("wrap_ddp needs an initialised process group: call init_distributed() first.")
    device = torch.device(device)
    ignored = [name for name, _ in network.named_parameters() if name.startswith(tuple(ignore_prefixes))]
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(network, ignored)
    kwargs: dict = {
        "device_ids": [device] if device.type == "cuda" else None,
        "find_unused_parameters": find_unused_parameters,
        "gradient_as_bucket_view": True,
    }
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
        kwargs["forward_sync_buffers"] = False  # newer torch; still syncs at construction
    else:
        kwargs["broadcast_buffers"] = False
    return DistributedDataParallel(network, **kwargs)


def all_reduce_mean_(tensors: Iterable[torch.Tensor]) -> None:
    """Replace each tensor by its mean over the ranks, in place, with one all-reduce per dtype and device.

    A no-op outside a multi-rank group. Every rank must pass tensors of the same shapes in the same order.

    Args:
        tensors: floating-point tensors (gradients, BatchNorm statistics).
    """
    if not is_distributed():
        return
    groups: dict[tuple[torch.dtype, torch.device], list[torch.Tensor]] = {}
    for t in tensors:
        groups.setdefault((t.dtype, t.device), []).append(t)
    world = dist.get_world_size()
    for group in groups.values():
        flat = torch.cat([t.reshape(-1) for t in group])
        dist.all_reduce(flat)
        flat /= world
        for t, mean in zip(group, flat.split([t.numel() for t in group])):
            t.copy_(mean.view_as(t))


def batchnorm_statistics(*modules: nn.Module) -> list[torch.Tensor]:
    """The running means and variances of every BatchNorm layer of ``modules`` (the floating-point buffers that
    each rank updates from its own batches; ``num_batches_tracked`` is the same on every rank)."""
    stats: list[torch.Tensor] = []
    for module in modules:
        for layer in module.modules():
            if isinstance(layer, nn.modules.batchnorm._BatchNorm) and layer.running_mean is not None:
                stats += [layer.running_mean, layer.running_var]
    return stats


def any_across_ranks(flag: torch.Tensor) -> torch.Tensor:
    """Logical OR of a boolean scalar over the ranks (the flag itself outside a multi-rank group)."""
    if not is_distributed():
        return flag
    value = flag.to(torch.int32)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return value.bool()


def check_validation_split(num_validation: int) -> None:
    """Raise if the validation cases cannot give every rank at least one (an empty rank would leave the others
    waiting in the metric's all-gather).

    Args:
        num_validation: the number of validation cases (``val_ids`` or carved by ``num_validation``).

    Raises:
        ValueError: when ``0 < num_validation < world_size``.
    """
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    if 0 < num_validation < world:
        raise ValueError(
            f"{num_validation} validation case(s) for {world} processes: distributed validation gives each rank a "
            "share of the cases; use at least one validation case per rank or none (num_validation 0, and "
            "use_val_ids False where dataset.json has val_ids)."
        )
