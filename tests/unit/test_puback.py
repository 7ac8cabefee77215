"""Vehicle-side reading of PUBACK reason codes."""

import pytest

from v2c.contract.puback import PubackOutcome, classify_puback


@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        (0x00, PubackOutcome.DELIVERED),
        (0x10, PubackOutcome.RETRY_LATER),  # no matching subscribers: the cloud is not listening
        (0x89, PubackOutcome.RETRY_LATER),  # server busy
        (0x97, PubackOutcome.RETRY_LATER),  # quota exceeded
        (0x87, PubackOutcome.REFUSED),  # not authorized
        (0x99, PubackOutcome.REFUSED),  # payload format invalid
        (0x95, PubackOutcome.REFUSED),  # packet too large: split, don't resend as is
    ],
)
def test_puback_reason_codes_map_to_vehicle_actions(code: int, outcome: PubackOutcome) -> None:
    assert classify_puback(code) is outcome
