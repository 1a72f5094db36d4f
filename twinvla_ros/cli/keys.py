"""Keys from a terminal, over SSH too: the bytes a terminal sends, decoded without X or evdev.

LeRobot's keyboard listener (pynput) needs a display or root and silently hears nothing over
SSH. A terminal in cbreak mode sends every key as bytes on stdin instead: arrows as escape
sequences (ESC [ C, or ESC O C in application-cursor mode, with modifiers ESC [ 1 ; 5 C), Esc as
a lone ESC byte, which only the absence of a following byte tells apart from the start of a
sequence. KeyDecoder handles sequences split across reads; the terminal reader gives a lone
ESC `ESC_TIMEOUT` to be continued.
"""
from __future__ import annotations

import codecs
import os
import select
import sys
import termios
import tty

ESC = 0x1B
ESC_TIMEOUT = 0.05        # s: a lone ESC not followed by more bytes within this is the Esc key
ARROWS = {ord("A"): "up", ord("B"): "down", ord("C"): "right", ord("D"): "left"}
NAMED = {"\r": "enter", "\n": "enter", " ": "space", "\x7f": "backspace", "\x08": "backspace",
         "\x03": "ctrl-c", "\x04": "ctrl-d", "\t": "tab"}


class KeyDecoder:
    """bytes -> key names: "left", "right", "up", "down", "esc", "enter", "space", "backspace",
    "ctrl-c", "ctrl-d", "tab", or a printable character. Unknown sequences and other control
    bytes are dropped. Never raises on any input."""

    def __init__(self):
        self._pending = bytearray()       # an escape sequence not complete yet
        self._text = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, data: bytes) -> list[str]:
        keys: list[str] = []
        for byte in data:
            if self._pending:
                self._continue_escape(byte, keys)
            elif byte == ESC:
                keys += self._flush_text()
                self._pending.append(byte)
            else:
                keys += self._character(self._text.decode(bytes([byte])))
        return keys

    @property
    def in_sequence(self) -> bool:
        """An escape sequence has begun and is not complete (or it is a lone Esc)."""
        return bool(self._pending)

    def flush(self) -> list[str]:
        """No more bytes came: a pending lone ESC (or a cut-off sequence) is the Esc key."""
        keys = self._flush_text()
        if self._pending:
            self._pending.clear()
            keys.append("esc")
        return keys

    def _flush_text(self) -> list[str]:
        return self._character(self._text.decode(b"", final=True))

    def _continue_escape(self, byte: int, keys: list[str]) -> None:
        seq = self._pending
        if len(seq) == 1:                          # after ESC
            if byte in (ord("["), ord("O")):
                seq.append(byte)
                return
            seq.clear()
            keys.append("esc")                     # ESC then another key: Esc, then that key
            keys += self.feed(bytes([byte]))
            return
        if seq[1] == ord("O"):                     # SS3: exactly one final byte
            seq.clear()
            if byte in ARROWS:
                keys.append(ARROWS[byte])
            return
        # CSI: parameters and intermediates (0x20-0x3F), then one final byte (0x40-0x7E).
        if 0x20 <= byte <= 0x3F and len(seq) < 32:
            seq.append(byte)
            return
        seq.clear()
        if byte in ARROWS:
            keys.append(ARROWS[byte])

    @staticmethod
    def _character(text: str) -> list[str]:
        keys = []
        for char in text:
            if char in NAMED:
                keys.append(NAMED[char])
            elif char.isprintable():
                keys.append(char)
        return keys


class RawTerminal:
    """stdin in cbreak mode (keys arrive at once, not echoed) for the duration of a `with`;
    the terminal's settings are restored however the block ends."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdin
        self.fd = self.stream.fileno()
        self._saved = None
        self._decoder = KeyDecoder()

    def __enter__(self) -> "RawTerminal":
        if not os.isatty(self.fd):
            raise RuntimeError("the keyboard controls need a terminal on stdin (run it in a shell, over SSH is fine)")
        self._saved = termios.tcgetattr(self.fd)
        tty.setcbreak(self.fd)
        return self

    def __exit__(self, *exc) -> None:
        if self._saved is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)
            self._saved = None

    def read_keys(self, timeout: float) -> list[str]:
        """Keys typed within `timeout` seconds (empty list when none)."""
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return []
        keys = self._decoder.feed(os.read(self.fd, 1024))
        # A lone ESC, or a sequence cut between reads: wait briefly for the rest.
        while self._decoder.in_sequence:
            ready, _, _ = select.select([self.fd], [], [], ESC_TIMEOUT)
            if not ready:
                keys += self._decoder.flush()
                break
            keys += self._decoder.feed(os.read(self.fd, 1024))
        return keys
