"""The InfluxDB 2.x client and store over real HTTP, against a local stand-in server that
records requests and answers as InfluxDB 2.x does: what influxdb-client sends (bytes, Flux
with bound parameters, delete predicates) and how answers become tsmeter errors."""

from __future__ import annotations

import inspect
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests import fluxcheck
from tests.hostile import NASTY_NAMES
from tsmeter.adapters.influxdb import flux
from tsmeter.adapters.influxdb.client import PartialWriteError
from tsmeter.adapters.influxdb.lineprotocol import tag_value
from tsmeter.adapters.influxdb.store import InfluxStore
from tsmeter.adapters.influxdb.transport import Transport
from tsmeter.adapters.influxdb.v2 import V2Transport
from tsmeter.adapters.influxdb.v2client import InfluxV2Client, InfluxV2Config
from tsmeter.adapters.sqlite.dedupe import SQLiteDedupe
from tsmeter.domain import RecordRow
from tsmeter.errors import StorageUnavailableError, ValidationError

T = 1_767_225_600_000_000_000


class Stub(ThreadingHTTPServer):
    """Answers every request with the next queued (status, content type, body); records
    (method, path, query, headers, body) of each request."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.answers: list[tuple[int, str, bytes]] = []
        self.requests: list[tuple[str, str, dict[str, list[str]], dict[str, str], bytes]] = []

    @property
    def url(self) -> str:
        """The base URL."""
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: Stub

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        parts = urlsplit(self.path)
        self.server.requests.append(
            (self.command, parts.path, parse_qs(parts.query), dict(self.headers), body)
        )
        status, kind, text = self.server.answers.pop(0) if self.server.answers else (204, "", b"")
        self.send_response(status)
        if kind:
            self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)

    do_GET = do_POST = _answer


@pytest.fixture
def stub() -> Iterator[Stub]:
    """A stand-in server on 127.0.0.1."""
    server = Stub()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def config(stub: Stub, **options: str) -> InfluxV2Config:
    """A configuration for the stand-in (bucket ``b``, org ``o``, token ``t``, no retries)."""
    query = "&".join(f"{k}={v}" for k, v in {"org": "o", "token": "t", "retries": "0",
                                              **options}.items())  # fmt: skip
    return InfluxV2Config.from_url(f"influxdb2://127.0.0.1:{stub.server_address[1]}/b?{query}")


def error(message: str) -> tuple[int, str, bytes]:
    """The JSON body InfluxDB 2.x answers errors with."""
    return 0, "application/json", json.dumps({"code": "invalid", "message": message}).encode()


# -- configuration ------------------------------------------------------------------------------
def test_url_options_and_token_from_the_environment() -> None:
    """Bucket, org, https and the token (URL first, then $TSMETER_INFLUXDB_TOKEN) are read."""
    cfg = InfluxV2Config.from_url(
        "influxdb2://h:9999/my%20bucket?org=acme&https=true&writer=w",
        {"TSMETER_INFLUXDB_TOKEN": "e"},
    )
    assert (cfg.base_url, cfg.bucket, cfg.org, cfg.token, cfg.writer) == (
        "https://h:9999", "my bucket", "acme", "e", "w",
    )  # fmt: skip
    assert InfluxV2Config.from_url("influxdb2://h/b?org=o&token=u", {}).token == "u"
    assert InfluxV2Config.from_url("influxdb2://h/b?org=o", {}).base_url == "http://h:8086"
    bad_urls = [
        ("influxdb2://h/?org=o", "bucket"),
        ("influxdb2://h/b", "organisation"),
        ("influxdb2://h/b?org=o&nope=1", "nope"),
        ("influxdb://h/b", "2.x"),
    ]
    for bad, field in bad_urls:
        with pytest.raises(ValidationError, match=field):
            InfluxV2Config.from_url(bad, {})


# -- writing -------------------------------------------------------------------------------------
def test_write_sends_the_encoders_bytes(stub: Stub) -> None:
    """A write is one POST /api/v2/write with the bytes as given, ns precision, the token."""
    client = InfluxV2Client(config(stub))
    body = b'usage,metric=a\\ b quantity=1.0,rid="x\\"y",tsn=5i 5\n'
    try:
        client.write(body)
    finally:
        client.close()
    ((method, path, query, headers, sent),) = stub.requests
    assert (method, path, sent) == ("POST", "/api/v2/write", body)
    assert (query["bucket"], query["org"], query["precision"]) == (["b"], ["o"], ["ns"])
    assert headers["Authorization"] == "Token t"


@pytest.mark.parametrize(
    ("answer", "kind", "match"),
    [
        ((400, "partial write: field type conflict dropped=3"), PartialWriteError, "dropped=3"),
        ((422, "points beyond retention policy dropped=2"), PartialWriteError, "retention"),
        ((401, "unauthorized access"), StorageUnavailableError, "refused .check the token"),
        ((404, 'bucket "b" not found'), StorageUnavailableError, "influx init"),
        ((413, "request too large"), StorageUnavailableError, "HTTP 413"),
    ],
)
def test_write_errors_are_translated(
    stub: Stub, answer: tuple[int, str], kind: type[Exception], match: str
) -> None:
    """4xx answers become one tsmeter error each, without retries."""
    status, message = answer
    stub.answers = [(status, *error(message)[1:])] * 3
    client = InfluxV2Client(config(stub, retries="2"))
    try:
        with pytest.raises(kind, match=match) as raised:
            client.write(b"m f=1 1\n")
    finally:
        client.close()
    assert len(stub.requests) == 1
    if isinstance(raised.value, PartialWriteError):
        assert raised.value.dropped == int(message.rsplit("=", 1)[1])


def test_server_errors_are_retried(stub: Stub) -> None:
    """5xx answers are retried, then reported with the server's address; a later success
    after a 503 is a success."""
    stub.answers = [(503, *error("unavailable")[1:])] * 2
    client = InfluxV2Client(config(stub, retries="1"))
    try:
        with pytest.raises(StorageUnavailableError, match="failed after 2 attempts"):
            client.write(b"m f=1 1\n")
        stub.answers = [(503, *error("busy")[1:])]
        client.write(b"m f=1 1\n")
    finally:
        client.close()
    assert len(stub.requests) == 4


def test_unreachable_server_is_storage_unavailable() -> None:
    """A closed port is StorageUnavailableError naming the server, after the retries."""
    client = InfluxV2Client(InfluxV2Config.from_url("influxdb2://127.0.0.1:9/b?org=o&retries=1"))
    try:
        with pytest.raises(StorageUnavailableError, match=r"127\.0\.0\.1:9 failed after 2"):
            client.write(b"m f=1 1\n")
    finally:
        client.close()


# -- reading -------------------------------------------------------------------------------------
def _csv(rows: list[dict[str, Any]]) -> bytes:
    """An annotated-CSV answer with one table of string columns (``t`` a long)."""
    columns = list(rows[0])
    kinds = ["long" if c == "t" else "double" if c == "quantity" else "string" for c in columns]

    def quote(value: Any) -> str:
        return '"' + str(value).replace('"', '""') + '"'

    lines = [
        "#datatype,string,long," + ",".join(kinds),
        "#group,false,false," + ",".join("false" for _ in columns),
        "#default,_result,," + ",".join("" for _ in columns),
        ",result,table," + ",".join(columns),
    ]
    lines += [",,0," + ",".join(quote(r[c]) for c in columns) for r in rows]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_queries_bind_values_and_read_nanoseconds_back(stub: Stub) -> None:
    """A query sends its text unchanged and every value as an ``extern`` option (the values
    parse back as themselves in Flux); hostile strings and nanosecond times read back exact."""
    rid, subject = 'id,"1"\n=\\', 'o "x", y=\\ ${z} ' + NASTY_NAMES[7]
    point = {"metric": "m", "subject_type": "org", "subject_id": subject, "w": "w1",
             "quantity": 1.5, "rid": rid, "tsn": T + 7, "t": T + 7}  # fmt: skip
    stub.answers = [(200, "text/csv; charset=utf-8", _csv([point]))]
    store = InfluxStore(V2Transport(config(stub)), SQLiteDedupe(":memory:", "stub"))
    try:
        (found,) = store.transport.stored(
            [RecordRow(rid, "m", "org", subject, None, 1.5, T + 7, None, None)]
        )
    finally:
        store.close()
    assert found[1]["time"] == T + 7 and found[1]["rid"] == rid
    ((_, path, _, _, body),) = stub.requests
    sent = json.loads(body)
    assert path == "/api/v2/query" and "tsm_s0s" in sent["query"]
    options = {
        s["assignment"]["id"]["name"]: s["assignment"]["init"] for s in sent["extern"]["body"]
    }
    assert options["tsm_s0s"] == {"type": "StringLiteral", "value": tag_value(subject)}
    assert options["tsm_lo"] == {"type": "IntegerLiteral", "value": str(T)}  # the microsecond
    assert subject not in sent["query"]
    q = flux.Flux(params={k: v["value"] for k, v in options.items() if k != "tsm_lo" and
                          k != "tsm_hi"})  # fmt: skip
    fluxcheck.assert_valid(q.source() + "\n" + sent["query"].replace("time(v: tsm_lo)", "now()")
                           .replace("time(v: tsm_hi)", "now()"))  # fmt: skip


def test_delete_sends_the_predicate(stub: Stub) -> None:
    """Purging an org-scoped metric is one delete request with both tags quoted, over all
    time; it first counts what it deletes."""
    stub.answers = [(200, "text/csv", _csv([{"_value": "4"}])), (204, "", b"")]
    store = InfluxStore(V2Transport(config(stub)), SQLiteDedupe(":memory:", "stub"))
    try:
        assert store.purge_metric('api "calls"', "acme\\") == 4
    finally:
        store.close()
    (_, path, query, _, body) = stub.requests[-1]
    assert (path, query["bucket"], query["org"]) == ("/api/v2/delete", ["b"], ["o"])
    sent = json.loads(body)
    assert sent["predicate"] == 'metric="api \\"calls\\"" AND org="acme⧵"'
    assert sent["start"].startswith("1970-01-01T00:00:00") and sent["stop"].startswith("2262-01-01")


def test_the_v2_transport_implements_every_read_itself() -> None:
    """The 2.x transport defines every member of the transport interface itself and none of
    its methods speaks InfluxQL (or hands a client to the InfluxQL roll-ups), so no read can
    reach a 2.x server through the v1 code by mistake."""
    members = {n for n in vars(Transport) if not n.startswith("_")}
    members |= set(Transport.__annotations__)
    for name in members:
        assert name in vars(V2Transport) or name in V2Transport.__init__.__code__.co_names, name
    for name, method in inspect.getmembers(V2Transport, inspect.isfunction):
        source = inspect.getsource(method)
        assert "client.query" not in source, name
        assert not ("rollups." in source and "self.client" in source), name
