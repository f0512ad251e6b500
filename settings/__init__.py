"""Configuration for every Conduit process: typed settings and logging. Imports nothing of ours."""

from settings.config import (
    EMULATOR_DEV_KEY,
    Deployment,
    Pool,
    PoolName,
    Route,
    Settings,
    SettingsError,
    get_settings,
    load_settings,
    settings_or_exit,
)
from settings.logs import configure_logging, get_logger, log_context

__all__ = [
    "EMULATOR_DEV_KEY",
    "Deployment",
    "Pool",
    "PoolName",
    "Route",
    "Settings",
    "SettingsError",
    "configure_logging",
    "get_logger",
    "get_settings",
    "load_settings",
    "log_context",
    "settings_or_exit",
]
