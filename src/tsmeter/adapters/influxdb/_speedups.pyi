from typing import Any

def series_spans(rows: list[Any], span: int, /) -> set[tuple[str, str | None, int]]: ...
def span_bounds(rows: list[Any], span: int, /) -> dict[int, tuple[int, int]] | None: ...
def place_fast(
    rows: list[Any],
    start: int,
    first: dict[int, Any],
    more: set[Any],
    times: list[int],
    overflow: list[int],
    /,
) -> int: ...
def encode_usage(
    rows: list[Any],
    times: list[int] | None,
    overflow: list[int] | None,
    prefixes: dict[Any, str],
    slow: Any,
    /,
) -> bytes: ...
