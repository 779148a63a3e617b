"""The semi-supervised trainer: one iteration of CRLN's Algorithm 1 whose switches give every ablation."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.utils import CommonKeys as Keys
from torch import nn

from ..data.strong_augment import StrongAugment
from ..losses import CPSLoss, PseudoLabelLoss, SegmentationLoss
from ..networks.crln import CRLN
from ..utils import amp_dtype as _amp_dtype
from ..utils import epoch_seed
from ..utils import unwrap_model as _unwrap
from .distributed import all_reduce_mean_, any_across_ranks, batchnorm_statistics, is_distributed
from .outputs import PSEUDO_LABEL_QUALITY
from .pseudo_label_quality import confident_share, pseudo_label_dice
from .teacher_ema import TeacherEMA

__all__ = ["SemiSupervisedTrainer"]

class SemiSupervisedTrainer(SupervisedTrainer):
    """Mean-teacher trainer with CRLN's rectification, DIM supervision and CPS (docs/method.md#training-iteration).

    Each batch holds ``labelled_batch_size`` labelled volumes followed by the unlabelled ones (see
    :class:`~crln_monai.data.TwoStreamBatchSampler`). One iteration:

    1. teacher (train mode: docs/method.md, A9; no grad) on the weak unlabelled volumes → pseudo-label and confidence,
       rectified by the relation map once ``iteration > rectify_start`` (Eq. 8);
    2. strong augmentation of image, pseudo-label and confidence on the device;
    3. student forwards: labelled with the DIM, strong unlabelled without; objective of Eq. (15):
       ``seg(logits) + seg(relation_map) + lambda_u * pseudo_label_loss + lambda_cp * cps``; SGD step;
    4. the μ step of Eq. (16): student in eval mode, no grad through it, one step of ``rectifier_optimizer``;
    5. teacher EMA (the rectifier is copied, not averaged, so teacher and student share μ).

    The switches give the paper's ablations: ``use_unlabelled=False`` is supervised-only; ``use_dim=False`` is
    the mean teacher (with ``strong_augment`` choosing weak-to-strong with or without CutMix and noise);
    ``cps_loss=None`` drops CPS; the CPS positive, DIM aggregation, rectifier and prototypes live in the
    loss and network objects.

    DDP (``torchrun``, bundle ``multi_gpu_train.json``, ``docs/multi_gpu.md``): give the student wrapped by
    :func:`~crln_monai.engines.distributed.wrap_ddp` and the teacher unwrapped. Under an initialised process group
    the trainer also averages μ's gradient over the ranks in the μ step, averages the BatchNorm statistics of
    student and teacher after each iteration (so every rank holds the same student, teacher and μ), and OR-s the
    non-finite flag over the ranks in :meth:`check_finite`.

    Nothing inside the iteration synchronises with the host: the scalars of ``engine.state.output`` are
    detached device tensors, read by the logging handlers at their own interval. A non-finite loss is recorded
    on the device and raises ``FloatingPointError`` at the next check: every ``check_interval`` iterations and at
    every epoch end before validation and checkpoint writes (:class:`~crln_monai.handlers.NonFiniteCheck`, first
    of those in ``train.json``), so no checkpoint ever holds the weights of a diverged run.

    Args:
        device: where the iteration runs.
        max_epochs: epochs to run.
        train_data_loader: yields dicts with ``image`` ``(B, Cin, H, W, D)`` and ``label`` ``(B, 1, H, W, D)``
            (``-1`` where an unlabelled case has no label file).
        network: the student :class:`CRLN`.
        teacher: the teacher, same architecture (its initial weights are overwritten by the first EMA step).
        optimizer: optimiser of ``network.student_parameters()``.
        rectifier_optimizer: optimiser of ``network.rectifier.parameters()`` (the μ step); ``None`` skips it.
        labelled_batch_size: labelled volumes at the head of each batch.
        segmentation_loss: supervised loss (default ½(CE + Dice)).
        pseudo_label_loss: unsupervised loss (default confidence-ratio weighted CE).
        cps_loss: Collaborative Positive Supervision; ``None`` disables it.
        strong_augment: strong view of the unlabelled batch; ``None`` uses the weak view as it is.
        use_unlabelled: ``False`` trains on the labelled volumes only (supervised baseline).
        use_dim: supervise the relation map, rectify pseudo-labels and train μ.
        rectify_start: iterations of the learning stage; rectification and prototype positives start after it.
        supervised_iterations: burn-in: the first iterations train on the labelled volumes only (segmentation, DIM
            and μ step; no teacher forward, pseudo-label loss or CPS) and the teacher is the student's copy; the
            unlabelled losses and the teacher's EMA (its warm-up from that copy) start after it. 0 (the paper)
            starts them at once. A short time budget spends part of its time on these cheaper steps
            (docs/results.md, "Short-budget rules").
        lambda_u: weight of the pseudo-label loss.
        lambda_cp: weight of CPS.
        weak_threshold: confidence above which strong-view pseudo-labels are valid for CPS (δ_w).
        teacher_ema: the EMA utility (default: ``TeacherEMA(network, teacher)``).
        amp_dtype: ``"bfloat16"`` runs forwards under autocast; ``None`` keeps fp32.
        compile: wrap student and teacher forwards in ``torch.compile``.
        check_interval: iterations between host checks for non-finite losses.
        seed: seed of the device generator used by strong augmentation and CPS sampling.
        kwargs: passed to :class:`monai.engines.SupervisedTrainer` (``epoch_length``, ``train_handlers``, ...).
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Any,
        network: CRLN,
        teacher: CRLN,
        optimizer: torch.optim.Optimizer,
        rectifier_optimizer: torch.optim.Optimizer | None = None,
        labelled_batch_size: int = 2,
        segmentation_loss: nn.Module | None = None,
        pseudo_label_loss: nn.Module | None = None,
        cps_loss: CPSLoss | None = None,
        strong_augment: StrongAugment | None = None,
        use_unlabelled: bool = True,
        use_dim: bool = True,
        rectify_start: int = 800,
        supervised_iterations: int = 0,
        lambda_u: float = 0.5,
        lambda_cp: float = 0.5,
        weak_threshold: float = 0.7,
        teacher_ema: TeacherEMA | None = None,
        amp_dtype: str | None = None,
        compile: bool = False,
        check_interval: int = 20,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("decollate", False)
        kwargs.setdefault("optim_set_to_none", True)  # PyTorch's own default: no zero-fill and no add into old grads
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            train_data_loader=train_data_loader,
            network=network,
            optimizer=optimizer,
            loss_function=segmentation_loss or SegmentationLoss(),
            **kwargs,
        )
        model = _unwrap(network)
        if use_dim and model.dim is None:
            raise ValueError("use_dim=True needs a CRLN built with use_dim=True (it has no DIM).")
        if cps_loss is not None and model.projection is None:
            raise ValueError("cps_loss needs a CRLN built with use_projection=True (it has no projection head).")
        self.teacher = teacher
        self.rectifier_optimizer = rectifier_optimizer if use_dim else None
        self.labelled_batch_size = labelled_batch_size
        self.pseudo_label_loss = pseudo_label_loss or PseudoLabelLoss()
        self.cps_loss = cps_loss
        self.strong_augment = strong_augment
        self.use_unlabelled = use_unlabelled
        self.use_dim = use_dim
        self.rectify_start = rectify_start
        burn_in = supervised_iterations
        if isinstance(burn_in, bool) or not isinstance(burn_in, int) or burn_in < 0:
            raise ValueError(f"supervised_iterations must be an int >= 0, got {supervised_iterations!r}.")
        self.supervised_iterations = supervised_iterations
        self.lambda_u = lambda_u
        self.lambda_cp = lambda_cp
        self.weak_threshold = weak_threshold
        self.teacher_ema = teacher_ema or TeacherEMA(network, teacher)
        if not use_unlabelled:  # the teacher never runs in train mode: give it the student's BN statistics
            self.teacher_ema.copy_buffers = True
        self.amp_dtype = _amp_dtype(amp_dtype)
        self.check_interval = check_interval
        self.seed = seed
        self.num_classes = model.num_classes
        self.confidence_threshold = float(getattr(self.pseudo_label_loss, "threshold", 0.97))
        self.generator = torch.Generator(device=torch.device(device))
        self.generator.manual_seed(seed)
        self._student_forward = torch.compile(network) if compile else network
        self._teacher_forward = torch.compile(teacher) if compile else teacher
        self._nonfinite = torch.zeros((), dtype=torch.bool, device=device)

    def run_values(self) -> dict[str, Any]:
        """The run's schedule and switches as this trainer holds them, for the exported model card.

        Read from the objects (the optimiser's initial learning rate, the sampler's unlabelled batch) so an export
        states what ran, and a config need not list the values a second time.
        """
        sampler = getattr(self.data_loader, "batch_sampler", None)
        return {
            "max_epochs": int(self.state.max_epochs),
            "epoch_length": int(self.state.epoch_length),
            "labelled_batch_size": self.labelled_batch_size,
            "unlabelled_batch_size": getattr(sampler, "unlabelled_batch_size", None),
            "lr": self.optimizer.defaults.get("lr"),
            "rectify_start": self.rectify_start,
            "supervised_iterations": self.supervised_iterations,
            "use_unlabelled": self.use_unlabelled,
            "use_dim": self.use_dim,
            "use_cps": self.cps_loss is not None,
            "seed": self.seed,
        }

    def reseed(self, epoch: int) -> None:
        """Reseed the device generator as a function of (seed, epoch), so that a resumed run repeats the same draws."""
        self.generator.manual_seed(epoch_seed(self.seed, epoch))

    def _autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.state.device.type, dtype=self.amp_dtype)

    def _iteration(self, engine: SemiSupervisedTrainer, batchdata: dict[str, torch.Tensor]) -> dict:
        """One iteration of Algorithm 1.

        Returns:
            ``engine.state.output``: detached 0-dim tensors ``loss``, ``loss_sup``, ``loss_relation``, ``loss_u``,
            ``loss_cp``, ``loss_mu``, ``mu``, ``rectifying``, ``confident_share``, ``confident_share_rectified``,
            ``pseudo_label_dice``, ``pseudo_label_dice_rectified`` (NaN where not applicable).

        Raises:
            ValueError: when ``batchdata`` is None or holds no unlabelled volume while ``use_unlabelled``.
            FloatingPointError: at a check interval, when a loss was non-finite since the last check.
        """
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        image, label = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)[:2]
        image, label = _plain(image), _plain(label).long()
        lb = engine.labelled_batch_size
        image_l, label_l = image[:lb], label[:lb]
        nan = torch.full((), float("nan"), device=image.device)
        stats: dict[str, torch.Tensor] = {}
        rectifying = engine.use_dim and engine.state.iteration > engine.rectify_start
        semi_supervised = engine.use_unlabelled and engine.state.iteration > engine.supervised_iterations
        with_embedding = engine.cps_loss is not None and semi_supervised

        # 1-2. teacher pseudo-labels on the weak view, then the strong view
        strong = None
        if semi_supervised:
            if image.shape[0] <= lb:
                raise ValueError(f"batch of {image.shape[0]} volumes has no unlabelled part (labelled_batch_size={lb}).")
            strong, stats = engine._pseudo_label(image[lb:], label[lb:], rectifying)

        # 3. student objective (Eq. 15)
        student = _unwrap(engine.network)
        student.train()
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        with engine._autocast():
            out_l = engine._student_forward(image_l, with_dim=engine.use_dim, with_embedding=with_embedding)
            out_u = None
            if strong is not None:
                out_u = engine._student_forward(strong[0], with_dim=False, with_embedding=with_embedding)
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        loss_sup = engine.loss_function(out_l.logits.float(), label_l)
        loss_relation = engine.loss_function(out_l.relation_map.float(), label_l) if engine.use_dim else nan
        loss = loss_sup + (loss_relation if engine.use_dim else 0)
        loss_u = loss_cp = nan
        if out_u is not None:
            loss_u = engine.pseudo_label_loss(out_u.logits.float(), strong[1], strong[2])
            loss = loss + engine.lambda_u * loss_u
            if engine.cps_loss is not None:
                loss_cp = engine._cps(out_l, out_u, label_l, strong, rectifying)
                loss = loss + engine.lambda_cp * loss_cp
        engine.state.output = {Keys.IMAGE: image, Keys.LABEL: label, Keys.LOSS: loss}
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        loss.backward()
        engine._nonfinite |= ~torch.isfinite(loss.detach())
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        engine.optimizer.step()

        # 4-5. μ step (Eq. 16), then teacher EMA
        loss_mu = engine._mu_step(image_l, label_l) if engine.rectifier_optimizer is not None else nan
        if engine.use_unlabelled and not semi_supervised:  # burn-in: the teacher is the student's copy
            engine.teacher_ema.mirror()
        else:
            engine.teacher_ema.update()
        if is_distributed():  # keep every rank's BN statistics equal (each rank updated them from its own batch)
            all_reduce_mean_(batchnorm_statistics(student, _unwrap(engine.teacher)))

        mu = student.rectifier.mu if engine.use_dim and student.rectifier.mu is not None else None
        engine.state.output = {
            Keys.IMAGE: image,
            Keys.LABEL: label,
            Keys.LOSS: loss.detach(),
            "loss_sup": loss_sup.detach(),
            "loss_relation": loss_relation.detach(),
            "loss_u": _detach(loss_u),
            "loss_cp": _detach(loss_cp),
            "loss_mu": _detach(loss_mu),
            "mu": nan if mu is None else mu.detach().reshape(()),
            "rectifying": torch.full((), float(rectifying), device=image.device),  # a fill: no blocking copy
            **{k: stats.get(k, nan) for k in PSEUDO_LABEL_QUALITY},
        }
        if engine.state.iteration % engine.check_interval == 0:
            engine.check_finite()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output

    def check_finite(self) -> None:
        """Raise ``FloatingPointError`` if a loss was non-finite since the last check (one host sync).

        Under DDP the flag is OR-ed over the ranks first (a collective: every rank must call this at the same
        points, so every rank raises together and none writes the weights of a run diverged on another rank).
        """
        if bool(any_across_ranks(self._nonfinite)):
            self._nonfinite.zero_()
            raise FloatingPointError(
                f"non-finite loss at or before iteration {self.state.iteration}: training stopped before writing "
                "another checkpoint, so the checkpoints on disk hold the last finite weights. Lower the learning rate "
                "or check the data."
            )

    @torch.no_grad()
    def _pseudo_label(
        self, image_u: torch.Tensor, label_u: torch.Tensor, rectifying: bool
    ) -> tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]:
        """Teacher pseudo-labels of the weak unlabelled view and their strong view ``(image, label, confidence)``."""
        teacher = _unwrap(self.teacher)
        teacher.train()  # docs/method.md, A9: dropout on, batch statistics, as the authors' code
        with self._autocast():
            out = self._teacher_forward(image_u, with_dim=rectifying, with_embedding=False)
        probs = torch.softmax(out.logits.float(), 1)
        confidence, pseudo = probs.max(1)
        stats = {
            "confident_share": confident_share(confidence, self.confidence_threshold),
            "pseudo_label_dice": pseudo_label_dice(pseudo, label_u, self.num_classes),
        }
        if rectifying:
            confidence, pseudo = torch.softmax(out.rectified_logits.float(), 1).max(1)
            stats["confident_share_rectified"] = confident_share(confidence, self.confidence_threshold)
            stats["pseudo_label_dice_rectified"] = pseudo_label_dice(pseudo, label_u, self.num_classes)
        if self.strong_augment is None:
            return (image_u, pseudo, confidence), stats
        return self.strong_augment(image_u, pseudo, confidence, generator=self.generator), stats

    def _cps(self, out_l, out_u, label_l, strong, rectifying: bool) -> torch.Tensor:
        """CPS over labelled and strong unlabelled voxels; teacher prototypes once rectification starts."""
        label_u, confidence_u = strong[1], strong[2]
        label_l = label_l[:, 0]
        labels = torch.cat([label_l, label_u])
        valid = torch.cat([label_l >= 0, (confidence_u >= self.weak_threshold) & (label_u >= 0)])
        with torch.no_grad():
            probs = torch.softmax(torch.cat([out_l.logits, out_u.logits]).float(), 1)
        prototypes = _unwrap(self.teacher).prototypes if rectifying else None
        embedding = torch.cat([out_l.embedding, out_u.embedding]).float()
        return self.cps_loss(
            embedding, labels, valid, probs, None if prototypes is None else prototypes.detach(), generator=self.generator
        )

    def _mu_step(self, image_l: torch.Tensor, label_l: torch.Tensor) -> torch.Tensor:
        """Eq. (16): one step of the rectifier on the labelled batch, the student frozen and in eval mode."""
        student = _unwrap(self.network)
        student.eval()
        with torch.no_grad(), self._autocast():
            out = student(image_l, with_dim=True, with_embedding=False)
        student.train()
        self.rectifier_optimizer.zero_grad(set_to_none=True)
        loss_mu = self.loss_function(student.rectifier(out.logits.float(), out.relation_map.float()), label_l)
        loss_mu.backward()
        if is_distributed():  # the rectifier is outside DDP's reducer (see wrap_ddp): average μ's gradient here
            groups = self.rectifier_optimizer.param_groups
            all_reduce_mean_([p.grad for group in groups for p in group["params"] if p.grad is not None])
        self.rectifier_optimizer.step()
        return loss_mu


def _plain(x: torch.Tensor) -> torch.Tensor:
    return x.as_tensor() if hasattr(x, "as_tensor") else x


def _detach(x: torch.Tensor) -> torch.Tensor:
    return x.detach() if isinstance(x, torch.Tensor) else x

