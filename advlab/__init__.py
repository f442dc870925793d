"""advlab: adversarial attacks and generative purification defenses, as a course and a library.

    from advlab import data, zoo, attacks, defenses, evaluate, viz, checks

Submodules are imported on first use, so `import advlab` stays light and never imports Jupyter.
"""
import importlib

__version__ = "0.1.0"
_SUBMODULES = ("validate", "metrics", "data", "models", "train", "training", "zoo", "attacks", "generative",
               "purifiers", "defenses", "evaluate", "evaluation", "viz", "widgets", "checks", "course", "resources", "bench",
               "cli")
__all__ = list(_SUBMODULES)


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"advlab.{name}")
    raise AttributeError(f"module 'advlab' has no attribute {name!r}")
