"""Columns and indexes added to a table after a database was created: `metadata.create_all`
makes missing tables only, so an existing database gets them here at start-up (old rows take
the column's default, else NULL)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, Engine, MetaData, inspect, text
from sqlalchemy.exc import DBAPIError


def add_missing_columns(engine: Engine, metadata: MetaData) -> list[str]:
    """Add every column and index the tables of `metadata` declare and the database lacks;
    returns what was added, as `table.name`. Run after `create_all`."""
    added: list[str] = []
    for table in metadata.sorted_tables:
        inspector = inspect(engine)
        if not inspector.has_table(table.name):
            continue
        existing = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in existing:
                _add_column(engine, table.name, column)
                added.append(f"{table.name}.{column.name}")
        indexes = {i["name"] for i in inspector.get_indexes(table.name)}
        for index in table.indexes:
            if index.name not in indexes:
                index.create(engine, checkfirst=True)
                added.append(f"{table.name}.{index.name}")
    return added


def _add_column(engine: Engine, table: str, column: Column[Any]) -> None:
    default = _default_sql(column)
    if not column.nullable and default is None:
        raise RuntimeError(f"cannot add {table}.{column.name} to existing rows: NOT NULL and no default")
    quote = engine.dialect.identifier_preparer.quote
    ddl = f"ALTER TABLE {quote(table)} ADD COLUMN {quote(column.name)} {column.type.compile(dialect=engine.dialect)}"
    if default is not None:
        ddl += f" DEFAULT {default}"
    if not column.nullable:
        ddl += " NOT NULL"
    try:
        with engine.begin() as conn:
            conn.execute(text(ddl))
    except DBAPIError:
        # Another process (a second worker starting) may have added it a moment ago.
        if column.name not in {c["name"] for c in inspect(engine).get_columns(table)}:
            raise


def _default_sql(column: Column[Any]) -> str | None:
    """The value old rows get: the server default as written, else a scalar Python default."""
    if column.server_default is not None:
        arg = column.server_default.arg  # type: ignore[attr-defined]
        return arg.text if hasattr(arg, "text") else _literal(arg)
    if column.default is not None and column.default.is_scalar:
        return _literal(column.default.arg)  # type: ignore[attr-defined]
    return None


def _literal(value: object) -> str:
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"
