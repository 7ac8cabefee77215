"""`-o json` where the commands print a result but had no JSON, and `stack status`'s codes.

The real `v2c` app through `CliRunner` on real files in a temporary
directory: `pki init`/`pki issue` make a real CA and certificate, `stack
down` and `stack status` read (or miss) a real stack.json. stdout must be
one JSON document, nothing else. `stack status` says "no stack" (4) only
when there is no stack.json; one it cannot read or that is invalid is
refused (3), as docs/cli.md defines.
"""

from __future__ import annotations

import json
from pathlib import Path

from cryptography import x509
from typer.testing import CliRunner

from v2c.infra.cli.main import app

VIN = "VIN-1HGBH41JXMN109186"


def test_pki_init_and_issue_print_one_json_document(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    init = CliRunner().invoke(app, ["pki", "init", "--dir", str(pki), "-o", "json"])
    assert init.exit_code == 0, init.output
    made = json.loads(init.stdout)
    assert made["ca"]["state"] == "created"
    assert len(made["ca"]["sha256_fingerprint"].split(":")) == 32
    assert Path(made["files"]["ca_certificate"]).is_file()

    issue = CliRunner().invoke(app, ["pki", "issue", "--vin", VIN, "--pki", str(pki), "-o", "json"])
    assert issue.exit_code == 0, issue.output
    issued = json.loads(issue.stdout)
    assert (issued["vehicle_id"], issued["registered"]) == (VIN, None)  # --pki: no broker
    certificate = x509.load_pem_x509_certificate(Path(issued["certificate"]).read_bytes())
    assert VIN in certificate.subject.rfc4514_string()


def test_stack_down_json_without_a_stack_says_there_was_nothing(tmp_path: Path) -> None:
    down = CliRunner().invoke(app, ["stack", "down", "--dir", str(tmp_path), "-o", "json"])
    assert down.exit_code == 0, down.output
    assert json.loads(down.stdout) == {
        "directory": str(tmp_path), "stopped": True, "components": {},
    }  # fmt: skip


def test_stack_status_is_4_without_stack_json_and_3_when_it_is_corrupt_or_invalid(
    tmp_path: Path,
) -> None:
    def status() -> tuple[int, str]:
        result = CliRunner().invoke(app, ["stack", "status", "--dir", str(tmp_path)])
        return result.exit_code, result.stderr

    code, said = status()
    assert code == 4, said
    assert "no running stack" in said

    (tmp_path / "stack.json").write_text('{"version": 1, "mqtt": ')  # cut off mid-write
    code, said = status()
    assert code == 3, said
    assert said.startswith("error: cannot read stack description")

    (tmp_path / "stack.json").write_text('{"version": 1, "surprise": true}')
    code, said = status()
    assert code == 3, said
    assert said.startswith("error: invalid stack description")
