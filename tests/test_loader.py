import pytest
import torch

from conftest import tiny_overrides
from s4rec_recbole.data.loader import TRIM_SAFE_MODELS, BucketedTrainDataLoader, LengthBucketBatchSampler, trims
from s4rec_recbole.runner import build_config, prepare_data


def test_bucket_sampler_covers_every_sample_once_in_sorted_pools():
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 51, (1000,))
    sampler = LengthBucketBatchSampler(lengths, batch_size=64, pool=4, generator=g)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(1000))
    spread = [lengths[b].max() - lengths[b].min() for b in batches]
    random_spread = [lengths[b].max() - lengths[b].min() for b in torch.randperm(1000).split(64)]
    assert sum(spread) < sum(random_spread) / 3  # far less padding than random batches
    assert list(sampler) != batches  # a new order every epoch


@pytest.mark.parametrize("world_size", [2, 3])
def test_bucket_sampler_shares_each_global_batch_between_processes(world_size):
    lengths = torch.randint(1, 51, (1000,))
    single = list(LengthBucketBatchSampler(lengths, 64, 4, torch.Generator().manual_seed(5)))
    ranks = [list(LengthBucketBatchSampler(lengths, 64, 4, torch.Generator().manual_seed(5), rank=r,
                                           world_size=world_size)) for r in range(world_size)]
    assert all(len(r) == len(single) for r in ranks)  # the processes step together
    for step, batch in enumerate(single):
        shares = [r[step] for r in ranks]
        assert sorted(i for share in shares for i in share) == sorted(batch)  # disjoint, complete
        assert max(map(len, shares)) - min(map(len, shares)) <= 1
    tiny = list(LengthBucketBatchSampler(torch.tensor([3]), 64, 1, torch.Generator(), rank=1, world_size=2))
    assert tiny == [[0]]  # fewer samples than processes: the sample is used again
    with pytest.raises(ValueError, match="rank=2: expected 0 <= rank < world_size=2"):
        LengthBucketBatchSampler(lengths, 64, 4, rank=2, world_size=2)


def test_bucketed_loader_through_recbole(tiny_data_path):
    cfg = build_config("S4Rec", "tiny", overrides=tiny_overrides(tiny_data_path, length_bucket_pool=4, n_clusters=8))
    _, train, _, _ = prepare_data(cfg)
    assert isinstance(train, BucketedTrainDataLoader)
    seen, widths = [], []
    for batch in train:
        seen.extend(batch["item_id"].tolist())
        widths.append(int(batch["item_length"].max()) - int(batch["item_length"].min()))
    assert len(seen) == len(train._dataset) and len(widths) == len(train)
    assert sorted(seen) == sorted(train._dataset.inter_feat["item_id"].tolist())
    cfg0 = build_config("S4Rec", "tiny", overrides=tiny_overrides(tiny_data_path))
    _, plain_train, _, _ = prepare_data(cfg0)
    assert not isinstance(plain_train, BucketedTrainDataLoader)
    plain_widths = [int(b["item_length"].max()) - int(b["item_length"].min()) for b in plain_train]
    assert sum(widths) < sum(plain_widths) / 2  # batches of similar lengths: little padding after trimming


@pytest.mark.parametrize("model", TRIM_SAFE_MODELS)
def test_trim_safe_models_give_the_same_output_on_trimmed_batches(tiny_data_path, model):
    cfg = build_config(model, "tiny", overrides=tiny_overrides(tiny_data_path, trim_padding=False))
    _, train, _, _ = prepare_data(cfg)
    net = cfg.model_class(cfg, train._dataset).eval()
    batch = next(iter(train))
    seq, lengths = batch["item_id_list"], batch["item_length"]
    width = int(lengths.max())
    assert width < seq.size(1)  # there is padding to cut
    with torch.no_grad():
        assert torch.equal(net.forward(seq, lengths), net.forward(seq[:, :width], lengths))


def test_training_batches_trimmed_only_for_safe_models(tiny_data_path):
    def first_batch(model, **extra):
        cfg = build_config(model, "tiny", overrides=tiny_overrides(tiny_data_path, **extra))
        _, train, _, _ = prepare_data(cfg)
        return next(iter(train))

    for pool in (0, 4):
        batch = first_batch("SASRec", length_bucket_pool=pool)
        assert batch["item_id_list"].size(1) == int(batch["item_length"].max()) < 50
        assert batch["timestamp_list"].size(1) == batch["item_id_list"].size(1)  # every list field
    assert first_batch("SASRec", trim_padding=False)["item_id_list"].size(1) == 50
    assert first_batch("STAMP")["item_id_list"].size(1) == 50  # output depends on padding: left alone
    assert "STAMP" not in TRIM_SAFE_MODELS and trims(build_config("SASRec", "tiny", overrides=tiny_overrides(
        tiny_data_path)))


@pytest.mark.parametrize("model", ["SASRec", "S4Rec", "STAMP"])
def test_evaluation_in_order_of_length_gives_recboles_results(tiny_data_path, model):
    """prepare_data's evaluation loaders (users sorted by length, batches cut for trim-safe models) give each user
    the rank and the metrics of RecBole's own loaders (STAMP: order kept, nothing cut)."""
    from recbole.data import create_dataset, data_preparation

    from s4rec_recbole.data.loader import SortedFullSortEvalDataLoader
    from s4rec_recbole.trainer import S4RecTrainer, history_matrices

    extra = {"n_clusters": 8} if model == "S4Rec" else {}
    cfg = build_config(model, "tiny", overrides=tiny_overrides(tiny_data_path, eval_batch_size=16, **extra))
    _, train, valid, test = prepare_data(cfg)
    torch.manual_seed(0)
    net = cfg.model_class(cfg, train._dataset).eval()
    trainer = S4RecTrainer(cfg, net)
    ref_train, ref_valid, ref_test = data_preparation(cfg, create_dataset(cfg))
    ref_valid.history_matrix, ref_test.history_matrix = history_matrices(ref_train, ref_valid)
    assert type(ref_test).__name__ == "FullSortEvalDataLoader"
    sorted_loader = model != "STAMP"
    assert isinstance(test, SortedFullSortEvalDataLoader) == sorted_loader
    widths, lengths = [], []
    for batch, *_ in test:
        widths.append(batch["item_id_list"].size(1))
        lengths.append(batch["item_length"])
    lengths = torch.cat(lengths)
    if sorted_loader:
        assert torch.equal(lengths, lengths.sort().values) and len(widths) > 2
        assert widths[0] < widths[-1] if model == "SASRec" else set(widths) == {50}  # S4Rec cuts in forward
    for mine, ref in ((valid, ref_valid), (test, ref_test)):
        got, want = trainer.evaluate(mine, load_best_model=False), trainer.evaluate(ref, load_best_model=False)
        assert got == pytest.approx(want, abs=1e-4)
        users, ranks, _ = trainer.user_ranks(mine)
        ref_users, ref_ranks, _ = trainer.user_ranks(ref)
        assert sorted(users.tolist()) == sorted(ref_users.tolist())
        assert dict(zip(users.tolist(), ranks.tolist())) == dict(zip(ref_users.tolist(), ref_ranks.tolist()))
