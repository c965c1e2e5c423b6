"""Bit packing, exhaustively: every code value at every position, every length around a byte boundary."""
from __future__ import annotations

import math

import pytest
import torch

from qslm.quant.bits import PACKERS, pack_codes, packed_size, unpack_codes
from qslm.quant.quantizer import BITS

WIDTHS = sorted(set(BITS) | {1, 7})


@pytest.mark.parametrize("bits", WIDTHS)
def test_every_width_in_the_table(bits):
    assert bits in PACKERS


@pytest.mark.parametrize("bits", [b for b in WIDTHS if b <= 8])
def test_every_value_at_every_position(bits):
    # Each code value once at each of the 8 positions of an 8-code word (the period of the layout),
    # then every prefix length, so partial last bytes are covered too.
    values = torch.arange(2 ** bits)
    for offset in range(8):
        codes = torch.cat([torch.zeros(offset, dtype=torch.long), values.repeat_interleave(8)])
        data = pack_codes(codes, bits)
        assert data.dtype == torch.uint8 and data.numel() == math.ceil(codes.numel() * bits / 8)
        assert torch.equal(unpack_codes(data, bits, codes.numel()), codes.to(torch.int32))
    for n in range(0, 3 * 8 + 1):
        codes = values[torch.arange(n) % values.numel()]
        assert torch.equal(unpack_codes(pack_codes(codes, bits), bits, n), codes.to(torch.int32))


def test_16_bit_all_values():
    codes = torch.arange(2 ** 16)
    data = pack_codes(codes, 16)
    assert data.numel() == 2 ** 17
    assert torch.equal(unpack_codes(data, 16, codes.numel()), codes.to(torch.int32))
    assert pack_codes(torch.tensor([0x1234]), 16).tolist() == [0x34, 0x12]  # little-endian


@pytest.mark.parametrize("bits", WIDTHS)
def test_random_streams_round_trip(bits):
    generator = torch.Generator().manual_seed(bits)
    for n in (1, 7, 8, 9, 1000, 4099):
        codes = torch.randint(0, 2 ** bits, (n,), generator=generator)
        data = pack_codes(codes, bits)
        assert data.numel() == packed_size(n, bits)
        assert torch.equal(unpack_codes(data, bits, n), codes.to(torch.int32))


def test_layout_is_lsb_first_and_shares_bytes():
    assert pack_codes(torch.tensor([1, 2]), 4).tolist() == [0x21]  # two nibbles, no int8 container
    assert pack_codes(torch.tensor([3, 0, 1, 2]), 2).tolist() == [0b10010011]
    # 3-bit: 8 codes in 3 bytes; code 2 straddles bytes 0 and 1
    assert pack_codes(torch.tensor([7, 0, 7, 0, 0, 0, 0, 0]), 3).tolist() == [0b11000111, 0b00000001, 0]
    # 5-bit: code 1 occupies bits 5..9
    assert pack_codes(torch.tensor([0, 31]), 5).tolist() == [0b11100000, 0b00000011]
    # 6-bit: 4 codes in 3 bytes
    assert pack_codes(torch.tensor([63, 0, 0, 63]), 6).tolist() == [0x3F, 0x00, 0xFC]


def test_multidimensional_codes_are_flattened_row_major():
    codes = torch.tensor([[1, 2, 3], [4, 5, 6]])
    assert torch.equal(unpack_codes(pack_codes(codes, 3), 3, 6), codes.reshape(-1).to(torch.int32))


@pytest.mark.parametrize("bits", WIDTHS)
def test_out_of_range_codes_are_rejected(bits):
    with pytest.raises(ValueError, match=f"{bits}-bit codes must lie in"):
        pack_codes(torch.tensor([0, 2 ** bits]), bits)
    with pytest.raises(ValueError):
        pack_codes(torch.tensor([-1]), bits)


def test_wrong_stream_length_is_rejected():
    with pytest.raises(ValueError, match="need a 1-D uint8 tensor of 2 bytes"):
        unpack_codes(torch.zeros(3, dtype=torch.uint8), 3, 5)
    with pytest.raises(ValueError):
        unpack_codes(torch.zeros(2, dtype=torch.int32), 8, 2)
