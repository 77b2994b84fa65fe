from typing import Any

def sqlite_version() -> str | None: ...
def open(path: str, /) -> object | str: ...
def close(writer: object, /) -> None: ...
def add(
    writer: object,
    rows: list[Any],
    numbers: dict[Any, int],
    target: int,
    near: int,
    clustered: int,
    cap: int,
    /,
) -> bool | list[tuple[str, str, str, str | None]] | str: ...
