"""Dynamic Interaction Module (DIM): learnable class prototypes meet decoder features
(docs/method.md#dynamic-interaction-module).

The DIM turns two decoder taps into the *holistic relation map* ``M(x)``, a second set of segmentation
logits that the rectifier adds to the plain prediction. Per level ``l`` (coarse to fine):

1. tokens ``T = LN(Conv1³(F_l))``, flattened to ``(B, N_l, F_l)``  (step 3);
2. single-head cross-attention, queries = the current prototypes ``(B, C, K, F_l)``; the PRE-softmax
   similarities ``S (B, C, K, N_l)`` are the proximity maps (step 4);
3. prototype update (transformer block) and re-projection to the next level's width (step 5);
4. spatial proximity maps ``A = S + DP(S) + DP(LN_N(S + DP(S)))`` (step 6);
5. per-class relationship cue: aggregation of the ``K`` maps of each class (step 7, Table 6);

and finally ``M = ReLU(ConvT2³(cue))`` at full resolution (step 8). For a 2-D (slice-wise) backbone every
step is the same with 2-D tensors and layers: ``patch_size`` of two sides gives a 2-D DIM. With anisotropic backbone ``strides`` the
level sizes and that transposed conv follow them (first strides ``(2, 2, 1)``: kernel and stride ``(2, 2, 1)``).

Shapes for the LA patch 112×112×80, batch ``B``, ``C = 2`` classes, ``K = 16`` prototypes, ``F = 64``:

=====================  ======================================================
tensor                 shape
=====================  ======================================================
prototypes ``P``       ``(C, K, 64)`` (parameter), broadcast over the batch
``T(1)``               ``(B, 15680, 64)``
``S(1)``               ``(B, C, K, 15680)`` -> ``(B, C, K, 28, 28, 20)``
cue ``M(1)``           ``(B, C, 28, 28, 20)`` (only with ``levels="all"``)
``Q(1)``               ``(B, C, K, 32)``
``T(2)``               ``(B, 125440, 32)``
``S(2)``               ``(B, C, K, 125440)`` -> ``(B, C, K, 56, 56, 40)``
cue ``M(2)``           ``(B, C, 56, 56, 40)``
``M``                  ``(B, C, 112, 112, 80)``
=====================  ======================================================

For a 96³ patch the level sizes are 24³ and 48³; for a 32×32×8 patch under backbone strides
``[[2, 2, 1], [2, 2, 1], ...]`` they are 8×8×8 and 16×16×8. Token projection, attention, MLP, LayerNorms and
drop-path are hand-written from ``torch.nn`` because MONAI has no prototype-query cross-attention block that
exposes the pre-softmax similarities; drop-path is MONAI's ``DropPath``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.layers import DropPath
from torch import nn

from .backbone import Strides, normalise_strides, size_divisor

__all__ = [
    "AGGREGATIONS",
    "LEVEL_MODES",
    "ClassCueAggregation",
    "DynamicInteractionModule",
    "PrototypeCrossAttention",
    "SpatialProximity",
]

AGGREGATIONS = ("sum", "spatial", "conv", "cross_class")
"""The aggregation switches of the paper's Table 6, in the order the paper adds them
(docs/method.md#aggregation-variants)."""

LEVEL_MODES = ("last", "all")
_PROTOTYPE_INITS = ("zeros", "normal")
UPSAMPLE_INITS = ("authors", "default", "kaiming")
"""Init of the DIM's final transposed conv. The authors' code keeps PyTorch's default init on a full ``C -> C``
``ConvTranspose3d`` (their init loop touches only ``Conv3d``): U(±1/sqrt(C·8)) for weight and bias, ±0.25 for two
classes. ``"authors"`` (the default) draws our per-class (grouped) conv at that same scale; ``"default"`` keeps
PyTorch's default init of the grouped conv, whose fan-in is 8 alone (U(±0.354), our earlier choice);
``"kaiming"``: Kaiming-normal like the DIM's other convolutions. With ``upsample_mixes_classes=True`` the conv is
the authors' full one and ``"authors"`` equals ``"default"``."""


def _layers(spatial_dims: int) -> tuple[type[nn.Module], type[nn.Module], type[nn.Module]]:
    """``(Conv, BatchNorm, ConvTranspose)`` classes for 2-D (slices) or 3-D (volumes)."""
    if spatial_dims == 2:
        return nn.Conv2d, nn.BatchNorm2d, nn.ConvTranspose2d
    return nn.Conv3d, nn.BatchNorm3d, nn.ConvTranspose3d


class PrototypeCrossAttention(nn.Module):
    """Single-head cross-attention from prototype queries to feature tokens
    (docs/method.md#dynamic-interaction-module, steps 4–5).

    Every query row ``(c, k)`` is processed on its own (LayerNorm, attention row, MLP), so the rows never mix.

    Args:
        channels: feature width ``F_l`` of queries and tokens (the head dimension).
        update_prototypes: also build the value/output projections and the MLP and return the updated
            prototypes. The last DIM level only needs the similarities, so it passes ``False`` (the authors'
            code computes that update and discards it; we do not build those unused weights).
        prototype_residual: A5. ``False`` (authors' code): ``Q̂ = U + DP(U)``; ``True``: ``Q̂ = Q + DP(U)``.
        drop_path: drop-path rate of the two residual branches.
        mlp_ratio: hidden width of the MLP as a multiple of ``channels``.
    """

    def __init__(
        self,
        channels: int,
        update_prototypes: bool = True,
        prototype_residual: bool = False,
        drop_path: float = 0.0,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        self.channels = channels
        self.update_prototypes = update_prototypes
        self.prototype_residual = prototype_residual
        self.query_norm = nn.LayerNorm(channels)
        self.token_norm = nn.LayerNorm(channels)
        self.query = nn.Linear(channels, channels, bias=True)
        self.key = nn.Linear(channels, channels, bias=True)
        if update_prototypes:
            hidden = max(1, int(round(channels * mlp_ratio)))
            self.value = nn.Linear(channels, channels, bias=True)
            self.output = nn.Linear(channels, channels)
            self.mlp_norm = nn.LayerNorm(channels)
            self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.GELU(), nn.Linear(hidden, channels))
            self.drop_path = DropPath(drop_path)

    def forward(self, queries: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """
        Args:
            queries: prototypes ``(B, C, K, F)`` or ``(1, C, K, F)`` (broadcast over the batch).
            tokens: feature tokens ``(B, N, F)``.

        Returns:
            ``(similarities, updated)``: pre-softmax similarities ``(B, C, K, N)`` (scaled by ``1/sqrt(F)``) and
            the updated prototypes ``(B, C, K, F)``, or ``None`` when ``update_prototypes`` is ``False``.
        """
        batch, num_tokens, width = tokens.shape
        _, num_classes, num_prototypes, _ = queries.shape
        rows = num_classes * num_prototypes
        query = self.query(self.query_norm(queries)).expand(batch, -1, -1, -1).reshape(batch, rows, width)
        normed_tokens = self.token_norm(tokens)
        key = self.key(normed_tokens)
        similarities = torch.bmm(query, key.transpose(1, 2)) * (1.0 / math.sqrt(width))  # (B, C·K, N)
        if not self.update_prototypes:
            return similarities.view(batch, num_classes, num_prototypes, num_tokens), None
        attended = torch.bmm(similarities.softmax(dim=-1), self.value(normed_tokens))
        attended = self.output(attended).view(batch, num_classes, num_prototypes, width)
        updated = (queries if self.prototype_residual else attended) + self.drop_path(attended)
        updated = updated + self.drop_path(self.mlp(self.mlp_norm(updated)))
        return similarities.view(batch, num_classes, num_prototypes, num_tokens), updated


class SpatialProximity(nn.Module):
    """Spatial proximity maps ``A = S + DP(S) + DP(LN_N(S + DP(S)))``
    (docs/method.md#dynamic-interaction-module, step 6).

    ``LN_N`` is a LayerNorm over the ``N`` spatial positions with ``N`` affine weights, which ties the module
    to one patch size (A16).

    Args:
        num_positions: ``N = h·w·d`` of the level.
        drop_path: drop-path rate.
    """

    def __init__(self, num_positions: int, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(num_positions)
        self.drop_path = DropPath(drop_path)

    def forward(self, similarities: torch.Tensor) -> torch.Tensor:
        """
        Args:
            similarities: ``(B, C, K, N)``.

        Returns:
            ``(B, C, K, N)``.
        """
        maps = similarities + self.drop_path(similarities)
        return maps + self.drop_path(self.norm(maps))


def _separable_conv(channels: int, pointwise_groups: int, spatial_dims: int = 3) -> nn.Sequential:
    """Depthwise 3³ conv + BN + ReLU + pointwise 1³ conv + BN + ReLU, ``channels -> channels`` (3² and 1² in 2-D).

    ``pointwise_groups`` > 1 keeps groups of channels (one group per class) apart in the pointwise conv.
    """
    conv, norm, _ = _layers(spatial_dims)
    return nn.Sequential(
        conv(channels, channels, 3, padding=1, groups=channels, bias=False),
        norm(channels),
        nn.ReLU(inplace=True),
        conv(channels, channels, 1, groups=pointwise_groups, bias=False),
        norm(channels),
        nn.ReLU(inplace=True),
    )


class ClassCueAggregation(nn.Module):
    """Fuses each class's ``K`` proximity maps into one relationship cue
    (docs/method.md#dynamic-interaction-module, step 7; Table 6).

    Modes:
        - ``"sum"``: plain sum over ``K``; no parameters.
        - ``"spatial"``: SepConv ``K -> K`` with separate weights per class, then sum over ``K``.
        - ``"conv"``: SepConv, then a ``1³`` conv ``K -> 1``, both with separate weights per class (grouped
          convolutions over a ``(B, C·K, h, w, d)`` tensor, ``groups = C``).

    In 2-D (``spatial_dims=2``) the maps are ``(B, C, K, h, w)`` and the convolutions 2-D.
        - ``"cross_class"`` (paper's full model): the same SepConv + ``K -> 1`` conv with weights shared by all
          classes (applied to ``(B·C, K, h, w, d)``), hence fewer parameters than ``"conv"``.

    Every mode keeps classes apart in eval mode; in train mode BatchNorm batch statistics are shared.

    Args:
        num_classes: ``C``.
        num_prototypes: ``K``.
        mode: one of :data:`AGGREGATIONS`.
        spatial_dims: 3 (volumes) or 2 (slices).
    """

    def __init__(self, num_classes: int, num_prototypes: int, mode: str = "cross_class", spatial_dims: int = 3) -> None:
        super().__init__()
        if mode not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {mode!r}.")
        self.mode = mode
        self.num_classes = num_classes
        self.num_prototypes = num_prototypes
        per_class = num_classes * num_prototypes
        self.spatial: nn.Module | None = None
        self.fuse: nn.Module | None = None
        conv = _layers(spatial_dims)[0]
        if mode in ("spatial", "conv"):
            self.spatial = _separable_conv(per_class, pointwise_groups=num_classes, spatial_dims=spatial_dims)
        if mode == "conv":
            self.fuse = conv(per_class, num_classes, 1, groups=num_classes)
        if mode == "cross_class":
            self.spatial = _separable_conv(num_prototypes, pointwise_groups=1, spatial_dims=spatial_dims)
            self.fuse = conv(num_prototypes, 1, 1)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        """
        Args:
            maps: per-class proximity-map stacks ``(B, C, K, h, w, d)``.

        Returns:
            relationship cue ``(B, C, h, w, d)``.
        """
        batch, num_classes, num_prototypes, *spatial = maps.shape
        if self.mode == "sum":
            return maps.sum(dim=2)
        if self.mode == "cross_class":
            shared = maps.reshape(batch * num_classes, num_prototypes, *spatial)
            return self.fuse(self.spatial(shared)).view(batch, num_classes, *spatial)
        grouped = self.spatial(maps.reshape(batch, num_classes * num_prototypes, *spatial))
        if self.mode == "spatial":
            return grouped.view(batch, num_classes, num_prototypes, *spatial).sum(dim=2)
        return self.fuse(grouped)


class _DIMLevel(nn.Module):
    """The layers of one DIM level; ``update``/``cue`` say whether the prototype update and the cue are built."""

    def __init__(
        self,
        channels: int,
        next_channels: int | None,
        num_positions: int,
        num_classes: int,
        num_prototypes: int,
        aggregation: str,
        build_cue: bool,
        prototype_residual: bool,
        drop_path: float,
        mlp_ratio: float,
        spatial_dims: int = 3,
    ) -> None:
        super().__init__()
        self.token_projection = _layers(spatial_dims)[0](channels, channels, 1)
        self.token_norm = nn.LayerNorm(channels)
        self.attention = PrototypeCrossAttention(
            channels,
            update_prototypes=next_channels is not None,
            prototype_residual=prototype_residual,
            drop_path=drop_path,
            mlp_ratio=mlp_ratio,
        )
        # 1×1 re-projection of the prototypes to the next level's width (a 1×1 Conv2d in the authors' code).
        self.reprojection = nn.Linear(channels, next_channels) if next_channels is not None else None
        self.proximity = SpatialProximity(num_positions, drop_path) if build_cue else None
        self.aggregation = (
            ClassCueAggregation(num_classes, num_prototypes, aggregation, spatial_dims) if build_cue else None
        )

    def forward(self, queries: torch.Tensor, features: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """
        Args:
            queries: ``(B or 1, C, K, F_l)``.
            features: ``(B, F_l, h, w, d)`` (``(B, F_l, h, w)`` in 2-D).

        Returns:
            ``(cue, next_queries)``: cue ``(B, C, h, w, d)`` or ``None``; prototypes for the next level
            ``(B, C, K, F_{l+1})`` or ``None`` at the last level.
        """
        batch, _, *spatial = features.shape
        tokens = self.token_norm(self.token_projection(features).flatten(2).transpose(1, 2))  # (B, N, F_l)
        similarities, updated = self.attention(queries, tokens)
        next_queries = self.reprojection(updated) if self.reprojection is not None else None
        cue = None
        if self.aggregation is not None:
            maps = self.proximity(similarities)
            cue = self.aggregation(maps.reshape(*maps.shape[:3], *spatial))
        return cue, next_queries


class DynamicInteractionModule(nn.Module):
    """Dynamic Interaction Module: learnable prototypes -> holistic relation map
    (docs/method.md#dynamic-interaction-module).

    See the module docstring for the steps and the shape table. Level ``l`` (0-based, coarse to fine) of
    ``L = len(feature_channels)`` levels reads a tap at ``patch_size / prod(strides[:L - l])`` per axis, and the
    final transposed conv up-samples the finest level by ``strides[0]``; with the default two levels and
    strides these are the 1/4 and 1/2 resolution decoder taps.

    Class purity: with ``legacy_query_layout=False`` query row ``(c, k)`` is class ``c``'s ``k``-th prototype and
    every step is row-wise or per class, and the final transposed conv is grouped (``C -> C``, ``groups=C``), so in
    eval mode class ``c``'s map depends only on ``prototypes[c]``. The authors' code uses a full ``C -> C``
    transposed conv (classes mix); ``upsample_mixes_classes=True`` restores it.

    Args:
        num_classes: ``C >= 2``.
        num_prototypes: ``K >= 1`` prototypes per class.
        feature_channels: widths of the decoder taps, coarse to fine (``(64, 32)``). The prototypes have width
            ``feature_channels[0]``. :class:`~crln_monai.networks.CRLN` reads them from the backbone.
        patch_size: the training patch ``(H, W, D)``, or ``(H, W)`` for a 2-D (slice-wise) backbone, which makes
            every layer 2-D; each side must be divisible by the product of its axis' ``strides`` (``2**L`` at the
            default).
        aggregation: Table 6 switch, one of :data:`AGGREGATIONS` (see :class:`ClassCueAggregation`).
        legacy_query_layout: A4. ``True`` reproduces the authors' reshape of ``(C, K)`` into ``(K, C)``: the query
            feeding class ``c``'s slot ``k`` is row ``k*C + c`` of ``prototypes.reshape(C*K, F)``, so class maps
            mix prototypes of different classes.
        prototype_residual: A5. ``False`` (authors' code) doubles the attention output instead of adding the
            incoming query.
        levels: A6. ``"last"`` (authors' code): only the finest level's cue is used; earlier levels only refine
            the prototypes (their cue layers are not built). ``"all"``: the cues of all levels, trilinearly
            upsampled to the finest level, are summed.
        drop_path: drop-path rate (``0.1 / 3`` in the authors' code).
        mlp_ratio: MLP hidden width factor.
        prototype_init: A12. ``"zeros"`` (authors' code) or ``"normal"`` (std 0.02).
        upsample_mixes_classes: use a full ``C -> C`` final transposed conv as in the authors' code.
        upsample_init: the final transposed conv's init, one of :data:`UPSAMPLE_INITS`: ``"authors"`` (the
            default: the scale of the authors' full ``C -> C`` conv under PyTorch's default init, U(±1/sqrt(C·k))
            with ``k`` the kernel's voxels), ``"default"`` (PyTorch's default init of our grouped conv, fan-in ``k``)
            or ``"kaiming"`` (Kaiming-normal like the DIM's other convolutions).
        strides: the backbone's first ``L`` down-sampling factors, finest first (``strides[0]`` takes the full
            resolution to the finest tap's), each an int or one int per axis (H, W, D), each 1 or 2; ``None``:
            2 on every axis. :class:`~crln_monai.networks.CRLN` passes the backbone's.

    Raises:
        ValueError: for invalid sizes or unknown switch values.
    """

    def __init__(
        self,
        num_classes: int = 2,
        num_prototypes: int = 16,
        feature_channels: Sequence[int] = (64, 32),
        patch_size: Sequence[int] = (112, 112, 80),
        aggregation: str = "cross_class",
        legacy_query_layout: bool = False,
        prototype_residual: bool = False,
        levels: str = "last",
        drop_path: float = 0.1 / 3,
        mlp_ratio: float = 4.0,
        prototype_init: str = "zeros",
        upsample_mixes_classes: bool = False,
        strides: Strides | None = None,
        upsample_init: str = "authors",
    ) -> None:
        super().__init__()
        feature_channels = tuple(int(c) for c in feature_channels)
        patch_size = tuple(int(p) for p in patch_size)
        spatial_dims = len(patch_size) if len(patch_size) in (2, 3) else 3
        num_levels = len(feature_channels)
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}.")
        if num_prototypes < 1:
            raise ValueError(f"num_prototypes must be >= 1, got {num_prototypes}.")
        if num_levels < 1 or any(c < 1 for c in feature_channels):
            raise ValueError(f"feature_channels must be a non-empty sequence of positive ints, got {feature_channels}.")
        strides = normalise_strides(strides, num_levels, "DynamicInteractionModule", spatial_dims)
        divisor = size_divisor(strides)
        if len(patch_size) != spatial_dims or any(p < 1 or p % d for p, d in zip(patch_size, divisor)):
            raise ValueError(
                f"patch_size must be 3 (or 2, for slices) positive sizes divisible by {divisor} per axis (the product "
                f"of the strides of the {num_levels} levels), got {patch_size}."
            )
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}.")
        if levels not in LEVEL_MODES:
            raise ValueError(f"levels must be one of {LEVEL_MODES}, got {levels!r}.")
        if prototype_init not in _PROTOTYPE_INITS:
            raise ValueError(f"prototype_init must be one of {_PROTOTYPE_INITS}, got {prototype_init!r}.")
        if upsample_init not in UPSAMPLE_INITS:
            raise ValueError(f"upsample_init must be one of {UPSAMPLE_INITS}, got {upsample_init!r}.")
        if not 0.0 <= drop_path <= 1.0:
            raise ValueError(f"drop_path must be in [0, 1], got {drop_path}.")
        if mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be > 0, got {mlp_ratio}.")

        self.num_classes = num_classes
        self.num_prototypes = num_prototypes
        self.feature_channels = feature_channels
        self.spatial_dims = spatial_dims
        self.patch_size = patch_size
        self.aggregation = aggregation
        self.legacy_query_layout = legacy_query_layout
        self.levels = levels
        self.strides = strides
        self.level_sizes = tuple(
            tuple(p // d for p, d in zip(patch_size, size_divisor(strides[: num_levels - i])))
            for i in range(num_levels)
        )

        self.prototypes = nn.Parameter(torch.zeros(num_classes, num_prototypes, feature_channels[0]))
        if prototype_init == "normal":
            nn.init.normal_(self.prototypes, std=0.02)
        self.level_blocks = nn.ModuleList(
            _DIMLevel(
                channels=feature_channels[i],
                next_channels=feature_channels[i + 1] if i + 1 < num_levels else None,
                num_positions=math.prod(self.level_sizes[i]),
                num_classes=num_classes,
                num_prototypes=num_prototypes,
                aggregation=aggregation,
                build_cue=levels == "all" or i == num_levels - 1,
                prototype_residual=prototype_residual,
                drop_path=drop_path,
                mlp_ratio=mlp_ratio,
                spatial_dims=spatial_dims,
            )
            for i in range(num_levels)
        )
        conv, _, transposed = _layers(spatial_dims)
        self.upsample = transposed(
            num_classes, num_classes, strides[0], stride=strides[0], groups=1 if upsample_mixes_classes else num_classes
        )
        # Algorithm 1 initialises the convolutions of θ Kaiming-normal; the authors' init loop touches only Conv3d
        # layers (not their 1×1 Conv2d query re-projection, our Linear, nor this ConvTranspose3d). With PyTorch's
        # default (uniform, fan-in) init on the Conv3d layers the relation map starts near zero and its loss barely
        # moves for hundreds of iterations. The final transposed conv: see UPSAMPLE_INITS.
        kaiming_types = (conv, transposed) if upsample_init == "kaiming" else (conv,)
        for module in self.modules():
            if isinstance(module, kaiming_types):
                nn.init.kaiming_normal_(module.weight)
        if upsample_init == "authors":
            bound = 1.0 / math.sqrt(num_classes * math.prod(strides[0]))  # the full C -> C conv's default fan-in
            nn.init.uniform_(self.upsample.weight, -bound, bound)
            nn.init.uniform_(self.upsample.bias, -bound, bound)

    def initial_queries(self) -> torch.Tensor:
        """The level-1 queries ``(1, C, K, F)`` built from :attr:`prototypes` in the configured layout (A4)."""
        c, k, f = self.prototypes.shape
        if self.legacy_query_layout:
            return self.prototypes.reshape(k, c, f).transpose(0, 1).unsqueeze(0)
        return self.prototypes.unsqueeze(0)

    def _check_features(self, features: Sequence[torch.Tensor]) -> None:
        if len(features) != len(self.feature_channels):
            raise ValueError(
                f"features must hold {len(self.feature_channels)} decoder taps (coarse to fine, widths "
                f"{self.feature_channels}), got {len(features)}."
            )
        batch = features[0].shape[0]
        for i, (tap, channels, size) in enumerate(zip(features, self.feature_channels, self.level_sizes)):
            if tap.ndim != self.spatial_dims + 2 or tap.shape[0] != batch or tap.shape[1] != channels:
                raise ValueError(
                    f"features[{i}] must have shape (B={batch}, {channels}, *{size}), got {tuple(tap.shape)}."
                )
            if tuple(tap.shape[2:]) != size:
                raise ValueError(
                    f"features[{i}] has spatial size {tuple(tap.shape[2:])}, but this DynamicInteractionModule was "
                    f"built for patch_size {self.patch_size}, which needs {size} at this level. Its spatial "
                    f"LayerNorm is sized to the training patch: inference must use the training patch size."
                )

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """
        Args:
            features: decoder taps, coarse to fine: ``(B, 64, H/4, W/4, D/4)`` and ``(B, 32, H/2, W/2, D/2)``
                for the default widths, strides and two levels (in general :attr:`level_sizes`; 2-D taps in 2-D).

        Returns:
            holistic relation map ``(B, C, H, W, D)`` (``(B, C, H, W)`` in 2-D), non-negative.

        Raises:
            ValueError: when the number, widths or spatial sizes of the taps do not match the construction
                (spatial sizes must be those of the training patch).
        """
        self._check_features(features)
        queries = self.initial_queries()
        cue_sum: torch.Tensor | None = None
        finest = self.level_sizes[-1]
        for block, tap in zip(self.level_blocks, features):
            cue, queries = block(queries, tap)
            if cue is None:
                continue
            if tuple(cue.shape[2:]) != finest:
                cue = F.interpolate(cue, size=finest, mode="trilinear" if cue.ndim == 5 else "bilinear", align_corners=False)
            cue_sum = cue if cue_sum is None else cue_sum + cue
        return F.relu(self.upsample(cue_sum))
