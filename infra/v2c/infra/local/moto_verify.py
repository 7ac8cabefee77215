"""What the moto server's shortcuts share in verify mode (`V2C_MOTO_VERIFY_ANSWERS=1`).

Each shortcut (`moto_responses`, `moto_parsing`, `moto_updates`,
`moto_queries`) can also run moto's own path and fail the request when the
two disagree. They raise one kind of error for it, and compare with one
notion of "the same": equal values of equal types in the same key order,
which `==` alone is not (it takes 1 for True and ignores key order).
"""

from __future__ import annotations

from typing import Any


class ShortcutDiffers(AssertionError):
    """A shortcut and moto's own path disagreed (verify mode only)."""


def same(a: Any, b: Any) -> bool:
    """Equal as values, types and key order (`==` alone takes 1 for True, 1.0 for 1)."""
    if type(a) is not type(b):
        return False
    if type(a) is dict:
        return list(a) == list(b) and all(same(a[key], b[key]) for key in a)
    if type(a) is list:
        return len(a) == len(b) and all(map(same, a, b))
    return bool(a == b) or (a != a and b != b)  # NaN, which JSON allows
