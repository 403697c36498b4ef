"""Streaming detokenization: whole characters only, stop strings held back."""

import pytest

from model_service.detokenize import StopMatcher, StreamingDetokenizer


def byte_pieces(text: str) -> list[bytes]:
    """Every byte of `text` as its own piece: the worst case of byte fallback."""
    return [bytes([b]) for b in text.encode()]


@pytest.mark.parametrize("text", ["😀 ok", "你好，世界", "e\u0301 — 𓀀"])
def test_it_emits_multibyte_characters_whole(text: str) -> None:
    pieces = byte_pieces(text)
    detokenizer = StreamingDetokenizer(lambda i: pieces[i])

    out = [detokenizer.push(i) for i in range(len(pieces))]

    assert "".join(out) + detokenizer.flush() == text
    assert all("\ufffd" not in piece for piece in out)
    # A four-byte emoji appears in one piece, not spread over four.
    assert all(len(piece.encode()) != 1 or piece.isascii() for piece in out)


def test_it_never_writes_replacement_characters_for_broken_bytes() -> None:
    pieces = [b"a", b"\x9f", b"\xf0\x9f", b"b"]  # a stray continuation, a cut emoji
    detokenizer = StreamingDetokenizer(lambda i: pieces[i])

    text = "".join(detokenizer.push(i) for i in range(4)) + detokenizer.flush()

    assert text == "ab"


def test_it_holds_back_text_that_may_start_a_stop_string() -> None:
    stops = StopMatcher(["\nUser:"])

    assert stops.push("Hello\nUs") == ("Hello", False)
    assert stops.push("ually") == ("\nUsually", False)
    assert stops.push(" fine\nUser: more") == (" fine", True)


def test_it_flushes_held_back_text_at_the_end() -> None:
    stops = StopMatcher(["END"])

    assert stops.push("the EN") == ("the ", False)
    assert stops.flush() == "EN"
