"""Memory and energy limits as written on the command line or in ``Constraints``: fractions, percentages
and amounts with units, and the mistakes refused with a message that says what to write."""
from __future__ import annotations

import pytest

from qslm.errors import QslmError
from qslm.search.limits import Limit, parse_energy_limit, parse_memory_limit, parse_quality_limit


@pytest.mark.parametrize("asked, fraction, amount", [
    (0.125, 0.125, None),
    ("0.125", 0.125, None),
    (1, 1.0, None),
    ("12.5%", 0.125, None),
    (" 100 % ", 1.0, None),
    ("3MB", None, 3e6),
    ("3MiB", None, 3 * 2 ** 20),
    ("512kB", None, 512e3),
    ("512KiB", None, 512 * 1024),
    ("2GB", None, 2e9),
    ("1.5 GiB", None, 1.5 * 2 ** 30),
    ("3145728B", None, 3145728.0),
    ("3mb", None, 3e6),  # units are read case-insensitively
])
def test_memory_limits(asked, fraction, amount):
    limit = parse_memory_limit(asked)
    assert (limit.fraction, limit.amount) == (pytest.approx(fraction) if fraction else None, amount)
    assert limit.asked == asked
    assert limit.resolve(8_000_000) == pytest.approx(fraction * 8_000_000 if fraction else amount)


@pytest.mark.parametrize("asked, pj", [("250pJ", 250.0), ("1.5nJ", 1500.0), ("2uJ", 2e6), ("2µJ", 2e6),
                                       ("4e5pJ", 4e5)])
def test_energy_limits(asked, pj):
    assert parse_energy_limit(asked).resolve(1e9) == pytest.approx(pj)


def test_fraction_of_fp32_and_description():
    assert parse_energy_limit("50%").resolve(2000.0) == 1000.0
    assert str(parse_memory_limit(0.125)) == "0.125 of FP32"
    assert str(parse_memory_limit("12.5%")) == "12.5% of FP32"
    assert str(parse_memory_limit("3MB")) == "3MB"


def test_absent_and_parsed_limits_pass_through():
    assert parse_memory_limit(None) is None
    limit = Limit("3MB", amount=3e6)
    assert parse_memory_limit(limit) is limit


@pytest.mark.parametrize("asked, message", [
    (2.0, r"--max-memory 2.0 is ambiguous: .*add a unit for an amount \(2B or 2MB\).*fraction <= 1 or a percentage"),
    ("2", r"--max-memory '2' is ambiguous"),
    ("3145728", "is ambiguous"),
    (0, "must be > 0"),
    ("-0.5", "must be > 0"),
    ("0MB", "must be > 0"),
    ("150%", r"over 100% of FP32"),
    ("3 parsecs", "unknown unit 'parsecs'"),
    ("3pJ", "unknown unit 'pJ'"),  # an energy unit is not a size
    ("lots", "'lots' is not a limit; expected a fraction of FP32 in \\(0, 1\\]"),
    ("nan", "--max-memory must be a finite number, got 'nan'"),
    ("inf", "must be a finite number"),
    ("1e400", "must be a finite number, got '1e400'"),
    ("1e300GB", "must be a finite number"),
    (float("nan"), "must be a finite number"),
    (True, "must be a number"),
])
def test_bad_memory_limits(asked, message):
    with pytest.raises(QslmError, match=message):
        parse_memory_limit(asked, "--max-memory")


def test_bad_energy_limit_suggests_energy_units():
    with pytest.raises(QslmError, match=r"--max-energy 1500.0 is ambiguous.*\(1500pJ or 1500nJ\)"):
        parse_energy_limit(1500.0, "--max-energy")
    with pytest.raises(QslmError, match="unknown unit 'MB'"):
        parse_energy_limit("3MB", "--max-energy")


def test_quality_limits():
    assert parse_quality_limit(None, "max_drop") is None
    assert parse_quality_limit(0, "max_drop") == 0.0
    assert parse_quality_limit("0.03", "max_relative_increase") == 0.03
    for bad, message in ((-1, "must be >= 0"), (float("nan"), "must be a finite number"), ("x", "must be a number")):
        with pytest.raises(QslmError, match=f"--max-drop {message}"):
            parse_quality_limit(bad, "--max-drop")
