"""Make RecBole 1.2.1 usable on today's stack.

This is the one place where the project imports RecBole's sequential models. Importing them runs
``torch.autograd.set_detect_anomaly(True)`` at module level (``recbole/model/sequential_recommender/
sine.py``), which slows every training step 1.4-1.8x for the whole process. Python imports a module
once, so importing it here first and switching anomaly detection off afterwards keeps it off for the
rest of the process, whatever is imported later.
"""
import torch

import recbole.model.sequential_recommender as recbole_sequential  # noqa: F401  (runs sine.py once)

torch.autograd.set_detect_anomaly(False)
