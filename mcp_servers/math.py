"""`math` MCP server: exact and numeric evaluation with sympy (parsing, never `eval`)."""

from __future__ import annotations

from mcp.server.fastmcp import FastMCP

from mcp_servers.serving import run_server

mcp = FastMCP("math")


def _parse(expression: str):
    from sympy.parsing.sympy_parser import (
        implicit_multiplication_application,
        parse_expr,
        standard_transformations,
    )

    if len(expression) > 2000:
        raise ValueError("expression longer than 2000 characters")
    transformations = (*standard_transformations, implicit_multiplication_application)
    # parse_expr builds a sympy tree from tokens; with an empty global namespace it cannot reach
    # Python builtins, unlike eval.
    return parse_expr(expression.replace("^", "**"), transformations=transformations, global_dict=_namespace())


def _namespace() -> dict:
    import sympy

    allowed = {name: getattr(sympy, name) for name in dir(sympy) if not name.startswith("_")}
    allowed["__builtins__"] = {}
    return allowed


@mcp.tool()
def evaluate(expression: str, digits: int = 15) -> str:
    """Evaluate a math expression exactly and numerically, e.g. ``2^10 + sqrt(2)``.

    Args:
        expression: The expression in sympy/calculator syntax (``^`` means power).
        digits: Significant digits of the numeric value.
    """
    expr = _parse(expression)
    exact = expr.simplify() if hasattr(expr, "simplify") else expr
    try:
        numeric = exact.evalf(digits)
    except Exception:
        numeric = exact
    return f"exact: {exact}\nnumeric: {numeric}"


@mcp.tool()
def add(a: float, b: float) -> float:
    """Add two numbers."""
    return a + b


if __name__ == "__main__":
    run_server(mcp)
