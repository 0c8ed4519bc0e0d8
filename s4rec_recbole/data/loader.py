"""Training batches without wasted padding, through RecBole's own training data loader.

RecBole pads every training sequence to ``MAX_ITEM_LIST_LENGTH``. With ``trim_padding: true`` the batches of
RecBole's models whose output does not depend on trailing padding (:data:`TRIM_SAFE_MODELS`, checked exactly
in the tests) are cut to their longest sequence; the plugin models cut their batches themselves.


RecBole pads every sequence to ``MAX_ITEM_LIST_LENGTH`` and draws uniformly random batches, which
almost always contain one long sequence, so trimming a batch to its longest sequence saves little.
With ``length_bucket_pool: P > 0`` the training loader instead shuffles all samples, cuts them into
pools of ``P`` batches, sorts each pool by sequence length, cuts it into batches and shuffles the
order of all batches. Batches are then short where the data is short, while every epoch still visits
every sample once in a random order of random pools.

With ``train_samples: sequence`` (plugin models only) an epoch visits each user once, with the user's last
training sample: the whole training sequence (its last ``MAX_ITEM_LIST_LENGTH`` items), whose every position
has a next-item target (the way SASRec's and ICLRec's own code train), instead of RecBole's one sample per
prefix. The batches then always come from :class:`LengthBucketBatchSampler` (pool 1 when bucketing is off:
uniformly random batches, only sorted inside).

Each training sample also carries its own, uncapped length (:func:`prefix_lengths`, field ``prefix_length``):
``item_length`` stops at ``MAX_ITEM_LIST_LENGTH``, and S4Rec's head/tail adversary labels a sample by its own length.

Evaluation (:class:`SortedFullSortEvalDataLoader`) ranks the users in order of sequence length, so each batch
of ``eval_batch_size`` users is cut to a width close to its users' own lengths; every user's scores are those of
RecBole's loader (up to float rounding) and the metrics, averages over users, do not depend on the order.

With distributed training every process draws the same global batches (the loader's generator has the
same seed everywhere) and takes an interleaved share of each (``batch[rank::world_size]``), so the
processes step together through batches of similar length, as RecBole's ``DistributedSampler`` shares
its random batches.
"""
import numpy as np
import torch
from recbole.data.dataloader import FullSortEvalDataLoader, TrainDataLoader

from s4rec_recbole.data.prepare import DataError

# RecBole models whose forward pass gives exactly the same output on a batch cut to its longest sequence
# (tests/test_loader.py); e.g. STAMP, LightSANs, SHAN, NPE do not (padding embeddings or fixed-length layers).
TRIM_SAFE_MODELS = ("SASRec", "GRU4Rec", "NARM", "SRGNN", "GCSAN")
# train_samples: RecBole's one sample per prefix of each training sequence, or one whole sequence per user
TRAIN_SAMPLES = ("prefix", "sequence")
# field added to the training samples: each sample's own length, uncapped (``item_length`` stops at the longest input)
PREFIX_LENGTH_FIELD = "prefix_length"


def trims(config):
    """Whether training batches of ``config``'s model are cut to their longest sequence by the loader."""
    return bool(config["trim_padding"]) and config["model"] in TRIM_SAFE_MODELS


def trim_lists(interaction, config):
    """Cut every ``[B, MAX_ITEM_LIST_LENGTH]`` list field of ``interaction`` to ``[B, longest length]``."""
    width = int(interaction[config["ITEM_LIST_LENGTH_FIELD"]].max())
    for field in interaction.columns:
        value = interaction[field]
        if field.endswith(config["LIST_SUFFIX"]) and value.dim() >= 2 and value.size(1) > width:
            interaction[field] = value[:, :width]
    return interaction


def _user_time_order(dataset):
    """``(order [N], first [N])``: the training rows sorted by user, then by the target's time (``TIME_FIELD``)
    where the data has one, else by their order in the data; ``first`` marks each user's first row in that order."""
    uid = dataset.inter_feat[dataset.uid_field].numpy()
    time_field = dataset.time_field
    if time_field and time_field in dataset.inter_feat:
        order = np.lexsort((dataset.inter_feat[time_field].numpy(), uid))
    else:
        order = np.argsort(uid, kind="stable")
    first = np.ones(len(order), dtype=bool)
    first[1:] = uid[order][1:] != uid[order][:-1]
    return order, first


def last_samples(dataset):
    """``[U]`` row of each user's last training sample (its whole training sequence), in user order."""
    order, first = _user_time_order(dataset)
    last = np.append(first[1:], True)[:len(order)]
    return torch.from_numpy(order[last])


def prefix_lengths(dataset):
    """``[N]`` own length of each training sample: the number of items before its target in the user's training
    sequence. RecBole's ``item_length`` caps it at ``MAX_ITEM_LIST_LENGTH``; a user's samples are the prefixes of
    lengths 1, 2, ... in time order. Raises :class:`DataError` when the capped lengths disagree with that."""
    order, first = _user_time_order(dataset)
    position = np.arange(len(order))
    rank = position - np.maximum.accumulate(np.where(first, position, 0))
    lengths = np.empty(len(order), dtype=np.int64)
    lengths[order] = rank + 1
    lengths = torch.from_numpy(lengths)
    capped = dataset.inter_feat[dataset.config["ITEM_LIST_LENGTH_FIELD"]]
    if not torch.equal(lengths.clamp(max=dataset.config["MAX_ITEM_LIST_LENGTH"]), capped.long()):
        raise DataError(f"dataset {dataset.dataset_name!r}: its training samples are not each user's prefixes of "
                        "lengths 1, 2, ... in time order, so a sample's own length is unknown")
    return lengths


class LengthBucketBatchSampler:
    """Batches of sample indices, each drawn from a pool of ``pool * batch_size`` shuffled samples
    sorted by length.

    Args:
        lengths: ``[N]`` sequence length of every sample.
        batch_size: samples per batch (the last batch of a pool may be smaller).
        pool: batches per sorting pool (1 = random batches, only sorted inside).
        generator: ``torch.Generator`` for reproducible epochs (seeded alike in every process).
        rank, world_size: this process's share of every batch with distributed training; a batch
            smaller than ``world_size`` gives the missing processes one of its samples again.
        indices: draw only these sample indices (default: all ``N``).
    """

    def __init__(self, lengths, batch_size, pool, generator=None, rank=0, world_size=1, indices=None):
        if int(pool) < 1:
            raise ValueError(f"length_bucket_pool={pool}: expected a positive integer (0 switches bucketing off)")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank={rank}: expected 0 <= rank < world_size={world_size}")
        self.indices = None if indices is None else torch.as_tensor(indices, dtype=torch.long)
        self.lengths = torch.as_tensor(lengths) if indices is None else torch.as_tensor(lengths)[self.indices]
        self.batch_size, self.pool, self.generator = int(batch_size), int(pool), generator
        self.rank, self.world_size = int(rank), int(world_size)

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
            batch = batches[i] if self.indices is None else self.indices[batches[i]]
            if self.world_size > 1:
                share = batch[self.rank::self.world_size]
                batch = share if len(share) else batch[self.rank % len(batch):][:1]
            yield batch.tolist()

    def __len__(self):
        n, size = len(self.lengths), self.batch_size * self.pool
        full, rest = divmod(n, size)
        return full * self.pool + -(-rest // self.batch_size)


class TrimmedTrainDataLoader(TrainDataLoader):
    """RecBole's :class:`TrainDataLoader` whose batches are cut to their longest sequence when
    :func:`trims` says the model allows it (otherwise RecBole's batches unchanged)."""

    def __init__(self, config, dataset, sampler, shuffle=True):
        self.trim = trims(config)
        super().__init__(config, dataset, sampler, shuffle=shuffle)

    def collate_fn(self, index):
        data = super().collate_fn(index)
        return trim_lists(data, self.config) if self.trim else data


class BucketedTrainDataLoader(TrimmedTrainDataLoader):
    """:class:`TrimmedTrainDataLoader` whose batches come from :class:`LengthBucketBatchSampler` (pools of
    ``length_bucket_pool`` batches, at least 1), over every sample or, with ``train_samples: sequence``, over
    each user's last sample.

    Everything else (negative sampling, transforms, collation) is RecBole's.
    """

    def __init__(self, config, dataset, sampler, shuffle=True):
        super().__init__(config, dataset, sampler, shuffle=shuffle)
        lengths = dataset.inter_feat[config["ITEM_LIST_LENGTH_FIELD"]]
        share = {}
        if not config["single_spec"]:
            import torch.distributed as dist

            share = {"rank": dist.get_rank(), "world_size": dist.get_world_size()}
        indices = last_samples(dataset) if config["train_samples"] == "sequence" else None
        self.bucket_sampler = LengthBucketBatchSampler(lengths, self.global_step, max(1, config["length_bucket_pool"]),
                                                       self.generator, indices=indices, **share)

    def _init_batch_size_and_step(self):
        super()._init_batch_size_and_step()
        # samples per batch over all processes (RecBole then divides step by world_size for its own sampler)
        self.global_step = self.step

    @property
    def _index_sampler(self):
        return self.bucket_sampler


class SortedFullSortEvalDataLoader(FullSortEvalDataLoader):
    """RecBole's full-ranking evaluation loader over the users sorted by sequence length (then user id), each
    batch cut to its longest sequence when ``trim`` is set (models whose output does not depend on trailing
    padding). Sorts ``dataset`` in place; batches are ``(interaction, None, positive_u, positive_i)`` as
    RecBole's."""

    def __init__(self, config, dataset, sampler, trim=True):
        dataset.sort(by=[config["ITEM_LIST_LENGTH_FIELD"], dataset.uid_field])
        self.trim = trim
        super().__init__(config, dataset, sampler, shuffle=False)

    def collate_fn(self, index):
        interaction, history, positive_u, positive_i = super().collate_fn(index)
        if self.trim:
            interaction = trim_lists(interaction, self.config)
        return interaction, history, positive_u, positive_i
