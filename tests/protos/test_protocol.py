"""The protocol package: committed stubs match the .proto, and Buf's STANDARD lint and formatter
accept it."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROTOS = Path(__file__).resolve().parents[2] / "protos"
MODULE = PROTOS / "prelabel_proto"


def _generate_stubs():
    spec = importlib.util.spec_from_file_location("generate_stubs", PROTOS / "generate_stubs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.generate


def _stubs(root: Path) -> dict[str, bytes]:
    """Generated files under ``root`` (``*_pb2.py``, ``*_pb2.pyi``, ``*_pb2_grpc.py``) by relative path."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*_pb2*"))
            if p.suffix in (".py", ".pyi") and "__pycache__" not in p.parts}


def test_committed_stubs_match_the_proto(tmp_path: Path) -> None:
    _generate_stubs()(tmp_path)
    generated = _stubs(tmp_path)
    assert generated, "generate_stubs wrote nothing"
    committed = _stubs(PROTOS)
    assert sorted(committed) == sorted(generated), "stale or missing stub files"
    stale = [name for name in generated if committed[name] != generated[name]]
    assert not stale, f"{stale} differ from the .proto: run `python protos/generate_stubs.py` and commit"


def _buf() -> str:
    beside_python = Path(sys.executable).with_name("buf")
    found = str(beside_python) if beside_python.is_file() else shutil.which("buf")
    if found is None:
        pytest.fail("buf is not installed: pip install buf-bin (part of the dev extra)")
    return found


@pytest.mark.parametrize("command", [["lint"], ["format", "--diff", "--exit-code"]], ids=["lint", "format"])
def test_buf_accepts_the_proto(command: list[str]) -> None:
    result = subprocess.run([_buf(), *command], cwd=MODULE, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
