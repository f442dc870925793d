"""Save the EMA weights of an unfinished consistency-training checkpoint into a separate zoo folder, so that
code that needs fmnist/consistency (lecture 09, CMAP's tests of the notebook) can be developed while the
real run trains. Never the package zoo: the weights are marked provisional in their command.

    python scripts/provisional_consistency.py build/checkpoints/fmnist__consistency_KEY.pt build/zoo_provisional
    ADVLAB_ZOO=build/zoo_provisional jupyter lab notebooks/
"""
import json
import sys

import torch

from advlab import zoo
from advlab.purifiers.cmap.model import ConsistencyModel


def main(ckpt: str, root: str) -> None:
    if root.rstrip("/").endswith("advlab/zoo"):
        raise SystemExit("root: never the package zoo")
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    entry = zoo.REGISTRY["fmnist/consistency"]
    model = ConsistencyModel(1, **entry.arch_kwargs)
    model.load_state_dict({k.removeprefix("module."): v for k, v in state["ema"].items() if k.startswith("module.")})
    it = json.loads(state["meta"])["iter"]
    zoo.save("fmnist/consistency", model.eval(), dict(entry.arch_kwargs), {"iters_done": it},
             f"PROVISIONAL: EMA of {ckpt} at iteration {it}", root=root, device="cpu")
    print(f"saved the EMA at iteration {it} into {root}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
