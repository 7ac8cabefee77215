"""The Lambda artifact for tests that run functions from it: built once per worker."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ENV_PREBUILT = "V2C_TEST_LAMBDA_ARTIFACT"  # a directory already built (debugging only)


def built_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`v2c aws build` into a fresh directory (offline: from the venv's distributions)."""
    prebuilt = os.environ.get(ENV_PREBUILT)
    if prebuilt:
        return Path(prebuilt)
    from v2c.infra.aws.artifact import build_artifact

    target = tmp_path_factory.mktemp("lambda") / "build" / "lambda"
    build_artifact(target)
    return target
