"""Parameter checks of the algorithms (DeepInsight, its t-SNE, integrated gradients), as
scikit-learn declares them: each parameter's allowed values once, as a list of
`sklearn.utils._param_validation` constraints (`Interval`, `StrOptions`, None, a type), checked
when the estimator fits or the function runs. The error names the caller, the parameter, what it
allows and what it got: `DeepInsightTransformer: layout must be one of ['fitted', 'shuffled'],
got 'random'`. The algorithms carry their own literal defaults and constraints, never the
workflow's config; tests/test_defaults.py holds both equal to the config schema."""

from __future__ import annotations

import functools
import inspect
from numbers import Integral, Real

from sklearn.utils._param_validation import (
    Interval,
    InvalidParameterError,
    StrOptions,
    make_constraint,
)


def check_params(constraints: dict, params: dict, caller: str) -> None:
    """Raise `InvalidParameterError` (a `ValueError`) for the first parameter whose value
    satisfies none of its constraints.

    Args:
        constraints: parameter name -> list of allowed values, in scikit-learn's
            `_parameter_constraints` form (`[Interval(Integral, 2, None, closed="left"), None]`).
        params: parameter name -> value; a name without constraints is not checked, and a
            constrained name missing from `params` is skipped.
        caller: the estimator or function, named first in the message.
    """
    for name, allowed in constraints.items():
        if name not in params:
            continue
        value = params[name]
        if not any(make_constraint(c).is_satisfied_by(value) for c in allowed):
            raise InvalidParameterError(
                f"{caller}: {name} must be {describe(allowed)}, got {value!r}"
            )


def validate_params(constraints: dict):
    """Decorator: check a function's arguments (defaults included) against `constraints` on
    every call, as `sklearn.utils._param_validation.validate_params` does, with
    `check_params`' messages; the constraints stay readable as `func._parameter_constraints`."""

    def decorate(func):
        signature = inspect.signature(func)

        @functools.wraps(func)
        def checked(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            check_params(constraints, bound.arguments, func.__name__)
            return func(*args, **kwargs)

        checked._parameter_constraints = constraints
        return checked

    return decorate


def describe(allowed: list) -> str:
    """A list of constraints in words: `at least 250 (an integer)`, `'auto' or above 0`."""
    return " or ".join(_describe_one(make_constraint(c)) for c in allowed)


def _describe_one(constraint) -> str:
    if isinstance(constraint, StrOptions):
        options = sorted(constraint.options)
        return repr(options[0]) if len(options) == 1 else f"one of {options}"
    if isinstance(constraint, Interval):
        return _describe_interval(constraint)
    if getattr(constraint, "type", None) is Integral:
        return "an integer"
    if getattr(constraint, "type", None) is Real:
        return "a number"
    return str(constraint)  # None, other types, scikit-learn's named constraints


def _describe_interval(interval: Interval) -> str:
    left, right = interval.left, interval.right
    closed_left = interval.closed in ("left", "both")
    closed_right = interval.closed in ("right", "both")
    if left is not None and right is not None:
        bounds = f"in {'[' if closed_left else '('}{left}, {right}{']' if closed_right else ')'}"
    elif left is not None:
        bounds = f"at least {left}" if closed_left else f"above {left}"
    elif right is not None:
        bounds = f"at most {right}" if closed_right else f"below {right}"
    else:
        return "an integer" if interval.type is Integral else "a number"
    return f"{bounds} (an integer)" if interval.type is Integral else bounds
