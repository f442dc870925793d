"""`advlab.train` is advlab.training.loop under its first name (lectures and scripts import it so).

The module object is the same, so monkeypatching `advlab.train.X` patches the loop itself.
"""
import sys

from advlab.training import loop as _loop

sys.modules[__name__] = _loop
