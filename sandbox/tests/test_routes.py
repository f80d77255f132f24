"""Route handlers are for the server only: internal work calls operations on a ``Call``."""

from __future__ import annotations

import ast
import inspect
import pkgutil
from importlib import import_module
from typing import TypeGuard

import stripeline_sandbox
from stripeline_sandbox._app import RESOURCES


def _modules() -> dict[str, ast.Module]:
    names = [info.name for info in pkgutil.iter_modules(stripeline_sandbox.__path__)]
    return {
        name: ast.parse(inspect.getsource(import_module(f"stripeline_sandbox.{name}")))
        for name in names
    }


def _endpoint_arguments(tree: ast.Module) -> set[int]:
    return {
        id(argument)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Endpoint"
        for argument in node.args
    }


def test_handlers_appear_only_in_their_route_tables() -> None:
    """No module calls, imports or stores a route handler: other resources call the
    operation behind it (``create_customer_op``, ``confirm_payment_intent_op``, …)."""
    handlers = {endpoint.handler.__name__ for table in RESOURCES for endpoint in table}
    used_elsewhere = []
    for name, tree in _modules().items():
        in_tables = _endpoint_arguments(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and node.id in handlers and id(node) not in in_tables:
                used_elsewhere.append(f"{name}:{node.lineno} {node.id}")
            elif isinstance(node, ast.Attribute) and node.attr in handlers:
                used_elsewhere.append(f"{name}:{node.lineno} {node.attr}")
            elif isinstance(node, ast.alias) and node.name in handlers:
                used_elsewhere.append(f"{name} imports {node.name}")
    assert used_elsewhere == []


def _builds_request(node: ast.AST) -> TypeGuard[ast.Call]:
    """``Request(...)``, or ``Request.something(...)`` (a constructor by another name)."""
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    if isinstance(func, ast.Attribute):
        func = func.value
    return isinstance(func, ast.Name) and func.id == "Request"


def test_only_the_server_builds_a_request() -> None:
    """Work the sandbox does by itself runs on a plain ``Call``, not a made-up ``Request``."""
    builders = sorted(
        f"{name}:{node.lineno}"
        for name, tree in _modules().items()
        for node in ast.walk(tree)
        if _builds_request(node)
    )
    assert [builder.split(":")[0] for builder in builders] == ["_server"], builders
