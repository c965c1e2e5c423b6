"""SST-2 loader: real files, header by name, bad files, and the held-out calibration slice."""
from __future__ import annotations

import random
from collections import Counter

import pytest

from qslm.errors import QslmError
from qslm.tasks.datasets import sst2
from qslm.tasks.datasets.sst2 import Example, load_sst2, read_tsv, split_holdout


def write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


def test_reads_real_dev(data_dir):
    dev = load_sst2("dev", data_dir)
    assert len(dev) == 872
    assert dev[0] == Example("one long string of cliches .", 0)
    assert set(Counter(ex.label for ex in dev)) == {0, 1}
    assert all(ex.sentence for ex in dev)


def test_data_dir_from_environment(data_dir, monkeypatch):
    monkeypatch.setenv("QSLM_DATA_DIR", str(data_dir))
    assert len(load_sst2("dev")) == 872


def test_columns_found_by_header_name(tmp_path):
    path = write(tmp_path / "x.tsv", "label\tid\tsentence\n1\t7\ta fine film .\n0\t8\tdull\n")
    assert read_tsv(path) == [Example("a fine film .", 1), Example("dull", 0)]


def test_quotes_are_kept_literally(tmp_path):
    # SST-2 has unbalanced quotes; the reader must not treat them as CSV quoting.
    path = write(tmp_path / "x.tsv", 'sentence\tlabel\n" a quoted start\t1\nit \'s "fine\t0\n')
    assert read_tsv(path) == [Example('" a quoted start', 1), Example('it \'s "fine', 0)]


def test_blank_lines_are_skipped(tmp_path):
    path = write(tmp_path / "x.tsv", "sentence\tlabel\ngood\t1\n\nbad\t0\n")
    assert [ex.label for ex in read_tsv(path)] == [1, 0]


@pytest.mark.parametrize("content, message", [
    (None, "missing data file"),
    ("", "lacks 'sentence' and 'label'"),
    ("good\t1\nbad\t0\n", "lacks 'sentence' and 'label'"),
    ("sentence\tscore\ngood\t1\n", "lacks 'sentence' and 'label'"),
    ("sentence\tlabel\ngood\tpositive\n", "label 'positive' is not 0 or 1"),
    ("sentence\tlabel\ngood\t2\n", "label '2' is not 0 or 1"),
    ("sentence\tlabel\ngood\t1\nno label here\n", "expected 2 tab-separated columns, got 1"),
    ("sentence\tlabel\ngood\t1\nbad\t0\textra\n", "expected 2 tab-separated columns, got 3"),
    ("label\tsentence\n1\tgood\t1\n", "expected 2 tab-separated columns, got 3"),
    ("sentence\tlabel\n", "no examples"),
], ids=["missing", "empty", "no-header", "no-label-column", "word-label", "label-2",
        "too-few-columns", "too-many-columns", "extra-column-after-sentence", "header-only"])
def test_bad_files_name_the_path(tmp_path, content, message):
    path = tmp_path / "bad.tsv"
    if content is not None:
        write(path, content)
    with pytest.raises(QslmError) as info:
        read_tsv(path)
    assert str(path) in str(info.value)
    assert message in str(info.value)


def test_line_number_in_error(tmp_path):
    path = write(tmp_path / "bad.tsv", "sentence\tlabel\ngood\t1\nbad\tx\n")
    with pytest.raises(QslmError, match=r"bad\.tsv:3: label 'x'"):
        read_tsv(path)


def test_binary_garbage_names_the_file_and_line(tmp_path):
    path = tmp_path / "bad.tsv"
    path.write_bytes(b"sentence\tlabel\ngood\t1\n\xff" + random.Random(0).randbytes(4096))  # 0xff is never UTF-8
    with pytest.raises(QslmError, match=r"bad\.tsv:3: not UTF-8 text \(byte 0x.. at offset \d+\)"):
        read_tsv(path)


@pytest.mark.parametrize("content, message", [
    (b"sentence\tlabel\ngood\t1\nbad \xe9t\xe9\t0\n", r"bad\.tsv:3: not UTF-8 text"),
    (b"\xff\xfesentence\tlabel\n", r"bad\.tsv:1: not UTF-8 text"),
    (b"sentense\tlabel\ngood\t1\n", r"bad\.tsv:1: header \['sentense', 'label'\] lacks 'sentence' and 'label'"),
    (b"sentence\tlabel\tlabel\ngood\t1\t0\n", r"bad\.tsv:1: header names \['label'\] more than once"),
    (b"sentence\tlabel\ngood\t1\n\nbad\t-1\n", r"bad\.tsv:4: label '-1' is not 0 or 1"),
    (b"sentence\tlabel\ngood\t1\n" + b"x" * 200_000 + b"\t1\n", r"bad\.tsv:\d: not a TSV row \(field larger"),
], ids=["latin-1", "utf16-bom", "garbled-header", "repeated-column", "negative-label", "huge-field"])
def test_broken_files_name_the_line(tmp_path, content, message):
    path = tmp_path / "bad.tsv"
    path.write_bytes(content)
    with pytest.raises(QslmError, match=message):
        read_tsv(path)


def test_unknown_split_and_missing_folder(tmp_path, data_dir):
    with pytest.raises(QslmError, match="split 'test' unknown"):
        load_sst2("test", data_dir)
    with pytest.raises(QslmError, match="does not exist"):
        load_sst2("dev", tmp_path / "nowhere")
    with pytest.raises(QslmError, match=str(tmp_path / "sst2" / "dev.tsv")):
        load_sst2("dev", tmp_path)


def synthetic_train(n: int) -> list[Example]:
    return [Example(f"sentence number {i} has six words", i % 2) for i in range(n)]


def test_split_holdout_is_deterministic_and_disjoint():
    train = synthetic_train(300)
    rest, held = split_holdout(train, size=50)
    assert split_holdout(train, size=50) == (rest, held)
    assert len(held) == 50 and len(rest) == 250
    assert not set(rest) & set(held)
    assert Counter(rest) + Counter(held) == Counter(train)
    # Held-out examples keep their order in train.
    assert held == sorted(held, key=train.index)
    # Another seed picks another slice.
    assert split_holdout(train, size=50, seed=1)[1] != held


def test_sentences_are_phrases_inside_no_longer_phrase():
    train = [Example("a gorgeous , witty film", 1), Example("witty film", 1), Example("gorgeous , witty", 1),
             Example("a dull and tedious mess of a movie", 0), Example("a dull and tedious mess", 0),
             Example("dull and tedious mess", 0), Example("a dull and tedious mess", 0), Example("too short", 1),
             # "sentence" inside "...sentences", not a word span of it: both are sentences
             Example("this sentence has five words", 1), Example("this sentences has five words here", 1)]
    assert sst2.sentence_indices(train) == [0, 3, 8, 9]


def test_split_holdout_leaves_out_the_phrases_only_a_held_sentence_has():
    kept = [Example("a gorgeous , witty film", 1), Example("witty film", 1), Example("gorgeous", 1)]
    dropped = [Example("a dull and tedious mess of a movie", 0), Example("dull and tedious mess", 0),
               Example("tedious", 0), Example("a movie", 0)]
    # Phrases of the held-out sentence that a training sentence holds too stay, as dev's do.
    shared = [Example("film", 1), Example("a", 1)]
    other = synthetic_train(3)  # whole sentences too
    train = kept + dropped + shared + other
    sentences = [train[i] for i in sst2.sentence_indices(train)]
    assert sentences == [kept[0], dropped[0], *other]
    for seed in range(100):
        rest, held = split_holdout(train, size=1, seed=seed)
        if held == [dropped[0]]:
            break
    else:
        pytest.fail("no seed in 100 held out the second sentence")
    assert rest == kept + shared + other


def test_phrase_finder_matches_whole_words():
    occurs = sst2.phrase_finder(["a gorgeous , witty film", "the  movie is bad"])
    assert occurs("witty film") and occurs("a gorgeous") and occurs("movie is") and occurs("a")
    assert not occurs("wit") and not occurs("film the") and not occurs("good") and not occurs("gorgeous witty")


def test_small_train_gives_up_half_its_sentences():
    short = [Example("too short", 1) for _ in range(100)]
    rest, held = split_holdout(short + synthetic_train(30), size=2000)
    assert len(held) == 15 and len(rest) == 115
    with pytest.raises(QslmError, match="1 of 101 training phrases are whole sentences of >= 4 words"):
        split_holdout(short + synthetic_train(1))


def test_holdout_of_a_slice_of_real_train(small_data_dir):
    train = load_sst2("train", small_data_dir)
    rest, held = split_holdout(train)
    assert len(held) == min(sst2.HOLDOUT_SIZE, len(sst2.sentence_indices(train)) // 2)
    assert rest and all(len(ex.sentence.split()) >= sst2.HOLDOUT_MIN_WORDS for ex in held)
    assert sst2.calibration_examples(small_data_dir) == held


@pytest.mark.slow
def test_calibration_examples_come_from_train_only(data_dir):
    train = load_sst2("train", data_dir)
    rest, held = split_holdout(train)
    assert len(held) == sst2.HOLDOUT_SIZE
    assert sst2.calibration_examples(data_dir, size=100) == held[:100]
    train_set = set(train)
    assert all(ex in train_set for ex in held)
    assert 0.85 * len(train) < len(rest) < len(train) - len(held)
    dev_sentences = {ex.sentence for ex in load_sst2("dev", data_dir)}
    assert not dev_sentences & {ex.sentence for ex in held}
    # No held-out sentence lies inside a training phrase, and no training phrase inside a held-out sentence.
    training_text = "\n".join(f" {ex.sentence} " for ex in rest)
    assert not [ex for ex in held if f" {ex.sentence} " in training_text]
    # Training phrases inside a held-out sentence are all inside a training sentence too.
    held_spans = set().union(*(sst2.word_spans(ex.sentence) for ex in held))
    shared = [ex for ex in rest if ex.sentence in held_spans]
    held_set = set(held)
    training_sentences = [train[i] for i in sst2.sentence_indices(train) if train[i] not in held_set]
    sentence_text = "\n".join(f" {ex.sentence} " for ex in training_sentences)
    assert shared and all(f" {ex.sentence} " in sentence_text for ex in shared)
