"""`v2c vehicle list` at 80 columns keeps every VIN whole (the audit's "acc…" finding)."""

from __future__ import annotations

import io

from rich.console import Console

from v2c.infra.cli.commands.vehicle import vehicle_table

VINS = [f"VIN-5V2CFLT{i:010d}" for i in range(3)]


def rendered(width: int) -> str:
    items = [
        {
            "vehicle_id": vin,
            "model": "Accord Hybrid Touring Long Wheelbase Edition",
            "region": "ap-southeast-2",
            "installed_version": "10.20.300-beta.4+build.77",
            "status": "decommissioned" if n else "active",
            "last_seen_at": "2026-12-03T09:54:33.464+00:00",
        }
        for n, vin in enumerate(VINS)
    ]
    out = io.StringIO()
    Console(file=out, width=width, color_system=None).print(vehicle_table(items))
    return out.getvalue()


def test_every_vin_stays_whole_and_on_one_line_at_80_columns() -> None:
    text = rendered(80)
    assert max(len(line) for line in text.splitlines()) <= 80
    for vin in VINS:
        assert vin in text  # not "VIN-5V2CFL…" nor split over two lines
    assert "2026-12-03" in text


def test_a_wider_terminal_shows_the_long_model_unfolded() -> None:
    assert "Accord Hybrid Touring Long Wheelbase Edition" in rendered(160)
