"""What counts as a usable language instruction."""
from __future__ import annotations

MAX_INSTRUCTION_LENGTH = 512


def validate_instruction(text: str, max_length: int = MAX_INSTRUCTION_LENGTH) -> str:
    """The instruction with surrounding whitespace removed, or ValueError saying why not.

    Rejected: empty or whitespace-only, longer than max_length, or holding non-printable
    characters (control codes, which a tokenizer would pass to the model as garbage).
    """
    if not isinstance(text, str):
        raise ValueError(f"instruction must be a string, got {type(text).__name__}")
    stripped = text.strip()
    if not stripped:
        raise ValueError("instruction is empty or whitespace only")
    if len(stripped) > max_length:
        raise ValueError(f"instruction has {len(stripped)} characters (max {max_length})")
    bad = sorted({repr(c) for c in stripped if not c.isprintable()})
    if bad:
        raise ValueError(f"instruction contains non-printable characters {', '.join(bad)}")
    return stripped
