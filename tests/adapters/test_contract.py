"""The adapter contract's pieces: errors, map_errors, config findings, backoff, acks, registry."""

from __future__ import annotations

import asyncio

import pytest

from byteor.adapters import (
    ADAPTER_CODES,
    AckError,
    AdapterAuthError,
    AdapterEntry,
    AdapterError,
    AdapterNotFound,
    AdapterUnavailable,
    AdapterUnreachable,
    Backoff,
    ConfigField,
    ConfigSchema,
    Record,
    _registry,
    load_adapter,
    map_errors,
    retry,
)
from byteor.adapters._record import Ack
from byteor.errors import ByteorError

MAPPING: dict[type[BaseException], type[AdapterError]] = {
    ConnectionRefusedError: AdapterUnreachable,
    PermissionError: AdapterAuthError,
    LookupError: AdapterNotFound,
}


async def test_map_errors_translates_a_real_refused_connection() -> None:
    with pytest.raises(AdapterUnreachable) as info, map_errors("redis", "127.0.0.1:1", MAPPING):
        await asyncio.open_connection("127.0.0.1", 1)
    err = info.value
    assert isinstance(err, ByteorError)
    assert err.retriable is True
    assert (err.adapter, err.address) == ("redis", "127.0.0.1:1")
    assert str(err).startswith("redis: cannot reach 127.0.0.1:1 (ConnectionRefusedError")
    assert "check that the server is running" in str(err)
    assert isinstance(err.__cause__, ConnectionRefusedError)


def test_map_errors_kinds_and_pass_through() -> None:
    with pytest.raises(AdapterAuthError) as auth, map_errors("rabbitmq", "127.0.0.1:5672", MAPPING):
        raise PermissionError("ACCESS_REFUSED")
    assert auth.value.retriable is False
    assert "refused the credentials" in str(auth.value)
    boundary = map_errors("kafka", "127.0.0.1:9092", MAPPING, what="topic 'orders'")
    with pytest.raises(AdapterNotFound) as nf, boundary:
        raise KeyError("orders")
    assert str(nf.value).startswith("kafka: topic 'orders' does not exist on 127.0.0.1:9092")
    assert nf.value.retriable is False
    with pytest.raises(ValueError), map_errors("kafka", "x", MAPPING):  # unmapped: unchanged
        raise ValueError("nope")
    ours = AdapterError("ours", retriable=True)
    catch_all = map_errors("kafka", "x", {Exception: AdapterNotFound})
    with pytest.raises(AdapterError) as same, catch_all:
        raise ours
    assert same.value is ours


SCHEMA = ConfigSchema(
    "demo",
    (
        ConfigField("url", str, doc="where the server is"),
        ConfigField("batch", int, 100),
        ConfigField("ratio", float, 0.5),
        ConfigField("create", bool, False),
        ConfigField("start", str, "latest", choices=("earliest", "latest")),
    ),
)


def test_config_schema_types_and_defaults() -> None:
    values, findings = SCHEMA.validate({"url": "redis://h", "batch": "7", "create": "yes"})
    assert findings == []
    assert values == {
        "url": "redis://h",
        "batch": 7,
        "create": True,
        "ratio": 0.5,
        "start": "latest",
    }


def test_config_schema_reports_every_problem_as_findings() -> None:
    values, findings = SCHEMA.validate(
        {"batc": "1", "ratio": "lots", "start": "middle"}, prefix="source.in.param."
    )
    got = [(f.code, f.severity, f.key, f.suggestion) for f in findings]
    assert got == [
        ("AD501", "error", "source.in.param.batc", "batch"),
        ("AD503", "error", "source.in.param.ratio", None),
        ("AD504", "error", "source.in.param.start", None),
        ("AD502", "error", "source.in.param.url", None),
    ]
    assert "did you mean 'batch'" in findings[0].message
    assert findings[3].message == "demo needs config 'url': where the server is"
    assert set(ADAPTER_CODES) == {"AD501", "AD502", "AD503", "AD504", "AD505"}
    assert "url" not in values
    with pytest.raises(AdapterError, match="AD502"):
        SCHEMA.parse({})


def test_backoff_delays_grow_and_cap() -> None:
    b = Backoff(initial_s=0.1, max_s=1.0, factor=2.0, jitter=0.1)
    assert [round(b.delay(n, lambda: 0.5), 6) for n in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert b.delay(0, lambda: 1.0) == pytest.approx(0.11)
    assert b.delay(0, lambda: 0.0) == pytest.approx(0.09)


async def test_retry_retries_retriable_errors_with_injected_sleep() -> None:
    slept: list[float] = []
    calls = 0

    async def sleep(s: float) -> None:
        slept.append(s)

    async def op() -> str:
        nonlocal calls
        calls += 1
        if calls < 4:
            raise AdapterUnreachable("nats", "127.0.0.1:4222")
        return "connected"

    got = await retry(op, Backoff(0.5, 2.0, jitter=0.0), sleep=sleep)
    assert got == "connected"
    assert calls == 4
    assert slept == [0.5, 1.0, 2.0]


async def test_retry_stops_on_non_retriable_and_after_max_attempts() -> None:
    calls = 0

    async def sleep(s: float) -> None:
        pass

    async def auth() -> None:
        nonlocal calls
        calls += 1
        raise AdapterAuthError("rabbitmq", "127.0.0.1:5672")

    with pytest.raises(AdapterAuthError):
        await retry(auth, Backoff(), sleep=sleep)
    assert calls == 1

    calls = 0

    async def down() -> None:
        nonlocal calls
        calls += 1
        raise AdapterUnreachable("redis", "127.0.0.1:1")

    with pytest.raises(AdapterUnreachable):
        await retry(down, Backoff(max_attempts=3), sleep=sleep)
    assert calls == 3


async def test_ack_settles_once() -> None:
    seen: list[bool] = []

    async def on_settle(ok: bool) -> None:
        seen.append(ok)

    rec = Record(b"p", b"k", (("h", b"v"),), 7, Ack(on_settle))
    assert rec.ack.state == "pending"
    await rec.ack.nack()
    assert rec.ack.state == "nacked"
    with pytest.raises(AckError):
        await rec.ack.ack()
    assert seen == [False]
    assert rec.out().payload == b"p" and rec.out().headers == (("h", b"v"),)


def test_registry_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(AdapterUnavailable, match=r"no adapter called 'kafak' \(known: .*memory"):
        load_adapter("kafak")


def test_registry_missing_client_library_gives_the_exact_pip_hint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An adapter module that imports a client library which is not installed.
    monkeypatch.setitem(
        _registry.BUILTIN,
        "fakekafka",
        AdapterEntry(
            "fakekafka", "byteor_no_such_client.adapter:A", "kafka", "byteor_no_such_client"
        ),
    )
    with pytest.raises(AdapterUnavailable) as info:
        load_adapter("fakekafka")
    assert str(info.value) == (
        "the fakekafka adapter needs the 'byteor_no_such_client' library: "
        "pip install 'byteor[kafka]'"
    )
