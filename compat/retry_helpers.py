"""``common.retry_helpers`` → :mod:`quota.retry`: waits as long as quota says (not a minute)."""

from quota.retry import is_quota_refusal, with_token_limit_retry, with_token_limit_retry_decorator

__all__ = ["is_quota_refusal", "with_token_limit_retry", "with_token_limit_retry_decorator"]
