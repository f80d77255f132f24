"""Stripe's form encoding: ``a[b][0][c]=v`` keys into nested dicts and lists."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

_KEY = re.compile(r"([^\[\]]+)|\[([^\[\]]*)\]")


def _split(key: str) -> list[str]:
    parts = [m.group(1) if m.group(1) is not None else m.group(2) for m in _KEY.finditer(key)]
    return parts or [key]


def _listify(node: Any) -> Any:
    if isinstance(node, dict):
        for name, value in node.items():
            node[name] = _listify(value)
        if node and all(k.isdigit() for k in node):
            return [node[k] for k in sorted(node, key=int)]
        if "" in node and len(node) == 1:  # `expand[]=a` style
            value = node[""]
            return value if isinstance(value, list) else [value]
    return node


def decode(body: str) -> dict[str, Any]:
    """Decode a query string or form body into nested values.

    ``items[0][price]=p`` gives ``{"items": [{"price": "p"}]}``; ``expand[]=x``
    repeated gives a list. Values stay strings: handlers coerce them.
    """
    root: dict[str, Any] = {}
    for key, value in parse_qsl(body, keep_blank_values=True):
        parts = _split(key)
        node = root
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            if part == "" and not last:
                part = str(len(node))
            if last:
                if part == "":
                    node.setdefault("", [])
                    if isinstance(node[""], list):
                        node[""].append(value)
                else:
                    node[part] = value
            else:
                child = node.get(part)
                if not isinstance(child, dict):
                    child = {}
                    node[part] = child
                node = child
    result: dict[str, Any] = _listify(root)
    return result
