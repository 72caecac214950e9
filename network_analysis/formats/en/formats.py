"""Date and time formats of the admin: 24-hour, ISO-like, with the time zone named.

Every time the site stores and shows is UTC (``TIME_ZONE``); saying so beside each one
saves the reader from guessing, and matches the API's ISO 8601 and the dashboard.
"""

from __future__ import annotations

DATETIME_FORMAT = "Y-m-d H:i:s T"
SHORT_DATETIME_FORMAT = "Y-m-d H:i T"
DATE_FORMAT = "Y-m-d"
SHORT_DATE_FORMAT = "Y-m-d"
TIME_FORMAT = "H:i:s"
