"""Prompt files, JSON lines or CSV, read as a stream and checked line by line.

Fields: `prompt` (required), `id`, `category`, `reference`, `tags` (a list in JSON, or a
comma-separated cell in CSV). A file is accepted whole or not at all: every bad line
is reported with its number and field (empty or over-long prompt, duplicate id, bad
category, not UTF-8, not JSON, unknown field), and nothing is saved while any is bad.
Pure functions of the bytes: the importer (`webapp.ratings.services`) and the
migration that loads the built-in sets both use them.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

from webapp.core.text import has_lone_surrogate, unstorable

MAX_PROMPT_CHARS = 20_000
MAX_ID_CHARS = 100
CATEGORY_RE = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,49}$")
FIELDS = ("id", "prompt", "category", "reference", "tags")
DEFAULT_CATEGORY = "general"
MAX_REPORTED_ERRORS = 1000


@dataclasses.dataclass(frozen=True)
class LineError:
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}" + (f", {self.field}" if self.field else "")
        return f"{where}: {self.message}"


@dataclasses.dataclass(frozen=True)
class PromptRow:
    line: int
    external_id: str
    text: str
    category: str
    reference: str
    tags: list[str]


class BadFile(ValueError):
    """The file has bad lines; `errors` lists them (at most MAX_REPORTED_ERRORS)."""

    def __init__(self, errors: list[LineError], total: int) -> None:
        self.errors = errors
        self.total = total
        shown = "; ".join(str(e) for e in errors[:5])
        more = f" (and {total - 5} more)" if total > 5 else ""
        super().__init__(f"{total} bad line{'s' * (total != 1)}: {shown}{more}")


def category_error(category: Any) -> str | None:
    if not isinstance(category, str) or not CATEGORY_RE.match(category):
        return (
            "must be a short lowercase name: letters, digits, '_' or '-', "
            "at most 50 characters"
        )
    return None


def read_prompts(
    stream: BinaryIO, filename: str, *, taken_ids: Iterable[str] = ()
) -> list[PromptRow]:
    """All the rows of a prompt file, or BadFile listing every bad line.

    Args:
        stream: the file's bytes.
        filename: decides the format (`.csv`, else JSON lines).
        taken_ids: ids already in the set the rows go to (a clash is an error).
    """
    records = (
        _csv_records(stream)
        if filename.lower().endswith(".csv")
        else (_json_records(stream))
    )
    rows, errors, total_errors = [], [], 0
    seen = {str(i): 0 for i in taken_ids}
    for line, record in records:
        row, row_errors = _check(line, record, seen)
        if row_errors:
            total_errors += len(row_errors)
            errors.extend(row_errors[: MAX_REPORTED_ERRORS - len(errors)])
        else:
            rows.append(row)
    if not rows and not total_errors:
        errors.append(LineError(0, "", "the file holds no prompts"))
        total_errors = 1
    if total_errors:
        raise BadFile(errors, total_errors)
    return rows


Record = dict[str, Any] | LineError


def _json_records(stream: BinaryIO) -> Iterator[tuple[int, Record]]:
    for number, raw in enumerate(stream, start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            yield number, LineError(number, "", "not UTF-8")
            continue
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            yield number, LineError(number, "", f"not JSON ({exc.msg})")
            continue
        if not isinstance(record, dict):
            yield number, LineError(number, "", "not a JSON object")
            continue
        yield number, record


def _csv_records(stream: BinaryIO) -> Iterator[tuple[int, Record]]:
    # Undecodable bytes become lone surrogates, found per row below: one bad row
    # must not hide the others.
    text = io.TextIOWrapper(stream, encoding="utf-8", errors="surrogateescape")
    reader = csv.DictReader(text)
    if reader.fieldnames is None:
        return
    header = [f.strip() for f in reader.fieldnames]
    reader.fieldnames = header
    for record in reader:
        line = reader.line_num
        values = [v for v in record.values() if isinstance(v, str)]
        if any(map(has_lone_surrogate, values)):
            yield line, LineError(line, "", "not UTF-8")
            continue
        if None in record:  # more cells than the header names
            yield line, LineError(line, "", "more cells than the header has columns")
            continue
        if not any(v.strip() for v in values):
            continue
        tags = record.get("tags")
        if isinstance(tags, str):
            record["tags"] = [t.strip() for t in tags.split(",") if t.strip()]
        yield line, {k: v for k, v in record.items() if v not in (None, "")}


def _check(
    line: int, record: Record, seen: dict[str, int]
) -> tuple[PromptRow | None, list[LineError]]:
    if isinstance(record, LineError):
        return None, [record]
    errors = [
        LineError(line, key, "unknown field; fields are " + ", ".join(FIELDS))
        for key in record
        if key not in FIELDS
    ]
    if problem := unstorable(record):
        return None, [LineError(line, "", f"holds {problem}")]
    text = record.get("prompt")
    if not isinstance(text, str) or not text.strip():
        errors.append(LineError(line, "prompt", "empty prompt"))
    elif len(text) > MAX_PROMPT_CHARS:
        errors.append(
            LineError(
                line,
                "prompt",
                f"over-long: {len(text)} characters, at most {MAX_PROMPT_CHARS}",
            )
        )
    external_id = record.get("id", str(line))
    if isinstance(external_id, bool) or not isinstance(external_id, str | int):
        errors.append(LineError(line, "id", "must be a string or an integer"))
    else:
        external_id = str(external_id).strip()
        if not external_id or len(external_id) > MAX_ID_CHARS:
            errors.append(LineError(line, "id", f"1 to {MAX_ID_CHARS} characters"))
        elif external_id in seen:
            first = seen[external_id]
            where = f"line {first}" if first else "the set already"
            errors.append(LineError(line, "id", f"duplicate id (also {where})"))
        else:
            seen[external_id] = line
    category = record.get("category", DEFAULT_CATEGORY)
    if message := category_error(category):
        errors.append(LineError(line, "category", f"bad category: {message}"))
    reference = record.get("reference", "")
    if not isinstance(reference, str):
        errors.append(LineError(line, "reference", "must be text"))
    tags = record.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        errors.append(LineError(line, "tags", "must be a list of strings"))
    if errors:
        return None, errors
    return (
        PromptRow(
            line=line,
            external_id=external_id,
            text=text.strip(),
            category=category,
            reference=reference,
            tags=tags,
        ),
        [],
    )
