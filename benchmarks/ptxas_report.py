"""Registers and spills of the backward kernels on Hopper, read on a machine without a GPU.

Triton compiles a kernel for a target it is told (here ``cuda:90``) without any GPU: the
frontend, its MLIR passes and the PTX need no driver, and the wheel carries NVIDIA's ``ptxas``,
whose ``-v`` prints the registers per thread and the bytes spilled to local memory. This script
compiles ``_attn_bwd_dkdv`` or ``_attn_bwd_dq`` with the specialisations that the launcher gives
contiguous 16-bit inputs whose sizes are multiples of 16 (unit strides become constants, the
other strides, sizes and pointers are marked divisible by 16) and prints, per configuration,
what ``ptxas`` reports and how many loads the software pipeliner turned into asynchronous copies.

It is how step 6 of ``benchmarks/NOTES.md`` found that a run-time loop over the query heads of a
GQA group, wrapped around the query loop, cost the dK/dV kernel most of its spills. The Triton
here may not be the GPU's (3.7 on the CPU machines, 3.6 on the lent H200): the numbers are a
guide to compare configurations, the GPU's own (``bwd_explore.py --sweep``) are the measurement.

Usage (Linux with Triton; no GPU needed)::

    python -m benchmarks.ptxas_report                      # the launch table, head dims 64 and 128
    python -m benchmarks.ptxas_report --kernel dkdv --head-dim 128 --causal \\
        --config 64,128,8,3 --flags ONE_HEAD=0
    python -m benchmarks.ptxas_report --kernel dkdv --head-dim 128 --causal \
        --config 64,64,4,2 --flags KV_B=1 TMA=1 VARLEN=1   # a packed (varlen) batch
    # the same with descriptors made in the kernel for each sequence:   ... VARLEN=1 SEQ_DESC=1
"""

from __future__ import annotations

import argparse
import inspect
import os
import re
import subprocess
import tempfile

# Compile, never interpret (must be set before Triton is imported)
os.environ["TRITON_INTERPRET"] = "0"

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from kernels import flash_bwd  # noqa: E402
from kernels.tiles import padded_head_dim  # noqa: E402

KERNELS = {"dkdv": flash_bwd._attn_bwd_dkdv, "dq": flash_bwd._attn_bwd_dq}
TL_DTYPES = {torch.bfloat16: "bf16", torch.float16: "fp16"}
HOST_FLAGS = ("STREAMS",)  # read by the launcher, not a kernel argument


def compile_for_hopper(fn, constants: dict, num_warps: int, num_stages: int,
                       dtype: torch.dtype = torch.bfloat16):
    """``fn`` (a ``@triton.jit`` kernel of ``flash_bwd``) compiled for sm_90 as the launcher
    would specialise it for contiguous inputs with sizes divisible by 16; ``constants`` are its
    constexpr arguments (defaults fill the rest)."""
    params = inspect.signature(fn.fn).parameters
    names = list(params)
    consts = {name: p.default for name, p in params.items() if p.default is not inspect.Parameter.empty}
    consts.update(constants)
    signature, attrs = {}, {}
    for i, name in enumerate(names):
        if name in consts:
            signature[name] = "constexpr"
        elif name.startswith("stride") and name.endswith("d"):  # the unit stride of a row
            signature[name], consts[name] = "constexpr", 1
        elif name.endswith("_desc") and consts.get("SEQ_DESC"):  # the tensor: described in the kernel
            signature[name] = "*" + TL_DTYPES[dtype]
        elif name.endswith("_desc"):  # host tensor descriptors (TMA), or unused
            rows = consts["BLOCK_N" if name in ("k_desc", "v_desc") else "BLOCK_M"]
            block = f"1, {rows}" if consts.get("VARLEN") else f"1, 1, {rows}"  # packed: 3-D
            signature[name] = (f"tensordesc<{TL_DTYPES[dtype]}[{block}, {consts['HEAD_DIM']}]>"
                               if consts.get("TMA") else "i32")
        elif name.startswith("cu_seqlens") or name == "ready_ptr":  # ready: PDL=2's counters
            signature[name] = "*i32"
        elif name.endswith("_ptr"):
            fp32 = name in ("lse_ptr", "dlse_ptr", "delta_ptr", "lse2_ptr") or (
                name == "dq_ptr" and consts.get("ATOMIC_DQ"))
            signature[name] = "*fp32" if fp32 else "*" + TL_DTYPES[dtype]
        elif name.endswith("scale"):
            signature[name] = "fp32"
        else:
            signature[name] = "i32"
        if signature[name].startswith("*") or name.startswith("stride") or name in (
                "head_dim", "seqlen_q", "seqlen_k"):
            attrs[(i,)] = [["tt.divisibility", 16]]
    src = ASTSource(fn=fn, signature=signature, attrs=attrs,
                    constexprs={(names.index(k),): v for k, v in consts.items()})
    return triton.compile(src, target=GPUTarget("cuda", 90, 32),
                          options=dict(num_warps=num_warps, num_stages=num_stages))


def ptxas_report(compiled) -> dict:
    """``ptxas -v`` on the compiled kernel's PTX for sm_90a: registers, spill bytes, stack,
    shared memory per program (bytes), and whether ptxas serialised the warpgroup matrix
    multiplies for want of registers (its warning C7512: each ``wgmma`` then waits for the one
    before it, which cost the packed dK/dV kernel 40% of its speed in step 12 of NOTES.md)."""
    from triton.backends.nvidia.compiler import get_ptxas

    with tempfile.TemporaryDirectory() as tmp:
        ptx = os.path.join(tmp, "kernel.ptx")
        with open(ptx, "w") as f:
            f.write(compiled.asm["ptx"])
        out = subprocess.run([get_ptxas(90).path, "-v", "--gpu-name=sm_90a", ptx, "-o",
                              os.path.join(tmp, "kernel.cubin")],
                             capture_output=True, text=True, check=True).stderr
    def number(pattern):
        found = re.search(pattern, out)
        return int(found.group(1)) if found else 0

    return dict(registers=number(r"Used (\d+) registers"),
                spill_stores=number(r"(\d+) bytes spill stores"),
                spill_loads=number(r"(\d+) bytes spill loads"),
                stack=number(r"(\d+) bytes stack frame"),
                shared=compiled.metadata.shared,
                wgmma_serialized="wgmma.mma_async instructions are serialized" in out,
                async_copies=compiled.asm["ttgir"].count("async_copy_global_to_local"))


def compile_config(kernel: str, head_dim: int, causal: bool, config: dict, flags: dict,
                   dtype: torch.dtype = torch.bfloat16):
    """One kernel (``dkdv`` or ``dq``) compiled for sm_90 in one configuration (``BLOCK_M``,
    ``BLOCK_N``, ``num_warps``, ``num_stages``) with the constexpr ``flags`` given."""
    constants = dict(BLOCK_M=config["BLOCK_M"], BLOCK_N=config["BLOCK_N"],
                     HEAD_DIM=padded_head_dim(head_dim), IS_LOCAL=causal, UPCAST=False,
                     PRECISION="tf32", **{"VARLEN": False, **flags})
    if kernel == "dkdv":
        constants.setdefault("ONE_HEAD", True)  # what the launcher passes without GQA
    return compile_for_hopper(KERNELS[kernel], constants, config["num_warps"], config["num_stages"],
                              dtype)


def report(kernel: str, head_dim: int, causal: bool, config: dict, flags: dict,
           dtype: torch.dtype = torch.bfloat16) -> dict:
    """Compile one kernel in one configuration and return ptxas's numbers."""
    return ptxas_report(compile_config(kernel, head_dim, causal, config, flags, dtype))


def table_rows(head_dims=(128, 64)):
    """Each entry of the Hopper launch table, both kernels."""
    for d in head_dims:
        for causal in (False, True):
            dkdv_cfg, dq_cfg = flash_bwd._HOPPER_BWD[(d, causal)]
            for kernel, config in (("dkdv", dkdv_cfg), ("dq", dq_cfg)):
                flags = {k: v for k, v in config.items()
                         if k.isupper() and not k.startswith("BLOCK") and k not in HOST_FLAGS}
                lse2 = flash_bwd.loads_lse2(dict(dkdv_cfg, dq=dq_cfg))
                if kernel == "dq" and flags.get("OWN_DELTA"):  # as the launcher passes them
                    flags.update(STORE_DELTA=True, STORE_LSE2=lse2, PDL=dkdv_cfg.get("PDL", 0))
                if kernel == "dkdv":
                    flags["LSE2"] = lse2
                yield kernel, d, causal, config, flags


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kernel", choices=list(KERNELS), help="one kernel (default: the launch table)")
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--causal", action="store_true")
    p.add_argument("--config", help="BLOCK_M,BLOCK_N,warps,stages")
    p.add_argument("--flags", nargs="*", default=[], metavar="NAME=0|1",
                   help="constexpr flags of the kernel, e.g. KV_B=1 ONE_HEAD=0 (VARLEN=1: packed; "
                        "PDL=2: wait per head)")
    args = p.parse_args(argv)
    if args.kernel:
        if not args.config:
            p.error("--kernel needs --config BLOCK_M,BLOCK_N,warps,stages")
        bm, bn, w, s = (int(x) for x in args.config.split(","))
        flags = {}
        for item in args.flags:
            name, _, value = item.partition("=")
            if not value.isdigit():
                p.error(f"--flags: expected NAME=0 or NAME=1 (or another integer: PDL=2), got {item!r}")
            flags[name] = value == "1" if value in ("0", "1") else int(value)
        config = dict(BLOCK_M=bm, BLOCK_N=bn, num_warps=w, num_stages=s)
        rows = [(args.kernel, args.head_dim, args.causal, config, flags)]
    else:
        rows = list(table_rows())
    print(f"triton {triton.__version__}, target sm_90a, bf16")
    for kernel, d, causal, config, flags in rows:
        r = report(kernel, d, causal, config, flags)
        cfg = "x".join(str(config[k]) for k in ("BLOCK_M", "BLOCK_N")) + \
            f" w{config['num_warps']} s{config['num_stages']}"
        print(f"{kernel:5} d={d:<4} {'causal' if causal else 'full  '} {cfg:14} "
              f"{' '.join(f'{k}={int(v)}' for k, v in flags.items()):22} registers {r['registers']:3} "
              f"spill stores {r['spill_stores']:5} B  spill loads {r['spill_loads']:5} B  "
              f"async copies {r['async_copies']:2}  shared {r['shared']:6} B"
              + ("  WGMMA SERIALIZED" if r["wgmma_serialized"] else ""), flush=True)


if __name__ == "__main__":
    main()
