"""Prefect's settings for the flows this process runs, kept inside the data home.

Used by the CLI only: Prefect's home under ``<home>/prefect`` unless the user configured
Prefect, crash cleanup of temporary servers a killed run left behind, and flow-run settings
for Prefect's temporary server. The data home itself is resolved in ``warehouse/home.py``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any


def configure_prefect_env(home: Path) -> None:
    """Point Prefect at the data home unless the user configured Prefect themselves.

    Sets telemetry off, quiet console logs, and ``PREFECT_HOME=<home>/prefect`` when neither
    ``PREFECT_HOME`` nor ``PREFECT_API_URL`` is set and no Prefect profile file exists in
    ``~/.prefect``. Must run before ``prefect`` is imported.
    """
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "WARNING")
    # A fresh Prefect database migrates on first start: ~10-30 s on a small, busy machine,
    # past Prefect's 20 s default for its temporary server.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    user_profile = Path("~/.prefect/profiles.toml").expanduser()
    if ("PREFECT_HOME" not in os.environ and "PREFECT_API_URL" not in os.environ
            and not user_profile.exists()):
        os.environ["PREFECT_HOME"] = str(home / "prefect")
        # Prefect creates its home without parents and then fails to open its database.
        (home / "prefect").mkdir(parents=True, exist_ok=True)


def reap_orphan_prefect_servers(home: Path) -> list[int]:
    """Kill temporary Prefect servers left behind by a killed run on this data home.

    When a ``videobert`` process is killed (SIGKILL, OOM), the temporary Prefect server it
    started keeps running, orphaned, with its database in ``<home>/prefect``. A server is
    reaped only when all hold: it is Prefect's API server, its parent is gone (re-parented to
    init or a subreaper that is not a videobert process), and its ``PREFECT_HOME`` is this
    data home's. Linux only (reads /proc); elsewhere a no-op.

    Returns:
        The pids signalled.
    """
    import signal

    proc = Path("/proc")
    if not proc.is_dir():
        return []
    want = f"PREFECT_HOME={home / 'prefect'}".encode()
    killed = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes()
            if b"prefect.server.api.server:create_app" not in cmd:
                continue
            env = (entry / "environ").read_bytes().split(b"\0")
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            parent_cmd = (proc / str(ppid) / "cmdline").read_bytes() if ppid > 1 else b""
        except (OSError, ValueError, IndexError):
            continue
        if want in env and b"videobert" not in parent_cmd and b"pytest" not in parent_cmd:
            try:
                os.kill(int(entry.name), signal.SIGTERM)
                killed.append(int(entry.name))
            except OSError:
                pass
    return killed


def local_flow_settings() -> contextlib.AbstractContextManager[Any]:
    """Prefect settings for a flow run that this process starts on Prefect's temporary server.

    Prefect joins each flow run's heartbeat thread at exit, which sleeps in 1 s steps: up to
    1 s per flow and subflow (about 4.5 s of a ``videobert run``, ``bench/orchestration.py``).
    Nothing watches heartbeats on a temporary server, so they are off there; runs against a
    configured server (``PREFECT_API_URL``: deployments, workers) keep them for crash detection.
    Import only after :func:`configure_prefect_env`.
    """
    quiet_user_errors_on_console()
    if os.environ.get("PREFECT_API_URL"):
        return contextlib.nullcontext()
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    return temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None})


class _NoUserErrorTracebacks(logging.Filter):
    """Drops a log record carrying a user's mistake (:class:`~tasks.shared.errors.InputError`)
    from the terminal: the CLI prints it as one line. The flow run's log (API) keeps it."""

    def filter(self, record: logging.LogRecord) -> bool:
        from tasks.shared.errors import InputError

        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, InputError)


def quiet_user_errors_on_console() -> None:
    """Install :class:`_NoUserErrorTracebacks` on Prefect's console handlers (once). Prefect
    configures logging when its flow machinery is imported: call this after that."""
    from prefect.logging.handlers import PrefectConsoleHandler

    loggers = [logging.getLogger()] + [logging.getLogger(n) for n in
                                       list(logging.Logger.manager.loggerDict)]
    for lg in loggers:
        for h in getattr(lg, "handlers", []):
            if isinstance(h, PrefectConsoleHandler) and not any(
                    isinstance(f, _NoUserErrorTracebacks) for f in h.filters):
                h.addFilter(_NoUserErrorTracebacks())
