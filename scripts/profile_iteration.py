"""Where a training iteration spends its time: host dispatch and device kernels per phase, and host syncs.

A diagnostic companion of ``benchmark_speed.py`` (same trainers, built by its ``build_trainer`` from the LA bundle's
``train.json`` + the ablation file of each method through ``ConfigWorkflow``; same random batches): it runs
``--warmup`` iterations, then profiles ``--iterations`` more with ``torch.profiler`` and reports, per iteration,

* per phase of Algorithm 1 (teacher pseudo-labels, strong augmentation, student forwards, losses, CPS, optimiser
  step, μ step, EMA; "backward" is the autograd thread on CUDA — on the CPU it runs inside the main thread and
  is the part of the wall time no phase covers): host milliseconds, milliseconds of the kernels it launched, and
  its span on the device timeline (gaps included);
* the number of kernel launches and of top-level operator calls, and the total kernel time — when the kernel
  time is well below the wall time, the iteration is bound by the host (Python and dispatch), not the GPU;
* the 15 kernels (or CPU operators) that take longest;
* on CUDA, the number of host synchronisations in one iteration (``torch.cuda.set_sync_debug_mode("warn")``).

Phases are marked by wrapping the trainer's own methods in ``torch.profiler.record_function`` from the outside,
so the library carries no profiling code. Writes ``--out`` (JSON).

Examples::

    python scripts/profile_iteration.py --out profile.json                    # GPU: 112x112x80, fp32 and bf16
    python scripts/profile_iteration.py --device cpu --patch_size 32 32 32 --variants fp32 --out profile_cpu.json
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from crln_monai.workflow import ABLATION_LADDER

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark_speed import (  # noqa: E402
    BATCH,
    METHODS,
    VARIANTS,
    IterationTimer,
    _sync,
    build_trainer,
    command_line,
    machine_info,
    make_batches,
    variant_batches,
    write_json,
)

__all__ = ["PHASES", "main", "mark_phases", "profile_trainer"]

#: trainer attribute (dotted) -> phase name; each is a callable the iteration calls once or more.
PHASES = {
    "_pseudo_label": "teacher + pseudo-labels (incl. strong aug)",
    "strong_augment": "strong augmentation",
    "_student_forward": "student forwards",
    "loss_function": "segmentation losses",
    "pseudo_label_loss": "pseudo-label loss",
    "_cps": "CPS",
    "optimizer.step": "optimiser step",
    "_mu_step": "mu step",
    "teacher_ema.update": "teacher EMA",
}


def _wrapped(function: Callable, name: str) -> Callable:
    def call(*args: Any, **kwargs: Any) -> Any:
        with record_function(name):
            return function(*args, **kwargs)

    return call


def mark_phases(trainer: Any) -> list[str]:
    """Replace each of the trainer's :data:`PHASES` callables (instance attributes) by a ``record_function``
    wrapper; returns the phase names that exist on this trainer."""
    marked = []
    for path, name in PHASES.items():
        *parents, attribute = path.split(".")
        owner = trainer
        for parent in parents:
            owner = getattr(owner, parent)
        function = getattr(owner, attribute, None)
        if function is None:
            continue
        setattr(owner, attribute, _wrapped(function, name))
        marked.append(name)
    return marked


def _count_syncs(trainer: Any, batch: dict[str, torch.Tensor]) -> int | None:
    """Host synchronisations during one more iteration (CUDA only): warnings of the sync debug mode."""
    if not torch.cuda.is_available() or batch["image"].device.type != "cuda":
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            trainer._iteration(trainer, batch)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    for w in syncs[:10]:
        print(f"  sync: {w.filename}:{w.lineno}: {str(w.message)[:120]}")
    return len(syncs)


def profile_trainer(
    method: str, variant: str, patch_size: Sequence[int], device: torch.device, warmup: int, timed: int, seed: int = 0
) -> dict[str, Any]:
    """Profile ``timed`` iterations of ``method`` under ``variant`` after ``warmup``; per-iteration figures."""
    from ignite.engine import Events

    batches = make_batches(warmup + timed, patch_size, device, BATCH["labelled"], BATCH["unlabelled"], seed=seed)
    batches = variant_batches(batches, variant)
    trainer = build_trainer(method, batches, patch_size, device, seed=seed, **VARIANTS[variant])
    timer = IterationTimer(device, warmup)
    timer.attach(trainer)
    phases = mark_phases(trainer)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    profiler = profile(activities=activities)

    @trainer.on(Events.ITERATION_STARTED(once=warmup + 1))
    def _start(_: Any) -> None:
        _sync(device)
        profiler.__enter__()

    @trainer.on(Events.ITERATION_COMPLETED(once=warmup + timed))
    def _stop(_: Any) -> None:
        _sync(device)
        profiler.__exit__(None, None, None)

    trainer.run()
    syncs = _count_syncs(trainer, batches[0])
    averages = profiler.key_averages()
    events = profiler.events()
    per_phase: dict[str, dict[str, float]] = {}
    for event in events:  # a phase's host time, the kernels it launched, and its span on the device timeline
        if event.name not in phases:
            continue
        slot = per_phase.setdefault(event.name, {"host_ms": 0.0, "kernel_ms": 0.0, "device_span_ms": 0.0, "calls": 0})
        if event.device_type.name == "CPU":
            slot["host_ms"] += event.cpu_time_total / 1e3 / timed
            slot["kernel_ms"] += event.device_time_total / 1e3 / timed
            slot["calls"] += 1 / timed
        else:
            slot["device_span_ms"] += event.time_range.elapsed_us() / 1e3 / timed
    main_thread = Counter(e.thread for e in events if e.name in phases).most_common(1)
    main_thread = main_thread[0][0] if main_thread else None
    backward = [e for e in events if e.thread != main_thread and e.cpu_parent is None and e.device_type.name == "CPU"]
    per_phase["backward (autograd thread)"] = {
        "host_ms": sum(e.cpu_time_total for e in backward) / 1e3 / timed,
        "kernel_ms": sum(e.device_time_total for e in backward) / 1e3 / timed,
        "device_span_ms": 0.0,
        "calls": 0,
    }
    top_level_ops = sum(
        1 for e in events if e.device_type.name == "CPU" and e.name.startswith("aten::") and not _has_aten_parent(e)
    )
    if device.type == "cuda":  # kernels only (the phases' device-side annotations are left out)
        entries = [a for a in averages if a.device_type.name == "CUDA" and a.key not in phases]
        own_ms = {a.key: a.self_device_time_total / 1e3 / timed for a in entries}
        kernel_ms, launches = sum(own_ms.values()), sum(a.count for a in entries) / timed
    else:
        entries = [a for a in averages if a.key not in phases]
        own_ms = {a.key: a.self_cpu_time_total / 1e3 / timed for a in entries}
        kernel_ms, launches = None, None
    top = sorted(entries, key=lambda a: -own_ms[a.key])[:15]
    top_rows = [{"name": a.key[:100], "ms": own_ms[a.key], "calls": a.count / timed} for a in top]
    result = {
        "wall_ms_per_iteration_profiled": 1e3 * sum(timer.times) / len(timer.times),
        "phases": per_phase,
        "kernel_ms_per_iteration": kernel_ms,
        "kernel_launches_per_iteration": launches,
        "top_level_ops_per_iteration": top_level_ops / timed,
        "top": top_rows,
        "host_syncs_in_one_iteration": syncs,
    }
    del trainer, batches
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def _has_aten_parent(event: Any) -> bool:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith("aten::"):
            return True
        parent = parent.cpu_parent
    return False


def _print(method: str, variant: str, r: dict[str, Any]) -> None:
    print(f"[{variant}] {method}: wall {r['wall_ms_per_iteration_profiled']:.1f} ms/it (profiled), top-level ops "
          f"{r['top_level_ops_per_iteration']:.0f}/it, kernel launches {r['kernel_launches_per_iteration']}, kernel "
          f"time {r['kernel_ms_per_iteration']} ms/it, host syncs {r['host_syncs_in_one_iteration']}")  # fmt: skip
    for name, p in sorted(r["phases"].items(), key=lambda kv: -kv[1]["host_ms"]):
        print(f"    {name:44s} host {p['host_ms']:8.2f} ms   kernels {p['kernel_ms']:8.2f} ms   "
              f"device span {p['device_span_ms']:8.2f} ms")
    for row in r["top"][:15]:
        print(f"    {row['ms']:8.2f} ms  x{row['calls']:<6.1f} {row['name']}")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    parser.add_argument("--patch_size", type=int, nargs=3, default=None, help="default: CUDA 112 112 80, CPU 32 32 32")
    parser.add_argument("--warmup", type=int, default=None, help="default: CUDA 5, CPU 2")
    parser.add_argument("--iterations", type=int, default=None, help="profiled iterations (default: CUDA 5, CPU 2)")
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=["fp32", "bf16"])
    parser.add_argument(
        "--methods", nargs="+", choices=[*METHODS, *ABLATION_LADDER], default=list(METHODS),
        help="the LA bundle's trainer under this ablation rung ('crln' = crln_full; default: crln mean_teacher)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="profile_iteration.json")
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    patch = tuple(args.patch_size or ((112, 112, 80) if cuda else (32, 32, 32)))
    warmup = args.warmup if args.warmup is not None else (5 if cuda else 2)
    timed = args.iterations if args.iterations is not None else (5 if cuda else 2)
    machine = machine_info(device)
    print(f"command: {command_line(__file__, argv)}")
    print(f"machine: {json.dumps(machine)}")
    print(f"patch {patch}, batch 2+2, warm-up {warmup}, profiled {timed}", flush=True)
    results: dict[str, Any] = {}
    for variant in args.variants:
        for method in args.methods:
            r = profile_trainer(method, variant, patch, device, warmup, timed, args.seed)
            results[f"{variant}/{method}"] = r
            _print(method, variant, r)
    payload = {
        "script": "profile_iteration",
        "command": command_line(__file__, argv),
        "machine": machine,
        "settings": {"patch_size": list(patch), "warmup": warmup, "iterations": timed, "seed": args.seed},
        "results": results,
    }
    print(f"wrote {write_json(payload, args.out)}")
    return payload


if __name__ == "__main__":
    main()
