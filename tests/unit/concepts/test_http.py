"""Retries, backoff and the answer cache against a loopback server."""

import email.utils
import json
import time

import pytest
import requests

from sparse_cbm.concepts.http import HttpFailure, ResponseCache, RetryPolicy, request_json, retry_after_seconds
from tests.fake_servers import FakeServer, html_reply, json_reply


class Clock:
    """A fake clock: sleeping advances it, so retry budgets are tested without waiting."""

    def __init__(self):
        self.now = 0.0
        self.slept = []

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.now += seconds

    def __call__(self):
        return self.now


def policy(clock, total=60.0, timeout=5.0):
    return RetryPolicy(total_seconds=total, timeout=timeout, base_delay=1.0, max_delay=8.0, sleep=clock.sleep,
                       clock=clock)


def scripted(*replies):
    queue = list(replies)
    return lambda *a: queue.pop(0) if len(queue) > 1 else queue[0]


def test_5xx_is_retried_with_exponential_backoff():
    clock = Clock()
    with FakeServer(scripted(json_reply({}, 500), json_reply({}, 502), json_reply({}, 503), json_reply({"ok": 1}))) as srv:
        status, payload = request_json(requests.Session(), "GET", srv.url + "/x", policy=policy(clock))
    assert (status, payload) == (200, {"ok": 1})
    assert clock.slept == [1.0, 2.0, 4.0] and len(srv.requests) == 4


def test_429_honours_retry_after_in_seconds_and_as_a_date():
    clock = Clock()
    with FakeServer(scripted(json_reply({}, 429, {"Retry-After": "7"}), json_reply({"ok": 1}))) as srv:
        request_json(requests.Session(), "GET", srv.url, policy=policy(clock))
    assert clock.slept == [7.0]
    date = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= retry_after_seconds(date) <= 31
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


def test_retry_after_beyond_the_budget_gives_up_at_once():
    clock = Clock()
    with FakeServer(scripted(json_reply({}, 429, {"Retry-After": "3600"}))) as srv:
        with pytest.raises(HttpFailure) as exc:
            request_json(requests.Session(), "GET", srv.url, policy=policy(clock, total=60))
    assert clock.slept == [] and "Retry-After 3600" in exc.value.reason and "gave up after 1 tries" in exc.value.reason


def test_budget_bounds_the_total_retry_time():
    clock = Clock()
    with FakeServer(scripted(html_reply(502))) as srv:
        with pytest.raises(HttpFailure) as exc:
            request_json(requests.Session(), "GET", srv.url, policy=policy(clock, total=20))
    assert sum(clock.slept) <= 20 and len(srv.requests) == len(clock.slept) + 1
    assert "HTTP 502 (an HTML page)" in exc.value.reason and not exc.value.retryable


def test_timeouts_are_retried():
    clock = Clock()
    replies = [("sleep", 1.0, json_reply({"late": 1})), json_reply({"ok": 1})]
    with FakeServer(lambda *a: replies.pop(0)) as srv:
        _, payload = request_json(requests.Session(), "GET", srv.url, policy=policy(clock, timeout=0.3))
    assert payload == {"ok": 1} and clock.slept == [1.0]


def test_malformed_json_is_retried_then_reported():
    clock = Clock()
    with FakeServer(scripted((200, {"Content-Type": "application/json"}, b'{"edges": [oops'))) as srv:
        with pytest.raises(HttpFailure) as exc:
            request_json(requests.Session(), "GET", srv.url, policy=policy(clock, total=5))
    assert "not JSON" in exc.value.reason and len(srv.requests) >= 2


def test_other_4xx_is_not_retried():
    clock = Clock()
    with FakeServer(scripted(json_reply({"error": "nope"}, 400))) as srv:
        with pytest.raises(HttpFailure) as exc:
            request_json(requests.Session(), "GET", srv.url, policy=policy(clock))
    assert exc.value.status == 400 and len(srv.requests) == 1 and clock.slept == []


def test_cache_files_are_named_by_request_hash(tmp_path):
    cache = ResponseCache(tmp_path)
    request = {"method": "GET", "url": "http://x/c/en/hot_dog?limit=5"}
    assert cache.get(request) is None
    cache.put(request, {"edges": [1]})
    assert cache.get(request) == {"edges": [1]}
    (path,) = tmp_path.iterdir()
    assert path.name == f"{ResponseCache.key(request)}.json" and len(path.stem) == 64
    assert "hot" not in path.name
    assert json.loads(path.read_text())["request"] == request


def test_a_refused_connection_is_tried_a_few_times_over_seconds_not_minutes():
    import socket

    with socket.socket() as s:  # a loopback port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    clock = Clock()
    started = time.monotonic()
    with pytest.raises(HttpFailure, match=r"connection refused; gave up after 3 tries in 3 s \(check the URL"):
        request_json(requests.Session(), "GET", f"http://127.0.0.1:{port}/c/en/dog", policy=policy(clock, total=120))
    assert clock.slept == [1.0, 2.0] and time.monotonic() - started < 10


def test_unreachable_reason_reads_the_chain_of_causes():
    import socket

    from sparse_cbm.concepts.http import unreachable_reason

    def chained(inner):
        try:
            try:
                raise inner
            except OSError as e:
                raise requests.ConnectionError(e) from e
        except requests.ConnectionError as outer:
            return outer

    assert unreachable_reason(chained(ConnectionRefusedError(111, "refused"))) == "connection refused"
    assert unreachable_reason(chained(socket.gaierror(socket.EAI_NONAME, "Name or service not known"))) == "unknown host"
    assert unreachable_reason(chained(socket.gaierror(socket.EAI_AGAIN, "Temporary failure"))) is None
    assert unreachable_reason(chained(ConnectionResetError(104, "reset"))) is None
