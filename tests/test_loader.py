import pytest
import torch

from conftest import tiny_overrides
from s4rec_recbole.data.loader import BucketedTrainDataLoader, LengthBucketBatchSampler
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
