"""Make RecBole 1.2.1 usable on today's stack.

The package imports this module before anything else (``s4rec_recbole/__init__.py``), so it is the
first to import RecBole's sequential models. Importing them runs
``torch.autograd.set_detect_anomaly(True)`` at module level (``recbole/model/sequential_recommender/
sine.py``), which slows every training step 1.4-1.8x for the whole process. Python imports a module
once, so importing it here first and switching anomaly detection off afterwards keeps it off for the
rest of the process, whatever is imported later.
"""
import warnings

import torch

import recbole.model.sequential_recommender as recbole_sequential  # noqa: F401  (runs sine.py once)

torch.autograd.set_detect_anomaly(False)

# RecBole 1.2.1's dataset code uses pandas idioms that pandas 2.x flags for pandas 3 (which requirements.txt
# excludes); the warnings say nothing a user can act on.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"recbole\.")
# hyperopt 0.2.5 and ray 2.6.3 import pkg_resources (kept by the setuptools<81 pin), which warns on import.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
