"""Byte-level BPE tokenizer (Hugging Face ``tokenizers``), saved with each model as ``tokenizer.json``."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from ..errors import QslmError
from ..jsonfile import parse_json

PAD_TOKEN = "<pad>"
MASK_TOKEN = "<mask>"  # the input at positions a masked language model must predict
SPECIAL_TOKENS = [PAD_TOKEN, MASK_TOKEN]


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def load_tokenizer(path: Path) -> Tokenizer:
    if not path.is_file():
        raise QslmError(f"missing tokenizer {path}: expected a Hugging Face tokenizer.json")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise QslmError(f"{path} is not UTF-8 text ({err}); expected a Hugging Face tokenizer.json") from None
    try:
        tokenizer = Tokenizer.from_str(text)
    except Exception as err:  # tokenizers raises a bare Exception on bad JSON
        raise QslmError(f"{path} is not a valid tokenizer.json: {err}") from None
    parse_json(text, str(path))  # tokenizers itself keeps the last of a key given twice
    return tokenizer


def pad_id(tokenizer: Tokenizer) -> int:
    token_id = tokenizer.token_to_id(PAD_TOKEN)
    return 0 if token_id is None else token_id


def mask_id(tokenizer: Tokenizer) -> int:
    token_id = tokenizer.token_to_id(MASK_TOKEN)
    if token_id is None:
        raise QslmError(f"the tokenizer has no {MASK_TOKEN} token, so it cannot train a masked language model; "
                        f"train a new model (without --init) to get a tokenizer that has one")
    return token_id
