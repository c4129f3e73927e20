"""FastAPI's OpenAPI 3.1 document, rewritten as OpenAPI 3.0 for the bundled Swagger UI.

The ``swagger-ui-bundle`` package ships Swagger UI 4, which refuses a 3.1 document ("Unable
to render this definition"). The schemas FastAPI writes use few 3.1-only forms; each has a
3.0 spelling that says the same thing:

=====================================================  ======================================
3.1                                                    3.0
=====================================================  ======================================
``anyOf: [X, {type: null}]`` (an optional field)       ``X`` with ``nullable: true``
``type: [X, "null"]``                                  ``type: X, nullable: true``
``contentMediaType: application/octet-stream`` (file)  ``format: binary`` (an upload button)
``const: V``                                           ``enum: [V]``
``examples: [V, ...]`` (in a schema)                   ``example: V``
numeric ``exclusiveMinimum: N``                        ``minimum: N, exclusiveMinimum: true``
=====================================================  ======================================

``/openapi.json`` stays 3.1 (the document of record); ``/openapi-3.0.json`` is this one.
"""

from __future__ import annotations

import copy
from typing import Any

VERSION = "3.0.3"
_NAME_MAPS = ("properties", "patternProperties", "schemas", "$defs", "paths", "responses",
              "parameters", "requestBodies", "headers", "securitySchemes", "content",
              "examples", "links", "callbacks", "encoding")


def downgrade(document: dict[str, Any]) -> dict[str, Any]:
    """A 3.0 copy of the 3.1 ``document`` (the input is not changed)."""
    out = _walk(copy.deepcopy(document))
    out["openapi"] = VERSION
    out.pop("webhooks", None)
    out.pop("jsonSchemaDialect", None)
    return out


def _walk(node: Any, names: bool = False) -> Any:
    """``names``: ``node`` maps names to values (a schema's properties, the components'
    schemas, the paths), so it is never a schema itself, whatever its keys are."""
    if isinstance(node, list):
        return [_walk(x) for x in node]
    if not isinstance(node, dict):
        return node
    node = {k: _walk(v, names=not names and k in _NAME_MAPS) for k, v in node.items()}
    if not names and _is_schema(node):
        node = _schema(node)
    return node


def _is_schema(node: dict[str, Any]) -> bool:
    return any(k in node for k in ("type", "anyOf", "oneOf", "const", "contentMediaType",
                                   "exclusiveMinimum", "exclusiveMaximum", "$ref", "title"))


def _schema(s: dict[str, Any]) -> dict[str, Any]:
    for key in ("anyOf", "oneOf"):
        if isinstance(s.get(key), list):
            s = _drop_null_member(s, key)
    if isinstance(s.get("type"), list):
        types = [t for t in s["type"] if t != "null"]
        if len(types) < len(s["type"]):
            s["nullable"] = True
        s["type"] = types[0] if len(types) == 1 else s["type"]
        if isinstance(s["type"], list):  # several real types: 3.0 has no spelling for it
            del s["type"]
    if s.get("type") == "null":
        s.pop("type")
        s["nullable"] = True
    if "contentMediaType" in s:
        s.pop("contentMediaType")
        s.pop("contentEncoding", None)
        s.setdefault("format", "binary")
    if "const" in s:
        s["enum"] = [s.pop("const")]
    if isinstance(s.get("examples"), list) and "$ref" not in s:
        examples = s.pop("examples")
        if examples:
            s["example"] = examples[0]
    for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(s.get(bound), (int, float)) and not isinstance(s[bound], bool):
            s[plain] = s[bound]
            s[bound] = True
    if "$ref" in s and len(s) > 1:  # 3.0 ignores siblings of $ref: wrap it
        ref = s.pop("$ref")
        s["allOf"] = [{"$ref": ref}]
    return s


def _drop_null_member(s: dict[str, Any], key: str) -> dict[str, Any]:
    members = s[key]
    # a member {type: null}, already rewritten as {nullable: true} (children go first)
    rest = [m for m in members if not (isinstance(m, dict) and (
        m.get("type") == "null" or m == {"nullable": True}))]
    if len(rest) == len(members):
        return s
    s["nullable"] = True
    if len(rest) == 1 and isinstance(rest[0], dict):
        del s[key]
        only = rest[0]
        if "$ref" in only:
            s["allOf"] = [only]
        else:
            for k, v in only.items():
                s.setdefault(k, v)
    else:
        s[key] = rest
    return s
