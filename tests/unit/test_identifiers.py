import pytest

from ledger.wire.identifiers import coi_problem, din_problem, mod37_2, with_check


@pytest.mark.parametrize(("din", "check"), [("G123498654321", "H"), ("W000009123456", "G")])
def test_worked_examples_of_the_design(din: str, check: str) -> None:
    assert mod37_2(din) == check
    assert din_problem(din + check) is None


def test_a_wrong_check_character_is_named() -> None:
    problem = din_problem("G123498654321J")
    assert problem is not None and "'J'" in problem and "MOD 37-2" in problem


@pytest.mark.parametrize(
    "keyed",
    ["G12349865432H", "O123498654321H", "G12349865432AH", "g123498654321H"],
)
def test_malformed_dins_are_refused(keyed: str) -> None:
    assert din_problem(keyed) is not None


def test_every_single_character_error_is_caught() -> None:
    din = "W000009123456"
    keyed = with_check(din)
    for i in range(13):
        for c in "0123456789":
            if c != din[i] and (i > 0 or c != "0"):
                wrong = din[:i] + c + din[i + 1 :] + keyed[13]
                assert din_problem(wrong) is not None, wrong


def test_coi_identifier_shape() -> None:
    assert coi_problem("CHW00002612345A") is None
    assert coi_problem("CHW0000261234") is not None  # too short
    assert coi_problem("XXW00002612345A") is not None
