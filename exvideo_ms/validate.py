"""Range checks for options, shared by generation settings and training options: each error names the
option and the value it got."""
from __future__ import annotations

import math
import numbers
from typing import Optional


class OptionError(ValueError):
    """An option outside its range (the message names it)."""


def integer(name: str, value, minimum: Optional[int] = None, maximum: Optional[int] = None,
            error=OptionError) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise error(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise error(f"{name} must be an integer >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise error(f"{name} must be an integer <= {maximum}, got {value}")
    return value


def number(name: str, value, minimum: Optional[float] = None, above: Optional[float] = None,
           maximum: Optional[float] = None, below: Optional[float] = None, error=OptionError) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise error(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise error(f"{name} must be a finite number, got {value}")
    if minimum is not None and value < minimum:
        raise error(f"{name} must be >= {minimum}, got {value}")
    if above is not None and value <= above:
        raise error(f"{name} must be > {above}, got {value}")
    if maximum is not None and value > maximum:
        raise error(f"{name} must be <= {maximum}, got {value}")
    if below is not None and value >= below:
        raise error(f"{name} must be < {below}, got {value}")
    return value
