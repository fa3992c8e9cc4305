"""`math` MCP server: exact and numeric math with sympy, parsed (never ``eval``-ed) and bounded.

Three guards keep a hostile or careless expression from hurting the server:

* Syntax: attribute access, dunder names, quotes, lambdas and statements are refused before sympy
  sees the text, and the parser gets a namespace without Python builtins.
* Size: the expression is parsed unevaluated and an upper bound on the number of digits of every
  numeric power/factorial is checked, so ``9^9^9^9`` is refused at once with a clear message.
* Time and memory: the computation runs in a forked child with an address-space limit, killed
  after ``MEMENTO_MATH_TIMEOUT_S`` seconds (default 5), so the server keeps answering.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import pickle
import re
import resource
import select
import signal
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import anyio
from mcp.server.fastmcp import FastMCP

from mcp_servers.config import ServerConfig
from mcp_servers.serving import run_server

mcp = FastMCP("math", instructions="Exact and numeric math with sympy; '^' means power.")

MAX_EXPRESSION_CHARS = 2000
# Results with more digits than this are refused before they are computed.
MAX_DIGITS = 100_000
MAX_RESULT_CHARS = 20_000
_FORBIDDEN = [
    (re.compile(r"__"), "double underscores"),
    (re.compile(r"[A-Za-z_)\]}]\s*\.(?!\d)|\.\s*[A-Za-z_]"), "attribute access ('.')"),
    (re.compile(r"['\"`\\]"), "quotes or backslashes"),
    (
        re.compile(r"\blambda\b|\bimport\b|[;:@!$?{}]|:="),
        "statements, lambdas or unsupported symbols",
    ),
]


class MathError(ValueError):
    """An expression that is refused or cannot be computed; the message says why."""


def timeout_s() -> float:
    """Seconds one computation may take (``MEMENTO_MATH_TIMEOUT_S``)."""
    return ServerConfig.from_env().math_timeout_s


# Left as a process-wide memo on purpose: a read-only view of the installed sympy module's public
# names, a pure function of an import (like the import itself), never changed or cleared, holding
# no client, file or connection. The import is what it saves: `bounded` calls it before forking.
@functools.lru_cache(maxsize=1)
def _sympy_names() -> Mapping[str, Any]:
    import sympy
    import sympy.parsing.sympy_parser  # imported before forking, once

    return MappingProxyType({name: getattr(sympy, name) for name in dir(sympy) if not name.startswith("_")})


def _namespace() -> dict[str, Any]:
    # No builtins: the parser's generated code cannot reach open, exec or __import__.
    return {**_sympy_names(), "__builtins__": {}}


def check_syntax(expression: str) -> str:
    """Refuse what a math expression never needs; returns the text with ``^`` as ``**``.

    Raises:
        MathError: Empty, too long or containing a forbidden construct.

    """
    if not expression or not expression.strip():
        raise MathError("the expression is empty")
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise MathError(f"the expression is {len(expression)} characters, over the {MAX_EXPRESSION_CHARS} limit")
    for pattern, what in _FORBIDDEN:
        if pattern.search(expression):
            raise MathError(f"{what} not allowed in a math expression: {expression!r}")
    return expression.replace("^", "**")


def parse(expression: str, evaluate: bool = True):
    """Parse an expression into a sympy object (``^`` is power, implicit multiplication allowed)."""
    from sympy.parsing.sympy_parser import (
        implicit_multiplication_application,
        parse_expr,
        standard_transformations,
    )

    text = check_syntax(expression)
    transformations = (*standard_transformations, implicit_multiplication_application)
    try:
        return parse_expr(text, transformations=transformations, global_dict=_namespace(), evaluate=evaluate)
    except Exception as exc:  # the tokenizer and sympy raise many types for malformed input
        raise MathError(f"cannot parse {expression!r}: {type(exc).__name__}: {exc}") from exc


def _log10_bound(node) -> float | None:
    """Upper bound on log10(|value| + 1) of a numeric subtree; None when not purely numeric.

    Raises:
        MathError: A subtree whose value would have more than ``MAX_DIGITS`` digits.

    """
    import sympy

    if node.is_Number:
        if node.is_Integer or node.is_Float:
            return math.log10(abs(float(node)) + 1) if abs(node) < 10**300 else len(str(abs(int(node))))
        if node.is_Rational:
            p, q = _log10_bound(sympy.Integer(node.p)), _log10_bound(sympy.Integer(node.q))
            return None if p is None or q is None else max(p, q)  # integers: never None
        return None
    if node.is_NumberSymbol or node is sympy.I:
        return 1.0
    maybe = [_log10_bound(arg) for arg in node.args]
    bounds = [b for b in maybe if b is not None]
    if len(bounds) != len(maybe) or not bounds:
        return None
    bound: float | None = None
    if node.is_Add:
        bound = max(bounds) + math.log10(len(bounds))
    elif node.is_Mul:
        bound = sum(bounds)
    elif node.is_Pow:
        base, exponent = bounds
        # |b^e| <= (|b|+1)^(|e|+1); with e bounded by 10^exponent.
        bound = float("inf") if exponent > 300 else base * (10**exponent + 1)
    elif isinstance(node, sympy.factorial):
        (n,) = bounds
        bound = float("inf") if n > 300 else (10**n) * n
    if bound is not None and bound > MAX_DIGITS:
        raise MathError(
            f"the result of {node} would have more than {MAX_DIGITS} digits; "
            "rewrite it (e.g. use logarithms) or ask for something smaller"
        )
    return bound


def guard(expr) -> None:
    """Refuse expressions whose numeric parts would explode (checked on the unevaluated tree)."""
    import sympy

    for node in sympy.preorder_traversal(expr):
        if isinstance(node, sympy.Basic) and (node.is_Pow or isinstance(node, sympy.factorial)):
            _log10_bound(node)


def _child(write_fd: int, fn: Callable[..., str], args: tuple, memory_mb: int) -> None:
    """Body of the forked child: compute, send the pickled outcome, never return."""
    try:
        resource.setrlimit(resource.RLIMIT_AS, (memory_mb * 1024 * 1024,) * 2)
        try:
            outcome = ("ok", fn(*args))
        except MathError as exc:
            outcome = ("error", str(exc))
        except MemoryError:
            outcome = ("error", f"out of memory (limit {memory_mb} MB)")
        except BaseException as exc:
            outcome = ("error", f"{type(exc).__name__}: {exc}")
        data = pickle.dumps(outcome)
        while data:
            data = data[os.write(write_fd, data) :]
    finally:
        os._exit(0)


def bounded(fn: Callable[..., str], *args: Any) -> str:
    """Run ``fn(*args)`` in a forked child with a time and memory limit.

    A bare ``os.fork`` rather than multiprocessing: multiprocessing's child closes ``sys.stdin``,
    whose lock the stdio transport's reader thread holds, and would hang.

    Raises:
        MathError: The computation failed, ran out of memory or took longer than `timeout_s`.

    """
    _sympy_names()  # children inherit the imported sympy instead of importing it per call
    memory_mb = ServerConfig.from_env().math_memory_mb
    limit = timeout_s()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _child(write_fd, fn, args, memory_mb)
    os.close(write_fd)
    chunks: list[bytes] = []
    deadline = time.monotonic() + limit
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([read_fd], [], [], remaining)[0]:
                raise MathError(f"the computation took longer than {limit:g}s and was stopped")
            chunk = os.read(read_fd, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read_fd)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    if not chunks:
        raise MathError(f"the computation crashed (wait status {status})")
    state, value = pickle.loads(b"".join(chunks))
    if state != "ok":
        raise MathError(value)
    if len(value) > MAX_RESULT_CHARS:
        value = value[:MAX_RESULT_CHARS] + f"... [truncated: {len(value)} characters in all]"
    return value


async def _compute(fn: Callable[..., str], *args: Any) -> str:
    return await anyio.to_thread.run_sync(lambda: bounded(fn, *args))


def _prepare(expression: str):
    guard(parse(expression, evaluate=False))
    return parse(expression)


def _evaluate(expression: str, digits: int) -> str:
    expr = _prepare(expression)
    exact = expr.simplify() if hasattr(expr, "simplify") else expr
    _check_defined(exact, expression)
    try:
        numeric = exact.evalf(digits)
    except Exception:
        numeric = exact
    return f"exact: {exact}\nnumeric: {numeric}"


def _check_defined(value, expression: str) -> None:
    """Refuse undefined or infinite values: sympy's ``zoo``/``nan``/``oo`` read like answers."""
    import sympy

    if not isinstance(value, sympy.Basic):
        return
    if value.has(sympy.nan):
        raise MathError(f"{expression!r} is undefined (an indeterminate form such as 0/0 or oo - oo)")
    if value.has(sympy.zoo):
        raise MathError(f"{expression!r} is undefined (division by zero or a pole, e.g. 1/0 or log(0))")
    if value.has(sympy.oo, -sympy.oo):
        raise MathError(f"{expression!r} is infinite, not a number")


def _symbol(expr, variable: str | None):
    import sympy

    if variable:
        check_syntax(variable)
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", variable):
            raise MathError(f"variable {variable!r} must be a name like x or t1")
        return sympy.Symbol(variable)
    free = sorted(expr.free_symbols, key=str)
    if len(free) != 1:
        raise MathError(
            f"name the variable: the expression has {len(free)} free symbols ({', '.join(map(str, free)) or 'none'})"
        )
    return free[0]


def _solve(equation: str, variable: str | None) -> str:
    import sympy

    sides = equation.split("=")
    if len(sides) > 2 or "==" in equation:
        raise MathError("write one equation as 'lhs = rhs' (or an expression equal to zero)")
    expr = _prepare(sides[0])
    if len(sides) == 2:
        expr = expr - _prepare(sides[1])
    symbol = _symbol(expr, variable)
    return str(sympy.solve(expr, symbol))


def _simplify(expression: str) -> str:
    import sympy

    return str(sympy.simplify(_prepare(expression)))


def _diff(expression: str, variable: str | None, order: int) -> str:
    import sympy

    expr = _prepare(expression)
    return str(sympy.diff(expr, _symbol(expr, variable), order))


def _integrate(expression: str, variable: str | None, lower: str | None, upper: str | None) -> str:
    import sympy

    expr = _prepare(expression)
    symbol = _symbol(expr, variable)
    if (lower is None) != (upper is None):
        raise MathError("give both bounds for a definite integral, or neither")
    if lower is None or upper is None:  # both, as checked above
        return str(sympy.integrate(expr, symbol))
    return str(sympy.integrate(expr, (symbol, _prepare(lower), _prepare(upper))))


@mcp.tool()
async def evaluate(expression: str, digits: int = 15) -> str:
    """Evaluate a math expression exactly and numerically, e.g. ``2^10 + sqrt(2)``.

    Args:
        expression: The expression in sympy/calculator syntax (``^`` means power).
        digits: Significant digits of the numeric value (1-1000).

    """
    if not 1 <= digits <= 1000:
        raise MathError("digits must be between 1 and 1000")
    return await _compute(_evaluate, expression, digits)


@mcp.tool()
async def solve(equation: str, variable: str | None = None) -> str:
    """Solve an equation for a variable, e.g. ``x^2 - 4 = 0``; returns the list of solutions.

    Args:
        equation: ``lhs = rhs``, or an expression meaning ``expression = 0``.
        variable: The unknown; may be omitted when the equation has one free symbol.

    """
    return await _compute(_solve, equation, variable)


@mcp.tool()
async def simplify(expression: str) -> str:
    """Simplify an expression symbolically, e.g. ``sin(x)^2 + cos(x)^2`` gives ``1``.

    Args:
        expression: The expression to simplify.

    """
    return await _compute(_simplify, expression)


@mcp.tool()
async def differentiate(expression: str, variable: str | None = None, order: int = 1) -> str:
    """Differentiate an expression, e.g. ``x^3`` gives ``3*x**2``.

    Args:
        expression: The expression.
        variable: Differentiate with respect to this; may be omitted with one free symbol.
        order: How many times to differentiate (1-10).

    """
    if not 1 <= order <= 10:
        raise MathError("order must be between 1 and 10")
    return await _compute(_diff, expression, variable, order)


@mcp.tool()
async def integrate(
    expression: str, variable: str | None = None, lower: str | None = None, upper: str | None = None
) -> str:
    """Integrate an expression: indefinite, or definite when both bounds are given.

    Args:
        expression: The integrand, e.g. ``x^2``.
        variable: Integration variable; may be omitted with one free symbol.
        lower: Lower bound (an expression, e.g. ``0`` or ``-oo``).
        upper: Upper bound.

    """
    return await _compute(_integrate, expression, variable, lower, upper)


@mcp.tool()
def add(a: float, b: float) -> float:
    """Add two numbers."""
    return a + b


if __name__ == "__main__":
    run_server(mcp)
