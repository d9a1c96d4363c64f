"""Several processes, one run: torchrun's environment, gathered representations, summed gradients.

    torchrun --nproc_per_node 4 efficient_train.py ...                # one machine
    torchrun --nnodes 2 --node_rank R --nproc_per_node 8 \\
        --master_addr HOST --master_port 29500 efficient_train.py ...  # on each of two machines

Every process reads the same data and draws the same global batch (a
data.BatchSampler on the shared seed, world_size x per_device_train_batch_size
pairs); process r encodes the r-th equal share of it. `gather_reps` collects
the representations of every share, so each query meets every document of the
global batch as a negative. Each process then computes the same loss over the
whole global batch but back-propagates only into its own rows (the gathered
rows of the others are copies without gradient), so the sum of the processes'
gradients is the gradient of the global batch on one process: N processes with
batch B make the update one process makes with batch N x B.

That sum is one all-reduce per optimiser step (`all_reduce_grads`), after all
micro-batches, in place of DistributedDataParallel: GradCache back-propagates
chunk by chunk, and DDP would reduce after every backward pass. Only rank 0
writes logs, checkpoints and the model. Without torchrun (no WORLD_SIZE in the
environment) every function here is the one-process identity.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn

from data import Batch

# TODO(distributed): each process checks arguments, data and checkpoint on its own; one that fails
# alone (a file missing on one machine) leaves the others waiting in a collective until it times
# out, and resuming on several machines needs output_dir on a filesystem they all see.


def setup() -> tuple[torch.device, bool]:
    """Join torchrun's process group (NCCL on GPUs, gloo on CPUs) unless one is already up.

    Returns this process's device and whether this call created the group
    (and so should `teardown` it): a caller's own group is used, not replaced.
    """
    cuda = torch.cuda.is_available()
    if int(os.environ.get("WORLD_SIZE", "1")) == 1 and not dist.is_initialized():
        return torch.device("cuda" if cuda else "cpu"), False
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if dist.is_initialized():
        return device, False
    dist.init_process_group("nccl" if cuda else "gloo")
    return device, True


def teardown() -> None:
    """Leave the process group together, once rank 0 has written everything."""
    dist.barrier()
    dist.destroy_process_group()


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    """Whether this process writes: logs, checkpoints and the model are rank 0's alone."""
    return rank() == 0


def gather_reps(
    q_reps: torch.Tensor, d_reps: torch.Tensor, batch: Batch
) -> tuple[torch.Tensor, torch.Tensor]:
    """The representations of the whole global batch, in the order data.collate gives it.

    q_reps: [n, hidden] and d_reps: [n + negatives, hidden] of this process's
    share. Returns [world x n, hidden] queries and [world x n + all negatives,
    hidden] documents: every positive in share order, then every share's hard
    negatives, so row i of the documents is query i's positive. This process's
    rows are `q_reps` and `d_reps` themselves, so gradients flow back into them.
    """
    if world_size() == 1:
        return q_reps, d_reps
    n = len(batch)
    all_q = _gather_rows(q_reps, [n] * world_size())  # [world * n, hidden]
    all_positives = _gather_rows(d_reps[:n], [n] * world_size())
    all_negatives = _gather_rows(d_reps[n:], batch.negative_counts)
    return all_q, torch.cat([all_positives, all_negatives])


def _gather_rows(local: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """Concatenate each process's rows (process r has counts[r]); ours keep their graph."""
    longest = max(counts)
    if longest == 0:
        return local
    # all_gather needs equal shapes: pad every share to the longest
    padded = local.new_zeros(longest, local.size(1))
    padded[: len(local)] = local.detach()
    shares = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(shares, padded)
    shares = [share[:count] for share, count in zip(shares, counts, strict=True)]
    shares[rank()] = local
    return torch.cat(shares)


def all_reduce_grads(module: nn.Module) -> None:
    """Sum every gradient over the processes, in one flat all-reduce.

    Each process holds the gradient of the global loss through its own rows,
    so the sum (not the mean) is the global batch's gradient. The parameters
    with a gradient are the same on every process: all run the same forward.
    """
    if world_size() == 1:
        return
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    offset = 0
    for grad in grads:
        grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
        offset += grad.numel()


def broadcast_module(module: nn.Module) -> None:
    """Give every process rank 0's weights (a checkpoint may leave some randomly initialised)."""
    if world_size() == 1:
        return
    for tensor in [*module.parameters(), *module.buffers()]:
        dist.broadcast(tensor.data, src=0)


def sum_over_processes(*values: float) -> list[float]:
    """Each value summed over the processes (counts for logging)."""
    if world_size() == 1:
        return list(values)
    totals = torch.tensor(values, dtype=torch.float64, device=_collective_device())
    dist.all_reduce(totals)
    return totals.tolist()


def gather_objects(obj) -> list:
    """Every process's `obj`, by rank (the random states a checkpoint keeps)."""
    if world_size() == 1:
        return [obj]
    gathered = [None] * world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def _collective_device() -> torch.device:
    # NCCL moves only CUDA tensors, gloo CPU ones
    cuda = torch.cuda.is_available()
    return torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
