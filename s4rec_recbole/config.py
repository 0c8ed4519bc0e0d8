"""RecBole configuration with the project's YAML files, strict key checking and no argv parsing.

Precedence (lowest first), as RecBole's: RecBole's own defaults < ``properties/overall.yaml`` <
``properties/model/<model>.yaml`` < ``properties/dataset/<dataset>.yaml`` (every model on that dataset) <
``properties/dataset/<dataset>/<model>.yaml`` (one model on that dataset, e.g. its tuned hyperparameters; a
variant's own ``<variant>.yaml`` there replaces it) <
user config files < ``config_dict`` (the runner's ``--key=value`` overrides).
"""
import ast
import difflib
import math
from pathlib import Path

import torch
import yaml
from recbole.config import Config
from recbole.utils import argument_list

PROPERTIES = Path(__file__).resolve().parents[1] / "properties"
DATASET_DIR = Path(__file__).resolve().parents[1] / "dataset"

# Keys that the project adds to RecBole's (each is documented in properties/overall.yaml).
PROJECT_KEYS = {"mask_history", "head_ratio"}
# RecBole's distributed settings (set by the runner's --nproc/--world_size/--offset/--ip/--port; local_rank
# per spawned process). RecBole reads them but has no defaults for them.
DISTRIBUTED_KEYS = {"nproc", "world_size", "offset", "ip", "port", "local_rank"}


def interval(low, high, open_low=False, open_high=False):
    """``[low, high)``-style text of an accepted range (an infinite upper bound is always open)."""
    return f"{'(' if open_low else '['}{low:g}, {high:g}{')' if open_high or math.isinf(high) else ']'}"


class ConfigError(ValueError):
    """A configuration key or value that cannot be used; the message says what is accepted."""


def parse_value(text: str):
    """Turn a command-line string into a Python value: literals, true/false/none, else the string."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null", "~"):
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def read_yaml(path) -> dict:
    """Read a YAML mapping with RecBole's loader (which reads ``1e-3`` as a float)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path}: no such file")
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = yaml.load(f.read(), Loader=Config._build_yaml_loader(None))
    except yaml.YAMLError as e:
        first = str(e).splitlines()[0] if str(e) else "syntax error"
        raise ConfigError(f"config file {path}: not valid YAML ({first})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping of key: value, got {type(data).__name__}")
    bad = [k for k in data if not isinstance(k, str) or not k]
    if bad:
        bad = bad[0]
        raise ConfigError(f"config file {path}: key {bad!r} is not a name; expected key: value lines with text keys")
    return data


def project_files(model_name: str, dataset: str):
    """The project's YAML files of defaults for ``model_name`` on ``dataset``, lowest precedence first."""
    files = [PROPERTIES / "overall.yaml", PROPERTIES / "model" / f"{model_name}.yaml",
             PROPERTIES / "dataset" / f"{dataset}.yaml"]
    return [f for f in files if f.is_file()]


def model_dataset_files(model_name: str, dataset: str, variant: str = None):
    """``properties/dataset/<dataset>/<model>.yaml`` if it exists: one model's settings on one dataset (its tuned
    hyperparameters). For a variant (``S4Rec-SR``) its own ``<variant>.yaml`` there, if it exists, replaces the
    model's. Applied after the defaults and checked as a user's file (every key must be a known one)."""
    for name in ([variant] if variant else []) + [model_name]:
        f = PROPERTIES / "dataset" / dataset / f"{name}.yaml"
        if f.is_file():
            return [f]
    return []


class S4RecConfig(Config):
    """:class:`recbole.config.Config` fed by the project's files; unknown keys are an error.

    Args:
        model: model class (plugin) or RecBole model name.
        dataset: dataset name.
        config_file_list: user YAML files, applied after the project's own.
        config_dict: overrides, applied last.
        variant: the variant name the model runs as (``S4Rec-SR``), for its own per-dataset file.
    """

    def __init__(self, model, dataset, config_file_list=None, config_dict=None, variant=None):
        name = model if isinstance(model, str) else model.__name__
        user_files = model_dataset_files(name, dataset, variant) + [Path(f) for f in (config_file_list or [])]
        own = project_files(name, dataset)
        user_keys = {}
        for f in user_files:
            user_keys.update({k: str(f) for k in read_yaml(f)})
        for k in config_dict or {}:
            user_keys[k] = "command line"
        config_dict = dict(config_dict or {})
        try:
            super().__init__(model=model, dataset=dataset,
                             config_file_list=[str(f) for f in own + user_files], config_dict=config_dict)
        except (TypeError, ValueError, KeyError, AttributeError, IndexError, NotImplementedError) as e:
            if isinstance(e, ConfigError) or not user_keys:
                raise
            given = ", ".join(f"{k}={(config_dict.get(k, '(file ' + user_keys[k] + ')'))!r}" for k in sorted(user_keys))
            raise ConfigError(f"RecBole rejected the configuration ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else 'no message'}); given: {given}") from None
        known = set(self.internal_config_dict) | PROJECT_KEYS | DISTRIBUTED_KEYS | {"model", "dataset", "config_files"}
        for f in own:
            known |= set(read_yaml(f))
        for group in ("general_arguments", "training_arguments", "evaluation_arguments", "dataset_arguments"):
            known |= set(getattr(argument_list, group))
        self.known_keys = known
        unknown = sorted(k for k in user_keys if k not in known)
        if unknown:
            k = unknown[0]
            close = difflib.get_close_matches(k, known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(f"unknown config key {k!r} (from {user_keys[k]}) for model {name}; {hint}"
                              f"accepted keys: {', '.join(sorted(known))}")
        self._check_types(user_keys)
        self._check_ranges()

    # key -> (lowest, highest, lowest excluded, highest excluded) of the training/protocol settings
    RANGES = {
        "epochs": (0, math.inf, False, True), "train_batch_size": (1, math.inf, False, True),
        "eval_batch_size": (1, math.inf, False, True), "learning_rate": (0, math.inf, True, True),
        "stopping_step": (1, math.inf, False, True), "eval_step": (1, math.inf, False, True),
        "MAX_ITEM_LIST_LENGTH": (2, math.inf, False, True), "length_bucket_pool": (0, math.inf, False, True),
        "head_ratio": (0, 1, True, True), "weight_decay": (0, math.inf, False, True),
        "time_limit": (0, math.inf, False, True),
    }

    def _check_ranges(self):
        """One-line errors for values of the right type but outside their range (RecBole checks none)."""
        for key, (low, high, open_low, open_high) in self.RANGES.items():
            value = self.final_config_dict.get(key)
            if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            ok = math.isfinite(value) or (high == math.inf and value == math.inf and not open_high)
            ok = ok and (value > low if open_low else value >= low) and (value < high if open_high else value <= high)
            if not ok:
                raise ConfigError(f"{key}={value!r}: expected a number in {interval(low, high, open_low, open_high)}")

    def _init_device(self):
        """RecBole's device set-up, with distributed training on CPU too.

        RecBole 1.2.1 always starts NCCL on ``cuda:<local_rank>``. Here the backend follows the device:
        NCCL when the process has a GPU, gloo on CPU. The process group is joined at
        ``tcp://ip:port`` with global rank ``offset + local_rank`` of ``world_size``.
        """
        cfg = self.final_config_dict
        local_rank = cfg.pop("local_rank", None)
        super()._init_device()  # single-process set-up: gpu_id, CUDA_VISIBLE_DEVICES, device
        if local_rank is None:
            return
        import torch.distributed as dist

        cuda = cfg["device"].type == "cuda"
        rank = local_rank + int(cfg.get("offset") or 0)
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if cuda else "gloo", rank=rank, world_size=int(cfg["world_size"]),
                                    init_method=f"tcp://{cfg.get('ip') or 'localhost'}:{cfg.get('port') or 5678}")
        cfg.update(local_rank=local_rank, single_spec=False,
                   device=torch.device("cuda", local_rank) if cuda else torch.device("cpu"))
        if cuda:
            torch.cuda.set_device(local_rank)
        if local_rank != 0:
            cfg.update(state="error", show_progress=False, verbose=False)

    def _load_cmd_line(self):
        # The runner parses sys.argv itself and passes the result as config_dict.
        return {}

    def _load_variable_config_dict(self, config_dict):
        # RecBole eval()s every string value here; ours are already typed by parse_value.
        return dict(config_dict or {})

    def _check_types(self, user_keys):
        """Reject a value whose type cannot stand where RecBole's/our default has a number or a flag."""
        defaults = dict(self.internal_config_dict)
        for f in project_files(self.model, self.dataset):
            defaults.update(read_yaml(f))
        for key, origin in user_keys.items():
            default, value = defaults.get(key), self.final_config_dict.get(key)
            if default is None or value is None:
                continue
            if isinstance(default, bool):
                ok = isinstance(value, bool)
                want = "true or false"
            elif isinstance(default, (int, float)):
                kinds = int if isinstance(default, int) else (int, float)
                ok = isinstance(value, kinds) and not isinstance(value, bool)
                want = "an integer" if isinstance(default, int) else "a number"
            else:
                continue
            if not ok:
                raise ConfigError(f"bad value for {key!r} (from {origin}): {value!r}; expected {want}")
