"""The applications' database layer: SQLite by default (one file, zero setup) or PostgreSQL by URL, through one
set of SQLAlchemy Core statements.

SQLite runs in WAL mode with synchronous=FULL (a committed write survives a kill -9 and a power cut), a busy
timeout and foreign keys on, and write transactions take its lock at BEGIN (BEGIN IMMEDIATE) so that concurrent
writers wait their turn instead of failing. PostgreSQL goes through psycopg 3 with a connect timeout. The tables
are created, and their schema version checked, when a database is opened.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Column, Engine, MetaData, String, Table, Text, create_engine, event, func, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, OperationalError

from lmadapt.errors import LmadaptError

SQLITE_BUSY_TIMEOUT_MS = 30_000
SCHEMA_LOCK_KEY = 0x6C6D_6164  # PostgreSQL advisory lock held while one process creates or checks the schema
URL_FIX = "use sqlite:///path/to/file.db (the default) or postgresql://user:password@host:5432/database"


def meta_table(metadata: MetaData) -> Table:
    """The table of an application's settings that travel with its data (its schema version)."""
    return Table("meta", metadata, Column("key", String(64), primary_key=True), Column("value", Text, nullable=False))


def database_url(url: str, what: str) -> URL:
    """The URL SQLAlchemy opens: SQLite with its folder created, or PostgreSQL through psycopg 3."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise LmadaptError(f"'{url}' is not a database URL", where=what, fix=URL_FIX) from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database in (None, "", ":memory:") or parsed.database.startswith("file:"):
            raise LmadaptError(
                "an in-memory SQLite database would lose everything on restart",
                where=url,
                fix="give a file: sqlite:///path/to/file.db",
            )
        try:
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise LmadaptError(f"cannot create the database's folder: {error}", where=url) from None
        return parsed.set(drivername="sqlite", database=str(Path(parsed.database).expanduser()))
    if backend == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
        if "connect_timeout" not in parsed.query:  # a host that drops packets would otherwise hang the service
            parsed = parsed.update_query_dict({"connect_timeout": "10"})
        return parsed
    raise LmadaptError(f"unsupported database '{backend}'", where=parsed.render_as_string(), fix=URL_FIX)


def _sqlite_settings(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def configure(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself (below), sqlite3 keeps out of it
        cursor = dbapi_connection.cursor()
        for pragma in (
            "journal_mode=WAL",
            "synchronous=FULL",
            f"busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
            "foreign_keys=ON",
        ):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def begin(connection):
        # A deferred transaction that reads and then writes cannot wait for the lock in WAL mode (SQLITE_BUSY at
        # once), so writes take the lock at BEGIN, where the busy timeout applies.
        writing = connection.get_execution_options().get("lmadapt_write", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if writing else "BEGIN")


class Database:
    """An application's tables (`metadata`, holding a meta_table) in the database at `url`, created on first use;
    a database written by a newer schema than `schema_version` is refused. Safe to share between threads;
    several processes may open one database."""

    def __init__(self, url: str, metadata: MetaData, schema_version: int, version_key: str = "schema_version"):
        parsed = database_url(url, "database URL")
        self.where = parsed.render_as_string(hide_password=True)
        self.dialect = parsed.get_backend_name()
        try:
            self.engine = create_engine(parsed, pool_pre_ping=self.dialect == "postgresql")
        except ModuleNotFoundError as error:
            raise LmadaptError(
                f"the PostgreSQL driver is not installed ({error.name})",
                where=self.where,
                fix="pip install 'lmadapt[postgres]'",
            ) from None
        if self.dialect == "sqlite":
            _sqlite_settings(self.engine)
        self._writer = self.engine.execution_options(lmadapt_write=True)
        # SQLite has one writer at a time: this process's writers queue on a lock rather than in SQLite's busy
        # handler, whose sleeps (up to 100 ms each) would stretch the slowest requests under load.
        self._write_lock = threading.Lock()
        try:
            self._prepare_schema(metadata, schema_version, version_key)
        except OperationalError as error:
            self.engine.dispose()
            reason = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
            raise LmadaptError(
                f"cannot open the database: {reason}",
                where=self.where,
                fix="check the URL, that the server is running and reachable, and the credentials",
            ) from None
        except LmadaptError:
            self.engine.dispose()
            raise

    @contextmanager
    def writing(self) -> Iterator[Connection]:
        """A write transaction, committed on leaving the block (rolled back on an error)."""
        with self._write_lock, self._writer.begin() as conn:
            yield conn

    def reading(self):
        """A connection for reads."""
        return self.engine.connect()

    def _prepare_schema(self, metadata: MetaData, schema_version: int, version_key: str) -> None:
        meta = metadata.tables["meta"]
        with self.writing() as conn:
            if conn.dialect.name == "postgresql":  # two services starting at once must not both create tables
                conn.execute(select(func.pg_advisory_xact_lock(SCHEMA_LOCK_KEY)))
            metadata.create_all(conn)
            found = conn.execute(select(meta.c.value).where(meta.c.key == version_key)).scalar()
            if found is None:
                conn.execute(meta.insert().values(key=version_key, value=str(schema_version)))
            elif int(found) > schema_version:
                raise LmadaptError(
                    f"the database has schema version {found}, newer than this lmadapt reads ({schema_version})",
                    where=self.where,
                    fix="upgrade lmadapt (pip install -U lmadapt), or give a different database",
                )

    def upsert(
        self, conn: Connection, table: Table, keys: Sequence[str], rows: list[dict], add: Sequence[str] = ()
    ) -> None:
        """Insert rows; a row whose `keys` are already there updates the stored one instead: the columns in `add`
        are added to, the others replaced."""
        if not rows:
            return
        insert = (sqlite_insert if self.dialect == "sqlite" else postgresql_insert)(table)
        changes = {
            name: table.c[name] + insert.excluded[name] if name in add else insert.excluded[name]
            for name in rows[0]
            if name not in keys
        }
        conn.execute(insert.on_conflict_do_update(index_elements=list(keys), set_=changes), rows)

    def close(self) -> None:
        self.engine.dispose()
