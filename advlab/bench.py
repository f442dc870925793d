"""`advlab.bench` is advlab.evaluation.bench under its first name (the same module object)."""
import sys

from advlab.evaluation import bench as _bench

sys.modules[__name__] = _bench
