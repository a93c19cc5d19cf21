"""How this machine reaches the deployed app: Modal's errors made actionable, and ``.local()`` calls for
``INDEXER_MODAL_RUN=local``."""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Any

from indexer.errors import ConfigError


@contextmanager
def modal_errors(app_name: str):
    """Modal's "not deployed" and "not logged in" errors as configuration errors that say what to do."""
    import modal.exception

    try:
        yield
    except modal.exception.NotFoundError as exc:
        raise ConfigError(f"Modal could not find {exc}: deploy the app first with `modal deploy -m indexer_modal.app` "
                          f"(app name {app_name!r}; settings: INDEXER_MODAL_* variables)") from None
    except modal.exception.AuthError:
        raise ConfigError("Modal refused this machine's credentials: run `modal token new`, or set MODAL_TOKEN_ID "
                          "and MODAL_TOKEN_SECRET") from None


def call_local(method: Any, *args: Any) -> Any:
    """``method.local(*args)``, without the warning that the Volume is not mounted: a local run uses the stand-in
    folder on purpose."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*executing locally and will not have access", category=UserWarning)
        return method.local(*args)

