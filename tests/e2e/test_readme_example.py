"""README's Python client example runs as written (against a real test server)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from prelabel_server.grpc_api.server import RunningServer

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_client_example_runs(onnx_server: RunningServer, capsys) -> None:
    example = re.search(r"### Python client\s+```python\n(.*?)```", README.read_text(), re.S).group(1)
    assert "127.0.0.1:50051" in example
    code = compile(example.replace("127.0.0.1:50051", onnx_server.address), str(README), "exec")
    cwd = os.getcwd()
    os.chdir(README.parent)  # the example names the bundled samples by relative path
    try:
        exec(code, {"__name__": "readme_example"})
    finally:
        os.chdir(cwd)
    printed = capsys.readouterr().out
    assert "(360, 480) uint8" in printed and "(11, 360, 480)" in printed
