#!/usr/bin/env python
"""A thick-slice data set against its twin stored with the thick axis first: the same plan, run and test Dice?

The twin (:func:`thick_first_twin`) holds every volume with the slice axis first and an affine that makes it the
world's x axis: thick sagittal instead of thick axial slices. Each of the two is planned by
``crln-plan`` for the same number of iterations and trained and evaluated through ``bundles/custom`` with
``deterministic True``: the plan reorients the twin so its thick axis goes last, so both runs should see the same
arrays and give the same test Dice. Per-case and per-class Dice of both go to ``--out`` (JSON) and ``.md``.

Example (the demo's data, 300 iterations)::

    python scripts/thick_axis_twin.py --work_dir work/twin --out docs/measurements/thick_axis_twin.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark_speed import command_line, machine_info, write_json  # noqa: E402
from la_accuracy import run_logged  # noqa: E402
from own_data_protocol import per_class  # noqa: E402

from crln_monai.data import make_synthetic_dataset  # noqa: E402
from crln_monai.demo import DEMO, per_case_dice  # noqa: E402
from crln_monai.overrides import run_command  # noqa: E402
from crln_monai.plan import plan_dataset  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bundles" / "custom" / "configs"


def thick_first_twin(original: Path, twin: Path) -> Path:
    """Write ``original`` (axis-aligned affines) with voxel axis 2 moved first and made the world's x axis."""
    for path in original.rglob("*.nii.gz"):
        image = nib.load(str(path))
        array = np.moveaxis(np.asarray(image.dataobj), 2, 0)
        zooms = image.header.get_zooms()[:3]
        target = twin / path.relative_to(original)
        target.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(array, np.diag([zooms[2], zooms[0], zooms[1], 1.0])), str(target))
    meta = json.loads((original / "dataset.json").read_text())
    meta.pop("synthetic", None)
    (twin / "dataset.json").write_text(json.dumps(meta))
    return twin


def _run(name: str, data: Path, work: Path, iterations: int, num_labelled: int) -> dict[str, Any]:
    plan = plan_dataset(data, num_labelled=num_labelled, iterations=iterations, device="cpu")
    plan_file = work / f"{name}_plan.json"
    plan_file.write_text(json.dumps(plan.overrides, indent=2))
    run_dir = work / "runs" / name
    runtime = {"device": "$torch.device('cpu')", "deterministic": True}
    files = [CONFIGS / "train.json", plan_file]
    seconds = run_logged(run_command("training", files, runtime, bundle_root=run_dir), run_dir / "train.log")
    evaluate = run_command("evaluating", files + [CONFIGS / "evaluate.json"], runtime, bundle_root=run_dir)
    seconds += run_logged(evaluate, run_dir / "evaluate.log")
    summary = json.loads((run_dir / "eval" / "summary.json").read_text())
    keys = ("orientation", "backbone", "patch_size", "strides", "target_spacing")
    return {"plan": {k: plan.overrides[k] for k in keys}, "classes": per_class(summary),
            "per_case": per_case_dice(run_dir), "seconds": seconds}  # fmt: skip


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="a thick-slice data set (default: the demo's)")
    parser.add_argument("--work_dir", type=Path, default=Path("work/twin"))
    parser.add_argument("--out", type=Path, default=Path("thick_axis_twin.json"))
    parser.add_argument("--iterations", type=int, default=DEMO["iterations"])
    parser.add_argument("--num_labelled", type=int, default=DEMO["num_labelled"])
    args = parser.parse_args(argv)
    work = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    original = args.data.resolve() if args.data else make_synthetic_dataset(work / "original", **DEMO["data"])
    twin = thick_first_twin(original, work / "twin")
    payload = {"command": command_line(), "machine": machine_info(), "iterations": args.iterations, "results": {}}
    for name, data in (("original", original), ("thick_first_twin", twin)):
        payload["results"][name] = _run(name, data, work, args.iterations, args.num_labelled)
        write_json(payload, args.out)
    rows = ["| run | orientation | " + " | ".join(payload["results"]["original"]["per_case"]) + " | mean Dice |",
            "|---|---|" + "---|" * (len(payload["results"]["original"]["per_case"]) + 1)]  # fmt: skip
    for name, result in payload["results"].items():
        cells = " | ".join(f"{100 * v:.2f}" for v in result["per_case"].values())
        rows.append(f"| {name} | {result['plan']['orientation']} | {cells} | "
                    f"{100 * result['classes']['mean']['dice']:.2f} |")  # fmt: skip
    args.out.with_suffix(".md").write_text("\n".join(rows) + "\n")
    print("\n".join(rows))
    return payload


if __name__ == "__main__":
    main()
