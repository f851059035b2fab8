"""Solutions to notebook 03's exercises, and the mistakes their checks must catch."""

from __future__ import annotations

import math

import torch

LOG2E = math.log2(math.e)


def online_stats_base2(xs):
    m, l = -math.inf, 0.0
    for x in xs:
        x2 = x * LOG2E  # the score in base-2 units: 2 ** x2 == e ** x
        m_new = max(m, x2)
        l = l * 2 ** (m - m_new) + 2 ** (x2 - m_new)
        m = m_new
    return m, l


def online_step(m, l, acc, s_blk, v_blk):
    m_new = torch.maximum(m, s_blk.max(dim=1).values)  # [rows]
    m_safe = torch.where(m_new == -math.inf, 0.0, m_new)  # a row with no key yet: exp(-inf - 0) = 0
    alpha = torch.exp(m - m_safe)  # rescales what was summed under the old max
    p = torch.exp(s_blk - m_safe[:, None])  # [rows, block]
    return m_new, alpha * l + p.sum(dim=1), alpha[:, None] * acc + p @ v_blk


def merge_lse(o_a, lse_a, o_b, lse_b):
    lse = torch.logaddexp(lse_a, lse_b)  # log(e^a + e^b) without overflow
    safe = torch.where(lse == -torch.inf, 0.0, lse)  # both empty: weights exp(-inf) = 0, not NaN
    w_a, w_b = torch.exp(lse_a - safe), torch.exp(lse_b - safe)  # the shares of the probability mass
    return w_a[:, None] * o_a + w_b[:, None] * o_b, lse


def _base2_unscaled(xs):
    """Uses 2 ** (x - m) on the natural-log scores: forgets the factor log2(e)."""
    m, l = -math.inf, 0.0
    for x in xs:
        m_new = max(m, x)
        l = l * 2 ** (m - m_new) + 2 ** (x - m_new)
        m = m_new
    return m, l


def _step_unsafe(m, l, acc, s_blk, v_blk):
    """The plain update: exp(-inf - (-inf)) = NaN once a row's first block is fully masked."""
    m_new = torch.maximum(m, s_blk.max(dim=1).values)
    alpha = torch.exp(m - m_new)
    p = torch.exp(s_blk - m_new[:, None])
    return m_new, alpha * l + p.sum(dim=1), alpha[:, None] * acc + p @ v_blk


def _step_no_rescale(m, l, acc, s_blk, v_blk):
    """Forgets to rescale acc when the max grows (l is rescaled)."""
    m_new = torch.maximum(m, s_blk.max(dim=1).values)
    m_safe = torch.where(m_new == -math.inf, 0.0, m_new)
    alpha = torch.exp(m - m_safe)
    p = torch.exp(s_blk - m_safe[:, None])
    return m_new, alpha * l + p.sum(dim=1), acc + p @ v_blk


def _step_block_max(m, l, acc, s_blk, v_blk):
    """Uses the block's own max, not the running one."""
    m_blk = s_blk.max(dim=1).values
    alpha = torch.exp(m - m_blk)
    p = torch.exp(s_blk - m_blk[:, None])
    return m_blk, alpha * l + p.sum(dim=1), alpha[:, None] * acc + p @ v_blk


def _merge_average(o_a, lse_a, o_b, lse_b):
    """Averages the two outputs, ignoring how much probability mass each part holds."""
    return (o_a + o_b) / 2, torch.logaddexp(lse_a, lse_b)


def _merge_nan_when_empty(o_a, lse_a, o_b, lse_b):
    """Right for rows with keys; NaN for a row that saw no key on either side."""
    lse = torch.logaddexp(lse_a, lse_b)
    return torch.exp(lse_a - lse)[:, None] * o_a + torch.exp(lse_b - lse)[:, None] * o_b, lse


MISTAKES = {"online_stats_base2": [_base2_unscaled],
            "online_step": [_step_unsafe, _step_no_rescale, _step_block_max],
            "merge_lse": [_merge_average, _merge_nan_when_empty]}
