"""What the block output cache keys and keeps: digests that follow every byte and the layout, copies that
share no storage, sizes, and equality bit for bit."""
from __future__ import annotations

from collections import namedtuple

import pytest
import torch

from qslm.search.block_values import Uncacheable, copied, digest_of, identical, nbytes_of

Pair = namedtuple("Pair", "a b")


def test_the_digest_follows_values_layout_and_structure():
    x = torch.arange(6.0).reshape(2, 3)
    digest = digest_of((x, {"k": 1}))
    assert digest == digest_of((x.clone(), {"k": 1}))
    others = [(x.t().contiguous().t(), {"k": 1}), (x.t(), {"k": 1}), (x.double(), {"k": 1}), ([x], {"k": 1}),
              (x, {"k": 1.0}), (x + 1, {"k": 1})]
    assert len({digest, *(digest_of(other) for other in others)}) == 1 + len(others)
    with pytest.raises(Uncacheable, match="object"):
        digest_of((x, object()))


def test_a_copy_shares_no_storage_and_keeps_every_type():
    x = torch.ones(2)
    value = (Pair(x, [x, 3]), {"y": x})
    copy = copied(value)
    assert identical(copy, value) and type(copy[0]) is Pair
    copy[1]["y"].add_(1)
    assert x.tolist() == [1.0, 1.0]
    assert nbytes_of(value) == 3 * x.nbytes
    with pytest.raises(Uncacheable):
        copied({"f": len})


def test_identical_is_bit_for_bit():
    nan = torch.tensor([float("nan"), 1.0])
    assert identical(nan, nan.clone()) and not identical(nan, torch.tensor([0.0, 1.0]))
    assert not identical(torch.zeros(2), torch.zeros(2, dtype=torch.float64))
    assert not identical(torch.zeros(2), -torch.zeros(2))  # -0.0 == 0.0, but not bit for bit
    assert not identical((torch.zeros(1),), [torch.zeros(1)])
    assert not identical(torch.zeros(1), 0.0)
