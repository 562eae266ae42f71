"""An ONNX deployment never imports torch: ``prelabel serve --backend onnx`` runs in a process
where ``import torch`` fails, serves predictions, and reports at exit which torch modules it had
loaded (none)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from prelabel_client import PreLabelClient
from service_support import DEFAULT_MODEL

# Makes `import torch` (and friends) fail in the child, then runs the `prelabel` command.
_WITHOUT_TORCH = """
import atexit, sys
BLOCKED = ("torch", "torchvision", "segmentation_models_pytorch", "safetensors")
for name in BLOCKED:
    sys.modules[name] = None
atexit.register(lambda: print("TORCH MODULES:", sorted(
    m for m, module in sys.modules.items() if module is not None and m.split(".")[0] in BLOCKED), flush=True))
from prelabel_client.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def torchless_server(model_repository: Path):
    command = [sys.executable, "-c", _WITHOUT_TORCH, "serve", "--backend", "onnx", "--host", "127.0.0.1",
               "--port", "0", "--model-repository", str(model_repository)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        banner = process.stdout.readline()  # "prelabel serving on HOST:PORT (default model: ...)"
        if not banner.startswith("prelabel serving on "):
            process.kill()
            pytest.fail(f"server did not start: {banner!r}\n{process.communicate(timeout=30)[1][-3000:]}")
        yield process, banner.split()[3]
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_serving_from_onnx_never_imports_torch(torchless_server, small_camvid_png: bytes) -> None:
    process, address = torchless_server
    with PreLabelClient(address, timeout=120) as client:
        states = {m.name: m.state for m in client.models()}
        prediction = client.predict(small_camvid_png)
    assert states == {"broken": "failed", "broken-card": "failed", "deeplab": "ready", "unet": "ready",
                      "unet-tile1024": "ready"}
    assert (prediction.model, prediction.backend) == (DEFAULT_MODEL, "onnx")
    assert prediction.mask.shape == (101, 133)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr[-3000:]
    assert "TORCH MODULES: []" in stdout
