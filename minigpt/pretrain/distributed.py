"""Data-parallel training over MPI: the same run on 1 or N processes (ranks), as llm.c's multi-GPU loop.

    mpirun -np 2 minigpt train --batch-size 16 ...     # 2 ranks, 8 rows of every batch each

Every rank holds the whole model and reads its own rows of the same global batch (the DataLoader's
rank / world). After the backward pass the gradients are summed over the ranks with ONE all-reduce
of the flat buffer (model.grads_memory), so every rank applies the same AdamW step:

    loss weights   rank r's tokens weigh w * n_r / n, n = the non-ignored targets of the GLOBAL batch,
                   so the SUM over ranks of the per-rank losses (and gradients) is the global mean,
                   exactly, even when ranks hold different numbers of counted targets (SFT masks)
    plain          Allreduce(SUM) of the N parameters; each rank runs AdamW on all of them
    ZeRO-1         Reduce_scatter(SUM): rank r gets the summed gradient of its slice [lo, hi) only;
                   AdamW on that slice with its slice of the moments (1/N of the optimizer memory);
                   Allgatherv puts the updated slices back together on every rank
    clipping       the global norm: sum of squares of the (slice of the) summed gradient, all-reduced

Only rank 0 writes (log, checkpoints, plots) and prints; a checkpoint holds the full moments and
every rank's dropout RNG, so a run resumes on the same number of ranks exactly, and on another
number when nothing is per rank (no dropout). A rank that raises calls Abort: the job ends with the
error instead of the others waiting forever in the next collective.

mpi4py is imported only when the process was started by an MPI launcher (mpirun sets
OMPI_COMM_WORLD_SIZE, MPICH's hydra PMI_SIZE, Slurm's srun PMIX_SIZE) with more than one rank.
"""
import json
import math
import os
import sys
import time
from dataclasses import dataclass

import numpy as np

from ..config import MATRIX_NAMES, PARAM_NAMES, num_parameters, param_shapes

SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE")


@dataclass
class World:
    rank: int = 0
    size: int = 1
    comm: object = None  # mpi4py's COMM_WORLD when size > 1
    mpi: object = None   # the mpi4py.MPI module then (IN_PLACE, SUM, FLOAT)

    @property
    def main(self):
        """The rank that writes files and prints."""
        return self.rank == 0


def launched_size(env=os.environ):
    """How many ranks the launcher started (1 outside MPI)."""
    for name in SIZE_VARIABLES:
        if env.get(name, "").isdigit():
            return int(env[name])
    return 1


def init():
    """The World of this process: MPI's COMM_WORLD under a multi-rank launch, else a world of one."""
    if launched_size() <= 1:
        return World()
    try:
        from mpi4py import MPI  # optional: pip install -e ".[mpi]"
    except ImportError:
        raise RuntimeError("started by an MPI launcher with several ranks, but mpi4py is not installed: "
                           "pip install -e \".[mpi]\"") from None
    comm = MPI.COMM_WORLD
    return World(comm.Get_rank(), comm.Get_size(), comm, MPI)


def abort(world, message, code=1):
    """Print the error (every rank: it may be this rank's alone) and end the whole job."""
    print(f"{message} (rank {world.rank} of {world.size}: aborting the job)", file=sys.stderr, flush=True)
    world.comm.Abort(code)


# --------------------------------------------------------------------------------------------------
# batches: each rank its rows of the global batch, weighted so the sum over ranks is the global mean


def row_range(B, world):
    """Rows [lo, hi) of a global batch of B that this rank reads: B split as evenly as it goes."""
    if B < world.size:
        raise ValueError(f"--batch-size {B} is the global batch: it needs at least one row on each of "
                         f"the {world.size} ranks")
    return world.rank * B // world.size, (world.rank + 1) * B // world.size


def local_rows(batch, world, B=None):
    """This rank's rows of a global batch (x, y[, w]) that a loader gave whole (SFT, RL loaders)."""
    lo, hi = row_range(B or len(batch[0]), world)
    return tuple(None if a is None else a[lo:hi] for a in batch)


def allreduce_sum(world, values):
    """Sum of a few float64 values over the ranks (a returned copy)."""
    a = np.array(values, dtype=np.float64)
    if world.size > 1:
        world.comm.Allreduce(world.mpi.IN_PLACE, a, op=world.mpi.SUM)
    return a


def global_weights(world, y, w, accum=1):
    """Loss weights for this rank's rows so that model.forward (a mean over the rank's own counted
    targets) returns its share of the global batch's mean, each of `accum` micro-batches weighing
    1/accum: w / accum * n_r / n, n = the counted targets of the global batch."""
    n_r = int((np.asarray(y) >= 0).sum())
    n = n_r if world.size == 1 else int(allreduce_sum(world, [n_r])[0])
    if n_r == n and accum == 1:
        return w
    w = np.full(np.shape(y), 1.0 / accum) if w is None else np.asarray(w) / accum
    return w if n_r == n else w * (n_r / max(n, 1))  # one rank: exactly the one-process weights


# --------------------------------------------------------------------------------------------------
# gradients and the optimizer step


def shard_range(n, world):
    """This rank's slice [lo, hi) of the N flat parameters under ZeRO-1, and every rank's counts."""
    counts = [(r + 1) * n // world.size - r * n // world.size for r in range(world.size)]
    lo = sum(counts[:world.rank])
    return lo, lo + counts[world.rank], counts


def reduce_gradients(model, world, zero=0):
    """Sum the gradients over the ranks: the whole buffer (plain), or this rank's slice (ZeRO-1).
    Returns the summed slice [lo, hi) of model.grads_memory that this rank updates."""
    g = model.grads_memory
    if world.size == 1:
        return g
    mpi = world.mpi
    if zero == 0:
        world.comm.Allreduce(mpi.IN_PLACE, g, op=mpi.SUM)
        return g
    lo, hi, counts = shard_range(g.size, world)
    mine = np.empty(hi - lo, dtype=g.dtype)
    world.comm.Reduce_scatter(g, mine, recvcounts=counts, op=mpi.SUM)
    g[lo:hi] = mine
    return g[lo:hi]


def clip_global_norm(world, grads, max_norm, sharded):
    """clip_grad_norm across ranks: the norm of the whole summed gradient; `grads` is this rank's
    slice of it (sharded) or all of it. Scales `grads` in place; returns the norm before clipping."""
    # float64 sum of squares, not np.dot (OpenBLAS's spinning worker: see train.clip_grad_norm)
    sq = float(np.square(grads, dtype=np.float64).sum())
    if sharded and world.size > 1:
        sq = float(allreduce_sum(world, [sq])[0])
    norm = math.sqrt(sq)
    if max_norm and max_norm > 0 and norm > max_norm:
        grads *= grads.dtype.type(max_norm / (norm + 1e-6))
    return norm


def segments(config, lo, hi):
    """(start, stop, decayed) runs of the flat parameter slice [lo, hi), one per tensor it touches:
    AdamW's weight decay applies to the weight matrices only."""
    out, start = [], 0
    for name, shape in param_shapes(config).items():
        stop = start + math.prod(shape)
        if stop > lo and start < hi:
            out.append((max(start, lo), min(stop, hi), name in MATRIX_NAMES))
        start = stop
    assert start == num_parameters(config) and set(param_shapes(config)) == set(PARAM_NAMES)
    return out


def update(model, world, zero, lr, beta1, beta2, eps, weight_decay, t):
    """One AdamW step: model.update on every rank (plain), or on this rank's slice with its slice of
    the moments, then every rank gathers the updated parameters (ZeRO-1). Returns the seconds spent
    in that gather (communication)."""
    if world.size == 1 or zero == 0:
        model.update(lr, beta1, beta2, eps, weight_decay, t=t)
        return 0.0
    p, g = model.params_memory, model.grads_memory
    lo, hi, counts = shard_range(p.size, world)
    if model.m_memory is None or model.m_memory.size != hi - lo:
        model.m_memory, model.v_memory = np.zeros(hi - lo, p.dtype), np.zeros(hi - lo, p.dtype)
    for a, b, decayed in segments(model.config, lo, hi):
        x = p[a:b]
        model.k.adamw_update(x, g[a:b], model.m_memory[a - lo:b - lo], model.v_memory[a - lo:b - lo], b - a,
                             lr, beta1, beta2, eps, weight_decay if decayed else 0.0, t)
    mpi = world.mpi
    displs = np.cumsum([0] + counts[:-1]).tolist()
    t0 = time.perf_counter()
    world.comm.Allgatherv(mpi.IN_PLACE, [p, counts, displs, mpi.FLOAT])
    return time.perf_counter() - t0


def full_moments(model, world, zero):
    """(m, v) of all N parameters on rank 0, gathered from the slices under ZeRO-1 (every rank takes
    part); None when the model holds them whole (checkpoint.get_moments reads them, CudaGPT's too)."""
    n = model.num_parameters
    if world.size == 1 or zero == 0:
        return None
    lo, hi, counts = shard_range(n, world)
    mpi = world.mpi
    out = []
    for part in (model.m_memory, model.v_memory):
        part = np.zeros(hi - lo, np.float32) if part is None else part
        whole = np.empty(n, np.float32) if world.main else None
        displs = np.cumsum([0] + counts[:-1]).tolist()
        world.comm.Gatherv(part, [whole, counts, displs, mpi.FLOAT] if world.main else None, root=0)
        out.append(whole)
    return tuple(out) if world.main else None


def set_moments(model, world, zero, m, v):
    """Install saved full moments: all of them (plain) or this rank's slice (ZeRO-1)."""
    if world.size > 1 and zero == 1:
        lo, hi, _ = shard_range(m.size, world)
        m, v = m[lo:hi].copy(), v[lo:hi].copy()
    model.m_memory, model.v_memory = m, v


def allgather_json(world, obj):
    """[every rank's obj] on every rank, for small JSON-able things (the dropout RNG states, the run
    directory): sent as JSON bytes, not with mpi4py's pickling object calls."""
    if world.size == 1:
        return [obj]
    mine = np.frombuffer(json.dumps(obj).encode("utf-8"), dtype=np.uint8)
    counts = np.zeros(world.size, dtype=np.int64)
    world.comm.Allgather(np.array([mine.size], dtype=np.int64), counts)
    whole = np.empty(int(counts.sum()), dtype=np.uint8)
    displs = np.concatenate([[0], np.cumsum(counts)[:-1]])
    world.comm.Allgatherv(mine, [whole, counts.tolist(), displs.tolist(), world.mpi.BYTE])
    return [json.loads(whole[a:a + c].tobytes().decode("utf-8")) for a, c in zip(displs, counts)]


def barrier(world):
    if world.size > 1:
        world.comm.Barrier()
