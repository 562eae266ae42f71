"""Watches the model repository: a package whose files changed is reloaded, a new package is loaded.

This closes the active-learning loop without an admin call: ``prelabel train --init ... --out
models/camvid`` rewrites the served package and the server swaps the new version in (atomically,
through ``ModelRegistry.reload``). Polling, as Triton's ``--model-control-mode=poll`` does, rather
than file-system events: a package is several files written one after another, so a change is
only acted on once the package has looked the same for two polls in a row — never half-copied.
A package that disappears keeps serving (unloading on a missing folder would turn a botched copy
into an outage); restart the server to drop it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from pathlib import Path

from prelabel_models import ModelPackage, ModelPackageError, find_packages
from prelabel_proto.errors import PrelabelError
from prelabel_server.registry import ModelRegistry, package_fingerprint

log = logging.getLogger(__name__)


class RepositoryWatcher:
    def __init__(self, registry: ModelRegistry, repository: Path, interval_seconds: float) -> None:
        self._registry = registry
        self._repository = repository
        self._interval = interval_seconds
        self._previous_poll: dict[Path, tuple] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="repository-watcher", daemon=True)

    def start(self) -> "RepositoryWatcher":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.poll()
            except Exception:  # a bad poll must not end the watching
                log.exception("polling model repository %s failed", self._repository)

    def poll(self) -> list[str]:
        """Reloads every package that changed and has since stayed the same; returns their names."""
        self._registry.forget_failed_without_folder()
        current = {folder: package_fingerprint(folder) for folder in find_packages(self._repository)}
        loaded = self._registry.loaded_fingerprints()
        settled = [folder for folder, fingerprint in current.items()
                   if fingerprint != loaded.get(folder) and fingerprint == self._previous_poll.get(folder)]
        self._previous_poll = current
        reloaded = []
        for folder in settled:
            try:
                reloaded.append(self._reload(folder))
            except Exception:  # one package's surprise must not hold back the others' updates
                log.exception("model package %s changed but could not be reloaded", folder)
                with contextlib.suppress(OSError):  # gone meanwhile: nothing to remember
                    self._registry.remember_fingerprint(folder)
        return [name for name in reloaded if name]

    def _reload(self, folder: Path) -> str:
        try:
            ModelPackage.open(folder)
            readable = True
        except ModelPackageError as exc:
            if self._registry.holds(folder):  # the version loaded before keeps serving
                log.error("model package %s changed but cannot be read: %s", folder, exc)
                self._registry.remember_fingerprint(folder)  # do not retry until it changes again
                return ""
            # a new folder goes on to be listed FAILED with its error, as at start-up: ListModels
            # and health showed nothing of it, only this log did
            readable = False
        try:  # by folder, not by the card's name: that name may be another folder's (a duplicate)
            served, _ = self._registry.reload_folder(folder)
        except PrelabelError as exc:
            if readable:  # an unreadable card's error the registry has just logged
                log.error("model package %s changed but did not load (the previous version, if any, keeps "
                          "serving): %s", folder, exc)
            self._registry.remember_fingerprint(folder)
            return ""
        log.info("model %s reloaded from %s after it changed", served.name, folder)
        return served.name
