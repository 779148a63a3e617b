"""DDP training on the CPU with Gloo: gradients averaged over ranks, identical teacher and μ, rank-0-only writes."""

import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from monai.bundle import ConfigWorkflow

from crln_monai.data import StrongAugment
from crln_monai.engines import SemiSupervisedTrainer
from crln_monai.engines.distributed import all_reduce_mean_, any_across_ranks, batchnorm_statistics, wrap_ddp
from crln_monai.handlers import AtomicCheckpointSaver
from crln_monai.losses import CPSLoss
from crln_monai.networks import CRLN

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "la"
CONFIGS = BUNDLE / "configs"
PATCH = (32, 32, 16)
TINY = {  # as tests/test_bundle_la.py: 40×40×24 volumes, 32×32×16 patches, 2 epochs × 2 iterations, validation
    "synthetic_shape": [40, 40, 24], "patch_size": [32, 32, 16], "sw_stride": [16, 16, 8], "num_prototypes": 2,
    "num_queries": 8, "num_negatives": 16, "log_interval": 1, "rectify_start": 1, "max_epochs": 2, "epoch_length": 2,
    "val_interval": 1, "num_workers": 0,
}  # fmt: skip


def _batches(rank: int, n: int = 2) -> list[dict[str, torch.Tensor]]:
    """Rank-specific batches: 2 labelled + 2 unlabelled volumes ``(4, 1, 32, 32, 16)``."""
    g = torch.Generator().manual_seed(100 + rank)
    out = []
    for _ in range(n):
        image = torch.rand(4, 1, *PATCH, generator=g)
        label = (image > 0.6).long()
        label[2:] = -1
        out.append({"image": image, "label": label})
    return out


def _gather(t: torch.Tensor) -> list[torch.Tensor]:
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.contiguous())
    return parts


def _flat(tensors) -> torch.Tensor:
    return torch.cat([t.detach().float().reshape(-1) for t in tensors])


def _ddp_worker(rank: int, world_size: int, store: str, save_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    try:
        # 1. the trainer's step-A pattern through DDP: two forwards (with / without DIM), one backward
        torch.manual_seed(0)
        net = CRLN(patch_size=PATCH, num_prototypes=2)
        replica = copy.deepcopy(net)  # same weights, no DDP: this rank's local gradient
        ddp = wrap_ddp(net, "cpu")
        image = _batches(rank, 1)[0]["image"]

        def objective(model):
            torch.manual_seed(rank)  # the same dropout masks in both runs
            out_l = model(image[:2], with_dim=True, with_embedding=True)
            out_u = model(image[2:], with_dim=False, with_embedding=True)
            terms = (out_l.logits.square(), out_l.relation_map, out_u.logits, out_l.embedding, out_u.embedding.square())
            return sum(t.mean() for t in terms)

        objective(ddp).backward()
        objective(replica).backward()
        local = _flat(p.grad for p in replica.student_parameters())
        gathered = _gather(local)
        assert not torch.allclose(gathered[0], gathered[1]), "ranks saw the same data: the check would be vacuous"
        averaged = _flat(p.grad for p in net.student_parameters())
        torch.testing.assert_close(averaged, torch.stack(gathered).mean(0), rtol=1e-4, atol=1e-6)  # mean, not sum
        assert net.rectifier.raw_mu.grad is None  # μ is outside DDP's reducer

        # 2. two trainer iterations on rank-specific batches: every rank ends with the same student, teacher, μ
        torch.manual_seed(0)
        net = CRLN(patch_size=PATCH, num_prototypes=2)
        teacher = copy.deepcopy(net).requires_grad_(False)
        trainer = SemiSupervisedTrainer(
            "cpu", 1, _batches(rank), wrap_ddp(net, "cpu"), teacher,
            torch.optim.SGD(net.student_parameters(), lr=0.05, momentum=0.9),
            torch.optim.SGD(net.rectifier.parameters(), lr=0.05, momentum=0.9),
            cps_loss=CPSLoss(num_queries=8, num_negatives=16), strong_augment=StrongAugment(), rectify_start=0,
            check_interval=1, seed=rank,
        )  # fmt: skip
        trainer.run()
        losses = _gather(trainer.state.output["loss"].reshape(1))
        assert losses[0] != losses[1]
        assert float(net.rectifier.raw_mu.detach()) != 0.0  # μ was trained
        for name, state in (("student", net.state_dict()), ("teacher", teacher.state_dict())):
            for part in _gather(_flat(state.values())):
                assert torch.equal(part, _flat(state.values())), f"{name} differs across ranks"
        assert len(batchnorm_statistics(net, teacher)) > 0

        # 3. the non-finite flag is OR-ed over the ranks: every rank raises; only rank 0 writes
        trainer._nonfinite.fill_(rank == 1)
        try:
            trainer.check_finite()
            raised = False
        except FloatingPointError:
            raised = True
        assert raised, f"rank {rank} did not raise"
        assert bool(any_across_ranks(torch.tensor(rank == 0))) and not bool(any_across_ranks(torch.tensor(False)))
        written = AtomicCheckpointSaver(save_dir, {"model": teacher}, "model.pt").save()
        assert (written is not None) == (rank == 0)
        values = [torch.full((3,), float(rank)), torch.full((2, 2), 10.0 * rank)]
        all_reduce_mean_(values)
        assert torch.equal(values[0], torch.full((3,), 0.5)) and torch.equal(values[1], torch.full((2, 2), 5.0))
    finally:
        dist.destroy_process_group()


def test_ddp_averages_gradients_and_keeps_ranks_identical(tmp_path):
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "store"), str(tmp_path / "models")), nprocs=2)
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["model.pt"]


def test_helpers_are_single_process_no_ops():
    values = [torch.tensor([1.0, 2.0])]
    all_reduce_mean_(values)
    assert torch.equal(values[0], torch.tensor([1.0, 2.0]))
    assert bool(any_across_ranks(torch.tensor(True)))
    with pytest.raises(ValueError, match="init_distributed"):
        wrap_ddp(torch.nn.Linear(2, 2), "cpu")


def _demo_data(demo_dir: Path) -> Path:
    """Write the demo's synthetic data with the demo's own ``initialize`` in this process, so that the same call
    on every rank finds it current and writes nothing (concurrent first writes would race)."""
    files = [str(CONFIGS / f) for f in ("train.json", "evaluate.json", "demo.json")]
    wf = ConfigWorkflow(
        config_file=files, meta_file=str(CONFIGS / "metadata.json"), logging_file=False, run_id="training",
        bundle_root=str(BUNDLE), demo_dir=str(demo_dir), **TINY,
    )  # fmt: skip
    wf.initialize()
    return Path(wf.parser.get_parsed_content("dataset_dir"))


def _torchrun(nproc: int, data_dir: Path, demo_dir: Path, dump_config: Path) -> tuple[float, str]:
    files = [CONFIGS / f for f in ("train.json", "evaluate.json", "demo.json", "multi_gpu_train.json")] + [dump_config]
    args = []
    for key, value in {**TINY, "demo_dir": str(demo_dir), "dataset_dir": str(data_dir)}.items():
        args += [f"--{key}", str(value).replace(" ", "")]
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
        "-m", "monai.bundle", "run", "training", "--config_file", str([str(f) for f in files]),
        "--bundle_root", str(BUNDLE), *args,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one core per process, as one GPU per process
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO, env=env)
    wall = time.perf_counter() - start
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return wall, result.stdout + result.stderr


@pytest.mark.slow
def test_torchrun_two_processes_train_the_demo_bundle(tmp_path):
    data = _demo_data(tmp_path / "data_owner")
    dump = tmp_path / "dump.json"  # each rank saves what must agree across ranks; rank 0 then runs the test set
    dump.write_text(json.dumps({
        "training": [
            "$@resume_saver.attach(@train::trainer)",
            "$@train::trainer.run()",
            "$torch.save({'teacher': @teacher.state_dict(), 'student': @network.state_dict(), "
            "'raw_mu': @network.rectifier.raw_mu.detach(), 'loss': @train::trainer.state.output['loss'], "
            "'labelled': @train::sampler.labelled_indices.tolist(), "
            "'seconds': @train::trainer.state.times['COMPLETED']}, @demo_dir + '/rank' + str(@rank) + '.pt')",
            "$@test::evaluator.run() if @rank == 0 else None",
        ]
    }))  # fmt: skip
    wall_2, log = _torchrun(2, data, tmp_path / "two", dump)
    wall_1, _ = _torchrun(1, data, tmp_path / "one", dump)

    two = tmp_path / "two"
    r0, r1 = (torch.load(two / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert set(r0["labelled"]).isdisjoint(r1["labelled"])  # the sampler split the labelled cases
    assert r0["loss"] != r1["loss"]  # so the ranks trained on different batches ...
    for key in ("teacher", "student"):  # ... and still hold the same networks (BN statistics included)
        assert r0[key].keys() == r1[key].keys()
        for name in r0[key]:
            assert torch.equal(r0[key][name], r1[key][name]), f"{key}.{name}"
    assert torch.equal(r0["raw_mu"], r1["raw_mu"]) and float(r0["raw_mu"]) != 0.0
    last = torch.load(two / "models" / "model_last.pt", weights_only=True)["model"]  # beside it: the settings
    assert all(torch.equal(last[k], r0["teacher"][k]) for k in last)
    assert [p.name for p in (two / "export").iterdir()] == ["synthetic-LA"]  # rank 0 exported the run once
    # rank 0 alone wrote checkpoints, history, TensorBoard events and the test report
    assert sorted(p.name for p in (two / "models").iterdir()) == ["model.pt", "model_last.pt", "resume.pt"]
    assert len(list((two / "eval" / "tensorboard").iterdir())) == 1
    assert len((two / "eval" / "history.csv").read_text().strip().splitlines()) == 1 + 4
    assert (two / "eval" / "summary.json").is_file() and len(list((two / "eval" / "predictions").iterdir())) == 6
    assert log.count("Epoch[2] Metrics -- val_mean_dice") == 1  # validation logged once, by rank 0

    one = torch.load(tmp_path / "one" / "rank0.pt", weights_only=False)
    timing = {
        "processes_2_wall_s": round(wall_2, 2), "processes_1_wall_s": round(wall_1, 2),
        "processes_2_train_s": round(r0["seconds"], 2), "processes_1_train_s": round(one["seconds"], 2),
        "iterations": TINY["max_epochs"] * TINY["epoch_length"], "batch_per_process": "2 labelled + 2 unlabelled",
    }  # fmt: skip
    (tmp_path / "timing.json").write_text(json.dumps(timing, indent=1))
    print(f"\nDDP timing (CPU, gloo, 1 thread per process): {json.dumps(timing)} -> {tmp_path / 'timing.json'}")


@pytest.mark.gpu
@pytest.mark.slow
def test_torchrun_nccl_one_process_per_gpu_trains_the_demo_bundle(tmp_path):
    """The NCCL path on a CUDA machine: one process per GPU (NCCL allows one rank per device), DDP wrapping,
    μ-gradient and BN all-reduces, the distributed validation sampler and rank-0 writes."""
    nproc = torch.cuda.device_count()
    data = _demo_data(tmp_path / "data_owner")
    dump = tmp_path / "dump.json"
    dump.write_text(json.dumps({
        "training": [
            "$@train::trainer.run()",
            "$torch.save({'backend': dist.get_backend(), 'device': str(@device), 'world': @world_size, "
            "'raw_mu': @network.rectifier.raw_mu.detach().cpu(), 'loss': float(@train::trainer.state.output['loss'])}, "
            "@demo_dir + '/rank' + str(@rank) + '.pt')",
        ]
    }))  # fmt: skip
    _torchrun(nproc, data, tmp_path / "run", dump)
    for rank in range(nproc):
        saved = torch.load(tmp_path / "run" / f"rank{rank}.pt", weights_only=False)
        assert saved["backend"] == "nccl" and saved["device"] == f"cuda:{rank}" and saved["world"] == nproc
        assert torch.isfinite(torch.tensor(saved["loss"])) and float(saved["raw_mu"]) != 0.0
    assert sorted(p.name for p in (tmp_path / "run" / "models").iterdir()) == ["model.pt", "model_last.pt"]
