"""RecBole's :class:`~recbole.trainer.Trainer` with safe checkpoints, history masking and timings.

* Checkpoints hold only tensors and plain Python data (the configuration as a plain dict, not RecBole's
  pickled ``Config``), are written atomically, and load with ``torch.load(..., weights_only=True)``.
* ``mask_history: True`` removes every item of the user's own history from the full ranking (the
  protocol of the ICLRec code the S4Rec paper follows), for every model, RecBole's own included.
* Models may define ``on_epoch_start(trainer, train_data, epoch_idx)`` (e.g. per-epoch K-means).
* ``time_limit: S`` (seconds, 0 = none) ends training before an epoch that would end past ``S`` seconds of this
  process's fit (judged by the mean epoch so far); the best checkpoint is tested as after early stopping, and the
  result's ``stopped`` says which of ``early_stopping``, ``epochs`` or ``time_limit`` ended the run.
"""
import contextlib
import enum
import os
import random
import tempfile
import time
import uuid

import numpy as np
import scipy.sparse as sp
import torch
from recbole.trainer import Trainer
from recbole.utils import set_color

from s4rec_recbole.config import ConfigError


def plain(value):
    """``value`` with every leaf turned into str/int/float/bool/None (safe for ``weights_only`` and JSON)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (np.generic, torch.Tensor)) and np.size(value) == 1:  # np.float64 is also a float
        return value.item()
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, enum.Enum):
        return value.name
    return str(value)


def load_checkpoint(path, map_location="cpu"):
    """Load a checkpoint written by :class:`S4RecTrainer` with ``weights_only=True``."""
    return torch.load(path, map_location=map_location, weights_only=True)


def load_project_checkpoint(path, map_location="cpu"):
    """A checkpoint written by :class:`S4RecTrainer` (model, dataset, settings, weights), or ValueError
    with a one-line message naming the file."""
    try:
        state = load_checkpoint(path, map_location=map_location)
    except Exception as e:  # noqa: BLE001  (torch raises several types for a refused or broken file)
        raise ValueError(f"{path}: cannot load the checkpoint safely ({str(e).splitlines()[0]})") from None
    if not isinstance(state, dict) or not {"settings", "model", "dataset", "state_dict"} <= set(state):
        raise ValueError(f"{path}: no 'settings' in the checkpoint; expected one saved by this project's trainer")
    return state


def atomic_torch_save(obj, path):
    """``torch.save`` to a temporary file beside ``path``, then rename: no half-written checkpoint."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".ckpt.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def history_matrices(train_data, valid_data):
    """Per-user seen items for masking: ``(valid_history, test_history)`` as CSR ``[n_users, n_items]``.

    Validation ranks against the user's training items; the test ranks against those plus the
    validation item (leave-one-out), exactly as ICLRec's ``valid/test_rating_matrix``.
    """
    ds = train_data._dataset
    uid_f, iid_f = ds.uid_field, ds.iid_field
    list_f = iid_f + ds.config["LIST_SUFFIX"]
    uid = ds.inter_feat[uid_f].numpy()
    lists = ds.inter_feat[list_f].numpy()
    nz = lists > 0
    rows = np.concatenate([uid, np.repeat(uid, nz.sum(1))])
    cols = np.concatenate([ds.inter_feat[iid_f].numpy(), lists[nz]])
    shape = (ds.user_num, ds.item_num)
    valid_hist = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=shape)
    vds = valid_data._dataset
    extra = sp.csr_matrix(
        (np.ones(len(vds), dtype=np.float32), (vds.inter_feat[uid_f].numpy(), vds.inter_feat[iid_f].numpy())),
        shape=shape)
    valid_hist.data[:] = 1
    test_hist = valid_hist + extra
    test_hist.data[:] = 1
    return valid_hist, test_hist


@contextlib.contextmanager
def single_process(config):
    """Let RecBole code run as in one process (``single_spec`` True) inside the block, then restore it.

    Used where the project handles distribution itself: the DDP wrapper (RecBole's is GPU-only), the
    unsharded evaluation loaders and evaluation without averaging over ranks.
    """
    before = config["single_spec"]
    config["single_spec"] = True
    try:
        yield not before
    finally:
        config["single_spec"] = before


def best_epoch(curve):
    """1-based epoch of the best validation score of a training curve, or None.

    On ties the latest epoch wins, as in RecBole's early stopping (``value >= best``), whose checkpoint is the one
    tested: scores are rounded to ``metric_decimal_place`` digits, so ties are common on a plateau.
    """
    if not curve:
        return None
    top = max(e["valid_score"] for e in curve)
    return 1 + max(e["epoch"] for e in curve if e["valid_score"] == top)


def run_timings(curve):
    """Seconds of a whole run, over every process that trained it, from its training curve.

    ``epochs_timed`` counts the curve's entries that carry seconds (a run resumed from a checkpoint written before
    the curve kept them has fewer than its epochs); ``None`` when none do."""
    timed = [e for e in curve or [] if e.get("train_s") is not None]
    if not timed:
        return None
    train = sum(e["train_s"] for e in timed)
    valid = sum(e.get("valid_s") or 0.0 for e in timed)
    return {"epochs_timed": len(timed), "train_s": round(train, 3), "valid_s": round(valid, 3),
            "mean_epoch_train_s": round(train / len(timed), 3)}


class _TimeLimit(Exception):
    """Raised after an epoch when the next one would end past ``time_limit``."""


def cpu_model():
    """The CPU's model name from /proc/cpuinfo ("unknown CPU" where there is none)."""
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "unknown CPU")
    return "unknown CPU"


def hardware(device):
    """One line naming what trained: the GPU, or the CPU model and its logical cores."""
    if getattr(device, "type", str(device)) == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda}), {os.cpu_count()} CPU cores"
    return f"{cpu_model()}, {os.cpu_count()} logical cores, {torch.get_num_threads()} torch threads"


def new_run_id():
    """``<date>-<time>-<6 hex>``: unique per run, also for runs started in the same second."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


class S4RecTrainer(Trainer):
    """Trainer for every model the project runs (plugin or RecBole's own)."""

    def __init__(self, config, model, run_id=None, label=None):
        os.makedirs(config["checkpoint_dir"], exist_ok=True)  # before RecBole's racy check-then-create
        # RecBole wraps the model in DistributedDataParallel with device_ids=[local_rank], which only works
        # on a GPU; build the wrapper here for CPU (gloo) and GPU (NCCL) alike.
        with single_process(config) as distributed:
            super().__init__(config, model)
        if distributed:
            cuda = self.device.type == "cuda"
            self.distributed_model = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[config["local_rank"]] if cuda else None)
        # RecBole names checkpoints <model>-<time to the second>.pth: two runs started in the same second
        # would overwrite each other. Add the dataset and a unique run id.
        self.run_id = run_id or new_run_id()
        # the name the run was asked for (a variant such as S4Rec-kmeans; config["model"] is its class): kept in
        # checkpoints so that --evaluate names its result after the variant, not the class
        self.label = label or config["model"]
        self.saved_model_file = os.path.join(self.checkpoint_dir, f"{config['model']}-{config['dataset']}-{self.run_id}.pth")
        self.mask_history = bool(config["mask_history"])
        self.epoch_times = []  # training seconds of each epoch of this process
        # one {"epoch", "train_loss" (mean per batch; a list for multi-part losses), "valid_score", "train_s",
        # "valid_s"} per evaluated epoch, kept across --resume: the training curve of the result file, and with
        # its seconds (training since the previous evaluation, then validation) the timings of the whole run
        self.curve = []
        self._train_s = 0.0
        self._train_end = None
        self._last_loss = None
        self._history = None
        self.stopped = None  # after fit: "early_stopping", "epochs" or "time_limit"

    # ----------------------------------------------------------------- checkpoints
    @property
    def last_model_file(self):
        """Where the state after the latest finished epoch goes (for ``--resume``)."""
        return self.saved_model_file[:-len(".pth")] + ".last.pth"

    def _state(self, epoch):
        return {
            "model": self.config["model"],
            "label": self.label,
            "dataset": self.config["dataset"],
            # what the user set (project YAML, config files, command line): enough to rebuild the config
            "settings": plain(self.config.external_config_dict),
            "config": plain(self.config.final_config_dict),
            "epoch": epoch,
            "cur_step": self.cur_step,
            "best_valid_score": float(self.best_valid_score),
            "state_dict": self.model.state_dict(),
            "other_parameter": self.model.other_parameter(),
            "optimizer": self.optimizer.state_dict(),
            "curve": self.curve,
        }

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        if not self.config["single_spec"] and self.config["local_rank"] != 0:
            return
        saved_model_file = kwargs.pop("saved_model_file", self.saved_model_file)
        atomic_torch_save(self._state(epoch), saved_model_file)
        if verbose:
            self.logger.info(set_color("Saving current", "blue") + f": {saved_model_file}")

    def _save_last(self, epoch, train_data):
        """Everything needed to continue after ``epoch`` exactly as if never interrupted."""
        if not self.config["single_spec"] and self.config["local_rank"] != 0:
            return
        np_state = np.random.get_state()
        state = dict(self._state(epoch), best_model_file=self.saved_model_file,
                     best_valid_result=plain(dict(self.best_valid_result or {})),
                     rng={"torch": torch.get_rng_state(),
                          "numpy": [str(np_state[0]), torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                                    int(np_state[3]), float(np_state[4])],
                          "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
                          "train_loader": train_data.generator.get_state()})
        atomic_torch_save(state, self.last_model_file)

    def resume_checkpoint(self, resume_file):
        """Continue from a checkpoint: a ``.last.pth`` restores the random state too (exact resume)."""
        resume_file = str(resume_file)
        checkpoint = load_checkpoint(resume_file, map_location=self.device)
        if checkpoint["model"].lower() != self.config["model"].lower():
            raise ConfigError(f"--resume={resume_file}: checkpoint of model {checkpoint['model']}, "
                              f"expected one of {self.config['model']}")
        best = checkpoint.get("best_model_file", resume_file)
        beside = os.path.join(os.path.dirname(resume_file), os.path.basename(best))
        if not os.path.isfile(best) and os.path.isfile(beside):  # the pair was moved (another folder or machine)
            best = beside
        if not os.path.isfile(best):
            raise ConfigError(f"--resume={resume_file}: its best checkpoint {best} is missing; expected it there "
                              "or beside the .last.pth")
        self.saved_model_file = best
        self.start_epoch = checkpoint["epoch"] + 1
        self.cur_step = checkpoint["cur_step"]
        self.best_valid_score = checkpoint["best_valid_score"]
        self.best_valid_result = checkpoint.get("best_valid_result")
        self.model.load_state_dict(checkpoint["state_dict"])
        self.model.load_other_parameter(checkpoint.get("other_parameter"))
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.curve = list(checkpoint.get("curve") or [])
        rng = checkpoint.get("rng")
        if rng is not None:
            torch.set_rng_state(rng["torch"])
            np.random.set_state((rng["numpy"][0], rng["numpy"][1].numpy().astype(np.uint32), *rng["numpy"][2:]))
            random.setstate((rng["python"][0], tuple(rng["python"][1]), rng["python"][2]))
            self._train_loader_state = rng["train_loader"]
        self.logger.info(f"Checkpoint loaded. Resume training from epoch {self.start_epoch}")

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        state = getattr(self, "_train_loader_state", None)
        if state is not None:
            train_data.generator.set_state(state)
            self._train_loader_state = None

        limit = float(self.config["time_limit"] or 0)
        start, epochs = time.time(), [0]

        def after_epoch(epoch_idx, valid_score):
            self.curve.append({"epoch": epoch_idx, "train_loss": self._last_loss, "valid_score": float(valid_score),
                               "train_s": round(self._train_s, 3), "valid_s": round(time.time() - self._train_end, 3)})
            self._train_s = 0.0
            if saved:
                self._save_last(epoch_idx, train_data)
            if callback_fn:
                callback_fn(epoch_idx, valid_score)
            epochs[0] += 1
            elapsed = time.time() - start
            stopping = self.cur_step > self.stopping_step or epoch_idx + 1 >= self.epochs
            if limit and not stopping and self._any_rank(elapsed * (epochs[0] + 1) / epochs[0] > limit):
                self.logger.info(f"time_limit={limit:g} s: stopping after epoch {epoch_idx} ({elapsed:.0f} s of fit, "
                                 f"{elapsed / epochs[0]:.0f} s per epoch)")
                raise _TimeLimit

        try:
            result = super().fit(train_data, valid_data, verbose=verbose, saved=saved, show_progress=show_progress,
                                 callback_fn=after_epoch)
        except _TimeLimit:
            self.stopped = "time_limit"
            return self.best_valid_score, self.best_valid_result
        self.stopped = "early_stopping" if self.cur_step > self.stopping_step else "epochs"
        return result

    def _any_rank(self, flag):
        """``flag`` of this process, or with several processes whether any rank has it (all ranks agree)."""
        if self.config["single_spec"]:
            return flag
        import torch.distributed as dist

        t = torch.tensor([int(flag)], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    # ----------------------------------------------------------------- training
    def _checked_loss(self, epoch_idx):
        """``calculate_loss`` that stops at the first NaN/inf part, naming it, the epoch and the batch."""
        names = getattr(self.model, "loss_names", None)
        batch = [0]

        def loss_func(interaction):
            losses = self.model.calculate_loss(interaction)
            parts = losses if isinstance(losses, tuple) else (losses,)
            for i, part in enumerate(parts):
                if not torch.isfinite(part).all():
                    name = names[i] if names and i < len(names) else f"part {i + 1}"
                    kept = [f"{what} {path}" for what, path in (("best", self.saved_model_file),
                                                                 ("resumable (--resume)", self.last_model_file))
                            if os.path.isfile(path)]
                    raise FloatingPointError(
                        f"loss {name} is {part.item()} at epoch {epoch_idx}, batch {batch[0]}; training stopped; "
                        + ("last good checkpoints kept: " + ", ".join(kept) if kept else "no checkpoint written yet"))
            batch[0] += 1
            return losses

        return loss_func

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        hook = getattr(self.model, "on_epoch_start", None)
        start = time.time()
        if hook is not None:
            hook(self, train_data, epoch_idx)
        loss = super()._train_epoch(train_data, epoch_idx, loss_func=loss_func or self._checked_loss(epoch_idx),
                                    show_progress=show_progress)
        self._train_end = time.time()
        self.epoch_times.append(self._train_end - start)
        self._train_s += self.epoch_times[-1]
        batches = max(len(train_data), 1)
        self._last_loss = ([round(float(x) / batches, 6) for x in loss] if isinstance(loss, tuple)
                           else round(float(loss) / batches, 6))
        return loss

    # ----------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if not eval_data:
            return
        if load_best_model:
            checkpoint_file = model_file or self.saved_model_file
            checkpoint = load_checkpoint(checkpoint_file, map_location=self.device)
            self.model.load_state_dict(checkpoint["state_dict"])
            self.model.load_other_parameter(checkpoint.get("other_parameter"))
            self.logger.info(f"Loading model structure and parameters from {checkpoint_file}")
        self._history = self._history_of(eval_data)
        # With several processes every rank evaluates all users (the evaluation loaders are not sharded,
        # see runner.prepare_data): the result is the single-process one on every rank, so RecBole's
        # averaging over ranks is skipped and early stopping agrees everywhere.
        try:
            with single_process(self.config):
                return super().evaluate(eval_data, load_best_model=False, show_progress=show_progress)
        finally:
            self._history = None

    def _history_of(self, eval_data):
        """The seen-items matrix to mask for ``eval_data`` (None when ``mask_history`` is off)."""
        if not self.mask_history:
            return None
        history = getattr(eval_data, "history_matrix", None)
        if history is None:
            raise ValueError("mask_history is on but the evaluation data has no history_matrix; "
                             "build the data with s4rec_recbole.runner.prepare_data")
        return history

    @torch.no_grad()
    def user_ranks(self, eval_data):
        """Per evaluated user: ``(user ids [N], 0-based rank of the target [N], cluster [N] or None)``.

        Ranks come from the same scores (and history masking) as :meth:`evaluate`; a tie counts in the
        user's favour. ``cluster`` is the model's ``assign_clusters`` of the input sequence, if it has one.
        """
        self.model.eval()
        self._history = self._history_of(eval_data)
        assign = getattr(self.model, "assign_clusters", None)
        users, ranks, clusters = [], [], []
        try:
            for batched in eval_data:
                interaction, scores, _, positive_i = self._full_sort_batch_eval(batched)
                target = scores.gather(1, positive_i.to(scores.device).view(-1, 1))
                ranks.append((scores > target).sum(1).cpu())
                users.append(interaction[self.config["USER_ID_FIELD"]].cpu())
                if assign is not None:
                    seq, seq_len = interaction[self.model.ITEM_SEQ], interaction[self.model.ITEM_SEQ_LEN]
                    clusters.append(assign(seq.to(self.device), seq_len.to(self.device)).cpu())
        finally:
            self._history = None
        return (torch.cat(users).numpy(), torch.cat(ranks).numpy(),
                torch.cat(clusters).numpy() if clusters else None)

    def _full_sort_batch_eval(self, batched_data):
        interaction, scores, positive_u, positive_i = super()._full_sort_batch_eval(batched_data)
        if self._history is not None:
            users = interaction[self.config["USER_ID_FIELD"]].cpu().numpy()
            seen = self._history[users].tocoo()
            scores[torch.from_numpy(seen.row).long(), torch.from_numpy(seen.col).long()] = -np.inf
        return interaction, scores, positive_u, positive_i
