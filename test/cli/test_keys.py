"""The terminal key decoder: what terminals send for the keys the recording loop uses, split
anywhere across reads, and arbitrary bytes (a noisy SSH line) never raise."""
import os
import pty

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twinvla_ros.cli.keys import KeyDecoder, RawTerminal

SEQUENCES = {
    b"\x1b[C": "right", b"\x1b[D": "left", b"\x1b[A": "up", b"\x1b[B": "down",
    b"\x1bOC": "right", b"\x1bOD": "left",           # application cursor mode (tmux, some ssh clients)
    b"\x1b[1;5C": "right", b"\x1b[1;2D": "left",     # with Ctrl / Shift
    b"\r": "enter", b"\n": "enter", b" ": "space", b"y": "y", b"n": "n", b"\x03": "ctrl-c",
    "é".encode(): "é",
}


def decode_all(chunks) -> list[str]:
    decoder = KeyDecoder()
    keys = []
    for chunk in chunks:
        keys += decoder.feed(chunk)
    return keys + decoder.flush()


@pytest.mark.parametrize("data,key", SEQUENCES.items())
def test_each_key(data, key):
    assert decode_all([data]) == [key]


def test_lone_escape_is_esc_only_when_nothing_follows():
    decoder = KeyDecoder()
    assert decoder.feed(b"\x1b") == []
    assert decoder.in_sequence
    assert decoder.flush() == ["esc"]
    # ESC followed by a plain key: Esc, then that key (a user pressing Esc then 'y' quickly).
    assert decode_all([b"\x1by"]) == ["esc", "y"]


def test_unknown_sequences_are_dropped():
    assert decode_all([b"\x1b[15~", b"a", b"\x1b[200~"]) == ["a"]     # F5, bracketed paste start


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(list(SEQUENCES)), max_size=12), st.data())
def test_sequences_split_anywhere_decode_the_same(parts, data):
    stream = b"".join(parts)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)])]
    assert decode_all(chunks) == [SEQUENCES[p] for p in parts]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=8))
def test_arbitrary_bytes_never_raise_and_give_known_keys(chunks):
    for key in decode_all(chunks):
        assert isinstance(key, str) and key
        assert len(key) == 1 and key.isprintable() or key in {
            "left", "right", "up", "down", "esc", "enter", "space", "backspace", "ctrl-c", "ctrl-d", "tab"}


def test_raw_terminal_reads_keys_from_a_real_pty():
    """A pseudo-terminal as sshd gives one: cbreak mode, keys read as typed, Esc told apart
    from an arrow by the pause after it, settings restored afterwards."""
    import termios

    master, slave = pty.openpty()
    stream = os.fdopen(slave, "r")
    try:
        before = termios.tcgetattr(slave)
        with RawTerminal(stream) as terminal:
            assert not termios.tcgetattr(slave)[3] & termios.ICANON      # cbreak: no line buffering
            os.write(master, b"\x1b[C")
            assert terminal.read_keys(2.0) == ["right"]
            os.write(master, b"\x1b")
            assert terminal.read_keys(2.0) == ["esc"]
            assert terminal.read_keys(0.05) == []
        assert termios.tcgetattr(slave) == before
    finally:
        stream.close()
        os.close(master)


def test_raw_terminal_refuses_a_pipe():
    read_end, write_end = os.pipe()
    with os.fdopen(read_end) as stream, pytest.raises(RuntimeError, match="terminal"):
        with RawTerminal(stream):
            pass
    os.close(write_end)
