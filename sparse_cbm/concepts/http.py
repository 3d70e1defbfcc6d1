"""HTTP for concept sources: an on-disk answer cache and retries with backoff.

Every answer is stored under the sha256 of its request (method, URL, body), never
under a class name, and never with the request's headers (where API keys travel).
A stored answer is never fetched again, so a rerun makes no repeated calls and a
failed run resumes where it stopped.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import logging
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Optional, TypeVar

import requests

from sparse_cbm.runtime.atomic import atomic_write_json, atomic_write_text, dumps_json

log = logging.getLogger(__name__)

RETRY_STATUSES = {429, 500, 502, 503, 504}
T = TypeVar("T")


class ResponseCache:
    """JSON answers in ``<folder>/<sha256 of the request>.json``, written atomically."""

    README = ("Answers of the ConceptNet and LLM requests of the concepts stage: one JSON file a request, named by the "
              "sha256 of the request (method, URL, body), never holding its headers or API key. A stored answer is "
              "never fetched again; delete this folder to fetch everything again.\n")

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    @classmethod
    def prepare(cls, folder: str | Path) -> Path:
        """Create the cache folder with its README (so that it is never an empty DVC output)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if not (folder / "README.txt").is_file():
            atomic_write_text(folder / "README.txt", cls.README)
        return folder

    @staticmethod
    def key(request: Dict[str, Any]) -> str:
        return hashlib.sha256(dumps_json(request).encode("utf-8")).hexdigest()

    def path(self, request: Dict[str, Any]) -> Path:
        return self.folder / f"{self.key(request)}.json"

    def get(self, request: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        path = self.path(request)
        if not path.is_file():
            return None
        return json.loads(path.read_text(encoding="utf-8"))["response"]

    def put(self, request: Dict[str, Any], response: Dict[str, Any]) -> None:
        atomic_write_json(self.path(request), {"request": request, "response": response})


@dataclass
class RetryPolicy:
    """Retry 429, 5xx, timeouts, dropped connections and unreadable bodies with exponential
    backoff (honouring Retry-After), until ``total_seconds`` have passed. A host that refuses the
    connection or does not exist is tried ``unreachable_tries`` times only: waiting will not fix it."""

    total_seconds: float = 120.0
    timeout: float = 30.0
    base_delay: float = 1.0
    max_delay: float = 30.0
    unreachable_tries: int = 3  # a refused connection or an unknown host: tried this often (1 s, 2 s apart), not for minutes
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)


class HttpFailure(Exception):
    """A request that did not give a usable answer; ``retryable`` says whether trying again could help."""

    def __init__(self, reason: str, retryable: bool, status: Optional[int] = None, attempts: int = 1,
                 unreachable: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.unreachable = unreachable
        self.status = status
        self.attempts = attempts


def retry_after_seconds(value: Optional[str], now: Optional[float] = None) -> Optional[float]:
    """Seconds to wait from a Retry-After header: a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def unreachable_reason(exc: BaseException) -> Optional[str]:
    """"connection refused" or "unknown host" when a requests ConnectionError comes from one (found along
    the chain of causes and urllib3's wrapped reasons); None for a dropped or reset connection."""
    seen, todo = set(), [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, ConnectionRefusedError):
            return "connection refused"
        if isinstance(e, socket.gaierror) and e.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", None)):
            return "unknown host"  # not EAI_AGAIN, a DNS failure that may pass
        todo += [e.__cause__, e.__context__, getattr(e, "reason", None),
                 *[a for a in getattr(e, "args", ()) if isinstance(a, BaseException)]]
    return None


def _describe_body(response: requests.Response) -> str:
    kind = response.headers.get("Content-Type", "unknown type").split(";")[0]
    text = response.text
    if "html" in kind or text.lstrip().lower().startswith(("<!doctype", "<html")):
        return "an HTML page"
    text = " ".join(text.split())
    return repr(text[:120] + ("..." if len(text) > 120 else ""))


class _RetryAfter(HttpFailure):
    """A 429 or 5xx whose Retry-After says how long to wait."""

    def __init__(self, reason: str, status: int, wait: float):
        super().__init__(f"{reason} (Retry-After {wait:g} s)", retryable=True, status=status)
        self.wait = wait


def _send_once(session: requests.Session, method: str, url: str, *, timeout: float, body: Optional[dict] = None,
               headers: Optional[Dict[str, str]] = None, accept_status: tuple = (),
               stream: bool = False) -> requests.Response:
    """One request whose status is an answer; raises HttpFailure otherwise."""
    try:
        response = session.request(method, url, json=body, headers=headers or {}, timeout=timeout, stream=stream)
    except requests.Timeout:
        raise HttpFailure(f"no answer within {timeout:g} s", retryable=True) from None
    except requests.ConnectionError as exc:
        unreachable = unreachable_reason(exc)
        if unreachable:
            raise HttpFailure(unreachable, retryable=True, unreachable=True) from None
        raise HttpFailure(f"connection failed ({type(exc).__name__})", retryable=True) from None
    status = response.status_code
    if status in RETRY_STATUSES:
        wait = retry_after_seconds(response.headers.get("Retry-After"))
        if wait is not None:
            raise _RetryAfter(f"HTTP {status}", status, wait)
        raise HttpFailure(f"HTTP {status} ({_describe_body(response)})", retryable=True, status=status)
    if status >= 400 and status not in accept_status:
        raise HttpFailure(f"HTTP {status} ({_describe_body(response)})", retryable=False, status=status)
    return response


def with_retries(policy: RetryPolicy, what: str, once: Callable[[], T]) -> T:
    """Call ``once`` until it returns, retrying retryable HttpFailures with exponential backoff
    (or Retry-After); give up with a non-retryable HttpFailure when waiting would pass the budget."""
    started = policy.clock()
    attempts = unreachable = 0
    while True:
        attempts += 1
        try:
            return once()
        except HttpFailure as failure:
            failure.attempts = attempts
            if not failure.retryable:
                raise
            unreachable = unreachable + 1 if failure.unreachable else 0
            if unreachable >= policy.unreachable_tries:
                raise HttpFailure(f"{failure.reason}; gave up after {unreachable} tries in {policy.clock() - started:.0f} s "
                                  f"(check the URL, and that the server is running)", retryable=False,
                                  attempts=attempts) from None
            backoff = min(policy.max_delay, policy.base_delay * 2 ** ((unreachable or attempts) - 1))
            delay = failure.wait if isinstance(failure, _RetryAfter) else backoff
            elapsed = policy.clock() - started
            if elapsed + delay > policy.total_seconds:
                raise HttpFailure(f"{failure.reason}; gave up after {attempts} tries in {elapsed:.0f} s "
                                  f"(retry budget {policy.total_seconds:g} s)", retryable=False,
                                  status=failure.status, attempts=attempts) from None
            log.warning("%s: %s; retrying in %.1f s", what, failure.reason, delay)
            policy.sleep(delay)


def request_json(session: requests.Session, method: str, url: str, *, policy: RetryPolicy,
                 body: Optional[dict] = None, headers: Optional[Dict[str, str]] = None,
                 accept_status: tuple = (), validate: Optional[Callable[[Any], None]] = None) -> tuple[int, Any]:
    """Send a request until it gives a JSON answer: returns (status, parsed JSON).

    ``accept_status`` lists 4xx statuses that are answers, not failures (ConceptNet's
    404 for an unknown node). ``validate`` may raise ValueError for a JSON answer of the
    wrong shape, which is retried like a malformed body. Raises HttpFailure when the
    answer is refused, or when retrying would pass ``policy.total_seconds``.
    """
    def once() -> tuple[int, Any]:
        response = _send_once(session, method, url, timeout=policy.timeout, body=body, headers=headers,
                              accept_status=accept_status)
        status = response.status_code
        try:
            payload = response.json()
        except ValueError:
            raise HttpFailure(f"HTTP {status} but the body is not JSON ({_describe_body(response)})",
                              retryable=True, status=status) from None
        if validate is not None and status < 400:
            try:
                validate(payload)
            except ValueError as exc:
                raise HttpFailure(f"HTTP {status} with an answer of the wrong shape ({exc})", retryable=True,
                                  status=status) from None
        return status, payload

    return with_retries(policy, f"{method} {url}", once)


def open_stream(session: requests.Session, url: str, *, policy: RetryPolicy) -> requests.Response:
    """GET a large file as a stream (retrying until the server starts answering)."""
    return with_retries(policy, f"GET {url}", lambda: _send_once(session, "GET", url, timeout=policy.timeout,
                                                                 stream=True))
