"""Reading what Slack sends, where listeners share it."""

from __future__ import annotations

import json
from typing import Any


def private_metadata(view: dict[str, Any]) -> dict[str, Any]:
    """The JSON object tokenbot put in a modal's ``private_metadata``; {} if unreadable."""
    try:
        data = json.loads(view.get("private_metadata") or "{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
