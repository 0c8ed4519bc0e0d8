"""Plugin models and name resolution (plugin models first, then RecBole's sequential models)."""
import inspect

import recbole.model.sequential_recommender as recbole_sequential
from recbole.model.abstract_recommender import SequentialRecommender

from s4rec_recbole.config import ConfigError

# name -> class of every model this package adds; filled by the imports below.
PLUGIN_MODELS = {}
# Named variants: name -> (model, settings); e.g. the paper's ablation row "with K-means".
VARIANTS = {"S4Rec-kmeans": ("S4Rec", {"clustering": "kmeans"})}


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
    raise ConfigError(f"unknown model {model!r}; accepted: {', '.join(accepted_models())}")


# Importing the plugin models registers them.
from s4rec_recbole.model.s4rec import S4Rec  # noqa: E402,F401
from s4rec_recbole.model.cl4srec import CL4SRec  # noqa: E402,F401
from s4rec_recbole.model.iclrec import ICLRec  # noqa: E402,F401
