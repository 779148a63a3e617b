"""``python -m crln_monai.plan <dataset_dir> --output plan.json`` (also installed as ``crln-plan``).

Prints the plan's table (each choice and why) and writes the bundle override file. A data set that cannot be
planned stops with one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from ..io import atomic_write
from .planner import format_table, parse_duration, plan_dataset
from .rules import CONFIGURATIONS, MAX_PATCH_VOXELS, PAPER_ITERATIONS
from .checks import check_output_file
from .survey import PlanError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crln-plan",
        description="Plan a semi-supervised CRLN run on a data set folder and write the bundle override file.",
        epilog="Then: python -m monai.bundle run training --config_file "
        "\"['bundles/custom/configs/train.json','plan.json']\" --bundle_root runs/mine",
    )
    parser.add_argument("dataset_dir", help="data set folder (Decathlon json or nnU-Net imagesTr/labelsTr layout)")
    parser.add_argument("--output", required=True, help="the override file to write, e.g. plan.json")
    parser.add_argument("--datalist_file", default="dataset.json", help="the data set json inside dataset_dir")
    parser.add_argument("--num_labelled", type=int, default=None, help="labelled cases (default: all with labels)")
    parser.add_argument("--iterations", type=int, default=None, help=f"training budget in iterations ({PAPER_ITERATIONS:,})")
    parser.add_argument(
        "--time", default=None, help="training budget as time, e.g. 45m, 1h30m, 2h: probes the run on this machine"
    )
    parser.add_argument("--configuration", choices=CONFIGURATIONS, default=None, help="force 2-D or 3-D")
    parser.add_argument(
        "--train_config",
        default=os.path.join("bundles", "custom", "configs", "train.json"),
        help="the bundle's train.json the --time probe builds the run from",
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda", help="what the run will train on")
    parser.add_argument("--memory_gib", type=float, default=None, help="memory the patch and batch must fit")
    parser.add_argument("--max_patch_voxels", type=int, default=MAX_PATCH_VOXELS, help="largest patch per sample")
    parser.add_argument("--num_workers", type=int, default=None, help="data-loading workers of the training machine")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.time is not None and args.iterations is not None:
        parser.error("give the budget once: --time or --iterations")
    try:
        check_output_file(args.output)  # before any work
        time_budget = None if args.time is None else parse_duration(args.time)
        plan = plan_dataset(
            args.dataset_dir,
            datalist_file=args.datalist_file,
            num_labelled=args.num_labelled,
            iterations=args.iterations or PAPER_ITERATIONS,
            device=args.device,
            memory_gib=args.memory_gib,
            max_patch_voxels=args.max_patch_voxels,
            num_workers=args.num_workers,
            time_budget=time_budget,
            configuration=args.configuration,
            train_config=args.train_config,
        )
    except (PlanError, OSError, ValueError) as e:  # one line, no traceback (an unreadable file is an OSError)
        print(f"crln-plan: {e}", file=sys.stderr)
        return 2
    print(format_table(plan))
    output = atomic_write(args.output, json.dumps(plan.overrides, indent=2) + "\n")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
