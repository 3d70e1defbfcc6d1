"""SALF-CBM's eq. 1 over every prompted image at once, streamed: the cubic-cosine loss with each
column (concept m, location h, w) centred over all N images, as the paper writes it, computed a
chunk of images at a time so that neither P nor the concept maps of all N are ever held.

For one column, with z_i the map value and p_i CLIP's local similarity of image i,

    a_i = (z_i - mean z)^3,  b_i = (p_i - mean p)^3,  cos = S_ab / (|a| |b|),

and, since mean z depends on every z_k,

    d cos / d z_k = 3 (z_k - mean z)^2 G_k - (3 / N) sum_i G_i (z_i - mean z)^2,
    G_i = d cos / d a_i = b_i / (|a| |b|) - S_ab a_i / (|a|^3 |b|).

Pass 1 sums z and p (their means); pass 2 sums a b, a^2, b^2, b (z - mean z)^2 and
(z - mean z)^5 (the last two give the sum in the second term); pass 3 recomputes each chunk's maps
with autograd and back-propagates d loss / d z through them. Three passes over the cache a step,
memory a chunk's. A test checks the gradient against autograd on the whole batch in memory.
"""

from __future__ import annotations

from typing import Callable, Sequence, Tuple

import torch

Chunk = Tuple[torch.Tensor, torch.Tensor]  # (maps with autograd, P): (B, columns) each


def full_batch_cos3_backward(chunk: Callable[[int, bool], Chunk], chunks: int) -> torch.Tensor:
    """Accumulate into the parameters' ``.grad`` the gradient of ``-mean over columns of cos`` over all
    rows; ``chunk(i, grad)`` gives chunk ``i``'s (maps, P), maps with autograd when ``grad``. Returns
    the per-column cos (float64, detached), the loss's value before the step."""
    n = 0
    sum_z = sum_p = None
    with torch.no_grad():
        for i in range(chunks):  # pass 1: the means over all N
            z, p = (t.double() for t in chunk(i, False))
            n += len(z)
            sum_z = z.sum(0) if sum_z is None else sum_z + z.sum(0)
            sum_p = p.sum(0) if sum_p is None else sum_p + p.sum(0)
        mean_z, mean_p = sum_z / n, sum_p / n
        s_ab = s_aa = s_bb = u_b = u_a = 0.0
        for i in range(chunks):  # pass 2: the sums the cosine and its gradient need
            z, p = (t.double() for t in chunk(i, False))
            d = z - mean_z
            a, b = d ** 3, (p - mean_p) ** 3
            s_ab, s_aa, s_bb = s_ab + (a * b).sum(0), s_aa + (a * a).sum(0), s_bb + (b * b).sum(0)
            u_b, u_a = u_b + (b * d * d).sum(0), u_a + (a * d * d).sum(0)
        norm_a, norm_b = s_aa.sqrt().clamp_min(1e-12), s_bb.sqrt().clamp_min(1e-12)
        cos = s_ab / (norm_a * norm_b)
        through_mean = (u_b / (norm_a * norm_b) - s_ab * u_a / (norm_a ** 3 * norm_b)) * 3.0 / n
        columns = cos.numel()
    for i in range(chunks):  # pass 3: d loss / d z, back through each chunk's maps
        z, p = chunk(i, True)
        with torch.no_grad():
            d = z.detach().double() - mean_z
            g = (p.double() - mean_p) ** 3 / (norm_a * norm_b) - s_ab * d ** 3 / (norm_a ** 3 * norm_b)
            dz = -(3.0 * d * d * g - through_mean) / columns
        z.backward(dz.to(z.dtype))
    return cos


def chunk_bounds(n: int, size: int) -> Sequence[Tuple[int, int]]:
    """[lo, hi) of consecutive chunks of at most ``size`` of ``n`` rows."""
    return [(lo, min(lo + size, n)) for lo in range(0, n, size)]
