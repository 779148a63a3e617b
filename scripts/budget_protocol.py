#!/usr/bin/env python
"""Own data on a time budget: the plan's configuration against the other one and a plain 2-D baseline, same clock.

For one data folder and one budget (``--time``), one run after the other on this machine:

1. ``plan``: ``crln-plan --time`` (the probe measures both configurations here; the plan chooses one), then CRLN
   through ``bundles/custom`` as a user would, then its evaluation on the test cases;
2. ``other``: the same with ``--configuration`` forced to the configuration the plan did not choose;
3. ``baseline``: the plain supervised 2-D U-Net of ``scripts/baseline_unet2d.py`` on the same labelled cases,
   trained for the same wall time.

Each CRLN run records its training wall time beside the plan's estimate (the issue's target: within 20 %). The
results (per-class test Dice, empty predictions, iterations, seconds) go to ``--out`` (JSON) and the same name with
``.md``. The test cases are scored once, after training; the plan's choices use validation cases only.

Example::

    python scripts/thick_slices.py ../shared/data/la2018 work/la_thick --step 8
    python scripts/budget_protocol.py work/la_thick --time 30m --num_labelled 8 --work_dir work/budget_la \
        --out docs/measurements/budget_la_thick.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import baseline_unet2d  # noqa: E402
from benchmark_speed import command_line, machine_info, write_json  # noqa: E402
from la_accuracy import run_logged  # noqa: E402
from own_data_protocol import per_class  # noqa: E402

from crln_monai.overrides import run_command  # noqa: E402
from crln_monai.plan import format_table, plan_dataset  # noqa: E402
from crln_monai.plan.planner import parse_duration  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bundles" / "custom" / "configs"
RUNS = ("plan", "other", "baseline")


def _crln_run(name: str, plan: Any, work: Path, runtime: dict[str, Any]) -> dict[str, Any]:
    """Train and evaluate one planned CRLN run through the custom bundle."""
    run_dir = work / "runs" / name
    plan_file = work / f"{name}_plan.json"
    plan_file.write_text(json.dumps(plan.overrides, indent=2))
    train = run_command("training", [CONFIGS / "train.json", plan_file], runtime, bundle_root=run_dir)
    seconds = run_logged(train, run_dir / "train.log")
    evaluate = run_command(
        "evaluating", [CONFIGS / "train.json", plan_file, CONFIGS / "evaluate.json"], runtime, bundle_root=run_dir
    )
    run_logged(evaluate, run_dir / "evaluate.log")
    summary = json.loads((run_dir / "eval" / "summary.json").read_text())
    out = plan.overrides
    return {
        "backbone": out["backbone"], "patch_size": out["patch_size"],
        "batch": [out["labelled_batch_size"], out["unlabelled_batch_size"]],
        "iterations": out["max_epochs"] * out["epoch_length"], "lr": out["lr"],
        "supervised_iterations": out.get("supervised_iterations", 0),
        "optimizer_kind": out.get("optimizer_kind", "sgd"), "train_seconds": seconds,
        "expected_seconds": plan.expected_seconds,
        "estimate_error": None if not plan.expected_seconds else seconds / plan.expected_seconds - 1,
        "classes": per_class(summary), "report": str(run_dir / "eval" / "summary.md"),
    }  # fmt: skip


def markdown(payload: dict[str, Any]) -> str:
    results = payload["results"]
    names = list(next(iter(results.values()))["classes"])
    lines = [
        f"# Own data on a budget: {payload['data']}",
        "",
        f"- command: `{payload['command']}`",
        f"- machine: {payload['machine']['processor']}, {payload['machine']['cpu_count']} cores, torch "
        f"{payload['machine']['torch']}; budget {payload['budget_seconds'] / 60:.0f} min per run, one run at a time",
        "",
        "| run | configuration | steps | train s (plan's estimate) | " + " | ".join(f"{n} Dice (%)" for n in names)
        + " | empty predictions |",
        "|---|---|---|---|" + "---|" * (len(names) + 1),
    ]
    for run, r in results.items():
        cells = [f"{100 * c['dice']:.2f} ± {100 * c['dice_std']:.2f}" for c in r["classes"].values()]
        empties = ", ".join(f"{n} {c['empty_predictions']}" for n, c in r["classes"].items() if n != "mean")
        if run == "baseline":
            config, steps, seconds = "2-D U-Net, supervised", r["steps"], f"{r['train_seconds']:.0f}"
        else:
            config = f"CRLN {r['backbone']} {r['patch_size']} × {r['batch']}"
            steps = r["iterations"]
            if r.get("supervised_iterations"):
                steps = f"{steps} ({r['supervised_iterations']} burn-in)"
            expected = f" ({r['expected_seconds']:.0f}, {100 * r['estimate_error']:+.0f} %)" if r["expected_seconds"] else ""
            seconds = f"{r['train_seconds']:.0f}{expected}"
        lines.append(f"| {run} | {config} | {steps} | {seconds} | " + " | ".join(cells) + f" | {empties} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset_dir")
    parser.add_argument("--time", required=True, help="the budget of each run, e.g. 30m")
    parser.add_argument("--num_labelled", type=int, required=True)
    parser.add_argument("--work_dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--runs", nargs="+", choices=RUNS, default=list(RUNS))
    parser.add_argument("--num_workers", type=int, default=1)
    args = parser.parse_args(argv)
    budget = parse_duration(args.time)
    work = Path(args.work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    data = Path(args.dataset_dir).resolve()
    payload: dict[str, Any] = {
        "script": "budget_protocol", "command": command_line(__file__, argv), "machine": machine_info(None),
        "data": str(data), "budget_seconds": budget, "results": {},
    }  # fmt: skip
    runtime = {"device": "$torch.device('cpu')"}
    plan = plan_dataset(
        data, num_labelled=args.num_labelled, device="cpu", time_budget=budget, num_workers=args.num_workers,
        train_config=CONFIGS / "train.json",
    )  # fmt: skip
    print(format_table(plan), flush=True)
    payload["plan"] = {"overrides": plan.overrides, "summary": plan.summary, "warnings": plan.warnings}
    chosen = "2d" if plan.overrides["backbone"] == "unet2d" else "3d"
    for run in args.runs:
        if run == "plan":
            result = _crln_run("plan", plan, work, runtime)
        elif run == "other":
            other = plan_dataset(
                data, num_labelled=args.num_labelled, device="cpu", time_budget=budget, num_workers=args.num_workers,
                train_config=CONFIGS / "train.json", configuration="3d" if chosen == "2d" else "2d",
            )  # fmt: skip
            print(format_table(other), flush=True)
            result = _crln_run("other", other, work, runtime)
        else:
            names = plan.overrides["class_names"][1:]
            result = baseline_unet2d.main([
                str(data), "--out", str(work / "runs" / "baseline"), "--num_labelled", str(args.num_labelled),
                "--num_validation", str(plan.overrides["num_validation"]), "--seconds", str(budget),
                "--class_names", *names,
            ])  # fmt: skip
            summary = json.loads((work / "runs" / "baseline" / "summary.json").read_text())
            result["classes"] = per_class(summary)
        payload["results"][run] = result
        print(f"[{run}] " + json.dumps(result["classes"]), flush=True)
        write_json(payload, Path(args.out))
    Path(args.out).with_suffix(".md").write_text(markdown(payload))
    print(markdown(payload))
    return payload


if __name__ == "__main__":
    main()
