"""WikiText-2 loader: both standard layouts, missing splits, word counting and the calibration tail."""
from __future__ import annotations

import pytest

from qslm.errors import QslmError
from qslm.tasks.datasets import wikitext
from qslm.tasks.datasets.wikitext import calibration_text, load_wikitext, split_lines, split_path, word_count
from qslm.train import TrainOptions, lm_training_text

VALID = " \n = Title = \n \n first paragraph here . \n second one @-@ joined . \n third \n"
TEST = " \n = Other = \n words in test . \n"


def make_folder(root, layout: str, folder: str = "wikitext-2"):
    base = root / folder
    base.mkdir(parents=True)
    for split, text in (("valid", VALID), ("test", TEST)):
        name = f"wiki.{split}.tokens" if layout == "tokens" else f"{split}.txt"
        (base / name).write_text(text, encoding="utf-8")
    return base


@pytest.mark.parametrize("layout, folder", [("tokens", "wikitext-2"), ("txt", "wikitext-2"),
                                            ("tokens", "wikitext-2-v1"), ("txt", "wikitext2")])
def test_both_layouts(tmp_path, layout, folder):
    base = make_folder(tmp_path, layout, folder)
    assert load_wikitext("valid", tmp_path) == VALID
    assert load_wikitext("test", tmp_path) == TEST
    expected = base / ("wiki.test.tokens" if layout == "tokens" else "test.txt")
    assert split_path("test", tmp_path) == expected


def test_tokens_file_wins_when_both_exist(tmp_path):
    base = make_folder(tmp_path, "txt")
    (base / "wiki.test.tokens").write_text("from tokens\n")
    assert load_wikitext("test", tmp_path) == "from tokens\n"


def test_missing_split_names_both_candidates(tmp_path):
    base = make_folder(tmp_path, "txt")
    assert not wikitext.has_split("train", tmp_path)
    assert wikitext.has_split("valid", tmp_path)
    with pytest.raises(QslmError) as info:
        load_wikitext("train", tmp_path)
    assert str(base / "wiki.train.tokens") in str(info.value)
    assert str(base / "train.txt") in str(info.value)


def test_missing_folder_and_unknown_split(tmp_path):
    with pytest.raises(QslmError, match="no WikiText-2 folder"):
        load_wikitext("test", tmp_path)
    make_folder(tmp_path, "txt")
    with pytest.raises(QslmError, match="split 'dev' unknown"):
        load_wikitext("dev", tmp_path)


@pytest.mark.parametrize("content, message", [(b" \n\n  \n", "is empty"), (b"caf\xe9\n", "is not UTF-8")])
def test_bad_files_name_the_path(tmp_path, content, message):
    (tmp_path / "wikitext-2").mkdir()
    path = tmp_path / "wikitext-2" / "test.txt"
    path.write_bytes(content)
    with pytest.raises(QslmError, match=message) as info:
        load_wikitext("test", tmp_path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("text, words", [
    ("", 0),
    ("one", 2),                       # 1 token + 1 end-of-line
    ("one two\n", 3),
    ("a b\n\nc  d\te\n", 3 + 1 + 4),  # a blank line still ends a line
    (" = Title = \n", 3 + 1),
    ("x @-@ y <unk>\n \n", 4 + 2),
])
def test_word_count(text, words):
    assert word_count(text) == words


def test_word_count_of_real_test_split(data_dir):
    text = load_wikitext("test", data_dir)
    lines = text.split("\n")[:-1]  # the file ends with a newline
    assert word_count(text) == sum(len(line.split()) for line in lines) + len(lines)
    # The standard WikiText-2 token counts already include one <eos> per line.
    assert word_count(text) == 245_569
    assert word_count(load_wikitext("valid", data_dir)) == 217_646


def test_split_lines_keeps_every_line_once():
    lines = [f"line {i}\n" for i in range(25)]
    head, tail = split_lines("".join(lines), fraction=0.2)
    assert tail == "".join(lines[20:])
    assert head + tail == "".join(lines)
    assert split_lines("only\n") == ("", "only\n")


def test_calibration_text_is_the_tail_of_valid(data_dir):
    valid = load_wikitext("valid", data_dir)
    tail = calibration_text(data_dir)
    n_lines = len(valid.splitlines())
    assert valid.endswith(tail)
    assert len(tail.splitlines()) == int(n_lines * wikitext.CALIBRATION_FRACTION)
    assert valid[: len(valid) - len(tail)].endswith("\n")  # cut on a line boundary


def test_calibration_text_is_not_in_training_text(small_data_dir, tmp_path):
    options = TrainOptions(arch="spikegpt", task="wikitext2", out=tmp_path / "m", data_dir=str(small_data_dir))
    training = lm_training_text(options)
    tail = calibration_text(small_data_dir)
    head = split_lines(load_wikitext("valid", small_data_dir))[0]
    assert head and head in training
    assert tail not in training
    content_lines = [line for line in tail.splitlines() if len(line.split()) > 8]
    assert content_lines, "the calibration tail should hold paragraphs"
    assert not any(line in training for line in content_lines)
    assert "words in test" not in training  # test never enters training either


def test_quantizer_text_is_train_when_the_folder_has_it(tmp_path):
    base = make_folder(tmp_path, "txt")
    head, tail = split_lines(VALID)
    assert wikitext.training_text(tmp_path) == head and not tail.startswith(head)
    (base / "train.txt").write_text(" \n = Train = \n learnt from here . \n", encoding="utf-8")
    assert wikitext.training_text(tmp_path) == " \n = Train = \n learnt from here . \n"
