"""What providers say about when to retry."""

from __future__ import annotations

import email.utils
import time


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from an HTTP `Retry-After` header (delay-seconds or an HTTP date, RFC
    9110), never negative; None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
