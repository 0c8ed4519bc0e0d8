"""Plugin models and name resolution (plugin models first, then RecBole's sequential models)."""
import difflib
import inspect

import recbole.model.sequential_recommender as recbole_sequential
from recbole.model.abstract_recommender import SequentialRecommender

from s4rec_recbole.config import ConfigError
from s4rec_recbole.layers import use_fused_gelu

# name -> class of every model this package adds; filled by the imports below.
PLUGIN_MODELS = {}
# Named variants: name -> (model, settings): the rows of the paper's ablation (Table 3), and RecBole's untuned SASRec.
# CSD is the clustering + self-distillation module (L_clust, L_ckd), GR the gradient-reversal adversary (L_adv); SR is
# next-item prediction.
_NO_AUX = {"alpha": 0.0, "beta1": 0.0, "beta2": 0.0, "lambda": 0.0}
VARIANTS = {
    "S4Rec-SR": ("S4Rec", dict(_NO_AUX)),                                  # SR only: SASRec's loss and gradients
    "S4Rec-SR+CSD": ("S4Rec", {"beta1": 0.0, "lambda": 0.0}),              # SR + clustering + distillation
    "S4Rec-noCSD": ("S4Rec", {"alpha": 0.0, "beta2": 0.0}),                # S4Rec without clustering/distillation
    "S4Rec-noadv": ("S4Rec", {"lambda": 0.0}),                             # S4Rec without the adversary
    "S4Rec-kmeans": ("S4Rec", {"clustering": "kmeans"}),                   # K-means instead of online clustering
    # RecBole's SASRec with RecBole's own defaults (its properties/model/SASRec.yaml and lr 1e-3), also on a dataset
    # whose properties/dataset/<dataset>/SASRec.yaml makes a tuned SASRec the default: the untuned baseline row
    "SASRec-recbole": ("SASRec", {"n_layers": 2, "hidden_dropout_prob": 0.5, "attn_dropout_prob": 0.5,
                                  "learning_rate": 0.001}),
}


def split_variant(name):
    """``(model name, settings)`` of a variant name, or ``(name, {})``."""
    model, settings = VARIANTS.get(name, (name, {}))
    return model, dict(settings)


def register(cls):
    """Class decorator: make a plugin model available to the runner under its class name."""
    PLUGIN_MODELS[cls.__name__] = cls
    return cls


def recbole_sequential_models():
    """RecBole's own sequential models, name -> class."""
    return {name: obj for name, obj in vars(recbole_sequential).items()
            if inspect.isclass(obj) and issubclass(obj, SequentialRecommender) and obj is not SequentialRecommender}


def accepted_models():
    return sorted(PLUGIN_MODELS) + sorted(VARIANTS) + sorted(recbole_sequential_models())


def default_model():
    return "S4Rec" if "S4Rec" in PLUGIN_MODELS else "SASRec"


def build_model(config, dataset):
    """``config``'s model on ``dataset`` (RecBole's training dataset), on ``config["device"]``; with ``fused_gelu``
    its Transformer feed-forward layers use torch's exact GELU kernel (see :mod:`s4rec_recbole.layers.gelu`)."""
    model = config.model_class(config, dataset)
    if config["fused_gelu"]:
        use_fused_gelu(model)
    return model.to(config["device"])


def resolve_model(model):
    """Model class for a name (plugin models take precedence) or the class itself."""
    if inspect.isclass(model):
        return model
    model = split_variant(model)[0]
    if model in PLUGIN_MODELS:
        return PLUGIN_MODELS[model]
    recbole_models = recbole_sequential_models()
    if model in recbole_models:
        return recbole_models[model]
    accepted = accepted_models()
    close = difflib.get_close_matches(model, accepted, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ConfigError(f"unknown model {model!r}; {hint}accepted: {', '.join(accepted)}")


# Importing the plugin models registers them.
from s4rec_recbole.model.s4rec import S4Rec  # noqa: E402,F401
from s4rec_recbole.model.cl4srec import CL4SRec  # noqa: E402,F401
from s4rec_recbole.model.iclrec import ICLRec  # noqa: E402,F401
