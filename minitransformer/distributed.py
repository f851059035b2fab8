"""Data-parallel training: one model per process, each process on its own rows of every batch.

What the reader will learn here: the three things that turn the one-process training loop of
``train.py`` into a data-parallel one, under ``torchrun --nproc_per_node=N -m minitransformer.train``.

1. ``torchrun`` starts N copies of the command and tells each one who it is through environment
   variables: ``RANK`` (0 .. N-1), ``LOCAL_RANK`` (which GPU of this machine it drives) and
   ``WORLD_SIZE`` (N). :func:`start` joins them into one process group: NCCL between GPUs, gloo
   between CPU processes.
2. Step ``s`` draws the same global batch from ``(seed, s)`` as a single process would, and rank
   ``r`` keeps rows ``r, r + N, r + 2N, ...`` of it (``data.get_batch(..., rank=r, world_size=N)``).
3. :class:`~torch.nn.parallel.DistributedDataParallel` averages the gradients over the ranks inside
   ``backward`` (an all-reduce per bucket of parameters, started as soon as a bucket's gradients
   are ready). The shards are equally large, so the mean of the per-rank mean losses is the mean
   loss of the global batch, and its gradient is the one a single process computes on the whole
   batch. Every rank then takes the same optimizer step from the same weights: the weights stay
   identical everywhere without ever being sent after the first broadcast.

The run is therefore the same whatever N is, to float rounding, and a checkpoint written with one
N resumes with another. Only rank 0 writes files and prints; every rank reads the checkpoint on
``--resume``, so ``--out`` must be a directory that all of them see (one machine, or a shared disk).

:func:`run_in_processes` is the same start for a Python function instead of a command line: it
spawns CPU processes joined by gloo and returns what each computed. The tests and notebook 11 use
it to run ring attention (``kernels/ring.py``) across processes on a machine without GPUs.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

_started_here = False  # whether start() created the process group (then stop() destroys it)


@dataclass(frozen=True)
class Ranks:
    rank: int = 0  # this process, 0 .. world_size - 1; rank 0 writes the files
    local_rank: int = 0  # this process among those of its machine: the GPU it drives
    world_size: int = 1  # number of processes training together

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, str(default))
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r}: expected an integer") from None


def get_ranks() -> Ranks:
    """Who this process is: from a process group that already exists, else from torchrun's
    environment variables; one process alone when neither is there."""
    if dist.is_available() and dist.is_initialized():
        rank = dist.get_rank()
        return Ranks(rank, _env_int("LOCAL_RANK", rank), dist.get_world_size())
    world_size = _env_int("WORLD_SIZE", 1)
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"RANK={rank}, WORLD_SIZE={world_size}: expected 0 <= RANK < WORLD_SIZE")
    return Ranks(rank, local_rank, world_size)


def device_for(device: torch.device, ranks: Ranks) -> torch.device:
    """With several processes, each drives its own GPU: ``cuda:LOCAL_RANK``, whatever index
    ``--device`` names."""
    if ranks.world_size > 1 and device.type == "cuda":
        n_gpus = torch.cuda.device_count()
        if ranks.local_rank >= n_gpus:
            raise ValueError(f"LOCAL_RANK {ranks.local_rank}: this machine has only {n_gpus} GPUs; "
                             f"start at most that many processes per machine")
        return torch.device("cuda", ranks.local_rank)
    return device


def start(device: torch.device, ranks: Ranks):
    """Join the other processes (nothing to do for one process, or if the caller already did)."""
    global _started_here
    if ranks.world_size == 1 or dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)  # NCCL uses the current device
    # torchrun's MASTER_ADDR and MASTER_PORT say where rank 0 waits for the others
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    _started_here = True


def stop():
    """Leave the process group if :func:`start` created it."""
    global _started_here
    if _started_here:
        dist.destroy_process_group()
        _started_here = False


def wrap(model: torch.nn.Module, device: torch.device, ranks: Ranks) -> torch.nn.Module:
    """The model that averages its gradients over the ranks; the model itself for one process.

    ``DistributedDataParallel`` shares the parameters of ``model`` (so an optimizer built on
    ``model`` steps it) and broadcasts rank 0's weights to the others when it is built.
    """
    if ranks.world_size == 1:
        return model
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def mean(x: torch.Tensor, ranks: Ranks) -> float:
    """The mean over the ranks of a scalar: of the per-rank losses, the loss of the global batch."""
    if ranks.world_size == 1:
        return x.item()
    total = x.detach().float().clone()
    dist.all_reduce(total)  # sum; ReduceOp.AVG exists for NCCL only
    return total.item() / ranks.world_size


# --------------------------------------------------------------------------------------------
# Several CPU processes from one Python session (tests, notebooks)
# --------------------------------------------------------------------------------------------
def run_in_processes(fn, args_per_rank, *, timeout_s: float = 120.0, **kwargs) -> list:
    """Run ``fn(*args_per_rank[r], **kwargs)`` as rank ``r`` of a gloo process group of
    ``len(args_per_rank)`` fresh CPU processes; return what each returned, in rank order. The
    kernels run there through Triton's interpreter, also on a machine with a GPU.

    ``fn`` must be importable by name (a function defined at the top level of a module, not in a
    notebook cell): the processes are spawned, and receive it pickled by reference. Inside it,
    ``torch.distributed`` is ready (``dist.get_rank()``, collectives on the default group). Each
    process runs on one thread, since they share the machine's cores. The arguments travel pickled
    (tensors through shared memory) and the results come back through files in a temporary folder:
    meant for small problems, tests and notebooks.

    An exception in a rank ends the run: the other ranks are stopped and the error is raised here
    (``torch.multiprocessing.ProcessRaisedException``, with the rank's traceback). A rank that was
    waiting for the failed one may fail too, with a lost connection, and the error raised is the
    first one seen. A rank left waiting for a message fails after ``timeout_s`` seconds.
    """
    world_size = len(args_per_rank)
    # The children inherit these before they import torch and kernels: one thread each, since they
    # share the machine's cores, and Triton's interpreter, since their tensors are on the CPU even
    # where a GPU is present (without it, the kernels would compile for the GPU and refuse them).
    with _environment(OMP_NUM_THREADS="1", TRITON_INTERPRET="1"), tempfile.TemporaryDirectory() as folder:
        mp.start_processes(_run_rank, args=(fn, list(args_per_rank), kwargs, folder, timeout_s),
                           nprocs=world_size, start_method="spawn")
        # our own files, written a moment ago by our own processes: any picklable result
        return [torch.load(Path(folder) / f"rank{r}.pt", weights_only=False) for r in range(world_size)]


@contextlib.contextmanager
def _environment(**values: str):
    """Set environment variables for the duration of a ``with`` block, then restore them."""
    old = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in old.items():
            if value is None:
                del os.environ[name]
            else:
                os.environ[name] = value


def _run_rank(rank: int, fn, args_per_rank: list, kwargs: dict, folder: str, timeout_s: float):
    torch.set_num_threads(1)
    # a file-based rendezvous: no port to pick, so none to collide with another run
    dist.init_process_group("gloo", init_method=f"file://{Path(folder) / 'rendezvous'}", rank=rank,
                            world_size=len(args_per_rank), timeout=timedelta(seconds=timeout_s))
    try:
        result = fn(*args_per_rank[rank], **kwargs)
        dist.barrier()  # none leaves (closing its connections) while another still uses them
    finally:
        dist.destroy_process_group()
    torch.save(result, Path(folder) / f"rank{rank}.pt")
