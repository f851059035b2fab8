"""Solutions to notebook 13's exercises, and the mistakes their checks must catch."""

from __future__ import annotations

#: matrix products per (query block, key block) pair in each of our backward kernels
MATMULS = {"_attn_bwd_dkdv": 4, "_attn_bwd_dq": 3}
REGISTERS_PER_SM = 65536  # 32-bit registers in one SM's register file (H100, H200)
THREADS_PER_WARPGROUP = 128  # four warps of 32


def dkdv_smem_bytes(block_m, block_n, head_dim, num_stages, dtype_bytes=2):
    resident = 2 * block_n * head_dim  # the K and V tiles, loaded once, kept for the whole loop
    streamed = 2 * block_m * head_dim  # one Q and one dO tile per pipeline stage
    return (resident + num_stages * streamed) * dtype_bytes


def backward_at_dq_rate(kernel_ms):
    dq_per_matmul = kernel_ms["_attn_bwd_dq"] / MATMULS["_attn_bwd_dq"]
    dkdv = dq_per_matmul * MATMULS["_attn_bwd_dkdv"]  # the dK/dV kernel's products at dQ's rate
    return kernel_ms["_attn_bwd_preprocess"] + dkdv + kernel_ms["_attn_bwd_dq"]


def consumer_registers(consumer_warpgroups, producer_registers):
    per_thread = REGISTERS_PER_SM // THREADS_PER_WARPGROUP  # the file shared out per warpgroup thread
    left = (per_thread - producer_registers) // consumer_warpgroups
    return min(256, left - left % 8)  # setmaxnreg: a multiple of 8, at most 256


def last_wave_idle(programs, per_sm, sms=132):
    slots = per_sm * sms  # programs running at once
    waves = -(-programs // slots)  # ceil: the last wave may be partly empty
    in_last = programs - (waves - 1) * slots
    return 1 - in_last / slots


def _smem_one_stage_less(block_m, block_n, head_dim, num_stages, dtype_bytes=2):
    """Counts num_stages - 1 Q/dO buffers (the loads in flight), not num_stages."""
    return dkdv_smem_bytes(block_m, block_n, head_dim, num_stages - 1, dtype_bytes)


def _smem_kv_per_stage(block_m, block_n, head_dim, num_stages, dtype_bytes=2):
    """Puts K and V in every stage too, though they are loaded once per program."""
    return num_stages * 2 * (block_n + block_m) * head_dim * dtype_bytes


def _smem_no_do(block_m, block_n, head_dim, num_stages, dtype_bytes=2):
    """Streams the Q tile but forgets the dO tile that travels with it."""
    return (2 * block_n + num_stages * block_m) * head_dim * dtype_bytes


def _smem_swapped(block_m, block_n, head_dim, num_stages, dtype_bytes=2):
    """Swaps the blocks: K/V tiles of block_m rows, Q/dO tiles of block_n rows."""
    return dkdv_smem_bytes(block_n, block_m, head_dim, num_stages, dtype_bytes)


def _smem_always_bf16(block_m, block_n, head_dim, num_stages, dtype_bytes=2):
    """Ignores dtype_bytes: two bytes per element, also for fp32 inputs."""
    return dkdv_smem_bytes(block_m, block_n, head_dim, num_stages, 2)


def _rate_no_preprocess(kernel_ms):
    """Forgets the preprocess kernel (delta = rowsum(dO * O)), which runs either way."""
    return backward_at_dq_rate(kernel_ms) - kernel_ms["_attn_bwd_preprocess"]


def _rate_inverted(kernel_ms):
    """Scales the dQ kernel's time by 3/4 instead of 4/3: dK/dV has more products, not fewer."""
    return kernel_ms["_attn_bwd_preprocess"] + kernel_ms["_attn_bwd_dq"] * (1 + 3 / 4)


def _rate_same_time(kernel_ms):
    """Gives dK/dV the dQ kernel's time, not its time per product."""
    return kernel_ms["_attn_bwd_preprocess"] + 2 * kernel_ms["_attn_bwd_dq"]


def _rate_unchanged(kernel_ms):
    """Returns the measured backward: the sum of the three kernels as they are."""
    return sum(kernel_ms.values())


def _registers_cap_255(consumer_warpgroups, producer_registers):
    """Caps at 255, the most a thread can address, not at setmaxnreg's 256 (and 255 is not a
    multiple of 8)."""
    left = (REGISTERS_PER_SM // THREADS_PER_WARPGROUP - producer_registers) // consumer_warpgroups
    return min(255, left - left % 8)


def _registers_no_producer(consumer_warpgroups, producer_registers):
    """Shares the whole file among the consumers, as if the producer warpgroup held nothing."""
    left = REGISTERS_PER_SM // THREADS_PER_WARPGROUP // consumer_warpgroups
    return min(256, left - left % 8)


def _registers_nearest_8(consumer_warpgroups, producer_registers):
    """Rounds to the nearest multiple of 8, which can ask for more registers than there are."""
    left = (REGISTERS_PER_SM // THREADS_PER_WARPGROUP - producer_registers) / consumer_warpgroups
    return min(256, 8 * round(left / 8))


def _registers_equal_split(consumer_warpgroups, producer_registers):
    """Splits the file equally between all warpgroups, the producer included (no setmaxnreg)."""
    left = REGISTERS_PER_SM // THREADS_PER_WARPGROUP // (consumer_warpgroups + 1)
    return min(256, left - left % 8)


def _registers_not_multiple_of_8(consumer_warpgroups, producer_registers):
    """Forgets that setmaxnreg takes a multiple of 8."""
    left = (REGISTERS_PER_SM // THREADS_PER_WARPGROUP - producer_registers) // consumer_warpgroups
    return min(256, left)


def _idle_floor(programs, per_sm, sms=132):
    """Takes programs % slots as the last wave's programs, so whole waves look entirely idle."""
    return 1 - (programs % (per_sm * sms)) / (per_sm * sms)


def _idle_one_per_sm(programs, per_sm, sms=132):
    """Forgets that several programs share an SM: counts sms slots, not per_sm * sms."""
    return last_wave_idle(programs, 1, sms)


def _idle_busy_share(programs, per_sm, sms=132):
    """Returns the busy share of the last wave, not the idle one."""
    return 1 - last_wave_idle(programs, per_sm, sms)


def _idle_average(programs, per_sm, sms=132):
    """Averages over all waves: the idle slots of the last wave divided by every slot of the run."""
    slots = per_sm * sms
    waves = -(-programs // slots)
    return (waves * slots - programs) / (waves * slots)


MISTAKES = {"dkdv_smem_bytes": [_smem_one_stage_less, _smem_kv_per_stage, _smem_no_do, _smem_swapped,
                                _smem_always_bf16],
            "backward_at_dq_rate": [_rate_no_preprocess, _rate_inverted, _rate_same_time, _rate_unchanged],
            "consumer_registers": [_registers_cap_255, _registers_no_producer, _registers_nearest_8,
                                   _registers_equal_split, _registers_not_multiple_of_8],
            "last_wave_idle": [_idle_floor, _idle_one_per_sm, _idle_busy_share, _idle_average]}
