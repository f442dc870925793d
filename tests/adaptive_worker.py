"""Run by tests/test_adaptive.py under `python -m torch.distributed.run --nproc_per_node 2`: the
adaptive evaluation of a toy stochastic defense, its images sharded over the ranks (gloo, CPU);
rank 0 writes the merged result to OUT/result.json. Arguments: OUT (holding inputs.pt from the test)."""
import json
import sys

import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from test_adaptive import NoisyPurifier, linear_classifier  # noqa: E402

from advlab.evaluation import shard  # noqa: E402
from advlab.evaluation.adaptive import adaptive_evaluation  # noqa: E402

torch.set_num_threads(1)
out = sys.argv[1]
inputs = torch.load(f"{out}/inputs.pt")
clf = linear_classifier(inputs["weights"])
rank, world = shard.init("cpu")
res = adaptive_evaluation(NoisyPurifier(clf).eval(), inputs["x"], inputs["y"], eps=0.1, profile="quick",
                          chunk=8, state_dir=f"{out}/state", progress=False, speed_n=0)
if rank == 0:
    with open(f"{out}/result.json", "w") as f:
        json.dump(res, f)
print(f"rank {rank} of {world}: headline {res['headline']['acc']:.3f}", flush=True)
torch.distributed.destroy_process_group()
