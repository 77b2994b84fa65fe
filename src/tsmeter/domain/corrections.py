"""Corrections of stored usage records: a cancel or an amend, by record id, with who, when
and why.

A correction is identified by its own id, so applying it again changes nothing: by default
the id is derived from what it does (:func:`correction_id`: the record id, the kind and, for
an amend, the new quantity), so a retried call is a no-op. Stores keep it as a
:class:`CorrectionRow` (units and ns, as records are kept); the Meter returns a
:class:`Correction`.

>>> correction_id("req-42", CorrectionKind.CANCEL) == correction_id("req-42", "CANCEL")
True
>>> correction_id("req-42", "AMEND", "2.50") == correction_id("req-42", "AMEND", "2.5")
True
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import NamedTuple

from tsmeter.domain.models import Model
from tsmeter.domain.validation import _CONTROL, check_name
from tsmeter.errors import ValidationError

__all__ = [
    "MAX_REASON_LENGTH",
    "Correction",
    "CorrectionKind",
    "CorrectionRequest",
    "CorrectionRow",
    "check_actor",
    "check_reason",
    "correction_id",
]

#: the longest reason kept with a correction
MAX_REASON_LENGTH = 1024


class CorrectionKind(StrEnum):
    """What a correction does to its record."""

    #: the record no longer counts; its id stays known (recording it again counts nothing)
    CANCEL = "CANCEL"
    #: the record's quantity is replaced (its subject, time and properties stay)
    AMEND = "AMEND"


class CorrectionRequest(NamedTuple):
    """A correction as the service hands it to a store: ``units`` is the new quantity in
    units of the record's metric (0 for a cancel), ``at`` when it is made (ns)."""

    id: str
    record_id: str
    kind: CorrectionKind
    units: int
    actor: str
    reason: str
    at: int


class CorrectionRow(NamedTuple):
    """A correction as stores keep it (the audit row): quantities in units of the record's
    metric (``units_after`` 0 for a cancel), times in ns, the record's series and time."""

    id: str
    record_id: str
    kind: CorrectionKind
    units_before: int
    units_after: int
    actor: str
    reason: str
    corrected_at: int
    metric_key: str
    subject_type: str
    subject_id: str
    org_id: str | None
    record_ts: int


class Correction(Model):
    """A cancel or an amend of one stored record, as applied (the audit trail's entry).

    ``quantity_after`` is 0 for a cancel (the record no longer counts at all: neither its
    quantity nor its place in a count). ``applied`` is False when this correction id had
    been applied before, and this call changed nothing.
    """

    id: str
    record_id: str
    kind: CorrectionKind
    quantity_before: Decimal
    quantity_after: Decimal
    actor: str
    reason: str
    corrected_at: datetime
    metric_key: str
    subject_type: str
    subject_id: str
    org_id: str | None = None
    record_timestamp: datetime
    applied: bool = True


def check_reason(value: object) -> str:
    """``value`` if it is a reason a correction can keep: 1 to MAX_REASON_LENGTH characters
    without control characters (ValidationError naming ``reason`` else).

    >>> check_reason("duplicate import of 2026-11-03, ticket #4411")
    'duplicate import of 2026-11-03, ticket #4411'
    """
    if not isinstance(value, str):
        raise ValidationError("reason", f"must be a string, got {type(value).__name__}")
    if not value.strip():
        raise ValidationError("reason", "must not be empty: say why the record is corrected")
    if len(value) > MAX_REASON_LENGTH:
        raise ValidationError("reason", f"must be at most {MAX_REASON_LENGTH} characters")
    bad = _CONTROL.search(value)
    if bad:
        raise ValidationError(
            "reason", f"must not contain control characters (found {bad.group()!r})"
        )
    return value


def check_actor(value: object) -> str:
    """``value`` if it names who corrects (a name: 1 to 256 characters, no control
    characters); ValidationError naming ``actor`` else."""
    return check_name("actor", value)


def correction_id(record_id: str, kind: CorrectionKind | str, quantity: str | Decimal = "") -> str:
    """The id a correction gets when the caller gives none: derived from the record id, the
    kind and (for an amend) the new quantity, normalised (``2.50`` and ``2.5`` are one), so
    that retrying a call is a no-op. Amending back to a quantity used before under the
    derived id is therefore a retry of that earlier amend: give an explicit id to do it."""
    kind = CorrectionKind(kind)
    amount = ""
    if kind is CorrectionKind.AMEND:
        number = Decimal(quantity).normalize()
        amount = format(number, "f") if number else "0"
    digest = hashlib.sha256(f"{kind.value}\n{record_id}\n{amount}".encode()).hexdigest()
    return f"corr-{digest[:32]}"
