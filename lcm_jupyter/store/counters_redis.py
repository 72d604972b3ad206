"""`Counters` on a Redis shared by every server process: each operation is one round trip.

Every read-modify-write is one Lua script, so it is atomic across processes, and
every script reads the clock with Redis TIME, so all processes share one clock
(Redis >= 5 replicates script effects, which makes TIME legal before a write); a
`clock` given to the constructor replaces it, for tests.

Keys besides the ones `counters.py` names, per key and month:

- `lcm:resv:{key}:{month}`        HASH  call_id -> reserved amount
- `lcm:resv-exp:{key}:{month}`    ZSET  call_id -> expiry (ms), so expired ones drop in O(expired)
- `lcm:resv-total:{key}:{month}`  STRING the running sum of the HASH
- `lcm:settled:{key}:{month}`     ZSET  call_id -> marker expiry (ms): a retried settle is a no-op
- `lcm:recent:{key}:{month}`      ZSET  "settled-at-ms cost call_id" -> sequence number: the
                                  settlements of the last two minutes, which a rebuild from
                                  the log adds back when their rows are not written yet
- `lcm:recent-seq:{key}:{month}`  STRING the last sequence number

Money stays exact: amounts travel as decimal strings and only Redis INCRBY/HINCRBY
adds them (int64), because Lua numbers are doubles. Only the budget comparison
uses doubles, exact up to 2**53 units (about $900,000); above that a decision can
be off by a few units (1e-9 USD).

Failures are not retried. They surface as `redis.exceptions.ConnectionError` (refused,
reset, or no pooled connection free within `pool_timeout`) or
`redis.exceptions.TimeoutError` (no answer within `timeout`): catch
`redis.exceptions.RedisError`, their common base, to trip a circuit breaker. A
timed-out script may still run once Redis answers again, which is why settle is
idempotent per call_id.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError

from .counters import (
    BUDGET_TTL_SECONDS,
    RATE_WINDOW_SECONDS,
    RECENT_SETTLED_SECONDS,
    RESERVATION_TTL_SECONDS,
    SETTLED_TTL_SECONDS,
    Admission,
    Admissions,
    BudgetState,
    RateState,
    Settlements,
    alert_key,
    budget_key,
    cache_key,
    rate_key,
    recent_key,
    recent_seq_key,
)

# Helpers every script starts with. Reservation keys come as (amounts, expiries, total).
_PRELUDE = """
if redis.replicate_commands then redis.replicate_commands() end  -- Redis < 5: allow TIME

-- Every script's first ARGV is the clock: '' for Redis TIME (one clock for every process),
-- or milliseconds given by the caller (tests move time without sleeping).
local clock = table.remove(ARGV, 1)

local function now_ms()
  if clock ~= '' then return tonumber(clock) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end

-- Amounts stay strings so INCRBY adds them as int64; "-0" is not an integer to Redis.
local function negate(amount)
  if amount == '0' then return '0' end
  if string.sub(amount, 1, 1) == '-' then return string.sub(amount, 2) end
  return '-' .. amount
end

local function forget(amounts, expiries, total, call_id)
  local amount = redis.call('HGET', amounts, call_id)
  if amount then
    redis.call('HDEL', amounts, call_id)
    redis.call('INCRBY', total, negate(amount))
  end
  redis.call('ZREM', expiries, call_id)
end

-- No live reservation left: delete all three keys, which also heals a total that an
-- eviction of one key made drift.
local function reserved_total(amounts, expiries, total)
  if redis.call('ZCARD', expiries) == 0 then
    redis.call('DEL', amounts, expiries, total)
    return '0'
  end
  return redis.call('GET', total) or '0'
end

local function drop_expired(amounts, expiries, total, now)
  local expired = redis.call('ZRANGEBYSCORE', expiries, '-inf', now)
  for _, call_id in ipairs(expired) do
    forget(amounts, expiries, total, call_id)
  end
  return reserved_total(amounts, expiries, total)
end
"""

# KEYS: rate, budget, amounts, expiries, total
# ARGV (after the clock): call_id, rpm|'', budget|'', reserve, soft 0|1, window_ms,
# reservation_ttl_ms
# Returns {allowed 0|1, reason|'', calls in window, reset ms, spent, reserved}.
_ADMIT = (
    _PRELUDE
    + """
local call_id, rpm, budget = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local reserve, soft = ARGV[4], ARGV[5] == '1'
local window, ttl = tonumber(ARGV[6]), tonumber(ARGV[7])
local now = now_ms()
local reserved = drop_expired(KEYS[3], KEYS[4], KEYS[5], now)
local spent = redis.call('GET', KEYS[2]) or '0'
local count = 0
if rpm then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
  count = redis.call('ZCARD', KEYS[1])
end

-- Until enough entries leave for one more call: the (count - rpm + 1)th oldest, which
-- is the oldest unless rpm was lowered while the window was full.
local function reset_ms(limited)
  if not rpm then return '0' end
  local entry = redis.call('ZRANGE', KEYS[1], math.max(count - rpm, 0), math.max(count - rpm, 0),
    'WITHSCORES')
  if entry[2] then return string.format('%.3f', tonumber(entry[2]) + window - now) end
  if limited then return string.format('%.3f', window) end  -- rpm 0: nothing ever fits
  return '0'
end

if rpm and count >= rpm then
  return {0, 'rate_limit', count, reset_ms(true), spent, reserved}
end
if budget then
  if soft then
    if tonumber(spent) >= budget then
      return {0, 'budget', count, reset_ms(false), spent, reserved}
    end
  else
    -- A repeated call_id replaces its reservation rather than adding to it.
    local held = tonumber(redis.call('HGET', KEYS[3], call_id) or '0')
    if tonumber(spent) + tonumber(reserved) - held + tonumber(reserve) > budget then
      return {0, 'budget', count, reset_ms(false), spent, reserved}
    end
    forget(KEYS[3], KEYS[4], KEYS[5], call_id)
    redis.call('HSET', KEYS[3], call_id, reserve)
    redis.call('ZADD', KEYS[4], now + ttl, call_id)
    redis.call('INCRBY', KEYS[5], reserve)
    -- Every reservation expires before the keys do, so they go together.
    for i = 3, 5 do redis.call('PEXPIRE', KEYS[i], math.ceil(ttl) + 1000) end
    reserved = redis.call('GET', KEYS[5])
  end
end
if rpm then
  -- ZADD counts 0 for a repeated call_id: it moves in the window, taking no new slot.
  count = count + redis.call('ZADD', KEYS[1], now, call_id)
  redis.call('PEXPIRE', KEYS[1], math.ceil(window) + 1000)
end
return {1, '', count, reset_ms(false), spent, reserved}
"""
)

# KEYS: budget, amounts, expiries, total, settled, recent, recent-seq
# ARGV (after the clock): call_id, cost, budget_ttl_s, settled_ttl_ms, recent_ms
# Returns {spent, reserved}.
_SETTLE = (
    _PRELUDE
    + """
local call_id, settled_ttl, recent = ARGV[1], tonumber(ARGV[4]), tonumber(ARGV[5])
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now)
if not redis.call('ZSCORE', KEYS[5], call_id) then
  forget(KEYS[2], KEYS[3], KEYS[4], call_id)
  redis.call('INCRBY', KEYS[1], ARGV[2])
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  redis.call('ZADD', KEYS[5], now + settled_ttl, call_id)
  redis.call('PEXPIRE', KEYS[5], settled_ttl)
  -- Recent settlements, numbered: a rebuild from the log adds back those not logged yet.
  -- The oldest leave a few at a time (each settle adds one), by their time.
  local old = redis.call('ZRANGE', KEYS[6], 0, 3)
  local gone = 0
  for _, entry in ipairs(old) do
    if tonumber(string.match(entry, '^(%S+)')) > now - recent then break end
    gone = gone + 1
  end
  if gone > 0 then redis.call('ZREMRANGEBYRANK', KEYS[6], 0, gone - 1) end
  local seq = redis.call('INCR', KEYS[7])
  redis.call('EXPIRE', KEYS[7], ARGV[3])
  redis.call('ZADD', KEYS[6], seq, string.format('%.3f', now) .. ' ' .. ARGV[2] .. ' ' .. call_id)
  redis.call('PEXPIRE', KEYS[6], math.ceil(recent) + 1000)
end
return {redis.call('GET', KEYS[1]) or '0', drop_expired(KEYS[2], KEYS[3], KEYS[4], now)}
"""
)

# KEYS: recent, recent-seq, amounts. ARGV (after the clock): recent_ms.
# Returns {mark, n, n entries of the last recent_ms, the call ids holding a reservation...}.
_RECENT = (
    _PRELUDE
    + """
local now, recent = now_ms(), tonumber(ARGV[1])
local found = {redis.call('GET', KEYS[2]) or '0', 0}
for _, entry in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if tonumber(string.match(entry, '^(%S+)')) > now - recent then table.insert(found, entry) end
end
found[2] = #found - 2
for _, call_id in ipairs(redis.call('HKEYS', KEYS[3])) do table.insert(found, call_id) end
return found
"""
)

# KEYS: budget, amounts, expiries, total, recent. ARGV (after the clock): base, ttl_s, drop
# ("1": forget every reservation), after, n, n call ids to leave out, then call ids whose
# reservations to forget. Returns {old spent, new spent}. Settlements numbered above `after`
# are all counted, whatever their time.
_REBASE = (
    _PRELUDE
    + """
local n = tonumber(ARGV[5])
local skip = {}
for i = 6, 5 + n do skip[ARGV[i]] = true end
local old = redis.call('GET', KEYS[1]) or '0'
local later = redis.call('ZRANGEBYSCORE', KEYS[5], '(' .. ARGV[4], '+inf')
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
for _, entry in ipairs(later) do
  local cost, call_id = string.match(entry, '^%S+ (%S+) (.*)$')
  if not skip[call_id] then redis.call('INCRBY', KEYS[1], cost) end
end
if ARGV[3] == '1' then
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
else
  for i = 6 + n, #ARGV do forget(KEYS[2], KEYS[3], KEYS[4], ARGV[i]) end
  drop_expired(KEYS[2], KEYS[3], KEYS[4], now_ms())
end
return {old, redis.call('GET', KEYS[1])}
"""
)

# KEYS: rate. ARGV (after the clock): window_ms. Returns {call_id, age_ms, ...}.
_WINDOW = (
    _PRELUDE
    + """
local now, window = now_ms(), tonumber(ARGV[1])
local found = {}
local entries = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. (now - window), '+inf', 'WITHSCORES')
for i = 1, #entries, 2 do
  table.insert(found, entries[i])
  table.insert(found, string.format('%.3f', now - tonumber(entries[i + 1])))
end
return found
"""
)

# KEYS: rate. ARGV (after the clock): window_ms, then call_id, age_ms pairs.
# Each call once (ZADD NX: one already there keeps its time). Returns how many were added.
_ADD_WINDOW = (
    _PRELUDE
    + """
local now, window = now_ms(), tonumber(ARGV[1])
local added = 0
for i = 2, #ARGV, 2 do
  local at = now - tonumber(ARGV[i + 1])
  if at > now - window then added = added + redis.call('ZADD', KEYS[1], 'NX', at, ARGV[i]) end
end
if added > 0 then redis.call('PEXPIRE', KEYS[1], math.ceil(window) + 1000) end
return added
"""
)

# KEYS: amounts, expiries, total. ARGV (after the clock): call_id.
_RELEASE = (
    _PRELUDE
    + """
forget(KEYS[1], KEYS[2], KEYS[3], ARGV[1])
drop_expired(KEYS[1], KEYS[2], KEYS[3], now_ms())
return 1
"""
)

# KEYS: budget, amounts, expiries, total. Returns {spent, reserved}.
_BUDGET = (
    _PRELUDE
    + """
local reserved = drop_expired(KEYS[2], KEYS[3], KEYS[4], now_ms())
return {redis.call('GET', KEYS[1]) or '0', reserved}
"""
)

# KEYS: budget, amounts, expiries, total. ARGV: spent, ttl_s, drop ("1": forget the
# reservations too). Returns the old spent.
_SET_SPENT = """
local old = redis.call('GET', KEYS[1]) or '0'
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
if ARGV[3] == '1' then redis.call('DEL', KEYS[2], KEYS[3], KEYS[4]) end
return old
"""


def _reservation_keys(key_id: int, month: str) -> list[str]:
    """The amounts HASH, expiries ZSET and running total of a month's reservations."""
    return [
        f"lcm:resv:{key_id}:{month}",
        f"lcm:resv-exp:{key_id}:{month}",
        f"lcm:resv-total:{key_id}:{month}",
    ]


def settled_key(key_id: int, month: str) -> str:
    """The Redis key of a month's recently settled call ids."""
    return f"lcm:settled:{key_id}:{month}"


class _Batcher:
    """Script calls made in the same turn of the event loop go to Redis as one pipeline.

    Each redis-py command pays for a pool checkout and release, a write and a read and
    their awaits: about 100 us of the event loop's time here, twice per proxied call.
    Under load several calls admit or settle in the same turn, and one pipeline pays
    that once for all of them (auto-pipelining). A lone call waits one extra turn.
    """

    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self._pending: list[tuple[AsyncScript, Sequence, Sequence, asyncio.Future]] = []
        self._tasks: set[asyncio.Task] = set()

    async def run(self, script: AsyncScript, keys: Sequence, args: Sequence = ()) -> Any:
        """Run `script` in the next batch; its result, or its error raised here."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((script, keys, args, future))
        return await future

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        task = asyncio.ensure_future(self._send(batch))
        self._tasks.add(task)  # referenced until done, so it is not collected
        task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list) -> None:
        try:
            results = await self._execute(batch)
        except asyncio.CancelledError:
            for *_, future in batch:
                future.cancel()
            raise
        except Exception as exc:  # the connection failed: every call in the batch sees it
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (*_, future), result in zip(batch, results, strict=True):
            if future.done():  # its caller gave up (cancelled): nothing to tell it
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def _execute(self, batch: list) -> list:
        results = await self._pipeline(batch)
        # A restarted Redis has no scripts: those calls did not run. Load, then send them
        # again (only them: the others ran, and an admit must not run twice).
        missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
        if missing:
            for script in {id(batch[i][0]): batch[i][0] for i in missing}.values():
                await self._redis.script_load(script.script)
            again = await self._pipeline([batch[i] for i in missing])
            for i, result in zip(missing, again, strict=True):
                results[i] = result
        return results

    async def _pipeline(self, batch: list) -> list:
        pipe = self._redis.pipeline(transaction=False)
        for script, keys, args, _ in batch:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        return await pipe.execute(raise_on_error=False)


class RedisCounters:
    """`Counters` on Redis: atomic across processes, fails fast, never retries."""

    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 0.05,
        window_seconds: float = RATE_WINDOW_SECONDS,
        reservation_ttl: float = RESERVATION_TTL_SECONDS,
        max_connections: int = 50,
        pool_timeout: float = 1.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        # A command holds a connection for its round trip. The default pool raises
        # MaxConnectionsError past 100 concurrent calls, and a burst that opens many
        # connections at once misses the short connect timeout; so at most
        # `max_connections`, and a burst beyond waits up to `pool_timeout` for one.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=pool_timeout,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            # The caller's circuit breaker decides what happens next; a retry here
            # would only multiply the time a dead Redis costs each call.
            retry=Retry(NoBackoff(), 0),
        )
        self._redis = aioredis.Redis.from_pool(pool)
        self._window_ms = str(window_seconds * 1000)
        self._reservation_ttl_ms = str(reservation_ttl * 1000)
        self._batch = _Batcher(self._redis)
        self._clock = clock
        register = self._redis.register_script
        self._admit = register(_ADMIT)
        self._settle = register(_SETTLE)
        self._release = register(_RELEASE)
        self._budget = register(_BUDGET)
        self._set_spent = register(_SET_SPENT)
        self._recent = register(_RECENT)
        self._rebase = register(_REBASE)
        self._window_script = register(_WINDOW)
        self._add_window = register(_ADD_WINDOW)

    def _now(self) -> str:
        """The scripts' clock argument: '' (Redis TIME) unless a clock was given."""
        return "" if self._clock is None else repr(self._clock() * 1000)

    async def admit(
        self,
        *,
        key_id: int,
        call_id: str,
        rpm: int | None,
        month: str,
        budget: int | None,
        reserve: int,
        soft: bool = False,
    ) -> Admission:
        """Check the sliding window and reserve `reserve` units against `budget`, atomically."""
        if reserve < 0:
            raise ValueError("reserve must not be negative")
        allowed, reason, count, reset_ms, spent, reserved = await self._batch.run(
            self._admit,
            keys=[rate_key(key_id), budget_key(key_id, month), *_reservation_keys(key_id, month)],
            args=[
                self._now(),
                call_id,
                "" if rpm is None else int(rpm),
                "" if budget is None else int(budget),
                int(reserve),
                int(soft),
                self._window_ms,
                self._reservation_ttl_ms,
            ],
        )
        reason = reason.decode() or None
        rate = None
        if rpm is not None:
            rate = RateState(
                allowed=reason != "rate_limit",
                limit=rpm,
                remaining=max(rpm - count, 0),
                reset_seconds=float(reset_ms) / 1000,
            )
        return Admission(bool(allowed), reason, rate, int(spent), int(reserved))

    async def settle(self, *, key_id: int, call_id: str, month: str, cost: int) -> BudgetState:
        """Release the call's reservation (if any) and add its actual `cost`, once per call."""
        spent, reserved = await self._batch.run(
            self._settle,
            keys=[
                budget_key(key_id, month),
                *_reservation_keys(key_id, month),
                settled_key(key_id, month),
                recent_key(key_id, month),
                recent_seq_key(key_id, month),
            ],
            args=[
                self._now(),
                call_id,
                int(cost),
                BUDGET_TTL_SECONDS,
                SETTLED_TTL_SECONDS * 1000,
                RECENT_SETTLED_SECONDS * 1000,
            ],
        )
        return BudgetState(int(spent), int(reserved))

    async def release(self, *, key_id: int, call_id: str, month: str) -> None:
        """Drop the call's reservation without spending (a failed or cached call)."""
        await self._batch.run(
            self._release, keys=_reservation_keys(key_id, month), args=[self._now(), call_id]
        )

    async def budget(self, *, key_id: int, month: str) -> BudgetState:
        """Settled spend and live reservations of a key's month."""
        spent, reserved = await self._batch.run(
            self._budget,
            keys=[budget_key(key_id, month), *_reservation_keys(key_id, month)],
            args=[self._now()],
        )
        return BudgetState(int(spent), int(reserved))

    async def set_spent(
        self, *, key_id: int, month: str, spent: int, drop_reservations: bool = False
    ) -> int:
        """Make the month's settled spend `spent` (reconcile); returns the old value."""
        old = await self._batch.run(
            self._set_spent,
            keys=[budget_key(key_id, month), *_reservation_keys(key_id, month)],
            args=[int(spent), BUDGET_TTL_SECONDS, "1" if drop_reservations else "0"],
        )
        return int(old)

    async def recent_settlements(self, *, key_id: int, month: str) -> Settlements:
        """See Counters.recent_settlements."""
        mark, n, *found = await self._batch.run(
            self._recent,
            keys=[
                recent_key(key_id, month),
                recent_seq_key(key_id, month),
                _reservation_keys(key_id, month)[0],
            ],
            args=[self._now(), RECENT_SETTLED_SECONDS * 1000],
        )
        costs = {}
        for entry in found[: int(n)]:
            _, cost, call_id = entry.decode().split(" ", 2)
            costs[call_id] = int(cost)
        held = tuple(call_id.decode() for call_id in found[int(n) :])
        return Settlements(int(mark), costs, id(self), held)

    async def rebase_spent(
        self,
        *,
        key_id: int,
        month: str,
        base: int,
        since: Settlements,
        exclude: Sequence[str] = (),
        forget: Sequence[str] = (),
        drop_reservations: bool = False,
    ) -> tuple[int, int]:
        """See Counters.rebase_spent."""
        # Another store's mark: no settlement here is "since" it (-1 would take them all).
        after = since.mark if since.origin == id(self) else 2**62
        old, new = await self._batch.run(
            self._rebase,
            keys=[
                budget_key(key_id, month),
                *_reservation_keys(key_id, month),
                recent_key(key_id, month),
            ],
            args=[
                self._now(),
                int(base),
                BUDGET_TTL_SECONDS,
                "1" if drop_reservations else "0",
                after,
                len(exclude),
                *exclude,
                *forget,
            ],
        )
        return int(old), int(new)

    async def recent_admissions(self, *, key_id: int) -> list[tuple[str, float]]:
        """See Counters.recent_admissions."""
        flat = await self._batch.run(
            self._window_script, keys=[rate_key(key_id)], args=[self._now(), self._window_ms]
        )
        return [(flat[i].decode(), float(flat[i + 1]) / 1000) for i in range(0, len(flat), 2)]

    async def add_admissions(self, *, key_id: int, admissions: Admissions) -> int:
        """See Counters.add_admissions."""
        if not admissions:
            return 0
        pairs = [x for call_id, age in admissions for x in (call_id, repr(max(age, 0.0) * 1000))]
        return int(
            await self._batch.run(
                self._add_window,
                keys=[rate_key(key_id)],
                args=[self._now(), self._window_ms, *pairs],
            )
        )

    async def mark_alert(self, *, key_id: int, month: str, threshold: int) -> bool:
        """True the first time this (key, month, threshold) is marked, False after."""
        key = alert_key(key_id, month, threshold)
        return bool(await self._redis.set(key, b"1", nx=True, ex=BUDGET_TTL_SECONDS))

    async def cache_get(self, key: str) -> bytes | None:
        """A cached response, or None."""
        found = await self._redis.get(cache_key(key))
        return found.encode() if isinstance(found, str) else found

    async def cache_set(self, key: str, value: bytes, ttl: int) -> None:
        """Cache a response for `ttl` seconds (nothing when `ttl` is not positive)."""
        if ttl > 0:
            await self._redis.set(cache_key(key), value, ex=math.ceil(ttl))

    async def ping(self) -> bool:
        """True when the store answers."""
        try:
            return bool(await self._redis.ping())
        except (RedisError, OSError):
            return False

    async def reconnect(self) -> None:
        """Drop pooled connections; the next operations open fresh ones."""
        await self._redis.connection_pool.disconnect()

    async def close(self) -> None:
        """Release connections."""
        await self._redis.aclose()
