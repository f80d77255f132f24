"""Stripe's form encoding: ``a[b][0][c]=v`` keys into nested dicts and lists."""

from __future__ import annotations

import base64
import re
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any
from urllib.parse import parse_qsl, urlencode

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


def multipart(content_type: str, body: bytes) -> dict[str, Any]:
    """Decode a ``multipart/form-data`` body (the SDK's file uploads).

    Text parts become values under their (form-encoded) names; a part with a
    filename becomes ``{"filename", "content_type", "size", "data"}`` with the
    content base64 in ``data``.
    """
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
    message = BytesParser(policy=HTTP).parsebytes(head + body)
    fields: list[tuple[str, str]] = []
    files: dict[str, Any] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        content = part.get_payload(decode=True) or b""
        if not isinstance(content, bytes):  # pragma: no cover - decode=True gives bytes
            content = str(content).encode()
        filename = part.get_filename()
        if filename is None:
            fields.append((name, content.decode("utf-8")))
        else:
            files[name] = {
                "filename": filename,
                "content_type": part.get_content_type(),
                "size": len(content),
                "data": base64.b64encode(content).decode("ascii"),
            }
    decoded = decode(urlencode(fields))
    decoded.update(files)
    return decoded
