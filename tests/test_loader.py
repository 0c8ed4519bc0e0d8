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
