"""Loads every model package of the model repository; a package that fails is kept with its error
and never takes the others down."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prelabel_models import ModelCard, ModelPackage, ModelPackageError, find_packages
from prelabel_models.backends import Backend, create_backend, resolve_backend_name
from prelabel_models.backends.onnx_backend import check_exported_from_weights, recorded_weights_digest
from prelabel_models.card import CARD_FILE
from prelabel_models.predictor import Predictor
from prelabel_proto.errors import FailedPrecondition, InvalidInput, ModelNotFound, ModelUnavailable
from prelabel_server import metrics
from prelabel_server.batching import DynamicBatcher
from prelabel_server.device_fallback import DeviceFallback
from prelabel_server.settings import ServerSettings

log = logging.getLogger(__name__)


@dataclass
class ServedModel:
    """A model package and, once loaded, the predictor that serves it."""

    name: str
    folder: Path
    state: str = "loading"
    card: ModelCard | None = None
    predictor: Predictor | None = None
    batcher: DynamicBatcher | None = None
    error: str = ""
    degradation: str = ""  # why it runs below its device (see device_fallback); empty when it does not
    fingerprint: tuple = ()  # its files when loading began (see package_fingerprint)

    @property
    def backend(self) -> str:
        return self.predictor.backend.name if self.predictor else ""

    @property
    def device(self) -> str:
        return self.predictor.backend.device if self.predictor else ""


def package_fingerprint(folder: Path) -> tuple:
    """Name, size and modification time of each file of a package: changes when any file is rewritten."""
    return tuple(sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file()))


class ModelRegistry:
    def __init__(self, settings: ServerSettings) -> None:
        self._settings = settings
        self._models: dict[str, ServedModel] = {}
        self._lock = threading.Lock()
        self._reload_lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []
        self._unloadable: dict[Path, tuple] = {}  # fingerprints of package versions that failed to load
        self._chosen_default = ""  # without PRELABEL_DEFAULT_MODEL: the default, kept while it can serve

    def load_all(self) -> None:
        for folder in find_packages(self._settings.model_repository):
            served = self._load(folder)
            with self._lock:
                if served.name in self._models:
                    served = self._duplicate(served, self._models[served.name])
                self._models[served.name] = served
        default = self._settings.default_model
        if default and default not in self._models:
            raise ModelPackageError(f"PRELABEL_DEFAULT_MODEL names {default!r}, which no package in "
                                    f"{self._settings.model_repository} declares: choose one of {sorted(self._models)}, "
                                    "or leave it empty for the first ready model")

    @staticmethod
    def _duplicate(served: ServedModel, first: ServedModel) -> ServedModel:
        """``served``, a second package claiming ``first``'s model name, as a failed model under its own
        name (so health and ListModels tell them apart): it never replaces ``first``. It keeps its
        fingerprint, so the repository watcher sees it as tried and leaves it until its files change."""
        if served.batcher is not None:
            served.batcher.stop()
        # A card that cannot be read claims no name: it is listed by its folder's, and its own error
        # (the card's) is what to fix, not a duplicate name.
        error = (served.error if served.card is None
                 else f"duplicate model name {served.name!r} (also in {first.folder})")
        return ServedModel(f"{served.name}@{served.folder.name}", served.folder, "failed", served.card,
                           error=error, fingerprint=served.fingerprint)

    def _load(self, folder: Path) -> ServedModel:
        if not folder.is_dir():  # deleted since the server started: a reload has nothing to load
            raise FailedPrecondition(f"model package folder {folder} is gone; the version loaded before, if any, "
                                     "keeps serving until restart")
        served = ServedModel(name=folder.name, folder=folder, fingerprint=package_fingerprint(folder))
        try:
            package = ModelPackage.open(folder)
            served.name, served.card = package.card.name, package.card
            backend = create_backend(self._settings.backend, package, device=self._settings.device or None,
                                     **self._backend_options())
            if backend.device.startswith("cuda"):
                backend = self.with_cpu_fallback(served, backend, package)
            served.predictor = Predictor(package.card, backend, tile_batch=self._settings.tile_batch,
                                         device_maps=self._settings.device_maps)
            if self._settings.batching:
                served.batcher = DynamicBatcher(served.name, served.predictor, package.card.max_batch_size,
                                                package.card.max_queue_delay_ms, self._settings.max_queue_size)
            served.state = "ready"
            log.info("package %s loaded: model %s version %s on %s (%s)", folder, served.name, package.card.version,
                     backend.name, backend.device)  # filed, or refused as a duplicate name, by the caller
        except Exception as exc:  # any failure is reported per model, not raised
            served.state, served.error = "failed", f"{type(exc).__name__}: {exc}"
            log.error("model package %s failed to load: %s", folder, served.error)
        return served

    def with_cpu_fallback(self, served: ServedModel, backend: Backend, package: ModelPackage) -> DeviceFallback:
        """``backend`` (on an accelerator) with ONNX Runtime on the CPU behind it; see device_fallback.
        The fallback is made only once the device fails, from graphs that must come from the weights
        ``backend`` loaded; graphs that do not are said at load, not first found when the GPU fails."""
        digest = getattr(backend, "weights_digest", None)
        try:
            check_exported_from_weights(package, recorded_weights_digest(package.onnx_path), digest)
        except Exception as exc:  # only said here: the fallback is made, and fails for itself, when needed
            log.warning("model %s has no CPU fallback should its device fail: %s", served.name, exc)
        return DeviceFallback(backend, lambda: create_backend("onnx", package, device="cpu", pin_mc_graphs=False,
                                                              weights_digest=digest),
                              on_degraded=lambda reason: self._set_degradation(served, reason),
                              on_recovered=lambda: self._set_degradation(served, ""))

    def _set_degradation(self, served: ServedModel, reason: str) -> None:
        if reason:
            metrics.DEVICE_FALLBACKS.labels(served.name).inc()
        metrics.DEGRADED.labels(served.name).set(1 if reason else 0)
        changed, served.degradation = served.degradation != reason, reason
        if changed:
            self._notify()

    def loaded_fingerprints(self) -> dict[Path, tuple]:
        """Each package folder's fingerprint as last loaded (or as last failed to load)."""
        with self._lock:
            return {m.folder: m.fingerprint for m in self._models.values()} | self._unloadable

    def holds(self, folder: Path) -> bool:
        """Whether a model (served or failed) came from ``folder``."""
        with self._lock:
            return any(m.folder == folder for m in self._models.values())

    def forget_failed_without_folder(self) -> list[str]:
        """Drops failed entries whose package folder is gone: with nothing left to fix or reload,
        they kept health NOT_SERVING (and an operator's alert firing) until a restart. A served
        model whose folder goes keeps serving."""
        with self._lock:
            gone = [name for name, m in self._models.items() if m.state == "failed" and not m.folder.is_dir()]
            for name in gone:
                del self._models[name]
            # A folder that comes back (moved out and in again keeps its files' times) is then new
            for folder in [folder for folder in self._unloadable if not folder.is_dir()]:
                del self._unloadable[folder]
        if gone:
            log.info("failed models %s dropped: their package folders are gone", gone)
            self._notify()
        return gone

    def remember_fingerprint(self, folder: Path) -> None:
        """Marks the folder's current files as tried (they failed): the watcher waits for a change."""
        with self._lock:
            self._unloadable[folder] = package_fingerprint(folder)

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Called after any model's state changes (reload, degradation): health follows the models."""
        self._listeners.append(listener)

    def _notify(self) -> None:
        for listener in self._listeners:
            listener()

    def _backend_options(self) -> dict[str, object]:
        options: dict[str, object] = {}
        if self._settings.inference_threads:
            options["threads"] = self._settings.inference_threads
        if self._settings.fp16:
            options["fp16"] = True
        if resolve_backend_name(self._settings.backend) == "onnx":
            options["spin_wait"] = self._settings.onnx_spin_wait
        else:
            options["cuda_graphs"] = self._settings.cuda_graphs
        return options

    def reload(self, name: str) -> tuple[ServedModel, str]:
        """Loads model ``name`` again and swaps it in; returns it and the version it replaced.

        Requests already holding the old model finish on it (its batcher drains its queue before
        it stops). A failed load leaves the old model serving and raises FailedPrecondition.
        """
        if not name:
            raise InvalidInput("ReloadModel needs the model's name")
        try:
            return self._swap_in(self._folder_of(name))
        finally:
            self._notify()

    def reload_folder(self, folder: Path) -> tuple[ServedModel, str]:
        """Like ``reload``, for the package in ``folder`` (the repository watcher knows folders, not
        names: a new folder may hold a new model, or a duplicate of one already served)."""
        try:
            return self._swap_in(folder)
        finally:
            self._notify()

    def _swap_in(self, folder: Path) -> tuple[ServedModel, str]:
        """Loads ``folder`` and files it under its card's name, as ``load_all`` would: a package that
        claims a name another folder serves is a failed duplicate, and failed entries this folder left
        under other names (its folder name while its card was unreadable, or a duplicate's name) go."""
        with self._reload_lock:
            fresh = self._load(folder)
            with self._lock:
                if fresh.card is None:  # unreadable card: its entry stays under the name it had
                    fresh.name = next((key for key, m in self._models.items() if m.folder == folder), fresh.name)
                first = self._models.get(fresh.name)
                if first is not None and first.folder != folder and (first.folder / CARD_FILE).is_file():
                    fresh = self._duplicate(fresh, first)
                name, old = fresh.name, self._models.get(fresh.name)
                if fresh.state != "ready" and old is not None and old.state == "ready":
                    raise FailedPrecondition(f"model {name!r} failed to load from {fresh.folder}; still serving "
                                             f"version {old.card.version!r}: {fresh.error}")
                self._models[name] = fresh
                # What this folder served under another name goes: a failed entry (its folder name while
                # its card was unreadable, or a duplicate's name), or the model before its card was renamed.
                retired = [self._models.pop(key) for key, m in list(self._models.items())
                           if m.folder == folder and key != name and (m.state == "failed" or fresh.state == "ready")]
                self._unloadable.pop(folder, None)
            for gone in [old, *retired]:
                if gone is not None and gone.batcher is not None:
                    gone.batcher.stop()
            if any(gone.state == "ready" for gone in retired):
                log.warning("the package in %s now names itself %r: %s no longer served", folder, name,
                            [gone.name for gone in retired if gone.state == "ready"])
            if fresh.state != "ready":
                raise FailedPrecondition(f"model {name!r} failed to load from {fresh.folder}: {fresh.error}")
            previous = old.card.version if old is not None and old.card is not None and old.state == "ready" else ""
            if previous:
                log.info("model %s reloaded: version %r -> %r", name, previous, fresh.card.version)
            else:
                log.info("model %s loaded: version %r", name, fresh.card.version)
            if previous == fresh.card.version and old.fingerprint != fresh.fingerprint:
                log.warning("model %s serves changed files under the same version %r: responses, manifests and "
                            "`predict --resume` cannot tell the two apart; give the card a new version", name, previous)
            return fresh, previous

    def _folder_of(self, name: str) -> Path:
        with self._lock:
            if name in self._models:
                return self._models[name].folder
        for folder in find_packages(self._settings.model_repository):
            try:
                if ModelPackage.open(folder).card.name == name:
                    return folder
            except ModelPackageError:
                continue
        raise ModelNotFound(f"no package for model {name!r} in {self._settings.model_repository}")

    def close(self) -> None:
        for served in self.all():
            if served.batcher is not None:
                served.batcher.stop()

    def all(self) -> list[ServedModel]:
        with self._lock:
            return sorted(self._models.values(), key=lambda m: m.name)

    @property
    def default_name(self) -> str:
        """PRELABEL_DEFAULT_MODEL, else the first ready model by name, chosen once and kept while it
        is ready: a package added later whose name sorts first took every request that names no
        model from the one the operator saw at start-up, and nothing said so."""
        if self._settings.default_model:
            return self._settings.default_model
        with self._lock:
            chosen = self._models.get(self._chosen_default)
            if chosen is not None and chosen.state == "ready":
                return chosen.name
            ready = sorted(name for name, m in self._models.items() if m.state == "ready")
            previous, self._chosen_default = self._chosen_default, ready[0] if ready else ""
        if previous and previous != self._chosen_default:
            log.warning("default model is now %r: %r is no longer ready (set PRELABEL_DEFAULT_MODEL to fix the "
                        "default)", self._chosen_default or None, previous)
        return self._chosen_default

    def metric_label(self, name: str) -> str:
        """The model name for metrics labels; unknown names collapse into one label."""
        name = name or self.default_name
        with self._lock:
            return name if name in self._models else "unknown"

    def get(self, name: str) -> ServedModel:
        """The named (or default) model, whatever its state."""
        name = name or self.default_name
        with self._lock:
            served = self._models.get(name)
            known = sorted(self._models)
        if served is None:
            if not name:
                raise FailedPrecondition("no model is ready to serve as default: the repository holds none that "
                                         "loaded (ListModels shows their errors); fix one, then ReloadModel")
            setting = " (the default model, PRELABEL_DEFAULT_MODEL)" if name == self._settings.default_model else ""
            raise ModelNotFound(f"no model named {name!r}{setting}; available: {known}")
        return served

    def ready(self, name: str, version: str = "") -> ServedModel:
        """The named (or default) model if it can serve now."""
        served = self.get(name)
        if served.state == "failed":  # permanent until fixed and reloaded: retrying would not help
            raise FailedPrecondition(f"model {served.name!r} failed to load: {served.error} "
                                     "(fix the package, then ReloadModel)")
        if served.state != "ready" or served.predictor is None or served.card is None:
            raise ModelUnavailable(f"model {served.name!r} is still loading: retry shortly")
        if version and version != served.card.version:
            raise ModelNotFound(f"model {served.name!r} has no version {version!r}; serving version {served.card.version!r}")
        return served
