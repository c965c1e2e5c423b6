"""Line budgets of plain text: paragraphs stay whole, a line without breaks counts as lines of words."""
from __future__ import annotations

from qslm.data.text import LINE_PIECE_WORDS, LONG_LINE_WORDS, budget_lines, first_lines


def words(n: int, start: int = 0) -> list[str]:
    return [f"w{i}" for i in range(start, start + n)]


def test_paragraphs_are_whole_lines():
    paragraph = " ".join(words(LONG_LINE_WORDS)) + "\n"  # as long as a line may be and stay one
    text = " = Title = \n\n" + paragraph + "last"
    assert list(budget_lines(text)) == [(" = Title = \n", True), ("\n", True), (paragraph, True), ("last", True)]
    assert first_lines(text, 3) == " = Title = \n\n" + paragraph


def test_a_line_without_breaks_counts_as_lines_of_words():
    line = "  " + "  ".join(words(LONG_LINE_WORDS + 50)) + " \n"
    pieces = list(budget_lines("head\n" + line + "tail\n"))
    assert "".join(piece for piece, _ in pieces) == "head\n" + line + "tail\n"
    body = pieces[1:-1]
    assert [len(piece.split()) for piece, _ in body] == [LINE_PIECE_WORDS] * 10 + [50]
    assert [ends for _, ends in body] == [False] * 10 + [True]
    assert all(not piece[-1].isspace() for piece, _ in body[:-1])  # cut right after a word
    # the first three lines: "head" and two pieces of the long line, not all of it
    assert first_lines("head\n" + line, 3).split() == ["head", *words(2 * LINE_PIECE_WORDS)]


def test_a_last_piece_of_only_spaces_stays_with_the_words_before_it():
    line = " ".join(words(12 * LINE_PIECE_WORDS)) + "   \n"
    pieces = list(budget_lines(line))
    last = " " + " ".join(words(LINE_PIECE_WORDS, 11 * LINE_PIECE_WORDS)) + "   \n"
    assert len(pieces) == 12 and pieces[-1] == (last, True)
