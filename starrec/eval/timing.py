"""What a measured time needs beside it: the machine's load while it was taken."""

from __future__ import annotations

import os


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages, rounded to 0.01 (empty where the OS has none).

    Stored beside every elapsed time starrec reports: on a shared machine a time means little
    without the load it was measured under.
    """
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except (AttributeError, OSError):  # no getloadavg on this platform (Windows), or none obtainable
        return []
