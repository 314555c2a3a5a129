"""robustart: a robustness benchmark for image classifiers.

The pipeline package: the Hydra entry point (``python -m robustart``), config schemas, run
orchestration, clean datasets and the results store. The pillars are the sibling packages
``model_zoo``, ``noise``, ``training`` and ``evaluation``, each usable without Hydra.
"""

__version__ = "0.1.0"
