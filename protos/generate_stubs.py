"""Regenerates the Python gRPC stubs from ``prelabel_proto/prelabel/v1/prelabel.proto``.

Run after editing the .proto:  python protos/generate_stubs.py
The stubs are committed so that a base install needs no code generator; a test checks that they
match the .proto.
"""

from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc

PROTOS_ROOT = Path(__file__).resolve().parent
PROTO_FILES = sorted(PROTOS_ROOT.glob("prelabel_proto/prelabel/v1/*.proto"))


def generate(out_dir: Path = PROTOS_ROOT) -> None:
    """Writes ``*_pb2.py``, ``*_pb2.pyi`` and ``*_pb2_grpc.py`` beside the .proto (or under ``out_dir``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    include = Path(protoc.__file__).parent / "_proto"
    args = ["protoc", f"-I{PROTOS_ROOT}", f"-I{include}", f"--python_out={out_dir}",
            f"--pyi_out={out_dir}", f"--grpc_python_out={out_dir}"]
    args += [str(p.relative_to(PROTOS_ROOT)) for p in PROTO_FILES]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed: {' '.join(args)}")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else PROTOS_ROOT)
