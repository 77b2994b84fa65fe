"""Hypothesis strategies for hostile names, metadata and records (what the domain lets through).

Names are 1–256 characters of any Unicode except control characters (``\\x00-\\x1f``,
``\\x7f-\\x9f``) and lone surrogates, built from random text mixed with the pieces that break
line-protocol encoders: separators, quotes, backslashes in every risky position, ``⧵``
(U+29F5, the encoder's own substitute for risky backslashes), emoji and other non-BMP text.
"""

from __future__ import annotations

import math

from hypothesis import strategies as st

from tsmeter.domain import RecordRow
from tsmeter.domain.validation import check_metadata, check_name

CONTROL = "".join(chr(c) for c in (*range(0x00, 0x20), *range(0x7F, 0xA0)))

PIECES = (
    ",", " ", "=", '"', "'", "\\", "\\\\", "\\,", "\\ ", "\\=", '\\"', ",\\", " \\", "=\\",
    "\u29f5", "\u29f5\u29f5", "\\\u29f5", "\u29f5\\", "#", "\u00a0", "\u2028", "\ufeff",
    "\U0001f600", "\U0001f468\u200d\U0001f469\u200d\U0001f467", "\U0001d518", "\U0010fffd",
    "é", "e\u0301", "\u202e", "\uffff", "{", "}", "[", "\\n", "\\u0000", "time",
)  # fmt: skip

NASTY_NAMES = (
    "\\", "\\\\", "\\\\\\", " ", ",", "=", '"', "\u29f5", "\u29f5\\", "\\\u29f5", "a\\",
    "a\\,b", "a\\ b", "a\\=b", "a\\\\,b", "a\\\\ ", "\u29f5\u29f5\\\\", '\\"', '"\\',
    " leading", "trailing ", "#hash", "x" * 256, "\U0001f600" * 256, "\\" * 256,
)  # fmt: skip

_letters = st.characters(codec="utf-8", exclude_characters=CONTROL)
_chunk = st.one_of(st.text(_letters, min_size=1, max_size=6), st.sampled_from(PIECES))


def _fit(text: str) -> str:
    return check_name("name", text[:256])


names = st.one_of(
    st.lists(_chunk, min_size=1, max_size=12).map("".join).map(_fit),
    st.sampled_from(NASTY_NAMES),
    st.text(_letters, min_size=1, max_size=256),
)

_json_text = st.one_of(names, st.text(st.characters(codec="utf-8"), max_size=20))
_json_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63),
    st.floats(allow_nan=False, allow_infinity=False),
    _json_text,
)
_json_value = st.recursive(
    _json_scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(_json_text, inner, max_size=4)
    ),
    max_leaves=12,
)

metadata = st.dictionaries(_json_text, _json_value, max_size=6).map(
    lambda value: check_metadata("metadata", value)
)
"""Metadata as the domain stores it: compact JSON text, or None when empty."""

quantities = st.floats(allow_nan=False, allow_infinity=False)
"""Every finite double: subnormals, ``-0.0``, the largest and the smallest."""


@st.composite
def record_rows(draw: st.DrawFn, count: int, start_ns: int) -> list[RecordRow]:
    """``count`` rows with hostile names, ids, metadata and sources at distinct times."""
    return [
        RecordRow(
            draw(names),
            draw(names),
            draw(names),
            draw(names),
            draw(st.none() | names),
            draw(quantities),
            start_ns + i,
            draw(st.none() | metadata),
            draw(st.none() | names),
        )
        for i in range(count)
    ]


def same_float(a: float, b: float) -> bool:
    """Equal as doubles, including the sign of zero."""
    return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
