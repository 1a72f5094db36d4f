import pytest

from twinvla_ros.execution.instruction import validate_instruction


def test_valid_instruction_is_stripped_and_kept_verbatim():
    assert validate_instruction("  Hand over the Box \n") == "Hand over the Box"
    assert validate_instruction("fold the towel, then stack it") == "fold the towel, then stack it"
    assert validate_instruction("x" * 512) == "x" * 512


@pytest.mark.parametrize("text, reason", [
    ("", "empty"),
    (" \t\n ", "empty"),
    ("x" * 513, "513 characters"),
    ("pick\x00 the cup", "non-printable"),
    ("pick \x1b[31mred", "non-printable"),
    (None, "must be a string"),
])
def test_bad_instructions_are_rejected_with_a_reason(text, reason):
    with pytest.raises(ValueError, match=reason):
        validate_instruction(text)
