"""The committed *_pb2.py / *_pb2.pyi files are exactly what the pinned compiler makes.

They are committed so installing v2c needs no compiler; this test makes sure
nobody edits a .proto (or a generated file) without regenerating.
"""

from __future__ import annotations

from pathlib import Path

from v2c.infra.tools.protogen import PROTO_PACKAGE_DIR, generate

REGENERATE = ".venv/bin/python -m v2c.infra.tools.protogen"


def test_committed_generated_modules_match_a_fresh_generation(tmp_path: Path) -> None:
    fresh = {path.name: path.read_bytes() for path in generate(tmp_path)}
    committed = {
        path.name: path.read_bytes() for path in sorted(PROTO_PACKAGE_DIR.glob("*_pb2.py*"))
    }

    # A file only one side has is drift too (a deleted or a new .proto).
    drifting = sorted(
        name for name in fresh.keys() | committed.keys() if fresh.get(name) != committed.get(name)
    )

    assert fresh, "protoc generated nothing: are the .proto files there?"
    assert not drifting, (
        f"generated files differ from their .proto sources in {PROTO_PACKAGE_DIR}: "
        f"{', '.join(drifting)}; regenerate with `{REGENERATE}`"
    )
