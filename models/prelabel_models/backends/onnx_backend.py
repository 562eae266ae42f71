"""ONNX Runtime backend for the CPU (or CUDA with onnxruntime-gpu). Never imports torch."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnxruntime as ort

from prelabel_models.backends import DeviceUnavailable
from prelabel_models.package import WEIGHTS_DIGEST_KEY, ModelPackage, ModelPackageError
from prelabel_models.postprocessing import MapRequest, SegmentationMaps, maps_of_batch

INPUT_NAME = "images"
OUTPUT_NAME = "logits"
FEATURES_NAME = "features"
MASK_NAME = "dropout_mask"
EMBEDDING_NAME = "embedding"


def _digests(graphs: tuple[bytes, ...]) -> tuple[str, ...]:
    return tuple(hashlib.sha256(graph).hexdigest() for graph in graphs)


def _providers(device: str) -> list[str]:
    return ["CUDAExecutionProvider", "CPUExecutionProvider"] if device.startswith("cuda") else ["CPUExecutionProvider"]


def _recorded_digest(session: ort.InferenceSession) -> str:
    return session.get_modelmeta().custom_metadata_map.get(WEIGHTS_DIGEST_KEY, "")


def recorded_weights_digest(graph: Path) -> str:
    """The weights digest an exported graph records, read without building a session (with the
    onnx package, which a server with the torch backend has)."""
    import onnx

    properties = onnx.load(str(graph), load_external_data=False).metadata_props
    return next((prop.value for prop in properties if prop.key == WEIGHTS_DIGEST_KEY), "")


def check_exported_from_weights(package: ModelPackage, recorded: str, expected: str | None = None) -> None:
    """Refuses ONNX files made from other weights than ``expected`` (a digest: the weights another
    backend serves this version from), by default the package's weights file as it is now (a
    package without one is served from its ONNX file alone)."""
    if expected is None and not package.weights_path.is_file():
        return
    export = f"run `prelabel export {package.folder}` to export them"
    if not recorded:
        raise ModelPackageError(f"{package.onnx_path.name} does not record which weights it was exported from (an "
                                "earlier prelabel, or another tool, wrote it), so it may not be "
                                f"{package.weights_path.name}'s: {export}")
    if expected is not None and recorded != expected:
        raise ModelPackageError(f"{package.onnx_path.name} was exported from other weights than this version was "
                                "loaded from (the folder holds another version's files now): reload the model "
                                "(`prelabel reload`) to serve them, or export this version's again")
    if expected is None and recorded != package.weights_digest():
        raise ModelPackageError(f"{package.onnx_path.name} was exported from other weights than "
                                f"{package.weights_path.name} (replaced since, e.g. by a fine-tuned package copied "
                                f"in): {export}; for a fine-tuned package, export it before copying it in whole, "
                                "since its card carries its new version")


class OnnxBackend:
    name = "onnx"

    @staticmethod
    def check_device(device: str) -> None:
        missing = set(_providers(device)) - set(ort.get_available_providers())
        if missing:
            raise DeviceUnavailable(f"device {device!r} needs {sorted(missing)}, which this onnxruntime lacks: use "
                                    "cpu, or on a machine with an NVIDIA GPU install onnxruntime-gpu (or serve with "
                                    "the torch backend)")

    def __init__(self, package: ModelPackage, device: str | None = None, threads: int | None = None,
                 spin_wait: bool = True, pin_mc_graphs: bool = True, weights_digest: str | None = None) -> None:
        """``pin_mc_graphs``: check MC dropout's graphs now and serve only these (a package being
        rewritten then fails to load); off, they are read on first use, whatever is on disk then
        (a GPU model's CPU fallback, made only once the GPU fails, must not fail for them).
        ``weights_digest``: the weights the graphs must come from (a GPU model's, for its CPU
        fallback, made later: the folder may hold the next version's files by then); by default
        the package's weights file."""
        if not package.onnx_path.is_file():
            raise ModelPackageError(
                f"ONNX file {package.onnx_path} is missing: run `prelabel export {package.folder}` to write it")
        device = device or "cpu"
        self.check_device(device)
        providers = _providers(device)
        self._options = ort.SessionOptions()
        self._options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            self._options.intra_op_num_threads = threads
        # Spinning between operators keeps a run fast but burns cores that other work could use: a
        # setting. Either way the pool stops spinning as soon as a run returns, because the request's
        # post-processing needs those cores next (14 vs 19 ms at concurrency 1, measured).
        self._options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin_wait else "0")
        self._options.add_session_config_entry("session.force_spinning_stop", "1")
        self._providers = providers
        self._package = package
        self.session = ort.InferenceSession(str(package.onnx_path), self._options, providers=providers)
        self._made_from = _recorded_digest(self.session)  # the weights digest the graph records
        check_exported_from_weights(package, self._made_from, weights_digest)
        self.device = device
        self._split_sessions: tuple[ort.InferenceSession, ort.InferenceSession] | None = None
        self._split_digests: tuple[str, ...] | None = None  # of the graphs as they were at load
        self._pin_mc_graphs = pin_mc_graphs
        if pin_mc_graphs:
            self._check_mc_graphs()

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(batch, dtype=np.float32)})[0]

    def run_maps(self, batch: np.ndarray, temperature: float, requests: list[MapRequest]) -> list[SegmentationMaps]:
        """Each image's maps, derived from this backend's logits on the host. The server derives the
        maps itself on the CPU (no ``maps_on_device``); this serves a GPU model's CPU fallback,
        which answers the same calls as the GPU did (device_fallback)."""
        return maps_of_batch(self.run(batch), temperature, requests)

    def release_idle_memory(self) -> None:
        """Shrinks each session's arena to what it held at start. ONNX Runtime keeps the memory of
        its largest run for the next, and shrinks only at the end of a run that asks for it, so
        each session runs once more on the smallest input (50 ms). A server kept 1027 MB after two
        4000x3000 photos without this and 416 MB with it (measured). It may run beside a batch on
        the same session (the server calls it outside the model's lock): sessions take concurrent
        runs, and the arena shrinks under its own lock, freeing only regions with no chunk in use."""
        stride = self._package.card.output_stride
        shrink = ort.RunOptions()
        shrink.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        self.session.run([OUTPUT_NAME], {INPUT_NAME: np.zeros((1, 3, stride, stride), np.float32)}, shrink)
        if self._split_sessions is not None:
            trunk, head = self._split_sessions
            features = trunk.run([OUTPUT_NAME], {INPUT_NAME: np.zeros((1, 3, stride, stride), np.float32)}, shrink)[0]
            head.run([OUTPUT_NAME], {FEATURES_NAME: features, MASK_NAME: np.ones_like(features)}, shrink)

    def run_with_embedding(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, embedding = self.session.run([OUTPUT_NAME, EMBEDDING_NAME],
                                             {INPUT_NAME: np.ascontiguousarray(batch, dtype=np.float32)})
        return logits, embedding

    def features(self, batch: np.ndarray) -> np.ndarray:
        trunk, _ = self._split()
        return trunk.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(batch, dtype=np.float32)})[0]

    def head(self, features: np.ndarray, dropout_mask: np.ndarray) -> np.ndarray:
        _, head = self._split()
        return head.run([OUTPUT_NAME], {FEATURES_NAME: np.ascontiguousarray(features, dtype=np.float32),
                                        MASK_NAME: np.ascontiguousarray(dropout_mask, dtype=np.float32)})[0]

    def _check_mc_graphs(self) -> None:
        """Loads MC dropout's graphs once, where the package has them, and keeps only their digests
        (the sessions would hold 70 MB for the default model until an MC request needs them):
        graphs cut short (a copy interrupted) then fail the package's load, and a reload keeps the
        old version serving, instead of every MC request failing later. 0.4 s for the default model's."""
        paths = (self._package.trunk_onnx_path, self._package.head_onnx_path)
        # A card without head dropout has no MC dropout, whatever graphs an earlier export left.
        if self._package.card.head_dropout > 0 and all(path.is_file() for path in paths):
            graphs = self._read_split(paths)
            self._load_split(paths, graphs)
            self._split_digests = _digests(graphs)

    def _split(self) -> tuple[ort.InferenceSession, ort.InferenceSession]:
        """The trunk and masked-head graphs, loaded on first use (only MC dropout needs them), and
        only as they were when this version loaded: files rewritten since belong to the next
        version, and serving them under this one's name gave other numbers as version 1."""
        if self._split_sessions is None:
            paths = (self._package.trunk_onnx_path, self._package.head_onnx_path)
            reload = f"`prelabel export {self._package.folder}`, then reload the model (`prelabel reload`)"
            if not self._pin_mc_graphs:
                self._split_sessions = self._load_split(paths, self._read_split(paths))
                return self._split_sessions
            if self._split_digests is None:
                raise ModelPackageError(f"MC dropout needs {[p.name for p in paths]} in {self._package.folder}, which "
                                        f"this version was loaded without: run {reload} (they are written for models "
                                        "with head_dropout > 0)")
            graphs = self._read_split(paths)
            if _digests(graphs) != self._split_digests:
                raise ModelPackageError(f"MC dropout's graphs in {self._package.folder} changed after this version "
                                        "loaded: reload the model (`prelabel reload`) to serve the new files")
            self._split_sessions = self._load_split(paths, graphs)
        return self._split_sessions

    def _read_split(self, paths: tuple[Path, Path]) -> tuple[bytes, bytes]:
        try:
            return paths[0].read_bytes(), paths[1].read_bytes()
        except OSError as exc:
            raise ModelPackageError(f"MC dropout's graphs in {self._package.folder} cannot be read "
                                    f"({exc.strerror or exc}): run `prelabel export {self._package.folder}` "
                                    "again") from exc

    def _load_split(self, paths: tuple[Path, Path],
                    graphs: tuple[bytes, bytes]) -> tuple[ort.InferenceSession, ort.InferenceSession]:
        try:
            trunk, head = (ort.InferenceSession(g, self._options, providers=self._providers) for g in graphs)
        except Exception as exc:  # a file cut short or overwritten: the package's to fix, not an internal error
            reason = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            raise ModelPackageError(f"MC dropout's graphs {[p.name for p in paths]} in {self._package.folder} cannot "
                                    f"be loaded ({reason}): run `prelabel export {self._package.folder}` again") from exc
        if any(_recorded_digest(graph) != self._made_from for graph in (trunk, head)):
            raise ModelPackageError(f"MC dropout's graphs {[p.name for p in paths]} in {self._package.folder} were "
                                    f"exported from other weights than {self._package.onnx_path.name}: run "
                                    f"`prelabel export {self._package.folder}` again")
        return trunk, head
