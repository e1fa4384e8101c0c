"""Statements for hot paths: compiled by SQLAlchemy once, run on the driver's own cursor."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from services.common.tracing import statement_span


class Prepared:
    """A Core statement compiled once per dialect by SQLAlchemy and run on the driver's own
    cursor, in the session's (or connection's) transaction.

    SQLAlchemy's execution layer costs about 30 µs per statement on top of the driver (an
    execution context, parameter and result set-up, events): more than the statement itself
    on SQLite. Statements on a hot path (a money movement, the gateway's audit append) skip
    it: the SQL, the bind order and each type's bind conversion (UTC timestamps, SQLite's
    datetime strings) still come from SQLAlchemy's compiler, once. Driver errors surface as SQLAlchemy's exceptions, as through
    SQLAlchemy (`as_sqlalchemy_error`)."""

    def __init__(self, statement: Any, column_keys: list[str] | None = None) -> None:
        self.statement = statement
        self.column_keys = column_keys
        self._compiled: dict[Any, tuple[str, tuple[str, ...] | None, dict[str, Any], list[tuple[str, Any]]]] = {}

    def _for(self, dialect: Any) -> tuple[str, tuple[str, ...] | None, dict[str, Any], list[tuple[str, Any]]]:
        compiled = self._compiled.get(dialect)
        if compiled is None:
            kw = {"column_keys": self.column_keys} if self.column_keys is not None else {}
            c = self.statement.compile(dialect=dialect, **kw)
            order = tuple(c.positiontup) if c.positional else None
            defaults: dict[str, Any] = {}  # the literals it carries (the 0 in `... >= 0`)
            processors = []
            for bind, name in c.bind_names.items():  # each bind parameter, by its rendered name
                if not bind.required and bind.effective_value is not None:
                    defaults[name] = bind.effective_value
                processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
                if processor is not None:
                    processors.append((name, processor))
            compiled = self._compiled[dialect] = (c.string, order, defaults, processors)
        return compiled

    def _params(self, dialect: Any, params: dict[str, Any]) -> tuple[str, Any]:
        sql, order, defaults, processors = self._for(dialect)
        values = {**defaults, **params} if defaults else dict(params)
        for name, processor in processors:
            if name in values:
                values[name] = processor(values[name])
        return sql, (tuple(values[name] for name in order) if order is not None else values)

    def execute(self, session: Session | Connection, params: dict[str, Any]) -> Any:
        """Execute with one set of parameters, in the session's transaction (or on a connection
        a caller already took from it, which saves the session's look-up for each statement);
        the driver's cursor, for fetching."""
        conn = session if isinstance(session, Connection) else session.connection()
        sql, bound = self._params(conn.dialect, params)
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        with statement_span(conn.dialect.name, sql):
            try:
                cursor.execute(sql, bound)
            except conn.dialect.loaded_dbapi.Error as exc:
                raise as_sqlalchemy_error(conn, exc, sql, bound, cursor) from exc
        return cursor


def as_sqlalchemy_error(conn: Any, exc: Exception, sql: str, params: Any, cursor: Any) -> DBAPIError:
    """A driver error as SQLAlchemy would raise it (IntegrityError, OperationalError, ...), and a
    lost connection invalidated, so the pool replaces it, as for any statement run through it."""
    disconnect = conn.dialect.is_disconnect(exc, conn.connection.dbapi_connection, cursor)
    if disconnect:
        conn.invalidate(exc)
    return DBAPIError.instance(sql, params, exc, conn.dialect.loaded_dbapi.Error,
                               connection_invalidated=disconnect, dialect=conn.dialect)
