"""Bit packing of integer codes: code i of a stream occupies bits ``[i*b, (i+1)*b)`` counted from the
least significant bit of byte 0 (little-endian bit order), so n codes take exactly ``ceil(n*b/8)``
bytes. 3-, 5-, 6- (and 7-) bit codes straddle byte boundaries; 2- and 4-bit codes fill 4 and 2 per byte;
16-bit codes are two little-endian bytes. Every packed stream is a uint8 tensor."""
from __future__ import annotations

import math
from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F

def packed_size(n_codes: int, bits: int) -> int:
    """Bytes that ``n_codes`` codes of ``bits`` bits take."""
    return math.ceil(n_codes * bits / 8)


def _check_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    flat = codes.reshape(-1).to(torch.int64)
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= 2 ** bits):
        raise ValueError(f"{bits}-bit codes must lie in [0, {2 ** bits - 1}], got [{int(flat.min())}, "
                         f"{int(flat.max())}]")
    return flat


def _check_packed(data: torch.Tensor, n_codes: int, bits: int) -> None:
    if data.dtype != torch.uint8 or data.dim() != 1 or data.numel() != packed_size(n_codes, bits):
        raise ValueError(f"{n_codes} codes of {bits} bits need a 1-D uint8 tensor of {packed_size(n_codes, bits)} "
                         f"bytes, got {data.dtype} {list(data.shape)}")


def _pack_sub_byte(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Eight codes form one ``8*bits``-bit word (at most 56 bits, so int64 never overflows), written as
    ``bits`` bytes; the tail of the last word is cut off."""
    flat = _check_codes(codes, bits)
    n = flat.numel()
    words = F.pad(flat, (0, -n % 8)).view(-1, 8)
    word = (words << (torch.arange(8, device=flat.device) * bits)).sum(dim=1)
    data = (word[:, None] >> (torch.arange(bits, device=flat.device) * 8)) & 0xFF
    return data.reshape(-1)[:packed_size(n, bits)].to(torch.uint8)


def _unpack_sub_byte(data: torch.Tensor, n_codes: int, bits: int) -> torch.Tensor:
    _check_packed(data, n_codes, bits)
    raw = F.pad(data.to(torch.int64), (0, -data.numel() % bits)).view(-1, bits)
    word = (raw << (torch.arange(bits, device=data.device) * 8)).sum(dim=1)
    codes = (word[:, None] >> (torch.arange(8, device=data.device) * bits)) & (2 ** bits - 1)
    return codes.reshape(-1)[:n_codes].to(torch.int32)


def _pack_8(codes: torch.Tensor) -> torch.Tensor:
    return _check_codes(codes, 8).to(torch.uint8)


def _unpack_8(data: torch.Tensor, n_codes: int) -> torch.Tensor:
    _check_packed(data, n_codes, 8)
    return data.to(torch.int32)


def _pack_16(codes: torch.Tensor) -> torch.Tensor:
    flat = _check_codes(codes, 16)
    return torch.stack([flat & 0xFF, flat >> 8], dim=1).reshape(-1).to(torch.uint8)


def _unpack_16(data: torch.Tensor, n_codes: int) -> torch.Tensor:
    _check_packed(data, n_codes, 16)
    pairs = data.to(torch.int32).view(-1, 2)
    return pairs[:, 0] | (pairs[:, 1] << 8)


Packer = tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor, int], torch.Tensor]]
PACKERS: dict[int, Packer] = {
    **{bits: (partial(_pack_sub_byte, bits=bits), partial(_unpack_sub_byte, bits=bits)) for bits in range(1, 8)},
    8: (_pack_8, _unpack_8),
    16: (_pack_16, _unpack_16),
}


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Integer codes in [0, 2**bits) (any shape, flattened row-major) -> packed uint8 stream."""
    return PACKERS[bits][0](codes)


def unpack_codes(data: torch.Tensor, bits: int, n_codes: int) -> torch.Tensor:
    """Packed uint8 stream -> the first ``n_codes`` codes as a flat int32 tensor."""
    return PACKERS[bits][1](data, n_codes)
