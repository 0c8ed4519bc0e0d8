"""Length-bucketed training batches through RecBole's own training data loader.

RecBole pads every sequence to ``MAX_ITEM_LIST_LENGTH`` and draws uniformly random batches, which
almost always contain one long sequence, so trimming a batch to its longest sequence saves little.
With ``length_bucket_pool: P > 0`` the training loader instead shuffles all samples, cuts them into
pools of ``P`` batches, sorts each pool by sequence length, cuts it into batches and shuffles the
order of all batches. Batches are then short where the data is short, while every epoch still visits
every sample once in a random order of random pools.
"""
import torch
from recbole.data.dataloader import TrainDataLoader


class LengthBucketBatchSampler:
    """Batches of sample indices, each drawn from a pool of ``pool * batch_size`` shuffled samples
    sorted by length.

    Args:
        lengths: ``[N]`` sequence length of every sample.
        batch_size: samples per batch (the last batch of a pool may be smaller).
        pool: batches per sorting pool (1 = random batches, only sorted inside).
        generator: ``torch.Generator`` for reproducible epochs.
    """

    def __init__(self, lengths, batch_size, pool, generator=None):
        if int(pool) < 1:
            raise ValueError(f"length_bucket_pool={pool}: expected a positive integer (0 switches bucketing off)")
        self.lengths = torch.as_tensor(lengths)
        self.batch_size, self.pool, self.generator = int(batch_size), int(pool), generator

    def __iter__(self):
        n = len(self.lengths)
        perm = torch.randperm(n, generator=self.generator)
        size = self.batch_size * self.pool
        batches = []
        for start in range(0, n, size):
            chunk = perm[start:start + size]
            chunk = chunk[torch.argsort(self.lengths[chunk], stable=True)]
            batches.extend(chunk.split(self.batch_size))
        for i in torch.randperm(len(batches), generator=self.generator).tolist():
            yield batches[i].tolist()

    def __len__(self):
        n, size = len(self.lengths), self.batch_size * self.pool
        full, rest = divmod(n, size)
        return full * self.pool + -(-rest // self.batch_size)


class BucketedTrainDataLoader(TrainDataLoader):
    """RecBole's :class:`TrainDataLoader` whose batches come from :class:`LengthBucketBatchSampler`.

    Everything else (negative sampling, transforms, collation) is RecBole's.
    """

    def __init__(self, config, dataset, sampler, shuffle=True):
        super().__init__(config, dataset, sampler, shuffle=shuffle)
        lengths = dataset.inter_feat[config["ITEM_LIST_LENGTH_FIELD"]]
        self.bucket_sampler = LengthBucketBatchSampler(lengths, self.step, config["length_bucket_pool"], self.generator)

    @property
    def _index_sampler(self):
        return self.bucket_sampler
