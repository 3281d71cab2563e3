"""Splitting a CPU pass over many rows into cache-sized chunks (post-processing's masks, the encoder's FFN).

A chunk's temporaries stay in cache and reuse freed memory instead of paying page faults on fresh tens of MiB.
A short last chunk joins the one before it: torch and the BLAS run a few rows through other kernels (or split
one row across threads), which round differently from the one pass the chunks replace.
"""
from __future__ import annotations


def chunk_slices(n: int, step: int) -> list[slice]:
    """[0, n) as slices of `step` rows, a shorter tail joined to the slice before it."""
    starts = list(range(0, n, step))
    if len(starts) > 1 and n - starts[-1] < step:
        starts.pop()
    return [slice(a, b) for a, b in zip(starts, starts[1:] + [n])]
