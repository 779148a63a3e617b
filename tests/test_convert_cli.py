"""The converters' command lines: ``python -m crln_monai.data.convert <data set>`` and the console scripts."""

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from crln_monai.data.convert.cli import CONVERTERS, console_main, converter_main

REPO = Path(__file__).resolve().parents[1]


def test_module_command_refuses_a_misspelt_option_in_one_line_with_status_1(tmp_path):
    cmd = [sys.executable, "-m", "crln_monai.data.convert", "la", "--source_dirr", str(tmp_path), "--out_dir", str(tmp_path / "o")]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and not (tmp_path / "o").exists()
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "unknown option --source_dirr (did you mean --source_dir" in result.stderr


def test_module_command_without_a_data_set_prints_the_usage():
    result = subprocess.run([sys.executable, "-m", "crln_monai.data.convert"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "la,pancreas_ct,brats19" in result.stderr


def test_unknown_data_set_and_missing_source_are_named(tmp_path):
    with pytest.raises(ValueError, match="unknown data set 'lungs'"):
        converter_main("lungs", [])
    with pytest.raises(SystemExit, match=r"error: .*does not exist"):
        console_main("la", ["--source_dir", str(tmp_path / "missing"), "--out_dir", str(tmp_path / "out")])


def test_every_converter_is_an_installed_console_script():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    for dataset in CONVERTERS:
        name = "crln-prepare-" + dataset.replace("_", "-")
        assert scripts[name] == f"crln_monai.data.convert.cli:prepare_{dataset}_main", name
    assert scripts["crln-plan"] == "crln_monai.plan.__main__:main"
