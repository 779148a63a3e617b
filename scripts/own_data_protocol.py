#!/usr/bin/env python
"""Own-data protocol: does the dataset plan's foreground sampling help where the structures are small?

A synthetic multi-class data set whose structures fill a small part of the field of view
(:func:`crln_monai.data.make_synthetic_dataset` with ``object_scale``; 4 classes, truly unlabelled images without
label files) is planned by ``python -m crln_monai.plan`` for the given budget, then trained twice through
``bundles/custom`` as a user would: with the plan as written, and with the same plan but uniform labelled crops
(``--foreground_share 0.0``, what every bundle did before the plan). Both are evaluated on the same test cases
by ``evaluate.json``; the per-class Dice of both goes to ``--out`` (JSON) and the same name with ``.md``.

Example::

    python scripts/own_data_protocol.py --work_dir work/own_data --iterations 300 --out docs/measurements/own_data_synthetic.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark_speed import command_line, machine_info, write_json  # noqa: E402
from la_accuracy import run_logged  # noqa: E402

from crln_monai.overrides import run_command  # noqa: E402
from crln_monai.data import make_synthetic_dataset  # noqa: E402
from crln_monai.plan import format_table, plan_dataset  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bundles" / "custom" / "configs"
VARIANTS: dict[str, dict[str, Any]] = {"plan": {}, "uniform_crops": {"foreground_share": 0.0}}
"""The runs: the plan as written, and the plan with uniform labelled crops."""


def per_class(summary: dict[str, Any]) -> dict[str, Any]:
    """``{class: {dice, dice_std, empty_predictions}}`` and the foreground mean, from an evaluation's summary."""
    rows = {
        name: {
            "dice": c["metrics"]["dice"]["mean"], "dice_std": c["metrics"]["dice"]["std"],
            "empty_predictions": c["num_empty_predictions"],
        }  # fmt: skip
        for name, c in summary["classes"].items()
    }
    rows["mean"] = {
        "dice": summary["metrics"]["dice"]["mean"], "dice_std": summary["metrics"]["dice"]["std"],
        "empty_predictions": summary["num_empty_predictions"],
    }  # fmt: skip
    return rows


def markdown(payload: dict[str, Any]) -> str:
    names = list(next(iter(payload["results"].values()))["classes"])
    lines = [
        f"# Own-data protocol: {payload['data']['description']}",
        "",
        f"- command: `{payload['command']}`",
        f"- machine: {payload['machine']['processor']}, {payload['machine']['cpu_count']} cores, torch "
        f"{payload['machine']['torch']}",
        f"- budget: {payload['iterations']} iterations per run; plan: `{json.dumps(payload['plan'])}`",
        "",
        "| run | " + " | ".join(f"{n} Dice (%)" for n in names) + " | empty predictions | train s |",
        "|---|" + "---|" * (len(names) + 2),
    ]
    for variant, result in payload["results"].items():
        cells = [f"{100 * c['dice']:.2f} ± {100 * c['dice_std']:.2f}" for c in result["classes"].values()]
        empties = ", ".join(f"{n} {c['empty_predictions']}" for n, c in result["classes"].items() if n != "mean")
        lines.append(f"| {variant} | " + " | ".join(cells) + f" | {empties} | {result['train_seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work_dir", default="work/own_data")
    parser.add_argument("--out", default="own_data_synthetic.json")
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--shape", type=int, nargs=3, default=[80, 80, 48])
    parser.add_argument("--object_scale", type=float, default=0.5)
    parser.add_argument("--num_cases", type=int, default=24)
    parser.add_argument("--num_test", type=int, default=6)
    parser.add_argument("--num_labelled", type=int, default=4)
    parser.add_argument("--max_patch_voxels", type=int, default=48 * 48 * 32)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    args = parser.parse_args(argv)

    work = Path(args.work_dir).resolve()
    data = make_synthetic_dataset(
        work / "data", num_cases=args.num_cases, num_test=args.num_test, shape=args.shape, num_classes=4,
        with_unlabelled_labels=False, object_scale=args.object_scale,
    )  # fmt: skip
    plan = plan_dataset(
        data, num_labelled=args.num_labelled, iterations=args.iterations, device="cpu",
        max_patch_voxels=args.max_patch_voxels, num_workers=1,
    )  # fmt: skip
    print(format_table(plan), flush=True)
    plan_file = work / "plan.json"
    plan_file.write_text(json.dumps(plan.overrides, indent=2))
    payload: dict[str, Any] = {
        "script": "own_data_protocol",
        "command": command_line(__file__, argv),
        "machine": machine_info(None),
        "data": {
            "description": f"synthetic, {args.num_cases - args.num_test} train ({args.num_labelled} labelled, the "
            f"others without label files) + {args.num_test} test cases, {tuple(args.shape)} voxels, 4 classes, "
            f"object_scale {args.object_scale} (structures fill about {100 * 0.09 * args.object_scale**3:.1f} % "
            "of the volume)",
            "folder": str(data),
        },
        "iterations": args.iterations,
        "plan": plan.overrides,
        "plan_warnings": plan.warnings,
        "results": {},
    }
    runtime = {"device": "$torch.device('cpu')", "num_workers": 0}
    for variant in args.variants:
        run_dir = work / "runs" / variant
        overrides = {**runtime, **VARIANTS[variant]}
        train = run_command("training", [CONFIGS / "train.json", plan_file], overrides, bundle_root=run_dir)
        train_s = run_logged(train, run_dir / "train.log")
        evaluate = run_command(
            "evaluating", [CONFIGS / "train.json", plan_file, CONFIGS / "evaluate.json"], overrides, bundle_root=run_dir
        )
        run_logged(evaluate, run_dir / "evaluate.log")
        summary = json.loads((run_dir / "eval" / "summary.json").read_text())
        payload["results"][variant] = {
            "train_command": " ".join(shlex.quote(a) for a in train),
            "train_seconds": train_s,
            "classes": per_class(summary),
            "report": str(run_dir / "eval" / "summary.md"),
        }
        print(f"[{variant}] " + json.dumps(payload["results"][variant]["classes"]), flush=True)
        write_json(payload, Path(args.out))
    Path(args.out).with_suffix(".md").write_text(markdown(payload))
    print(markdown(payload))
    return payload


if __name__ == "__main__":
    main()
