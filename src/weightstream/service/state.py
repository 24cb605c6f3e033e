"""What the routes share: the processor, the group commit, the keys, the settings.

One :class:`Service` per app, built by :func:`weightstream.service.app.create_app` and kept
on ``app.state.service``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Request

from weightstream.clock import Clock
from weightstream.config import Config
from weightstream.observe import Observer
from weightstream.processor import Estimate, Processor
from weightstream.service.commit import GroupCommitter
from weightstream.service.keys import KeyStore
from weightstream.service.settings import ServiceSettings

__all__ = ["Service", "service_of"]


@dataclass
class Service:
    """The objects behind the routes (see the module docstring)."""

    processor: Processor
    committer: GroupCommitter
    keys: KeyStore
    settings: ServiceSettings
    observer: Observer

    @property
    def config(self) -> Config:
        return self.processor.config

    @property
    def clock(self) -> Clock:
        return self.processor.clock

    def estimate(self, user_id: str) -> Estimate | None:
        """The user's estimate (on the store thread); re-read from the store when other
        processes write to it (``settings.shared_store``)."""
        if self.settings.shared_store:
            self.processor.refresh([user_id])
        return self.processor.estimate(user_id)

    def recover(self, user_id: str, *, apply: bool) -> dict[str, Any] | None:
        """Rebuild ``user_id`` from history; store it if ``apply`` (on the store thread).

        The sequence of ``weightstream recover --apply``: a live row that does not decode is
        replaced as a repair, any other by the rebuilt state. None for a user with no stored
        readings.
        """
        from weightstream.repair import store_rebuild
        from weightstream.replay import rebuild_user

        store, cfg = self.processor.store, self.config
        rebuild = rebuild_user(store, user_id, cfg)
        if rebuild.readings == 0:
            return None
        diffs = rebuild.differences()
        stored = None
        applied = False
        if apply and (diffs or rebuild.changed):
            try:
                stored = store_rebuild(
                    store,
                    user_id,
                    cfg,
                    rebuild,
                    validator=self.processor.validator,
                    clock=self.clock,
                )
            finally:
                self.processor.forget([user_id])
            applied = True
        version = stored.version if stored is not None else None
        if version is None and rebuild.live is not None:
            version = rebuild.live.version
        return {
            "user_id": user_id,
            "readings": rebuild.readings,
            "changed": len(rebuild.changed),
            "differences": diffs,
            "applied": applied,
            "version": version,
        }


def service_of(request: Request) -> Service:
    """The app's :class:`Service`."""
    service: Service = request.app.state.service
    return service
