"""S4Rec (Wei et al., WWW 2024) and companion models as a RecBole 1.2.1 plugin."""
from s4rec_recbole import compat  # noqa: F401  (must run before anything else imports RecBole models)

__version__ = "0.1.0"


def load(checkpoint, data_path=None):
    """Load a trained checkpoint for recommendations: see :mod:`s4rec_recbole.recommend`."""
    from s4rec_recbole.recommend import load as _load

    return _load(checkpoint, data_path)
