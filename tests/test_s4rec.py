import math
import re
import subprocess
import sys

import pytest
import torch
from recbole.utils import init_seed

from conftest import REPO, tiny_overrides
from s4rec_recbole.config import ConfigError
from s4rec_recbole.model.base import training_item_freq, training_lengths
from s4rec_recbole.runner import build_config, prepare_data

OFF = {"alpha": 0.0, "beta1": 0.0, "beta2": 0.0, "lambda": 0.0}


def make(model, data_path, seed=7, **overrides):
    if model == "S4Rec":
        overrides.setdefault("n_clusters", 8)  # the default K = 128 is more than the tiny data's 120 users
    cfg = build_config(model, "tiny", overrides=tiny_overrides(data_path, **overrides))
    _, train, valid, test = prepare_data(cfg)
    init_seed(seed, True)
    return cfg, cfg.model_class(cfg, train._dataset), train


def first_batch(train):
    return next(iter(train))


def test_equivalent_to_recbole_sasrec_when_aux_weights_are_zero(tiny_data_path):
    no_dropout = {"hidden_dropout_prob": 0.0, "attn_dropout_prob": 0.0}
    _, sas, train = make("SASRec", tiny_data_path, **no_dropout)
    _, s4, _ = make("S4Rec", tiny_data_path, **no_dropout, **OFF)
    sas_params = dict(sas.named_parameters())
    for name, p in s4.named_parameters():  # the same seed gives SASRec's weights
        if name in sas_params:
            assert torch.equal(p, sas_params[name]), name
    batch = first_batch(train)
    loss_sas = sas.calculate_loss(batch)
    parts = s4.calculate_loss(batch)
    assert len(parts) == 5 and all(p.item() == 0 for p in parts[1:])
    assert torch.allclose(parts[0], loss_sas, atol=1e-6)
    loss_sas.backward()
    sum(parts).backward()
    s4_params = dict(s4.named_parameters())
    for name, p in sas_params.items():
        assert torch.allclose(s4_params[name].grad, p.grad, atol=1e-6), name
    sas.eval(), s4.eval()
    assert torch.allclose(sas.full_sort_predict(batch), s4.full_sort_predict(batch), atol=1e-5)


def test_bpr_next_item_loss_with_sampled_negatives(tiny_data_path):
    """``loss_type: BPR``: -log sigmoid(s(pos) - s(neg)) with RecBole's sampled negative of each sample."""
    _, s4, train = make("S4Rec", tiny_data_path, loss_type="BPR", **OFF,
                        train_neg_sample_args={"distribution": "uniform", "sample_num": 1})
    s4.eval()
    batch = first_batch(train)
    z = s4(batch["item_id_list"], batch["item_length"])
    item = s4.item_embedding.weight
    diff = (z * item[batch["item_id"]]).sum(-1) - (z * item[batch["neg_item_id"]]).sum(-1)
    assert torch.allclose(s4.calculate_loss(batch)[0], -torch.nn.functional.logsigmoid(diff).mean(), atol=1e-5)
    assert not torch.equal(batch["item_id"], batch["neg_item_id"])


def test_fast_dropout_setting_reaches_every_dropout_of_the_model(tiny_data_path):
    from s4rec_recbole.layers import FastDropout

    _, fast, _ = make("S4Rec", tiny_data_path, hidden_dropout_prob=0.3, attn_dropout_prob=0.2)
    drops = [m for m in fast.modules() if isinstance(m, (FastDropout, torch.nn.Dropout))]
    assert drops and all(isinstance(m, FastDropout) for m in drops)
    assert {m.p for m in drops} == {0.3, 0.2}
    _, plain, _ = make("S4Rec", tiny_data_path, fast_dropout=False)
    assert not any(isinstance(m, FastDropout) for m in plain.modules())
    assert any(isinstance(m, torch.nn.Dropout) for m in plain.modules())


def test_trimming_gives_identical_outputs(tiny_data_path):
    _, s4, train = make("S4Rec", tiny_data_path)
    s4.eval()
    batch = first_batch(train)
    seq, lens = batch["item_id_list"], batch["item_length"]
    assert int(lens.max()) < seq.size(1)  # the batch is padded beyond its longest sequence
    untrimmed = s4.gather_indexes(s4.encode(seq), lens - 1)
    assert torch.allclose(s4(seq, lens), untrimmed, atol=1e-5)


def test_all_parts_finite_and_reach_their_parameters(tiny_data_path):
    _, s4, train = make("S4Rec", tiny_data_path, n_clusters=8)
    parts = s4.calculate_loss(first_batch(train))
    assert all(torch.isfinite(p) and p.item() > 0 for p in parts)
    sum(parts).backward()
    for name in ("prototypes.weight", "adversary.classifier.weight", "item_embedding.weight",
                 "item_embedding.mask_weight"):
        assert dict(s4.named_parameters())[name].grad.abs().sum() > 0, name


@pytest.mark.parametrize("weight, part", [("alpha", 1), ("beta1", 2), ("beta2", 3), ("lambda", 4)])
def test_each_weight_switches_its_part(tiny_data_path, weight, part):
    _, s4, train = make("S4Rec", tiny_data_path, n_clusters=8, **{weight: 0.0})
    parts = s4.calculate_loss(first_batch(train))
    assert parts[part].item() == 0 and all(p.item() > 0 for i, p in enumerate(parts) if i != part)


def test_zero_weights_skip_computation(tiny_data_path, monkeypatch):
    _, s4, train = make("S4Rec", tiny_data_path, beta1=0.0, beta2=0.0, **{"lambda": 0.0})

    def forbidden(*a, **k):
        raise AssertionError("computed although its weight is 0")

    monkeypatch.setattr(s4.augmenter, "forward", forbidden)
    monkeypatch.setattr(s4.adversary, "forward", forbidden)
    parts = s4.calculate_loss(first_batch(train))  # alpha > 0 still clusters, without any view
    assert parts[1].item() > 0
    _, s4, _ = make("S4Rec", tiny_data_path, **OFF)
    monkeypatch.setattr(s4.augmenter, "forward", forbidden)
    monkeypatch.setattr(s4.prototypes, "forward", forbidden)
    monkeypatch.setattr(s4.adversary, "forward", forbidden)
    s4.calculate_loss(first_batch(train))


def test_mean_pooling_and_cos(tiny_data_path):
    _, s4, train = make("S4Rec", tiny_data_path, n_clusters=8, seq_pooling="mean", sim="cos")
    assert all(torch.isfinite(p) for p in s4.calculate_loss(first_batch(train)))


def test_cos_space_distillation_changes_only_the_distillation_part(tiny_data_path):
    parts = {}
    for space in ("raw", "cos"):
        _, s4, train = make("S4Rec", tiny_data_path, n_clusters=8, ckd_space=space, tau3=0.1)
        torch.manual_seed(0)  # the same augmented views for both
        parts[space] = s4.calculate_loss(first_batch(train))
    rec, clust, scl, ckd, adv = parts["cos"]
    assert torch.isfinite(ckd) and ckd > 0
    assert ckd.item() != pytest.approx(parts["raw"][3].item(), rel=1e-3)
    for i in (0, 1, 2, 4):
        assert parts["cos"][i].item() == pytest.approx(parts["raw"][i].item(), rel=1e-5)
    ckd.backward()
    assert s4.item_embedding.weight.grad is not None and s4.prototypes.weight.grad is None


BAD_VALUES = [
    ("S4Rec", {"clustering": "spectral"}, r"clustering='spectral': expected one of \['online', 'kmeans'\]"),
    ("S4Rec", {"alpha": -1}, r"alpha=-1: expected a number in \[0, inf\)"),
    ("S4Rec", {"lambda": -0.1}, r"lambda=-0.1: expected a number in \[0, inf\)"),
    ("S4Rec", {"n_clusters": 1}, r"n_clusters=1: expected an integer in \[2, 120\]"),
    ("S4Rec", {"n_clusters": 121}, r"n_clusters=121: expected an integer in \[2, 120\]"),
    ("S4Rec", {"tau1": 0.0}, r"tau1=0.0: expected a number in \(0, inf\)"),
    ("S4Rec", {"tau2": -1.0}, r"tau2=-1.0: expected a number in \(0, inf\)"),
    ("S4Rec", {"tau3": float("nan")}, r"tau3=nan: expected a number in \(0, inf\)"),
    ("S4Rec", {"ckd_space": "l1"}, r"ckd_space='l1': expected one of \['raw', 'cos'\]"),
    ("S4Rec", {"sinkhorn_eps": 0.0}, r"sinkhorn_eps=0.0: expected a number in \(0, inf\)"),
    ("S4Rec", {"crop_ratio": 0.0}, r"crop_ratio=0.0: expected a number in \(0, 1\]"),
    ("S4Rec", {"mask_ratio": 1.5}, r"mask_ratio=1.5: expected a number in \(0, 1\]"),
    ("S4Rec", {"head_ratio": 1.0}, r"head_ratio=1.0: expected a number in \(0, 1\)"),
    ("S4Rec", {"head_ratio": 0.0}, r"head_ratio=0.0: expected a number in \(0, 1\)"),
    ("S4Rec", {"train_batch_size": 1}, r"train_batch_size=1: expected an integer in \[2, inf\)"),
    ("S4Rec", {"hidden_dropout_prob": 1.0}, r"hidden_dropout_prob=1.0: expected a number in \[0, 1\)"),
    ("S4Rec", {"aug_operators": []}, r"aug_operators=\[\]: expected a non-empty list from"),
    ("S4Rec", {"aug_operators": ["crop", "flip"]}, r"aug_operators=\['crop', 'flip'\]: expected a non-empty list"),
    ("CL4SRec", {"cl_temperature": 0}, r"cl_temperature=0: expected a number in \(0, inf\)"),
    ("CL4SRec", {"train_batch_size": 1}, r"train_batch_size=1: expected an integer in \[2, inf\)"),
    ("ICLRec", {"n_clusters": 1}, r"n_clusters=1: expected an integer in \[2, "),
]


@pytest.mark.parametrize("model, values, message", BAD_VALUES)
def test_out_of_range_values_are_one_line_config_errors(tiny_data_path, model, values, message):

    with pytest.raises(ConfigError, match=message) as e:
        make(model, tiny_data_path, **values)
    assert "\n" not in str(e.value)


def test_weights_off_make_batch_size_and_k_irrelevant(tiny_data_path):
    make("S4Rec", tiny_data_path, train_batch_size=1, n_clusters=1000, **OFF)  # plain SASRec: no error


def test_out_of_range_value_on_the_command_line(tiny_data_path, capsys):
    from s4rec_recbole.runner import main

    assert main(["--dataset=tiny", f"--data_path={tiny_data_path}", "--model=S4Rec", "--tau2=0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after RecBole's log of the configuration
    assert err == "error: tau2=0: expected a number in (0, inf)"


def test_head_labels_from_80th_percentile(tiny_data_path):
    _, s4, train = make("S4Rec", tiny_data_path)
    lengths = training_lengths(train._dataset)
    head_share = (lengths >= s4.head_min_length).mean()
    assert 0.1 <= head_share <= 0.3
    assert (lengths >= s4.head_min_length - 1).mean() > 0.2  # one shorter would be more than the top 20%


def test_training_item_freq_counts_each_users_training_items(tiny_data_path):
    """Insert's item distribution: every item of each user's training part once; none for the padding id 0.
    The training part is all but the last two items, except that RecBole's leave-one-out split gives a user
    with 3 items (2 prefix samples) no validation sample: its first two items are training items."""
    _, _, train = make("S4Rec", tiny_data_path)
    ds = train._dataset
    expected = torch.zeros(ds.item_num)
    for line in (tiny_data_path / "tiny.txt").read_text().split("\n"):
        items = line.split()[1:]
        for item in items[:len(items) - min(2, len(items) - 2)]:
            expected[ds.token2id(ds.iid_field, item)] += 1
    freq = training_item_freq(ds)
    assert freq[0] == 0 and torch.equal(freq, expected)


def test_adversary_labels_each_sample_by_its_own_length(tiny_data_path, monkeypatch):
    """Spec 2.5: a training sample (a prefix) is a head sample when its own length reaches the threshold."""
    _, s4, train = make("S4Rec", tiny_data_path)
    seen = []
    loss = s4.adversary.loss
    monkeypatch.setattr(s4.adversary, "loss", lambda z, is_head: seen.append(is_head) or loss(z, is_head))
    batch = first_batch(train)
    adv = s4.calculate_loss(batch)[4]
    lengths = batch["item_length"]
    assert len(seen) == 1 and torch.equal(seen[0], lengths >= s4.head_min_length)
    assert seen[0].any() and not seen[0].all()  # both classes in the batch: the test can tell them apart
    assert adv.item() > 0


@pytest.mark.parametrize("model, extra", [("S4Rec", {"clustering": "kmeans"}), ("ICLRec", {})])
def test_kmeans_settings_reach_faiss(tiny_data_path, monkeypatch, model, extra):
    import s4rec_recbole.model.base as base

    calls = []
    real = base.kmeans
    monkeypatch.setattr(base, "kmeans", lambda x, k, **kw: calls.append((k, kw)) or real(x, k, **kw))
    _, m, train = make(model, tiny_data_path, n_clusters=8, **extra)
    m.kmeans_centroids(train._dataset, 8, epoch_idx=3)
    assert calls == [(8, {"seed": m.seed + 3, "n_redo": 5, "max_points_per_centroid": 4096})]  # ICLRec's values
    _, m, train = make(model, tiny_data_path, n_clusters=8, kmeans_redo=1, kmeans_max_points_per_centroid=256,
                       **extra)
    m.kmeans_centroids(train._dataset, 8, epoch_idx=0)
    assert calls[-1][1] == {"seed": m.seed, "n_redo": 1, "max_points_per_centroid": 256}  # faiss' defaults
    with pytest.raises(ConfigError, match="kmeans_redo=0: expected an integer in"):
        make(model, tiny_data_path, n_clusters=8, kmeans_redo=0, **extra)


@pytest.mark.parametrize("clustering", ["online", "kmeans"])
def test_assign_clusters_takes_the_most_cosine_similar_representative(tiny_data_path, monkeypatch, clustering):
    _, s4, train = make("S4Rec", tiny_data_path, n_clusters=8, clustering=clustering)
    reps = torch.zeros(8, s4.hidden_size)
    reps[0, 0], reps[1, :2] = 10.0, torch.tensor([1.0, 1.0])  # prototype 0 has the largest dot products
    reps[2:, 2] = 1.0 + torch.arange(6.0)
    with torch.no_grad():
        (s4.prototypes.weight if clustering == "online" else s4.centroids).copy_(reps)
    z = torch.zeros(3, s4.hidden_size)
    z[0, :2], z[1, 0], z[2, 2] = torch.tensor([1.0, 0.9]), 1.0, 0.1
    monkeypatch.setattr(s4, "sequence_embedding", lambda seq, lens: z)
    batch = first_batch(train)
    assert s4.assign_clusters(batch["item_id_list"][:3], batch["item_length"][:3]).tolist() == [1, 0, 2]


def test_kmeans_variant_recomputes_centroids_each_epoch(tiny_data_path):
    cfg, s4, train = make("S4Rec", tiny_data_path, clustering="kmeans", n_clusters=8)
    assert s4.centroids.abs().sum() == 0
    s4.on_epoch_start(None, train, 0)
    c0 = s4.centroids.clone()
    assert c0.abs().sum() > 0 and s4.training
    parts = s4.calculate_loss(first_batch(train))
    assert parts[1].item() == 0 and parts[2].item() > 0 and parts[3].item() > 0
    sum(parts).backward()
    torch.optim.SGD(s4.parameters(), lr=1.0).step()
    s4.on_epoch_start(None, train, 1)
    assert not torch.equal(c0, s4.centroids)


def test_s4rec_end_to_end_logs_every_finite_part(tiny_source, tmp_path):
    cmd = [sys.executable, str(REPO / "run_s4rec.py"), "--dataset=tiny", f"--data_source={tiny_source}",
           f"--data_path={tmp_path / 'ds'}", "--epochs=1", f"--results_dir={tmp_path / 'res'}",
           f"--checkpoint_dir={tmp_path / 'saved'}", "--train_batch_size=64", "--n_clusters=8",
           "--use_gpu=False"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "S4Rec on tiny" in proc.stdout
    line = next(l for l in proc.stderr.splitlines() + proc.stdout.splitlines() if "epoch 0 training" in l)
    losses = [float(x) for x in re.findall(r"train_loss\d: ([-\d.e+naif]+)", line)]
    assert len(losses) == 5 and all(math.isfinite(x) for x in losses), line


def test_nan_part_stops_training_with_its_name(tiny_data_path, tmp_path, monkeypatch):
    from s4rec_recbole.trainer import S4RecTrainer

    cfg, s4, train = make("S4Rec", tiny_data_path, n_clusters=8, checkpoint_dir=str(tmp_path))
    _, _, valid, _ = prepare_data(cfg)
    trainer = S4RecTrainer(cfg, s4)
    original = s4.calculate_loss
    monkeypatch.setattr(s4, "calculate_loss", lambda inter: tuple(
        p * float("nan") if i == 3 else p for i, p in enumerate(original(inter))))
    with pytest.raises(FloatingPointError, match=r"loss ckd is nan at epoch 0, batch 0; training stopped; "
                                                 "no checkpoint written yet"):
        trainer.fit(train, valid)


def test_nan_in_a_later_epoch_keeps_the_last_good_checkpoints(tiny_data_path, tmp_path, monkeypatch):
    from s4rec_recbole.trainer import S4RecTrainer, load_checkpoint

    cfg, s4, train = make("S4Rec", tiny_data_path, checkpoint_dir=str(tmp_path), epochs=3)
    _, _, valid, _ = prepare_data(cfg)
    trainer = S4RecTrainer(cfg, s4)
    original, calls = s4.calculate_loss, [0]
    n_batches = len(train)

    def poisoned(inter):
        calls[0] += 1
        parts = original(inter)
        return (parts[0] * float("inf"),) + parts[1:] if calls[0] > n_batches + 1 else parts

    monkeypatch.setattr(s4, "calculate_loss", poisoned)
    with pytest.raises(FloatingPointError) as e:
        trainer.fit(train, valid)
    msg = str(e.value)
    assert msg.startswith("loss rec is inf at epoch 1, batch 1; training stopped; last good checkpoints kept: ")
    assert trainer.saved_model_file in msg and trainer.last_model_file in msg
    last = load_checkpoint(trainer.last_model_file)
    assert last["epoch"] == 0 and all(torch.isfinite(v).all() for v in last["state_dict"].values())


def test_aux_warmup_ramps_the_auxiliary_parts(tiny_data_path):
    full_cfg, full, train = make("S4Rec", tiny_data_path, seed=3)
    _, warm, _ = make("S4Rec", tiny_data_path, seed=3, aux_warmup=3)
    batch = first_batch(train)
    for model in (full, warm):
        model.eval()  # no dropout: only the augmentation draws differ, and they are seeded below
    factors = []
    for epoch in range(5):
        warm.on_epoch_start(None, train, epoch)
        factors.append(warm.aux_scale)
        torch.manual_seed(epoch)
        a = full.calculate_loss(batch)
        torch.manual_seed(epoch)
        b = warm.calculate_loss(batch)
        assert torch.allclose(b[0], a[0])
        for pa, pb in zip(a[1:], b[1:]):
            assert torch.allclose(pb, pa * warm.aux_scale, atol=1e-6)
    assert factors == [0.25, 0.5, 0.75, 1.0, 1.0]
