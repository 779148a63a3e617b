"""The bad-input suite: ONE table of broken inputs to the four entry points and what each must get.

Every :class:`BadInput` breaks one thing in a tiny synthetic set-up (:class:`Sandbox`: a data set, a previous run's
checkpoints and report, inference inputs, a converter's source folder) and names

* the **entry point**: ``training``, ``evaluating``, ``inference`` (``python -m monai.bundle run <entry>`` with
  ``train.json`` [+ ``evaluate.json`` / ``inference.json``]) or ``conversion`` (``scripts/prepare_*.py``);
* the **expected message**: a regex that one single-line message of the failure must match; it names the file or
  the key and what was expected (``{data}``, ``{run}``, ``{root}``, ``{src}``, ``{out}`` stand for the sandbox
  folders, inserted escaped);
* what must **not be written or overwritten**: in words for the doc; the test checks it on the whole sandbox
  (no file created or changed, except the ``may_write`` globs).

Resume guarantees (issue 10 items 1, 2, 13) are proved by the kill-and-resume tests: their rows point there
(``proved_by``) instead of re-running them. ``tests/test_bad_inputs.py`` runs the table; ``tools/reliability_table.py``
writes it into ``docs/reliability.md``. This is a plain module, not a test file.
"""

from __future__ import annotations

import gzip
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bundles" / "la" / "configs"

ENTRY_POINTS: dict[str, tuple[str, ...]] = {
    "training": ("train",),
    "evaluating": ("train", "evaluate"),
    "inference": ("train", "inference"),
    "conversion": (),
    "planning": (),
}
"""Entry point -> the LA bundle config files it layers (conversion runs a ``scripts/prepare_*.py``, planning
``python -m crln_monai.plan``)."""

TINY: dict[str, Any] = {
    "patch_size": [16, 16, 16], "sw_stride": [8, 8, 8], "num_prototypes": 2, "num_queries": 8, "num_negatives": 16,
    "max_epochs": 1, "epoch_length": 1, "log_interval": 1, "num_workers": 0, "num_labelled": 2,
    "network_settings::backbone_kwargs": {"base_filters": 4},
}  # fmt: skip
"""Overrides of every bundle run of the suite: 16³ volumes and patches, a VNet of 4 base filters (2.5 MB
checkpoints), one iteration."""

SHAPE = (16, 16, 16)
CASES_IN_DATA = 6  # case_000 .. case_004 train (case_000, case_001 labelled), case_005 test

# what a case must leave alone, in words (the test checks the whole sandbox)
NO_TRAINING_OUTPUT = "no checkpoint, history or export; old model.pt, model_last.pt kept"
NO_REPORT = "no report or prediction; old summary.md kept"
NO_PREDICTION = "no prediction file"
NO_CONVERSION = "no image, label or dataset.json"
NO_PLAN = "no plan file"


# ------------------------------------------------------------------------------------------------------ sandbox


@dataclass
class Sandbox:
    """One case's private copy of the set-up, under ``root``.

    Layout: ``data/`` (Decathlon set of 16³ cases, ``dataset.json``), ``run/`` (the ``bundle_root``:
    ``models/model.pt`` and ``models/model_last.pt`` of a previous run with the suite's settings,
    ``eval/summary.md`` of a previous evaluation, ``inputs/`` the inference inputs), ``src/`` (UA-MT h5 cases
    ``caseA``, ``caseB`` train and ``caseC`` test, with ``train.list``/``test.list``) and ``out/`` (the converter's
    output, absent). A setup function changes ``overrides`` (bundle keys), ``argv`` (the converter's arguments) or
    the files.
    """

    root: Path
    overrides: dict[str, Any] = field(default_factory=dict)
    script: str = "prepare_la"
    argv: list[str] = field(default_factory=list)
    plan_argv: list[str] = field(default_factory=list)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def models(self) -> Path:
        return self.run / "models"

    @property
    def inputs(self) -> Path:
        return self.run / "inputs"

    @property
    def src(self) -> Path:
        return self.root / "src"

    @property
    def out(self) -> Path:
        return self.root / "out"

    def image(self, case: str = "case_000") -> Path:
        return self.data / "imagesTr" / f"{case}.nii.gz"

    def label(self, case: str = "case_000") -> Path:
        return self.data / "labelsTr" / f"{case}.nii.gz"

    def dataset_json(self) -> dict[str, Any]:
        return json.loads((self.data / "dataset.json").read_text())

    def write_dataset_json(self, meta: Any, name: str = "dataset.json") -> None:
        (self.data / name).write_text(json.dumps(meta))

    def tokens(self) -> dict[str, Path]:
        return {"data": self.data, "run": self.run, "root": self.root, "src": self.src, "out": self.out}


def _default_argv(sb: Sandbox) -> list[str]:
    return ["--source_dir", str(sb.src), "--out_dir", str(sb.out), "--num_labelled", "1", "--progress", "False"]


def _default_plan_argv(sb: Sandbox) -> list[str]:
    """``crln-plan`` on the sandbox's data set: 2 labelled cases, the rest unlabelled; the plan file in the root."""
    return [str(sb.data), "--output", str(sb.root / "plan.json"), "--num_labelled", "2", "--device", "cpu",
            "--memory_gib", "4", "--iterations", "100", "--num_workers", "1"]  # fmt: skip


def write_checkpoint(path: Path, plain: bool = False, **overrides: Any) -> Path:
    """A checkpoint as training writes it (``{"model": teacher, "settings": ...}``) for the suite's settings changed by
    ``overrides``; ``plain`` writes the bare state dict (an older or another bundle's file, no settings)."""
    import torch
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    parser.update({"bundle_root": str(REPO / "bundles" / "la"), "device": "$torch.device('cpu')", **TINY, **overrides})
    state = parser.get_parsed_content("teacher").state_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state if plain else {"model": state, "settings": parser.get_parsed_content("settings")}, path)
    return path


def _write_h5_case(folder: Path, image: np.ndarray | bool | None = None, label: np.ndarray | bool | None = None) -> None:
    """``<folder>/mri_norm2.h5`` as UA-MT's: ``image`` float32 and ``label`` uint8 (12, 10, 6); ``False`` leaves a
    dataset out, ``None`` draws it."""
    import h5py

    rng = np.random.default_rng(len(folder.name))
    image = rng.standard_normal((12, 10, 6)).astype(np.float32) if image is None else image
    label = (rng.random((12, 10, 6)) > 0.7).astype(np.uint8) if label is None else label
    folder.mkdir(parents=True, exist_ok=True)
    with h5py.File(folder / "mri_norm2.h5", "w") as f:
        if image is not False:
            f.create_dataset("image", data=image)
        if label is not False:
            f.create_dataset("label", data=label)


def build_pristine(root: Path) -> Path:
    """The unbroken set-up every sandbox copies (see :class:`Sandbox`), built once under ``root``."""
    from crln_monai.data import make_synthetic_dataset

    make_synthetic_dataset(root / "data", num_cases=CASES_IN_DATA, num_test=1, shape=SHAPE)
    checkpoint = write_checkpoint(root / "run" / "models" / "model_last.pt")
    shutil.copy(checkpoint, root / "run" / "models" / "model.pt")
    (root / "run" / "eval").mkdir(parents=True)
    (root / "run" / "eval" / "summary.md").write_text("# previous evaluation\n")
    (root / "run" / "inputs").mkdir()
    for case in ("case_004", "case_005"):
        shutil.copy(root / "data" / "imagesTr" / f"{case}.nii.gz", root / "run" / "inputs" / f"{case}.nii.gz")
    for case in ("caseA", "caseB", "caseC"):
        _write_h5_case(root / "src" / case)
    (root / "src" / "train.list").write_text("caseA\ncaseB\n")
    (root / "src" / "test.list").write_text("caseC\n")
    return root


def make_sandbox(pristine: Path, root: Path) -> Sandbox:
    """A private copy of the pristine set-up with the suite's overrides and the converter's default arguments."""
    shutil.copytree(pristine, root)
    sb = Sandbox(root, overrides=dict(TINY))
    sb.argv = _default_argv(sb)
    sb.plan_argv = _default_plan_argv(sb)
    return sb


# ---------------------------------------------------------------------------------------------- breaking helpers


def _load(path: Path) -> nib.Nifti1Image:
    return nib.load(str(path))


def _save(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> None:
    nib.save(nib.Nifti1Image(array, np.diag([0.625, 0.625, 0.625, 1.0]) if affine is None else affine), str(path))


def _set_voxel(path: Path, value: float, voxel=(3, 4, 5)) -> None:
    image = _load(path)
    array = np.asarray(image.dataobj, dtype=np.float32).copy()
    array[voxel] = value
    _save(path, array, image.affine)


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _random_bytes(path: Path, size: int = 4096) -> None:
    path.write_bytes(np.random.default_rng(0).bytes(size))


def _replace_folder_with_file(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("a file where a folder is expected\n")


def _set(**overrides: Any) -> Callable[[Sandbox], None]:
    def setup(sb: Sandbox) -> None:
        sb.overrides.update(overrides)

    return setup


def _steps(*steps: Callable[[Sandbox], None]) -> Callable[[Sandbox], None]:
    def setup(sb: Sandbox) -> None:
        for step in steps:
            step(sb)

    return setup


def _argv(*extra: str, replace: dict[str, str] | None = None, script: str | None = None) -> Callable[[Sandbox], None]:
    """Change the converter's arguments: ``replace`` option -> value ({src}/{out}/{root} formatted), then ``extra``."""

    def setup(sb: Sandbox) -> None:
        if script is not None:
            sb.script = script
        names = {k: str(v) for k, v in sb.tokens().items()}
        for option, value in (replace or {}).items():
            value = value.format(**names)
            if option in sb.argv:
                sb.argv[sb.argv.index(option) + 1] = value
            else:
                sb.argv += [option, value]
        sb.argv += [e.format(**names) for e in extra]

    return setup


# ------------------------------------------------------------------------------------------------------ the case


@dataclass(frozen=True)
class BadInput:
    """One bad input, what it must get, and what it must leave alone.

    Attributes:
        id: short unique name (the test id).
        entry: ``"training"``, ``"evaluating"``, ``"inference"`` or ``"conversion"``.
        input: the broken input in one human-readable line (the doc's "input" column).
        setup: breaks one thing in a fresh :class:`Sandbox`; ``None`` for a row proved by another test.
        message: regex one single-line message of the failure must match (names the file or key).
        untouched: what must not be written or overwritten, in words.
        items: the numbered items of issue 10 the case covers.
        may_write: globs (relative to the sandbox root) of files the failing run may create or change.
        cli: also run through a real ``python -m monai.bundle run`` / ``python scripts/...`` subprocess (exit 1).
        proved_by: ``tests/<file>.py::<test>`` proving a guarantee that is not a refusal (resume).
        while_loading: training only: found while the data set is loaded (cached); every other training case is
            refused before the data set is built.
    """

    id: str
    entry: str
    input: str
    setup: Callable[[Sandbox], None] | None
    message: str
    untouched: str
    items: tuple[int, ...] = ()
    may_write: tuple[str, ...] = ()
    cli: bool = False
    proved_by: str | None = None
    while_loading: bool = False


def _config(id: str, entry: str, input: str, message: str, items=(), cli=False, **overrides) -> BadInput:
    """A configuration case: ``overrides`` as ``--key value`` on the command line; refused at initialize."""
    untouched = {"training": NO_TRAINING_OUTPUT, "evaluating": NO_REPORT, "inference": NO_PREDICTION}[entry]
    return BadInput(id, entry, input, _set(**overrides), message, untouched, tuple(items), cli=cli)


def _range(key: str, value: Any, allowed: str) -> str:
    return rf"config key '{key}' must be {allowed}, got {value}\."


_BOOL = r"bundle switches must be booleans, got {}\. On the command line write True or False with a capital letter"

# ------------------------------------------------------------------------------------------------ training: config

_TRAINING_CONFIG = [
    _config("train-unknown-key", "training", "misspelt override `--num_prototype 4`",
            r"unknown config key 'num_prototype' \(did you mean 'num_prototypes'\?\)\.", (4,), num_prototype=4),
    _config("train-unknown-key-spelling", "training", "US spelling `--unlabeled_batch_size 2`",
            r"unknown config key 'unlabeled_batch_size' \(did you mean 'unlabelled_batch_size'", (4,),
            unlabeled_batch_size=2),
    _config("train-unknown-key-unlike", "training", "override of a key that does not exist at all (`--zzz 1`)",
            r"unknown config key 'zzz' \(no similar key; the known keys are crln_monai\.workflow\.schema\.SCHEMA\)",
            (4,), zzz=1),
    _config("train-lambda-u-negative", "training", "out-of-range weight `--lambda_u -1`",
            _range("lambda_u", -1, "a number >= 0"), (4,), lambda_u=-1),
    _config("train-lambda-u-text", "training", "non-number `--lambda_u abc`",
            _range("lambda_u", "'abc'", "a number >= 0"), (9,), lambda_u="abc"),
    _config("train-lambda-cp-nan", "training", "`lambda_cp` = NaN", _range("lambda_cp", "nan", "a number >= 0"),
            (4,), lambda_cp=float("nan")),
    _config("train-num-prototypes-text", "training", "non-integer `--num_prototypes abc`",
            _range("num_prototypes", "'abc'", "an int >= 1"), (9,), num_prototypes="abc"),
    _config("train-num-prototypes-zero", "training", "`--num_prototypes 0`",
            _range("num_prototypes", 0, "an int >= 1"), (4,), num_prototypes=0),
    _config("train-num-prototypes-float", "training", "`--num_prototypes 2.0` (a float for an int key)",
            _range("num_prototypes", r"2\.0", "an int >= 1"), (9,), num_prototypes=2.0),
    _config("train-num-labelled-text", "training", "`num_labelled` given as the string '8'",
            _range("num_labelled", "'8'", "null or an int >= 1"), (9,), num_labelled="8"),
    _config("train-lr-zero", "training", "`--lr 0`", _range("lr", 0, "a number > 0"), (4,), lr=0),
    _config("train-momentum-one", "training", "`--momentum 1.0`",
            _range("momentum", r"1\.0", "a number >= 0 and < 1"), (4,), momentum=1.0),
    _config("train-cache-rate", "training", "`--cache_rate 1.5`",
            _range("cache_rate", r"1\.5", "a number >= 0 and <= 1"), (4,), cache_rate=1.5),
    _config("train-seed-negative", "training", "`--seed -1`",
            _range("seed", -1, "an int >= 0 and <= 4294967295"), (4,), seed=-1),
    _config("train-max-epochs-zero", "training", "`--max_epochs 0`", _range("max_epochs", 0, "an int >= 1"), (4,),
            max_epochs=0),
    _config("train-threshold-above-one", "training", "`--strong_threshold 1.5`",
            _range("strong_threshold", r"1\.5", "a number >= 0 and <= 1"), (4,), strong_threshold=1.5),
    _config("train-temperature-zero", "training", "`--temperature 0`", _range("temperature", 0, "a number > 0"),
            (4,), temperature=0),
    _config("train-expression-fails", "training", "an override expression that raises (`--lr '$1/0'`)",
            r"config key 'lr' could not be evaluated from '\$1/0' \(ZeroDivisionError", (9,), lr="$1/0"),
    _config("train-bool-lowercase", "training", "switch written `--use_dim false` (python-fire passes a string)",
            _BOOL.format("use_dim='false'"), (9,), use_dim="false"),
    _config("train-bool-int", "training", "switch given as a number (`--cutmix 1`)", _BOOL.format("cutmix=1"),
            (9,), cutmix=1),
    _config("train-bool-yes", "training", "`--deterministic yes`", _BOOL.format("deterministic='yes'"), (9,),
            deterministic="yes"),
    _config("train-backbone", "training", "unknown backbone `--backbone resnet`",
            _range("backbone", "'resnet'", r"one of \['vnet', 'unet3d', 'unet2d'\]"), (4,), backbone="resnet"),
    _config("train-rectifier", "training", "unknown rectifier mode `--rectifier learnable`",
            r"config key 'rectifier' must be one of \[.*'learnable_v3'.*\], got 'learnable'\.", (4,),
            rectifier="learnable"),
    _config("train-device", "training", "`--device gpu` (not a torch device name)",
            r"config key 'device' must be a torch\.device or a device name such as 'cpu' or 'cuda:0' .*got 'gpu'",
            (4,), device="gpu"),
    _config("train-device-absent", "training", "`--device cuda:99`, a GPU this machine does not have",
            r"config key 'device' must be a torch\.device or a device name such as 'cpu' or 'cuda:0' that exists here "
            r"\(a CUDA index below torch\.cuda\.device_count\(\)\), got 'cuda:99'", (4,), device="cuda:99"),
    _config("train-amp-dtype", "training", "`--amp_dtype fp8`",
            r"config key 'amp_dtype' must be null, a torch\.dtype or one of .*, got 'fp8'", (4,), amp_dtype="fp8"),
    _config("train-resume-lowercase", "training", "`--resume true` (a string, would be read as a file name)",
            r"config key 'resume' must be null, True, False, 'auto' or a checkpoint path .*got 'true'", (9,),
            resume="true"),
    _config("train-patch-size-2d", "training", "`--patch_size [16,16]` (2 entries)",
            _range("patch_size", r"\[16, 16\]", "a list of 3 ints >= 1"), (4,), patch_size=[16, 16]),
    _config("train-num-classes-one", "training", "`--num_classes 1`", _range("num_classes", 1, "an int >= 2"),
            (4,), num_classes=1),
    _config("train-class-names-length", "training", "`class_names` with 1 name for num_classes=2",
            r"config keys class_names, num_classes: class_names must have num_classes=2 entries, got 1", (4,),
            class_names=["background"]),
    _config("train-class-names-duplicate", "training", "`class_names` naming one class twice",
            r"config keys class_names, num_classes: class_names must be distinct names, got \['background', "
            r"'background'\]", (4,), class_names=["background", "background"]),
    _config("train-class-names-string", "training", "`class_names` given as one string, not a list",
            _range("class_names", "'left atrium'", "null or a list of non-empty strings"), (9,),
            class_names="left atrium"),
    _config("train-normalise-unknown", "training", "`--normalise percentile`",
            _range("normalise", "'percentile'", r"null or one of \['minmax', 'zscore', 'ct', 'none'\]"), (4,),
            normalise="percentile"),
    _config("train-ct-without-range", "training", "`--normalise ct` without intensity_range / intensity_stats",
            r"config keys orientation, target_spacing, normalise, intensity_range, intensity_stats: normalise='ct' "
            r"needs intensity_range \[lo, hi\] and intensity_stats \[mean, std\]", (4,), normalise="ct"),
    _config("train-ct-std-zero", "training", "`normalise: ct` with `intensity_stats [0, 0]` (std 0)",
            _range("intensity_stats", r"\[0, 0\]", r"null or \[mean, std\] with std > 0"), (4,), normalise="ct",
            intensity_range=[-100, 200], intensity_stats=[0, 0]),
    _config("train-intensity-range-reversed", "training", "`intensity_range [200, -100]` (lo > hi)",
            _range("intensity_range", r"\[200, -100\]", r"null or \[lo, hi\] with lo < hi"), (4,), normalise="ct",
            intensity_range=[200, -100], intensity_stats=[0, 1]),
    _config("train-intensity-range-without-ct", "training", "`intensity_range` set with `normalise: minmax`",
            r"intensity_range is only used by normalise='ct' and must be null with normalise='minmax'", (4,),
            intensity_range=[-100, 200]),
    _config("train-target-spacing-negative", "training", "`--target_spacing [1,1,-1]`",
            _range("target_spacing", r"\[1, 1, -1\]", r"null or 3 positive spacings in mm \[x, y, z\]"), (4,),
            target_spacing=[1, 1, -1]),
    _config("train-orientation", "training", "`--orientation RAX`",
            r"config key 'orientation' must be null or 3 axis codes, one of L/R, P/A, I/S each .*got 'RAX'", (4,),
            orientation="RAX"),
    _config("train-foreground-share", "training", "`--foreground_share 1.5`",
            _range("foreground_share", r"1\.5", "a number >= 0 and <= 1"), (4,), foreground_share=1.5),
    _config("train-strides-factor", "training", "`--strides [[2,2,3]]` (a factor of 3)",
            r"config key 'strides' must be null or per-level down-sampling factors.*got \[\[2, 2, 3\]\]", (4,),
            strides=[[2, 2, 3]]),
    _config("train-strides-levels", "training", "3 stride levels for the 4-level VNet",
            r"config keys backbone, strides, patch_size: backbone 'vnet': strides must be None or 4 entries", (4,),
            strides=[2, 2, 2]),
    _config("train-patch-not-divisible", "training", "`--patch_size [16,16,20]`: 20 not divisible by the strides",
            r"config keys backbone, strides, patch_size: backbone 'vnet': patch_size \(16, 16, 20\) has size 20 on "
            r"axis 2 .*not divisible by 16", (4,), patch_size=[16, 16, 20]),
    _config("train-strides-patch-mismatch", "training",
            "`--strides [2,2,2,[2,2,1]]` with `--patch_size [16,16,12]`: 12 not divisible by 8 on the last axis",
            r"backbone 'vnet': patch_size \(16, 16, 12\) has size 12 on axis 2 .*not divisible by 8", (4,),
            strides=[2, 2, 2, [2, 2, 1]], patch_size=[16, 16, 12], sw_stride=[8, 8, 6]),
    _config("train-sw-stride-beyond-patch", "training", "`--sw_stride [8,8,17]` larger than the patch",
            r"config keys patch_size, sw_stride: sw_stride \[8, 8, 17\] must be in \[1, patch\] on every axis of "
            r"patch_size \[16, 16, 16\]", (4,), sw_stride=[8, 8, 17]),
    _config("train-no-unlabelled-batch", "training", "`--unlabelled_batch_size 0` with use_unlabelled True",
            r"use_unlabelled=True needs unlabelled_batch_size >= 1, got 0 \(for a supervised-only run set "
            r"use_unlabelled False\)", (4,), unlabelled_batch_size=0),
    _config("train-burn-in-whole-run", "training", "`--supervised_iterations 100000`: a burn-in as long as the run",
            r"config keys use_unlabelled, supervised_iterations, max_epochs, epoch_length: supervised_iterations="
            r"100000 leaves none of the run's \d+ iterations for the unlabelled losses", (4,),
            supervised_iterations=100000),
]  # fmt: skip


# -------------------------------------------------------------------------------------------------- training: data


def _remove_key(key: str) -> Callable[[Sandbox], None]:
    def setup(sb: Sandbox) -> None:
        meta = sb.dataset_json()
        meta.pop(key, None)
        sb.write_dataset_json(meta)

    return setup


def _four_d(channels: int) -> Callable[[Path], None]:
    def rewrite(path: Path) -> None:
        image = _load(path)
        array = np.asarray(image.dataobj, dtype=np.float32)
        _save(path, np.stack([array] * channels, axis=-1), image.affine)

    return rewrite


def _two_d(path: Path) -> None:
    image = _load(path)
    _save(path, np.asarray(image.dataobj, dtype=np.float32)[:, :, 0], image.affine)


def _on(which: str, case: str, change: Callable[[Path], None]) -> Callable[[Sandbox], None]:
    """Apply ``change`` to the image or label file of ``case`` (``which``: ``"image"``, ``"label"``, ``"input"``)."""

    def setup(sb: Sandbox) -> None:
        path = sb.inputs / f"{case}.nii.gz" if which == "input" else getattr(sb, which)(case)
        change(path)

    return setup


def _label_value(value: float) -> Callable[[Path], None]:
    def rewrite(path: Path) -> None:
        image = _load(path)
        integer = np.isfinite(value) and value == int(value)
        array = np.asarray(image.dataobj).astype(np.int16 if integer else np.float32)
        array[1, 1, 1] = value
        _save(path, array, image.affine)

    return rewrite


def _label_shape(path: Path) -> None:
    image = _load(path)
    _save(path, np.asarray(image.dataobj)[:, :, :15].copy(), image.affine)


def _label_shift(path: Path) -> None:
    image = _load(path)
    affine = image.affine.copy()
    affine[2, 3] += 0.5
    _save(path, np.asarray(image.dataobj), affine)


def _duplicate_entry(sb: Sandbox) -> None:
    meta = sb.dataset_json()
    meta["training"].append(dict(meta["training"][0]))
    sb.write_dataset_json(meta)


def _entry_without_image(sb: Sandbox) -> None:
    meta = sb.dataset_json()
    meta["training"][0] = {"label": meta["training"][0]["label"]}
    sb.write_dataset_json(meta)


def _data_case(id, input, setup, message, items=(), cli=False, while_loading=False, **overrides) -> BadInput:
    steps = _steps(setup, _set(**overrides)) if overrides else setup
    return BadInput(
        id, "training", input, steps, message, NO_TRAINING_OUTPUT, tuple(items), cli=cli, while_loading=while_loading
    )


_IMAGE0 = r"image \(case 'case_000'\) {data}/imagesTr/case_000\.nii\.gz"
_LABEL0 = r"label \(case 'case_000'\) {data}/labelsTr/case_000\.nii\.gz"

_TRAINING_DATA = [
    _data_case("train-dataset-dir-missing", "`--dataset_dir` that does not exist", _set(),
               r"dataset folder {root}/nowhere does not exist\.", (11,), dataset_dir="$@bundle_root + '/../nowhere'"),
    _data_case("train-json-missing", "data set folder without dataset.json", lambda sb: (sb.data / "dataset.json").unlink(),
               r"{data}/dataset\.json not found; expected a dataset json with a 'training' list", (11,)),
    _data_case("train-json-no-training", "dataset.json without a `training` list", _remove_key("training"),
               r"{data}/dataset\.json has no 'training' list; expected a dataset json with 'training'", (11,)),
    _data_case("train-json-invalid", "dataset.json that is not JSON",
               lambda sb: (sb.data / "dataset.json").write_text("{'training': [oops"),
               r"{data}/dataset\.json is not valid JSON \(.*\); expected a dataset description object", (11,)),
    _data_case("train-datalist-file-missing", "`--datalist_file mine.json` that is not in the data set folder",
               _set(datalist_file="mine.json"),
               r"{data}/mine\.json not found; expected a dataset json .*\(datalist_file names it inside dataset_dir\)",
               (11,)),
    _data_case("train-listed-image-missing", "an image listed in dataset.json but missing on disk",
               lambda sb: sb.image().unlink(),
               r"image of case 'case_000': file {data}/imagesTr/case_000\.nii\.gz is listed but missing on disk", ()),
    _data_case("train-image-truncated", "truncated `.nii.gz` image (half the bytes)", _on("image", "case_000", _truncate),
               _IMAGE0 + r" is truncated or corrupt \(EOFError: .*\); expected a complete \.nii\.gz file", (6,)),
    _data_case("train-image-garbage", "image file of random bytes", _on("image", "case_000", _random_bytes),
               _IMAGE0 + r" cannot be read \(.*\); expected a complete, valid image file", (6,)),
    _data_case("train-label-empty", "empty (0-byte) label file", _on("label", "case_000", lambda p: p.write_bytes(b"")),
               _LABEL0 + r" cannot be read \(.*\); expected a complete, valid image file", (6,)),
    _data_case("train-image-2d", "2-D image (one slice)", _on("image", "case_000", _two_d),
               _IMAGE0 + r" is 2-D \(shape \(16, 16\)\); expected a 3-D volume \(H, W, D\)", (7,)),
    _data_case("train-image-channels", "image with 3 channels (4-D) for `in_channels` 1", _on("image", "case_000", _four_d(3)),
               _IMAGE0 + r" \(shape \(16, 16, 16, 3\)\) has 3 channel\(s\); expected in_channels=1", (7,)),
    _data_case("train-image-channels-config", "1-channel images with `--in_channels 2`", _set(in_channels=2),
               _IMAGE0 + r" \(shape \(16, 16, 16\)\) has 1 channel\(s\); expected in_channels=2", (7,)),
    _data_case("train-label-shape", "label with another shape than its image", _on("label", "case_000", _label_shape),
               _LABEL0 + r" has spatial shape \(16, 16, 15\), image {data}/imagesTr/case_000\.nii\.gz has "
               r"\(16, 16, 16\); expected the same voxel grid", ()),
    _data_case("train-label-affine", "label whose affine is shifted 0.5 mm from its image's",
               _on("label", "case_000", _label_shift),
               r"label \(case 'case_000'\) {data}/labelsTr/case_000\.nii\.gz and image {data}/imagesTr/case_000\.nii\.gz "
               r"have different affines \(largest difference 0\.5 > 0\.001\)", ()),
    _data_case("train-label-out-of-range", "label value 3 with `num_classes` 2", _on("label", "case_000", _label_value(3)),
               _LABEL0 + r" holds values \[3\] that are not class indices; expected integers in 0\.\.1 \(num_classes=2\)",
               (6,)),
    _data_case("train-label-fraction", "label value 0.5 (a probability map)", _on("label", "case_000", _label_value(0.5)),
               _LABEL0 + r" holds values \[0\.5\] that are not class indices", (6,)),
    _data_case("train-image-nan-cached", "NaN voxel in a labelled image (cached: `cache_rate` 1)",
               _on("image", "case_000", lambda p: _set_voxel(p, np.nan)),
               r"loading case 'case_000', image {data}/imagesTr/case_000\.nii\.gz, label {data}/labelsTr/case_000\.nii\.gz "
               r"failed: ValueError: .*1 NaN and 0 Inf voxels", (3, 6), cli=True, while_loading=True, num_workers=2),
    _data_case("train-image-inf-uncached", "Inf voxel in an unlabelled image with `--cache_rate 0.5`",
               _on("image", "case_003", lambda p: _set_voxel(p, np.inf)),
               r"image \(case 'case_003'\) {data}/imagesTr/case_003\.nii\.gz: 0 NaN and 1 Inf voxels of 4096 \(first at "
               r"voxel \(3, 4, 5\)\); expected finite intensities", (3,), cache_rate=0.5),
    _data_case("train-validation-nan", "NaN voxel in a validation case (`--num_validation 1`)",
               _on("image", "case_004", lambda p: _set_voxel(p, np.nan)),
               r"image \(case 'case_004'\) {data}/imagesTr/case_004\.nii\.gz: 1 NaN and 0 Inf voxels", (3,),
               num_validation=1),
    _data_case("train-label-nan", "NaN voxel in a (float) label", _on("label", "case_000", _label_value(np.nan)),
               _LABEL0 + r" holds values \[nan\] that are not class indices", (3,)),
    _data_case("train-image-not-gzipped", "uncompressed NIfTI bytes under a `.nii.gz` name",
               _on("image", "case_000", lambda p: p.write_bytes(gzip.decompress(p.read_bytes()))),
               _IMAGE0 + r" cannot be read \(.*\); expected a complete, valid image file", (6,)),
    _data_case("train-json-duplicate-case", "dataset.json listing a case twice", _duplicate_entry,
               r"{data}/dataset\.json: case id 'case_000' appears twice", (11,)),
    _data_case("train-json-entry-without-image", "dataset.json `training` entry without an `image` key",
               _entry_without_image,
               r"dataset\.json 'training'\[0\]: expected an image path or an object with an 'image' key", (11,)),
    _data_case("train-num-validation-too-many", "`--num_validation 6` with 5 labelled train cases",
               _set(num_validation=6),
               r"num_validation=6: validation cases need labels, but only 5 of the 5 train cases have a label file", ()),
    _data_case("train-all-labelled-semi", "semi-supervised run on a set whose every train case is labelled "
               "(the supervised-only run is valid: tests/test_supervised_only.py)", _set(num_labelled=None),
               r"empty unlabelled pool: all 5 train cases are labelled \(5\) .* or train supervised-only "
               r"\(use_unlabelled False\)", (12,)),
    _data_case("train-num-labelled-too-many", "`--num_labelled 10` with 5 labelled train cases", _set(num_labelled=10),
               r"num_labelled=10 but only 5 train cases have label files", ()),
    _data_case("train-labelled-ids-test-case", "`labelled_ids` naming a test case", _set(num_labelled=None,
               labelled_ids=["case_005"]),
               r"labelled names 1 case id\(s\) that are not in the train list: 'case_005' \(a test case\)", ()),
    _data_case("train-ckpt-dir-file", "`ckpt_dir` is a file", lambda sb: _replace_folder_with_file(sb.models),
               r"output folder ckpt_dir='{run}/models' is an existing file, not a folder\.", (8,)),
    _data_case("train-ckpt-dir-under-file", "`--ckpt_dir` inside a path whose parent is a file",
               _set(ckpt_dir="$@bundle_root + '/eval/summary.md/models'"),
               r"cannot create output folder ckpt_dir='{run}/eval/summary\.md/models': a part of the path is a file",
               (8,)),
    _data_case("train-output-dir-file", "`output_dir` is a file",
               lambda sb: _replace_folder_with_file(sb.run / "eval"),
               r"output folder output_dir='{run}/eval' is an existing file, not a folder\.", (8,)),
    _data_case("train-export-dir-file", "`export_dir` is a file (the run is exported when training ends)",
               lambda sb: _replace_folder_with_file(sb.run / "export"),
               r"output folder export_dir='{run}/export' is an existing file, not a folder\.", (8,)),
    _data_case("train-resume-missing", "`--resume True` without a resume.pt", _set(resume=True),
               r"checkpoint {run}/models/resume\.pt not found", ()),
    _data_case("train-resume-random", "`--resume True` with a resume.pt of random bytes",
               _steps(lambda sb: _random_bytes(sb.models / "resume.pt"), _set(resume=True)),
               r"checkpoint {run}/models/resume\.pt is not a PyTorch checkpoint", (10,)),
    _data_case("train-resume-model-file", "`--resume` naming model_last.pt (a network checkpoint, not a resume file)",
               _set(resume="$@ckpt_dir + '/model_last.pt'"),
               r"checkpoint {run}/models/model_last\.pt has no \[.*'student'.*\] \(it holds \['model', 'settings'\]\)",
               (10,)),
    _data_case("train-resume-other-settings", "`--resume True` with a resume.pt of a run with other settings",
               _steps(lambda sb: write_checkpoint(sb.models / "resume.pt", num_prototypes=3), _set(resume=True)),
               r"checkpoint {run}/models/resume\.pt was trained with num_prototypes=3; the config says "
               r"num_prototypes=2: add --num_prototypes 3", (10,)),
]  # fmt: skip

# -------------------------------------------------------------------------------------------------- training: resume

_RESUME = "tests/test_bundle_la.py::test_resume_continues_to_the_same_teacher_best_model_and_history"
_TRAINING_RESUME = [
    BadInput("resume-best-model", "training", "kill after epoch 1, `--resume True`; no better model after the resume",
             None, "best metric and epoch restored from resume.pt", "model.pt unchanged", (1,), proved_by=_RESUME),
    BadInput("resume-best-metric-round-trip", "training", "resume, then a worse and a better validation score",
             None, "the worse score keeps model.pt, the better one replaces it", "model.pt unchanged by the worse",
             (1,), proved_by="tests/test_checkpoint_history.py::"
             "test_best_metric_round_trip_keeps_the_best_model_across_a_resume"),
    BadInput("resume-history", "training", "kill after a history row newer than resume.pt, `--resume True`", None,
             "history.csv continues (rows after resume.pt's iteration dropped, none duplicated)",
             "history rows before the resume point unchanged", (2,), proved_by=_RESUME),
    BadInput("resume-history-tensorboard", "training", "resumed history: csv, training_curves.png, TensorBoard",
             None, "csv, figure and TensorBoard steps continue without duplicates", "earlier rows and events kept",
             (2,), proved_by="tests/test_checkpoint_history.py::"
             "test_a_resumed_history_continues_the_csv_the_figure_and_tensorboard"),
    BadInput("resume-stale-temporary", "training", "`.resume.pt.*.tmp` left by a kill mid-write", None,
             "removed when the next run starts", "other files in ckpt_dir untouched", (13,),
             proved_by="tests/test_checkpoint_history.py::test_stale_temporaries_are_removed_at_start_and_nothing_else"),
    BadInput("resume-umask", "training", "checkpoints written under umask 027 / 002", None,
             "mode 0640 / 0664 (the umask's), not 0600", "a failed write keeps the previous checkpoint", (13,),
             proved_by="tests/test_checkpoint_history.py::test_atomic_save_follows_the_umask_and_leaves_no_temporary"),
]  # fmt: skip


# ------------------------------------------------------------------------------------------------------ evaluation


def _no_test_cases(sb: Sandbox) -> None:
    meta = sb.dataset_json()
    meta.pop("test_ids", None)
    meta["training"] = [e for e in meta["training"] if "case_005" not in e["image"]]
    sb.write_dataset_json(meta)


def _image_only_test_case(sb: Sandbox) -> None:
    """Test cases case_004 (with label) and case_005 (image only, listed second)."""
    meta = sb.dataset_json()
    meta.pop("test_ids", None)
    test = [e for e in meta["training"] if "case_004" in e["image"]]
    meta["training"] = [e for e in meta["training"] if "case_004" not in e["image"] and "case_005" not in e["image"]]
    meta["test"] = [*test, "./imagesTr/case_005.nii.gz"]
    sb.write_dataset_json(meta)


def _checkpoint(change: Callable[[Path], None], name: str = "model_last.pt") -> Callable[[Sandbox], None]:
    def setup(sb: Sandbox) -> None:
        change(sb.models / name)

    return setup


def _foreign(path: Path) -> None:
    """A plain state dict of a 4-class network (another bundle's checkpoint, no settings)."""
    write_checkpoint(path, plain=True, num_classes=4, class_names=None)


def _pickled_object(path: Path) -> None:
    import torch

    torch.save({"model": {"weight": np.zeros(3)}}, path)


def _resume_file(path: Path) -> None:
    import torch

    state = torch.load(path, weights_only=True)["model"]
    torch.save({"student": state, "teacher": state, "trainer": {"iteration": 3}}, path)


def _checkpoint_cases(entry: str, key: str, untouched: str) -> list[BadInput]:
    """The bad checkpoints refused by evaluation (``checkpoint``) and inference (``ckpt_path``)."""
    short = {"evaluating": "eval", "inference": "infer"}[entry]
    path = r"checkpoint {run}/models/model_last\.pt"

    def case(id, input, setup, message, items=()):
        return BadInput(f"{short}-{id}", entry, input, setup, message, untouched, tuple(items))

    return [
        case("checkpoint-missing", f"`{key}` that does not exist", _set(**{key: "$@ckpt_dir + '/absent.pt'"}),
             r"checkpoint {run}/models/absent\.pt not found", ()),
        case("checkpoint-folder", f"`{key}` naming a folder", _set(**{key: "@ckpt_dir"}),
             r"checkpoint {run}/models not found \(it is a folder\)", ()),
        case("checkpoint-random", f"`{key}` of random bytes", _checkpoint(_random_bytes),
             path + r" is not a PyTorch checkpoint", (10,)),
        case("checkpoint-text", f"`{key}` that is a text file", _checkpoint(lambda p: p.write_text("epoch 10: dice 0.91\n")),
             path + r" is not a PyTorch checkpoint", (10,)),
        case("checkpoint-empty", f"`{key}` of 0 bytes", _checkpoint(lambda p: p.write_bytes(b"")),
             path + r" is empty \(0 bytes\): not a PyTorch checkpoint", ()),
        case("checkpoint-truncated", f"truncated `{key}` (an interrupted copy)", _checkpoint(_truncate),
             path + r" is truncated or corrupted", ()),
        case("checkpoint-pickled-object", f"`{key}` holding a pickled numpy object", _checkpoint(_pickled_object),
             path + r" holds Python objects other than tensors and plain values", ()),
        case("checkpoint-other-settings", f"`{key}` trained with `use_dim False`, `use_cps False` (Mean Teacher)",
             _checkpoint(lambda p: write_checkpoint(p, use_dim=False, use_cps=False)),
             path + r" was trained with use_dim=False, use_cps=False; the config says use_dim=True, use_cps=True: "
             r"add --use_dim False --use_cps False", (10,)),
        case("checkpoint-other-preprocessing", f"`{key}` trained with `normalise zscore`",
             _checkpoint(lambda p: write_checkpoint(p, normalise="zscore")),
             path + r" was trained with normalise=zscore; the config says normalise=minmax: add --normalise zscore",
             (10,)),
        case("checkpoint-foreign", f"`{key}`: another bundle's plain state dict (4 classes, no settings)",
             _checkpoint(_foreign),
             path + r" does not fit the network 'model': .*shape mismatch.*\(it holds no settings: probably another "
             r"bundle's or configuration's checkpoint\)", (10,)),
        case("checkpoint-resume-file", f"`{key}` is a resume.pt (student, teacher, trainer)", _checkpoint(_resume_file),
             path + r" holds the objects \['student', 'teacher', 'trainer'\] but no 'model': give a checkpoint of the "
             r"network", (10,)),
    ]  # fmt: skip


def _eval(id, input, setup, message, items=(), cli=False) -> BadInput:
    return BadInput(id, "evaluating", input, setup, message, NO_REPORT, tuple(items), cli=cli)


_TEST5 = r"image \(case 'case_005'\) {data}/imagesTr/case_005\.nii\.gz"

_EVALUATION = [
    _eval("eval-no-test-cases", "dataset.json that lists no test case", _no_test_cases,
          r"no test cases: none listed by {data}/dataset\.json", (5,), cli=True),
    _eval("eval-test-image-nan", "NaN voxel in a test image", _on("image", "case_005", lambda p: _set_voxel(p, np.nan)),
          _TEST5 + r": 1 NaN and 0 Inf voxels of 4096 \(first at voxel \(3, 4, 5\)\); expected finite intensities", (3,)),
    _eval("eval-test-image-truncated", "truncated test image", _on("image", "case_005", _truncate),
          _TEST5 + r" is truncated or corrupt", (6,)),
    _eval("eval-test-label-out-of-range", "test label with value 2 for `num_classes` 2",
          _on("label", "case_005", _label_value(2)),
          r"label \(case 'case_005'\) {data}/labelsTr/case_005\.nii\.gz holds values \[2\] that are not class indices",
          (6,)),
    _eval("eval-test-case-without-label", "a test case listed without a label file (image only), after a labelled one",
          _image_only_test_case,
          r"image \(case 'case_005'\) {data}/imagesTr/case_005\.nii\.gz has no label file; expected a label for every "
          r"case", ()),
    _eval("eval-test-label-missing", "test label listed but missing on disk", lambda sb: sb.label("case_005").unlink(),
          r"label of case 'case_005': file {data}/labelsTr/case_005\.nii\.gz is listed but missing on disk", ()),
    _eval("eval-test-label-affine", "test label on another voxel grid (affine shifted 0.5 mm)",
          _on("label", "case_005", _label_shift),
          r"label \(case 'case_005'\) {data}/labelsTr/case_005\.nii\.gz and image {data}/imagesTr/case_005\.nii\.gz "
          r"have different affines", ()),
    _eval("eval-predictions-dir-file", "`output_dir/predictions` is a file (predictions are saved there)",
          lambda sb: _replace_folder_with_file(sb.run / "eval" / "predictions"),
          r"output folder .*='{run}/eval/predictions' is an existing file, not a folder\.", (8,)),
    _eval("eval-output-dir-file", "`output_dir` is a file", lambda sb: _replace_folder_with_file(sb.run / "eval"),
          r"output folder output_dir='{run}/eval' is an existing file, not a folder\.", (8,)),
    _eval("eval-unknown-key", "misspelt `--save_prediction False`", _set(save_prediction=False),
          r"unknown config key 'save_prediction' \(did you mean 'save_predictions'\?\)", (4,)),
    _eval("eval-bool", "`--save_predictions false` (a string)", _set(save_predictions="false"),
          _BOOL.format("save_predictions='false'"), (9,)),
    *_checkpoint_cases("evaluating", "checkpoint", NO_REPORT),
]  # fmt: skip


# ------------------------------------------------------------------------------------------------------- inference


def _infer(id, input, setup, message, items=(), cli=False) -> BadInput:
    return BadInput(id, "inference", input, setup, message, NO_PREDICTION, tuple(items), cli=cli)


_INPUT = r"image \(case 'case_005'\) {run}/inputs/case_005\.nii\.gz"


def _only_text_inputs(sb: Sandbox) -> None:
    shutil.rmtree(sb.inputs)
    sb.inputs.mkdir()
    (sb.inputs / "notes.txt").write_text("no images here\n")


def _degenerate_affine(path: Path) -> None:
    """A zero voxel size on the second axis (an sform nibabel writes but cannot decompose into a qform)."""
    data = np.asarray(_load(path).dataobj, dtype=np.float32)
    header = nib.Nifti1Header()
    header.set_data_shape(data.shape)
    header.set_data_dtype(np.float32)
    header.set_sform(np.diag([0.625, 0.0, 0.625, 1.0]), code=1)
    nib.save(nib.Nifti1Image(data, None, header), str(path))


def _same_name_in_two_folders(sb: Sandbox) -> None:
    """``--input`` two folders that both hold ``case_005.nii.gz``: two inputs, one output name."""
    other = sb.inputs.parent / "inputs_again"
    other.mkdir()
    shutil.copy(sb.inputs / "case_005.nii.gz", other / "case_005.nii.gz")
    sb.overrides["input"] = [str(sb.inputs), str(other)]


def _own_label_maps(sb: Sandbox, names=("case_004", "case_005")) -> list[Path]:
    """Label maps as inference writes them (header marked), in place of the given inputs."""
    from crln_monai.evaluation.postprocessing import write_label_map

    written = []
    for name in names:
        image = _load(sb.inputs / f"{name}.nii.gz")
        (sb.inputs / f"{name}.nii.gz").unlink()
        label = np.zeros((1, *image.shape), np.uint8)
        written.append(write_label_map(label, sb.inputs / f"{name}_seg.nii.gz", {"affine": image.affine}))
    return written


def _foreign_prediction(sb: Sandbox) -> None:
    """The user's own segmentation of case_005 (a label file, no header mark) where inference would write its own."""
    (sb.run / "predictions").mkdir()
    shutil.copy(sb.label("case_005"), sb.run / "predictions" / "case_005_seg.nii.gz")


def _channel_gap(sb: Sandbox) -> None:
    """nnU-Net test files for a 2-channel model: case_a complete, case_b with channels 0 and 2 (1 missing)."""
    for name in ("case_a_0000", "case_a_0001", "case_b_0000", "case_b_0002"):
        shutil.copy(sb.inputs / "case_004.nii.gz", sb.inputs / f"{name}.nii.gz")
    for name in ("case_004", "case_005"):
        (sb.inputs / f"{name}.nii.gz").unlink()
    sb.overrides["in_channels"] = 2


def _nrrd_input(sb: Sandbox) -> None:
    (sb.inputs / "case_006.nrrd").write_bytes(b"NRRD0004\n")
    sb.overrides["input"] = str(sb.inputs / "case_006.nrrd")


_INFERENCE = [
    _infer("infer-input-folder-empty", "input folder without NIfTI files", _only_text_inputs,
           r"no NIfTI files \(\*\.nii\.gz, \*\.nii\) in input folder {run}/inputs", ()),
    _infer("infer-input-not-nifti", "`--input` naming an `.nrrd` file", _nrrd_input,
           r"input {run}/inputs/case_006\.nrrd is not NIfTI \(expected \.nii\.gz or \.nii\)", ()),
    _infer("infer-input-missing", "`--input` naming a file that does not exist",
           _set(input="$@bundle_root + '/inputs/absent.nii.gz'"),
           r"input {run}/inputs/absent\.nii\.gz not found; expected a NIfTI file or a folder of NIfTI files", ()),
    _infer("infer-input-folder-missing", "`--input` naming a folder that does not exist",
           _set(input="$@bundle_root + '/scans'"), r"input {run}/scans not found; expected a NIfTI file or a folder of NIfTI files", ()),
    _infer("infer-input-degenerate-affine", "input image whose affine has a zero voxel size",
           _on("input", "case_005", _degenerate_affine),
           _INPUT + r" has a degenerate affine .*; expected finite, non-zero voxel sizes", ()),
    _infer("infer-input-empty-list", "`--input []`", _set(input=[]),
           r"config key 'input' must be a path or a non-empty list of paths", ()),
    _infer("infer-input-nan", "NaN voxel in an input image", _on("input", "case_005", lambda p: _set_voxel(p, np.nan)),
           _INPUT + r": 1 NaN and 0 Inf voxels of 4096 \(first at voxel \(3, 4, 5\)\); expected finite intensities",
           (3,), cli=True),
    _infer("infer-input-inf", "-Inf voxel in an input image", _on("input", "case_005", lambda p: _set_voxel(p, -np.inf)),
           _INPUT + r": 0 NaN and 1 Inf voxels", (3,)),
    _infer("infer-input-truncated", "truncated input `.nii.gz`", _on("input", "case_005", _truncate),
           _INPUT + r" is truncated or corrupt", (6,)),
    _infer("infer-input-garbage", "input `.nii.gz` of gzipped text", _on("input", "case_005",
           lambda p: p.write_bytes(gzip.compress(b"not a nifti header " * 40))),
           _INPUT + r" (cannot be read|is truncated)", (6,)),
    _infer("infer-input-2d", "2-D input image", _on("input", "case_005", _two_d),
           _INPUT + r" is 2-D \(shape \(16, 16\)\); expected a 3-D volume", (7,)),
    _infer("infer-input-channels", "input image with 2 channels for `in_channels` 1",
           _on("input", "case_005", _four_d(2)),
           _INPUT + r" \(shape \(16, 16, 16, 2\)\) has 2 channel\(s\); expected in_channels=1", (7,)),
    _infer("infer-output-dir-file", "`output_dir` is a file",
           lambda sb: _replace_folder_with_file(sb.run / "predictions"),
           r"output folder output_dir='{run}/predictions' is an existing file, not a folder\.", (8,)),
    _infer("infer-output-dir-under-file", "`--output_dir` below a file (cannot be created)",
           _set(output_dir="$@bundle_root + '/eval/summary.md/predictions'"),
           r"cannot create output folder output_dir='{run}/eval/summary\.md/predictions': a part of the path is a file",
           (8,)),
    _infer("infer-device-absent", "`--device cuda:99`, a GPU this machine does not have", _set(device="cuda:99"),
           r"config key 'device' must be .* that exists here .*got 'cuda:99'", (4,)),
    _infer("infer-unknown-key", "misspelt `--inputs`", _set(inputs="x"),
           r"unknown config key 'inputs' \(did you mean 'input'", (4,)),
    _infer("infer-inputs-one-case-name", "`--input` two folders that both hold `case_005.nii.gz` (both would be "
           "`case_005_seg.nii.gz`)", _same_name_in_two_folders,
           r"inputs {run}/inputs/case_005\.nii\.gz and {run}/inputs_again/case_005\.nii\.gz are both case 'case_005' "
           r"and would both be written to {run}/predictions/case_005_seg\.nii\.gz; expected one input per case name",
           (8,)),
    _infer("infer-output-overwrites-input", "`--output_dir` = the input folder, which holds the user's own "
           "`case_004_seg.nii.gz`", _steps(lambda sb: shutil.copy(sb.inputs / "case_004.nii.gz",
                                                                  sb.inputs / "case_004_seg.nii.gz"),
                                          _set(output_dir="$@bundle_root + '/inputs'")),
           r"output {run}/inputs/case_004_seg\.nii\.gz of input {run}/inputs/case_004\.nii\.gz would overwrite the "
           r"input {run}/inputs/case_004_seg\.nii\.gz", (8,)),
    _infer("infer-output-foreign-file", "`output_dir` already holds a `case_005_seg.nii.gz` this tool did not write",
           _foreign_prediction,
           r"output {run}/predictions/case_005_seg\.nii\.gz of input {run}/inputs/case_005\.nii\.gz exists and was "
           r"not written by crln-monai", (8,)),
    _infer("infer-input-own-label-map", "`--input` naming a label map written by inference",
           lambda sb: sb.overrides.update(input=str(_own_label_maps(sb, ("case_005",))[0])),
           r"input {run}/inputs/case_005_seg\.nii\.gz is a label map written by crln-monai \(NIfTI descrip "
           r"'crln-monai segmentation'\); expected an image to segment", ()),
    _infer("infer-input-only-label-maps", "input folder holding only label maps written by inference",
           _own_label_maps,
           r"no images in input folder {run}/inputs: its 2 NIfTI file\(s\) \(case_004_seg\.nii\.gz, "
           r"case_005_seg\.nii\.gz\) are label maps written by crln-monai", ()),
    _infer("infer-nnunet-channel-gap", "nnU-Net test folder for `in_channels` 2 with `case_b_0000`, `case_b_0002`",
           _channel_gap,
           r"input case 'case_b' has the channel files case_b_0000\.nii\.gz, case_b_0002\.nii\.gz \(channels "
           r"\[0, 2\]\); expected case_b_0000 \.\. case_b_0001 \(nnU-Net naming, in_channels=2\)", (7,)),
    *_checkpoint_cases("inference", "ckpt_path", NO_PREDICTION),
]  # fmt: skip


# ------------------------------------------------------------------------------------------------------ conversion


def _convert(id, input, setup, message, items=(), cli=False, may_write=()) -> BadInput:
    return BadInput(id, "conversion", input, setup, message, NO_CONVERSION, tuple(items), may_write, cli=cli)


def _h5(case: str, **arrays: Any) -> Callable[[Sandbox], None]:
    def setup(sb: Sandbox) -> None:
        _write_h5_case(sb.src / case, **arrays)

    return setup


def _nan_h5(value: float) -> np.ndarray:
    image = np.random.default_rng(1).standard_normal((12, 10, 6)).astype(np.float32)
    image[2, 3, 4] = value
    return image


def _prepared_with_other_settings(sb: Sandbox) -> None:
    sb.out.mkdir()
    (sb.out / ".crln_prepare.json").write_text(
        json.dumps({"converter": "prepare_la_from_h5", "settings": {"spacing": [1.0, 1.0, 1.0]}}, indent=2) + "\n"
    )


def _brats_split(sb: Sandbox) -> None:
    (sb.root / "split").mkdir()
    for name, ids in (("train", "BraTS19_a\nBraTS19_b\n"), ("val", "BraTS19_c\n"), ("test", "BraTS19_d\n")):
        (sb.root / "split" / f"{name}.txt").write_text(ids)


def _prepared_then_broken(sb: Sandbox) -> None:
    """A complete earlier conversion in ``out/``; then caseC's source gets a NaN and its output is removed (redone)."""
    script_module("prepare_la").main(sb.argv)
    for folder in ("imagesTr", "labelsTr"):
        (sb.out / folder / "caseC.nii.gz").unlink()
    _write_h5_case(sb.src / "caseC", image=_nan_h5(np.nan))


def script_module(name: str) -> Any:
    """``scripts/<name>.py`` as a module (its ``main(argv)`` is what the script runs)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"_{name}_script", REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_CONVERSION = [
    _convert("convert-la-source-missing", "`prepare_la.py --source_dir` that does not exist",
             _argv(replace={"--source_dir": "{root}/nowhere"}),
             r"source_dir {root}/nowhere does not exist; expected the folder of LA case folders", (11,)),
    _convert("convert-la-source-file", "`--source_dir` that is a file", _argv(replace={"--source_dir": "{src}/train.list"}),
             r"source_dir {src}/train\.list is not a folder; expected the folder of LA case folders", (11,)),
    _convert("convert-la-no-cases", "source folder holding neither h5 nor NRRD cases",
             _steps(lambda sb: shutil.rmtree(sb.src), lambda sb: sb.src.mkdir()),
             r"source_format='auto': {src} holds neither <case>/mri_norm2\.h5 nor <case>/lgemri\.nrrd", (11,)),
    _convert("convert-la-nan", "UA-MT h5 image with a NaN voxel", _h5("caseA", image=_nan_h5(np.nan)),
             r"prepare_la_from_h5: case 'caseA': the image holds 1 NaN and 0 Inf voxels of 720 .*refusing to write "
             r"it: expected finite intensities", (3,)),
    _convert("convert-la-inf", "UA-MT h5 image with an Inf voxel (second case: the first is converted, then dropped)",
             _h5("caseB", image=_nan_h5(np.inf)),
             r"prepare_la_from_h5: case 'caseB': the image holds 0 NaN and 1 Inf voxels", (3,)),
    _convert("convert-la-nan-into-prepared-folder", "NaN voxel in a case redone in a folder converted before "
             "(the folder stays as it was)", _prepared_then_broken,
             r"prepare_la_from_h5: case 'caseC': the image holds 1 NaN and 0 Inf voxels", (3,)),
    _convert("convert-la-case-missing", "train.list naming a case folder that is missing",
             lambda sb: (sb.src / "train.list").write_text("caseA\ncaseB\ncaseZ\n"),
             r"case 'caseZ' \(in the train list\) has no {src}/caseZ/mri_norm2\.h5", ()),
    _convert("convert-la-case-twice", "a case in both train.list and test.list",
             lambda sb: (sb.src / "test.list").write_text("caseB\ncaseC\n"),
             r"case id\(s\) in both the train and the test list: \['caseB'\]", ()),
    _convert("convert-la-h5-no-label", "h5 file without a `label` dataset", _h5("caseA", label=False),
             r"case 'caseA': {src}/caseA/mri_norm2\.h5 has no 'label' dataset \(keys: \['image'\]\)", ()),
    _convert("convert-la-h5-label-values", "h5 label with value 2", _h5("caseA", label=np.full((12, 10, 6), 2, np.uint8)),
             r"case 'caseA': {src}/caseA/mri_norm2\.h5 'label' must hold 0/1, got values \[2\]", ()),
    _convert("convert-la-h5-shapes", "h5 image and label of different shapes",
             _h5("caseA", label=np.zeros((12, 10, 5), np.uint8)),
             r"case 'caseA': {src}/caseA/mri_norm2\.h5 'image' \(12, 10, 6\) and 'label' \(12, 10, 5\) must be 3-D of "
             r"the same shape", ()),
    _convert("convert-la-other-settings", "`--out_dir` prepared earlier with other settings",
             _prepared_with_other_settings,
             r"{out} was prepared with other settings \({out}/\.crln_prepare\.json: .*\); now .*pass overwrite=True or "
             r"choose another out_dir", ()),
    _convert("convert-la-format", "`--source_format nifti`", _argv("--source_format", "nifti"),
             r"source_format must be 'auto', 'h5' or 'nrrd', got 'nifti'", ()),
    _convert("convert-la-crop-h5", "`--ua_mt_crop True` on UA-MT h5 files (already cropped)",
             _argv("--ua_mt_crop", "True"), r"ua_mt_crop applies to NRRD input; UA-MT h5 files are already cropped", ()),
    _convert("convert-la-num-labelled", "`--num_labelled 5` with 2 train cases",
             _argv(replace={"--num_labelled": "5"}),
             r"num_labelled must hold ints in 1\.\.2 \(the train list size\), got 5", ()),
    _convert("convert-la-train-list-missing", "`--train_list` naming a list file that does not exist",
             _argv(replace={"--train_list": "{src}/absent.list"}), r"case list {src}/absent\.list does not exist", ()),
    _convert("convert-la-spacing-zero", "`--spacing [0,0,0]`", _argv("--spacing", "[0,0,0]"),
             r"spacing must be 3 positive voxel sizes in mm \[x, y, z\], got \[0, 0, 0\]", ()),
    _convert("convert-la-spacing-negative", "`--spacing [-1,1,1]` (would flip the first axis)",
             _argv("--spacing", "[-1,1,1]"), r"spacing must be 3 positive voxel sizes in mm \[x, y, z\], got", ()),
    _convert("convert-la-spacing-2d", "`--spacing [1,1]` (2 values)", _argv("--spacing", "[1,1]"),
             r"spacing must be 3 positive voxel sizes in mm \[x, y, z\], got", ()),
    _convert("convert-la-missing-argument", "no `--source_dir` at all (python-fire's usage error, exit status 2)",
             lambda sb: sb.argv.__delitem__(slice(0, 2)),
             r"ERROR: The function received no value for the required argument: source_dir", ()),
    _convert("convert-la-misspelt-required", "`--sourcedir` instead of `--source_dir`",
             lambda sb: sb.argv.__setitem__(0, "--sourcedir"),
             r"prepare_la: unknown option --sourcedir \(did you mean --source_dir or --source_format\?\)", (4,)),
    _convert("convert-la-unknown-option", "misspelt option `--ua_mt_cropp True`", _argv("--ua_mt_cropp", "True"),
             r"prepare_la: unknown option --ua_mt_cropp \(did you mean --ua_mt_crop\?\); the options are --source_dir",
             (4,), cli=True),
    _convert("convert-la-unknown-option-equals", "misspelt option `--num-labeled=1` (fire's other spellings)",
             _argv("--num-labeled=1"), r"prepare_la: unknown option --num-labeled \(did you mean --num_labelled\?\)",
             (4,)),
    _convert("convert-pancreas-source-missing", "`prepare_pancreas_ct.py --source_dir` that does not exist",
             _argv(replace={"--source_dir": "{root}/nowhere"}, script="prepare_pancreas_ct"),
             r"source_dir {root}/nowhere does not exist", (11,)),
    _convert("convert-pancreas-no-cases", "Pancreas-CT source without PANCREAS_NNNN folders",
             _argv(script="prepare_pancreas_ct"), r"{src} holds no PANCREAS_NNNN case folders", (11,)),
    _convert("convert-brats-source-missing", "`prepare_brats19.py --source_dir` that does not exist",
             _argv(replace={"--source_dir": "{root}/nowhere"}, script="prepare_brats19"),
             r"source_dir {root}/nowhere does not exist", (11,)),
    _convert("convert-brats-cases-missing", "BraTS split naming case folders the source does not hold",
             _steps(_brats_split, _argv(replace={"--split_dir": "{root}/split"}, script="prepare_brats19")),
             r"4 listed case folder\(s\) not found in {src} \(or one level down\): \['BraTS19_a'", (11,)),
]  # fmt: skip


# -------------------------------------------------------------------------------------------------------- planning


def _plan(id, input, setup, message, items=(), cli=False) -> BadInput:
    return BadInput(id, "planning", input, setup, message, NO_PLAN, tuple(items), cli=cli)


def _plan_args(*extra: str, replace: dict[str, str] | None = None) -> Callable[[Sandbox], None]:
    """Change ``crln-plan``'s arguments: ``replace`` option -> value ({data}/{run}/{root} formatted), then ``extra``."""

    def setup(sb: Sandbox) -> None:
        names = {k: str(v) for k, v in sb.tokens().items()}
        for option, value in (replace or {}).items():
            sb.plan_argv[sb.plan_argv.index(option) + 1] = value.format(**names)
        sb.plan_argv += [e.format(**names) for e in extra]

    return setup


def _time_budget(duration: str, *extra: str) -> Callable[[Sandbox], None]:
    """``crln-plan --time duration`` instead of ``--iterations``, then ``extra`` arguments (later ones win)."""

    def setup(sb: Sandbox) -> None:
        index = sb.plan_argv.index("--iterations")
        del sb.plan_argv[index : index + 2]
        names = {k: str(v) for k, v in sb.tokens().items()}
        sb.plan_argv += ["--time", duration, *(e.format(**names) for e in extra)]

    return setup


def _rewrite(path: Path, change: Callable[[np.ndarray], np.ndarray]) -> None:
    image = _load(path)
    _save(path, change(np.asarray(image.dataobj).copy()), image.affine)


def _no_foreground(sb: Sandbox) -> None:
    for case in range(CASES_IN_DATA):
        _rewrite(sb.label(f"case_{case:03d}"), np.zeros_like)


def _constant_ct(sb: Sandbox) -> None:
    """The json says CT, and the two labelled cases' images are blank (all 0)."""
    meta = sb.dataset_json()
    meta["modality"] = {"0": "CT"}
    sb.write_dataset_json(meta)
    for case in ("case_000", "case_001"):
        _rewrite(sb.image(case), lambda a: np.zeros_like(a, dtype=np.float32))


def _classes(count: int) -> Callable[[Sandbox], None]:
    def setup(sb: Sandbox) -> None:
        meta = sb.dataset_json()
        meta["labels"] = {str(i): "background" if i == 0 else f"structure_{i}" for i in range(count)}
        sb.write_dataset_json(meta)

    return setup


_PLAN_IMAGE = r"image \(case '{case}'\) {{data}}/imagesTr/{case}\.nii\.gz"

_PLANNING = [
    _plan("plan-output-folder", "`--output` naming a folder", _plan_args(replace={"--output": "{run}"}),
          r"crln-plan: --output {run} is a folder; expected the override file to write, e\.g\. {run}/plan\.json",
          (8,), cli=True),
    _plan("plan-output-under-file", "`--output` below a file",
          _plan_args(replace={"--output": "{run}/eval/summary.md/plan.json"}),
          r"--output {run}/eval/summary\.md/plan\.json: {run}/eval/summary\.md is a file, not a folder", (8,)),
    _plan("plan-image-not-gzipped", "uncompressed NIfTI bytes under a `.nii.gz` name (a fake `.gz`)",
          _on("image", "case_002", lambda p: p.write_bytes(gzip.decompress(p.read_bytes()))),
          _PLAN_IMAGE.format(case="case_002") + r" cannot be read \(.*\); expected a complete, valid image file", (6,)),
    _plan("plan-image-truncated", "truncated `.nii.gz` of a validation case", _on("image", "case_004", _truncate),
          _PLAN_IMAGE.format(case="case_004") + r" is truncated or corrupt", (6,)),
    _plan("plan-label-affine", "label whose affine is shifted 0.5 mm from its image's",
          _on("label", "case_000", _label_shift),
          r"label \(case 'case_000'\) {data}/labelsTr/case_000\.nii\.gz and image {data}/imagesTr/case_000\.nii\.gz "
          r"have different affines", ()),
    _plan("plan-label-shape", "label with another shape than its image", _on("label", "case_001", _label_shape),
          r"label \(case 'case_001'\) {data}/labelsTr/case_001\.nii\.gz has spatial shape \(16, 16, 15\)", (7,)),
    _plan("plan-unlabelled-nan", "NaN voxel in an unlabelled image (the plan reads no statistics from it)",
          _on("image", "case_002", lambda p: _set_voxel(p, np.nan)),
          _PLAN_IMAGE.format(case="case_002") + r": 1 NaN and 0 Inf voxels of 4096", (3,)),
    _plan("plan-test-inf", "Inf voxel in a test image", _on("image", "case_005", lambda p: _set_voxel(p, np.inf)),
          _PLAN_IMAGE.format(case="case_005") + r": 0 NaN and 1 Inf voxels", (3,)),
    _plan("plan-no-foreground", "label files without a foreground voxel in every case", _no_foreground,
          r"none of the 2 labelled cases' label files holds a foreground voxel \(every voxel is 0, e\.g\. "
          r"{data}/labelsTr/case_000\.nii\.gz\)", ()),
    _plan("plan-ct-constant", "json modality CT, and the labelled images are blank (constant)", _constant_ct,
          r"normalise='ct' .*needs varying foreground intensities.*constant image\(s\): case 'case_000' "
          r"{data}/imagesTr/case_000\.nii\.gz \(all 0\)", ()),
    _plan("plan-classes-do-not-fit", "1000 classes declared in the json's `labels` (4 GiB)", _classes(1000),
          r"num_classes=1000: training needs ≈ [\d.]+ GiB even at the smallest patch \[\d+, \d+, \d+\] .*more "
          r"than the 3\.2 GiB usable \(80 % of 4 GiB\); expected at most about \d+ classes", (4,)),
    _plan("plan-memory", "`--memory_gib 0.0001`: no patch fits", _plan_args(replace={"--memory_gib": "0.0001"}),
          r"does not fit 0\.0001 GiB \(--memory_gib\)", (4,)),
    _plan("plan-time-unreadable", "`--time 45 minutes`", _time_budget("45 minutes"),
          r"--time: cannot read the duration '45 minutes': give a number with a unit, e\.g\. 45m, 1h30m", ()),
    _plan("plan-time-without-config", "`--time 5m` where no bundle's train.json can be found (outside a clone)",
          _time_budget("5m", "--train_config", "{root}/train.json"),
          r"--time needs the bundle's training config to probe the run, and {root}/train\.json is not a file", ()),
]  # fmt: skip


# ------------------------------------------------------------------------------------------------------- the table

CASES: list[BadInput] = [
    *_TRAINING_CONFIG, *_TRAINING_DATA, *_TRAINING_RESUME, *_EVALUATION, *_INFERENCE, *_CONVERSION, *_PLANNING
]  # fmt: skip
"""Every bad input of the suite, in the doc's order."""

ISSUE_ITEMS = range(1, 14)
"""The numbered items of issue 10 ("Nothing silently wrong"); every one is covered by at least one case."""


def _check_table() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})
    for case in CASES:
        assert case.entry in ENTRY_POINTS, case.id
        assert (case.setup is None) == (case.proved_by is not None), case.id
        assert "\n" not in case.input and "|" not in case.input.replace("\\|", ""), case.id


_check_table()
