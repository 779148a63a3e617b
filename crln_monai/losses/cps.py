"""Cooperative Positive Supervision (CPS) loss of CRLN, paper Eqs. (9)–(14)
(docs/method.md#cooperative-positive-supervision, A2, A3).

Everything is vectorised over classes, anchors and negatives, and nothing reads a tensor value on the
host: sets of voxels of data-dependent size are never materialised. Instead, a uniform draw from the
``True`` entries of a mask row is made by drawing a rank ``k`` in ``[0, count)`` and locating the
``(k+1)``-th ``True`` entry with ``torch.searchsorted`` on the running count of the mask. Empty rows
give an arbitrary (in-range) index whose contribution is removed by a per-class weight on the device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "CPSLoss",
    "CPS_POSITIVES",
    "CPS_XI_MODES",
    "CPS_PROTOTYPE_REDUCTIONS",
    "sample_from_mask_rows",
    "negative_class_weights",
    "sample_categorical_rows",
]

CPS_POSITIVES = ("mean", "prototype", "unassertive")
CPS_XI_MODES = ("fixed", "uniform")
CPS_PROTOTYPE_REDUCTIONS = ("feature", "prototype")

_COSINE_EPS = 1e-8  # as torch.nn.functional.cosine_similarity


def sample_from_mask_rows(
    mask: torch.Tensor, rows: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Draw, for each entry of ``rows``, a uniformly random ``True`` position of that row of ``mask``.

    Draws are independent (with replacement). No host synchronisation.

    Args:
        mask: ``(R, N)`` bool.
        rows: integer tensor of any shape with values in ``[0, R)``: the row each draw comes from.
        generator: optional random generator on ``mask``'s device.

    Returns:
        long tensor shaped like ``rows`` with column indices in ``[0, N)``. For a row without any
        ``True`` entry the index is arbitrary (but in range); the caller must mask it out.
    """
    num_rows, num_cols = mask.shape
    rank_dtype = torch.int32 if mask.numel() < 2**31 - 1 else torch.int64
    counts = mask.sum(1)  # (R,)
    offsets = counts.cumsum(0) - counts  # True entries in the rows before each row
    running = mask.reshape(-1).cumsum(0, dtype=rank_dtype)  # (R*N,), global rank of each True entry
    draw = torch.randint(0, 2**62, rows.shape, generator=generator, device=mask.device)
    rank_in_row = draw % counts[rows].clamp_min(1)  # uniform in [0, count) up to a 2^-62 bias
    target = (offsets[rows] + rank_in_row + 1).to(rank_dtype)
    flat = torch.searchsorted(running, target.reshape(-1)).reshape(rows.shape)
    return (flat - rows.long() * num_cols).clamp(0, num_cols - 1)


def negative_class_weights(class_means: torch.Tensor, class_valid: torch.Tensor, temperature: float) -> torch.Tensor:
    """Unnormalised probabilities of the class of a negative, per anchor class (paper Eq. (11),
    docs/method.md#cooperative-positive-supervision).

    Row ``c`` is proportional to ``softmax_{c' ≠ c, c' valid}(cos(r̄_c, r̄_c') / τ)``; other entries are 0.
    Each row is scaled so that its largest allowed entry is 1 (no overflow for small ``τ``). A row
    with no allowed class is all zeros.

    Args:
        class_means: ``(C, D)`` class-mean representations.
        class_valid: ``(C,)`` bool, classes with at least one valid voxel.
        temperature: ``τ``.

    Returns:
        ``(C, C)`` float tensor.
    """
    num_classes = class_means.shape[0]
    unit = F.normalize(class_means.float(), dim=1, eps=_COSINE_EPS)
    logits = unit @ unit.t() / temperature
    eye = torch.eye(num_classes, dtype=torch.bool, device=class_means.device)
    allowed = class_valid.unsqueeze(0) & ~eye
    masked = logits.masked_fill(~allowed, float("-inf"))
    row_max = masked.amax(1, keepdim=True)
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    return torch.exp(masked - row_max)


def sample_categorical_rows(
    weights: torch.Tensor, num_draws: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Draw ``num_draws`` categories per row, with probabilities proportional to the row's weights.

    Inverse-CDF sampling (no ``torch.multinomial``, which fails on an all-zero row). Zero-weight
    categories are never drawn; an all-zero row gives an arbitrary in-range category.

    Args:
        weights: ``(R, K)`` non-negative weights.
        num_draws: draws per row.
        generator: optional random generator on ``weights``' device.

    Returns:
        ``(R, num_draws)`` long tensor with values in ``[0, K)``.
    """
    cdf = weights.float().cumsum(1)
    u = torch.rand((weights.shape[0], num_draws), generator=generator, device=weights.device) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).clamp_max(weights.shape[1] - 1)


def _gather_voxels(emb: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows of ``emb`` ``(B, D, S)`` at flat voxel indices ``index`` in ``[0, B*S)``: ``(*index.shape, D)``.

    ``emb[index // S, :, index % S]`` gives the same values, but advanced indices around a slice make PyTorch move
    the whole ``(B, D, S)`` tensor (and its gradient) through a transposed copy; a gather from the flat view reads
    only the ``index.numel() * D`` values it needs.
    """
    batch, dim, num_voxels = emb.shape
    sample, voxel = index // num_voxels, index % num_voxels
    offsets = (sample * (dim * num_voxels) + voxel).unsqueeze(-1)  # (..., 1)
    channel = torch.arange(dim, device=emb.device) * num_voxels  # (D,)
    return emb.reshape(-1)[offsets + channel]


def _per_voxel(tensor: torch.Tensor, embedding: torch.Tensor, name: str) -> torch.Tensor:
    """Reshape a ``(B, *spatial)`` or ``(B, 1, *spatial)`` map to ``(B, S)``; ValueError when it does not fit."""
    batch, spatial = embedding.shape[0], embedding.shape[2:]
    if tensor.ndim == embedding.ndim and tensor.shape[1] == 1:
        tensor = tensor[:, 0]
    if tuple(tensor.shape) != (batch, *spatial):
        raise ValueError(
            f"{name} must have shape (B, *spatial) or (B, 1, *spatial) with B, spatial = {batch}, "
            f"{tuple(spatial)} (from embedding {tuple(embedding.shape)}), got {tuple(tensor.shape)}."
        )
    return tensor.reshape(batch, -1)


class CPSLoss(nn.Module):
    """Cooperative Positive Supervision: class-wise InfoNCE on uncertain voxels, paper Eqs. (9)–(14).

    For each class ``c`` with valid voxels ``V_c`` (``valid`` and ``label == c``):

    - anchors: ``num_queries`` voxels drawn uniformly with replacement from ``V_c`` where
      ``probs[c] < strong_threshold`` (Eq. (9)); a class without such voxels adds 0 to the sum but
      still counts in the denominator;
    - class mean ``r̄_c`` of the embeddings over ``V_c`` (detached);
    - negatives: ``num_negatives`` per anchor, with replacement; the class of each is drawn from
      ``softmax_{c' ≠ c}(cos(r̄_c, r̄_c') / τ)`` over the other valid classes, the voxel uniformly in
      ``V_c'`` (Eq. (11)); detached;
    - positive (Eq. (13)), detached: ``"mean"`` → ``r̄_c``; ``"prototype"`` → ``π_c``;
      ``"unassertive"`` → ``(r̄_c + ξ π_c) / (1 + ξ)``. ``π_c`` is the mean of ``prototypes[c]``
      ``(K, F)`` over the feature axis (``prototype_reduce="feature"``, the authors' code: a
      ``K``-vector, so ``D = K``) or over the ``K`` prototypes (``"prototype"``, the paper's literal
      reading: an ``F``-vector, so ``D = F``). Without prototypes (learning stage) every mode uses
      ``r̄_c``. ``xi_mode="uniform"`` multiplies ``ξ`` by ``u ~ U(0, 1)`` drawn per class and call.

    Loss (Eq. (14)) = ``(1/|C_v|) Σ_c mean_a −log softmax([cos(r_a, r⁺_c), cos(r_a, r⁻_{a,n})] / τ)[0]``,
    ``C_v`` the classes with non-empty ``V_c``; it is 0 (still connected to the graph) when fewer than
    two classes are valid. Gradient reaches the embedding only through the anchors. The validity of
    unlabelled voxels (confidence ≥ δ_w, paper Eqs. (10), (12)) is the caller's ``valid`` mask.

    Args:
        num_queries: anchors per class ``N_q``.
        num_negatives: negatives per anchor ``N_n``.
        temperature: ``τ`` of InfoNCE and of the negative-class softmax.
        strong_threshold: ``δ_s``; voxels at least this confident in their own class are not anchors.
        positive: ``"mean"``, ``"prototype"`` or ``"unassertive"``.
        xi: mixing weight ``ξ`` of the unassertive positive.
        xi_mode: ``"fixed"`` or ``"uniform"``.
        prototype_reduce: ``"feature"`` or ``"prototype"`` (see above).

    Raises:
        ValueError: on a non-positive count or temperature, a negative ``xi`` or an unknown mode.
    """

    def __init__(
        self,
        num_queries: int = 256,
        num_negatives: int = 512,
        temperature: float = 0.5,
        strong_threshold: float = 0.97,
        positive: str = "unassertive",
        xi: float = 0.6,
        xi_mode: str = "fixed",
        prototype_reduce: str = "feature",
    ) -> None:
        super().__init__()
        for name, value in (("num_queries", num_queries), ("num_negatives", num_negatives)):
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}.")
        if xi < 0:
            raise ValueError(f"xi must be >= 0, got {xi}.")
        for name, value, options in (
            ("positive", positive, CPS_POSITIVES),
            ("xi_mode", xi_mode, CPS_XI_MODES),
            ("prototype_reduce", prototype_reduce, CPS_PROTOTYPE_REDUCTIONS),
        ):
            if value not in options:
                raise ValueError(f"{name} must be one of {options}, got {value!r}.")
        self.num_queries = int(num_queries)
        self.num_negatives = int(num_negatives)
        self.temperature = float(temperature)
        self.strong_threshold = float(strong_threshold)
        self.positive = positive
        self.xi = float(xi)
        self.xi_mode = xi_mode
        self.prototype_reduce = prototype_reduce

    def extra_repr(self) -> str:
        return (
            f"num_queries={self.num_queries}, num_negatives={self.num_negatives}, temperature={self.temperature}, "
            f"strong_threshold={self.strong_threshold}, positive={self.positive!r}, xi={self.xi}, "
            f"xi_mode={self.xi_mode!r}, prototype_reduce={self.prototype_reduce!r}"
        )

    def _prototype_mean(self, prototypes: torch.Tensor, num_classes: int, dim: int) -> torch.Tensor:
        """``π``: ``(C, K, F)`` prototypes → ``(C, D)`` detached float; ValueError on a size mismatch."""
        if prototypes.ndim != 3 or prototypes.shape[0] != num_classes:
            raise ValueError(
                f"prototypes must have shape (C, K, F) with C = {num_classes} (from probs), got {tuple(prototypes.shape)}."
            )
        axis = -1 if self.prototype_reduce == "feature" else 1
        proto_mean = prototypes.detach().float().mean(axis)
        if proto_mean.shape[1] != dim:
            kept = "K (prototypes per class)" if self.prototype_reduce == "feature" else "F (prototype width)"
            raise ValueError(
                f"prototype_reduce={self.prototype_reduce!r} gives prototype means of size {kept} = "
                f"{proto_mean.shape[1]}, but the embedding has D = {dim} channels; they must be equal."
            )
        return proto_mean

    def _positive(
        self,
        class_means: torch.Tensor,
        prototypes: torch.Tensor | None,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """Positive per class ``(C, D)`` (Eq. (13)); the class mean without prototypes or in "mean" mode."""
        if prototypes is None or self.positive == "mean":
            return class_means
        proto_mean = self._prototype_mean(prototypes, *class_means.shape).to(class_means.device)
        if self.positive == "prototype":
            return proto_mean
        xi = torch.full((class_means.shape[0], 1), self.xi, device=class_means.device)
        if self.xi_mode == "uniform":
            xi = xi * torch.rand(xi.shape, generator=generator, device=xi.device)
        return (class_means + xi * proto_mean) / (1 + xi)

    def forward(
        self,
        embedding: torch.Tensor,
        label: torch.Tensor,
        valid: torch.Tensor,
        probs: torch.Tensor,
        prototypes: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Compute the CPS loss.

        Args:
            embedding: representations ``(B, D, H, W, Z)`` (any number of spatial dims).
            label: ``(B, H, W, Z)`` or ``(B, 1, H, W, Z)`` integer labels (any value where not ``valid``).
            valid: ``(B, H, W, Z)`` or ``(B, 1, H, W, Z)`` bool (non-bool is read as ``!= 0``).
            probs: softmax probabilities ``(B, C, H, W, Z)`` (detached here).
            prototypes: teacher prototypes ``(C, K, F)`` (detached here), or None in the learning stage.
            generator: optional random generator on ``embedding``'s device, for reproducible draws.

        Returns:
            scalar float32 tensor.

        Raises:
            ValueError: when shapes do not fit together, the prototype mean size differs from ``D``,
                or the generator is on another device.
        """
        if embedding.ndim < 3:
            raise ValueError(f"embedding must be (B, D, *spatial), got {tuple(embedding.shape)}.")
        if probs.ndim != embedding.ndim or probs.shape[0] != embedding.shape[0] or probs.shape[2:] != embedding.shape[2:]:
            raise ValueError(
                f"probs must be (B, C, *spatial) matching embedding {tuple(embedding.shape)}, got {tuple(probs.shape)}."
            )
        if generator is not None and generator.device.type != embedding.device.type:
            raise ValueError(f"generator is on {generator.device}, embedding on {embedding.device}; they must match.")
        batch, dim = embedding.shape[:2]
        num_classes = probs.shape[1]
        label = _per_voxel(label, embedding, "label").long()
        valid = _per_voxel(valid, embedding, "valid")
        valid = valid if valid.dtype == torch.bool else valid != 0
        with torch.autocast(device_type=embedding.device.type, enabled=False):
            return self._loss(embedding, label, valid, probs, prototypes, generator, batch, dim, num_classes)

    def _loss(
        self,
        embedding: torch.Tensor,
        label: torch.Tensor,
        valid: torch.Tensor,
        probs: torch.Tensor,
        prototypes: torch.Tensor | None,
        generator: torch.Generator | None,
        batch: int,
        dim: int,
        num_classes: int,
    ) -> torch.Tensor:
        """The loss on flattened inputs: embedding ``(B, D, ...)``, label and valid ``(B, S)``."""
        device = embedding.device
        emb = embedding.reshape(batch, dim, -1)  # (B, D, S)
        num_voxels = emb.shape[2]
        classes = torch.arange(num_classes, device=device).view(num_classes, 1, 1)
        member = valid.unsqueeze(0) & (label.unsqueeze(0) == classes)  # (C, B, S): V_c
        class_probs = probs.detach().reshape(batch, num_classes, num_voxels).transpose(0, 1)  # (C, B, S)
        anchor_mask = (member & (class_probs < self.strong_threshold)).reshape(num_classes, -1)  # Eq. (9)
        member = member.reshape(num_classes, -1)  # (C, B*S)

        counts = member.sum(1)  # (C,)
        class_valid = counts > 0
        num_valid_classes = class_valid.sum()
        has_anchor = anchor_mask.any(1)

        # Class means r̄_c over V_c (docs/method.md#cooperative-positive-supervision), detached, in float32 (sums over
        # millions of voxels).
        emb_detached = emb.detach().float()
        # Σ_b emb[b] @ member[:, b]ᵀ: a batched matmul that reads emb in place (einsum would transpose a copy of it)
        members_by_sample = member.view(num_classes, batch, num_voxels).permute(1, 2, 0).float()  # (B, S, C)
        class_sums = torch.bmm(emb_detached, members_by_sample).sum(0).t()  # (C, D)
        class_means = class_sums / counts.clamp_min(1).unsqueeze(1).float()  # (C, D)

        # Eq. (9) anchors: N_q per class, uniform with replacement over the anchor set.
        anchor_rows = torch.arange(num_classes, device=device).unsqueeze(1).expand(num_classes, self.num_queries)
        anchor_idx = sample_from_mask_rows(anchor_mask, anchor_rows, generator)  # (C, Nq) in [0, B*S)
        anchors = _gather_voxels(emb, anchor_idx)  # (C, Nq, D), with gradient

        # Eq. (11) negatives: class from the softmax over the other valid classes, then uniform in that class.
        num_draws = self.num_queries * self.num_negatives
        class_weights = negative_class_weights(class_means, class_valid, self.temperature)  # (C, C)
        negative_class = sample_categorical_rows(class_weights, num_draws, generator)  # (C, Nq*Nn)
        negative_idx = sample_from_mask_rows(member, negative_class, generator)
        negatives = _gather_voxels(emb_detached, negative_idx)
        negatives = negatives.view(num_classes, self.num_queries, self.num_negatives, dim)

        positive = self._positive(class_means, prototypes, generator)  # (C, D), detached

        # Eq. (14): InfoNCE with cosine similarity / τ; the positive sits at index 0.
        anchors = F.normalize(anchors.float(), dim=-1, eps=_COSINE_EPS)
        positive = F.normalize(positive, dim=-1, eps=_COSINE_EPS)
        negatives = F.normalize(negatives, dim=-1, eps=_COSINE_EPS)
        positive_logit = torch.einsum("cqd,cd->cq", anchors, positive).unsqueeze(-1)
        negative_logit = torch.einsum("cqd,cqnd->cqn", anchors, negatives)
        logits = torch.cat([positive_logit, negative_logit], dim=-1) / self.temperature
        per_anchor = torch.logsumexp(logits, dim=-1) - logits[..., 0]  # (C, Nq)
        per_class = torch.where(has_anchor, per_anchor.mean(1), torch.zeros_like(per_anchor[:, 0]))
        loss = per_class.sum() / num_valid_classes.clamp_min(1)
        return torch.where(num_valid_classes >= 2, loss, torch.zeros_like(loss))
