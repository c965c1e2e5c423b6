"""Base-3 packing: every digit sequence up to five long, every remainder of the length modulo 5, long
streams, and damaged streams refused."""
from __future__ import annotations

import itertools

import pytest
import torch

from qslm.errors import QslmError
from qslm.quant.trits import LARGEST_BYTE, pack_trits, packed_trits, unpack_trits


@pytest.mark.parametrize("length", range(0, 6))
def test_every_sequence_of_up_to_five_digits_round_trips_in_one_byte(length):
    for digits in itertools.product(range(3), repeat=length):
        packed = pack_trits(torch.tensor(digits, dtype=torch.int64))
        assert packed.numel() == packed_trits(length) == (1 if length else 0)
        assert unpack_trits(packed, length).tolist() == list(digits)
        if length:  # digit i weighs 3**i
            assert int(packed[0]) == sum(d * 3 ** i for i, d in enumerate(digits)) <= LARGEST_BYTE


@pytest.mark.parametrize("length", range(0, 16))
def test_every_remainder_of_the_length_modulo_five(length):
    digits = torch.randint(0, 3, (length,), generator=torch.Generator().manual_seed(length))
    packed = pack_trits(digits)
    assert packed.dtype == torch.uint8 and packed.numel() == -(-length // 5)
    assert torch.equal(unpack_trits(packed, length), digits.to(torch.uint8))


def test_a_long_stream_and_its_shape():
    digits = torch.randint(0, 3, (64, 101), generator=torch.Generator().manual_seed(0))
    packed = pack_trits(digits)
    assert packed.numel() == -(-64 * 101 // 5)
    assert torch.equal(unpack_trits(packed, 64 * 101).view(64, 101), digits.to(torch.uint8))


def test_digits_out_of_range_and_damaged_streams_are_refused():
    with pytest.raises(QslmError, match=r"ternary digits must be 0, 1 or 2, got values in \[0, 3\]"):
        pack_trits(torch.tensor([0, 3]))
    with pytest.raises(QslmError, match=r"7 ternary digits need a 1-D uint8 tensor of 2 bytes"):
        unpack_trits(torch.zeros(3, dtype=torch.uint8), 7)
    with pytest.raises(QslmError, match="holds byte 250 at offset 1; five base-3 digits make at most 242"):
        unpack_trits(torch.tensor([0, 250], dtype=torch.uint8), 7)
