"""Time of the sliding-window evaluation of the LA test set (target: 20 volumes in <= 10 s on an H100/H200,
docs/design.md#performance-targets).

``UAMTSlidingWindowInferer`` (LA stride 18x18x4, patch 112x112x80, softmax averaging) on
``RectifiedPrediction(CRLN)`` in eval mode under ``torch.no_grad``, followed by the argmax, for each of the
20 LA test volumes: read from ``--data_dir`` (default ``../shared/data/la2018`` beside the repository) when it
exists, else synthetic volumes with the LA test sizes. Each volume is loaded and min-max normalised on the device
before its clock starts, so the time is inference only. The network has random weights (the cost does not depend
on them). Settings: fp32 and/or bf16 autocast, and one or more ``sw_batch_size`` values.

On a CPU the default is 2 volumes; the total for all 20 is then extrapolated from the measured seconds per
window and the window counts of the other volumes, and flagged ``extrapolated: true``.

Examples::

    python scripts/benchmark_sliding_window.py --out bench_sw.json        # GPU: 20 volumes, fp32+bf16, 4/16/32
    python scripts/benchmark_sliding_window.py --device cpu --out bench_sw_cpu.json   # CPU: 2 volumes, fp32, 4
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark_speed import _sync, command_line, machine_info, write_json  # noqa: E402

__all__ = ["LA_TEST_SHAPES", "la_cases", "load_test_volumes", "main", "num_windows", "parse_args", "time_volumes"]

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO.parent / "shared" / "data" / "la2018"
#: spatial sizes of the 20 LA test volumes (UA-MT ``test.list`` order), used for synthetic stand-ins
LA_TEST_SHAPES: tuple[tuple[int, int, int], ...] = (
    (175, 132, 88), (196, 148, 88), (215, 140, 88), (209, 140, 88), (170, 136, 88),
    (210, 154, 88), (168, 136, 88), (215, 147, 88), (191, 154, 88), (186, 143, 88),
    (183, 133, 88), (190, 135, 88), (190, 138, 88), (187, 139, 88), (177, 139, 88),
    (182, 136, 88), (178, 146, 88), (192, 141, 88), (231, 143, 88), (232, 144, 88),
)  # fmt: skip
DTYPES = {"fp32": None, "bf16": "bfloat16"}


def num_windows(shape: Sequence[int], patch_size: Sequence[int], stride: Sequence[int]) -> int:
    """Number of UA-MT windows over a volume of spatial ``shape``."""
    from crln_monai.evaluation import window_starts

    return math.prod(len(window_starts(s, p, t)) for s, p, t in zip(shape, patch_size, stride))


def la_cases(data_dir: Path, ids_key: str) -> list[dict[str, str]]:
    """``[{"case", "image", "label"}]`` (absolute paths) of the ids in ``dataset.json[ids_key]``, in that order.

    The LA ``dataset.json`` lists every case under ``training`` and names the split by case id (``train_ids``,
    ``test_ids``); ids are the image file names without ``.nii.gz``.

    Raises:
        ValueError: ``ids_key`` is missing, or names a case that ``training`` lacks.
    """
    meta = json.loads((data_dir / "dataset.json").read_text())
    if ids_key not in meta:
        raise ValueError(f"{data_dir / 'dataset.json'} has no {ids_key!r} list of case ids.")
    by_id = {}
    for entry in meta.get("training", []):
        case = Path(entry["image"]).name.removesuffix(".nii.gz")
        by_id[case] = {"case": case, "image": str((data_dir / entry["image"]).resolve()),
                       "label": str((data_dir / entry["label"]).resolve()) if "label" in entry else None}  # fmt: skip
    missing = [i for i in meta[ids_key] if i not in by_id]
    if missing:
        raise ValueError(f"{data_dir / 'dataset.json'}: {ids_key} names cases not in 'training': {missing[:5]}.")
    return [by_id[i] for i in meta[ids_key]]


def load_test_volumes(
    data_dir: Path | None, max_volumes: int, volume_shape: Sequence[int] | None = None, seed: int = 0
) -> tuple[list[tuple[str, torch.Tensor]], list[tuple[int, int, int]], str]:
    """The first ``max_volumes`` test volumes ``(case, (1, 1, H, W, D) float32 in [0, 1])`` on the CPU.

    Returns:
        ``(volumes, shapes of all test volumes, source)`` where ``source`` is ``"la2018"`` or ``"synthetic"``.
    """
    if data_dir is not None and (data_dir / "dataset.json").is_file():
        import nibabel as nib

        from crln_monai.data import evaluation_transforms

        test = la_cases(data_dir, "test_ids")
        shapes = [tuple(int(s) for s in nib.load(item["image"]).shape[:3]) for item in test]
        load = evaluation_transforms(with_label=False)
        volumes = [(c["case"], load({"image": c["image"]})["image"].as_tensor()[None]) for c in test[:max_volumes]]
        return volumes, shapes, "la2018"
    shapes = [tuple(volume_shape)] * len(LA_TEST_SHAPES) if volume_shape else list(LA_TEST_SHAPES)
    g = torch.Generator().manual_seed(seed)
    count = min(max_volumes, len(shapes))
    volumes = [(f"synthetic_{i:02d}", torch.rand(1, 1, *shapes[i], generator=g)) for i in range(count)]
    return volumes, shapes, "synthetic"


def time_volumes(
    network: torch.nn.Module,
    volumes: list[tuple[str, torch.Tensor]],
    patch_size: Sequence[int],
    stride: Sequence[int],
    sw_batch_size: int,
    dtype: str,
    device: torch.device,
) -> list[dict[str, Any]]:
    """Seconds of sliding window + argmax per volume (after a warm-up); ``[{case, shape, windows, seconds}]``."""
    from crln_monai.evaluation import UAMTSlidingWindowInferer

    inferer = UAMTSlidingWindowInferer(patch_size, stride, sw_batch_size=sw_batch_size, amp_dtype=DTYPES[dtype])
    with torch.no_grad():
        # warm-up: a whole volume on a GPU (kernel selection for every batch size), one window batch on a CPU
        if device.type == "cuda":
            inferer(volumes[0][1].to(device), network).argmax(1)
        else:
            window = torch.zeros(sw_batch_size, 1, *patch_size, device=device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16"):
                network(window)
        _sync(device)
        rows = []
        for case, volume in volumes:
            volume = volume.to(device)
            _sync(device)
            start = time.perf_counter()
            inferer(volume, network).argmax(1)
            _sync(device)
            shape = tuple(volume.shape[2:])
            rows.append({"case": case, "shape": list(shape), "windows": num_windows(shape, patch_size, stride),
                         "seconds": time.perf_counter() - start})  # fmt: skip
    return rows


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    parser.add_argument("--data_dir", default=None, help="LA folder with dataset.json (default: ../shared/data/la2018)")
    parser.add_argument("--synthetic", action="store_true", help="use synthetic volumes even if the LA data exists")
    parser.add_argument("--volume_shape", type=int, nargs=3, default=None, help="synthetic volumes of this size")
    parser.add_argument("--max_volumes", type=int, default=None, help="volumes to time (default: CUDA 20, CPU 2)")
    parser.add_argument("--sw_batch_sizes", type=int, nargs="+", default=None, help="default: CUDA 4 16 32, CPU 4")
    parser.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=None, help="CUDA: both; CPU: fp32")
    parser.add_argument("--patch_size", type=int, nargs=3, default=(112, 112, 80))
    parser.add_argument("--stride", type=int, nargs=3, default=(18, 18, 4))
    parser.add_argument(
        "--cudnn_benchmark", choices=("on", "off"), default="off",
        help="torch.backends.cudnn.benchmark (off: the last window batch of each volume has its own size)",
    )  # fmt: skip
    parser.add_argument(
        "--flush_denormal", choices=("on", "off"), default="on",
        help="CPU: torch.set_flush_denormal (eval-mode activations underflow; off was 3-6x slower here)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmark_sliding_window.json", help="JSON results file")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print and write the results; returns the JSON payload."""
    try:
        return _run(argv)
    finally:
        torch.set_flush_denormal(False)  # back to the process default (set on the CPU for evaluation speed)


def _run(argv: Sequence[str] | None) -> dict[str, Any]:
    from crln_monai.networks import CRLN, RectifiedPrediction

    args = parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = args.cudnn_benchmark == "on"
    flush = not cuda and args.flush_denormal == "on"
    if flush:
        torch.set_flush_denormal(True)
    max_volumes = args.max_volumes or (20 if cuda else 2)
    sw_batch_sizes = args.sw_batch_sizes or ([4, 16, 32] if cuda else [4])
    dtypes = args.dtypes or (["fp32", "bf16"] if cuda else ["fp32"])
    patch, stride = tuple(args.patch_size), tuple(args.stride)
    machine = machine_info(device)
    print(f"command: {command_line(__file__, argv)}")
    print(f"machine: {json.dumps(machine)}")

    data_dir = None if args.synthetic else Path(args.data_dir) if args.data_dir else DEFAULT_DATA_DIR
    volumes, all_shapes, source = load_test_volumes(data_dir, max_volumes, args.volume_shape, args.seed)
    all_windows = [num_windows(s, patch, stride) for s in all_shapes]
    print(f"{len(volumes)} of {len(all_shapes)} test volumes ({source}), patch {patch}, stride {stride}, "
          f"{sum(all_windows)} windows over all {len(all_shapes)} volumes", flush=True)  # fmt: skip

    torch.manual_seed(args.seed)
    network = RectifiedPrediction(CRLN(patch_size=patch)).to(device).eval()
    results = []
    for dtype in dtypes:
        for sw_batch_size in sw_batch_sizes:
            rows = time_volumes(network, volumes, patch, stride, sw_batch_size, dtype, device)
            seconds = [r["seconds"] for r in rows]
            measured_windows = sum(r["windows"] for r in rows)
            per_window = sum(seconds) / measured_windows
            remaining = sum(all_windows) - measured_windows
            total_all = sum(seconds) + per_window * remaining
            result = {
                "dtype": dtype,
                "sw_batch_size": sw_batch_size,
                "volumes_timed": len(rows),
                "median_s_per_volume": statistics.median(seconds),
                "total_s_measured": sum(seconds),
                "s_per_window": per_window,
                "total_s_all_volumes": total_all,
                "num_volumes_all": len(all_shapes),
                "extrapolated": len(rows) < len(all_shapes),
                "per_volume": rows,
            }
            results.append(result)
            note = f" (extrapolated from {len(rows)} volumes by windows)" if result["extrapolated"] else ""
            print(
                f"[{dtype}, sw_batch_size {sw_batch_size}] median {result['median_s_per_volume']:.3f} s/volume, "
                f"{per_window * 1000:.1f} ms/window; all {len(all_shapes)} volumes {total_all:.2f} s{note}",
                flush=True,
            )
    best = min(results, key=lambda r: r["total_s_all_volumes"])
    check = {
        "name": "20-volume LA test set (best setting)",
        "value": best["total_s_all_volumes"],
        "target": "<= 10 s (GPU)",
        "pass": best["total_s_all_volumes"] <= 10.0,
        "setting": {"dtype": best["dtype"], "sw_batch_size": best["sw_batch_size"]},
    }
    print(
        f"best: {best['dtype']}, sw_batch_size {best['sw_batch_size']}: {best['total_s_all_volumes']:.2f} s "
        f"for {len(all_shapes)} volumes (target <= 10 s on an H100/H200) {'PASS' if check['pass'] else 'MISS'}"
    )
    payload = {
        "script": "benchmark_sliding_window",
        "command": command_line(__file__, argv),
        "machine": machine,
        "settings": {
            "source": source,
            "patch_size": list(patch),
            "stride": list(stride),
            "sw_batch_sizes": sw_batch_sizes,
            "dtypes": dtypes,
            "max_volumes": max_volumes,
            "network": "RectifiedPrediction(CRLN(patch_size)), random weights, eval mode, no grad",
            "timed": "inferer(volume) + argmax, volume already on the device",
            "cudnn_benchmark": bool(cuda and args.cudnn_benchmark == "on"),
            "flush_denormal": flush,
        },
        "results": results,
        "check": check,
        "all_volume_windows": all_windows,
    }
    out = write_json(payload, args.out)
    print(f"wrote {out}")
    return payload


if __name__ == "__main__":
    main()
