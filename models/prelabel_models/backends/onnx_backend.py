"""ONNX Runtime backend for the CPU (or CUDA with onnxruntime-gpu). Never imports torch."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from prelabel_models.package import ModelPackage, ModelPackageError

INPUT_NAME = "images"
OUTPUT_NAME = "logits"


class OnnxBackend:
    name = "onnx"

    def __init__(self, package: ModelPackage, device: str | None = None, threads: int | None = None) -> None:
        if not package.onnx_path.is_file():
            raise ModelPackageError(
                f"ONNX file {package.onnx_path} is missing: run `prelabel export {package.folder}` to write it")
        device = device or "cpu"
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device.startswith("cuda") else ["CPUExecutionProvider"]
        missing = set(providers) - set(ort.get_available_providers())
        if missing:
            raise ModelPackageError(f"device {device!r} needs {sorted(missing)}, which this onnxruntime lacks")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(package.onnx_path), options, providers=providers)
        self.device = device

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(batch, dtype=np.float32)})[0]
