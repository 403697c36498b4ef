"""Inserting many rows fast, for imports of a million lines.

Django's `bulk_create` prepares every field of every object in Python (about 20 µs a
field) and, on SQLite, splits the rows into batches of a few dozen for the parameter
limit. Here the caller gives only the columns that vary, as database-ready values
(numbers, text, booleans, None, ids for foreign keys); every other column gets its
default, prepared once. PostgreSQL takes the rows by COPY, SQLite by `executemany`
with a page cache big enough for the indexes it updates.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice

from django.db import connections, router
from django.db.models import Field, Model
from django.utils import timezone
from psycopg.copy import QueuedLibpqWriter
from psycopg.types.json import Json, Jsonb

BATCH = 10_000
# SQLite's page cache while inserting, in KiB: its default 2 MiB makes each index
# insert of a million-row table read pages back from the file (a third of the time).
SQLITE_CACHE_KIB = 256 * 1024


def _constant(field: Field, connection) -> object:
    """The value every inserted row gets for a column the caller does not give."""
    if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
        value = timezone.now()
    elif field.has_default() and callable(field.default) and field.unique:
        raise ValueError(f"{field} needs a value per row (a unique, generated default)")
    else:
        value = field.get_default()
    return field.get_db_prep_save(value, connection)


def _as_copied(value: object) -> object:
    """A constant for COPY: a JSON value as its text, written once rather than
    dumped again for every row."""
    if isinstance(value, Json | Jsonb):
        return (value.dumps or json.dumps)(value.obj)
    return value


def bulk_insert(
    model: type[Model], fields: Sequence[str], rows: Iterable[Sequence[object]]
) -> None:
    """Inserts `rows`, each the values of `fields` in order (foreign keys by their
    attribute name, e.g. `item_id`), within the caller's transaction."""
    with inserting(model, fields) as write:
        write(rows)


@contextlib.contextmanager
def inserting(
    model: type[Model], fields: Sequence[str]
) -> Iterator[Callable[[Iterable[Sequence[object]]], None]]:
    """A function that inserts rows as `bulk_insert` does, for as long as the block
    lasts. On PostgreSQL it only formats the rows: one COPY stays open for the block
    and psycopg's writer thread sends them, so the server stores them while the
    caller goes on (checking the next lines of a file, say). No other statement can
    run on the connection until the block ends."""
    connection = connections[router.db_for_write(model)]
    given = [model._meta.get_field(name) for name in fields]
    others = [
        field
        for field in model._meta.concrete_fields
        if field not in given and not field.primary_key
    ]
    constants = tuple(_constant(field, connection) for field in others)
    quote = connection.ops.quote_name
    columns = ", ".join(quote(field.column) for field in [*given, *others])
    table = quote(model._meta.db_table)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            yield from _copying(cursor.cursor, table, columns, constants)
            return
        marks = ", ".join(["%s"] * (len(given) + len(others)))
        sql = f"INSERT INTO {table} ({columns}) VALUES ({marks})"
        cursor.execute("PRAGMA cache_size")
        (cache,) = cursor.fetchone()
        cursor.execute(f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}")

        def write(rows: Iterable[Sequence[object]]) -> None:
            rows = iter(rows)
            while chunk := [(*row, *constants) for row in islice(rows, BATCH)]:
                cursor.executemany(sql, chunk)

        try:
            yield write
        finally:
            cursor.execute(f"PRAGMA cache_size = {cache}")


def _copying(cursor, table: str, columns: str, constants: tuple):
    constants = tuple(_as_copied(value) for value in constants)
    # Foreign keys checked as the rows go in, while the caller goes on, not queued
    # for the commit (Django makes them deferred), where a million of them ran with
    # nothing beside them: about as long as the COPY itself.
    cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    statement = f"COPY {table} ({columns}) FROM STDIN"
    with cursor.copy(statement, writer=QueuedLibpqWriter(cursor)) as copy:

        def write(rows: Iterable[Sequence[object]]) -> None:
            for row in rows:
                copy.write_row((*row, *constants))

        yield write
    # Not reached when the block fails: the failed COPY has aborted the
    # transaction, and a statement here would hide the block's exception.
    cursor.execute("SET CONSTRAINTS ALL DEFERRED")
