"""Top-k recommendations from a trained checkpoint, for a user, an ad-hoc sequence or every user.

    rec = s4rec_recbole.load("saved/S4Rec-....pth")
    rec.recommend(user="42", topk=10)                 # [(item id, score), ...] after user 42's history
    rec.recommend(items=["5", "17", "3"], topk=10)    # after an ad-hoc sequence (oldest first)

Ids are the external ones of the data files. The checkpoint carries the model name, the dataset name
and the settings it was trained with; the dataset's atomic file (``dataset/NAME/NAME.inter``, or
``data_path``) provides the id maps and the user histories.
"""
import csv
import io
import logging

import numpy as np
import torch
from recbole.data import create_dataset, data_preparation
from recbole.data.interaction import Interaction
from tqdm import tqdm

from s4rec_recbole.data.prepare import atomic_write_text
from s4rec_recbole.trainer import load_project_checkpoint
from s4rec_recbole.model import build_model

logger = logging.getLogger(__name__)


class RecommendError(ValueError):
    """Unknown user or items, or an unusable checkpoint; the message says what was expected."""


def user_histories(dataset):
    """``{internal user id: [internal item ids in time order]}`` of every user of ``dataset``."""
    column = lambda field: np.asarray(dataset.inter_feat[field])  # noqa: E731  (DataFrame or Interaction)
    uid, iid = column(dataset.uid_field), column(dataset.iid_field)
    order = np.lexsort((column(dataset.time_field), uid))
    uid, iid = uid[order], iid[order]
    bounds = np.flatnonzero(np.diff(uid)) + 1
    return {int(u[0]): i for u, i in zip(np.split(uid, bounds), np.split(iid, bounds))}


class Recommender:
    """A trained model with the id maps and full histories of its dataset.

    ``history`` defaults to :func:`user_histories` of ``dataset``, which must then be the dataset as
    ``create_dataset`` returns it (``data_preparation`` replaces its interactions by training prefixes).
    """

    def __init__(self, model, dataset, config, history=None):
        self.model, self.dataset, self.config = model.eval(), dataset, config
        self.max_len = config["MAX_ITEM_LIST_LENGTH"]
        self.history = user_histories(dataset) if history is None else history

    @classmethod
    def from_checkpoint(cls, path, data_path=None):
        from s4rec_recbole.runner import build_config

        try:
            ckpt = load_project_checkpoint(path)
        except ValueError as e:
            raise RecommendError(str(e)) from None
        settings = dict(ckpt["settings"], state="ERROR", show_progress=False)
        if data_path is not None:
            settings["data_path"] = str(data_path)
        config = build_config(ckpt["model"], ckpt["dataset"], overrides=settings)
        dataset = create_dataset(config)
        history = user_histories(dataset)
        train, _, _ = data_preparation(config, dataset)  # keeps the id maps, replaces the interactions
        model = build_model(config, train._dataset)
        model.load_state_dict(ckpt["state_dict"])
        model.load_other_parameter(ckpt.get("other_parameter"))
        return cls(model, dataset, config, history)

    # ------------------------------------------------------------------ id maps
    def user_id(self, user):
        try:
            return int(self.dataset.token2id(self.dataset.uid_field, str(user)))
        except ValueError:
            raise RecommendError(f"unknown user {user!r}: not a user of dataset {self.config['dataset']}") from None

    def item_ids(self, items):
        """Internal ids of the known ``items``; unknown ones are skipped with a warning."""
        known, unknown = [], []
        for item in items:
            try:
                known.append(int(self.dataset.token2id(self.dataset.iid_field, str(item))))
            except ValueError:
                unknown.append(str(item))
        if unknown:
            logger.warning("skipped %d unknown items: %s", len(unknown), ", ".join(unknown[:10]))
        if not known:
            raise RecommendError(f"none of the items {list(items)[:10]} is an item of dataset {self.config['dataset']}")
        return known

    def item_tokens(self, ids):
        return [str(t) for t in self.dataset.id2token(self.dataset.iid_field, np.asarray(ids))]

    # ------------------------------------------------------------------ scoring
    def padded(self, sequences):
        """``(item_seq [B, max_len], item_seq_len [B])`` of internal-id sequences, each cut to its last
        ``max_len`` items and padded with 0 at the end, as the model's inputs."""
        seq = torch.zeros(len(sequences), self.max_len, dtype=torch.long)
        lens = torch.zeros(len(sequences), dtype=torch.long)
        for b, s in enumerate(sequences):
            s = list(s)[-self.max_len:]
            seq[b, :len(s)] = torch.as_tensor(s)
            lens[b] = len(s)
        return seq, lens

    @torch.no_grad()
    def scores(self, sequences, exclude=None):
        """``[B, n_items]`` scores after each internal-id sequence; padding (and ``exclude``) at -inf."""
        seq, lens = self.padded(sequences)
        inter = Interaction({self.model.ITEM_SEQ: seq, self.model.ITEM_SEQ_LEN: lens}).to(self.config["device"])
        out = self.model.full_sort_predict(inter).cpu()
        out[:, 0] = -np.inf
        if exclude is not None:
            for b, items in enumerate(exclude):
                out[b, torch.as_tensor(np.asarray(items), dtype=torch.long)] = -np.inf
        return out

    def _top(self, scores, topk):
        """Best ``topk`` (item id, score) per row; excluded items (-inf) are never returned."""
        values, ids = scores.topk(min(topk, scores.size(1) - 1), dim=1)
        return [[(t, v) for t, v in zip(self.item_tokens(i), vals.tolist()) if v != -np.inf]
                for i, vals in zip(ids.numpy(), values)]

    def recommend(self, user=None, items=None, topk=10, exclude_history=False):
        """``[(item id, score)]``, best first, after ``user``'s whole history or after ``items``."""
        if (user is None) == (items is None):
            raise RecommendError("give exactly one of user or items")
        if int(topk) < 1:
            raise RecommendError(f"topk={topk}: expected a positive integer")
        seq = self.history.get(self.user_id(user), np.array([], dtype=int)) if user is not None else self.item_ids(items)
        if len(seq) == 0:
            raise RecommendError(f"user {user!r} has no interactions to recommend from")
        return self._top(self.scores([seq], [seq] if exclude_history else None), int(topk))[0]

    def recommend_all(self, output, topk=10, exclude_history=False, batch_size=1024, show_progress=True):
        """Write ``user_id,rank,item_id,score`` rows for every user to ``output`` (atomically)."""
        users = sorted(self.history)
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["user_id", "rank", "item_id", "score"])
        for start in tqdm(range(0, len(users), batch_size), desc="recommend", disable=not show_progress):
            chunk = users[start:start + batch_size]
            seqs = [self.history[u] for u in chunk]
            tops = self._top(self.scores(seqs, seqs if exclude_history else None), int(topk))
            tokens = self.dataset.id2token(self.dataset.uid_field, np.asarray(chunk))
            for token, top in zip(tokens, tops):
                writer.writerows([str(token), r + 1, item, f"{score:.6g}"] for r, (item, score) in enumerate(top))
        atomic_write_text(output, buf.getvalue())
        return output


def load(checkpoint, data_path=None):
    """A :class:`Recommender` from a checkpoint written by this project's trainer."""
    return Recommender.from_checkpoint(checkpoint, data_path)
