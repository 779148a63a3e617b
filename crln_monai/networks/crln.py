"""CRLN as one module: backbone + segmentation head, projection head, DIM with prototypes, rectifier."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from .backbone import Strides, check_spatial_size, init_backbone_weights, planar_settings, resolve_out_channels
from .dim import DynamicInteractionModule
from .rectifier import Rectifier
from .unet2d import UNet2D
from .unet3d import UNet3D
from .vnet import VNet

__all__ = ["BACKBONES", "CRLN", "CRLNOutput", "PROJECTION_INITS", "ProjectionHead", "RectifiedPrediction"]

BACKBONES = {"vnet": VNet, "unet3d": UNet3D, "unet2d": UNet2D}
"""The named backbones; ``"unet2d"`` segments one slice at a time (its ``spatial_dims`` is 2)."""

PROJECTION_INITS = ("kaiming", "default")
"""Projection-head initialisations: ``"kaiming"`` (authors' code: their init loop gives every ``Conv3d`` of the
network Kaiming-normal weights, BN weight 1 and bias 0) or ``"default"`` (PyTorch's own init, our earlier choice)."""

_DERIVED_DIM_ARGUMENTS = ("num_classes", "num_prototypes", "patch_size", "feature_channels", "strides")
"""DIM arguments CRLN sets itself (from its own arguments and the backbone); ``dim_kwargs`` may not repeat them."""


class CRLNOutput(NamedTuple):
    """What :class:`CRLN` returns for a batch ``(B, Cin, H, W, D)``.

    Attributes:
        logits: backbone segmentation logits ``(B, C, H, W, D)``.
        relation_map: the DIM's holistic relation map ``(B, C, H, W, D)``; ``None`` when the DIM was skipped.
        rectified_logits: ``logits`` rectified by the relation map (Eq. 8); ``None`` when the DIM was skipped.
        embedding: the projection head's representation ``(B, D_r, H, W, D)`` for CPS; ``None`` when not asked for.
    """

    logits: torch.Tensor
    relation_map: torch.Tensor | None
    rectified_logits: torch.Tensor | None
    embedding: torch.Tensor | None

    @property
    def prediction(self) -> torch.Tensor:
        """The inference output: the rectified logits when the DIM ran, else the plain logits."""
        return self.logits if self.rectified_logits is None else self.rectified_logits


class ProjectionHead(nn.Sequential):
    """Representation head for CPS: 3³ conv (no bias) → BN → ReLU → 1³ conv, ``(B, Cf, ...) → (B, D_r, ...)``
    (3² and 1² convs for 2-D features; docs/method.md#heads-and-prototypes).

    Args:
        in_channels: feature channels ``Cf``.
        out_channels: representation width ``D_r``.
        init: one of :data:`PROJECTION_INITS`. ``"kaiming"`` (authors' code, the default): Kaiming-normal conv
            weights (fan-in, gain √2, as :func:`~crln_monai.networks.backbone.init_backbone_weights`), BN weight 1
            and bias 0; ``"default"`` (our earlier choice): PyTorch's default init.
        spatial_dims: 3 (volumes) or 2 (slices).

    Raises:
        ValueError: an unknown ``init``.
    """

    def __init__(self, in_channels: int, out_channels: int, init: str = "kaiming", spatial_dims: int = 3) -> None:
        if init not in PROJECTION_INITS:
            raise ValueError(
                f"ProjectionHead: init (CRLN's projection_init) must be one of {PROJECTION_INITS}, got {init!r}."
            )
        conv, norm = (nn.Conv2d, nn.BatchNorm2d) if spatial_dims == 2 else (nn.Conv3d, nn.BatchNorm3d)
        super().__init__(
            conv(in_channels, out_channels, 3, padding=1, bias=False),
            norm(out_channels),
            nn.ReLU(inplace=True),
            conv(out_channels, out_channels, 1),
        )
        if init == "kaiming":
            init_backbone_weights(self)


class CRLN(nn.Module):
    """Cooperative Rectification Learning Network: the student (or, as an EMA copy, the teacher).

    The DIM reads the backbone's ``feature_channels`` (the widths of its taps, coarse to fine; the prototypes
    get the first) and ``strides`` (its level sizes and final up-sampling follow them); a backbone module
    without these attributes is taken to have the defaults ``(64, 32, 16)`` and 2 on every axis.

    Args:
        in_channels: image channels.
        num_classes: segmentation classes, background included (≥ 2); 2 when neither it nor ``out_channels``
            is given.
        backbone: ``"vnet"`` (LA, Pancreas), ``"unet3d"`` (BraTS), ``"unet2d"`` (slice-wise, :class:`UNet2D`) or
            a module returning :class:`~crln_monai.networks.BackboneOutput` (ideally with ``feature_channels`` and
            ``strides`` attributes, as :class:`VNet` and :class:`UNet3D` have).
        patch_size: the training patch; the DIM's spatial LayerNorm is tied to it (docs/method.md, A16). Each side must
            be divisible by the product of that axis' strides. A 2-D backbone takes ``[h, w, 1]``: one slice.
        num_prototypes: prototypes per class ``K``.
        use_dim: build the DIM and the rectifier; ``False`` gives a plain mean-teacher network.
        use_projection: build the projection head (needed by CPS).
        projection_init: the projection head's init, one of :data:`PROJECTION_INITS`: ``"kaiming"`` (authors'
            code, the default: their init loop covers every ``Conv3d`` of the network) or ``"default"``
            (PyTorch's default init, our earlier choice).
        prototype_reduce: how CPS reduces the prototypes (docs/method.md, A3). ``"feature"`` (authors' code) averages
            each class's ``K × F`` prototypes over ``F`` and so sets ``D_r = K``; ``"prototype"`` averages over
            ``K`` and sets ``D_r = F``.
        rectifier: the rectification variant of Table 7 (see :class:`Rectifier`).
        dim_kwargs: further :class:`DynamicInteractionModule` options (aggregation, legacy_query_layout, ...);
            not those CRLN derives (``num_classes``, ``num_prototypes``, ``patch_size``, ``feature_channels``,
            ``strides``).
        backbone_kwargs: further backbone options (``base_filters``, ``dropout``, ...).
        strides: the backbone's per-level down-sampling factors, finest first, each 1 or 2 or one such factor
            per axis (see :class:`VNet`); ``None``: 2 on every axis at every level. Only with a named backbone.
            For ``"unet2d"`` the slice axis' factor is 1 (``[sH, sW, 1]``; ``None``: 2 in-plane).
        out_channels: MONAI's name for ``num_classes``; give one of the two (equal values are accepted).

    Raises:
        ValueError: an unknown backbone, ``prototype_reduce`` or ``projection_init``, fewer than 2 classes,
            ``num_classes`` and ``out_channels`` differ, ``strides`` given twice or with a backbone module,
            ``dim_kwargs`` sets a derived argument, a patch side not divisible by its axis' strides, or a 2-D
            backbone with a patch thicker than one slice.

    Attributes:
        spatial_dims: 3, or 2 for a slice-wise backbone: it runs on ``(B, Cin, H, W)`` slices, and on
            ``(B, Cin, H, W, 1)`` too (the data pipeline's and the sliding window's one-slice patches), returning
            outputs of the input's layout, so trainer, losses, augmentation and inference are the 3-D ones.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int | None = None,
        backbone: str | nn.Module = "vnet",
        patch_size: Sequence[int] = (112, 112, 80),
        num_prototypes: int = 16,
        use_dim: bool = True,
        use_projection: bool = True,
        prototype_reduce: str = "feature",
        rectifier: str = "learnable_v3",
        dim_kwargs: dict[str, Any] | None = None,
        backbone_kwargs: dict[str, Any] | None = None,
        strides: Strides | None = None,
        out_channels: int | None = None,
        projection_init: str = "kaiming",
    ) -> None:
        super().__init__()
        num_classes = resolve_out_channels("CRLN", num_classes, out_channels)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"CRLN: num_classes must be an int >= 2 (background + one class), got {num_classes!r}.")
        if prototype_reduce not in ("feature", "prototype"):
            raise ValueError(f"CRLN: prototype_reduce must be 'feature' or 'prototype', got {prototype_reduce!r}.")
        if projection_init not in PROJECTION_INITS:
            raise ValueError(f"CRLN: projection_init must be one of {PROJECTION_INITS}, got {projection_init!r}.")
        if isinstance(backbone, str):
            if backbone not in BACKBONES:
                raise ValueError(
                    f"CRLN: backbone must be one of {sorted(BACKBONES)} or an nn.Module, got {backbone!r}."
                )
            backbone_kwargs = dict(backbone_kwargs or {})
            if strides is not None and backbone_kwargs.get("strides") is not None:
                raise ValueError("CRLN: strides given both as an argument and in backbone_kwargs; give it once.")
            backbone_class = BACKBONES[backbone]
            if getattr(backbone_class, "spatial_dims", 3) == 2:
                patch_size, strides = planar_settings(patch_size, strides, backbone_class.num_levels, "CRLN")
                patch_size = (*patch_size, 1)
            if strides is not None:
                backbone_kwargs["strides"] = strides
            backbone = backbone_class(in_channels=in_channels, num_classes=num_classes, **backbone_kwargs)
        elif strides is not None:
            raise ValueError("CRLN: strides applies to a named backbone; build the backbone module with its strides.")
        clashes = sorted(set(dim_kwargs or {}) & set(_DERIVED_DIM_ARGUMENTS))
        if clashes:
            raise ValueError(
                f"CRLN: dim_kwargs may not set {clashes}; CRLN derives them from its arguments and the backbone."
            )
        self.backbone = backbone
        self.num_classes = num_classes
        self.spatial_dims = int(getattr(backbone, "spatial_dims", 3))
        self.patch_size = tuple(int(s) for s in patch_size)
        if len(self.patch_size) != 3:
            raise ValueError(f"CRLN: patch_size must be three sizes (H, W, D), got {tuple(patch_size)}.")
        network_patch = self.patch_size[: self.spatial_dims]  # one slice (h, w) for a 2-D backbone
        if hasattr(backbone, "size_divisor"):
            check_spatial_size(network_patch, backbone.size_divisor, "CRLN", "patch_size")
        self.prototype_reduce = prototype_reduce
        feature_channels = tuple(getattr(backbone, "feature_channels", (64, 32, 16)))
        num_levels = len(feature_channels) - 1  # the DIM reads every tap but the full-resolution one
        backbone_strides = getattr(backbone, "strides", None)
        self.dim = (
            DynamicInteractionModule(
                num_classes=num_classes,
                num_prototypes=num_prototypes,
                patch_size=network_patch,
                feature_channels=feature_channels[:num_levels],
                strides=None if backbone_strides is None else tuple(backbone_strides)[:num_levels],
                **(dim_kwargs or {}),
            )
            if use_dim
            else None
        )
        self.rectifier = Rectifier(mode=rectifier, num_classes=num_classes) if use_dim else None
        representation_dim = num_prototypes if prototype_reduce == "feature" else feature_channels[0]
        self.projection = (
            ProjectionHead(feature_channels[-1], representation_dim, projection_init, self.spatial_dims)
            if use_projection
            else None
        )

    @property
    def prototypes(self) -> torch.Tensor | None:
        """The class prototypes ``(C, K, F)``, or ``None`` without a DIM."""
        return None if self.dim is None else self.dim.prototypes

    def student_parameters(self) -> list[nn.Parameter]:
        """Parameters trained by the student objective (Eq. 15): everything but the rectifier."""
        skip = set() if self.rectifier is None else {id(p) for p in self.rectifier.parameters()}
        return [p for p in self.parameters() if id(p) not in skip]

    def forward(self, image: torch.Tensor, with_dim: bool = True, with_embedding: bool = True) -> CRLNOutput:
        """Run the network.

        Args:
            image: ``(B, Cin, H, W, D)``, each side divisible by its axis' product of the backbone strides; with
                the DIM, ``(H, W, D)`` must equal ``patch_size``. A 2-D backbone takes ``(B, Cin, H, W)`` or
                ``(B, Cin, H, W, 1)``.
            with_dim: run the DIM and the rectifier (the method skips them for the unlabelled student forward).
            with_embedding: run the projection head.

        Returns:
            :class:`CRLNOutput`, each tensor in the input's layout.

        Raises:
            ValueError: a 2-D network given a 5-D input thicker than one slice.
        """
        one_slice = self.spatial_dims == 2 and image.ndim == 5
        if one_slice:
            if image.shape[-1] != 1:
                raise ValueError(
                    f"CRLN: this network segments one slice at a time (2-D backbone); input {tuple(image.shape)} must "
                    "be (B, C, H, W) or (B, C, H, W, 1)."
                )
            image = image[..., 0]
        logits, features = self.backbone(image)
        relation_map = rectified = embedding = None
        if with_dim and self.dim is not None:
            relation_map = self.dim(features[: len(self.dim.feature_channels)])
            rectified = self.rectifier(logits, relation_map)
        if with_embedding and self.projection is not None:
            embedding = self.projection(features[2])
        if one_slice:
            return CRLNOutput(*(None if t is None else t.unsqueeze(-1) for t in (logits, relation_map, rectified, embedding)))
        return CRLNOutput(logits, relation_map, rectified, embedding)


class RectifiedPrediction(nn.Module):
    """Wrap a :class:`CRLN` so that calling it returns one tensor, the inference output ``(B, C, H, W, D)``.

    MONAI inferers, evaluators and ``ckpt_export`` expect a network that maps a tensor to a tensor; the
    inference output of CRLN is the rectified logits (docs/method.md#rectification), or the plain logits without a DIM.
    The state dict is the wrapped network's (no prefix), so checkpoints load into either. The projection
    head only serves CPS in training: when the wrapped network has none, its keys in a training checkpoint
    are dropped on loading, and every other key must still match.
    """

    def __init__(self, network: CRLN) -> None:
        super().__init__()
        self.network = network

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.network(image, with_dim=True, with_embedding=False).prediction

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return self.network.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        if self.network.projection is None:
            state_dict = {k: v for k, v in state_dict.items() if not k.startswith("projection.")}
        return self.network.load_state_dict(state_dict, strict=strict, assign=assign)
