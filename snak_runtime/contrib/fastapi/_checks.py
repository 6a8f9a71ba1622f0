"""Request input checks shared by the routes and dependencies: ids, and 422s that never echo."""

import re
from typing import Final

from fastapi import HTTPException

MAX_ID_LENGTH: Final = 512
"""Longest agent or user id a route accepts (longer ones are a 422, not a lookup)."""

_SHOWN_INPUT_CHARS: Final = 32  # of a rejected value, in a 422 body
# Printable ids only: a control character in an id is a client bug or an attack on logs.
_CONTROL_RE: Final = re.compile(r"[\x00-\x1f\x7f]")


def unprocessable(where: str, name: str, message: str, value: str) -> HTTPException:
    """A 422 shaped like FastAPI's own, but never echoing more than a short prefix."""
    shown = value[:_SHOWN_INPUT_CHARS] + ("..." if len(value) > _SHOWN_INPUT_CHARS else "")
    return HTTPException(
        422,  # (the constant was renamed across Starlette versions)
        [{"type": "value_error", "loc": [where, name], "msg": message, "input": shown}],
    )


def checked_id(name: str, value: str) -> str:
    """``value`` when it is a usable id; else a 422 naming the path parameter ``name``."""
    # issue 23: FastAPI's own 422 echoed the whole value (a 10 MB id came back).
    if not value:
        raise unprocessable("path", name, "must not be empty", value)
    if len(value) > MAX_ID_LENGTH:
        raise unprocessable("path", name, f"at most {MAX_ID_LENGTH} characters", value)
    if _CONTROL_RE.search(value):
        raise unprocessable("path", name, "must not hold control characters", value)
    return value
