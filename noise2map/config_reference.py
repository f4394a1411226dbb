"""The configuration reference (``docs/configuration.md``), generated from the schema.

The JSON Schema (``noise2map/config.schema.yaml``) is the one source of a preset's keys, their
types, defaults, allowed values and descriptions; this page is written from it, and a test
checks that the page in ``docs/`` is the one the schema gives.

    python -m noise2map.config_reference docs/configuration.md
"""

from __future__ import annotations

import sys
from pathlib import Path

from noise2map.config import _schema

HEADER = """# Configuration reference

Every key of a preset, generated from `noise2map/config.schema.yaml` (the schema the CLI and
Snakemake validate against; `python -m noise2map.config_reference docs/configuration.md`
rewrites this page). A preset is a YAML file merged over `workflow/config/paper.yaml`; the
paper preset sets every key it needs, and a key with a default here may be left out. Every
level rejects unknown keys.

| key | type | default | description |
|---|---|---|---|
"""


def _resolve(schema: dict, node: dict) -> dict:
    ref = node.get("$ref")
    if ref:
        name = ref.rsplit("/", 1)[-1]
        return {**schema["definitions"][name], **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _type(node: dict) -> str:
    if "enum" in node:
        return " \\| ".join(f"`{v}`" if v is not None else "`null`" for v in node["enum"])
    if "oneOf" in node or "anyOf" in node:
        return " or ".join(_type(n) for n in node.get("oneOf") or node["anyOf"])
    kind = node.get("type", "")
    kinds = kind if isinstance(kind, list) else [kind]
    out = " or ".join(k for k in kinds if k)
    if out == "array" and "items" in node:
        out = f"list of {_type(node['items']) or 'values'}"
    bounds = [f"≥ {node['minimum']}" if "minimum" in node else "", f"> {node['exclusiveMinimum']}"
              if "exclusiveMinimum" in node else "", f"≤ {node['maximum']}" if "maximum" in node else ""]
    return " ".join([out, *(b for b in bounds if b)]).strip()


def _rows(schema: dict, node: dict, prefix: str) -> list[str]:
    rows = []
    for key, sub in node.get("properties", {}).items():
        sub = _resolve(schema, sub)
        name = f"{prefix}{key}"
        default = f"`{sub['default']}`" if "default" in sub else ""
        text = " ".join(str(sub.get("description", "")).split()).replace("|", "\\|").replace("<", "&lt;")
        rows.append(f"| `{name}` | {_type(sub) or 'object'} | {default} | {text} |")
        if sub.get("properties"):
            rows += _rows(schema, sub, f"{name}.")
        elif isinstance(sub.get("additionalProperties"), dict):
            inner = _resolve(schema, sub["additionalProperties"])
            rows += _rows(schema, inner, f"{name}.<name>.") if inner.get("properties") else []
    return rows


def markdown() -> str:
    schema = _schema()
    return HEADER + "\n".join(_rows(schema, schema, "")) + "\n"


def main(argv: list[str] | None = None) -> int:
    target = Path((argv or sys.argv[1:] or ["docs/configuration.md"])[0])
    target.write_text(markdown())
    print(f"{target}: {markdown().count(chr(10)) - HEADER.count(chr(10))} keys")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
