"""How big the next HTTP Range request is: adaptive chunk sizing, pure.

The FMEA's top action item (download timeout, RPN 144) asks for chunk sizes
that follow the network. A fixed 1 MiB chunk is too big on a weak cellular
link (8 s per chunk at the spec's 125 KB/s: progress is coarse and a cut
loses up to 8 s of data) and too small on a good one (one round trip per
MiB). So the size aims at a chunk *duration* (`target_s`): after each chunk
the measured throughput gives the ideal size. Growth is capped at
`growth`× per chunk, like TCP's slow start: one lucky fast chunk must not
jump straight to the maximum; shrinking is immediate, because a link that
just slowed down is where the next cut will happen.

Every size and every chunk boundary is a multiple of the `granule`, so the
offsets the downloader persists are always granule-aligned (the 20 %
acceptance point, byte 10485760, is one) whatever sizes the adaptation
picked. A chunk never spans more than a tenth of the package either, so a
progress report falls due at least every 10 %.

No I/O and no clock here: the downloader passes in what it measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from v2c.contract.errors import ValidationFailed

KIB: Final = 1024
MIB: Final = 1024 * KIB
PROGRESS_STEPS: Final = 10  # a progress report at least every 100 / 10 = 10 %


@dataclass(frozen=True, slots=True)
class ChunkPolicy:
    """Limits of the adaptive chunk size (bytes) and the duration it aims at."""

    initial: int = MIB  # the spec's 1 MB chunk, before anything is measured
    minimum: int = 64 * KIB
    maximum: int = 8 * MIB
    granule: int = 64 * KIB  # every size and boundary is a multiple of this
    target_s: float = 2.0  # a chunk should take about this long on the current link
    growth: float = 2.0  # at most this factor bigger than the last chunk

    def __post_init__(self) -> None:
        if self.granule < 1:
            raise ValidationFailed("the chunk granule must be positive")
        for name in ("initial", "minimum", "maximum"):
            value = getattr(self, name)
            if value < self.granule or value % self.granule:
                raise ValidationFailed(f"chunk {name} must be a multiple of the granule")
        if not self.minimum <= self.initial <= self.maximum:
            raise ValidationFailed("need minimum <= initial <= maximum chunk size")
        if self.target_s <= 0 or self.growth < 1:
            raise ValidationFailed("need target_s > 0 and growth >= 1")

    @classmethod
    def fixed(cls, size: int, granule: int = 64 * KIB) -> ChunkPolicy:
        """Always `size` bytes: no adaptation (the spec's plain 1 MB chunks)."""
        return cls(initial=size, minimum=size, maximum=size, granule=granule)


def align_down(value: int, granule: int) -> int:
    return value - value % granule


def next_chunk_size(policy: ChunkPolicy, current: int, chunk_bytes: int, elapsed_s: float) -> int:
    """The size of the next chunk after `chunk_bytes` took `elapsed_s` seconds.

    Aims at `policy.target_s` per chunk at the throughput just measured; grows
    by at most `policy.growth`, shrinks at once; a granule multiple within
    [minimum, maximum]. A chunk too small or too quick to time (elapsed 0)
    counts as fast.
    """
    ceiling = min(policy.maximum, int(current * policy.growth))
    if elapsed_s <= 0 or chunk_bytes <= 0:
        ideal = ceiling
    else:
        ideal = int(min(float(ceiling), chunk_bytes / elapsed_s * policy.target_s))
    return max(policy.minimum, min(policy.maximum, align_down(ideal, policy.granule)))


def granule_for(policy: ChunkPolicy, total: int) -> int:
    """The granule used for a package of `total` bytes.

    The policy's granule, halved until the package holds at least
    `PROGRESS_STEPS` of them, so even a tiny package reports progress every
    10 %. Deterministic in (policy, total): a resumed download uses the same.
    """
    granule = policy.granule
    while granule > 1 and granule * PROGRESS_STEPS > total:
        granule //= 2
    return granule


def chunk_end(offset: int, size: int, total: int, granule: int) -> int:
    """The exclusive end of the chunk starting at `offset`.

    At most `size` bytes and at most a tenth of the package (rounded to the
    granule), ending on a granule boundary or at the end of the package.
    """
    if not 0 <= offset < total:
        raise ValueError(f"offset {offset} outside a package of {total} bytes")
    cap = max(granule, align_down(total // PROGRESS_STEPS, granule))
    end = align_down(offset + min(size, cap), granule)
    if end <= offset:  # an unaligned offset (a smaller granule persisted it)
        end = align_down(offset, granule) + granule
    return min(total, end)
