"""Bulk upserts: ``INSERT … ON CONFLICT`` for many rows, as fast as each database allows.

Small batches (webhooks) run as one cached statement executed many times. Large ones on
PostgreSQL are COPYed into a temporary table and merged with one ``INSERT … SELECT …
ON CONFLICT`` (several times faster than row-by-row inserts), so an initial sync's
hundreds of thousands of trait and mirror rows never make the database the bottleneck.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

import orjson
from psycopg import sql
from psycopg.errors import UniqueViolation
from sqlalchemy import JSON, Table, any_, bindparam, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from crowdpower.extensions import db

COPY_THRESHOLD = 50  # rows; below it a pipelined executemany is as fast


def upsert(table: Table, rows: list[dict[str, Any]], index_elements: list[str],
           update: list[str], only_if_newer: str | None = None) -> None:
    """Insert ``rows`` or update ``update`` columns of the rows they collide with.

    ``only_if_newer`` names a column: an existing row is only updated when the incoming
    value of that column is not older (the ordering guard of mirrored data).
    """
    if not rows:
        return
    dialect = db.engine.dialect.name
    if dialect == "postgresql" and len(rows) >= COPY_THRESHOLD:
        _copy_upsert(table, rows, index_elements, update, only_if_newer)
        return
    stmt = _statement(dialect, table, tuple(index_elements), tuple(update), only_if_newer)
    connection = db.session.connection()
    for start in range(0, len(rows), 5000):
        connection.execute(stmt, rows[start:start + 5000])


@functools.lru_cache(maxsize=256)
def _statement(dialect: str, table: Table, index_elements: tuple[str, ...],
               update: tuple[str, ...], only_if_newer: str | None):
    """The upsert statement, built once: webhooks run it for a row or two at a time."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(table)
    return stmt.on_conflict_do_update(
        index_elements=list(index_elements),
        set_={c: getattr(stmt.excluded, c) for c in update},
        where=(table.c[only_if_newer] <= getattr(stmt.excluded, only_if_newer))
        if only_if_newer else None,
    )


def _copy_upsert(table: Table, rows: list[dict[str, Any]], index_elements: list[str],
                 update: list[str], only_if_newer: str | None) -> None:
    # One row per key (a merge may not touch a row twice); the last one wins.
    unique = {tuple(r[c] for c in index_elements): r for r in rows}
    columns = list(rows[0])
    json_columns = {c for c in columns if isinstance(table.c[c].type, JSON)}
    temp = sql.Identifier(f"_bulk_{table.name}")
    target = sql.Identifier(table.name)
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    raw = db.session.connection().connection.driver_connection
    with raw.cursor() as cur:
        cur.execute(sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} ON COMMIT DELETE ROWS AS "
                            "SELECT {} FROM {} WITH NO DATA").format(temp, cols, target))
        with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(temp, cols)) as copy:
            _write_rows(copy, unique.values(), columns, json_columns)
        assignments = sql.SQL(", ").join(
            sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(c), sql.Identifier(c))
            for c in update)
        guard = sql.SQL("")
        if only_if_newer:
            guard = sql.SQL(" WHERE {}.{} <= EXCLUDED.{}").format(
                target, sql.Identifier(only_if_newer), sql.Identifier(only_if_newer))
        cur.execute(sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} ON CONFLICT ({}) "
                            "DO UPDATE SET {}{}").format(
            target, cols, cols, temp,
            sql.SQL(", ").join(sql.Identifier(c) for c in index_elements), assignments, guard))
        cur.execute(sql.SQL("TRUNCATE {}").format(temp))


def _json_text(value: Any) -> str:
    """A JSON column's value as COPY text: orjson (the stdlib encoder behind psycopg's
    ``Jsonb`` took a tenth of the sync's writing thread), the stdlib for what orjson
    refuses (non-string keys, integers beyond 64 bits)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value)


def _write_rows(copy: Any, rows: Any, columns: list[str], json_columns: set[str]) -> None:
    """Rows to a text-format COPY; JSON columns as JSON text (PostgreSQL parses it)."""
    if not json_columns:
        for row in rows:
            copy.write_row([row[c] for c in columns])
        return
    for row in rows:
        copy.write_row([_json_text(row[c]) if c in json_columns and row[c] is not None
                        else row[c] for c in columns])


def among(column, values: list) -> Any:
    """``column IN values`` for long lists: on PostgreSQL one array parameter
    (``= ANY(%s)``) instead of a thousand placeholders to render, send and parse."""
    if db.engine.dialect.name == "postgresql":
        return column == any_(bindparam(None, list(values),
                                        type_=postgresql.ARRAY(column.type)))
    return column.in_(values)


def copies(rows: int) -> bool:
    """Whether a batch this large is written with COPY (PostgreSQL only)."""
    return db.engine.dialect.name == "postgresql" and rows >= COPY_THRESHOLD


def next_ids(table: Table, n: int) -> list[int]:
    """``n`` fresh ids from the table's ``id`` sequence (PostgreSQL), in one round trip:
    rows COPYed with them are known by id without a ``RETURNING``."""
    return list(db.session.execute(
        text("SELECT nextval(pg_get_serial_sequence(:table, 'id')) "
             "FROM generate_series(1, :n)"), {"table": table.name, "n": n}).scalars())


def copy_rows(table: Table, rows: list[dict[str, Any]]) -> None:
    """COPY rows into ``table`` (PostgreSQL). Every column without a server default must
    be given: Python-side defaults do not apply. A unique violation fails the whole COPY."""
    columns = list(rows[0])
    json_columns = {c for c in columns if isinstance(table.c[c].type, JSON)}
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    raw = db.session.connection().connection.driver_connection
    with raw.cursor() as cur, cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(
            sql.Identifier(table.name), cols)) as copy:
        _write_rows(copy, rows, columns, json_columns)


def insert_new(table: Table, rows: list[dict[str, Any]], index_elements: list[str],
               update: list[str]) -> None:
    """Insert rows the caller believes are not stored yet; ``upsert`` any that are.

    On PostgreSQL a large batch is COPYed straight into the table (no temporary table,
    no conflict handling: about twice as fast, for an initial sync's trait rows), inside
    a savepoint; if a concurrent writer stored one of the keys meanwhile, the COPY fails
    as a whole and the batch goes through ``upsert`` instead. Elsewhere: ``upsert``.
    """
    if not rows:
        return
    if not copies(len(rows)):
        upsert(table, rows, index_elements, update)
        return
    unique = list({tuple(r[c] for c in index_elements): r for r in rows}.values())
    copy_or(table, unique, lambda: upsert(table, rows, index_elements, update))


def copy_or(table: Table, rows: list[dict[str, Any]], fallback: Callable[[], Any]) -> None:
    """COPY ``rows`` inside a savepoint; if a key is taken (a concurrent writer), roll the
    savepoint back and run ``fallback`` (the conflict-handling statement) instead."""
    try:
        with db.session.begin_nested():
            copy_rows(table, rows)
    except (UniqueViolation, IntegrityError):
        fallback()

