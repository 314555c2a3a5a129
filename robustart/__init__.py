"""robustart: a robustness benchmark for image classifiers.

From Python, :func:`evaluate` scores any model on any data under any noise and returns :class:`Results`; the
command line (``python -m robustart``) runs the same engine from Hydra configs. The pillars import as
``robustart.model_zoo``, ``robustart.noise``, ``robustart.training`` and ``robustart.evaluation``, each usable
without Hydra.
"""

__version__ = "0.1.0"
__all__ = ["Results", "UserError", "__version__", "evaluate"]


def __getattr__(name: str):
    # imported on first use, so that `import robustart` (and the results-only tools) stay free of torch
    if name in ("evaluate", "Results"):
        from robustart import api

        return getattr(api, name)
    if name == "UserError":
        from robustart.errors import UserError

        return UserError
    raise AttributeError(f"module 'robustart' has no attribute {name!r}")
