"""Checks on values before they reach the database, with messages that name the problem.

Every repo function validates all of its arguments first, so a bad value raises
:class:`InvalidValue` (a ``ValueError``) before anything is written: no partial rows, and
no backend-specific IntegrityError text for the caller to decode.

JSON is normalised to plain types (numpy scalars, tuples, paths), because the JSON columns
must read back the same on PostgreSQL and SQLite. JSON has no NaN or infinity (PostgreSQL's
jsonb refuses them): a request (``strict``) with one is refused; a diagnostic payload
(figures, eval, metrics) stores ``null`` instead, like ``embedding.validation`` does, so a
check that measured a NaN can still record its (failed) result.
"""

from __future__ import annotations

import math
import numbers
import uuid
from collections.abc import Iterable, Mapping
from pathlib import PurePath
from typing import Any


class InvalidValue(ValueError):
    """An argument that may not be stored (unknown status, negative epoch, NaN loss, ...)."""


class NotFound(LookupError):
    """The job or run named does not exist."""


def as_uuid(value: uuid.UUID | str, what: str) -> uuid.UUID:
    """A UUID from a UUID or its string form (task payloads carry strings)."""
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            pass
    raise InvalidValue(f"{what} must be a UUID, got {value!r}")


def choice(value: object, allowed: Iterable[str], what: str) -> str:
    allowed = tuple(allowed)
    if not isinstance(value, str) or value not in allowed:
        raise InvalidValue(f"unknown {what} {value!r}: expected one of {', '.join(allowed)}")
    return value


def text(value: object, what: str, max_len: int | None = None) -> str:
    """A non-blank string of at most ``max_len`` characters."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidValue(f"{what} must be a non-empty string, got {value!r}")
    if max_len is not None and len(value) > max_len:
        raise InvalidValue(f"{what} is {len(value)} characters long; at most {max_len}")
    return value


def lookup_key(value: object, max_len: int) -> str | None:
    """``value`` as a key to look a row up by, or None when no row can have it (not a
    string, blank, too long, or holding a NUL or a lone surrogate, which the database would
    refuse with an error): the caller answers "no such row", never a server error."""
    if not isinstance(value, str) or not value.strip() or len(value) > max_len or "\x00" in value:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return value


def optional_text(value: object, what: str, max_len: int | None = None) -> str | None:
    return None if value is None else text(value, what, max_len)


def integer(value: object, what: str, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidValue(f"{what} must be an integer, got {value!r}")
    result = int(value)
    if minimum is not None and result < minimum:
        raise InvalidValue(f"{what} must be >= {minimum}, got {result}")
    return result


def number(value: object, what: str, minimum: float | None = None) -> float:
    """A finite real number (NaN and infinity refused), optionally ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidValue(f"{what} must be a number, got {value!r}")
    result = float(value)
    if not math.isfinite(result):
        raise InvalidValue(f"{what} must be finite, got {result}")
    if minimum is not None and result < minimum:
        raise InvalidValue(f"{what} must be >= {minimum}, got {result}")
    return result


def optional_number(value: object, what: str, minimum: float | None = None) -> float | None:
    return None if value is None else number(value, what, minimum)


def plain_json(value: Any, what: str, strict: bool) -> Any:
    """``value`` as plain JSON types; non-finite floats refused (``strict``) or ``None``."""
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        result = float(value)
        if math.isfinite(result):
            return result
        if strict:
            raise InvalidValue(f"{what} is {result}: JSON holds finite numbers only")
        return None
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str | int) or isinstance(key, bool):
                raise InvalidValue(f"{what}: key {key!r} is not a string")
            out[str(key)] = plain_json(item, f"{what}[{key!r}]", strict)
        return out
    if isinstance(value, list | tuple):
        return [plain_json(item, f"{what}[{i}]", strict) for i, item in enumerate(value)]
    if isinstance(value, PurePath):
        return str(value)
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return plain_json(value.tolist(), what, strict)
    raise InvalidValue(f"{what}: a {type(value).__name__} is not a JSON value")


def json_object(value: Any, what: str, strict: bool) -> dict[str, Any]:
    """A JSON object (a dict), normalised by :func:`plain_json`."""
    if not isinstance(value, Mapping):
        raise InvalidValue(f"{what} must be a JSON object (dict), got {type(value).__name__}")
    return plain_json(value, what, strict)
