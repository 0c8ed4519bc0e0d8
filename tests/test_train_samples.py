"""``train_samples: sequence``: one whole training sequence per user, a next-item target at every position."""
import pytest
import torch
from recbole.utils import init_seed

from conftest import tiny_overrides
from s4rec_recbole.config import ConfigError
from s4rec_recbole.data.loader import BucketedTrainDataLoader, LengthBucketBatchSampler, last_samples
from s4rec_recbole.runner import build_config, prepare_data, run


def loaders(data_path, model="S4Rec-SR", **extra):
    cfg = build_config(model, "tiny", overrides=tiny_overrides(data_path, **extra))
    return cfg, prepare_data(cfg)[1]


def test_sampler_draws_only_the_given_indices_once_each():
    lengths = torch.randint(1, 51, (500,))
    indices = torch.arange(0, 500, 3)
    sampler = LengthBucketBatchSampler(lengths, 16, 4, torch.Generator().manual_seed(1), indices=indices)
    batches = list(sampler)
    assert len(batches) == len(sampler) == -(-len(indices) // 16)
    assert sorted(i for b in batches for i in b) == indices.tolist()
    spread = sum(int(lengths[b].max() - lengths[b].min()) for b in batches)
    assert spread < sum(int(lengths[b].max() - lengths[b].min()) for b in indices[torch.randperm(len(indices))].split(16)) / 2


def test_last_samples_are_each_users_whole_training_sequence(tiny_data_path):
    _, train = loaders(tiny_data_path)
    feat = train._dataset.inter_feat
    rows = last_samples(train._dataset)
    uid = feat["user_id"]
    assert sorted(uid[rows].tolist()) == sorted(set(uid.tolist()))  # each user once
    for r in rows.tolist():
        mine = (uid == uid[r]).nonzero().squeeze(1)
        assert feat["item_length"][r] == feat["item_length"][mine].max()
        assert feat["timestamp"][r] == feat["timestamp"][mine].max()  # the latest target
        # the other samples of the user are the prefixes of this one
        for m in mine.tolist():
            n = int(feat["item_length"][m])
            assert torch.equal(feat["item_id_list"][m, :n], feat["item_id_list"][r, :n])


def test_loader_visits_each_user_once_per_epoch(tiny_data_path):
    for pool in (0, 4):
        _, train = loaders(tiny_data_path, train_samples="sequence", length_bucket_pool=pool)
        assert isinstance(train, BucketedTrainDataLoader)
        users = [u for batch in train for u in batch["user_id"].tolist()]
        n_users = len(set(train._dataset.inter_feat["user_id"].tolist()))
        assert len(users) == n_users == len(set(users))
        assert len(train) == -(-n_users // 64)
    _, prefix = loaders(tiny_data_path, length_bucket_pool=4)
    assert sum(len(b["user_id"]) for b in prefix) == len(prefix._dataset)  # default: every prefix sample


def test_sequence_loss_is_the_mean_of_the_prefix_losses(tiny_data_path):
    cfg, train = loaders(tiny_data_path)
    init_seed(3, True)
    model = cfg.model_class(cfg, train._dataset).eval()  # no dropout: the same function of the input
    feat = train._dataset.inter_feat
    rows = last_samples(train._dataset)[:20]
    prefix_rows = torch.isin(feat["user_id"], feat["user_id"][rows]).nonzero().squeeze(1)
    assert int(feat["item_length"][rows].max()) < cfg["MAX_ITEM_LIST_LENGTH"]  # whole sequences, no truncation
    assert len(prefix_rows) == int(feat["item_length"][rows].sum())  # one prefix sample per position
    model.all_positions = True
    whole, z = model.rec_and_embedding(feat[rows])
    model.all_positions = False
    prefixes, z_prefix = model.rec_and_embedding(feat[prefix_rows])
    assert torch.allclose(whole, prefixes, atol=1e-5)
    assert z.shape == (20, model.hidden_size)
    # and the last position's representation is that of the longest prefix
    assert torch.allclose(z, model.sequence_embedding(feat[rows]["item_id_list"], feat[rows]["item_length"]))
    model.all_positions = True
    model.train()
    loss = model.rec_and_embedding(feat[rows])[0]
    loss.backward()
    assert model.item_embedding.weight.grad.abs().sum() > 0


def test_sequence_samples_refused_where_they_cannot_work(tiny_data_path):
    with pytest.raises(ConfigError, match=r"train_samples='sequence' for model SASRec: only the plugin models"):
        loaders(tiny_data_path, model="SASRec", train_samples="sequence")
    with pytest.raises(ConfigError, match=r"train_samples='all': expected one of \['prefix', 'sequence'\]"):
        loaders(tiny_data_path, train_samples="all")
    cfg, train = loaders(tiny_data_path, train_samples="sequence")
    cfg["loss_type"] = "BPR"
    with pytest.raises(ConfigError, match=r"train_samples='sequence' with loss_type='BPR': expected loss_type 'CE'"):
        cfg.model_class(cfg, train._dataset)


@pytest.mark.parametrize("model", ["S4Rec", "CL4SRec", "ICLRec"])
def test_end_to_end_on_whole_sequences(tiny_data_path, tmp_path, model):
    extra = {"n_clusters": 8} if model != "CL4SRec" else {}
    res = run(model=model, dataset="tiny", overrides=tiny_overrides(tiny_data_path, tmp_path, train_samples="sequence",
                                                                    epochs=2, **extra), results_dir=tmp_path / "res")
    assert res["epochs_run"] == 2 and res["config"]["train_samples"] == "sequence"
    assert 0 <= res["test"]["ndcg@20"] <= 1
    assert len(res["curve"]) == 2 and all(torch.isfinite(torch.tensor(e["train_loss"])).all() for e in res["curve"])


def test_kmeans_clusters_the_samples_that_training_sees(tiny_data_path, monkeypatch):
    import s4rec_recbole.model.base as base

    seen = []
    monkeypatch.setattr(base, "kmeans", lambda x, k, **options: seen.append(x) or x[:k].clone())
    for samples in ("prefix", "sequence"):
        cfg, train = loaders(tiny_data_path, model="ICLRec", train_samples=samples, n_clusters=8)
        model = cfg.model_class(cfg, train._dataset)
        model.kmeans_centroids(train._dataset, 8, 0)
        rows = last_samples(train._dataset) if samples == "sequence" else slice(None)
        model.eval()
        feat = train._dataset.inter_feat
        expected = model.sequence_embedding(feat["item_id_list"][rows], feat["item_length"][rows])
        assert seen[-1].shape == expected.shape and torch.allclose(seen[-1], expected, atol=1e-5)
    n_users = len(last_samples(train._dataset))  # fewer sequences than samples: fewer clusters allowed
    cfg, train = loaders(tiny_data_path, model="ICLRec", train_samples="sequence", n_clusters=n_users + 1)
    with pytest.raises(ConfigError, match=rf"n_clusters={n_users + 1}: expected an integer in"):
        cfg.model_class(cfg, train._dataset)


def test_prefix_lengths_are_each_samples_own_uncapped_length(tiny_data_path):
    from s4rec_recbole.data.loader import PREFIX_LENGTH_FIELD, prefix_lengths

    _, train = loaders(tiny_data_path, MAX_ITEM_LIST_LENGTH=5)
    feat = train._dataset.inter_feat
    own = prefix_lengths(train._dataset)
    assert torch.equal(own, feat["timestamp"].long())  # the tiny data's time is the item's position in the user's line
    assert own.max() > 5 and torch.equal(own.clamp(max=5), feat["item_length"].long())
    assert torch.equal(feat[PREFIX_LENGTH_FIELD], own)  # added by prepare_data for the plugin models
    assert torch.equal(own[last_samples(train._dataset)], torch.bincount(feat["user_id"])[feat["user_id"].unique()])


def test_prefix_lengths_refuse_samples_that_are_not_prefixes(tiny_data_path):
    from s4rec_recbole.data import DataError
    from s4rec_recbole.data.loader import prefix_lengths

    _, train = loaders(tiny_data_path)
    train._dataset.inter_feat["item_length"][0] += 1
    with pytest.raises(DataError, match="'tiny': its training samples are not each user's prefixes"):
        prefix_lengths(train._dataset)


def test_adversary_labels_read_the_uncapped_length(tiny_data_path):
    """With a head threshold above MAX_ITEM_LIST_LENGTH the capped input length would call every sample tail."""
    from s4rec_recbole.data.loader import PREFIX_LENGTH_FIELD

    cfg, train = loaders(tiny_data_path, model="S4Rec", MAX_ITEM_LIST_LENGTH=3, n_clusters=8)
    model = cfg.model_class(cfg, train._dataset)
    assert model.head_min_length > 3
    batch = next(iter(train))
    is_head = model.own_lengths(batch) >= model.head_min_length
    assert torch.equal(model.own_lengths(batch), batch[PREFIX_LENGTH_FIELD])
    assert is_head.any() and not is_head.all() and not (batch["item_length"] >= model.head_min_length).any()
    del batch.interaction[PREFIX_LENGTH_FIELD]
    with pytest.raises(ValueError, match="exceeds MAX_ITEM_LIST_LENGTH=3"):
        model.calculate_loss(batch)
