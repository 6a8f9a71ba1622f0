"""The demo's note on what each counter counts names every removal cause (issue 27: the
``refreshed`` and ``quota`` causes had drifted out of it)."""

from __future__ import annotations

from snak_runtime import RemovalCause
from snak_runtime.tools._demo import _COUNTER_NOTES


def test_the_counter_notes_name_every_removal_cause() -> None:
    notes = " ".join(_COUNTER_NOTES)
    missing = [cause.value for cause in RemovalCause if cause.value not in notes]
    assert missing == []
