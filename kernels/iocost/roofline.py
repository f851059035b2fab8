"""FLOPs and the roofline: turn element counts into a prediction of which resource bounds a kernel.

``time >= max(FLOPs / peak rate, bytes / bandwidth)``, with the rates and sizes of the GPUs
this project measures on (:class:`GPU`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

# ---------------------------------------------------------------------------------------------
# FLOPs and the roofline
# ---------------------------------------------------------------------------------------------


def flops(N: int, d: int, *, N_k: int | None = None, causal: bool = False,
          backward: bool = False) -> float:
    """Matmul FLOPs per (batch, head), counted as the FlashAttention papers do.

    Forward: two GEMMs (``Q K^T`` and ``P V``), each ``2 N N_k d``: ``4 N N_k d``. Backward: five
    GEMMs (dV, dP, dQ, dK and the recomputed S), 2.5 x the forward. Causal: half. The softmax's
    exponentials are not counted (they run on other units and are ``O(N^2)``, not ``O(N^2 d)``).
    ``backward=True`` returns the backward alone.
    """
    N_k = N if N_k is None else N_k
    f = 4.0 * N * N_k * d
    if backward:
        f *= 2.5
    if causal:
        f *= 0.5
    return f


class Roofline(NamedTuple):
    """A roofline estimate: the kernel can be no faster than either resource allows."""

    seconds: float          # max(compute_seconds, memory_seconds)
    compute_seconds: float  # flops / peak_flops
    memory_seconds: float   # bytes / bandwidth

    @property
    def bound(self) -> str:
        """``"compute"`` or ``"memory"``: the resource that sets the time."""
        return "compute" if self.compute_seconds >= self.memory_seconds else "memory"


def roofline(flops: float, nbytes: float, peak_flops: float, bandwidth: float) -> Roofline:
    """``time = max(flops / peak_flops, nbytes / bandwidth)``.

    The ridge point ``peak_flops / bandwidth`` (FLOPs per byte) separates the two regimes: a
    kernel with arithmetic intensity ``flops / nbytes`` below it is memory-bound.
    """
    compute = flops / peak_flops
    memory = nbytes / bandwidth
    return Roofline(max(compute, memory), compute, memory)


@dataclass(frozen=True)
class GPU:
    """The rates and sizes of one GPU that the model needs."""

    name: str
    peak_flops: float   # dense bf16 tensor-core rate, FLOP/s
    bandwidth: float    # HBM bandwidth, bytes/s
    l2_bytes: int       # L2 cache size, bytes
    smem_bytes: int     # shared memory one thread block may use, bytes (the "SRAM" M, in bytes)
    num_sms: int        # streaming multiprocessors

    @property
    def ridge(self) -> float:
        """FLOPs per byte above which a kernel is compute-bound."""
        return self.peak_flops / self.bandwidth

    def roofline(self, flops: float, nbytes: float) -> Roofline:
        return roofline(flops, nbytes, self.peak_flops, self.bandwidth)


#: NVIDIA H100 SXM5 80 GB, datasheet figures (bf16 dense, without sparsity).
H100_SXM = GPU("H100 SXM (datasheet)", peak_flops=989.4e12, bandwidth=3.35e12,
               l2_bytes=50 * 2**20, smem_bytes=227 * 2**10, num_sms=132)

#: NVIDIA H200 SXM, datasheet figures: the H100's chip (same SMs, tensor cores, caches) with
#: 141 GB of HBM3e at 4.8 TB/s.
H200_SXM = GPU("H200 SXM (datasheet)", peak_flops=989.4e12, bandwidth=4.8e12,
               l2_bytes=50 * 2**20, smem_bytes=227 * 2**10, num_sms=132)

#: The H100 lent to this project, as measured there: an 8192^3 bf16 torch.matmul and a
#: device-to-device copy (bytes read plus bytes written, per second).
H100_MEASURED = GPU("H100 SXM (measured)", peak_flops=755e12, bandwidth=3.0e12,
                    l2_bytes=50 * 2**20, smem_bytes=227 * 2**10, num_sms=132)

#: NVIDIA A100 SXM4 80 GB, datasheet figures: the GPU of the FlashAttention papers.
A100_SXM = GPU("A100 SXM (datasheet)", peak_flops=312e12, bandwidth=2.039e12,
               l2_bytes=40 * 2**20, smem_bytes=163 * 2**10, num_sms=108)
