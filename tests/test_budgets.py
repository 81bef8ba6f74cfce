"""relucut.budgets: one parser for every --budget / --budgets, the same strings the same way."""

import json

import pytest
from conftest import assert_one_line_error, run_cli
from hypothesis import given
from hypothesis import strategies as st

from relucut.budgets import parse_budget, parse_budgets
from relucut.errors import RelucutError

GOOD = [
    ("25000", 25_000), ("25,000", 25_000), ("25_000", 25_000), ("25k", 25_000), ("25K", 25_000),
    ("1.5M", 1_500_000), ("1.5m", 1_500_000), (" 12.5 k ", 12_500), ("1,500,000", 1_500_000), ("7168", 7168),
    ("2.0", 2), ("1", 1),
]
BAD = [  # text, what the one-line message says
    ("0", "at least 1 ReLU"), ("0k", "at least 1 ReLU"), ("-5", "at least 1 ReLU"), ("-1k", "at least 1 ReLU"),
    ("1.2345k", "whole number of ReLUs, got '1.2345k' = 1234.5; round it"), ("2.5", "whole number"),
    ("", "is empty"), ("   ", "is empty"), ("lots", "like 25000, 25,000, 25k or 1.5M, got 'lots'"),
    ("1e5", "got '1e5'"), ("25,00", "got '25,00'"), ("2_5000", "got '2_5000'"), ("1,000_000", "got"), ("12k,25k", "got '12k,25k'"),
    ("25kk", "got"), ("k", "got"), ("1.5G", "got"), ("٣", "got"),
]
LISTS = [
    ("12k,25k,50k,100k", [12_000, 25_000, 50_000, 100_000]),
    ("12k, 25K,1.5k,100000,1M", [12_000, 25_000, 1_500, 100_000, 1_000_000]),
    ("12,500", [12_500]),  # a comma before exactly three digits is a thousands separator
    ("12,500,25k", [12_500, 25_000]),
    ("12,500k,1M", [12_500_000, 1_000_000]),
    ("12,5000", [12, 5000]),  # not a group of three: two budgets
    ("100, 200", [100, 200]),  # a space after the comma separates
    ("100,200", [100_200]),
    ("100,200,300", [100_200_300]),  # write small budgets with spaces: '100, 200, 300'
    ("1234,567", [1234, 567]),  # '1234' is not in thousands format, so that comma separates
    ("25_000,1.5M", [25_000, 1_500_000]),
    ("1_001,100_000", [1001, 100_000]),  # one kind of separator per number
]
BAD_LISTS = [("12k,,25k", "empty budget in '12k,,25k'"), ("12k,", "empty budget"), ("", "is empty"),
             ("12k,lots,3k", "got 'lots' in '12k,lots,3k'"), ("12k,-1", "at least 1 ReLU"),
             ("12k,2.5", "whole number")]


@pytest.mark.parametrize("text, value", GOOD)
def test_budget_table(text, value):
    assert parse_budget(text) == value
    assert parse_budgets(text) == [value]  # one budget reads the same alone and as a list


@pytest.mark.parametrize("text, needle", BAD)
def test_bad_budgets_are_one_line_errors_naming_the_option(text, needle):
    with pytest.raises(RelucutError) as err:
        parse_budget(text)
    message = str(err.value)
    assert needle in message and message.startswith("--budget ") and "\n" not in message


@pytest.mark.parametrize("text, value", LISTS)
def test_budget_list_table(text, value):
    assert parse_budgets(text) == value


@pytest.mark.parametrize("text, needle", BAD_LISTS)
def test_bad_budget_lists(text, needle):
    with pytest.raises(RelucutError, match="^--budgets ") as err:
        parse_budgets(text)
    assert needle in str(err.value)


def test_ints_pass_through_checked():
    assert parse_budget(4096) == 4096
    with pytest.raises(RelucutError, match="at least 1"):
        parse_budget(0)
    with pytest.raises(RelucutError):
        parse_budget(True)


@given(st.integers(min_value=1, max_value=10**12))
def test_every_spelling_of_a_count_parses_to_it(n):
    spellings = [str(n), f"{n:,}", f"{n:_}", f" {n} "]
    if n % 1000 == 0:
        spellings += [f"{n // 1000}k", f"{n // 1000}K", f"{n / 1000:,}k".replace(".0k", "k")]
    if n % 100_000 == 0:
        spellings.append(f"{n / 1_000_000}M")
    assert {parse_budget(s) for s in spellings} == {n}


@given(st.lists(st.integers(min_value=1, max_value=10**9), min_size=1, max_size=6))
def test_lists_of_any_spelling_parse_back(values):
    assert parse_budgets(", ".join(f"{v:,}" for v in values)) == values  # a space after a separating comma
    assert parse_budgets(",".join(f"{v}k" for v in values)) == [1000 * v for v in values]
    large = [1000 + v for v in values]  # four digits or more: no item reads as a thousands group
    assert parse_budgets(",".join(f"{v:_}" for v in large)) == large
    assert parse_budgets(",".join(str(v) for v in large)) == large


@given(st.integers(min_value=1, max_value=10**9), st.integers(min_value=0, max_value=999))
def test_a_comma_before_three_digits_continues_a_thousands_number(high, low):
    assert parse_budgets(f"{high:,},{low:03d}") == [1000 * high + low]
    assert parse_budgets(f"{high:,}, {low + 1:03d}") == [high, low + 1]


@given(st.text(max_size=20))
def test_any_text_is_a_count_or_a_one_line_error(text):
    for parse in (parse_budget, parse_budgets):
        try:
            result = parse(text)
        except RelucutError as exc:
            assert "\n" not in str(exc)
        else:
            assert all(isinstance(v, int) and v >= 1 for v in ([result] if isinstance(result, int) else result))


# every command with a budget option: the same strings, the same counts, the same refusals
COMMANDS = {
    "deepreduce --budget": ["deepreduce", "resnet20", "--dataset", "digits", "--blocks", "1,1,1", "--budget"],
    "snl --budget": ["snl", "resnet20", "--dataset", "digits", "--blocks", "1,1,1", "--budget"],
    "senet --budget": ["senet", "resnet20", "--dataset", "digits", "--blocks", "1,1,1", "--budget"],
    "deepreshape --budget": ["deepreshape", "hrn_5x5x3x", "--design-only", "--budget"],
    "frontier --budget": ["frontier", "resnet20", "--dataset", "digits", "--blocks", "1,1,1", "--budget"],
}


@pytest.mark.parametrize("command", COMMANDS)
def test_every_budget_option_refuses_a_bad_budget_in_one_line(command, tmp_path):
    proc = run_cli(*COMMANDS[command], "1.2345k", "--out", tmp_path / "out")
    assert proc.returncode == 2
    assert_one_line_error(proc, f"{command.split()[1]} must be a whole number of ReLUs, got '1.2345k'")
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_every_budget_option_reads_the_same_counts(tmp_path):
    # each command shows the count it read: deepreshape in its designs, the others in a refusal by value
    shown = run_cli(*COMMANDS["deepreshape --budget"], "12,500, 0.025M", "--json", check=True)
    assert json.loads(shown.stdout)["settings"]["budgets"] == [12_500, 25_000]
    for command in ("snl --budget", "senet --budget"):
        proc = run_cli(*COMMANDS[command], "1.5M", "--out", tmp_path / "out")
        assert_one_line_error(proc, "ReLU budget 1,500,000 exceeds")
    proc = run_cli(*COMMANDS["deepreduce --budget"], "0.001k", "--out", tmp_path / "out")
    assert_one_line_error(proc, "no candidate fits a budget of 1 ReLUs")
    assert not (tmp_path / "out").exists()
