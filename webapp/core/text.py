"""Text that every database the app runs on can store, checked where input arrives.

PostgreSQL's text and JSON columns refuse NUL ("\\x00"), which SQLite takes, and no
UTF-8 column holds a lone surrogate, which JSON can escape ("\\ud800"). Input holding
either is refused at the edge with a clear message, instead of failing when it is
saved: on one database only, as a 500 or a dead task.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

NUL = "a NUL character (\\u0000)"
LONE_SURROGATE = "a lone surrogate escape (such as \\ud800)"


def has_lone_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def text_problem(text: str) -> str | None:
    """What in `text` no text column holds (`NUL` or `LONE_SURROGATE`), or None."""
    if "\x00" in text:
        return NUL
    if has_lone_surrogate(text):
        return LONE_SURROGATE
    return None


def strings(value: Any) -> Iterator[str]:
    """Every string in a parsed JSON value, object keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from strings(key)
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def unstorable(value: Any) -> str | None:
    """What in a parsed JSON value's strings no text column holds, or None."""
    return next(filter(None, map(text_problem, strings(value))), None)
