#!/usr/bin/env python
"""A plain supervised 2-D U-Net baseline, trained for a fixed wall time on the labelled cases only.

The reference the time-budget protocol holds CRLN against (docs/results.md, "Own data on a budget"), written as a
user would write the 60-line baseline of issue 17: MONAI's ``UNet`` (2-D, channels 16–256, two residual units per
level), the labelled cases' slices along the last (thick) axis after RAS orientation, each volume z-scored over its
nonzero voxels, slices resized to ``--size``² (bilinear image, nearest label), random flips and quarter turns,
AdamW at 1e-3, ``--batch`` slices per step, as many steps as fit in ``--seconds``. Test volumes are predicted slice
by slice (logits resized back to the slice), the argmax scored with the project's metrics and report
(:func:`crln_monai.evaluation.write_class_report`), so the numbers compare with the bundle's evaluation.

The cases are the bundle's: :func:`crln_monai.data.semi_supervised_datalist` with the same ``--num_labelled`` and
``--num_validation`` (validation cases are not used for training), and its test list.

Example::

    python scripts/baseline_unet2d.py work/la_thick --num_labelled 8 --num_validation 8 --seconds 1800 --out work/baseline
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from crln_monai.data import semi_supervised_datalist
from crln_monai.evaluation import case_record, write_class_report


def load_case(item: dict[str, Any], with_label: bool = True) -> tuple[np.ndarray, np.ndarray | None, Any]:
    """``(image (X, Y, Z) z-scored over nonzero voxels, label or None, the loaded MetaTensor)`` in RAS order."""
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Orientationd

    keys = ["image", "label"] if with_label else ["image"]
    data = Compose([LoadImaged(keys), EnsureChannelFirstd(keys), Orientationd(keys, axcodes="RAS", labels=None)])(item)
    image = data["image"][0].numpy().astype(np.float32)
    nonzero = image != 0
    values = image[nonzero] if nonzero.any() else image
    image = np.where(nonzero, (image - values.mean()) / max(float(values.std()), 1e-8), 0.0).astype(np.float32)
    label = data["label"][0].numpy().astype(np.int64) if with_label else None
    return image, label, data["image"]


def _slices(volumes: list[tuple[np.ndarray, np.ndarray]], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every slice of every volume resized to ``size``²: images ``(N, 1, size, size)``, labels ``(N, size, size)``."""
    images, labels = [], []
    for image, label in volumes:
        x = torch.from_numpy(np.moveaxis(image, 2, 0))[:, None]
        y = torch.from_numpy(np.moveaxis(label, 2, 0))[:, None].float()
        images.append(F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False))
        labels.append(F.interpolate(y, size=(size, size), mode="nearest")[:, 0].long())
    return torch.cat(images), torch.cat(labels)


def _augment(image: torch.Tensor, label: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    k = int(torch.randint(0, 4, (1,), generator=generator))
    image, label = torch.rot90(image, k, (2, 3)), torch.rot90(label, k, (1, 2))
    if bool(torch.randint(0, 2, (1,), generator=generator)):
        image, label = image.flip(3), label.flip(2)
    return image, label


def train(
    volumes: list[tuple[np.ndarray, np.ndarray]], num_classes: int, seconds: float, size: int, batch: int, seed: int
) -> tuple[torch.nn.Module, int]:
    """Train for ``seconds`` of wall time; returns the network and the steps taken."""
    from monai.losses import DiceCELoss
    from monai.networks.nets import UNet

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    images, labels = _slices(volumes, size)
    net = UNet(2, 1, num_classes, channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=2)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    loss_function = DiceCELoss(to_onehot_y=True, softmax=True)
    net.train()
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        index = torch.randint(0, len(images), (batch,), generator=generator)
        image, label = _augment(images[index], labels[index], generator)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_function(net(image), label[:, None])
        loss.backward()
        optimizer.step()
        steps += 1
    return net.eval(), steps


@torch.no_grad()
def predict(net: torch.nn.Module, image: np.ndarray, size: int) -> np.ndarray:
    """Slice-by-slice argmax ``(X, Y, Z)``: each slice resized to ``size``², its logits resized back."""
    x = torch.from_numpy(np.moveaxis(image, 2, 0))[:, None]
    logits = net(F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False))
    logits = F.interpolate(logits, size=image.shape[:2], mode="bilinear", align_corners=False)
    return np.moveaxis(logits.argmax(1).numpy(), 0, 2)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset_dir")
    parser.add_argument("--out", required=True, help="report folder")
    parser.add_argument("--num_labelled", type=int, required=True)
    parser.add_argument("--num_validation", type=int, default=0)
    parser.add_argument("--seconds", type=float, required=True, help="training wall time")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--class_names", nargs="+", default=None)
    args = parser.parse_args(argv)
    torch.set_flush_denormal(True)
    split = semi_supervised_datalist(
        args.dataset_dir, num_labelled=args.num_labelled, num_validation=args.num_validation, require_unlabelled=False
    )
    labelled = [load_case(item)[:2] for item in split["labelled"]]
    num_classes = int(max(label.max() for _, label in labelled)) + 1
    start = time.perf_counter()
    net, steps = train(labelled, num_classes, args.seconds, args.size, args.batch, args.seed)
    train_seconds = time.perf_counter() - start
    names = args.class_names or [f"class_{c}" for c in range(1, num_classes)]
    per_class: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for item in split["test"]:
        image, label, meta = load_case(item)
        prediction = predict(net, image, args.size)
        spacing = [float(s) for s in meta.pixdim[:3]]
        for c, name in enumerate(names, start=1):
            per_class[name].append(case_record(item["case"], prediction == c, label == c, spacing))
    summary = write_class_report(
        per_class, args.out, title=f"supervised 2-D U-Net baseline, {args.seconds:.0f} s", checkpoint="in memory",
        method="supervised 2-D U-Net (MONAI UNet, AdamW 1e-3)",
    )  # fmt: skip
    result = {
        "steps": steps, "train_seconds": train_seconds, "num_labelled": len(labelled), "size": args.size,
        "batch": args.batch, "dice": summary["metrics"]["dice"], "num_empty_predictions": summary["num_empty_predictions"],
    }  # fmt: skip
    (Path(args.out) / "baseline.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
    sys.exit(0)
