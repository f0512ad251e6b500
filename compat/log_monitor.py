"""``common.log_monitor`` → :mod:`logship`: ships a log directory's rotated files.

Conduit's own processes already run one (``LOG_DIR`` and a storage account set); a service that
keeps its own process starts this one as it did before.
"""

from logship import LogMonitor, LogMonitorService

__all__ = ["LogMonitor", "LogMonitorService"]
