"""Text for a terminal: control characters from the bus are shown, never obeyed.

Anything that reaches a terminal may come from anyone on the bus (an agent id, a checkpoint,
a task's log, an error message). Escape sequences in it could rewrite the screen, set the
window title or hide text, so every control character except newline and tab is printed as a
visible escape (``\\x1b``), and so are the Unicode controls that reorder text.
"""

import re
import sys
from typing import Any, TextIO

_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
"""What JSON leaves raw but a terminal may obey (JSON escapes the rest itself)."""


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe(text: str) -> str:
    """``text`` with every control character but newline and tab made visible."""
    return _CONTROL.sub(_visible, text)


def safe_json(text: str) -> str:
    """JSON text with the characters a terminal may obey written as ``\\uXXXX`` escapes
    (still the same JSON)."""
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def out(*parts: Any, file: TextIO | None = None, end: str = "\n", flush: bool = False) -> None:
    """``print`` for text that may hold anything: each part goes through ``safe``."""
    stream = file or sys.stdout
    stream.write(" ".join(safe(str(p)) for p in parts) + end)
    if flush:
        stream.flush()
