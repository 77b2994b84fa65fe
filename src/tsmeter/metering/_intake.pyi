from typing import Any

def rows_fast(
    items: list[Any],
    start: int,
    out: list[Any],
    valid: set[str],
    metrics: dict[tuple[str, str | None], tuple[str | None, int | None, int]],
    ids: list[str],
    now: int,
    utc: Any,
    max_id: int,
    row_type: type,
    /,
) -> int: ...
def units_column(quantities: list[Any], scale: int, /) -> list[int] | None: ...
