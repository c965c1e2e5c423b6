"""Byte-level BPE tokenizer: training, save/load round trip, padding id, bad files."""
from __future__ import annotations

import pytest

from qslm.data.tokenizer import MASK_TOKEN, PAD_TOKEN, load_tokenizer, mask_id, pad_id, train_tokenizer
from qslm.errors import QslmError

TEXTS = ["the film is a delight .", "a dull , lifeless movie .", "the cast is fine but the plot is thin ."] * 20


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(TEXTS, vocab_size=300)


def test_trained_vocabulary(tokenizer):
    assert 256 < tokenizer.get_vocab_size() <= 300
    assert tokenizer.token_to_id(PAD_TOKEN) == 0 == pad_id(tokenizer)
    assert tokenizer.token_to_id(MASK_TOKEN) == 1 == mask_id(tokenizer)
    assert tokenizer.encode("a <mask> film").ids.count(1) == 1  # written in text, it is the special token
    # Frequent words become single tokens.
    assert len(tokenizer.encode("the").ids) == 1


@pytest.mark.parametrize("text", ["the film is a delight .", "unseen wörds, ünïcode & 数字 <unk> @-@\n"])
def test_encode_decode_round_trip(tokenizer, text):
    # Byte-level BPE covers every byte, so any text survives encoding.
    assert tokenizer.decode(tokenizer.encode(text).ids) == text


def test_save_load_round_trip(tokenizer, tmp_path):
    path = tmp_path / "tokenizer.json"
    tokenizer.save(str(path))
    loaded = load_tokenizer(path)
    assert loaded.get_vocab() == tokenizer.get_vocab()
    text = "a dull film , but the cast is fine .\nnew line"
    assert loaded.encode(text).ids == tokenizer.encode(text).ids
    assert loaded.decode(loaded.encode(text).ids) == text


def test_training_is_deterministic():
    first, second = train_tokenizer(TEXTS, 280), train_tokenizer(TEXTS, 280)
    assert first.get_vocab() == second.get_vocab()


def test_pad_id_falls_back_to_zero():
    from tokenizers import Tokenizer, models
    assert pad_id(Tokenizer(models.BPE())) == 0


def test_mask_id_needs_the_mask_token():
    from tokenizers import Tokenizer, models
    with pytest.raises(QslmError, match="the tokenizer has no <mask> token, so it cannot train a masked"):
        mask_id(Tokenizer(models.BPE()))


def test_missing_tokenizer(tmp_path):
    with pytest.raises(QslmError, match=f"missing tokenizer {tmp_path / 'tokenizer.json'}"):
        load_tokenizer(tmp_path / "tokenizer.json")


@pytest.mark.parametrize("content", ["{not json", '{"model": {"type": "Nonsense"}}', ""])
def test_bad_tokenizer_json(tmp_path, content):
    path = tmp_path / "tokenizer.json"
    path.write_text(content)
    with pytest.raises(QslmError, match="is not a valid tokenizer.json") as info:
        load_tokenizer(path)
    assert str(path) in str(info.value)


def test_a_tokenizer_with_a_key_twice_is_refused(tokenizer, tmp_path):
    path = tmp_path / "tokenizer.json"
    tokenizer.save(str(path))
    path.write_text(path.read_text().replace("{", '{"added_tokens": [], ', 1))
    with pytest.raises(QslmError, match="key 'added_tokens' appears more than once"):
        load_tokenizer(path)
