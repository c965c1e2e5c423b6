"""The values a block takes and returns, as the block output cache (``block_cache``) handles them: a
digest of every byte of its arguments, copies that share no storage, their size, and equality bit for
bit. Tensors, tuples, lists, dicts and plain values only: anything else is ``Uncacheable``.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from xxhash import xxh3_128

PLAIN_TYPES = (int, float, bool, str, type(None))


class Uncacheable(Exception):
    """A value that is not tensors, containers of them and plain values."""


def digest_of(value) -> bytes:
    """A digest of a block's arguments: every tensor's dtype, shape, strides, device and bytes, and the
    structure and plain values around them (raises ``Uncacheable`` for any other object). XXH3-128: about
    50 times faster than a cryptographic hash here, and the inputs are the model's own activations, so an
    accidental collision (odds of order n^2 / 2^128) is the only kind there is."""
    h = xxh3_128()

    def visit(item) -> None:
        if isinstance(item, torch.Tensor):
            h.update(f"T{item.dtype}{tuple(item.shape)}{item.stride()}{item.device.type}".encode())
            if item.numel():
                h.update(item.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy())
        elif isinstance(item, Mapping):
            h.update(b"{")
            for key in sorted(item, key=repr):
                h.update(repr(key).encode())
                visit(item[key])
            h.update(b"}")
        elif isinstance(item, (tuple, list)):
            h.update(b"(" if isinstance(item, tuple) else b"[")
            for element in item:
                visit(element)
            h.update(b")")
        elif isinstance(item, PLAIN_TYPES):
            h.update(f"{type(item).__name__}:{item!r}".encode())
        else:
            raise Uncacheable(type(item).__name__)

    visit(value)
    return h.digest()


def copied(value):
    """A copy of a block's output that shares no tensor storage with it (raises ``Uncacheable``)."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a named tuple
        return type(value)(*(copied(v) for v in value))
    if isinstance(value, (tuple, list)):
        return type(value)(copied(v) for v in value)
    if isinstance(value, dict):
        return type(value)((k, copied(v)) for k, v in value.items())
    if isinstance(value, PLAIN_TYPES):
        return value
    raise Uncacheable(type(value).__name__)


def nbytes_of(value) -> int:
    if isinstance(value, torch.Tensor):
        return value.nbytes
    if isinstance(value, (tuple, list)):
        return sum(nbytes_of(v) for v in value)
    if isinstance(value, dict):
        return sum(nbytes_of(v) for v in value.values())
    return 0


def identical(a, b) -> bool:
    """Equal bit for bit (NaNs included), with the same structure, dtypes and shapes."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            return False
        if a.dtype != b.dtype or a.shape != b.shape:
            return False
        return a.numel() == 0 or torch.equal(a.detach().contiguous().reshape(-1).view(torch.uint8),
                                             b.detach().contiguous().reshape(-1).view(torch.uint8))
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(identical(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(identical(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b
