"""Settings for the whole suite: tests/ and the chapters that nbval runs."""
import os

# Every test steps tiny tensors; on the shared 2-core machines, intra-op threads only contend
# (one 20-step run took 0.8 s instead of 4 ms under load). nbval's kernels inherit this.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
