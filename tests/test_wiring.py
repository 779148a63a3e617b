"""The config-facing calls that keep conditions out of bundle JSON: each returns what the config once wrote inline."""

import logging

import pytest
import torch
from ignite.engine import Engine

from crln_monai.workflow import (
    attach,
    check_outputs,
    default_device,
    epoch_step,
    predictions_dir,
    resume_objects,
    validation_evaluator,
)
from crln_monai.engines import distributed
from crln_monai.handlers import BestMetric, check_checkpoint


def _engine():
    return Engine(lambda engine, batch: None)


def test_default_device_follows_cuda():
    assert default_device() == torch.device("cuda:0" if torch.cuda.is_available() else "cpu")


def test_validation_evaluator_is_none_without_cases():
    evaluator = _engine()
    assert validation_evaluator(evaluator, [{"image": "a"}]) is evaluator
    assert validation_evaluator(evaluator, []) is None


def test_resume_objects_drop_absent_ones_and_add_the_best_metric_with_a_validator():
    net, validator = torch.nn.Linear(1, 1), _engine()
    kept = resume_objects(student=net, rectifier_optimizer=None, validator=None)
    assert kept == {"student": net}
    kept = resume_objects(student=net, trainer=None, validator=validator)
    assert list(kept) == ["student", "best_metric"]
    assert isinstance(kept["best_metric"], BestMetric) and kept["best_metric"].evaluator is validator


def test_attach_skips_disabled_handlers_and_keeps_the_order():
    calls = []

    class Handler:
        def __init__(self, name):
            self.name = name

        def attach(self, engine):
            calls.append((self.name, engine))

    engine = _engine()
    attach(engine, Handler("saver"), None, Handler("loader"))
    assert calls == [("saver", engine), ("loader", engine)]


def test_epoch_step_maps_an_epoch_to_the_iteration_at_its_end():
    assert epoch_step(50)(3) == 150 and epoch_step(7)(0) == 0


def test_predictions_dir_and_check_outputs_skip_what_is_not_written(tmp_path):
    assert predictions_dir(str(tmp_path), True) == str(tmp_path / "predictions")
    assert predictions_dir(str(tmp_path), False) is None
    check_outputs({"output_dir/predictions": None, "output_dir": tmp_path / "eval"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval"]


def test_check_checkpoint_of_a_fresh_run_checks_nothing(tmp_path):
    assert check_checkpoint(None, {}, ["student"]) is None
    with pytest.raises(FileNotFoundError):
        check_checkpoint(tmp_path / "missing.pt", {}, ["student"])


def test_without_a_process_group_this_is_the_first_rank():
    assert distributed.on_first_rank("log", []) == "log" and distributed.on_first_rank(1) == 1
    root = logging.getLogger()
    level = root.level
    try:
        root.setLevel(logging.ERROR)
        distributed.log_on_first_rank()
        assert root.level == logging.INFO
    finally:
        root.setLevel(level)


def _expressions(value):
    if isinstance(value, str) and value.startswith("$"):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _expressions(v)
    elif isinstance(value, list):
        for v in value:
            yield from _expressions(v)


def test_bundle_json_holds_no_condition_lambda_or_comprehension():
    import ast
    import json
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    files = sorted(repo.glob("bundles/**/*.json")) + sorted(repo.glob("crln_monai/**/*.json"))
    logic = (ast.IfExp, ast.Lambda, ast.ListComp, ast.DictComp, ast.SetComp, ast.GeneratorExp)
    found = []
    for path in files:
        for expression in _expressions(json.loads(path.read_text())):
            code = expression[1:].strip()
            if code.startswith(("import ", "from ")):
                continue
            tree = ast.parse(code.replace("@", "_ref_").replace("::", "__").replace("#", "__"), mode="eval")
            if any(isinstance(node, logic) for node in ast.walk(tree)):
                found.append(f"{path.relative_to(repo)}: {expression}")
    assert len(files) > 20 and not found, found
