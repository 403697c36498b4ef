"""Gemma's chat format, built in token ids (report Tables 3 and 4).

    <bos><start_of_turn>user\\n{text}<end_of_turn>\\n<start_of_turn>model\\n{text}...

The control pieces go in as ids taken from the tokenizer; the role names and the turn
texts are encoded as plain text, so a user who types `<start_of_turn>` gets those
characters and never the control token. As in Gemma's published chat template, each
turn's text is stripped of surrounding whitespace, and a turn header is encoded
together with its text (`user\\n` + text), so the ids equal those of the rendered
template tokenized with special tokens on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from model_service.tokenizer import Tokenizer

ROLES = ("user", "model")
# Role names of chat messages (OpenAI's, and Gemma's own) as Gemma roles.
MESSAGE_ROLES = {"user": "user", "assistant": "model", "model": "model"}


class PromptTooLong(ValueError):
    """Even the latest user turn alone does not fit in the token budget."""


def format_conversation(
    tokenizer: Tokenizer,
    turns: Sequence[Mapping[str, str]],
    add_generation_prompt: bool = True,
) -> list[int]:
    """Ids of a conversation in Gemma's chat format, starting with BOS.

    Args:
        tokenizer: gives the control ids and encodes the text.
        turns: `{"role": "user" | "model", "content": str}`, alternating and starting
            with a user turn.
        add_generation_prompt: end with `<start_of_turn>model\\n` for the model to
            answer; the last turn must then be a user turn.

    Returns:
        The ids.

    Raises:
        ValueError: the conversation is empty or malformed (the message says where).
    """
    _check_turns(turns, add_generation_prompt)
    blocks = [_turn_ids(tokenizer, turn) for turn in turns]
    return _assemble(tokenizer, blocks, add_generation_prompt)


def fit_to_context(
    tokenizer: Tokenizer,
    turns: Sequence[Mapping[str, str]],
    max_prompt_tokens: int,
) -> tuple[list[int], int]:
    """Chat prompt ids within a budget, dropping the oldest turns first.

    Turns leave in user/model pairs so that the rest still starts with a user turn;
    the latest user turn always stays.

    Args:
        tokenizer: as for `format_conversation`.
        turns: as for `format_conversation` with a generation prompt (ends with a user
            turn).
        max_prompt_tokens: the most ids the prompt may have.

    Returns:
        (ids, number of turns dropped).

    Raises:
        PromptTooLong: the latest user turn alone is over the budget.
        ValueError: the conversation is malformed.
    """
    _check_turns(turns, add_generation_prompt=True)
    blocks = [_turn_ids(tokenizer, turn) for turn in turns]
    overhead = len(_assemble(tokenizer, [], add_generation_prompt=True))
    length = overhead + sum(len(block) for block in blocks)
    dropped = 0
    while length > max_prompt_tokens and dropped + 2 < len(blocks):
        length -= len(blocks[dropped]) + len(blocks[dropped + 1])
        dropped += 2
    if length > max_prompt_tokens:
        raise PromptTooLong(
            f"the message takes {length} tokens with the chat format; "
            f"at most {max_prompt_tokens} fit"
        )
    return _assemble(tokenizer, blocks[dropped:], add_generation_prompt=True), dropped


def format_training_example(
    tokenizer: Tokenizer, turns: Sequence[Mapping[str, str]]
) -> tuple[list[int], list[bool]]:
    """A whole conversation's ids, and which of them the model wrote.

    The ids are those of `format_conversation(..., add_generation_prompt=False)`. The
    mask is true on each model turn's text and its `<end_of_turn>` (so a model trained
    on it learns to end its turn), and false on BOS, the user turns, the turn headers
    (`<start_of_turn>model\\n`, which the prompt gives at inference) and the newline
    after each turn.

    Args:
        tokenizer: as for `format_conversation`.
        turns: as for `format_conversation`; usually ending with a model turn.

    Returns:
        (ids, mask), of equal lengths.

    Raises:
        ValueError: the conversation is empty or malformed.
    """
    _check_turns(turns, add_generation_prompt=False)
    ids, mask = [tokenizer.bos_id], [False]
    for turn in turns:
        block = _turn_ids(tokenizer, turn)
        ids.extend(block)
        if turn["role"] == "model":
            start = _header_length(tokenizer, turn, block)
            end = len(block) - len(tokenizer.encode("\n"))  # just past <end_of_turn>
            mask.extend(start <= i < end for i in range(len(block)))
        else:
            mask.extend([False] * len(block))
    return ids, mask


def turns_from_messages(messages: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
    """Chat messages with the common role names as Gemma turns.

    `assistant` becomes `model`; Gemma has no system role, so `system` messages go in
    front of the first user turn, separated by blank lines.

    Args:
        messages: `{"role": "system" | "user" | "assistant" | "model",
            "content": str}` mappings.

    Returns:
        Turns for `format_conversation` (not checked for alternation).

    Raises:
        ValueError: a message that is not such a mapping, or nothing but system text.
    """
    system: list[str] = []
    turns: list[dict[str, str]] = []
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping) or not {"role", "content"} <= set(message):
            raise ValueError(f"message {index} must have 'role' and 'content'")
        role, content = message["role"], message["content"]
        if not isinstance(content, str):
            raise ValueError(f"message {index} content must be a string")
        if role == "system":
            system.append(content)
        elif isinstance(role, str) and role in MESSAGE_ROLES:
            turns.append({"role": MESSAGE_ROLES[role], "content": content})
        else:
            raise ValueError(
                f"message {index} has role {role!r}; roles are "
                f"{', '.join(repr(r) for r in ('system', *MESSAGE_ROLES))}"
            )
    if system:
        if not turns or turns[0]["role"] != "user":
            raise ValueError("system text needs a user message after it")
        turns[0] = {
            "role": "user",
            "content": "\n\n".join([*system, turns[0]["content"]]),
        }
    return turns


def _turn_ids(tokenizer: Tokenizer, turn: Mapping[str, str]) -> list[int]:
    """`<start_of_turn>{role}\\n{text}<end_of_turn>\\n` as ids."""
    start, end = _turn_control_ids(tokenizer)
    return [start, *tokenizer.encode(_turn_text(turn)), end, *tokenizer.encode("\n")]


def _turn_text(turn: Mapping[str, str]) -> str:
    """A turn's header and text, encoded together as Gemma's template is."""
    return f"{turn['role']}\n{turn['content'].strip()}"


def _header_length(
    tokenizer: Tokenizer, turn: Mapping[str, str], block: list[int]
) -> int:
    """How many ids of a turn's block come before its text: `<start_of_turn>` and the
    ids shared with the header (`model\\n`) encoded alone, which the prompt of a
    generation ends with."""
    header = tokenizer.encode(f"{turn['role']}\n")
    shared = 0
    for header_id, block_id in zip(header, block[1:], strict=False):
        if header_id != block_id:
            break
        shared += 1
    return 1 + shared


def _assemble(
    tokenizer: Tokenizer, blocks: list[list[int]], add_generation_prompt: bool
) -> list[int]:
    ids = [tokenizer.bos_id]
    for block in blocks:
        ids.extend(block)
    if add_generation_prompt:
        start, _ = _turn_control_ids(tokenizer)
        ids.extend([start, *tokenizer.encode("model\n")])
    return ids


def _turn_control_ids(tokenizer: Tokenizer) -> tuple[int, int]:
    start, end = tokenizer.start_of_turn_id, tokenizer.end_of_turn_id
    if start is None or end is None:
        raise ValueError(
            "the tokenizer has no <start_of_turn>/<end_of_turn> control pieces; "
            "it is not a Gemma chat tokenizer"
        )
    return start, end


def _check_turns(
    turns: Sequence[Mapping[str, str]], add_generation_prompt: bool
) -> None:
    if isinstance(turns, str | bytes) or not isinstance(turns, Sequence):
        raise ValueError("turns must be a list of {'role', 'content'} mappings")
    if not turns:
        raise ValueError("the conversation has no turns")
    for index, turn in enumerate(turns):
        _check_turn(index, turn)
    if add_generation_prompt and turns[-1]["role"] != "user":
        raise ValueError(
            "the last turn must be a user turn for the model to answer "
            "(or pass add_generation_prompt=False)"
        )


def _check_turn(index: int, turn: Mapping[str, str]) -> None:
    if not isinstance(turn, Mapping) or not {"role", "content"} <= set(turn):
        raise ValueError(f"turn {index} must be a mapping with 'role' and 'content'")
    role, content = turn["role"], turn["content"]
    if role not in ROLES:
        raise ValueError(
            f"turn {index} has role {role!r}; roles are 'user' and 'model'"
        )
    if not isinstance(content, str):
        raise ValueError(f"turn {index} content must be a string, not {type(content)}")
    expected = ROLES[index % 2]
    if role != expected:
        raise ValueError(
            f"turn {index} is a {role!r} turn where a {expected!r} turn belongs: "
            "turns alternate user, model, user, ... starting with user"
        )
