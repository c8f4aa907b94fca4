"""Per-job data keys from Vault's transit engine (`transit/datakey/plaintext/histo-store`), unwrapped
with `transit/decrypt/histo-store`: the masters' policy allows these two calls on that key and nothing
else, so a master can neither read the key nor encrypt or rewrap with it.

The plaintext of a data key lives only in memory, in a bounded LRU cache (`cache_size` keys): while
Vault is away, results whose key is cached are still served; anything else raises KeysUnavailable
with the reason, which the API turns into a 503 that says why.

New keys are made ahead (`pool_size`, refilled by the master's upkeep loop): an upload takes a key
from the pool, so uploads are accepted while Vault is away for as long as the pool lasts (a minute
of uploads by default) and no upload waits for a Vault round trip. A pooled key is the same kind of
secret as a cached one (plaintext in this process's memory only, one job each), and is dropped
unused after `pool_max_age` seconds, so a transit key rotation reaches new uploads within that.

A job's key can also be *handed over*: the master that accepted an upload (and made its key) sends the
plaintext to the leader along with the sealed upload's replica, over the internal mTLS listener that
only master identities reach (replication.py, internal.py store_put), so that the leader starting the
job need not ask Vault to unwrap it. A handed key waits here (offer) until that job starts (offered)
and at most `HANDOFF_MAX_AGE` seconds; it is used only once it has opened the upload it came with
(AES-GCM: another key does not), for that job's run alone: never cached for the wrapped key, which it
has not been shown to be (only Vault's unwrap says what a wrapped key is). Masters may
unwrap every data key anyway (their Vault policy), so this gives a master no key it could not have."""
from __future__ import annotations

import base64
import threading
import time
from collections import OrderedDict, deque
from typing import Any, Callable, Protocol

import requests
from hvac import exceptions as hx

from ..vault.client import VaultAuthError, VaultUnavailable
from ..vault.setup import STORE_KEY, TRANSIT
from .envelope import DataKey



HANDOFF_MAX_AGE = 60.0  # seconds a handed-over key waits for its job to start
HANDOFF_MAX = 1024  # handed-over keys held at most (the oldest go first)


class KeysUnavailable(RuntimeError):
    """No data key can be made or unwrapped right now (Vault away or refusing); the message says why."""


class KeyService(Protocol):
    def new_key(self) -> DataKey: ...
    def unwrap(self, wrapped: str) -> bytes: ...
    def forget(self, wrapped: str) -> None: ...
    def offered(self, wrapped: str) -> bytes | None: ...


class Handoffs:
    """Keys handed over by the master that accepted their upload, each until its job starts (taken)
    or `max_age` seconds; never more than `size` (the oldest go first)."""

    def __init__(self, size: int = HANDOFF_MAX, max_age: float = HANDOFF_MAX_AGE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.size, self.max_age, self._clock = size, max_age, clock
        self._items: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def _expire(self) -> None:
        oldest = self._clock() - self.max_age
        while self._items and (len(self._items) > self.size or next(iter(self._items.values()))[0] < oldest):
            self._items.popitem(last=False)

    def offer(self, wrapped: str, plaintext: bytes) -> None:
        with self._lock:
            self._items[wrapped] = (self._clock(), plaintext)
            self._items.move_to_end(wrapped)
            self._expire()

    def take(self, wrapped: str) -> bytes | None:
        with self._lock:
            self._expire()
            item = self._items.pop(wrapped, None)
            return item[1] if item is not None else None

    def drop(self, wrapped: str) -> None:
        with self._lock:
            self._items.pop(wrapped, None)

    def expire(self) -> None:
        """Forget the keys past their age now (the master's upkeep, every second), not at the next use:
        a plaintext key is held no longer than its job needs it, however quiet the master is."""
        with self._lock:
            self._expire()

    def __len__(self) -> int:
        with self._lock:
            self._expire()
            return len(self._items)


class KeyCache:
    """Unwrapped data keys by wrapped key, least recently used first out."""

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, wrapped: str) -> bytes | None:
        with self._lock:
            key = self._items.get(wrapped)
            if key is not None:
                self._items.move_to_end(wrapped)
            return key

    def put(self, wrapped: str, plaintext: bytes) -> None:
        with self._lock:
            self._items[wrapped] = plaintext
            self._items.move_to_end(wrapped)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def drop(self, wrapped: str) -> None:
        with self._lock:
            self._items.pop(wrapped, None)

    def __len__(self) -> int:
        return len(self._items)


class VaultDataKeys:
    """KeyService backed by Vault transit; `client` returns the service's current hvac client."""

    def __init__(self, client: Callable[[], Any], cache_size: int = 4096, key_name: str = STORE_KEY,
                 mount: str = TRANSIT, pool_size: int = 0, pool_max_age: float = 600.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._client, self.key_name, self.mount = client, key_name, mount
        self.cache = KeyCache(cache_size)
        self.pool_size, self.pool_max_age, self._clock = max(0, pool_size), pool_max_age, clock
        self._pool: deque[tuple[float, DataKey]] = deque()  # (made at, key), oldest first
        self._pool_lock = threading.Lock()
        self.handoffs = Handoffs(clock=clock)

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except VaultUnavailable as exc:  # the session's client itself: its token expired, no login now
            raise KeysUnavailable(f"Vault is unreachable, so data keys cannot be {what} ({exc})") from None
        except VaultAuthError as exc:
            raise KeysUnavailable(f"Vault refused to let data keys be {what} ({exc})") from None
        except requests.RequestException as exc:
            raise KeysUnavailable(f"Vault is unreachable, so data keys cannot be {what} "
                                  f"({type(exc).__name__})") from None
        except (hx.VaultDown, hx.InternalServerError, hx.BadGateway, hx.UnexpectedError) as exc:
            raise KeysUnavailable(f"Vault is sealed or failing, so data keys cannot be {what} "
                                  f"({type(exc).__name__})") from None
        except hx.VaultError as exc:
            raise KeysUnavailable(f"Vault refused to let data keys be {what} ({type(exc).__name__})") from None

    def new_key(self) -> DataKey:
        """A fresh key: from the pool when it holds one, else straight from Vault."""
        key = self._take()
        return key if key is not None else self._make()

    def _take(self) -> DataKey | None:
        with self._pool_lock:
            self._expire()
            if not self._pool:
                return None
            _, key = self._pool.popleft()
        self.cache.put(key.wrapped, key.plaintext)
        return key

    def _expire(self) -> None:
        oldest = self._clock() - self.pool_max_age
        while self._pool and self._pool[0][0] < oldest:
            self._pool.popleft()

    def pooled(self) -> int:
        with self._pool_lock:
            self._expire()
            return len(self._pool)

    def refill(self, limit: int | None = None) -> int:
        """Top the pool up towards `pool_size`, at most `limit` keys this call (blocking; run off the
        event loop); how many keys it added. Vault away: KeysUnavailable after the keys it did add
        (the pool keeps them)."""
        added = 0
        while self.pooled() < self.pool_size and (limit is None or added < limit):
            key = self._make(cache=False)
            with self._pool_lock:
                self._pool.append((self._clock(), key))
            added += 1
        return added

    def _make(self, cache: bool = True) -> DataKey:
        resp = self._call("created", lambda: self._client().secrets.transit.generate_data_key(
            self.key_name, key_type="plaintext", bits=256, mount_point=self.mount))
        plaintext = base64.b64decode(resp["data"]["plaintext"])
        key = DataKey(plaintext=plaintext, wrapped=str(resp["data"]["ciphertext"]))
        if cache:  # a pooled key enters the cache when it is taken (a pool never evicts used keys)
            self.cache.put(key.wrapped, plaintext)
        return key

    def unwrap(self, wrapped: str) -> bytes:
        cached = self.cache.get(wrapped)
        if cached is not None:
            return cached
        resp = self._call("unwrapped", lambda: self._client().secrets.transit.decrypt_data(
            self.key_name, ciphertext=wrapped, mount_point=self.mount))
        plaintext = base64.b64decode(resp["data"]["plaintext"])
        self.cache.put(wrapped, plaintext)
        return plaintext

    def forget(self, wrapped: str) -> None:
        self.cache.drop(wrapped)
        self.handoffs.drop(wrapped)

    def offer(self, wrapped: str, plaintext: bytes) -> None:
        """A key handed over with its upload's replica (32 bytes; anything else is ignored)."""
        if len(plaintext) == 32:
            self.handoffs.offer(wrapped, plaintext)

    def offered(self, wrapped: str) -> bytes | None:
        """The key handed over for `wrapped`, taken (once); None if none waits. Unchecked: the caller
        uses it only once it has opened the blob it came with, for that run only."""
        return self.handoffs.take(wrapped)
