"""Dataset plan: read a data set folder and write the bundle override that trains CRLN on it.

``python -m crln_monai.plan <dataset_dir> --output plan.json`` (or ``crln-plan``) reads every case header, the label
files and (CT only) the foreground intensities of the labelled cases, and chooses channels, classes, normalisation,
spacing, the backbone's per-axis down-sampling, patch, batch, sliding-window stride, schedule, foreground sampling
and the validation split, printing each choice and why (the rules follow nnU-Net's experiment
planning, summarised in docs/planning.md). The file it writes is an ordinary bundle override:
``python -m monai.bundle run training --config_file "['bundles/custom/configs/train.json','plan.json']"``.

Modules: :mod:`.survey` (what the data set holds), :mod:`.rules` (one choice each, pure functions),
:mod:`.planner` (the two together, the table), :mod:`.checks` (what training would refuse, refused first: every
case's files, the finished plan, ``--output``), :mod:`.__main__` (the command line).
"""

from .planner import Plan, format_table, plan_dataset
from .survey import PlanError

__all__ = ["Plan", "PlanError", "format_table", "plan_dataset"]
