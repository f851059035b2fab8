"""The mask band: which keys each query sees. Plain Python, no Triton, so that the Triton
launchers (through ``tiles.py``) and the plain-PyTorch twin (``flash_torch.py``) share it."""

from __future__ import annotations

from dataclasses import dataclass

from ._checks import check_kernel_qkv, check_scale, check_window


@dataclass(frozen=True)
class Band:
    """The keys each query sees: query ``i`` sees ``[i + off - left, i + off + right]`` with
    ``off = seqlen_k - seqlen_q``; -1 is unbounded on that side. ``Band()`` is full attention,
    ``Band(-1, 0)`` causal, ``Band(left, 0)`` causal with a window of ``left`` keys before."""

    left: int = -1
    right: int = -1

    @classmethod
    def from_window(cls, window_size=(-1, -1), causal=False) -> Band:
        """Validated, with ``causal`` folded in as ``right = 0`` (see :func:`check_window`)."""
        return cls(*check_window(window_size, causal))

    @property
    def causal(self) -> bool:
        """No query sees a key after its own position (the launch tables' ``causal`` key)."""
        return self.right == 0

    @property
    def is_local(self) -> bool:
        """Some key is masked: the kernels' ``IS_LOCAL``."""
        return self.left >= 0 or self.right >= 0

    def bounds(self, seqlen_q: int, seqlen_k: int) -> tuple[int, int]:
        """``(window_left, window_right)`` as kernel arguments: -1 (unbounded) becomes a bound
        that never binds."""
        unbounded = seqlen_q + seqlen_k + 1
        return (unbounded if self.left < 0 else self.left,
                unbounded if self.right < 0 else self.right)


def check_dense_args(q, k, v, causal, softmax_scale, window_size) -> tuple[float, Band]:
    """The arguments of ``flash_attention`` and of its twin, checked one way for both: the
    tensors, then ``(scale, band)``."""
    check_kernel_qkv(q, k, v)
    return check_scale(softmax_scale, q.shape[-1]), Band.from_window(window_size, causal)
