"""Gemma's SentencePiece tokenizer, from a `tokenizer.model` or a GGUF vocabulary.

Encoding reproduces llama.cpp's SPM tokenizer with special tokens off, the reference
the parity tests hold it to (`llama_tokenize` in ggml-org/llama.cpp
`src/llama-vocab.cpp`):

1. user-defined pieces (runs of newlines, tabs or spaces, a few HTML tags) are cut out
   of the raw text first, longest piece first, each becoming its own id (except
   `</s>`, see `_LLAMACPP_END_MARKERS`);
2. every text fragment between them goes through SentencePiece BPE with Gemma's
   identity normalizer: a space becomes `▁` and nothing else changes (no NFKC, no dummy
   prefix, no whitespace collapsing); pairs merge by score, and a character without a
   piece falls back to one `<0xAB>` piece per UTF-8 byte.

Control pieces (`<bos>`, `<start_of_turn>`, ...) never come out of text: the chat
formatter inserts them by id. Decoding is the exact inverse of encoding, except that
`▁` (U+2581) typed in the text reads as a space, as in SentencePiece and llama.cpp.
"""

from __future__ import annotations

from collections.abc import Iterable
from os import PathLike
from typing import Any

import gguf
import numpy as np
from sentencepiece import SentencePieceProcessor
from sentencepiece import sentencepiece_model_pb2 as spm_pb2

from model_service.gguf_file import read_metadata as read_gguf_metadata

SPACE_SYMBOL = "▁"
START_OF_TURN = "<start_of_turn>"
END_OF_TURN = "<end_of_turn>"

_Piece = spm_pb2.ModelProto.SentencePiece
_PIECE_TYPE_FROM_GGUF = {
    int(gguf.TokenType.NORMAL): _Piece.NORMAL,
    int(gguf.TokenType.UNKNOWN): _Piece.UNKNOWN,
    int(gguf.TokenType.CONTROL): _Piece.CONTROL,
    int(gguf.TokenType.USER_DEFINED): _Piece.USER_DEFINED,
    int(gguf.TokenType.UNUSED): _Piece.UNUSED,
    int(gguf.TokenType.BYTE): _Piece.BYTE,
}
# llama.cpp makes every piece spelled like an end-of-generation marker a control piece
# (`special_eog_ids` in llama-vocab.cpp, by spelling, whatever the model), so it never
# cuts them out of text. In Gemma's vocabulary that hits one user-defined HTML tag,
# `</s>` (strike-through's end): typed, it is read as `</`, `s`, `>`.
_LLAMACPP_END_MARKERS = frozenset({"</s>"})


class Tokenizer:
    """Text to Gemma token ids and back.

    Build it with `Tokenizer.from_gguf(path)` or `Tokenizer.from_model_file(path)`.

    Attributes:
        vocab_size: number of pieces.
        bos_id, eos_id: beginning and end of sequence.
        pad_id: padding, or None when the vocabulary has none.
        start_of_turn_id, end_of_turn_id: the chat-format control pieces, or None when
            the vocabulary has none (their ids differ between Gemma 1/2 and Gemma 3).
    """

    def __init__(self, model_proto: spm_pb2.ModelProto) -> None:
        proto = _prepared_proto(model_proto)
        self._sp = SentencePieceProcessor(model_proto=proto.SerializeToString())
        self.vocab_size: int = self._sp.get_piece_size()
        self.bos_id: int = _required_id(self._sp.bos_id(), "bos")
        self.eos_id: int = _required_id(self._sp.eos_id(), "eos")
        self.pad_id: int | None = self._sp.pad_id() if self._sp.pad_id() >= 0 else None
        self.start_of_turn_id = self._control_id(START_OF_TURN)
        self.end_of_turn_id = self._control_id(END_OF_TURN)
        self._user_defined = _user_defined_longest_first(proto)
        # (The proto is not kept: its 262,144 pieces as Python objects were 14 MB of
        # every process that holds a tokenizer; SentencePiece has them too.)

    @classmethod
    def from_model_file(cls, path: str | PathLike[str]) -> Tokenizer:
        """Loads a SentencePiece `tokenizer.model` file."""
        proto = spm_pb2.ModelProto()
        with open(path, "rb") as f:
            proto.ParseFromString(f.read())
        return cls(proto)

    @classmethod
    def from_gguf(cls, path: str | PathLike[str]) -> Tokenizer:
        """Builds the tokenizer from a GGUF file's `tokenizer.ggml.*` metadata."""
        return cls(model_proto_from_gguf_metadata(read_gguf_metadata(path)))

    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        """Token ids of `text` as plain text (control pieces are never produced).

        Args:
            text: any string; `<start_of_turn>` in it stays characters.
            add_bos: put `bos_id` first.

        Returns:
            The ids, exactly those llama.cpp gives for the same vocabulary.

        Raises:
            UnicodeEncodeError: `text` holds a lone surrogate.
        """
        # A lone surrogate (JSON can carry "\ud800") is not text: UnicodeEncodeError.
        text.encode("utf-8")
        ids = [self.bos_id] if add_bos else []
        for part in self._split_user_defined(text):
            if isinstance(part, str):
                # One fragment at a time: given a list, SentencePiece hands it to a
                # thread pool, which costs more than the encoding of a chat message
                # (and milliseconds when the cores are busy).
                ids.extend(self._sp.encode(part))
            else:
                ids.append(part)
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Text of token ids: the exact inverse of `encode` (control ids read as "")."""
        data = b"".join(self.piece_bytes(i) for i in ids)
        return data.decode("utf-8", errors="replace")

    def id_to_piece(self, token_id: int) -> str:
        """The piece as the vocabulary spells it (`▁the`, `<0x0A>`, `<bos>`)."""
        self._check_id(token_id)
        return self._sp.id_to_piece(token_id)

    def piece_bytes(self, token_id: int) -> bytes:
        """The bytes a token stands for in text.

        `▁` is a space, a byte-fallback piece `<0xAB>` is that one byte (possibly part
        of a character), and control pieces stand for nothing (b"").
        """
        self._check_id(token_id)
        sp = self._sp
        if sp.is_control(token_id) or sp.is_unknown(token_id):
            return b""
        piece = sp.id_to_piece(token_id)
        if sp.is_byte(token_id):
            return bytes([int(piece[3:5], 16)])  # "<0xAB>"
        return piece.replace(SPACE_SYMBOL, " ").encode()

    def _split_user_defined(self, text: str) -> list[str | int]:
        """Cuts user-defined pieces out of `text` as llama.cpp does.

        llama.cpp visits the pieces longest first and splits every remaining text
        fragment at each occurrence, left to right.
        """
        parts: list[str | int] = [text] if text else []
        for piece, piece_id in self._user_defined:
            if piece not in text:  # the fragments are pieces of `text`
                continue
            split: list[str | int] = []
            for part in parts:
                if isinstance(part, int):
                    split.append(part)
                    continue
                for k, chunk in enumerate(part.split(piece)):
                    if k:
                        split.append(piece_id)
                    if chunk:
                        split.append(chunk)
            parts = split
        return parts

    def _control_id(self, piece: str) -> int | None:
        token_id = self._sp.piece_to_id(piece)
        return token_id if self._sp.is_control(token_id) else None

    def _check_id(self, token_id: int) -> None:
        if not 0 <= token_id < self.vocab_size:
            raise ValueError(
                f"token id {token_id} is outside the vocabulary "
                f"(0..{self.vocab_size - 1})"
            )


def model_proto_from_gguf_metadata(metadata: dict[str, Any]) -> spm_pb2.ModelProto:
    """A SentencePiece BPE model from a GGUF file's `tokenizer.ggml.*` metadata.

    GGUF keeps the SentencePiece pieces, scores and types of the original
    `tokenizer.model`, with two changes this undoes: the unknown piece may be typed
    as control, and user-defined pieces have their `▁` written as spaces (handled
    by `Tokenizer`, which matches those pieces on the raw text).
    """
    keys = gguf.Keys.Tokenizer
    model = _required_key(metadata, keys.MODEL)
    if model != "llama":
        raise ValueError(f"{keys.MODEL} is {model!r}; only SentencePiece ('llama')")
    if metadata.get(keys.ADD_PREFIX, True):
        # llama.cpp's default for SentencePiece vocabularies; Gemma's is False.
        raise ValueError(f"{keys.ADD_PREFIX} must be False (Gemma's normalizer)")
    tokens = _required_key(metadata, keys.LIST)
    scores = _required_key(metadata, keys.SCORES)
    token_types = _required_key(metadata, keys.TOKEN_TYPE)
    if not len(tokens) == len(scores) == len(token_types):
        raise ValueError(
            f"{keys.LIST}, {keys.SCORES} and {keys.TOKEN_TYPE} differ in length: "
            f"{len(tokens)}, {len(scores)}, {len(token_types)}"
        )
    special = {
        name: int(_required_key(metadata, key))
        for name, key in (
            ("unk", keys.UNK_ID),
            ("bos", keys.BOS_ID),
            ("eos", keys.EOS_ID),
        )
    }
    if keys.PAD_ID in metadata:
        special["pad"] = int(metadata[keys.PAD_ID])

    proto = spm_pb2.ModelProto()
    for token_id, (piece, score, token_type) in enumerate(
        zip(
            tokens,
            np.asarray(scores).tolist(),
            np.asarray(token_types).tolist(),
            strict=True,
        )
    ):
        piece_type = _piece_type(token_type, token_id)
        if token_id == special["unk"]:
            piece_type = _Piece.UNKNOWN
        proto.pieces.add(piece=piece, score=score, type=piece_type)

    trainer = proto.trainer_spec
    trainer.model_type = spm_pb2.TrainerSpec.BPE
    trainer.vocab_size = len(tokens)
    trainer.byte_fallback = True
    for name, token_id in special.items():
        if not 0 <= token_id < len(tokens):
            raise ValueError(f"{name} id {token_id} is outside the vocabulary")
        setattr(trainer, f"{name}_id", token_id)
        setattr(trainer, f"{name}_piece", tokens[token_id])
    normalizer = proto.normalizer_spec
    normalizer.name = "identity"
    normalizer.add_dummy_prefix = False
    normalizer.remove_extra_whitespaces = False
    normalizer.escape_whitespaces = True
    return proto


def _prepared_proto(model_proto: spm_pb2.ModelProto) -> spm_pb2.ModelProto:
    """A copy of the model ready for `Tokenizer`.

    - `<start_of_turn>`/`<end_of_turn>` become control pieces (Gemma's tokenizer.model
      has them user-defined, which would let typed text produce them; GGUF conversion
      makes the same change).
    - User-defined pieces are spelled with spaces, not `▁`: they are matched on the raw
      text before SentencePiece sees it, as llama.cpp does (GGUF spells them so).
    - `</s>` becomes a normal piece (see `_LLAMACPP_END_MARKERS`).
    - The unknown piece decodes to "" like the control pieces.
    """
    normalizer = model_proto.normalizer_spec
    if (
        normalizer.precompiled_charsmap
        or normalizer.add_dummy_prefix
        or normalizer.remove_extra_whitespaces
    ):
        raise ValueError(
            "only Gemma's identity normalizer is supported (no character map, "
            "no dummy prefix, no whitespace removal)"
        )
    proto = spm_pb2.ModelProto()
    proto.CopyFrom(model_proto)
    for piece in proto.pieces:
        if piece.type != _Piece.USER_DEFINED:
            continue
        if piece.piece in (START_OF_TURN, END_OF_TURN):
            piece.type = _Piece.CONTROL
        elif piece.piece in _LLAMACPP_END_MARKERS:
            # Plain to SentencePiece, as to llama.cpp's merges: it stays text.
            piece.type = _Piece.NORMAL
        else:
            piece.piece = piece.piece.replace(SPACE_SYMBOL, " ")
    proto.trainer_spec.unk_surface = ""
    return proto


def _user_defined_longest_first(
    proto: spm_pb2.ModelProto,
) -> list[tuple[str, int]]:
    """User-defined pieces in llama.cpp's matching order: longest (in bytes) first."""
    pieces = [
        (p.piece, i)
        for i, p in enumerate(proto.pieces)
        if p.type == _Piece.USER_DEFINED
    ]
    return sorted(pieces, key=lambda item: (-len(item[0].encode()), item[1]))


def _piece_type(token_type: int, token_id: int) -> int:
    if token_type not in _PIECE_TYPE_FROM_GGUF:
        raise ValueError(f"token {token_id} has unknown GGUF type {token_type}")
    return _PIECE_TYPE_FROM_GGUF[token_type]


def _required_key(metadata: dict[str, Any], key: str) -> Any:
    if key not in metadata:
        raise ValueError(f"GGUF metadata lacks {key}")
    return metadata[key]


def _required_id(token_id: int, name: str) -> int:
    if token_id < 0:
        raise ValueError(f"the vocabulary has no {name} piece")
    return token_id
