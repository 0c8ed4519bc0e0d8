"""Distributed data-parallel training: 2 gloo processes on this CPU."""
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from conftest import REPO, tiny_overrides
from s4rec_recbole.layers import info_nce, sinkhorn

B, K, D = 12, 5, 8


def _init(rank, world, init_file):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, K, generator=g), torch.randn(B, D, generator=g), torch.randn(B, D, generator=g),
            torch.randn(K, D, generator=g), torch.randint(0, K, (B,), generator=g))


def _coupled_losses_worker(rank, world, init_file, out_dir):
    _init(rank, world, init_file)
    scores, a, p, protos, exclude = _batch()
    rows = slice(rank * B // world, (rank + 1) * B // world)
    targets = sinkhorn(scores[rows], eps=0.05, n_iters=3, global_batch=True)
    a_local = a[rows].clone().requires_grad_(True)
    loss = info_nce(a_local, p[rows], 1.0, "dot", protos, exclude[rows], global_batch=True)
    loss.backward()
    local = info_nce(a[rows], p[rows], 1.0, "dot", protos, exclude[rows], global_batch=False)
    mean = loss.detach().clone()
    dist.all_reduce(mean)
    torch.save({"targets": targets, "loss": loss.detach(), "mean": mean / world, "local": local,
                "grad": a_local.grad}, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def spawn(fn, tmp_path, *args, world=2):
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    mp.spawn(fn, args=(world, str(tmp_path / "init"), str(out), *args), nprocs=world, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(world)]


def test_global_sinkhorn_and_info_nce_equal_single_process(tmp_path):
    ranks = spawn(_coupled_losses_worker, tmp_path)
    scores, a, p, protos, exclude = _batch()
    single_targets = sinkhorn(scores, eps=0.05, n_iters=3)
    assert torch.allclose(torch.cat([r["targets"] for r in ranks]), single_targets, atol=1e-5)
    a_all = a.clone().requires_grad_(True)
    single = info_nce(a_all, p, 1.0, "dot", protos, exclude)
    single.backward()
    # the mean of the ranks' losses (what DDP optimises) is the single-process loss on the B rows
    assert torch.allclose(ranks[0]["mean"], single, atol=1e-5)
    assert not torch.allclose(ranks[0]["local"], ranks[0]["loss"])  # local-only negatives would differ
    # gradient to the local rows: rank r's rows get the gradient of rank r's loss, all rows as candidates
    import torch.nn.functional as F

    half = B // 2
    for r in range(2):
        rows = slice(r * half, (r + 1) * half)
        a_all = a.clone().requires_grad_(True)
        anchor = a_all[rows]
        self_mask = torch.zeros(half, B, dtype=torch.bool)
        self_mask[torch.arange(half), r * half + torch.arange(half)] = True
        extra = (anchor @ protos.t()).scatter(1, exclude[rows].view(-1, 1), float("-inf"))
        logits = torch.cat([anchor @ p.t(), (anchor @ a_all.t()).masked_fill(self_mask, float("-inf")), extra], 1)
        F.cross_entropy(logits, r * half + torch.arange(half)).backward()
        assert torch.allclose(ranks[r]["grad"], a_all.grad[rows], atol=1e-5)


def _unequal_shares_worker(rank, world, init_file, out_dir):
    from s4rec_recbole.layers.distributed import gather_rows

    _init(rank, world, init_file)
    scores, a, p, protos, exclude = _batch()
    rows = slice(0, 5) if rank == 0 else slice(5, B)  # 5 and 7 rows: gather_rows pads rank 0's block
    x = a[rows].clone().requires_grad_(True)
    gathered, offset = gather_rows(x)
    gathered.sum().backward()
    targets = sinkhorn(scores[rows], eps=0.05, n_iters=3, global_batch=True)
    loss = info_nce(a[rows], p[rows], 1.0, "dot", protos, exclude[rows], global_batch=True)
    torch.save({"gathered": gathered.detach(), "offset": offset, "grad": x.grad, "targets": targets,
                "loss": loss.detach(), "n": rows.stop - rows.start}, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_unequal_shares_gather_and_normalise_like_one_process(tmp_path):
    ranks = spawn(_unequal_shares_worker, tmp_path)
    scores, a, p, protos, exclude = _batch()
    assert [r["offset"] for r in ranks] == [0, 5]
    assert all(torch.equal(r["gathered"], a) for r in ranks)  # no padding rows left in
    assert all(torch.equal(r["grad"], torch.ones(r["n"], D)) for r in ranks)  # the local rows keep their gradient
    assert torch.allclose(torch.cat([r["targets"] for r in ranks]), sinkhorn(scores, eps=0.05, n_iters=3), atol=1e-5)
    # the row-weighted mean of the ranks' losses is the single-process loss on all B rows
    weighted = sum(r["loss"] * r["n"] for r in ranks) / B
    assert torch.allclose(weighted, info_nce(a, p, 1.0, "dot", protos, exclude), atol=1e-5)


def _kmeans_worker(rank, world, init_file, out_dir, data_path, state_file):
    _init(rank, world, init_file)
    from s4rec_recbole.runner import build_config, prepare_data

    cfg = build_config("ICLRec", "tiny", overrides=tiny_overrides(data_path, n_clusters=8))
    _, train, _, _ = prepare_data(cfg)
    model = cfg.model_class(cfg, train._dataset)
    model.load_state_dict(torch.load(state_file, weights_only=True))
    centroids = model.kmeans_centroids(train._dataset, 8, 0)
    torch.save({"centroids": centroids}, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_kmeans_gathers_embeddings_and_broadcasts_centroids(tiny_data_path, tmp_path):
    from s4rec_recbole.runner import build_config, prepare_data

    cfg = build_config("ICLRec", "tiny", overrides=tiny_overrides(tiny_data_path, n_clusters=8))
    _, train, _, _ = prepare_data(cfg)
    model = cfg.model_class(cfg, train._dataset)
    torch.save(model.state_dict(), tmp_path / "state.pt")
    single = model.kmeans_centroids(train._dataset, 8, 0)
    ranks = spawn(_kmeans_worker, tmp_path, str(tiny_data_path), str(tmp_path / "state.pt"))
    assert torch.equal(ranks[0]["centroids"], ranks[1]["centroids"])  # broadcast from rank 0
    assert torch.allclose(ranks[0]["centroids"], single, atol=1e-4)    # same rows, same order, same K-means


@pytest.mark.parametrize("model,pool", [("S4Rec", 2), ("ICLRec", 0)])
def test_two_process_epoch_trains_and_evaluates_like_one_process(tiny_data_path, tmp_path, model, pool):
    """`--nproc=2` on gloo (S4Rec with length-bucketed batches): one tiny epoch completes; its test
    metrics equal a single-process evaluation of the saved weights."""
    cmd = [sys.executable, str(REPO / "run_s4rec.py"), "--dataset=tiny", f"--model={model}", "--nproc=2",
           f"--data_path={tiny_data_path}", "--epochs=1", "--n_clusters=8", "--train_batch_size=32",
           f"--results_dir={tmp_path / 'res'}", f"--checkpoint_dir={tmp_path / 'saved'}", "--port=29611",
           f"--length_bucket_pool={pool}"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    (result_file,) = (tmp_path / "res").glob("*.json")
    result = json.loads(result_file.read_text())
    assert result["distributed"] == {"world_size": 2, "backend": "gloo"} and result["epochs_run"] == 1
    assert len(list((tmp_path / "saved").glob("*.pth"))) == 2  # best + .last, written once (rank 0)

    from s4rec_recbole.runner import build_config, prepare_data
    from s4rec_recbole.trainer import S4RecTrainer

    cfg = build_config(model, "tiny", overrides=tiny_overrides(tiny_data_path, n_clusters=8))
    _, train, _, test = prepare_data(cfg)
    trainer = S4RecTrainer(cfg, cfg.model_class(cfg, train._dataset))
    single = trainer.evaluate(test, load_best_model=True, model_file=result["checkpoint"])
    assert dict(single) == result["test"]


def _any_rank_worker(rank, world, init_file, out_dir):
    from types import SimpleNamespace

    from s4rec_recbole.trainer import S4RecTrainer

    _init(rank, world, init_file)
    fake = SimpleNamespace(config={"single_spec": False}, device=torch.device("cpu"))
    only_rank0 = S4RecTrainer._any_rank(fake, rank == 0)  # e.g. only rank 0 has run past the time limit
    nobody = S4RecTrainer._any_rank(fake, False)
    torch.save({"only_rank0": torch.tensor(only_rank0), "nobody": torch.tensor(nobody)},
               os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_any_rank_makes_every_rank_agree(tmp_path):
    ranks = spawn(_any_rank_worker, tmp_path)
    assert all(r["only_rank0"].item() is True and r["nobody"].item() is False for r in ranks)


def test_two_process_time_limit_stops_every_rank_together(tiny_data_path, tmp_path):
    """`--time_limit` with `--nproc=2`: the ranks agree (all-reduce) to stop after the first epoch; no rank hangs."""
    cmd = [sys.executable, str(REPO / "run_s4rec.py"), "--dataset=tiny", "--model=S4Rec", "--nproc=2",
           f"--data_path={tiny_data_path}", "--epochs=5", "--n_clusters=8", "--train_batch_size=32",
           "--time_limit=1e-6", f"--results_dir={tmp_path / 'res'}", f"--checkpoint_dir={tmp_path / 'saved'}",
           "--port=29613"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"),
                         timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    (result_file,) = (tmp_path / "res").glob("*.json")
    result = json.loads(result_file.read_text())
    assert result["stopped"] == "time_limit" and result["epochs_run"] == 1 and result["test"]


def test_distributed_command_line_errors(capsys):
    from s4rec_recbole.runner import main

    assert main(["--dataset=tiny", "--nproc=0"]) == 2
    assert "--nproc=0: expected an integer >= 1" in capsys.readouterr().err
    assert main(["--dataset=tiny", "--nproc=2", "--world_size=3", "--offset=2"]) == 2
    assert "exceeds --world_size=3" in capsys.readouterr().err
    assert main(["--dataset=tiny", "--port=99"]) == 2
    assert "--port needs --nproc > 1" in capsys.readouterr().err
