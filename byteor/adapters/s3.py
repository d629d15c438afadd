"""``adapter = s3``: records in objects of an S3 bucket (``pip install 'byteor[s3]'``).

Theory of operation.

Object format. An object is the 8 bytes ``BYTEOR1\\n`` followed by one frame per record::

    +------------+------------+-------------+---------+-----+---------+
    | payload_len| key_len    | headers_len | payload | key | headers |
    | u32 BE     | u32 BE     | u32 BE      |         |     |         |
    +------------+------------+-------------+---------+-----+---------+

``key_len = 0xFFFFFFFF`` means no key (an empty key is length 0). The headers block holds,
per header, a 2-byte name length, the UTF-8 name, a 4-byte value length and the value, in the
record's order. Length-prefixed rather than NDJSON: payloads, keys and header values are
arbitrary bytes, kept byte for byte without base64, and a truncated object is detected.

Sink. Records accumulate in an *open object*, which is closed when it reaches
``roll_bytes``, when ``roll_ms`` have passed since it opened (checked on every write and by a
timer), and — with ``flush = batch`` (the default) — at the end of every ``write_batch``.
Closed objects are uploaded one at a time, in order: a PUT, or from ``multipart_threshold``
on a multipart upload (parts in parallel, the upload aborted if anything fails), so one sink's
objects become visible in key order (a PUT under 1 MiB goes without ``Expect: 100-continue``:
a round trip less per object). ``write_batch`` returns only once every object holding one of
its records is uploaded. With ``flush = batch`` that means every batch makes at least
one object of its own (small batches, small objects); with ``flush = linger`` the open object
stays open across batches and each ``write_batch`` waits until its object is rolled by size or
time — objects are bigger, but a caller waits up to ``roll_ms``, so it pays only when several
writes are in flight at once (they share the object).

Keys are ``{prefix}{pipeline}/{partition}/{first:020d}-{last:020d}.bor``: the first and last
sequence number of the records in the object, zero-padded so that lexical order is sequence
order. Sequence numbers are the sink's own count of records in that directory; a sink resumes
after the highest key it finds there at start. They are given to an object when it closes.

A failed upload fails every write with a record in that object or after it, and the objects
they filled are *replayed*: the sink's sequence goes back to the first of them, and as long as
the next objects hold exactly the same bytes (the caller retrying the same batch), they get the
same keys and overwrite what may have landed before the error — a retry does not duplicate. The
first object that differs jumps past every sequence number handed out before, so a key is
rewritten only with identical content and a new key never sorts before one that may exist
(which a source might already have read past).

Source. Lists ``prefix`` page by page (``StartAfter``) and reads objects whole, in key order,
splitting them into records; up to ``prefetch`` GETs are in flight ahead of the object being
handed out, and a GET that fails puts its key back (nothing is skipped). The checkpoint is
the last *completed* key: the object whose records, and those of every object before it, are
all acked — never ahead of an unsettled record. It is stored (an object in the bucket, or a
local file) at the next ``next_batch``, at :meth:`S3Source.commit` and at stop; after a
restart the source lists after it, so what comes again is exactly the records of objects not
completed (acked ones among them). ``nack`` hands the record out again. With nothing new, the
prefix is listed again every ``poll_ms``, after the last key seen: objects that appear later
are picked up as long as their keys sort after it (true of one sink's directory; see the docs
for several writers).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import struct
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, NamedTuple, cast

import aioboto3
from aiobotocore.config import AioConfig
from botocore import exceptions as bex

from byteor.adapters._config import ConfigField, ConfigSchema, ConfigValue
from byteor.adapters._contract import Adapter, Capabilities, Health, Sink, Source
from byteor.adapters._errors import (
    AdapterAuthError,
    AdapterConfigError,
    AdapterError,
    AdapterNotFound,
    AdapterUnreachable,
)
from byteor.adapters._record import (
    Ack,
    Headers,
    LazyAckRecord,
    OutRecord,
    Record,
    RecordBatch,
    RecordRow,
    Settler,
    make_records,
)
from byteor.spec import Delivery

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

__all__ = [
    "S3Adapter",
    "S3Source",
    "S3Sink",
    "S3Endpoint",
    "S3Position",
    "MAGIC",
    "encode_record",
    "encode_object",
    "decode_object",
    "object_key",
    "parse_key",
    "translate_error",
]

log = logging.getLogger("byteor.adapters.s3")

MAGIC: Final = b"BYTEOR1\n"
CONTENT_TYPE: Final = "application/vnd.byteor.records"
_FRAME = struct.Struct(">III")
_NO_KEY: Final = 0xFFFFFFFF
_HNAME = struct.Struct(">H")
_HVALUE = struct.Struct(">I")

#: S3's limits on multipart uploads.
MIN_PART_BYTES: Final = 5 * 1024 * 1024
MAX_PARTS: Final = 10_000
#: The most keys one ListObjectsV2 call returns.
LIST_PAGE: Final = 1000
#: Where checkpoints live in the bucket by default; a source never reads keys under it.
CHECKPOINT_AREA: Final = "_byteor/checkpoints/"

_SEQ_WIDTH: Final = 20  # digits of a u64
_KEY = re.compile(r"(\d{20})-(\d{20})\.bor")

# --- errors -------------------------------------------------------------------------------

_AUTH_CODES = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "InvalidAccessKeyId",
        "InvalidToken",
        "ExpiredToken",
        "SignatureDoesNotMatch",
        "TokenRefreshRequired",
        "AccountProblem",
    }
)
_RETRIABLE_CODES = frozenset(
    {"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout", "Throttling"}
)
_UNREACHABLE = (
    bex.EndpointConnectionError,
    bex.ConnectTimeoutError,
    bex.ReadTimeoutError,
    bex.ConnectionClosedError,
    bex.HTTPClientError,
    OSError,
    asyncio.TimeoutError,
)


def translate_error(
    exc: BaseException, *, address: str, bucket: str, what: str = ""
) -> AdapterError | None:
    """Our error for a client-library exception (``None``: not one we know).

    S3 answers with an error code; the class of the exception rarely says more than
    ``ClientError``, so the code decides: refused credentials and permissions are
    :class:`AdapterAuthError`, a missing bucket (``NoSuchBucket``, or a bare 404 on a bucket
    call) is :class:`AdapterNotFound` naming the bucket, a missing key or upload names
    ``what``; throttling and 5xx are retriable.
    """
    the_bucket = f"bucket {bucket!r}"
    if isinstance(exc, bex.ClientError):
        err: Mapping[str, Any] = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        detail = f"{code}: {err.get('Message') or exc}"
        if code in _AUTH_CODES or status == 403:
            return AdapterAuthError("s3", address, detail)
        if code == "NoSuchBucket":
            return AdapterNotFound("s3", address, the_bucket, detail)
        if code in ("NoSuchKey", "NoSuchUpload", "404", "NotFound") or status == 404:
            return AdapterNotFound("s3", address, what or the_bucket, detail)
        retriable = code in _RETRIABLE_CODES or status >= 500
        return AdapterError(
            f"s3: {what or the_bucket} on {address}: {detail}",
            adapter="s3",
            address=address,
            retriable=retriable,
        )
    if isinstance(exc, bex.NoCredentialsError | bex.PartialCredentialsError):
        return AdapterAuthError(
            "s3",
            address,
            f"{type(exc).__name__}: {exc}; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
            f"AWS_PROFILE, or access_key_id and secret_access_key in the config",
        )
    if isinstance(exc, _UNREACHABLE):
        return AdapterUnreachable("s3", address, f"{type(exc).__name__}: {exc}")
    if isinstance(exc, bex.BotoCoreError):
        return AdapterError(f"s3: {type(exc).__name__}: {exc}", adapter="s3", address=address)
    return None


# --- the object format --------------------------------------------------------------------


def _encode_headers(headers: Headers) -> bytes:
    parts: list[bytes] = []
    for name, value in headers:
        n = name.encode()
        parts += [_HNAME.pack(len(n)), n, _HVALUE.pack(len(value)), value]
    return b"".join(parts)


def encode_record(rec: OutRecord) -> bytes:
    """One record's frame (see the module docstring)."""
    h = _encode_headers(rec.headers) if rec.headers else b""
    key = rec.key
    if key is None:
        return b"".join((_FRAME.pack(len(rec.payload), _NO_KEY, len(h)), rec.payload, h))
    return b"".join((_FRAME.pack(len(rec.payload), len(key), len(h)), rec.payload, key, h))


def encode_object(records: Sequence[OutRecord]) -> bytes:
    """A whole object's body: the magic, then each record's frame."""
    return b"".join([MAGIC, *map(encode_record, records)])


def _bad(name: str, at: int, what: str) -> AdapterError:
    return AdapterError(
        f"s3: object {name!r} is not in byteor's record format ({what} at byte {at}); "
        f"write it with the s3 sink, or read line-delimited objects with format = lines",
        adapter="s3",
    )


#: An object's records split: payloads in order, and the keys and headers of the records that
#: have them by index (None when none has); most objects carry neither, and splitting them
#: costs a slice a record.
_Parts = tuple[list[bytes], "dict[int, bytes] | None", "dict[int, Headers] | None"]


def _frames(data: bytes, name: str) -> _Parts:
    """The records of ``data`` (an object's body), checked frame by frame."""
    payloads: list[bytes] = []
    keys: dict[int, bytes] | None = None
    headers: dict[int, Headers] | None = None
    if not data:
        return payloads, keys, headers  # an empty object holds no records
    if not data.startswith(MAGIC):
        raise _bad(name, 0, "no BYTEOR1 magic")
    at, end = len(MAGIC), len(data)
    unpack, append = _FRAME.unpack_from, payloads.append
    while at < end:
        if at + 12 > end:
            raise _bad(name, at, "truncated frame header")
        plen, klen, hlen = unpack(data, at)
        start, at = at, at + 12
        stop = at + plen
        if klen == _NO_KEY and not hlen:  # the common frame: a payload alone
            if stop > end:
                raise _bad(name, start, "truncated frame")
            append(data[at:stop])
            at = stop
            continue
        if stop + (0 if klen == _NO_KEY else klen) + hlen > end:
            raise _bad(name, start, "truncated frame")
        index = len(payloads)
        append(data[at:stop])
        at = stop
        if klen != _NO_KEY:
            if keys is None:
                keys = {}
            keys[index] = data[at : at + klen]
            at += klen
        if hlen:
            if headers is None:
                headers = {}
            headers[index] = _headers_block(data, at, at + hlen, name, start)
            at += hlen
    return payloads, keys, headers


def _headers_block(data: bytes, at: int, stop: int, name: str, start: int) -> Headers:
    """The headers of the frame at ``start``, in ``data[at:stop]``."""
    headers: list[tuple[str, bytes]] = []
    try:
        while at < stop:
            (nl,) = _HNAME.unpack_from(data, at)
            at += 2
            hname = data[at : at + nl].decode()
            at += nl
            (vl,) = _HVALUE.unpack_from(data, at)
            at += 4
            headers.append((hname, data[at : at + vl]))
            at += vl
    except (struct.error, UnicodeDecodeError) as exc:
        raise _bad(name, start, f"bad headers: {exc}") from None
    if at != stop:
        raise _bad(name, start, "headers overrun their block")
    return tuple(headers)


def _lines(data: bytes) -> _Parts:
    """One record per line (LF or CRLF), no key, no headers."""
    lines = data.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    return [(line[:-1] if line.endswith(b"\r") else line) for line in lines], None, None


def decode_object(data: bytes, name: str = "") -> list[OutRecord]:
    """The records of an object body written by :func:`encode_object` (or the sink)."""
    payloads, keys, headers = _frames(data, name)
    return [
        OutRecord(p, keys.get(i) if keys else None, headers.get(i, ()) if headers else ())
        for i, p in enumerate(payloads)
    ]


def object_key(directory: str, first: int, last: int) -> str:
    """The key of an object holding sequence numbers ``first..last`` in ``directory``."""
    return f"{directory}{first:0{_SEQ_WIDTH}d}-{last:0{_SEQ_WIDTH}d}.bor"


def parse_key(key: str, directory: str) -> tuple[int, int] | None:
    """``(first, last)`` of one of our keys in ``directory``, else ``None``."""
    if not key.startswith(directory):
        return None
    m = _KEY.fullmatch(key, len(directory))
    return (int(m[1]), int(m[2])) if m else None


def _directory(prefix: str) -> str:
    """A prefix as a directory: ``""`` stays, anything else ends with ``/``."""
    return prefix if not prefix or prefix.endswith("/") else prefix + "/"


# --- connecting ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class S3Endpoint:
    """How to reach the service.

    Empty credentials use boto's default chain (``AWS_ACCESS_KEY_ID`` /
    ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN`` in the environment, ``AWS_PROFILE``,
    the shared config files, an instance role). ``addressing_style = auto`` is path-style when
    ``url`` is set (S3-compatible servers) and boto's default otherwise. ``max_attempts``
    counts botocore's own retries of one request (same request, same key).
    """

    url: str = ""
    region: str = "us-east-1"
    access_key_id: str = ""
    secret_access_key: str = ""
    session_token: str = ""
    profile: str = ""
    addressing_style: str = "auto"
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 60.0
    max_attempts: int = 3

    @property
    def address(self) -> str:
        """What error messages name: the endpoint URL (never a credential)."""
        return self.url or f"https://s3.{self.region}.amazonaws.com"

    def _session(self) -> aioboto3.Session:
        """A session per set of credentials, shared: a new one loads botocore's S3 model
        again, some 0.1-0.4 s of CPU per client on the project's machines."""
        ident = (
            self.access_key_id,
            self.secret_access_key,
            self.session_token,
            self.region,
            self.profile,
        )
        session = _SESSIONS.get(ident)
        if session is None:
            session = aioboto3.Session(
                aws_access_key_id=self.access_key_id or None,
                aws_secret_access_key=self.secret_access_key or None,
                aws_session_token=self.session_token or None,
                region_name=self.region or None,
                profile_name=self.profile or None,
            )
            _SESSIONS[ident] = session
        return session

    async def connect(self, stack: AsyncExitStack, pool: int = 10) -> S3Client:
        """A client, closed when ``stack`` closes."""
        try:
            session = self._session()
        except bex.ProfileNotFound as exc:
            raise AdapterConfigError(
                f"s3: {exc}; name a profile of the AWS config files, or leave profile empty",
                adapter="s3",
                address=self.address,
            ) from exc
        style = _STYLES.get(self.addressing_style)
        if style is None:
            raise AdapterConfigError(
                f"s3: addressing_style must be auto, path or virtual, got "
                f"{self.addressing_style!r}",
                adapter="s3",
            )
        if style == "auto" and self.url:
            style = "path"  # S3-compatible servers rarely resolve bucket host names
        config = AioConfig(
            s3={"addressing_style": style},
            # total_max_attempts counts the first attempt; botocore's max_attempts does not
            retries={"total_max_attempts": max(1, self.max_attempts), "mode": "standard"},
            connect_timeout=self.connect_timeout_s,
            read_timeout=self.read_timeout_s,
            max_pool_connections=pool,
        )
        client: S3Client = await stack.enter_async_context(
            session.client("s3", endpoint_url=self.url or None, config=config)
        )
        return client


_SESSIONS: dict[tuple[str, str, str, str, str], aioboto3.Session] = {}

_STYLES: Final[dict[str, Literal["auto", "path", "virtual"]]] = {
    "auto": "auto",
    "path": "path",
    "virtual": "virtual",
}


class _Base:
    """Client, error mapping and the bucket check shared by source and sink."""

    def __init__(self, bucket: str, endpoint: S3Endpoint) -> None:
        if not bucket:
            raise AdapterConfigError("s3: bucket must not be empty", adapter="s3")
        self._bucket, self._endpoint = bucket, endpoint
        self._address = endpoint.address
        self._stack: AsyncExitStack | None = None
        self._client: S3Client | None = None
        self._down: str = ""  # why the last call failed to reach the server

    @contextmanager
    def _errors(self, what: str = "") -> Iterator[None]:
        try:
            yield
        except AdapterError:
            raise
        except Exception as exc:
            err = translate_error(exc, address=self._address, bucket=self._bucket, what=what)
            if err is None:
                raise
            if isinstance(err, AdapterUnreachable):
                self._down = str(exc)
            raise err from exc
        self._down = ""

    async def _open(self, pool: int = 10) -> S3Client:
        stack = AsyncExitStack()
        try:
            with self._errors():
                client = await self._endpoint.connect(stack, pool)
                await client.head_bucket(Bucket=self._bucket)
        except BaseException:
            await stack.aclose()
            raise
        self._stack, self._client = stack, client
        return client

    async def _close(self) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    def _need(self, side: str) -> S3Client:
        if self._client is None:
            raise AdapterError(f"s3: {side} is not started", adapter="s3", address=self._address)
        return self._client


# --- the sink -----------------------------------------------------------------------------


class _Write:
    """One ``write_batch`` call: the last object holding one of its records."""

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last: _Object | None = None


class _Object:
    """An object being filled, waiting for its upload, or uploaded."""

    __slots__ = ("frames", "size", "count", "opened", "first", "last", "key", "done", "writes")

    def __init__(self, opened: float, done: asyncio.Future[None]) -> None:
        self.frames: list[bytes] = []
        self.size = len(MAGIC)
        self.count = 0
        self.opened = opened
        self.first = self.last = -1
        self.key = ""
        self.done = done  # resolved when uploaded (or failed)
        self.writes: list[_Write] = []

    def digest(self) -> bytes:
        h = hashlib.blake2b(digest_size=16)
        for frame in self.frames:
            h.update(frame)
        return h.digest()


#: A PUT smaller than this goes without ``Expect: 100-continue`` (see :func:`_no_continue`).
CONTINUE_FROM_BYTES: Final = 1024 * 1024


def _no_continue(request: Any, **_: Any) -> None:
    """``before-send`` hook of a PutObject: drop the ``Expect: 100-continue`` botocore adds to
    every body, when the body is small.

    With it, the client sends the headers and waits for the server's ``100 Continue`` before
    the body: a round trip more per object (against moto on loopback, a PUT of 70 kB took
    ~2.7 ms, one in five ~13 ms, and the sink wrote ~55 k records/s of 128 bytes; without,
    ~90-115 k/s). The wait pays off only for big bodies (a refusal before megabytes are
    sent), so from :data:`CONTINUE_FROM_BYTES` on it stays. ``Expect`` is not signed.
    """
    length = request.headers.get("Content-Length")
    if length is not None and int(length) < CONTINUE_FROM_BYTES:
        request.headers.pop("Expect", None)


def _seen(fut: asyncio.Future[Any]) -> None:
    """Mark a failed future's exception as seen: a writer that gave up never awaits its
    object, and a cancelled prefetch is never awaited either."""
    if not fut.cancelled():
        fut.exception()


class S3Sink(_Base, Sink):
    """Writes records into rolled objects; see the module docstring."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        pipeline: str = "byteor",
        partition: str = "0",
        endpoint: S3Endpoint | None = None,
        flush: str = "batch",
        roll_bytes: int = 64 * 1024 * 1024,
        roll_ms: int = 60_000,
        multipart_threshold: int = 16 * 1024 * 1024,
        part_bytes: int = 8 * 1024 * 1024,
        upload_concurrency: int = 4,
        clock: Callable[[], float] = time.monotonic,
        list_page: int = LIST_PAGE,
    ) -> None:
        super().__init__(bucket, endpoint or S3Endpoint())
        for what, value in (("pipeline", pipeline), ("partition", partition)):
            if not value or "/" in value:
                raise AdapterConfigError(
                    f"s3: {what} must be a non-empty name without '/', got {value!r}",
                    adapter="s3",
                )
        if flush not in ("batch", "linger"):
            raise AdapterConfigError(
                f"s3: flush must be batch or linger, got {flush!r}", adapter="s3"
            )
        if part_bytes < MIN_PART_BYTES:
            raise AdapterConfigError(
                f"s3: part_bytes must be at least {MIN_PART_BYTES} (S3's smallest part), "
                f"got {part_bytes}",
                adapter="s3",
            )
        if roll_bytes < 1 or roll_ms < 1 or upload_concurrency < 1 or multipart_threshold < 1:
            raise AdapterConfigError(
                "s3: roll_bytes, roll_ms, multipart_threshold and upload_concurrency must be "
                "at least 1",
                adapter="s3",
            )
        self._dir = f"{_directory(prefix)}{pipeline}/{partition}/"
        self._linger = flush == "linger"
        self._roll_bytes, self._roll_s = roll_bytes, roll_ms / 1000.0
        self._threshold, self._part_bytes = multipart_threshold, part_bytes
        self._concurrency = upload_concurrency
        self._clock, self._page = clock, list_page
        self._next = 0  # the next sequence number to give
        self._open_obj: _Object | None = None
        self._queue: deque[_Object] = deque()  # closed, not uploaded yet, in key order
        self._recent: deque[_Object] = deque()  # uploaded, some writer still waiting
        self._replay: deque[tuple[int, int, bytes]] = deque()  # (first, last, digest)
        self._queued = asyncio.Event()
        self._timer_wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._uploaded = 0
        self._stopped = True

    @property
    def directory(self) -> str:
        """The sink's key directory: ``{prefix}{pipeline}/{partition}/``."""
        return self._dir

    @property
    def next_sequence(self) -> int:
        return self._next

    async def start(self) -> None:
        client = await self._open(pool=max(10, self._concurrency + 2))
        client.meta.events.register("before-send.s3.PutObject", _no_continue)
        try:
            with self._errors(f"the keys under {self._dir!r}"):
                self._next = await self._resume(client)
        except BaseException:
            await self._close()
            raise
        self._stopped = False
        self._tasks = [asyncio.create_task(self._uploader(), name="byteor-s3-upload")]
        if self._linger:
            self._tasks.append(asyncio.create_task(self._timer(), name="byteor-s3-roll"))

    # -- where to continue ------------------------------------------------------------------

    async def _first_at_least(self, client: S3Client, seq: int) -> tuple[int, int] | None:
        """The range of our lowest key whose first sequence is ``seq`` or more."""
        resp = await client.list_objects_v2(
            Bucket=self._bucket,
            Prefix=self._dir,
            StartAfter=f"{self._dir}{seq - 1:0{_SEQ_WIDTH}d}~" if seq else self._dir,
            MaxKeys=1,
        )
        for item in resp.get("Contents", []):
            return parse_key(item.get("Key", ""), self._dir)
        return None

    async def _resume(self, client: S3Client) -> int:
        """One past the highest last sequence among the keys in the sink's directory.

        One listing page is usually all there is. Past that, instead of paging through every
        key, a galloping search on the first sequence (``StartAfter`` a zero-padded number,
        one key per call) finds the highest in about ``2 log2(n)`` calls.
        """
        resp = await client.list_objects_v2(
            Bucket=self._bucket, Prefix=self._dir, MaxKeys=self._page
        )
        ranges = [parse_key(i.get("Key", ""), self._dir) for i in resp.get("Contents", [])]
        found = [r for r in ranges if r is not None]
        if not resp.get("IsTruncated"):
            return max((last for _, last in found), default=-1) + 1
        lo = max((first for first, _ in found), default=0)  # a first that exists
        step = 1
        while (hit := await self._first_at_least(client, lo + step)) is not None:
            lo = hit[0]
            step *= 2
        hi = lo + step  # no first at or above hi
        while hi - lo > 1:
            mid = (lo + hi) // 2
            hit = await self._first_at_least(client, mid)
            if hit is None:
                hi = mid
            else:
                lo = hit[0]
        best = -1
        start = f"{self._dir}{lo - 1:0{_SEQ_WIDTH}d}~" if lo else self._dir
        while True:  # every key with first == lo (normally one)
            page = await client.list_objects_v2(
                Bucket=self._bucket, Prefix=self._dir, StartAfter=start, MaxKeys=self._page
            )
            for item in page.get("Contents", []):
                start = item.get("Key", "")
                r = parse_key(start, self._dir)
                if r is not None:
                    best = max(best, r[1])
            if not page.get("IsTruncated"):
                return best + 1

    # -- filling and closing objects --------------------------------------------------------

    def _new_object(self) -> _Object:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.add_done_callback(_seen)
        obj = _Object(self._clock(), fut)
        self._open_obj = obj
        self._timer_wake.set()
        return obj

    def _close_open(self) -> None:
        """Give the open object its sequence numbers and key, and queue its upload."""
        obj, self._open_obj = self._open_obj, None
        if obj is None or not obj.count:
            return
        if self._replay:
            first, last, digest = self._replay[0]
            if self._next == first and obj.count == last - first + 1 and obj.digest() == digest:
                self._replay.popleft()  # the same bytes again: the same key, overwritten
            else:  # different: past every number handed out before the failure
                self._next = self._replay[-1][1] + 1
                self._replay.clear()
        obj.first, obj.last = self._next, self._next + obj.count - 1
        self._next += obj.count
        obj.key = object_key(self._dir, obj.first, obj.last)
        self._queue.append(obj)
        self._queued.set()

    async def write_batch(self, records: Sequence[OutRecord]) -> None:
        if self._stopped:
            raise AdapterError("s3: sink is not started", adapter="s3", address=self._address)
        if not records:
            return
        obj = self._open_obj
        if obj is not None and self._clock() - obj.opened >= self._roll_s:
            self._close_open()  # the time roll, checked on write
        write = _Write()
        objects: list[_Object] = []
        roll = self._roll_bytes
        for rec in records:
            obj = self._open_obj or self._new_object()
            if not objects or objects[-1] is not obj:
                objects.append(obj)
                obj.writes.append(write)
            frame = encode_record(rec)
            obj.frames.append(frame)
            obj.size += len(frame)
            obj.count += 1
            if obj.size >= roll or (
                self._replay and obj.count == self._replay[0][1] - self._replay[0][0] + 1
            ):
                self._close_open()
        write.last = objects[-1]
        if not self._linger:
            self._close_open()
        for obj in objects:  # they complete in order; the first failure is the answer
            await asyncio.shield(obj.done)

    async def flush(self) -> None:
        """Close the open object and wait until every closed one is uploaded."""
        self._close_open()
        for obj in list(self._queue):
            await asyncio.shield(obj.done)

    # -- uploading ----------------------------------------------------------------------------

    async def _uploader(self) -> None:
        while True:
            while not self._queue:
                self._queued.clear()
                await self._queued.wait()
            obj = self._queue[0]
            try:
                await self._upload(obj)
            except Exception as exc:
                self._failed(obj, exc)
                continue
            self._queue.popleft()
            self._uploaded += 1
            obj.done.set_result(None)
            # Kept (frames and all) while a writer of it still waits for a later object: if
            # that one fails, the retried batch starts with this one again.
            self._recent.append(obj)
            while self._recent and all(
                w.last is not None and w.last.done.done() for w in self._recent[0].writes
            ):
                self._recent.popleft().frames = []  # its writers are answered: never replayed

    def _failed(self, obj: _Object, exc: Exception) -> None:
        """Fail ``obj``, everything after it, and the writes they hold; set up the replay."""
        failed = list(self._queue)  # obj first
        self._queue.clear()
        if self._open_obj is not None:
            failed.append(self._open_obj)
            self._open_obj = None
        lost = {id(o) for o in failed}
        # Uploaded objects just before obj whose every writer fails now are replayed too:
        # the retried batch starts with them.
        back: list[_Object] = []
        for old in reversed(self._recent):
            if not all(w.last is not None and id(w.last) in lost for w in old.writes):
                break
            back.append(old)
        replay = [*reversed(back), *(o for o in failed if o.first >= 0)]
        self._replay = deque((o.first, o.last, o.digest()) for o in replay)
        for o in self._recent:
            o.frames = []
        self._recent.clear()
        if self._replay:
            self._next = self._replay[0][0]
        for o in failed:
            o.frames = []
            if not o.done.done():
                o.done.set_exception(exc)
        log.warning("s3: upload of %s failed (%s); %d object(s) failed", obj.key, exc, len(failed))

    async def _upload(self, obj: _Object) -> None:
        client = self._need("sink")
        body = b"".join([MAGIC, *obj.frames])
        meta = {
            "byteor-format": "framed-1",
            "byteor-records": str(obj.count),
            "byteor-first": str(obj.first),
            "byteor-last": str(obj.last),
        }
        if len(body) >= self._threshold:
            await self._multipart(client, obj.key, body, meta)
            return
        with self._errors(f"object {obj.key!r}"):
            await client.put_object(
                Bucket=self._bucket, Key=obj.key, Body=body, ContentType=CONTENT_TYPE, Metadata=meta
            )

    async def _upload_part(
        self, client: S3Client, key: str, upload_id: str, number: int, body: bytes
    ) -> str:
        """Upload one part; its ETag."""
        with self._errors(f"multipart upload of {key!r}"):
            resp = await client.upload_part(
                Bucket=self._bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
            )
        return resp["ETag"]

    async def _multipart(
        self, client: S3Client, key: str, body: bytes, meta: dict[str, str]
    ) -> None:
        part = max(self._part_bytes, -(-len(body) // MAX_PARTS))
        with self._errors(f"object {key!r}"):
            created = await client.create_multipart_upload(
                Bucket=self._bucket, Key=key, ContentType=CONTENT_TYPE, Metadata=meta
            )
        upload_id = created["UploadId"]
        gate = asyncio.Semaphore(self._concurrency)
        etags: list[str] = []

        async def one(number: int, at: int) -> None:
            async with gate:
                etags[number - 1] = await self._upload_part(
                    client, key, upload_id, number, body[at : at + part]
                )

        offsets = range(0, len(body), part)
        etags.extend("" for _ in offsets)
        tasks = [asyncio.create_task(one(n, at)) for n, at in enumerate(offsets, 1)]
        try:
            await asyncio.gather(*tasks)
            with self._errors(f"multipart upload of {key!r}"):
                await client.complete_multipart_upload(
                    Bucket=self._bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={
                        "Parts": [{"ETag": e, "PartNumber": n} for n, e in enumerate(etags, 1)]
                    },
                )
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            try:
                await client.abort_multipart_upload(
                    Bucket=self._bucket, Key=key, UploadId=upload_id
                )
            except Exception as exc:  # the upload stays until a lifecycle rule removes it
                log.warning("s3: could not abort the multipart upload of %s: %s", key, exc)
            raise

    async def _timer(self) -> None:
        """Close the open object once it is ``roll_ms`` old, with nothing written since."""
        while True:
            obj = self._open_obj
            if obj is None:
                self._timer_wake.clear()
                await self._timer_wake.wait()
                continue
            left = obj.opened + self._roll_s - self._clock()
            if left <= 0:
                self._close_open()
                continue
            self._timer_wake.clear()
            with suppress(TimeoutError):
                await asyncio.wait_for(self._timer_wake.wait(), left)

    async def stop(self) -> None:
        if self._stopped and self._client is None:
            return
        self._stopped = True
        try:
            with suppress(Exception):  # a failed flush has failed its writers already
                await self.flush()
        finally:
            tasks, self._tasks = self._tasks, []
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._close()

    def health(self) -> Health:
        if self._stopped or self._client is None:
            return Health(connected=False, detail="stopped")
        detail = f"objects: {self._uploaded}, next sequence: {self._next}"
        if self._down:
            detail += f"; unreachable: {self._down}"
        return Health(connected=not self._down, detail=detail)


# --- checkpoints --------------------------------------------------------------------------


class _Checkpoint:
    """Where a source keeps the last completed key: ``{"after": key, ...}`` as JSON."""

    def __init__(self, bucket: str, prefix: str, where: str) -> None:
        self._bucket, self._prefix, self.where = bucket, prefix, where

    def _encode(self, after: str) -> bytes:
        doc = {"version": 1, "bucket": self._bucket, "prefix": self._prefix, "after": after}
        return json.dumps(doc, sort_keys=True).encode()

    def _decode(self, raw: bytes) -> str | None:
        try:
            doc = json.loads(raw)
            after, bucket, prefix = doc["after"], doc["bucket"], doc["prefix"]
        except (ValueError, KeyError, TypeError) as exc:
            raise AdapterError(
                f"s3: the checkpoint {self.where} cannot be read ({exc}); remove it to start "
                f"over from the first key",
                adapter="s3",
            ) from None
        if (bucket, prefix) != (self._bucket, self._prefix):
            raise AdapterConfigError(
                f"s3: the checkpoint {self.where} belongs to bucket {bucket!r} prefix "
                f"{prefix!r}, not {self._bucket!r} {self._prefix!r}; give this source its "
                f"own group (or checkpoint_key / checkpoint_path)",
                adapter="s3",
            )
        return str(after) if after else None

    async def load(self) -> str | None:
        raise NotImplementedError

    async def save(self, after: str) -> None:
        raise NotImplementedError


class _BucketCheckpoint(_Checkpoint):
    def __init__(self, base: _Base, bucket: str, prefix: str, key: str) -> None:
        super().__init__(bucket, prefix, f"object {key!r}")
        self._base, self.key = base, key

    async def load(self) -> str | None:
        client = self._base._need("source")
        try:
            with self._base._errors(self.where):
                resp = await client.get_object(Bucket=self._bucket, Key=self.key)
                async with resp["Body"] as body:
                    raw = await body.read()
        except AdapterNotFound as exc:
            if exc.what != self.where:
                raise  # the bucket itself
            return None
        return self._decode(raw)

    async def save(self, after: str) -> None:
        client = self._base._need("source")
        with self._base._errors(self.where):
            await client.put_object(
                Bucket=self._bucket,
                Key=self.key,
                Body=self._encode(after),
                ContentType="application/json",
            )


class _FileCheckpoint(_Checkpoint):
    """A local file, replaced atomically (written beside it, fsynced, renamed)."""

    def __init__(self, bucket: str, prefix: str, path: str) -> None:
        super().__init__(bucket, prefix, f"file {path!r}")
        self._path = Path(path)

    async def load(self) -> str | None:
        try:
            raw = await asyncio.to_thread(self._path.read_bytes)
        except FileNotFoundError:
            return None
        return self._decode(raw)

    def _write(self, data: bytes) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self._path.parent, prefix=f".{self._path.name}.")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._path)
        except BaseException:
            with suppress(OSError):
                os.unlink(tmp)
            raise

    async def save(self, after: str) -> None:
        await asyncio.to_thread(self._write, self._encode(after))


# --- the source ---------------------------------------------------------------------------


class S3Position(NamedTuple):
    """Where a record sits: its object's key and its number in the object (from 0)."""

    key: str
    record: int


_Data = tuple[bytes, "bytes | None", Headers]  # a record's payload, key and headers


class _Read(Settler):
    """An object read by the source: its records (as split, :data:`_Parts`), how many were
    handed out and acked.

    It is also the acknowledgement of its records (one object for all of them, each record a
    LazyAckRecord): a run of its records handed out is a :class:`RecordBatch` of its columns,
    whose ``ack_all`` counts them at once without a record made (:meth:`settle_batch`), as
    ``ack_all`` of some of its records counts those; reading a record's ``ack`` makes an
    :class:`_ObjectAck` for that one.
    """

    __slots__ = ("source", "key", "payloads", "keys", "headers", "handed", "acked", "epoch")

    def __init__(self, source: S3Source, key: str, parts: _Parts, epoch: int) -> None:
        self.source, self.key, self.epoch = source, key, epoch
        self.payloads, self.keys, self.headers = parts
        self.handed = 0
        self.acked = 0

    def record(self, index: int) -> _Data:
        """Payload, key and headers of record ``index``."""
        keys, headers = self.keys, self.headers
        return (
            self.payloads[index],
            keys.get(index) if keys else None,
            headers.get(index, ()) if headers else (),
        )

    def make_ack(self, record: LazyAckRecord) -> Ack:
        index = cast(S3Position, record.position)[1]
        return _ObjectAck(self.source, self, index, self.record(index), self.epoch)

    def settle(self, records: Sequence[LazyAckRecord], ok: bool) -> None:
        self._settle_run(len(records), ok, lambda: [r.position for r in records])

    def settle_batch(self, batch: RecordBatch, ok: bool) -> None:
        """A run of our records settled whole, from the batch (no record made)."""
        self._settle_run(len(batch), ok, lambda: batch.positions)

    def _settle_run(self, n: int, ok: bool, positions: Callable[[], Sequence[object]]) -> None:
        """``n`` of our records settled: counted at once (the checkpoint moves only once
        every record of the object is acked), or handed out again (their ``positions``,
        asked for only then)."""
        source = self.source
        if source._stopped or self.epoch != source._epoch:
            return  # the object is read again after a restart
        if not ok:
            record = self.record
            indexes = [cast(S3Position, p)[1] for p in positions()]
            source._redo.extend((self, i, record(i)) for i in indexes)
            return
        self.acked += n
        if self.acked == len(self.payloads):
            source._advance()

    def batch(self, start: int, stop: int) -> RecordBatch:
        """Records ``start..stop`` as a batch of columns (the object's payload list itself
        when they are all of it; keys and headers only when one of them has any), their
        positions made when first read."""
        payloads = self.payloads
        if start or stop != len(payloads):
            payloads = payloads[start:stop]
        keys: list[bytes | None] | None = None
        headers: list[Headers] | None = None
        if self.keys:
            keys = list(map(self.keys.get, range(start, stop)))
            if keys.count(None) == len(keys):
                keys = None
        if self.headers:
            get = self.headers.get
            headers = [get(i, ()) for i in range(start, stop)]
            if not any(headers):
                headers = None
        key = self.key

        def positions() -> list[S3Position]:
            position = tuple.__new__  # S3Position without its Python-level __new__
            return [position(S3Position, (key, i)) for i in range(start, stop)]

        return RecordBatch(payloads, keys, headers, positions, self)


class _ObjectAck(Ack):
    """A record's acknowledgement: settling tells the source, without I/O."""

    __slots__ = ("_source", "_read", "_index", "_data", "_epoch")

    def __init__(
        self,
        source: S3Source,
        read: _Read,
        index: int,
        data: _Data,
        epoch: int,
    ) -> None:
        Ack.__init__(self)
        self._source, self._read, self._index = source, read, index
        self._data, self._epoch = data, epoch

    def settled(self, ok: bool) -> None:
        self._source._settled(self, ok)


class S3Source(_Base, Source):
    """Reads the objects under a prefix in key order; see the module docstring."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint: S3Endpoint | None = None,
        group: str = "byteor",
        checkpoint: str = "bucket",
        checkpoint_key: str = "",
        checkpoint_path: str = "",
        format: str = "framed",
        poll_ms: int = 2000,
        max_object_bytes: int = 256 * 1024 * 1024,
        prefetch: int = 4,
        list_page: int = LIST_PAGE,
    ) -> None:
        super().__init__(bucket, endpoint or S3Endpoint())
        if prefetch < 1:
            raise AdapterConfigError(
                f"s3: prefetch must be at least 1, got {prefetch}", adapter="s3"
            )
        if format not in ("framed", "lines"):
            raise AdapterConfigError(
                f"s3: format must be framed or lines, got {format!r}", adapter="s3"
            )
        if not group or "/" in group:
            raise AdapterConfigError(
                f"s3: group must be a non-empty name without '/', got {group!r}", adapter="s3"
            )
        self._bucket, self._prefix = bucket, _directory(prefix)
        self._store: _Checkpoint
        if checkpoint == "file":
            if not checkpoint_path:
                raise AdapterConfigError(
                    "s3: checkpoint = file needs checkpoint_path", adapter="s3"
                )
            self._store = _FileCheckpoint(bucket, self._prefix, checkpoint_path)
            self._skip = ""
        elif checkpoint == "bucket":
            key = checkpoint_key or f"{CHECKPOINT_AREA}{group}.json"
            self._store = _BucketCheckpoint(self, bucket, self._prefix, key)
            self._skip = key
        else:
            raise AdapterConfigError(
                f"s3: checkpoint must be bucket or file, got {checkpoint!r}", adapter="s3"
            )
        self._lines = format == "lines"
        self._poll_s = poll_ms / 1000.0
        self._max_bytes, self._page = max_object_bytes, list_page
        self._keys: deque[str] = deque()  # listed, not fetched yet
        self._fetching: deque[tuple[str, asyncio.Task[bytes]]] = deque()  # GETs, in key order
        self._prefetch = prefetch
        self._cursor: str | None = None  # the last key listed
        self._more = False  # the last listing was truncated
        self._list_at = 0.0  # loop time before which the prefix is not listed again
        self._current: _Read | None = None  # the object being handed out
        self._reads: deque[_Read] = deque()  # read and not completed, in key order
        self._redo: deque[tuple[_Read, int, _Data]] = deque()  # nacked, to hand out again
        self._committed: str | None = None  # the last completed key
        self._stored: str | None = None  # what the checkpoint holds
        self._epoch = 0
        self._paused = False
        self._stopped = True

    @property
    def checkpoint(self) -> str | None:
        """The last completed key (stored at the next ``next_batch``, ``commit`` or stop)."""
        return self._committed

    async def start(self) -> None:
        await self._open()
        try:
            after = await self._store.load()
        except BaseException:
            await self._close()
            raise
        self._epoch += 1
        self._committed = self._stored = self._cursor = after
        self._keys.clear()
        self._reads.clear()
        self._redo.clear()
        self._current = None
        self._more, self._list_at = False, 0.0
        self._stopped = False

    # -- acknowledgements ---------------------------------------------------------------------

    def _settled(self, ack: _ObjectAck, ok: bool) -> None:
        if self._stopped or ack._epoch != self._epoch:
            return  # the object is read again after a restart
        if not ok:
            self._redo.append((ack._read, ack._index, ack._data))
            return
        read = ack._read
        read.acked += 1
        if read.acked == len(read.payloads):
            self._advance()

    def _advance(self) -> None:
        reads = self._reads
        while reads and reads[0].acked == len(reads[0].payloads):
            self._committed = reads.popleft().key

    async def commit(self) -> None:
        """Store the checkpoint now if it moved."""
        committed = self._committed
        if committed is not None and committed != self._stored:
            await self._store.save(committed)
            self._stored = committed

    # -- listing and reading ------------------------------------------------------------------

    async def _list(self) -> None:
        client = self._need("source")
        with self._errors():
            if self._cursor is None:
                resp = await client.list_objects_v2(
                    Bucket=self._bucket, Prefix=self._prefix, MaxKeys=self._page
                )
            else:
                resp = await client.list_objects_v2(
                    Bucket=self._bucket,
                    Prefix=self._prefix,
                    StartAfter=self._cursor,
                    MaxKeys=self._page,
                )
        contents = resp.get("Contents", [])
        for item in contents:
            key = item.get("Key", "")
            if key == self._skip or key.startswith(CHECKPOINT_AREA) or key.endswith("/"):
                continue  # checkpoints, and folder markers
            self._keys.append(key)
        if contents:
            self._cursor = contents[-1].get("Key", self._cursor)
        self._more = bool(resp.get("IsTruncated"))
        if not self._more:
            self._list_at = asyncio.get_running_loop().time() + self._poll_s

    async def _get(self, key: str) -> bytes:
        """An object's body (empty when it was deleted since it was listed)."""
        client = self._need("source")
        what = f"object {key!r}"
        try:
            with self._errors(what):
                resp = await client.get_object(Bucket=self._bucket, Key=key)
                size = resp.get("ContentLength", 0)
                if size > self._max_bytes:
                    resp["Body"].close()
                    raise AdapterError(
                        f"s3: {what} is {size} bytes, more than max_object_bytes "
                        f"({self._max_bytes}); raise it, or roll smaller objects",
                        adapter="s3",
                        address=self._address,
                    )
                async with resp["Body"] as body:
                    return await body.read()
        except AdapterNotFound as exc:
            if exc.what != what:
                raise
            log.warning("s3: %s was listed but is gone; skipped", what)
            return b""

    def _fill(self) -> None:
        """Keep up to ``prefetch`` GETs in flight for the next keys."""
        while self._keys and len(self._fetching) < self._prefetch:
            key = self._keys.popleft()
            task = asyncio.create_task(self._get(key), name=f"byteor-s3-get {key}")
            task.add_done_callback(_seen)
            self._fetching.append((key, task))

    def _unfetch(self) -> None:
        """Cancel the GETs in flight and put their keys back, first in line."""
        fetching, self._fetching = self._fetching, deque()
        for _, task in fetching:
            task.cancel()
        self._keys.extendleft(key for key, _ in reversed(fetching))

    def _open_next(self) -> None:
        """Split the first fetched object into records (its GET is done)."""
        key, task = self._fetching[0]
        try:
            data = task.result()
            parts = _lines(data) if self._lines else _frames(data, key)
        except BaseException:
            self._unfetch()  # tried again at the next call
            raise
        self._fetching.popleft()
        read = _Read(self, key, parts, self._epoch)
        self._reads.append(read)
        if read.payloads:
            self._current = read
        else:
            self._advance()

    def _take(self, out: list[Sequence[Record]], room: int) -> int:
        """Hand out nacked records, then the current object's, up to ``room`` (appended to
        ``out``: a list of the nacked records, one LazyAckRecord each with their object's
        :class:`_Read` standing in for their handles; a :class:`RecordBatch` of the object's
        columns); how many were handed out."""
        taken = 0
        redo = self._redo
        if redo and room > 0:
            position = tuple.__new__  # S3Position without its Python-level __new__
            rows: list[RecordRow] = []
            while redo and len(rows) < room:
                again, index, data = redo.popleft()
                rows.append((*data, position(S3Position, (again.key, index)), again))
            out.append(make_records(rows, LazyAckRecord))
            taken = len(rows)
        read = self._current
        if read is None or room <= taken:
            return taken
        start = read.handed
        stop = min(len(read.payloads), start + room - taken)
        read.handed = stop
        if stop == len(read.payloads):
            self._current = None
        out.append(read.batch(start, stop))
        return taken + stop - start

    async def next_batch(self, max_records: int, timeout_s: float = 0.0) -> Sequence[Record]:
        """A :class:`RecordBatch` of the records of one object (a list of records when they
        are nacked ones again or of several objects), ``[]`` when nothing is there within
        ``timeout_s``."""
        if self._stopped:
            raise AdapterError("s3: source is not started", adapter="s3")
        await self.commit()
        if self._paused or max_records <= 0:
            return []
        pieces = await self._collect(max_records, timeout_s)
        if len(pieces) == 1:
            return pieces[0]
        out: list[Record] = []
        for piece in pieces:
            out += piece
        return out

    async def _collect(self, max_records: int, timeout_s: float) -> list[Sequence[Record]]:
        """What :meth:`next_batch` hands out, in pieces (see :meth:`_take`)."""
        out: list[Sequence[Record]] = []
        taken = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not self._stopped:
            taken += self._take(out, max_records - taken)
            if taken >= max_records:
                break
            self._fill()
            if self._more and not self._keys and len(self._fetching) < self._prefetch:
                await self._list()  # the next page, while the GETs go on
                self._fill()
            if self._fetching:
                task = self._fetching[0][1]
                if not task.done():
                    left = deadline - loop.time()
                    if out or left <= 0:
                        break  # records in hand: no waiting for I/O (the GET goes on)
                    await asyncio.wait((task,), timeout=left)
                    if not task.done():
                        break
                self._open_next()
                continue
            now = loop.time()
            if self._more or now >= self._list_at:
                await self._list()
                if self._keys:
                    continue
            if out or now >= deadline:
                break
            await asyncio.sleep(min(deadline, self._list_at) - now)
        return out

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        self._paused = False

    @property
    def paused(self) -> bool:
        return self._paused

    async def stop(self) -> None:
        if self._stopped:
            return
        try:
            await self.commit()
        finally:
            self._stopped = True
            tasks = [task for _, task in self._fetching]
            self._unfetch()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._keys.clear()
            self._reads.clear()
            self._redo.clear()
            self._current = None
            await self._close()

    def health(self) -> Health:
        if self._stopped:
            return Health(connected=False, detail="stopped")
        detail = f"checkpoint: {self._committed or '(none)'}"
        if self._down:
            detail += f"; unreachable: {self._down}"
        return Health(connected=not self._down, detail=detail)


# --- the adapter --------------------------------------------------------------------------

_MiB = 1024 * 1024


class S3Adapter(Adapter):
    name = "s3"
    summary = "objects in an S3 bucket: rolled, multipart, deterministic keys; checkpointed reads"
    extra = "s3"
    client_module = "aioboto3"
    config = ConfigSchema(
        "s3",
        (
            ConfigField("bucket", str, doc="the bucket (it must exist)"),
            ConfigField("prefix", str, "", "key prefix; a directory, '/' is added"),
            ConfigField("endpoint_url", str, "", "S3-compatible server (default: AWS)"),
            ConfigField("region", str, "us-east-1", "the region"),
            ConfigField("access_key_id", str, "", "default: AWS_ACCESS_KEY_ID / profile / role"),
            ConfigField("secret_access_key", str, "", "default: AWS_SECRET_ACCESS_KEY / ..."),
            ConfigField("session_token", str, "", "default: AWS_SESSION_TOKEN"),
            ConfigField("profile", str, "", "a profile of the AWS config files"),
            ConfigField(
                "addressing_style", str, "auto", "path (auto with endpoint_url) or virtual",
                ("auto", "path", "virtual"),
            ),
            ConfigField("connect_timeout_ms", int, 5000, "give up connecting after this"),
            ConfigField("read_timeout_ms", int, 60_000, "give up waiting for a response"),
            ConfigField("max_attempts", int, 3, "botocore's attempts per request"),
            ConfigField("pipeline", str, "byteor", "sink: key directory under the prefix"),
            ConfigField("partition", str, "0", "sink: key directory under the pipeline"),
            ConfigField(
                "flush", str, "batch", "sink: close an object per batch, or linger",
                ("batch", "linger"),
            ),
            ConfigField("roll_bytes", int, 64 * _MiB, "sink: close an object at this size"),
            ConfigField("roll_ms", int, 60_000, "sink: close an object this old (linger)"),
            ConfigField("multipart_threshold", int, 16 * _MiB, "sink: multipart from here"),
            ConfigField("part_bytes", int, 8 * _MiB, "sink: multipart part size (>= 5 MiB)"),
            ConfigField("upload_concurrency", int, 4, "sink: parts in flight"),
            ConfigField("group", str, "byteor", "source: whose checkpoint"),
            ConfigField(
                "checkpoint", str, "bucket", "source: in the bucket or a local file",
                ("bucket", "file"),
            ),
            ConfigField("checkpoint_key", str, "", f"default {CHECKPOINT_AREA}<group>.json"),
            ConfigField("checkpoint_path", str, "", "source: the file (checkpoint = file)"),
            ConfigField(
                "format", str, "framed", "source: byteor frames or one record per line",
                ("framed", "lines"),
            ),
            ConfigField("poll_ms", int, 2000, "source: list again after this with nothing new"),
            ConfigField("max_object_bytes", int, 256 * _MiB, "source: refuse bigger objects"),
            ConfigField("prefetch", int, 4, "source: objects fetched ahead (GETs in flight)"),
        ),
    )  # fmt: skip
    capabilities = Capabilities(
        source=Delivery(
            "at-least-once", "per-prefix (key order)", "checkpoint after every record of an object"
        ),
        sink=Delivery("at-least-once", "per-partition", "every object of the batch uploaded"),
        max_batch=100_000,
        backpressure="pause",
    )

    @staticmethod
    def _endpoint(config: Mapping[str, ConfigValue]) -> S3Endpoint:
        return S3Endpoint(
            url=str(config["endpoint_url"]),
            region=str(config["region"]),
            access_key_id=str(config["access_key_id"]),
            secret_access_key=str(config["secret_access_key"]),
            session_token=str(config["session_token"]),
            profile=str(config["profile"]),
            addressing_style=str(config["addressing_style"]),
            connect_timeout_s=int(config["connect_timeout_ms"]) / 1000.0,
            read_timeout_s=int(config["read_timeout_ms"]) / 1000.0,
            max_attempts=int(config["max_attempts"]),
        )

    def make_source(self, config: Mapping[str, ConfigValue]) -> Source:
        return S3Source(
            str(config["bucket"]),
            str(config["prefix"]),
            endpoint=self._endpoint(config),
            group=str(config["group"]),
            checkpoint=str(config["checkpoint"]),
            checkpoint_key=str(config["checkpoint_key"]),
            checkpoint_path=str(config["checkpoint_path"]),
            format=str(config["format"]),
            poll_ms=int(config["poll_ms"]),
            max_object_bytes=int(config["max_object_bytes"]),
            prefetch=int(config["prefetch"]),
        )

    def make_sink(self, config: Mapping[str, ConfigValue]) -> Sink:
        return S3Sink(
            str(config["bucket"]),
            str(config["prefix"]),
            pipeline=str(config["pipeline"]),
            partition=str(config["partition"]),
            endpoint=self._endpoint(config),
            flush=str(config["flush"]),
            roll_bytes=int(config["roll_bytes"]),
            roll_ms=int(config["roll_ms"]),
            multipart_threshold=int(config["multipart_threshold"]),
            part_bytes=int(config["part_bytes"]),
            upload_concurrency=int(config["upload_concurrency"]),
        )
