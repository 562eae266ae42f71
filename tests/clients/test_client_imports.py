"""The client is a light install: importing it (and building the `prelabel` command) loads neither
torch nor the server's runtime dependencies."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "torchvision", "segmentation_models_pytorch", "onnxruntime", "pydantic", "pydantic_settings")


def test_importing_the_client_loads_no_server_dependency() -> None:
    script = (
        "import sys\n"
        "import prelabel_client\n"
        "from prelabel_client.cli import build_parser\n"
        "build_parser()\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "[]", result.stdout
