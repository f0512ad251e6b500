"""Quota shared by every Conduit process: an atomic Redis Lua limiter per pool and deployment.

Depends on settings/ only. See docs/architecture.md, "The quota contract"
(docs/architecture.md#the-quota-contract), and quota/README.md for the contract in full.
"""

from quota.client import SyncTokenClient, TokenClient
from quota.errors import QuotaError, QuotaExceeded, StaleLock
from quota.leases import QuotaLeases
from quota.limiter import AsyncQuotaLimiter, QuotaLimiter
from quota.retry import is_quota_refusal, with_token_limit_retry, with_token_limit_retry_decorator
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
    "QuotaLeases",
    "QuotaLimiter",
    "QuotaStatus",
    "Settlement",
    "StaleLock",
    "SyncTokenClient",
    "TokenClient",
    "is_quota_refusal",
    "with_token_limit_retry",
    "with_token_limit_retry_decorator",
]
