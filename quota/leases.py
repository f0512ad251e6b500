"""Quota leases: locks granted from this process's memory, so that a lock costs no Redis round
trip, nor does a report that follows at once. The counter server (web/counter_server.py) answers
the older counter's callers this way; everything else acquires in Redis, one decision at a time.

Why: the older counter's callers make two HTTP requests per model call, lock then report, and
wait for each. The older counter answered both from its own memory; a Redis round trip per
request (60 µs here, most of it waking another process) cost Conduit's counter more than the
whole answer of a server that answers at once (bench/counter_api.py).

How it stays exact:

- **A lease is charged before anything is granted from it.** An acquire that asks for a lease
  (acquire.lua) locks the request and, beside it, room for more requests and tokens in the shared
  window, at most an eighth of the room left after the request. Every grant is inside a charge
  every process already counts, so no window holds more than the limit. Near the limit the
  eighth shrinks to nothing and every decision is made in Redis again, one request at a time.
- **A lease grants for QUOTA_LEASE_SECONDS after its charge was stamped** (50 ms), at most half
  the upstream margin: a request granted from it reaches the upstream within the margin of our
  stamp, as a task's request does (tasks restamp after half the margin).
- **Grants are written behind** the answers, in one settle call per deployment every few
  milliseconds (WRITE_EVERY_S): each grant still open becomes a lock of its own in Redis
  ("<lease>.<n>", settle.lua's carve), which from then on is reported or released in Redis, by
  whichever process the report reaches, exactly as a lock acquired there. A grant reported (or
  released) before it was written is settled here and booked with the others settled since the
  last write, in one operation. When a lease stops granting, the room it still holds is given
  back; a request refused meanwhile only for that room is told to retry when it comes back.
- **A crash loses at most the last few milliseconds of writes.** Those grants stay inside their
  lease, which expires after QUOTA_LOCK_TTL_SECONDS and stays spent: over-counted, never under.

What a caller may notice: ``/status`` shows the room a lease holds as locked (at most an eighth
of what was left, for at most QUOTA_LEASE_SECONDS); the counter server's ``/status`` first gives
back its own. A report sent twice is refused the second time, wherever each arrives; once the
grant was settled here and its lease forgotten, the refusal says "unknown" rather than "already
reported", as Redis keeps no tombstone for grants booked together.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

import redis

from quota.errors import QuotaError
from quota.limiter import AsyncQuotaLimiter
from quota.sansio import (
    Decision,
    LeaseGrant,
    QuotaStatus,
    RequestRef,
    Settlement,
    carve_operation,
    check_app_id,
    check_count,
    format_request_id,
    release_operation,
    settled_operation,
    usage_tokens,
)

logger = logging.getLogger("conduit.quota.leases")

# Writes gather this long before they are sent: one settle call then carries a few ms of grants
# and settlements instead of one each, and a report that follows its lock at once is settled here.
WRITE_EVERY_S = 0.005
# A lease's room comes back when its release is written: after the lease ends, within a write
# interval and a round trip. A request refused for that room is told to retry this much after the
# lease ends: room for a loaded machine.
GIVING_BACK_S = 0.05
# One settle call carries at most this many operations (each is an argument of the script).
MOST_OPERATIONS_PER_CALL = 500
# While Redis is unreachable writes wait and are sent again after this long.
RETRY_WRITES_AFTER_S = 0.5
# Past this many waiting writes (Redis unreachable for long) the oldest are dropped: their grants
# stay spent in Redis until their lease expires, which over-counts and never under-counts.
MOST_WAITING_WRITES = 100_000
# A lease asks for room for this many requests at first, then for twice what the last one
# granted, within these bounds: a busy caller fetches a lease a few times a second, a quiet one
# holds little room.
FIRST_LEASE_REQUESTS = 4
MOST_LEASE_REQUESTS = 256
# A lease that grants no more and has nothing left to write is remembered this long, so a
# report sent twice to this process is told "already reported or released".
KEEP_SETTLED_S = 1.0
# A report of a grant another process made may arrive before that grant is written: asked again
# after these waits.
UNWRITTEN_WAITS_S = (0.01, 0.02, 0.05)
# A status waits at most this long for the writes before it (Redis may be unreachable).
STATUS_WAITS_FOR_WRITES_S = 1.0
# Redis errors that mean "unreachable now": the writes wait.
UNREACHABLE = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.BusyLoadingError,
)

LeaseKey = tuple[str, str, str]  # pool, the name acquired (a model or a deployment), app
Where = tuple[str, str, str]  # pool, model, deployment: one settle call's keys


@dataclass
class _Booked:
    """Grants of a lease settled before they were written, booked in Redis together."""

    requests: int = 0
    tokens: int = 0
    extra: int = 0  # tokens used beyond the grants
    refund_tokens: int = 0
    refund_requests: int = 0

    def operation(self, lease_id: str) -> str:
        return settled_operation(lease_id, **vars(self))


@dataclass(eq=False)
class _Lease:
    grant: LeaseGrant
    key: LeaseKey
    requests_left: int
    tokens_left: int
    granting_until: float  # time.monotonic()
    unwritten: dict[int, int] = field(default_factory=dict)  # grant number -> tokens
    settled: set[int] = field(default_factory=set)  # grants settled here
    booked: _Booked = field(default_factory=_Booked)
    granted: int = 0
    closed: bool = False
    release_unwritten: bool = False

    @property
    def where(self) -> Where:
        return self.grant.pool, self.grant.model, self.grant.deployment

    def request_id(self, grant: int) -> str:
        lease = self.grant
        lock_id = f"{lease.lease_id}.{grant}"
        return format_request_id(lease.pool, lease.model, lease.deployment, lock_id)

    def take_writes(self) -> list[str]:
        """What Redis does not know yet, in the order it must learn it: grants still open are
        carved, grants settled meanwhile booked, and the lease released last, once everything
        granted from it is out of it."""
        lease_id = self.grant.lease_id
        writes = [carve_operation(lease_id, n, tokens) for n, tokens in self.unwritten.items()]
        self.unwritten.clear()
        if self.booked.requests:
            writes.append(self.booked.operation(lease_id))
            self.booked = _Booked()
        if self.release_unwritten:
            writes.append(release_operation(lease_id))
            self.release_unwritten = False
        return writes


class QuotaLeases:
    """``acquire``, ``report`` and ``release`` of an :class:`AsyncQuotaLimiter`, answered from
    leases where they can be (the batch lane), and by the limiter otherwise. One per process and
    event loop; :meth:`aclose` gives back what the leases hold and writes what is waiting."""

    def __init__(self, limiter: AsyncQuotaLimiter, lease_s: float) -> None:
        protocol = limiter.protocol
        if not 0 < lease_s <= protocol.restamp_after_s:
            raise QuotaError(
                f"QUOTA_LEASE_SECONDS must be above 0 and at most half the upstream margin "
                f"({protocol.restamp_after_s:g} s), got {lease_s:g}"
            )
        self.limiter = limiter
        self.protocol = protocol
        self.lease_s = lease_s
        self._granting: dict[LeaseKey, _Lease] = {}
        self._leases: dict[tuple[str, str, str, str], _Lease] = {}  # (*where, lease id)
        # Grants not written yet: request id -> lease, grant number.
        self._unwritten: dict[str, tuple[_Lease, int]] = {}
        self._fetching: dict[LeaseKey, asyncio.Future[None]] = {}
        self._next_size: dict[LeaseKey, int] = {}
        # Leases with something to write, per deployment, in the order they first had.
        self._dirty: dict[Where, dict[_Lease, None]] = {}
        # Writes taken but not sent (Redis unreachable): sent first next time.
        self._unsent: dict[Where, list[str]] = {}
        self._writer: asyncio.Task[None] | None = None

    # --- acquire ---------------------------------------------------------------------------------
    async def acquire(
        self, pool: str, deployment: str, tokens: int, app_id: str, lane: str = "batch"
    ) -> Decision:
        return (await self.acquire_timed(pool, deployment, tokens, app_id, lane))[0]

    async def acquire_timed(
        self, pool: str, deployment: str, tokens: int, app_id: str, lane: str = "batch"
    ) -> tuple[Decision, int]:
        """``acquire`` and the server time (µs) its charge was stamped at: the lease's, for a
        lock granted from one (for audits)."""
        if lane != "batch":  # interactive work is weighed against the reserve, in Redis
            return await self.limiter.acquire_timed(pool, deployment, tokens, app_id, lane)
        check_count("tokens", tokens)
        check_app_id(app_id)
        key = (pool, deployment, app_id)
        if granted := self._grant(key, tokens):
            return granted
        fetching = self._fetching.get(key)
        if fetching is None:
            return await self._fetch(key, tokens)
        await asyncio.shield(fetching)  # then try the lease it brought
        if granted := self._grant(key, tokens):
            return granted
        return await self.limiter.acquire_timed(pool, deployment, tokens, app_id)

    def _grant(self, key: LeaseKey, tokens: int) -> tuple[Decision, int] | None:
        lease = self._granting.get(key)
        if lease is None:
            return None
        if time.monotonic() >= lease.granting_until:
            self._close(lease)
            return None
        if lease.requests_left < 1 or tokens > lease.tokens_left:
            return None
        lease.granted += 1
        lease.requests_left -= 1
        lease.tokens_left -= tokens
        lease.unwritten[lease.granted] = tokens
        request_id = lease.request_id(lease.granted)
        self._unwritten[request_id] = (lease, lease.granted)
        self._mark_dirty(lease)
        decision = Decision(True, request_id, 0.0, None, lease.grant.deployment)
        return decision, lease.grant.stamped_us

    async def _fetch(self, key: LeaseKey, tokens: int) -> tuple[Decision, int]:
        """Acquire in Redis, asking for a lease beside the request; others asking for ``key``
        meanwhile wait for it."""
        pool, deployment, app_id = key
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._fetching[key] = done
        try:
            requests = self._next_size.get(key, FIRST_LEASE_REQUESTS)
            # Before the stamp: the lease grants for lease_s after this, never later.
            sent_at = time.monotonic()
            decision, stamped_us, grant = await self.limiter.acquire_with_lease(
                pool,
                deployment,
                tokens,
                app_id,
                lease_requests=requests,
                lease_tokens=requests * max(tokens, 1),
                lease_hold_s=self.lease_s + GIVING_BACK_S,
            )
            if grant is not None:
                self._start(key, grant, granting_until=sent_at + self.lease_s)
            return decision, stamped_us
        finally:
            del self._fetching[key]
            done.set_result(None)

    def _start(self, key: LeaseKey, grant: LeaseGrant, granting_until: float) -> None:
        old = self._granting.get(key)
        if old is not None:
            self._close(old)
        lease = _Lease(grant, key, grant.requests, grant.tokens, granting_until)
        self._granting[key] = lease
        self._leases[(*lease.where, grant.lease_id)] = lease
        delay = granting_until - time.monotonic()
        asyncio.get_running_loop().call_later(delay, self._close, lease)

    def _close(self, lease: _Lease) -> None:
        """The lease grants no more: give back the room it still holds."""
        if lease.closed:
            return
        lease.closed = True
        if self._granting.get(lease.key) is lease:
            del self._granting[lease.key]
        self._next_size[lease.key] = min(
            MOST_LEASE_REQUESTS, max(FIRST_LEASE_REQUESTS, 2 * lease.granted)
        )
        lease.release_unwritten = True
        self._mark_dirty(lease)

    def _close_all(self) -> None:
        for lease in list(self._granting.values()):
            self._close(lease)

    def _forget(self, lease: _Lease) -> None:
        """Redis answers for the lease's grants from now on."""
        self._leases.pop((*lease.where, lease.grant.lease_id), None)

    # --- report and release ----------------------------------------------------------------------
    async def report(
        self,
        request_id: str,
        prompt_tokens: int,
        completion_tokens: int = 0,
        *,
        pool: str | None = None,
    ) -> Settlement:
        actual = usage_tokens(prompt_tokens, completion_tokens)
        found = self._settle_here(request_id, pool)
        if found is None:
            ref = self._ref_for_redis(request_id, pool)
            operation = self.protocol.report_operation(ref, actual)
            return await self._settle_in_redis(request_id, ref, operation)
        lease, tokens = found
        extra = max(0, actual - tokens)
        refund = 0
        if self.protocol.charge_models[lease.grant.pool] == "usage" and actual < tokens:
            refund = tokens - actual
        booked = lease.booked
        booked.requests += 1
        booked.tokens += tokens
        booked.extra += extra
        booked.refund_tokens += refund
        return Settlement(extra, refund)

    async def release(self, request_id: str, *, pool: str | None = None) -> Settlement:
        found = self._settle_here(request_id, pool)
        if found is None:
            ref = self._ref_for_redis(request_id, pool)
            return await self._settle_in_redis(request_id, ref, release_operation(ref.lock_id))
        lease, tokens = found
        booked = lease.booked
        booked.requests += 1
        booked.tokens += tokens
        booked.refund_tokens += tokens
        booked.refund_requests += 1
        return Settlement(0, tokens)

    def _settle_here(self, request_id: str, pool: str | None) -> tuple[_Lease, int] | None:
        """The lease and tokens of ``request_id`` when it is a grant of this process not yet
        written: settled here, to be booked at the next write. None: Redis answers for it."""
        found = self._unwritten.get(request_id)
        if found is None:
            return None
        lease, grant = found
        if pool is not None and lease.grant.pool != pool:
            return None  # the parse for Redis says which pool it belongs to
        del self._unwritten[request_id]
        tokens = lease.unwritten.pop(grant)
        lease.settled.add(grant)
        self._mark_dirty(lease)
        return lease, tokens

    def _ref_for_redis(self, request_id: str, pool: str | None) -> RequestRef:
        """``request_id`` parsed, for Redis to settle; the QuotaError for a malformed id, one of
        another pool, or a grant this process settled already (Redis has no record of it)."""
        ref = self.protocol.request_ref(request_id, pool)
        lease_id, dot, grant = ref.lock_id.partition(".")
        lease = self._leases.get((ref.pool, ref.model, ref.deployment, lease_id)) if dot else None
        if lease is not None and int(grant) in lease.settled:
            raise self.protocol.settle_error(request_id, "done")
        return ref

    async def _settle_in_redis(
        self, request_id: str, ref: RequestRef, operation: str
    ) -> Settlement:
        """Settle in Redis: a lock acquired there, or a grant written already (if it was made
        in another process and is not written yet, asked again after short waits)."""
        waits = UNWRITTEN_WAITS_S if "." in ref.lock_id else ()
        for wait in (*waits, None):
            (result,) = await self.limiter.settle_many(
                ref.pool, ref.model, ref.deployment, [operation]
            )
            if result.why != "unknown" or wait is None:
                return self.protocol.settled(request_id, result)
            await asyncio.sleep(wait)
        raise AssertionError("unreachable: the last wait is None")

    # --- writing behind --------------------------------------------------------------------------
    def _mark_dirty(self, lease: _Lease) -> None:
        self._dirty.setdefault(lease.where, {})[lease] = None
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write_behind())

    def _take_writes(self) -> dict[Where, list[str]]:
        writes, self._unsent = self._unsent, {}
        dirty, self._dirty = self._dirty, {}
        for where, leases in dirty.items():
            for lease in leases:
                for grant in lease.unwritten:  # carved now: Redis answers for them
                    del self._unwritten[lease.request_id(grant)]
                writes.setdefault(where, []).extend(lease.take_writes())
                if lease.closed:
                    asyncio.get_running_loop().call_later(KEEP_SETTLED_S, self._forget, lease)
        return writes

    async def _write_behind(self) -> None:
        try:
            while self._dirty or self._unsent:
                await asyncio.sleep(WRITE_EVERY_S)
                self._unsent = await self._send(self._take_writes())
                if self._unsent:
                    self._drop_oldest_writes()
                    await asyncio.sleep(RETRY_WRITES_AFTER_S)
        finally:
            self._writer = None

    async def _send(self, writes: dict[Where, list[str]]) -> dict[Where, list[str]]:
        """Send the deployments' operations, the deployments side by side; what could not be
        sent because Redis was unreachable."""
        unsent = await asyncio.gather(
            *(self._send_in_order(where, operations) for where, operations in writes.items())
        )
        return {where: operations for where, operations in unsent if operations}

    async def _send_in_order(self, where: Where, operations: list[str]) -> tuple[Where, list[str]]:
        """One deployment's operations, in calls one after the other (a carve must land before
        the report of its grant); those not sent because Redis was unreachable."""
        for start in range(0, len(operations), MOST_OPERATIONS_PER_CALL):
            chunk = operations[start : start + MOST_OPERATIONS_PER_CALL]
            try:
                results = await self.limiter.settle_many(*where, chunk)
            except UNREACHABLE as error:
                logger.warning("quota lease writes wait: Redis unreachable (%s)", error)
                return where, operations[start:]
            except Exception:
                logger.exception("quota lease writes refused")
                continue
            for operation, result in zip(chunk, results, strict=True):
                if not result.done:
                    logger.warning(
                        "quota lease write %r changed nothing: %s", operation, result.why
                    )
        return where, []

    def _drop_oldest_writes(self) -> None:
        """Past MOST_WAITING_WRITES unsent (Redis unreachable for long), drop the oldest."""
        waiting = sum(len(operations) for operations in self._unsent.values())
        for operations in self._unsent.values():
            excess = waiting - MOST_WAITING_WRITES
            if excess <= 0:
                return
            dropped = min(excess, len(operations))
            del operations[:dropped]
            waiting -= dropped
            logger.error(
                "quota lease writes dropped (%d, Redis unreachable): their grants stay spent "
                "until their lease expires (QUOTA_LOCK_TTL_SECONDS)",
                dropped,
            )

    async def flush(self) -> None:
        """Wait until every write made so far is sent (while Redis is unreachable: until it is
        reachable again)."""
        while self._writer is not None:
            await asyncio.shield(self._writer)

    async def aclose(self, timeout_s: float = 5.0) -> None:
        """Give back the room every lease still holds and send what waits to be written, for at
        most ``timeout_s``."""
        self._close_all()
        try:
            await asyncio.wait_for(self.flush(), timeout_s)
        except TimeoutError:
            logger.error(
                "quota lease writes not sent in %g s: their grants stay spent until their lease "
                "expires (QUOTA_LOCK_TTL_SECONDS)",
                timeout_s,
            )

    # --- the rest of the limiter -----------------------------------------------------------------
    async def model_status(self, pool: str, model: str) -> list[QuotaStatus]:
        """The limiter's status, once this process's leases gave back their room and its writes
        are sent: exact for what this process granted (another process's leases show as locked
        for at most QUOTA_LEASE_SECONDS)."""
        self._close_all()
        with contextlib.suppress(TimeoutError):  # Redis unreachable: the status call says so
            await asyncio.wait_for(self.flush(), STATUS_WAITS_FOR_WRITES_S)
        return await self.limiter.model_status(pool, model)
