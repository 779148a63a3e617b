"""The README's demo (``python -m crln_monai.demo``), at toy size: data, plan, both runs, the side-by-side table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from crln_monai import demo

REPO = Path(__file__).resolve().parents[1]


def test_table_puts_both_runs_side_by_side():
    results = {
        name: {
            "summary": {"metrics": {"dice": {"mean": mean, "std": 0.01}}, "num_empty_predictions": empty},
            "per_case": {"a": mean - 0.1, "b": mean + 0.1},
            "seconds": seconds,
        }
        for name, mean, empty, seconds in (("crln", 0.85, 0, 100.0), ("supervised", 0.7, 1, 40.0))
    }
    lines = demo.table(results).splitlines()
    assert lines[0] == "| run | a | b | mean Dice (%) | empty | wall s |"
    assert lines[2] == "| crln | 75.0 | 95.0 | **85.00 ± 1.00** | 0 | 100 |"
    assert lines[3] == "| supervised | 60.0 | 80.0 | **70.00 ± 1.00** | 1 | 40 |"


def test_outside_a_clone_it_says_where_to_run(tmp_path):
    with pytest.raises(SystemExit, match=r"crln-demo: .*train\.json is missing; run the demo from the repository root"):
        demo.main(["--output_dir", str(tmp_path / "out"), "--bundle", str(tmp_path / "nowhere")])


@pytest.mark.slow
def test_the_demo_runs_end_to_end_and_refuses_a_second_run(tmp_path):
    """At toy size (10 cases of 32×32×8, 2 iterations): a plan, two trained and evaluated runs, the table; the same
    command again is refused by the runs (nothing replaced) unless --overwrite."""
    script = (
        "import sys; from crln_monai import demo; "
        "demo.DEMO.update(iterations=2, data=dict(num_cases=10, num_test=2, shape=(32, 32, 8), spacing=(1.0, 1.0, 5.0), "
        "num_classes=2, with_unlabelled_labels=False)); sys.exit(demo.main(sys.argv[1:]))"
    )
    command = [sys.executable, "-c", script, "--output_dir", str(tmp_path / "demo")]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "| run | case_008 | case_009 | mean Dice (%) | empty | wall s |" in done.stdout
    assert "| crln |" in done.stdout and "| supervised |" in done.stdout
    plan = json.loads((tmp_path / "demo" / "plan.json").read_text())
    assert plan["backbone"] == "unet2d" and plan["max_epochs"] * plan["epoch_length"] == 2
    for run in ("crln", "supervised"):
        assert (tmp_path / "demo" / run / "eval" / "summary.json").is_file()
        assert len(list((tmp_path / "demo" / run / "eval" / "predictions").glob("*_seg.nii.gz"))) == 2
    model = tmp_path / "demo" / "crln" / "models" / "model_last.pt"
    before = model.read_bytes()
    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert again.returncode != 0 and "--overwrite" in again.stderr + again.stdout
    assert model.read_bytes() == before
