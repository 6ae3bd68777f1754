"""A small safe expression language for the configuration files (never ``eval``).

Grammar (usual precedence, ``^`` and ``**`` are right-associative powers, unary minus binds
looser than a power as in mathematics: ``-2^2 = -4``)::

    expr   := term (("+" | "-") term)*
    term   := unary (("*" | "/") unary)*
    unary  := ("+" | "-") unary | power
    power  := atom (("^" | "**") unary)?
    atom   := NUMBER | NAME | NAME "(" expr ("," expr)* ")" | "(" expr ")"

Names are variables given at evaluation time (``rho``, ``T``, ``x``, ``y``, ``t``) or the
constants ``pi`` and ``e``; functions: sin cos tan exp log sqrt abs tanh min max clip.
Values may be Python floats or torch tensors (then the result is a tensor on their device).

>>> parse("0.01372*(5^4)").evaluate()
8.575
>>> parse("rho*T").variables
frozenset({'T', 'rho'})
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Mapping

import torch

_TOKEN = re.compile(r"\s*(?:(?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)|(?P<name>[A-Za-z_][A-Za-z_0-9]*)|(?P<op>\*\*|[-+*/^(),]))")

CONSTANTS = {"pi": math.pi, "e": math.e}


def _fn1(torch_fn, math_fn):
    def apply(x):
        return torch_fn(x) if isinstance(x, torch.Tensor) else math_fn(x)

    return apply


def _elementwise_reduce(torch_op, python_op):
    """min/max over any mix of numbers and tensors (numbers take the dtype/device of the first tensor)."""

    def apply(*args):
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        if not tensors:
            return python_op(args)
        like = dict(dtype=tensors[0].dtype, device=tensors[0].device)
        out = torch.as_tensor(args[0], **like)
        for a in args[1:]:
            out = torch_op(out, torch.as_tensor(a, **like))
        return out

    return apply


_min = _elementwise_reduce(torch.minimum, min)
_max = _elementwise_reduce(torch.maximum, max)


def _clip(x, lo, hi):
    return _min(_max(x, lo), hi)


FUNCTIONS: dict[str, tuple[Any, int | None]] = {
    "sin": (_fn1(torch.sin, math.sin), 1),
    "cos": (_fn1(torch.cos, math.cos), 1),
    "tan": (_fn1(torch.tan, math.tan), 1),
    "exp": (_fn1(torch.exp, math.exp), 1),
    "log": (_fn1(torch.log, math.log), 1),
    "sqrt": (_fn1(torch.sqrt, math.sqrt), 1),
    "abs": (_fn1(torch.abs, abs), 1),
    "tanh": (_fn1(torch.tanh, math.tanh), 1),
    "min": (_min, None),
    "max": (_max, None),
    "clip": (_clip, 3),
}


class ExpressionError(ValueError):
    """The text is not a valid expression (message says where)."""


@dataclass(frozen=True)
class Expression:
    """A parsed expression: ``evaluate(**variables)``; ``variables``: the free names it uses."""

    text: str
    tree: tuple
    variables: frozenset

    def evaluate(self, env: Mapping[str, Any] | None = None, **variables: Any) -> Any:
        values = {**CONSTANTS, **(env or {}), **variables}
        missing = sorted(self.variables - set(values))
        if missing:
            raise ExpressionError(f"unknown name(s) {', '.join(missing)} in '{self.text}'")
        try:
            return _eval(self.tree, values)
        except (ZeroDivisionError, OverflowError, ValueError) as err:
            raise ExpressionError(f"cannot evaluate '{self.text}' ({err})") from None

    def __call__(self, **variables: Any) -> Any:
        return self.evaluate(**variables)

    @property
    def is_constant(self) -> bool:
        return not self.variables


def _eval(node: tuple, env: Mapping[str, Any]) -> Any:
    kind = node[0]
    if kind == "num":
        return node[1]
    if kind == "var":
        return env[node[1]]
    if kind == "neg":
        return -_eval(node[1], env)
    if kind == "bin":
        op, lhs, rhs = node[1], _eval(node[2], env), _eval(node[3], env)
        if op == "+":
            return lhs + rhs
        if op == "-":
            return lhs - rhs
        if op == "*":
            return lhs * rhs
        if op == "/":
            if not isinstance(rhs, torch.Tensor) and rhs == 0:
                raise ZeroDivisionError("division by zero")
            return lhs / rhs
        if isinstance(lhs, torch.Tensor) or isinstance(rhs, torch.Tensor):
            return lhs**rhs
        result = float(lhs) ** float(rhs)
        if isinstance(result, complex):
            raise ValueError("negative number to a fractional power")
        return result
    if kind == "call":
        fn, _ = FUNCTIONS[node[1]]
        return fn(*[_eval(a, env) for a in node[2]])
    raise AssertionError(kind)


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens: list[tuple[str, str, int]] = []
        pos = 0
        stripped = text.rstrip()
        while pos < len(stripped):
            m = _TOKEN.match(stripped, pos)
            if not m or m.end() == pos:
                raise ExpressionError(f"unexpected character '{stripped[pos:].lstrip()[:1]}' at position {pos + 1} in '{text}'")
            kind = m.lastgroup
            self.tokens.append((kind, m.group(kind), m.start(kind)))
            pos = m.end()
        self.i = 0
        self.names: set[str] = set()

    def peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str, int]:
        tok = self.peek()
        if tok is None:
            raise ExpressionError(f"unexpected end of expression '{self.text}'" + (f" (expected '{value}')" if value else ""))
        if value is not None and tok[1] != value:
            raise ExpressionError(f"expected '{value}' at position {tok[2] + 1} in '{self.text}', got '{tok[1]}'")
        self.i += 1
        return tok

    def parse(self) -> Expression:
        if not self.tokens:
            raise ExpressionError("empty expression")
        tree = self.expr()
        if self.peek() is not None:
            tok = self.peek()
            raise ExpressionError(f"unexpected '{tok[1]}' at position {tok[2] + 1} in '{self.text}'")
        return Expression(self.text, tree, frozenset(self.names - set(CONSTANTS)))

    def expr(self) -> tuple:
        node = self.term()
        while (tok := self.peek()) is not None and tok[1] in "+-" and tok[0] == "op":
            self.take()
            node = ("bin", tok[1], node, self.term())
        return node

    def term(self) -> tuple:
        node = self.unary()
        while (tok := self.peek()) is not None and tok[0] == "op" and tok[1] in ("*", "/"):
            self.take()
            node = ("bin", tok[1], node, self.unary())
        return node

    def unary(self) -> tuple:
        tok = self.peek()
        if tok is not None and tok[0] == "op" and tok[1] in ("+", "-"):
            self.take()
            inner = self.unary()
            return ("neg", inner) if tok[1] == "-" else inner
        return self.power()

    def power(self) -> tuple:
        base = self.atom()
        tok = self.peek()
        if tok is not None and tok[0] == "op" and tok[1] in ("^", "**"):
            self.take()
            return ("bin", "^", base, self.unary())
        return base

    def atom(self) -> tuple:
        tok = self.take()
        kind, value, pos = tok
        if kind == "num":
            return ("num", float(value))
        if kind == "name":
            nxt = self.peek()
            if nxt is not None and nxt[1] == "(":
                if value not in FUNCTIONS:
                    raise ExpressionError(f"unknown function '{value}' in '{self.text}' (known: {', '.join(sorted(FUNCTIONS))})")
                self.take("(")
                args = [self.expr()]
                while (p := self.peek()) is not None and p[1] == ",":
                    self.take()
                    args.append(self.expr())
                self.take(")")
                arity = FUNCTIONS[value][1]
                if arity is not None and len(args) != arity:
                    raise ExpressionError(f"{value}() takes {arity} argument(s), got {len(args)} in '{self.text}'")
                return ("call", value, tuple(args))
            if value in FUNCTIONS:
                raise ExpressionError(f"function '{value}' needs arguments in '{self.text}'")
            self.names.add(value)
            return ("var", value)
        if value == "(":
            node = self.expr()
            self.take(")")
            return node
        raise ExpressionError(f"unexpected '{value}' at position {pos + 1} in '{self.text}'")


def parse(text: str) -> Expression:
    """Parse ``text`` into an :class:`Expression`; raises :class:`ExpressionError` with the position."""
    return _Parser(str(text)).parse()


def parse_call(text: str) -> tuple[str, list[Expression]] | None:
    """``name(arg, ...)`` -> (name, parsed args) for boundary keywords such as ``ponctuel(0,1)``; else None."""
    m = re.fullmatch(r"\s*([A-Za-z_]\w*)\s*\((.*)\)\s*", text)
    if not m:
        return None
    inner = m.group(2).strip()
    if not inner:
        return m.group(1), []
    # split on top-level commas
    depth, parts, cur = 0, [], ""
    for ch in inner:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return m.group(1), [parse(p) for p in parts]
