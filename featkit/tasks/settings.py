"""Task settings are declared once, as frozen dataclasses, and unknown ones are errors.

Each task module declares a ``Settings`` dataclass whose field defaults are the task's defaults
(the CLI reads its option defaults from there, suites and the Python API build it with
:func:`settings_from`). ``__post_init__`` checks values, so a bad value is a one-line error
whichever way it came in.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, dataclass, fields
from typing import Any, TypeVar

from featkit.errors import FeatkitError, closest

T = TypeVar("T")


@dataclass(frozen=True)
class ClassifierSettings:
    """What every classification probe takes besides its own knobs: the device, and the label
    space (``merge`` several datasets into one; a ``label_map`` file merging classes of one)."""

    device: str | None = None
    merge: bool = False
    label_map: str | None = None

    def label_space_fields(self) -> dict[str, Any]:
        """The record's settings for these fields (``device`` None recorded as ``"auto"``)."""
        return {"label_map": self.label_map, "merge": self.merge,
                "device": self.device or "auto"}


def settings_from(cls: type[T], values: Mapping[str, Any] | None = None, *, task: str) -> T:
    """``cls(**values)``, with an unknown key a one-line error that lists the known ones.

    A field whose type is itself a settings dataclass (``ci: Interval | None``, a layer probe's
    ``linear: linear.Settings``) takes a table of its fields (a suite's ``ci = {level = 0.95}``),
    built the same way; any other value for it is a one-line error."""
    values = dict(values or {})
    known = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    for key in values:
        if key not in known:
            raise FeatkitError(f"{task}: unknown setting '{key}'{closest(key, known)} "
                               f"(settings: {', '.join(known)})")
    for key, nested in _nested_settings(cls).items():
        value = values.get(key)
        if value is None or isinstance(value, nested):
            continue
        if not isinstance(value, Mapping):
            names = ", ".join(f.name for f in fields(nested))
            raise FeatkitError(f"{task}: setting '{key}' takes a table of {nested.__name__} "
                               f"settings ({names}), got {value!r}")
        values[key] = settings_from(nested, value, task=f"{task}.{key}")
    return cls(**values)


def _nested_settings(cls: type) -> dict[str, type]:
    """The fields of ``cls`` typed as a dataclass (or that or None) -> that dataclass."""
    import dataclasses
    import types
    import typing

    nested = {}
    for name, hint in typing.get_type_hints(cls).items():
        options = typing.get_args(hint) if isinstance(hint, types.UnionType) or \
            typing.get_origin(hint) is typing.Union else (hint,)
        classes = [o for o in options if isinstance(o, type) and dataclasses.is_dataclass(o)]
        if len(classes) == 1:
            nested[name] = classes[0]
    return nested


def default_of(cls: type, name: str) -> Any:
    """The declared default of one settings field (for the CLI's option defaults)."""
    for f in fields(cls):
        if f.name == name:
            if f.default is not MISSING:
                return f.default
            if f.default_factory is not MISSING:
                return f.default_factory()
            raise KeyError(f"{cls.__name__}.{name} has no default")
    raise KeyError(f"{cls.__name__} has no field {name!r}")


def check_choice(task: str, option: str, value: Any, choices: Iterable[Any]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise FeatkitError(f"{task}: {option} must be one of {', '.join(map(str, choices))}, "
                           f"got {value!r}")


def check_positive(task: str, option: str, value: float, *, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, float)) and math.isfinite(value) and (
        value >= 0 if allow_zero else value > 0)
    if not ok:
        rule = "non-negative" if allow_zero else "positive"
        raise FeatkitError(f"{task}: {option} must be a {rule} finite number, got {value!r}")


def check_device(task: str, device: str | None) -> None:
    """``None``/``"auto"`` or a device torch has here (see :func:`featkit._device.resolve_device`)."""
    if device is None:
        return
    from featkit._device import resolve_device

    try:
        resolve_device(device)
    except FeatkitError as err:
        raise FeatkitError(f"{task}: {err}") from None


def check_positive_int(task: str, option: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise FeatkitError(f"{task}: {option} must be a positive integer, got {value!r}")


def check_grid(task: str, option: str, values: Iterable[float] | None) -> None:
    if values is None:
        return
    values = list(values)
    if not values:
        raise FeatkitError(f"{task}: {option} names no value")
    for v in values:
        check_positive(task, option, v)
