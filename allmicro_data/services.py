"""The shared parts a process works with: settings, catalogue engine and sessions, object store."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from allmicro_data import notifications, passwords
from allmicro_data.catalogue.db import (
    create_catalogue_engine,
    make_session_factory,
    session_scope,
)
from allmicro_data.replica_catchup import open_settings_store
from allmicro_data.settings import Settings
from allmicro_data.storage import ObjectStore


@dataclass
class Services:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    store: ObjectStore
    # Called after jobs are queued, so an in-process runner starts at once instead of polling.
    wake_jobs: Callable[[], None] = field(default=lambda: None)

    @classmethod
    def from_settings(cls, settings: Settings) -> Services:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        passwords.configure(
            passwords.HashCost(
                settings.argon2_time_cost, settings.argon2_memory_kib, settings.argon2_parallelism
            )
        )
        notifications.configure(settings)
        engine = create_catalogue_engine(
            settings.resolved_database_url,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            pool_timeout=settings.db_pool_timeout,
        )
        sessions = make_session_factory(engine)
        return cls(
            settings=settings,
            engine=engine,
            sessions=sessions,
            store=open_settings_store(settings, sessions),
        )

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A unit of work: commits on success, rolls back on error."""
        with session_scope(self.sessions) as session:
            yield session

    def close(self) -> None:
        self.engine.dispose()
