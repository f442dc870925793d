"""Run by tests/test_adversarial_training.py (gloo, CPU) and tests/test_cuda_paths.py (nccl, two GPUs) under
torchrun: PGD-AT of a SmallCNN (with BatchNorm) on synthetic data with DistributedDataParallel; each rank
writes its weights. Arguments: OUT METHOD [DEVICE, default cpu]."""
import sys

import torch
from safetensors.torch import save_file

from advlab.training.adversarial import ATConfig, adversarial_train

torch.set_num_threads(1)
out = sys.argv[1]
cfg = ATConfig(method=sys.argv[2], arch="cnn", dataset="synthetic", n_train=256, n_test=64, batch_size=64,
               epochs=2, steps=1, device=sys.argv[3] if len(sys.argv) > 3 else "cpu", monitor_n=32)
model, metrics = adversarial_train(cfg, progress=False)
rank = torch.distributed.get_rank()
save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, f"{out}/rank{rank}.safetensors")
print(f"rank {rank}: world {metrics['world_size']}, test acc {metrics['clean_acc']:.3f}")
torch.distributed.destroy_process_group()
