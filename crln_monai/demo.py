"""The README's demo: own data end to end in a few CPU minutes, and what the unlabelled images buy.

``python -m crln_monai.demo`` (from a clone: it runs the repository's ``bundles/custom``):

1. writes a synthetic thick-slice data set (:func:`~crln_monai.data.make_synthetic_dataset`: LA-like objects with a
   bright distractor beside them, 5-mm slices; 2 labelled cases, unlabelled cases without label files, validation
   and test cases with labels);
2. plans it as a user would (``crln-plan``; the plan chooses the slice-wise configuration for these thick slices);
3. trains CRLN and evaluates it on the test cases through the bundle (``monai.bundle run training`` and
   ``evaluating``), then the same run without unlabelled data (the ablation ladder's ``supervised`` rung: the same
   labelled cases, plan and iterations);
4. prints both test results side by side.

Each run writes its own folder under ``--output_dir`` (checkpoints, ``eval/`` with the report, predictions and
curves, ``export/``); a second demo into the same folder is refused by the runs themselves unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .data import make_synthetic_dataset
from .overrides import run_command
from .plan import format_table, plan_dataset

__all__ = ["DEMO", "main", "per_case_dice"]

#: The demo's data, plan budget and runs.
DEMO: dict[str, Any] = {
    "data": {
        "num_cases": 36, "num_test": 6, "shape": (96, 96, 12), "spacing": (1.0, 1.0, 5.0), "num_classes": 2,
        "with_unlabelled_labels": False,
    },  # fmt: skip
    "num_labelled": 2,
    "iterations": 300,
    "runs": {"crln": "crln_full", "supervised": "supervised"},
}


_ERROR = re.compile(r"^(?:\w+\.)*\w*(?:Error|Exception): (?!Failed to evaluate|applying transform)")


def _run(command: list[str], log: Path, cwd: Path) -> float:
    """Run ``command`` (a bundle run) logging to ``log``; the wall seconds, or SystemExit with the run's own one-line
    error (the first exception line of the log that is not MONAI's wrapper around it)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "w") as stream:
        code = subprocess.call(command, cwd=cwd, stdout=stream, stderr=subprocess.STDOUT)
    if code != 0:
        lines = log.read_text().splitlines()
        reason = next((line for line in lines if _ERROR.match(line)), lines[-1] if lines else "no output")
        raise SystemExit(f"crln-demo: a bundle run failed (exit {code}): {reason} (log {log})")
    return time.perf_counter() - start


def _summary(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "eval" / "summary.json").read_text())


def table(results: dict[str, dict[str, Any]]) -> str:
    """The side-by-side table: test Dice per case and the mean ± bootstrap std, empty predictions, wall time."""
    cases = list(next(iter(results.values()))["per_case"])
    lines = [
        "| run | " + " | ".join(cases) + " | mean Dice (%) | empty | wall s |",
        "|---|" + "---|" * (len(cases) + 3),
    ]
    for name, result in results.items():
        dice = result["summary"]["metrics"]["dice"]
        cells = [f"{100 * result['per_case'][case]:.1f}" for case in cases]
        lines.append(
            f"| {name} | " + " | ".join(cells) + f" | **{100 * dice['mean']:.2f} ± {100 * dice['std']:.2f}** | "
            f"{result['summary']['num_empty_predictions']} | {result['seconds']:.0f} |"
        )
    return "\n".join(lines)


def per_case_dice(run_dir: Path) -> dict[str, float]:
    """Test Dice per case from the report's ``per_case.csv``, averaged over the foreground classes."""
    import csv

    with open(run_dir / "eval" / "per_case.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    values: dict[str, list[float]] = {}
    for row in rows:
        values.setdefault(row["case"], []).append(float(row["dice"]))
    return {case: sum(v) / len(v) for case, v in values.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m crln_monai.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default="demo", help="folder of the data, the plan and the runs")
    parser.add_argument("--bundle", default=os.path.join("bundles", "custom"), help="the custom bundle of a clone")
    parser.add_argument("--overwrite", action="store_true", help="replace the runs of an earlier demo")
    args = parser.parse_args(argv)
    bundle = Path(args.bundle).resolve()
    configs = bundle / "configs"
    needed = [configs / "train.json", configs / "evaluate.json"] + [
        configs / "ablation" / f"{rung}.json" for rung in DEMO["runs"].values()
    ]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        raise SystemExit(f"crln-demo: {missing[0]} is missing; run the demo from the repository root or pass --bundle.")
    out = Path(args.output_dir).resolve()
    start = time.perf_counter()
    data = make_synthetic_dataset(out / "data", **DEMO["data"])
    plan = plan_dataset(data, num_labelled=DEMO["num_labelled"], iterations=DEMO["iterations"], device="cpu")
    plan_file = out / "plan.json"
    plan_file.write_text(json.dumps(plan.overrides, indent=2) + "\n")
    print(format_table(plan), flush=True)
    runtime = {"device": "$torch.device('cpu')", "overwrite": bool(args.overwrite)}
    results: dict[str, dict[str, Any]] = {}
    for name, rung in DEMO["runs"].items():
        run_dir = out / name
        files = [configs / "train.json", plan_file, configs / "ablation" / f"{rung}.json"]
        print(f"\n{name}: training ({DEMO['iterations']} iterations) ...", flush=True)
        seconds = _run(run_command("training", files, runtime, bundle_root=run_dir), run_dir / "train.log", bundle)
        evaluate = run_command("evaluating", files + [configs / "evaluate.json"], runtime, bundle_root=run_dir)
        seconds += _run(evaluate, run_dir / "evaluate.log", bundle)
        summary = _summary(run_dir)
        results[name] = {"summary": summary, "per_case": per_case_dice(run_dir), "seconds": seconds}
        print(f"{name}: test Dice {100 * summary['metrics']['dice']['mean']:.2f} % ({seconds:.0f} s)", flush=True)
    print(f"\nTest cases of {data} ({time.perf_counter() - start:.0f} s in all):\n")
    print(table(results))
    print(
        f"\nsupervised = the same plan, labelled cases and iterations without the unlabelled images. Reports: "
        f"{out}/<run>/eval/summary.md; predictions: {out}/<run>/eval/predictions/; exported bundles: "
        f"{out}/<run>/export/."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
