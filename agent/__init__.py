"""ocpp-fw-agent: the charge-point side of OCPP 1.6J secure firmware update, on A/B slots."""

import datetime

__version__ = "0.1.0"

# The date this release was cut. A controller without an RTC (a Raspberry Pi) may boot with a
# clock far in the past; a system clock earlier than this date is known to be wrong.
RELEASE_DATE = datetime.datetime(2026, 11, 25, tzinfo=datetime.UTC)
