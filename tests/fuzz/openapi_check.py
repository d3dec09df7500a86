"""Does a real response agree with the gateway's OpenAPI description? (status documented,
media type declared, JSON body valid against its schema, documented headers valid)."""
from __future__ import annotations

import json
import re
from typing import Any

import jsonschema

_PARAM = re.compile(r"\{[^}]+\}")


class Spec:
    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document

    def validator(self, schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
        return jsonschema.Draft202012Validator(self.inline(schema),
                                               format_checker=jsonschema.FormatChecker())

    def inline(self, node: Any) -> Any:
        """`node` with every local `$ref` replaced by its target (the description has no cycles)."""
        if isinstance(node, dict):
            if "$ref" in node:
                return self.inline(self._resolve(node))
            return {k: self.inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [self.inline(v) for v in node]
        return node

    def operation(self, method: str, path: str) -> tuple[str, dict[str, Any]]:
        """(template, operation) for a concrete request path (a query string is ignored)."""
        path = path.split("?", 1)[0]
        for template, item in self.document["paths"].items():
            # A file's `{path}` spans segments; every other parameter is one segment.
            pattern = _PARAM.sub("[^/]+", template.replace("{path}", "(.+)"))
            if re.fullmatch(pattern, path) and method.lower() in item:
                return template, item[method.lower()]
        raise AssertionError(f"{method} {path} is not in the OpenAPI description")

    def check(self, method: str, path: str, status: int, headers: dict[str, str],
              body: bytes) -> None:
        template, operation = self.operation(method, path)
        where = f"{method} {template} -> {status}"
        response = operation["responses"].get(str(status))
        assert response is not None, f"{where}: status not documented"
        for name, header in (response.get("headers") or {}).items():
            if name in headers and name.lower() not in ("set-cookie", "link"):
                schema = self._resolve(header)["schema"]
                self.validator(schema).validate(headers[name])
        content = response.get("content")
        if not content:
            return
        media = headers.get("Content-Type", "").split(";")[0].strip()
        declared = content.get(media) or content.get("*/*")
        assert declared is not None, f"{where}: {media!r} is not one of {list(content)}"
        if media == "application/json":
            errors = list(self.validator(declared["schema"]).iter_errors(json.loads(body)))
            assert not errors, f"{where}: {errors[0].message} in {body[:300]!r}"

    def _resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        if "$ref" in node:
            target: Any = self.document
            for part in node["$ref"].lstrip("#/").split("/"):
                target = target[part]
            return target
        return node
