"""Quota shared by every Conduit process: an atomic Redis Lua limiter per pool and deployment.

Depends on settings/ only. See DESIGN.md, "The quota contract".
"""

from quota.errors import QuotaError, QuotaExceeded
from quota.limiter import AsyncQuotaLimiter, QuotaLimiter
from quota.sansio import (
    POOLS,
    AppUsage,
    Decision,
    ExternalUsage,
    QuotaStatus,
    Settlement,
)

__all__ = [
    "POOLS",
    "AppUsage",
    "AsyncQuotaLimiter",
    "Decision",
    "ExternalUsage",
    "QuotaError",
    "QuotaExceeded",
    "QuotaLimiter",
    "QuotaStatus",
    "Settlement",
]
