"""Regenerate the Python modules of the wire contract from `proto/v2c/v1/*.proto`.

The generated `*_pb2.py` and mypy-protobuf `*_pb2.pyi` files are committed beside
their sources so that installing v2c needs no compiler; a test regenerates them
into a temporary folder and fails on any drift. The compiler is the one bundled
with the pinned grpcio-tools (a dev dependency), so output is reproducible.
"""

from __future__ import annotations

import importlib.resources
import sys
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parents[4] / "proto"
PROTO_PACKAGE_DIR = PROTO_ROOT / "v2c" / "v1"


class ProtoGenerationError(RuntimeError):
    """protoc refused the sources; the message carries its exit code."""


def proto_sources() -> list[Path]:
    return sorted(PROTO_PACKAGE_DIR.glob("*.proto"))


def generate(out_dir: Path, proto_root: Path = PROTO_ROOT) -> list[Path]:
    """Compile every contract `.proto` into `out_dir`, keeping the `v2c/v1/` layout."""
    from grpc_tools import protoc  # dev dependency: imported only when generating

    out_dir.mkdir(parents=True, exist_ok=True)
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    sources = [
        str(p.relative_to(proto_root)) for p in sorted((proto_root / "v2c" / "v1").glob("*.proto"))
    ]
    args = [
        "grpc_tools.protoc",
        f"-I{proto_root}",
        f"-I{well_known}",
        f"--plugin=protoc-gen-mypy={Path(sys.executable).parent / 'protoc-gen-mypy'}",
        f"--python_out={out_dir}",
        f"--mypy_out={out_dir}",
        *sources,
    ]
    code = protoc.main(args)
    if code != 0:
        raise ProtoGenerationError(f"protoc exited with {code} for {sources}")
    return sorted((out_dir / "v2c" / "v1").glob("*_pb2.py*"))


def main() -> None:
    written = generate(PROTO_ROOT)
    for path in written:
        print(path.relative_to(PROTO_ROOT.parent))


if __name__ == "__main__":
    main()
