"""``common.token_client`` → :mod:`quota.client`: the same ``TokenClient``, now on Redis."""

from quota.client import SyncTokenClient, TokenClient

__all__ = ["SyncTokenClient", "TokenClient"]
