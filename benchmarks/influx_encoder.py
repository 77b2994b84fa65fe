"""Line-protocol encoding speed: tsmeter's UsageEncoder against influxdb_client's Point.

    .venv/bin/python benchmarks/influx_encoder.py [--rows 1000000] [--point-rows 200000]

Prints lines/s of ``UsageEncoder.encode`` (batches of 10,000 rows, as the flusher sends them)
for ``--rows`` usage rows — 100 subjects, two metrics, 36-character UUID record ids, float
quantities — next to ``Point(...).tag(...).field(...).time(...).to_line_protocol()`` for the
first ``--point-rows`` of the same rows (joined and encoded to bytes, like ours), and the
ratio; then the same with a metadata JSON object on every row. Best of ``--repeat`` runs.

It also checks, on a small sample with awkward names, that both encoders describe the same
points: written into two scratch databases of a local influxd when one is installed (and our
lines must be accepted with 204), otherwise compared by parsing the text. The script always
exits 0: it is a measurement; a failed check is printed as MISMATCH.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import re
import shlex
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tsmeter.adapters.influxdb import speedups
from tsmeter.adapters.influxdb.lineprotocol import UsageEncoder, decode_tag
from tsmeter.domain import RecordRow

START_NS = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
BATCH = 10_000
WRITER = "bench-host-1"


def make_rows(n: int, *, with_metadata: bool, seed: int = 7) -> list[RecordRow]:
    """``n`` realistic rows: 100 subjects, two metrics, UUID ids, quantities in units of
    precision 6 (what intake makes of 1 and of three-place values), 1 ms apart."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        rid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        metric = "api_calls" if i % 3 else "storage_gb"
        quantity = 1_000_000 if metric == "api_calls" else rng.randrange(0, 500_000) * 1000
        metadata = (
            f'{{"region":"eu-west-{i % 3 + 1}","plan":"pro","request_id":"{rid[:8]}",'
            f'"path":"/v1/items/{i % 977}","status":200}}'
            if with_metadata
            else None
        )
        subject, ts = f"org-{i % 100:03d}", START_NS + i * 1_000_000
        rows.append(RecordRow(rid, metric, "org", subject, None, quantity, ts, metadata, None))
    return rows


def encode_ours(rows: Sequence[RecordRow]) -> list[bytes]:
    """UsageEncoder on ``rows`` in batches of 10,000 (a fresh encoder: its cache starts cold)."""
    encoder = UsageEncoder("usage", writer=WRITER)
    return [encoder.encode(rows[i : i + BATCH]) for i in range(0, len(rows), BATCH)]


def encode_point(rows: Sequence[RecordRow]) -> list[bytes]:
    """influxdb_client's Point for the same points, one batch of 10,000 joined lines at a time."""
    from influxdb_client import Point

    out = []
    for i in range(0, len(rows), BATCH):
        lines = []
        for r in rows[i : i + BATCH]:
            p = (
                Point("usage")
                .tag("metric", r.metric_key)
                .tag("subject_type", r.subject_type)
                .tag("subject_id", r.subject_id)
                .tag("w", WRITER)
                .field("units", r.quantity)
                .field("rid", r.id)
                .field("tsn", r.ts)
                .time(r.ts)
            )
            if r.org_id is not None:
                p.tag("org", r.org_id)
            if r.metadata is not None:
                p.field("metadata", r.metadata)
            if r.source is not None:
                p.field("source", r.source)
            lines.append(p.to_line_protocol())
        out.append(("\n".join(lines) + "\n").encode())
    return out


def best_rate(encode: Callable[[Sequence[RecordRow]], list[bytes]], rows: Sequence[RecordRow],
              repeat: int) -> float:  # fmt: skip
    """The best lines/s of ``repeat`` runs."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        encode(rows)
        best = min(best, time.perf_counter() - t0)
    return len(rows) / best


# -- do both encoders describe the same points? ---------------------------------------------

AWKWARD = ["org 1", "org,2", "org=3", 'org "4"', "ørg-5 \U0001f600", "org\u29f56"]


def sample_rows() -> list[RecordRow]:
    """A few hundred rows with awkward (but backslash-free) names, with and without metadata."""
    rows = make_rows(200, with_metadata=False) + make_rows(200, with_metadata=True, seed=8)
    out = []
    for i, r in enumerate(rows):
        subject = AWKWARD[i % len(AWKWARD)] if i % 4 == 0 else r.subject_id
        out.append(r._replace(subject_id=subject, ts=START_NS + i, org_id="acme" if i % 5 else None,
                              source="api gw" if i % 7 == 0 else None))  # fmt: skip
    return out


_TOKEN = re.compile(r'(?:[^\\ ,="]|\\.|"(?:[^"\\]|\\.)*")+|[ ,=]')


def parse_line(line: str, decode: Callable[[str], str]) -> tuple[Any, ...]:
    """Measurement, tags, fields and time of one line (enough of the syntax for the sample);
    ``decode`` maps a stored tag value back to the data (our ⧵ convention, or identity)."""
    tokens = _TOKEN.findall(line)
    spaces = [i for i, t in enumerate(tokens) if t == " "]
    head, fields, stamp = tokens[: spaces[0]], tokens[spaces[0] + 1 : spaces[1]], tokens[-1]

    def unescape(text: str) -> str:
        return re.sub(r"\\([ ,=])", r"\1", text)

    def pairs(parts: list[str]) -> dict[str, str]:
        items = [p for p in parts if p != ","]
        return {unescape(items[i]): items[i + 2] for i in range(0, len(items), 3)}

    def value(text: str) -> object:
        if text.startswith('"'):
            return re.sub(r'\\([\\"])', r"\1", text[1:-1])
        return int(text[:-1]) if text.endswith("i") else float(text)

    tags = {k: decode(unescape(v)) for k, v in pairs(head[2:]).items()}
    values = {k: value(v) for k, v in pairs(fields).items()}
    return unescape(head[0]), sorted(tags.items()), sorted(values.items()), int(stamp)


def check_by_parsing(ours: bytes, theirs: bytes) -> str:
    """Compare the two texts point by point."""
    a = sorted(repr(parse_line(line, decode_tag)) for line in ours.decode().splitlines())
    b = sorted(repr(parse_line(line, str)) for line in theirs.decode().splitlines())
    return "same points (parsed text)" if a == b else "MISMATCH (parsed text)"


def check_with_server(ours: bytes, theirs: bytes) -> str | None:
    """Write both into scratch databases of a local influxd and compare what it stored."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.influx_server import InfluxServer, InfluxServerError, find_influxd

    if find_influxd() is None:
        return None
    try:
        server = InfluxServer().start()
    except InfluxServerError as exc:
        return f"influxd did not start ({exc.reason}); " + check_by_parsing(ours, theirs)
    try:
        stored = []
        for db, body, decode in (("ours", ours, decode_tag), ("point", theirs, str)):
            server.create_database(db)
            answer = server.write(db, body)
            if answer.status_code != 204:
                return f"MISMATCH: influxd answered {answer.status_code} to {db}: {answer.text}"
            points = []
            q = "SELECT * FROM usage WHERE time >= 0 GROUP BY *"
            for series in server.query(q, db=db)["results"][0].get("series", []):
                tags = {k: decode(v) for k, v in series["tags"].items() if v != ""}
                for values in series["values"]:
                    fields = {k: v for k, v in zip(series["columns"], values, strict=True)}
                    points.append(repr((sorted(tags.items()), sorted(fields.items()))))
            stored.append(sorted(points))
        n = len(ours.splitlines())
        if len(stored[0]) != n:
            return f"MISMATCH: influxd stored {len(stored[0])} of our {n} points"
        same = stored[0] == stored[1]
        return (f"influxd accepted all {n} lines (204); " if same else "MISMATCH: ") + (
            "both encoders stored the same points" if same else "the stored points differ"
        )
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--point-rows", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    command = " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
    print("== line-protocol encoding: tsmeter UsageEncoder vs influxdb_client Point ==")
    print(f"command: {command}")
    print(f"tsmeter: {speedups.describe()}")
    print(
        f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs;"
        f" best of {args.repeat}; batches of {BATCH:,} rows"
    )
    try:
        from influxdb_client import __version__ as client_version
    except ImportError:
        client_version = ""
        print("influxdb_client is not installed (pip install -e '.[influxdb]'): Point not timed")
    else:
        print(f"influxdb_client {client_version}")
    print()
    print(f"{'rows':<28}{'encoder':<34}{'rows timed':>12}{'lines/s':>14}{'ratio':>9}")
    for label, with_metadata in (("no metadata", False), ("metadata JSON on every row", True)):
        rows = make_rows(args.rows, with_metadata=with_metadata)
        ours = best_rate(encode_ours, rows, args.repeat)
        print(f"{label:<28}{'UsageEncoder.encode':<34}{len(rows):>12,}{ours:>14,.0f}", end="")
        if not client_version:
            print()
            continue
        timed = rows[: args.point_rows]
        theirs = best_rate(encode_point, timed, args.repeat)
        print(f"{ours / theirs:>8.1f}x")
        print(f"{'':<28}{'Point(...).to_line_protocol()':<34}{len(timed):>12,}"
              f"{theirs:>14,.0f}{1:>8.1f}x")  # fmt: skip
        del rows
    print()
    if client_version:
        sample = sample_rows()
        ours_text, theirs_text = b"".join(encode_ours(sample)), b"".join(encode_point(sample))
        try:
            verdict = check_with_server(ours_text, theirs_text) or (
                "no influxd here; " + check_by_parsing(ours_text, theirs_text)
            )
        except Exception as exc:  # a measurement script reports, it does not crash
            verdict = f"MISMATCH: check failed with {type(exc).__name__}: {exc}"
        print(f"same points check ({len(sample)} rows, awkward names): {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
