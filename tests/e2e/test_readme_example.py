"""README's Python client example runs as written (against a real test server)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from prelabel_server.grpc_api.server import RunningServer

README = Path(__file__).resolve().parents[2] / "README.md"


def run_example(after: str, server: RunningServer) -> None:
    """Runs README's first Python block after the text ``after`` against ``server``."""
    example = re.search(re.escape(after) + r".*?```python\n(.*?)```", README.read_text(), re.S).group(1)
    assert "127.0.0.1:50051" in example
    code = compile(example.replace("127.0.0.1:50051", server.address), str(README), "exec")
    cwd = os.getcwd()
    os.chdir(README.parent)  # the examples name the bundled samples by relative path
    try:
        exec(code, {"__name__": "readme_example"})
    finally:
        os.chdir(cwd)


def test_readme_client_example_runs(onnx_server: RunningServer, capsys) -> None:
    run_example("### Python client", onnx_server)
    printed = capsys.readouterr().out
    assert "(360, 480) uint8" in printed and "(11, 360, 480)" in printed


def test_readme_raw_pixels_example_runs(onnx_server: RunningServer, capsys) -> None:
    run_example("send `raw` pixels and ask for raw maps", onnx_server)
    assert capsys.readouterr().out.startswith("(360, 480) ")


def test_readme_class_segments_example_runs(onnx_server: RunningServer, capsys) -> None:
    run_example("**Per-class masks for annotation tools**", onnx_server)
    lines = capsys.readouterr().out.splitlines()
    assert lines and all(line.endswith("(360, 480)") for line in lines)
