"""optim_nb on more than one process: DDP, ZeroRedundancyOptimizer and FSDP2, against torch.optim.

Two local processes (gloo over 127.0.0.1, CPU) train the same small network with torch.optim.X
and with optim_nb.X under each wrapper; the parameters (and the optimizer state) must be the
same bit for bit. The workers are this file run as a script, started once for the whole module
and bounded in time; each test reads the results for one optimizer and one wrapper.
"""
import datetime
import os
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pytest
import torch

from optim_nb.testing import assert_same as same, batches, small_model
from registry_options import ENTRIES, fitting  # tests/ is on sys.path, for a script too

WORLD = 2
TIMEOUT_S = 150       # the whole run of both workers, then they are killed
STEPS = 4
MODES = ["DDP", "ZeRO", "FSDP2"]


# ------------------------------------------------------------------ the workers

def _train(case, impl, mode, rank):
    "Train on this rank's shard of the data; return full parameters and what the mode exposes."
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP
    from torch.distributed.optim import ZeroRedundancyOptimizer
    from torch.distributed.fsdp import fully_shard

    cls = case.cls if impl == "ours" else case.reference
    ready = case.ready  # training mode for an optimizer with train()/eval() modes (schedule-free)
    model = small_model()
    taken = lambda params: fitting(case, params)  # noqa: E731 - a '2-D' entry gets the matrices only
    extra = {}
    if mode == "DDP":
        net = DDP(model)
        opt = ready(cls(taken(net.parameters()), **case.options))
    elif mode == "ZeRO":
        net = DDP(model)
        opt = ZeroRedundancyOptimizer(taken(net.parameters()), optimizer_class=cls, **case.options)
        extra["local params"] = sum(len(g["params"]) for g in opt.optim.param_groups)
        if case.train_eval:  # ZeRO copies its own groups' keys into the shard's optimizer at each step,
            ready(opt.optim)  # so the mode is set in both (no state yet: train() only sets the flag)
            for group in opt.param_groups:
                group["train_mode"] = True
        assert type(opt.optim) is cls
    else:
        for layer in (model[0], model[2]):
            fully_shard(layer)
        net = fully_shard(model)
        opt = ready(cls(taken(net.parameters()), **case.options))
        extra["param type"] = type(next(net.parameters())).__name__
    for x, y in batches(STEPS, seed=10 + rank):  # every rank its own data
        opt.zero_grad()
        torch.nn.functional.mse_loss(net(x), y).backward()
        opt.step()
    if mode == "FSDP2":  # the state is created like the parameters: sharded (torch's is)
        extra["state types"] = sorted({type(v).__name__ for s in opt.state.values() for v in s.values()
                                       if isinstance(v, torch.Tensor) and v.dim()})
    params = [p.full_tensor() if hasattr(p, "full_tensor") else p for p in model.parameters()]
    if mode == "ZeRO":
        opt.consolidate_state_dict(to=0)
        state = opt.state_dict() if rank == 0 else None
    elif mode == "FSDP2":  # the state is sharded like the parameters: gather it
        state = {i: {k: v.full_tensor() if hasattr(v, "full_tensor") else v for k, v in s.items()}
                 for i, s in opt.state_dict()["state"].items()}
    else:
        state = opt.state_dict()
    dist.barrier()
    return [p.detach().clone() for p in params], state, extra


def worker(rank: int, port: int, out: str):
    import torch.distributed as dist
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=datetime.timedelta(seconds=60))
    results = {}
    for case in ENTRIES:
        for mode in MODES:
            for impl in ("theirs", "ours"):
                try:
                    results[case.name, mode, impl] = ("ok", *_train(case, impl, mode, rank))
                except Exception:  # noqa: BLE001 - reported by the test of this case
                    results[case.name, mode, impl] = ("error", traceback.format_exc())
                    dist.barrier()  # both ranks fail alike (same code, same classes)
    torch.save(results, Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()


# ------------------------------------------------------------------ the tests

def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("distributed")
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    started = time.monotonic()
    procs = [subprocess.Popen([sys.executable, __file__, str(rank), str(port), str(out)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank in range(WORLD)]
    logs = []
    try:
        for p in procs:
            left = max(1.0, TIMEOUT_S - (time.monotonic() - started))
            logs.append(p.communicate(timeout=left)[0])
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail(f"the distributed workers did not finish in {TIMEOUT_S} s")
    for rank, (p, log) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"rank {rank} exited with {p.returncode}:\n{log[-3000:]}"
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def _failed_like_torch(runs, case, mode) -> bool:
    "Did torch's class fail under `mode` on every rank, and ours with the same error (its last line)?"
    last = lambda result: result[1].strip().splitlines()[-1]  # noqa: E731 - the exception and its message
    theirs = [r[case.name, mode, "theirs"] for r in runs]
    if any(t[0] == "ok" for t in theirs):
        return False
    for rank, (t, o) in enumerate(zip(theirs, (r[case.name, mode, "ours"] for r in runs))):
        assert o[0] == "error" and last(o) == last(t), f"rank {rank}: torch failed with {last(t)!r}, ours: {o[1]}"
    return True


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", ENTRIES, ids=str)
def test_same_parameters_as_torch_on_two_processes(runs, case, mode):
    "The same parameters and state; or, where torch's class fails under the wrapper, the same error."
    start = [p.detach() for p in small_model().parameters()]
    if _failed_like_torch(runs, case, mode):  # Adafactor under FSDP2: torch's in-place norm on a DTensor
        return
    for rank, results in enumerate(runs):
        theirs, ours = results[case.name, mode, "theirs"], results[case.name, mode, "ours"]
        assert theirs[0] == "ok", f"torch.optim.{case.name} under {mode} failed on rank {rank}:\n{theirs[1]}"
        assert ours[0] == "ok", f"optim_nb.{case.name} under {mode} failed on rank {rank}:\n{ours[1]}"
        same(ours[1], theirs[1], f"rank {rank}, {mode}: parameters")
        same(ours[2], theirs[2], f"rank {rank}, {mode}: optimizer state")
        same(ours[3], theirs[3], f"rank {rank}, {mode}")
        trained = {id(q) for q in fitting(case, start)}  # a '2-D' entry trains the matrices only
        assert all(not torch.equal(p, q) for p, q in zip(ours[1], start) if id(q) in trained), "training did not move"
    # the ranks agree with each other: gradients were averaged, or shards were gathered
    same(runs[0][case.name, mode, "ours"][1], runs[1][case.name, mode, "ours"][1], "rank 0 vs rank 1")


def test_the_wrappers_really_distribute(runs):
    "ZeRO keeps a shard of the parameters on each rank; FSDP2 makes parameters and state DTensors."
    results = runs[0]
    local = [r[case.name, "ZeRO", "ours"][3]["local params"] for r in runs for case in ENTRIES[:1]]
    assert sum(local) == 4 and all(0 < n < 4 for n in local), local
    for case in ENTRIES:
        if _failed_like_torch(runs, case, "FSDP2"):
            continue
        extra = results[case.name, "FSDP2", "ours"][3]
        assert extra["param type"] == "DTensor" and extra["state types"] == ["DTensor"], extra


if __name__ == "__main__":
    worker(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
