"""FastAPI's test client, for the tests that drive an app: ``from tests.fastapi_client import
TestClient``.

Without FastAPI (installed by the ``admin`` and ``examples`` extras) the importing test module
is skipped; under ``CI=true``, where the dev extra installs it, the ImportError stands: CI never
skips these tests.
"""

import os
import warnings

import pytest

try:
    import fastapi  # noqa: F401
except ImportError:  # pragma: no cover - only without the extras
    if os.environ.get("CI") == "true":
        raise
    pytest.skip("needs FastAPI: the [admin] or [examples] extra", allow_module_level=True)

with warnings.catch_warnings():
    # Recent Starlette deprecates driving its test client with `httpx` in favour of `httpx2`;
    # either works for these tests, so the import-time notice is not an error here.
    warnings.filterwarnings("ignore", message=r"Using `httpx` with `starlette\.testclient`")
    # The oldest declared FastAPI (.ci/floors.txt) brings a Starlette whose test client names
    # an alias newer anyio releases deprecate: the floor test run imports it too.
    warnings.filterwarnings("ignore", message=r"The anyio\.abc\.BlockingPortal alias")
    from fastapi.testclient import TestClient

__all__ = ("TestClient",)
