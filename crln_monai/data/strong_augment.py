"""CRLN's strong view, built on the device from a weak unlabelled batch (docs/method.md#strong-view, A10).

The teacher's pseudo-label and confidence maps go through the same geometric operations as the
image, so the student is supervised voxel-for-voxel on the strong view. Every step works on the
whole batch at once with torch ops on the input's device, and no step reads a value back to the
host (no ``.item()``, no ``.any()``), so the training iteration never syncs here.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["CUTMIX_LAMBDAS", "StrongAugment"]

CUTMIX_LAMBDAS = ("batch", "sample")
"""How CutMix draws its mixing ratio λ: ``"batch"`` (authors' code), one λ and so one box size for the whole
batch; ``"sample"`` (our earlier choice), one λ per sample. Box centres are drawn per sample either way."""

# Marsaglia–Tsang accepts a candidate with probability > 0.95 for every shape >= 1, so 16 rounds
# of candidates all fail with probability < 1e-20; drawing them at once avoids a host sync.
_GAMMA_ROUNDS = 16


def _check_range(name: str, value: tuple[float, float], low: float | None = None) -> tuple[float, float]:
    if len(value) != 2 or float(value[0]) > float(value[1]):
        raise ValueError(f"{name} must be a (low, high) pair with low <= high, got {value!r}.")
    if low is not None and float(value[0]) <= low:
        raise ValueError(f"{name} must lie above {low}, got {value!r}.")
    return float(value[0]), float(value[1])


def _check_prob(name: str, value: float) -> float:
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}.")
    return float(value)


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """``(n,)`` float32 draws from U(low, high)."""
    return low + (high - low) * torch.rand(n, generator=generator, device=device)


def _bernoulli(n: int, prob: float, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """``(n,)`` bool draws, True with probability ``prob``."""
    return torch.rand(n, generator=generator, device=device) < prob


def _standard_gamma(shape: float, n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """``(n,)`` float32 draws from Gamma(shape, 1) by Marsaglia–Tsang, fully on ``device``.

    Hand-written because ``torch.distributions.Gamma``/``Beta`` (and ``torch._standard_gamma``)
    take no ``generator``, so they could not make the augmentation reproducible.
    """
    boost = shape < 1.0  # Gamma(a) = Gamma(a + 1) * U^(1/a) for a < 1
    a = shape + 1.0 if boost else shape
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    x = torch.randn(_GAMMA_ROUNDS, n, generator=generator, device=device)
    u = torch.rand(_GAMMA_ROUNDS, n, generator=generator, device=device)
    v = (1.0 + c * x) ** 3
    log_v = torch.log(v.clamp_min(torch.finfo(v.dtype).tiny))
    accepted = (v > 0) & (torch.log(u) < 0.5 * x * x + d - d * v + d * log_v)
    first = accepted.to(torch.uint8).argmax(dim=0, keepdim=True)  # first accepted round per column
    sample = (d * v).gather(0, first).squeeze(0)
    sample = torch.where(accepted.any(dim=0), sample, torch.full_like(sample, d))  # never in practice
    if boost:
        sample = sample * torch.rand(n, generator=generator, device=device) ** (1.0 / shape)
    return sample


def _sample_beta(concentration: float, n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """``(n,)`` float32 draws from Beta(concentration, concentration) as a ratio of two gammas."""
    x = _standard_gamma(concentration, n, generator, device)
    y = _standard_gamma(concentration, n, generator, device)
    return x / (x + y).clamp_min(torch.finfo(x.dtype).tiny)


def _fold_depth(volume: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W, D)`` -> ``(B, C*D, H, W)``, so a 2D grid acts on every slice at once."""
    b, c, h, w, d = volume.shape
    return volume.permute(0, 1, 4, 2, 3).reshape(b, c * d, h, w)


def _unfold_depth(folded: torch.Tensor, channels: int) -> torch.Tensor:
    """``(B, C*D, H, W)`` -> ``(B, C, H, W, D)``; inverse of :func:`_fold_depth`."""
    b, cd, h, w = folded.shape
    return folded.reshape(b, channels, cd // channels, h, w).permute(0, 1, 3, 4, 2)


def _rescale_in_plane(
    image: torch.Tensor, label: torch.Tensor, confidence: torch.Tensor, scale: torch.Tensor, ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Zoom each sample by ``scale[b]`` on (H, W) about the centre, keeping the (H, W) size.

    Equivalent to "zoom, then centre-crop (s > 1) or pad and centre-crop (s < 1)", done as one
    resampling: output voxel ``u`` (normalised coordinates) reads input ``u / s``. Depth is folded
    into channels, so it is untouched. The image is bicubic with reflection padding (about the
    pixel edges, i.e. numpy's "symmetric"); label and confidence are nearest, and voxels whose
    source lies outside the volume get ``ignore_index`` and confidence 0. One grid serves all.

    Args:
        image: ``(B, C, H, W, D)`` float.
        label: ``(B, H, W, D)`` integer.
        confidence: ``(B, H, W, D)`` float.
        scale: ``(B,)`` positive zoom factors.
        ignore_index: label value of padded voxels.

    Returns:
        ``(image, label, confidence)`` with the input shapes and dtypes.
    """
    batch, channels, height, width, depth = image.shape
    theta = torch.zeros(batch, 2, 3, dtype=image.dtype, device=image.device)
    inverse = 1.0 / scale.to(image.dtype)
    theta[:, 0, 0] = inverse
    theta[:, 1, 1] = inverse
    grid = F.affine_grid(theta, [batch, 1, height, width], align_corners=False)  # (B, H, W, 2)

    image_out = F.grid_sample(
        _fold_depth(image), grid, mode="bicubic", padding_mode="reflection", align_corners=False
    )
    image_out = _unfold_depth(image_out, channels)

    # Label (exact as float for |label| < 2**24), confidence and an in-bounds indicator, resampled together.
    work_dtype = torch.promote_types(confidence.dtype, torch.float32)
    stacked = torch.cat(
        [
            _fold_depth(label.unsqueeze(1).to(work_dtype)),
            _fold_depth(confidence.unsqueeze(1).to(work_dtype)),
            torch.ones(batch, 1, height, width, dtype=work_dtype, device=image.device),
        ],
        dim=1,
    )
    sampled = F.grid_sample(stacked, grid.to(work_dtype), mode="nearest", padding_mode="zeros", align_corners=False)
    inside = _unfold_depth(sampled[:, -1:], 1)[:, 0] > 0.5  # (B, H, W, 1), broadcasts over depth
    label_out = _unfold_depth(sampled[:, :depth], 1)[:, 0].round().to(label.dtype)
    confidence_out = _unfold_depth(sampled[:, depth : 2 * depth], 1)[:, 0].to(confidence.dtype)
    label_out = torch.where(inside, label_out, torch.full_like(label_out, ignore_index))
    confidence_out = torch.where(inside, confidence_out, torch.zeros_like(confidence_out))
    return image_out, label_out, confidence_out


def _cutmix_box_mask(
    batch: int,
    height: int,
    width: int,
    beta: float,
    generator: torch.Generator | None,
    device: torch.device,
    lambda_mode: str = "batch",
) -> torch.Tensor:
    """``(B, H, W)`` bool in-plane boxes, one per sample (docs/method.md#strong-view, step 2).

    λ ~ Beta(β, β), drawn once for the batch (``lambda_mode="batch"``, authors' code) or once per sample
    (``"sample"``); the box side on each in-plane axis of size N is ``floor(N·sqrt(1 − λ))``; its centre is an
    integer drawn per sample in ``[N // 8, N)``; the box is ``[c − side // 2, c + side // 2)`` clipped to
    ``[0, N)``. Built by broadcasting two 1-D interval masks, so there is no loop over samples or voxels.
    """
    if lambda_mode not in CUTMIX_LAMBDAS:
        raise ValueError(f"cutmix_lambda must be one of {CUTMIX_LAMBDAS}, got {lambda_mode!r}.")
    draws = 1 if lambda_mode == "batch" else batch
    ratio = torch.sqrt((1.0 - _sample_beta(beta, draws, generator, device)).clamp_min(0.0)).expand(batch)
    masks = []
    for size in (height, width):
        half_side = torch.floor(size * ratio).long() // 2
        centre = torch.randint(size // 8, size, (batch,), generator=generator, device=device)
        low = (centre - half_side).clamp(0, size)
        high = (centre + half_side).clamp(0, size)
        index = torch.arange(size, device=device)
        masks.append((index >= low[:, None]) & (index < high[:, None]))  # (B, N)
    return masks[0][:, :, None] & masks[1][:, None, :]


def _reflection_index_maps(height: int, width: int, device: torch.device) -> torch.Tensor:
    """``(n_k * 2 + 1, H*W)`` long: source in-plane index for each (k, flip axis) and identity (last).

    Row ``2 * i + axis`` is ``flip(rot90(·, k_i, dims=(0, 1)), axis)`` with ``k_i`` from
    ``(0, 1, 2, 3)`` for square planes and from ``(0, 2)`` otherwise (a quarter turn would swap H
    and W, which a batch cannot hold). The maps are built from torch's own ``rot90``/``flip`` applied
    to an index grid, so the conventions are exactly torch's (and numpy's).
    """
    quarter_turns = (0, 1, 2, 3) if height == width else (0, 2)
    base = torch.arange(height * width, device=device).reshape(height, width)
    maps = [torch.flip(torch.rot90(base, k, dims=(0, 1)), dims=(axis,)).reshape(-1) for k in quarter_turns for axis in (0, 1)]
    maps.append(base.reshape(-1))
    return torch.stack(maps)


class StrongAugment:
    """Strong augmentation of an unlabelled device batch, jointly on image, pseudo-label, confidence.

    Steps, in the order of docs/method.md#strong-view, each switchable:

    1. **In-plane rescale**: ``s ~ U(scale_range)`` per sample on (H, W) only, kept at (H, W) around
       the centre; image bicubic (reflect padding), label/confidence nearest, padding label
       ``ignore_index`` and confidence 0.
    2. **CutMix** with a random permutation of the batch (a sample may draw itself): λ ~ Beta(β, β)
       once per batch (``cutmix_lambda="batch"``, authors' code) or per sample (``"sample"``), box side
       ``sqrt(1 − λ)`` of H and W, centre drawn per sample in ``[N // 8, N)``, clipped, and spanning the
       full depth; image, label and confidence take the same box. MONAI's
       ``monai.transforms.CutMix`` does not fit: it shares one box corner across the batch, its box
       covers every spatial axis (no full-depth box), it draws its centre over the whole axis, and it
       cannot return its mask (MONAI 1.6.1). Ours is a broadcast boolean mask.
    3. **Photometric** (image only): with prob ``brightness_prob`` per sample multiply by
       ``U(brightness_range)`` and clip that sample to [0, 1] (``unit_range`` only); with prob ``noise_prob`` per sample
       add ``N(0, noise_std²)`` clipped to ``±noise_clip`` (the image itself is not clipped here).
    4. **Geometric**: with prob ``rotate_flip_prob`` per sample, ``rot90`` by ``k ∈ {0, 1, 2, 3}`` in
       (H, W) followed by a flip along H or W, as the authors' ``RandomRotFlip`` does (so the result
       is always one of the square's four reflections). If ``H != W`` only ``k ∈ {0, 2}`` is drawn,
       since a quarter turn would swap H and W. Done as one gather with per-sample index maps.
    5. **Renormalise**: per-sample, per-channel min–max of the image to [0, 1]; a constant volume
       becomes 0 (``unit_range`` only). This is the only renormalisation: the authors' code also min–max
       renormalises around the in-plane rescale of step 1, so values the bicubic rescale pushes outside
       [0, 1] are carried here into steps 2–4 (docs/method.md#differences-from-the-paper-and-the-authors-code, D5).

    The clip and step 5 assume min–max normalised images in [0, 1] (the paper's pipelines). For z-scored or CT
    images (``normalise="zscore"``/``"ct"``) ``unit_range=False`` scales without clipping and skips step 5,
    so the student's strong view stays on the intensity scale the teacher and inference see.

    Random draws use ``generator`` when given (it must live on the image's device type) and are
    made in a fixed order whatever the outcome, so the same seed gives the same output. With every
    step off, the inputs are returned unchanged (the same tensors). Runs under ``torch.no_grad()``.

    Args:
        rescale: enable step 1. scale_range: ``(low, high)`` zoom factors, ``low > 0``.
        cutmix: enable step 2. cutmix_beta: β of the Beta(β, β) mixing ratio, ``> 0``.
        cutmix_lambda: one of :data:`CUTMIX_LAMBDAS`. ``"batch"`` (authors' code, the default): one λ, so one
            box size, shared by the batch; ``"sample"`` (our earlier choice): one λ per sample.
        brightness: enable the brightness part of step 3. brightness_prob: per-sample probability.
        brightness_range: ``(low, high)`` multiplicative factor.
        noise: enable the noise part of step 3. noise_prob: per-sample probability.
        noise_std: standard deviation of the noise. noise_clip: noise is clipped to ``±noise_clip``.
        rotate_flip: enable step 4. rotate_flip_prob: per-sample probability.
        renormalise: enable step 5.
        unit_range: the images lie in [0, 1]; ``False`` turns off the brightness clip and step 5.
        ignore_index: pseudo-label value of voxels padded by step 1.

    Raises:
        ValueError: on a malformed range, a probability outside [0, 1], a non-positive ``cutmix_beta``,
            an unknown ``cutmix_lambda`` or a negative ``noise_std``/``noise_clip``.
    """

    def __init__(
        self,
        rescale: bool = True,
        scale_range: tuple[float, float] = (0.5, 1.5),
        cutmix: bool = True,
        cutmix_beta: float = 4.0,
        cutmix_lambda: str = "batch",
        brightness: bool = True,
        brightness_prob: float = 0.8,
        brightness_range: tuple[float, float] = (0.75, 1.25),
        noise: bool = True,
        noise_prob: float = 0.5,
        noise_std: float = 0.1,
        noise_clip: float = 0.2,
        rotate_flip: bool = True,
        rotate_flip_prob: float = 0.5,
        renormalise: bool = True,
        ignore_index: int = -1,
        unit_range: bool = True,
    ) -> None:
        self.rescale = bool(rescale)
        self.scale_range = _check_range("scale_range", scale_range, low=0.0)
        self.cutmix = bool(cutmix)
        if not float(cutmix_beta) > 0:
            raise ValueError(f"cutmix_beta must be > 0, got {cutmix_beta!r}.")
        self.cutmix_beta = float(cutmix_beta)
        if cutmix_lambda not in CUTMIX_LAMBDAS:
            raise ValueError(f"cutmix_lambda must be one of {CUTMIX_LAMBDAS}, got {cutmix_lambda!r}.")
        self.cutmix_lambda = cutmix_lambda
        self.brightness = bool(brightness)
        self.brightness_prob = _check_prob("brightness_prob", brightness_prob)
        self.brightness_range = _check_range("brightness_range", brightness_range)
        self.noise = bool(noise)
        self.noise_prob = _check_prob("noise_prob", noise_prob)
        if float(noise_std) < 0 or float(noise_clip) < 0:
            raise ValueError(f"noise_std and noise_clip must be >= 0, got {noise_std!r} and {noise_clip!r}.")
        self.noise_std = float(noise_std)
        self.noise_clip = float(noise_clip)
        self.rotate_flip = bool(rotate_flip)
        self.rotate_flip_prob = _check_prob("rotate_flip_prob", rotate_flip_prob)
        self.unit_range = bool(unit_range)
        self.renormalise = bool(renormalise) and self.unit_range
        self.ignore_index = int(ignore_index)

    @torch.no_grad()
    def __call__(
        self,
        image: torch.Tensor,
        pseudo_label: torch.Tensor,
        confidence: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Augment one batch.

        Args:
            image: ``(B, Cin, H, W, D)`` float; or a batch of slices ``(B, Cin, H, W)``, augmented as volumes of
                depth 1 (the CutMix box covers the slice).
            pseudo_label: ``(B, H, W, D)`` or ``(B, 1, H, W, D)`` integer (long) class indices (without ``D`` for
                slices).
            confidence: same layout as ``pseudo_label``, float.
            generator: optional ``torch.Generator`` on the image's device type, used for every draw.

        Returns:
            ``(image, pseudo_label, confidence)`` with the shapes, dtypes, layout and device given.

        Raises:
            TypeError: if the image is not floating point, the pseudo-label not integer or the
                confidence not floating point.
            ValueError: on mismatched shapes or devices, or a generator on another device type.
        """
        if isinstance(image, torch.Tensor) and image.ndim == 4:  # slices: volumes of depth 1, squeezed back
            outputs = self(image.unsqueeze(-1), pseudo_label.unsqueeze(-1), confidence.unsqueeze(-1), generator)
            return tuple(t.squeeze(-1) for t in outputs)  # type: ignore[return-value]
        label, conf, had_channel = self._check_inputs(image, pseudo_label, confidence, generator)
        device = image.device
        batch, _, height, width, _ = image.shape
        out = image

        if self.rescale:
            scale = _uniform(batch, *self.scale_range, generator, device)
            out, label, conf = _rescale_in_plane(out, label, conf, scale, self.ignore_index)

        if self.cutmix:
            partner = torch.randperm(batch, generator=generator, device=device)
            box = _cutmix_box_mask(
                batch, height, width, self.cutmix_beta, generator, device, self.cutmix_lambda
            )  # (B, H, W)
            out = torch.where(box[:, None, :, :, None], out[partner], out)
            label = torch.where(box[..., None], label[partner], label)
            conf = torch.where(box[..., None], conf[partner], conf)

        if self.brightness:
            apply = _bernoulli(batch, self.brightness_prob, generator, device).view(batch, 1, 1, 1, 1)
            factor = _uniform(batch, *self.brightness_range, generator, device).to(out.dtype).view(batch, 1, 1, 1, 1)
            scaled = out * factor
            out = torch.where(apply, scaled.clamp(0.0, 1.0) if self.unit_range else scaled, out)

        if self.noise:
            apply = _bernoulli(batch, self.noise_prob, generator, device).view(batch, 1, 1, 1, 1)
            noise = torch.randn(out.shape, generator=generator, device=device, dtype=out.dtype) * self.noise_std
            out = out + noise.clamp(-self.noise_clip, self.noise_clip) * apply

        if self.rotate_flip:
            out, label, conf = self._rotate_flip(out, label, conf, generator)

        if self.renormalise:
            low = out.amin(dim=(2, 3, 4), keepdim=True)
            span = out.amax(dim=(2, 3, 4), keepdim=True) - low
            out = (out - low) / torch.where(span > 0, span, torch.ones_like(span))

        if out is image and label is pseudo_label and conf is confidence:
            return image, pseudo_label, confidence
        if had_channel:
            label, conf = label.unsqueeze(1), conf.unsqueeze(1)
        return out.contiguous(), label.contiguous(), conf.contiguous()

    def _rotate_flip(
        self, image: torch.Tensor, label: torch.Tensor, conf: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Step 4: per-sample rot90 + flip as a gather with per-sample in-plane index maps."""
        batch, channels, height, width, depth = image.shape
        device = image.device
        maps = _reflection_index_maps(height, width, device)
        n_turns = (maps.shape[0] - 1) // 2
        turn = torch.randint(0, n_turns, (batch,), generator=generator, device=device)
        axis = torch.randint(0, 2, (batch,), generator=generator, device=device)
        apply = _bernoulli(batch, self.rotate_flip_prob, generator, device)
        choice = torch.where(apply, 2 * turn + axis, torch.full_like(turn, maps.shape[0] - 1))
        source = maps[choice]  # (B, H*W)

        plane = height * width
        image_index = source.view(batch, 1, plane, 1).expand(batch, channels, plane, depth)
        image_out = image.reshape(batch, channels, plane, depth).gather(2, image_index).view(image.shape)
        voxel_index = source.view(batch, plane, 1).expand(batch, plane, depth)
        label_out = label.reshape(batch, plane, depth).gather(1, voxel_index).view(label.shape)
        conf_out = conf.reshape(batch, plane, depth).gather(1, voxel_index).view(conf.shape)
        return image_out, label_out, conf_out

    @staticmethod
    def _check_inputs(
        image: torch.Tensor, pseudo_label: torch.Tensor, confidence: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """Validate and return ``(label, confidence, had_channel)`` with labels as ``(B, H, W, D)``."""
        if not isinstance(image, torch.Tensor) or image.ndim != 5 or not image.is_floating_point():
            raise TypeError(
                "image must be a floating-point tensor of shape (B, Cin, H, W, D), got "
                f"{getattr(image, 'dtype', type(image))} with shape {tuple(getattr(image, 'shape', ()))}."
            )
        if not isinstance(pseudo_label, torch.Tensor) or pseudo_label.is_floating_point() or pseudo_label.is_complex():
            raise TypeError(f"pseudo_label must be an integer tensor, got {getattr(pseudo_label, 'dtype', type(pseudo_label))}.")
        if not isinstance(confidence, torch.Tensor) or not confidence.is_floating_point():
            raise TypeError(f"confidence must be a floating-point tensor, got {getattr(confidence, 'dtype', type(confidence))}.")
        expected = (image.shape[0], *image.shape[2:])
        had_channel = pseudo_label.ndim == 5
        label = pseudo_label[:, 0] if had_channel and pseudo_label.shape[1] == 1 else pseudo_label
        conf = confidence[:, 0] if confidence.ndim == 5 and confidence.shape[1] == 1 else confidence
        if tuple(label.shape) != expected or tuple(pseudo_label.shape) != tuple(confidence.shape):
            raise ValueError(
                f"pseudo_label and confidence must both be (B, H, W, D) = {expected} or (B, 1, H, W, D) to match "
                f"image {tuple(image.shape)}, got {tuple(pseudo_label.shape)} and {tuple(confidence.shape)}."
            )
        if pseudo_label.device != image.device or confidence.device != image.device:
            raise ValueError(
                f"image, pseudo_label and confidence must share a device, got {image.device}, "
                f"{pseudo_label.device} and {confidence.device}."
            )
        if generator is not None and generator.device.type != image.device.type:
            raise ValueError(f"generator must be on the image's device type {image.device.type}, got {generator.device}.")
        return label, conf, had_channel
