"""The S3 adapter against moto in server mode on 127.0.0.1:5000 (scripts/services.sh)."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aioboto3
import pytest
from _batches import MIXED, mixed_columns
from _net import Forwarder
from botocore.exceptions import ClientError, NoCredentialsError

from byteor.adapters import (
    AckError,
    AdapterAuthError,
    AdapterConfigError,
    AdapterError,
    AdapterNotFound,
    AdapterUnreachable,
    OutRecord,
    Record,
    RecordBatch,
    ack_all,
    load_adapter,
    nack_all,
)
from byteor.adapters.s3 import (
    CHECKPOINT_AREA,
    CONTINUE_FROM_BYTES,
    MAGIC,
    S3Adapter,
    S3Endpoint,
    S3Position,
    S3Sink,
    S3Source,
    decode_object,
    encode_object,
    object_key,
    parse_key,
    translate_error,
)
from byteor.testing import ConformanceTests, Harness

URL = "http://127.0.0.1:5000"  # moto, started by scripts/services.sh
EP = S3Endpoint(url=URL, access_key_id="byteor", secret_access_key="byteor", max_attempts=2)
MiB = 1024 * 1024


def _records(n: int, tag: str = "r", size: int = 0) -> list[OutRecord]:
    pad = b"." * size
    return [
        OutRecord(f"{tag}{i}".encode() + pad, f"k{i % 7}".encode(), (("n", str(i).encode()),))
        for i in range(n)
    ]


class S3Harness(Harness):
    """A fresh bucket per test; upstream objects hold one record each (the source's
    redelivery unit is the object, so this is what gives record-level redelivery)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.bucket = f"byteor-test-{uuid.uuid4().hex[:16]}"
        self.prefix = "t/"
        self.upstream = 0
        self.buckets = [self.bucket]

    async def create(self) -> None:
        await self.client.create_bucket(Bucket=self.bucket)

    async def new_source(self, **kw: Any) -> S3Source:
        kw.setdefault("poll_ms", 50)
        src = S3Source(self.bucket, self.prefix, endpoint=EP, **kw)
        await src.start()
        return src

    async def new_sink(self, **kw: Any) -> S3Sink:
        sink = S3Sink(self.bucket, self.prefix, endpoint=EP, **kw)
        await sink.start()
        return sink

    async def produce(self, records: Sequence[OutRecord]) -> None:
        # Written concurrently: each completes before produce returns, and the key, not the
        # time of upload, decides the order.
        gate = asyncio.Semaphore(8)

        async def put(key: str, rec: OutRecord) -> None:
            async with gate:
                await self.client.put_object(Bucket=self.bucket, Key=key, Body=encode_object([rec]))

        puts = []
        for rec in records:
            puts.append(put(object_key(f"{self.prefix}up/", self.upstream, self.upstream), rec))
            self.upstream += 1
        await asyncio.gather(*puts)

    async def keys(self, prefix: str | None = None) -> list[str]:
        out: list[str] = []
        pages = self.client.get_paginator("list_objects_v2")
        async for page in pages.paginate(Bucket=self.bucket, Prefix=prefix or self.prefix):
            out += [item["Key"] for item in page.get("Contents", [])]
        return out

    async def body(self, key: str) -> bytes:
        resp = await self.client.get_object(Bucket=self.bucket, Key=key)
        async with resp["Body"] as body:
            data: bytes = await body.read()
        return data

    async def written(self) -> list[OutRecord]:
        out: list[OutRecord] = []
        for key in await self.keys():
            out += decode_object(await self.body(key), key)
        return out

    async def rejecting_sink(self) -> S3Sink | None:
        # A sink on a bucket that is deleted once the sink has started: S3 refuses the PUT.
        doomed = self.bucket + "-gone"
        await self.client.create_bucket(Bucket=doomed)
        sink = S3Sink(doomed, self.prefix, endpoint=EP)
        await sink.start()
        await self.client.delete_bucket(Bucket=doomed)
        return sink

    async def close(self) -> None:
        for bucket in self.buckets:
            try:
                uploads = await self.client.list_multipart_uploads(Bucket=bucket)
                for up in uploads.get("Uploads", []):
                    await self.client.abort_multipart_upload(
                        Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"]
                    )
                pages = self.client.get_paginator("list_objects_v2")
                async for page in pages.paginate(Bucket=bucket):
                    keys = [{"Key": i["Key"]} for i in page.get("Contents", [])]
                    if keys:
                        await self.client.delete_objects(Bucket=bucket, Delete={"Objects": keys})
                await self.client.delete_bucket(Bucket=bucket)
            except ClientError:
                pass


#: One session for the module's clients (a new one loads botocore's S3 model again).
SESSION = aioboto3.Session(
    aws_access_key_id="byteor", aws_secret_access_key="byteor", region_name="us-east-1"
)


@pytest.fixture
async def harness() -> AsyncIterator[S3Harness]:
    async with AsyncExitStack() as stack:
        client = await stack.enter_async_context(SESSION.client("s3", endpoint_url=URL))
        h = S3Harness(client)
        await h.create()
        try:
            yield h
        finally:
            await h.close()


class TestS3Conformance(ConformanceTests):
    pass  # the module-level `harness` fixture serves


async def _collect(src: S3Source, n: int, deadline_s: float = 10.0) -> list[Record]:
    """Exactly ``n`` records (fewer only if they stop coming within ``deadline_s``)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    got: list[Record] = []
    while len(got) < n and loop.time() < end:
        got += await src.next_batch(n - len(got), timeout_s=0.5)
    return got


async def _drain(src: S3Source, *, quiet_s: float = 0.3, ack: bool = True) -> list[Record]:
    """Everything the source hands out until it has been quiet for ``quiet_s``."""
    got: list[Record] = []
    while batch := await src.next_batch(1000, timeout_s=quiet_s):
        for r in batch:
            got.append(r)
            if ack:
                await r.ack.ack()
    return got


# --- the format and the keys --------------------------------------------------------------


def test_object_encoding_round_trips_every_field() -> None:
    recs = [
        OutRecord(b"first, alone"),  # before the first keyed one
        OutRecord(b"\x00body\n", b"key", (("a", b""), ("a", b"\xff" * 70000), ("\u00e9", b"v"))),
        OutRecord(b"", b"", ()),  # an empty key is not a missing one
        OutRecord(b"x", None, ()),
    ]
    body = encode_object(recs)
    assert body.startswith(MAGIC)
    assert decode_object(body) == recs
    assert decode_object(b"") == []


def test_a_damaged_object_names_its_key_and_the_byte() -> None:
    body = encode_object(_records(3))
    with pytest.raises(AdapterError, match=r"object 'a/b' is not in byteor's record format"):
        decode_object(b"{'json': 1}\n", "a/b")
    with pytest.raises(AdapterError, match=r"truncated frame at byte \d+\)"):
        decode_object(body[:-3], "a/b")
    with pytest.raises(AdapterError, match="truncated frame header"):
        decode_object(body + b"\x00\x00", "a/b")


def test_keys_sort_in_sequence_order() -> None:
    keys = [object_key("p/x/0/", first, first + 9) for first in (0, 10, 90, 100, 1000, 10**12)]
    assert sorted(keys) == keys
    assert keys[1] == "p/x/0/00000000000000000010-00000000000000000019.bor"
    assert parse_key(keys[3], "p/x/0/") == (100, 109)
    assert parse_key(keys[3], "p/x/1/") is None
    assert parse_key("p/x/0/notes.txt", "p/x/0/") is None


# --- the sink -----------------------------------------------------------------------------


async def test_ten_thousand_records_round_trip(harness: S3Harness) -> None:
    # every third of the first half without key and headers, the second half payloads alone
    # (objects the source splits into payloads only)
    sent = [r if i % 3 else OutRecord(r.payload) for i, r in enumerate(_records(5_000, "k-"))]
    sent += [OutRecord(r.payload) for r in _records(5_000, "payload-")]
    sink = await harness.new_sink(roll_bytes=8 * 1024)
    for at in range(0, len(sent), 500):
        await sink.write_batch(sent[at : at + 500])
    assert sink.next_sequence == 10_000
    await sink.stop()
    keys = await harness.keys()
    assert len(keys) > 20, "8 KiB rolls split every batch"
    ranges = [parse_key(k, sink.directory) or (-1, -1) for k in keys]
    assert ranges[0][0] == 0 and ranges[-1][1] == 9999
    assert all(b[0] == a[1] + 1 for a, b in itertools.pairwise(ranges)), "no gaps, no overlaps"
    src = await harness.new_source()
    got = await _drain(src)
    await src.stop()
    assert [r.out() for r in got] == sent  # exact content, in order
    assert got[0].position == S3Position(keys[0], 0)
    stored = json.loads(await harness.body(f"{CHECKPOINT_AREA}byteor.json"))
    assert stored["after"] == keys[-1]


async def test_a_big_object_goes_up_in_parts(harness: S3Harness) -> None:
    sent = _records(11, size=MiB)  # 11 MiB in one object
    sink = await harness.new_sink(
        roll_bytes=64 * MiB, multipart_threshold=5 * MiB, part_bytes=5 * MiB
    )
    await sink.write_batch(sent)
    await sink.stop()
    (key,) = await harness.keys()
    head = await harness.client.head_object(Bucket=harness.bucket, Key=key)
    assert head["ETag"].strip('"').endswith("-3"), "a multipart ETag counts its 3 parts"
    assert head["Metadata"]["byteor-records"] == "11"
    assert decode_object(await harness.body(key), key) == sent
    uploads = await harness.client.list_multipart_uploads(Bucket=harness.bucket)
    assert not uploads.get("Uploads")


async def test_a_small_put_goes_without_expect_continue_a_large_one_with_it(
    harness: S3Harness,
) -> None:
    # botocore asks every PUT body to wait for "100 Continue" (a round trip more per object);
    # the sink drops that below CONTINUE_FROM_BYTES and keeps it from there on.
    sink = await harness.new_sink()
    assert sink._client is not None
    sent: list[tuple[int, str | None]] = []

    def seen(request: Any, **_: Any) -> None:
        expect = request.headers.get("Expect")  # bytes once signed
        text = expect.decode() if isinstance(expect, bytes) else expect
        sent.append((int(request.headers["Content-Length"]), text))

    sink._client.meta.events.register("before-send.s3.PutObject", seen)
    small, large = _records(3, size=1000), _records(2, size=CONTINUE_FROM_BYTES // 2 + 1)
    await sink.write_batch(small)
    await sink.write_batch(large)
    await sink.stop()
    assert len(sent) == 2
    assert sent[0][0] < CONTINUE_FROM_BYTES and sent[0][1] is None
    assert sent[1][0] >= CONTINUE_FROM_BYTES and sent[1][1] == "100-continue"
    assert [r for k in await harness.keys() for r in decode_object(await harness.body(k))] == [
        *small,
        *large,
    ]


class _PartFails(S3Sink):
    """Part 2 of the first multipart upload fails (a fault in the client, not the server)."""

    failures = 1

    async def _upload_part(
        self, client: Any, key: str, upload_id: str, number: int, body: bytes
    ) -> str:
        if number == 2 and self.failures:
            self.failures -= 1
            raise AdapterUnreachable("s3", URL, "injected")
        return await super()._upload_part(client, key, upload_id, number, body)


async def test_a_failed_multipart_upload_is_aborted_and_the_retry_takes_the_same_key(
    harness: S3Harness,
) -> None:
    sent = _records(11, size=MiB)
    sink = _PartFails(
        harness.bucket, harness.prefix, endpoint=EP, multipart_threshold=5 * MiB,
        part_bytes=5 * MiB, upload_concurrency=1,
    )  # fmt: skip
    await sink.start()
    with pytest.raises(AdapterUnreachable):
        await sink.write_batch(sent)
    uploads = await harness.client.list_multipart_uploads(Bucket=harness.bucket)
    assert not uploads.get("Uploads"), "the failed upload was aborted"
    assert await harness.keys() == []
    await sink.write_batch(sent)
    await sink.stop()
    assert await harness.keys() == [object_key(sink.directory, 0, 10)]
    assert await harness.written() == sent


class _ReplyLost(S3Sink):
    """The upload of object number ``lose`` lands, then its reply is 'lost' once."""

    lose = 0

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.seen = 0

    async def _upload(self, obj: Any) -> None:
        await super()._upload(obj)
        self.seen += 1
        if self.seen == self.lose + 1:
            raise AdapterUnreachable("s3", URL, "injected: the reply was lost")


async def test_a_retried_batch_overwrites_its_objects(
    harness: S3Harness, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = _records(30, "a", size=100), _records(5, "b")
    sink = _ReplyLost(harness.bucket, harness.prefix, endpoint=EP, roll_bytes=1200)
    sink.lose = 1  # the batch makes 3 objects; the second one's reply is lost
    await sink.start()
    with pytest.raises(AdapterUnreachable):
        await sink.write_batch(first)
    assert [(n, lvl) for n, lvl, m in caplog.record_tuples if "upload of" in m] == [
        ("byteor.adapters.s3", logging.WARNING)
    ]
    landed = await harness.keys()
    assert len(landed) == 2, "the first two objects are in S3 although the write failed"
    await sink.write_batch(first)  # the caller retries the same batch
    keys = await harness.keys()
    assert len(keys) == 3 and keys[:2] == landed, "the retry overwrote, it did not add"
    assert await harness.written() == first
    await sink.write_batch(second)
    await sink.stop()
    assert await harness.written() == first + second


async def test_a_different_batch_after_a_failure_never_sorts_below_what_landed(
    harness: S3Harness,
) -> None:
    sink = _ReplyLost(harness.bucket, harness.prefix, endpoint=EP)
    await sink.start()
    with pytest.raises(AdapterUnreachable):
        await sink.write_batch(_records(10, "a"))
    (landed,) = await harness.keys()
    await sink.write_batch(_records(4, "b"))  # not the same records: a new key, after it
    await sink.stop()
    keys = await harness.keys()
    assert keys[0] == landed and len(keys) == 2
    assert parse_key(keys[1], sink.directory) == (10, 13)


async def test_a_restarted_sink_continues_after_the_highest_key(harness: S3Harness) -> None:
    sink = await harness.new_sink()
    for i in range(9):
        await sink.write_batch(_records(i + 1, f"b{i}"))
    await sink.stop()
    # Two keys per listing page: the galloping search, not a walk over every page.
    again = await harness.new_sink(list_page=2)
    assert again.next_sequence == 45
    await again.write_batch(_records(1, "z"))
    await again.stop()
    keys = await harness.keys()
    assert len(keys) == 10 and parse_key(keys[-1], again.directory) == (45, 45)


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_linger_shares_an_object_and_rolls_by_size_and_by_time(harness: S3Harness) -> None:
    clock = _Clock()
    frame = len(encode_object(_records(1))) - len(MAGIC)
    sink = await harness.new_sink(
        flush="linger", roll_ms=60_000, roll_bytes=len(MAGIC) + 3 * frame, clock=clock
    )
    one, two = (asyncio.create_task(sink.write_batch(_records(1))) for _ in range(2))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert not one.done() and not two.done(), "nothing returns before its object is up"
    assert await harness.keys() == []
    await sink.write_batch(_records(1))  # the third frame fills the object: all three return
    await asyncio.wait_for(asyncio.gather(one, two), 5)
    assert len(await harness.keys()) == 1
    # The time roll on write: an object older than roll_ms is closed before the next write.
    late = asyncio.create_task(sink.write_batch(_records(1, "late")))
    await asyncio.sleep(0)
    clock.now += 61
    nxt = asyncio.create_task(sink.write_batch(_records(1, "next")))
    await asyncio.wait_for(late, 5)
    assert not nxt.done()
    assert [parse_key(k, sink.directory) for k in await harness.keys()] == [(0, 2), (3, 3)]
    await sink.stop()  # stop flushes the open object: its writer returns
    await asyncio.wait_for(nxt, 5)
    assert len(await harness.keys()) == 3


async def test_linger_timer_rolls_an_idle_object(harness: S3Harness) -> None:
    sink = await harness.new_sink(flush="linger", roll_ms=100)
    loop = asyncio.get_running_loop()
    began = loop.time()
    await asyncio.wait_for(sink.write_batch(_records(3)), 5)  # returns when the timer rolls
    assert loop.time() - began >= 0.09
    assert await harness.written() == _records(3)
    await sink.stop()


# --- the source ---------------------------------------------------------------------------


async def test_the_checkpoint_waits_for_every_record_of_an_object(harness: S3Harness) -> None:
    sink = await harness.new_sink()
    for i in range(3):
        await sink.write_batch(_records(2, f"o{i}-"))
    await sink.stop()
    keys = await harness.keys()
    src = await harness.new_source()
    got = await _collect(src, 6)
    assert len(got) == 6
    await got[2].ack.ack()
    await got[3].ack.ack()  # object 1 done, object 0 not: the checkpoint stays put
    await got[0].ack.ack()
    assert src.checkpoint is None
    await got[1].ack.ack()
    assert src.checkpoint == keys[1]
    await src.commit()
    stored = json.loads(await harness.body(f"{CHECKPOINT_AREA}byteor.json"))
    assert stored == {"after": keys[1], "bucket": harness.bucket, "prefix": "t/", "version": 1}
    await src.stop()
    again = await harness.new_source()
    back = await _drain(again)  # object 2 was never acked: exactly its records
    await again.stop()
    assert [r.payload for r in back] == [b"o2-0", b"o2-1"]


async def test_batches_settle_without_handles_and_the_checkpoint_follows(
    harness: S3Harness,
) -> None:
    """ack_all / nack_all settle records without a handle each (their object stands in), a
    batch spanning objects included; nacked records come again first, in order; the
    checkpoint moves only over objects whose every record is acked."""
    sink = await harness.new_sink()
    for i in range(3):
        await sink.write_batch(_records(2, f"o{i}-"))
    await sink.stop()
    keys = await harness.keys()
    src = await harness.new_source()
    got = await _collect(src, 5)
    assert [r.position for r in got] == [(k, i) for k in keys[:2] for i in (0, 1)] + [(keys[2], 0)]
    await nack_all(got[1:3])  # o0-1 (object 0) and o1-0 (object 1)
    await ack_all([got[0], got[3], got[4]])
    assert src.checkpoint is None
    with pytest.raises(AckError):
        await ack_all(got[:1])
    again = await _collect(src, 3)  # the nacked first, then the rest of object 2
    assert [r.payload for r in again] == [b"o0-1", b"o1-0", b"o2-1"]
    await again[0].ack.ack()  # one handle made; the others as a batch
    assert src.checkpoint == keys[0]
    await ack_all(again[1:])
    assert src.checkpoint == keys[2]
    await src.stop()
    stored = json.loads(await harness.body(f"{CHECKPOINT_AREA}byteor.json"))
    assert stored["after"] == keys[2]


async def test_an_objects_records_are_a_batch_of_columns_settled_whole(
    harness: S3Harness,
) -> None:
    """The records of one object come as a RecordBatch: its columns as split (keys and
    headers only when a record has them), positions when read; nack_all hands the same
    records out again, ack_all of an object's last batch moves the checkpoint and of a part
    of it does not; a batch one of whose records was acked on its own is refused whole."""
    sink = await harness.new_sink()
    await sink.write_batch(MIXED)
    await sink.write_batch([OutRecord(b"plain%d" % i) for i in range(3)])
    await sink.stop()
    keys = await harness.keys()
    src = await harness.new_source()
    try:
        got = mixed_columns(
            await src.next_batch(3, timeout_s=5.0), [(keys[0], i) for i in range(3)]
        )
        await nack_all(got)
        again = await src.next_batch(3)
        assert [r.out() for r in again] == MIXED
        assert [r.position for r in again] == list(got.positions)
        await ack_all(again)
        assert src.checkpoint == keys[0]
        one = await src.next_batch(1, timeout_s=5.0)
        assert isinstance(one, RecordBatch) and (one.keys, one.headers) == (None, None)
        assert one.payloads == [b"plain0"]
        await ack_all(one)
        rest = await src.next_batch(2)
        assert isinstance(rest, RecordBatch) and rest.payloads == [b"plain1", b"plain2"]
        assert src.checkpoint == keys[0], "object 1 is not all acked"
        await rest[0].ack.ack()
        with pytest.raises(AckError, match="settled on its own"):
            await ack_all(rest)
        assert src.checkpoint == keys[0], "the batch was refused: nothing more settled"
        await ack_all([rest[1]])
        assert src.checkpoint == keys[1]
    finally:
        await src.stop()


async def test_objects_written_later_are_picked_up(harness: S3Harness) -> None:
    sink = await harness.new_sink()
    await sink.write_batch(_records(5, "early"))
    src = await harness.new_source()
    assert len(await _drain(src, quiet_s=0.2)) == 5
    await sink.write_batch(_records(5, "late"))
    got = await _collect(src, 5)  # listed again after the last key
    assert [r.payload for r in got] == [f"late{i}".encode() for i in range(5)]
    for r in got:
        await r.ack.ack()
    await sink.stop()
    await src.stop()


async def test_a_file_checkpoint(harness: S3Harness, tmp_path: Path) -> None:
    await harness.produce(_records(4))
    path = tmp_path / "ck" / "in.json"
    src = await harness.new_source(checkpoint="file", checkpoint_path=str(path))
    got = await _collect(src, 3)
    for r in got:
        await r.ack.ack()
    await src.stop()
    assert json.loads(path.read_text())["after"] == got[-1].position.key  # type: ignore[attr-defined]
    again = await harness.new_source(checkpoint="file", checkpoint_path=str(path))
    assert [r.payload for r in await _drain(again)] == [b"r3"]
    await again.stop()
    other = S3Source(harness.bucket, "elsewhere/", endpoint=EP, checkpoint="file",
                     checkpoint_path=str(path))  # fmt: skip
    with pytest.raises(AdapterConfigError, match=r"belongs to bucket .* prefix 't/'"):
        await other.start()


async def test_lines_format_reads_foreign_objects(harness: S3Harness) -> None:
    await harness.client.put_object(
        Bucket=harness.bucket, Key="t/logs/a.ndjson", Body=b'{"a":1}\r\n{"a":2}\n\n{"a":3}'
    )
    src = await harness.new_source(format="lines")
    got = await _drain(src)
    await src.stop()
    assert [r.payload for r in got] == [b'{"a":1}', b'{"a":2}', b"", b'{"a":3}']
    framed = await harness.new_source(group="framed")
    with pytest.raises(AdapterError, match="format = lines"):
        await framed.next_batch(10, timeout_s=1.0)
    await framed.stop()


VICTIM = """
import asyncio, sys
from byteor.adapters.s3 import S3Endpoint, S3Source

async def main() -> None:
    ep = S3Endpoint(url=sys.argv[1], access_key_id="byteor", secret_access_key="byteor")
    src = S3Source(sys.argv[2], "t/", endpoint=ep, poll_ms=50)
    await src.start()
    got = []
    while len(got) < 35:
        got += await src.next_batch(35 - len(got), timeout_s=1.0)
    for r in got:
        await r.ack.ack()
    await src.commit()  # objects 0-2 complete; 5 records of object 3 acked, the rest not
    print("ready", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


@pytest.mark.multiprocess
async def test_consumer_killed_mid_stream_loses_nothing(harness: S3Harness) -> None:
    sent = _records(100)
    sink = await harness.new_sink()
    for at in range(0, 100, 10):  # ten objects of ten records
        await sink.write_batch(sent[at : at + 10])
    await sink.stop()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", VICTIM, URL, harness.bucket, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert line == b"ready\n"
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    src = await harness.new_source()
    got = await _drain(src)
    await src.stop()
    # Object 3 comes again whole (its 5 acked records too); nothing before it, nothing lost.
    assert [r.out() for r in got] == sent[30:]


async def test_an_outage_mid_stream_loses_nothing_and_repeats_nothing(harness: S3Harness) -> None:
    fwd = Forwarder(5000)  # moto behind it: closed (connections refused), then back
    await fwd.start()
    ep = S3Endpoint(url=f"http://127.0.0.1:{fwd.port}", access_key_id="byteor",
                    secret_access_key="byteor", max_attempts=1)  # fmt: skip
    sink = S3Sink(harness.bucket, harness.prefix, endpoint=ep)
    src = S3Source(harness.bucket, harness.prefix, endpoint=ep, poll_ms=50, prefetch=1)
    await sink.start()
    await src.start()
    batches = [_records(5, f"a{i}-") for i in range(4)]
    for batch in batches:
        await sink.write_batch(batch)
    first = await _collect(src, 5)
    assert [r.out() for r in first] == batches[0]
    await fwd.close()
    with pytest.raises(AdapterUnreachable):
        await src.next_batch(10, timeout_s=1.0)  # the GET of the next object fails
    assert not src.health().connected
    for r in first:
        await r.ack.ack()
    with pytest.raises(AdapterUnreachable):
        await src.next_batch(10, timeout_s=1.0)  # storing the checkpoint fails
    late = _records(5, "b")
    with pytest.raises(AdapterUnreachable):
        await sink.write_batch(late)
    assert not sink.health().connected
    await fwd.start()  # the same port again
    await sink.write_batch(late)  # the caller's retry
    assert sink.health().connected
    rest = await _drain(src)
    assert [r.out() for r in rest] == [*batches[1], *batches[2], *batches[3], *late]
    assert src.health().connected
    await src.stop()
    await sink.stop()
    await fwd.close()
    keys = await harness.keys()
    assert len(keys) == 5, "the retried write made one object"
    stored = json.loads(await harness.body(f"{CHECKPOINT_AREA}byteor.json"))
    assert stored["after"] == keys[-1]


# --- errors, registry ---------------------------------------------------------------------


async def test_unreachable_endpoint_names_s3_and_the_endpoint() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    ep = S3Endpoint(url=f"http://127.0.0.1:{port}", access_key_id="x", secret_access_key="x",
                    max_attempts=1)  # fmt: skip
    for side in (S3Sink("b", endpoint=ep), S3Source("b", endpoint=ep)):
        with pytest.raises(AdapterUnreachable) as info:
            await side.start()
        assert info.value.retriable
        assert str(info.value).startswith(f"s3: cannot reach http://127.0.0.1:{port} (")
        assert not side.health().connected


async def test_missing_bucket_is_not_found() -> None:
    for side in (S3Sink("byteor-no-such-bucket", endpoint=EP),
                 S3Source("byteor-no-such-bucket", endpoint=EP)):  # fmt: skip
        with pytest.raises(AdapterNotFound) as info:
            await side.start()
        assert not info.value.retriable
        assert str(info.value).startswith(
            f"s3: bucket 'byteor-no-such-bucket' does not exist on {URL}"
        )


def _client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "PutObject",
    )


def test_client_errors_map_by_their_code() -> None:
    def mapped(exc: BaseException) -> AdapterError | None:
        return translate_error(exc, address=URL, bucket="b", what="object 'k'")

    assert isinstance(mapped(_client_error("AccessDenied", 403)), AdapterAuthError)
    assert isinstance(mapped(_client_error("InvalidAccessKeyId", 403)), AdapterAuthError)
    assert isinstance(mapped(_client_error("SignatureDoesNotMatch", 403)), AdapterAuthError)
    assert isinstance(mapped(NoCredentialsError()), AdapterAuthError)
    gone = mapped(_client_error("NoSuchBucket", 404))
    assert isinstance(gone, AdapterNotFound) and gone.what == "bucket 'b'"
    key = mapped(_client_error("NoSuchKey", 404))
    assert isinstance(key, AdapterNotFound) and key.what == "object 'k'"
    slow = mapped(_client_error("SlowDown", 503))
    assert type(slow) is AdapterError and slow.retriable
    bad = mapped(_client_error("InvalidArgument", 400))
    assert type(bad) is AdapterError and not bad.retriable
    assert mapped(ValueError("ours")) is None


def test_registry_loads_the_s3_adapter() -> None:
    adapter = load_adapter("s3")
    assert isinstance(adapter, S3Adapter)
    declared = adapter.declaration()
    assert declared.source is not None and declared.sink is not None
    assert [f.code for f in adapter.config.validate({"bucket": "b", "flush": "never"})[1]] == [
        "AD504"
    ]
    assert adapter.config.validate({})[1][0].code == "AD502"  # bucket is required
    sink = adapter.sink({"bucket": "b", "prefix": "out", "pipeline": "orders", "partition": "3"})
    assert isinstance(sink, S3Sink) and sink.directory == "out/orders/3/"
    with pytest.raises(AdapterConfigError, match="part_bytes must be at least 5242880"):
        adapter.sink({"bucket": "b", "part_bytes": "1024"})
    with pytest.raises(AdapterConfigError, match="checkpoint = file needs checkpoint_path"):
        adapter.source({"bucket": "b", "checkpoint": "file"})
