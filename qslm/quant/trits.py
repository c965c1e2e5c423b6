"""Base-3 packing of ternary digits: five digits (0, 1, 2) a byte, digit i of a group of five weighted
3**i (3**5 = 243 values fit in 256), so n digits take exactly ``ceil(n / 5)`` bytes: 1.6 bits a digit
where two-bit codes would spend 2. The last byte's unused digits are 0."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import QslmError

DIGITS_PER_BYTE = 5
LARGEST_BYTE = 3 ** DIGITS_PER_BYTE - 1  # 242
_POWERS = torch.tensor([3 ** i for i in range(DIGITS_PER_BYTE)], dtype=torch.int64)
# every byte's five digits, looked up rather than divided out: 256 x 5 (bytes above 242 are refused first)
_DIGITS = ((torch.arange(256, dtype=torch.int64)[:, None] // _POWERS) % 3).to(torch.uint8)


def packed_trits(n_digits: int) -> int:
    """Bytes that ``n_digits`` ternary digits take."""
    return math.ceil(n_digits / DIGITS_PER_BYTE)


def pack_trits(digits: torch.Tensor) -> torch.Tensor:
    """Ternary digits (any integer tensor of values 0, 1, 2) as a 1-D uint8 tensor of ``ceil(n / 5)``
    bytes."""
    flat = digits.reshape(-1).to(torch.int64)
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) > 2):
        raise QslmError(f"ternary digits must be 0, 1 or 2, got values in [{int(flat.min())}, {int(flat.max())}]")
    groups = F.pad(flat, (0, -flat.numel() % DIGITS_PER_BYTE)).view(-1, DIGITS_PER_BYTE)
    return (groups * _POWERS.to(flat.device)).sum(dim=1).to(torch.uint8)


def unpack_trits(data: torch.Tensor, n_digits: int) -> torch.Tensor:
    """The ``n_digits`` ternary digits (uint8) of a packed stream; a stream of the wrong size or with a
    byte no five digits make (above 242) is refused."""
    if data.dtype != torch.uint8 or data.dim() != 1 or data.numel() != packed_trits(n_digits):
        raise QslmError(f"{n_digits} ternary digits need a 1-D uint8 tensor of {packed_trits(n_digits)} bytes, got "
                        f"{data.dtype} {list(data.shape)}")
    if data.numel() and int(data.max()) > LARGEST_BYTE:
        offset = int(torch.nonzero(data > LARGEST_BYTE)[0])
        raise QslmError(f"a ternary stream holds byte {int(data[offset])} at offset {offset}; five base-3 digits "
                        f"make at most {LARGEST_BYTE}: the stream is damaged")
    return _DIGITS.to(data.device)[data.to(torch.int64)].reshape(-1)[:n_digits]
