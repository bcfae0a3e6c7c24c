"""Payload codecs: JSON by default, pickle only when chosen explicitly.

A codec turns the job's call (args and kwargs) and its result into bytes and back. JSON is the
default because a worker that unpickles untrusted bytes runs whatever they say.
"""

from __future__ import annotations

import json
import pickle
from typing import Any, Protocol


class Serializer(Protocol):
    name: str

    def dumps(self, obj: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


# allow_nan=False: NaN is not JSON and other consumers (admin, other languages) reject it.
# One encoder for every call: ``json.dumps`` with options builds a new one each time.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class JSONSerializer:
    name = "json"

    def dumps(self, obj: Any) -> bytes:
        return _ENCODER.encode(obj).encode()

    def loads(self, data: bytes) -> Any:
        return json.loads(data)


class PickleSerializer:
    name = "pickle"

    def dumps(self, obj: Any) -> bytes:
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)

    def loads(self, data: bytes) -> Any:
        return pickle.loads(data)


SERIALIZERS: dict[str, Serializer] = {"json": JSONSerializer(), "pickle": PickleSerializer()}


def get_serializer(name: str) -> Serializer:
    try:
        return SERIALIZERS[name]
    except KeyError:
        raise ValueError(
            f"unknown serializer {name!r}; choose one of {', '.join(sorted(SERIALIZERS))}"
        ) from None


def check_serializable(serializer: Serializer, args: tuple[Any, ...], kwargs: dict[str, Any],
                       names: list[str] | None = None) -> bytes:
    """Encode a call, or raise ``TypeError`` naming the argument that cannot be encoded."""
    try:
        return serializer.dumps([list(args), kwargs])
    except (TypeError, ValueError, pickle.PicklingError, AttributeError, RecursionError):
        pass
    for i, value in enumerate(args):
        label = names[i] if names and i < len(names) else f"#{i}"
        _check_one(serializer, f"positional argument {label}", value)
    for key, value in kwargs.items():
        if not isinstance(key, str):
            raise TypeError(f"keyword argument names must be strings, got {key!r}")
        _check_one(serializer, f"argument {key!r}", value)
    # Every piece encodes alone but the whole does not (should not happen); say so plainly.
    raise TypeError(f"the job's arguments cannot be encoded with the {serializer.name} serializer")


def _check_one(serializer: Serializer, label: str, value: Any) -> None:
    try:
        serializer.dumps(value)
    except (TypeError, ValueError, pickle.PicklingError, AttributeError, RecursionError) as exc:
        hint = (
            " Pass plain data (ids, strings, numbers, lists, dicts) and load objects in the job."
            if serializer.name == "json"
            else ""
        )
        raise TypeError(
            f"{label} of type {type(value).__name__} cannot be encoded with the "
            f"{serializer.name} serializer: {exc}.{hint}"
        ) from exc
