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

from typing import Callable, NamedTuple, Sequence, Tuple

import torch

Chunk = Tuple[torch.Tensor, torch.Tensor]  # (maps with autograd, P): (B, columns) each


class _Moments(NamedTuple):
    n: int
    mean_z: torch.Tensor
    mean_p: torch.Tensor
    s_ab: torch.Tensor
    norm_a: torch.Tensor
    norm_b: torch.Tensor
    u_b: torch.Tensor  # sum of b (z - mean z)^2
    u_a: torch.Tensor  # sum of (z - mean z)^5

    @property
    def cos(self) -> torch.Tensor:
        return self.s_ab / (self.norm_a * self.norm_b)


@torch.no_grad()
def _moments(chunk: Callable[[int, bool], Chunk], chunks: int) -> _Moments:
    """Passes 1 and 2: the means over all N, then the sums the cosine and its gradient need."""
    n = 0
    sum_z = sum_p = None
    for i in range(chunks):
        z, p = (t.double() for t in chunk(i, False))
        n += len(z)
        sum_z = z.sum(0) if sum_z is None else sum_z + z.sum(0)
        sum_p = p.sum(0) if sum_p is None else sum_p + p.sum(0)
    mean_z, mean_p = sum_z / n, sum_p / n
    s_ab = s_aa = s_bb = u_b = u_a = 0.0
    for i in range(chunks):
        z, p = (t.double() for t in chunk(i, False))
        d = z - mean_z
        a, b = d ** 3, (p - mean_p) ** 3
        s_ab, s_aa, s_bb = s_ab + (a * b).sum(0), s_aa + (a * a).sum(0), s_bb + (b * b).sum(0)
        u_b, u_a = u_b + (b * d * d).sum(0), u_a + (a * d * d).sum(0)
    return _Moments(n, mean_z, mean_p, s_ab, s_aa.sqrt().clamp_min(1e-12), s_bb.sqrt().clamp_min(1e-12), u_b, u_a)


def full_batch_cos3(chunk: Callable[[int, bool], Chunk], chunks: int) -> torch.Tensor:
    """The per-column cos over all rows (float64), without a gradient: eq. 1 on a held-out split."""
    return _moments(chunk, chunks).cos


def full_batch_cos3_backward(chunk: Callable[[int, bool], Chunk], chunks: int) -> torch.Tensor:
    """Accumulate into the parameters' ``.grad`` the gradient of ``-mean over columns of cos`` over all
    rows; ``chunk(i, grad)`` gives chunk ``i``'s (maps, P), maps with autograd when ``grad``. Returns
    the per-column cos (float64, detached), the loss's value before the step."""
    m = _moments(chunk, chunks)
    through_mean = (m.u_b / (m.norm_a * m.norm_b) - m.s_ab * m.u_a / (m.norm_a ** 3 * m.norm_b)) * 3.0 / m.n
    columns = m.s_ab.numel()
    for i in range(chunks):  # pass 3: d loss / d z, back through each chunk's maps
        z, p = chunk(i, True)
        with torch.no_grad():
            d = z.detach().double() - m.mean_z
            g = (p.double() - m.mean_p) ** 3 / (m.norm_a * m.norm_b) - m.s_ab * d ** 3 / (m.norm_a ** 3 * m.norm_b)
            dz = -(3.0 * d * d * g - through_mean) / columns
        z.backward(dz.to(z.dtype))
    return m.cos


def chunk_bounds(n: int, size: int) -> Sequence[Tuple[int, int]]:
    """[lo, hi) of consecutive chunks of at most ``size`` of ``n`` rows."""
    return [(lo, min(lo + size, n)) for lo in range(0, n, size)]
