"""A JSON parser with limits: a body too large or nested too deep is a 400, never a 500.

Python's json module recurses once per nesting level, so a 100k-deep ``[[[...`` raises
RecursionError inside DRF's parser, which is not a ParseError. The depth is checked on the raw
text first (one linear scan, strings skipped), then the size, then json parses.
"""

from __future__ import annotations

import json

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

MAX_DEPTH = 64
MAX_BYTES = 1_000_000


def json_depth_exceeds(text: str, limit: int) -> bool:
    """True when arrays/objects nest deeper than ``limit`` (brackets inside strings ignored)."""
    depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


class BoundedJSONParser(JSONParser):
    """DRF's JSONParser with a size limit (``QUANTWEB_API_MAX_JSON_BYTES``) and a nesting limit
    (``QUANTWEB_API_MAX_JSON_DEPTH``)."""

    def parse(self, stream, media_type=None, parser_context=None):
        parser_context = parser_context or {}
        encoding = parser_context.get("encoding", settings.DEFAULT_CHARSET)
        max_bytes = getattr(settings, "QUANTWEB_API_MAX_JSON_BYTES", MAX_BYTES)
        max_depth = getattr(settings, "QUANTWEB_API_MAX_JSON_DEPTH", MAX_DEPTH)
        raw = stream.read(max_bytes + 1) if stream is not None else b""
        if len(raw) > max_bytes:
            raise ParseError(f"JSON body too large (limit {max_bytes} bytes).")
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError as exc:
            raise ParseError("JSON body is not valid text.") from exc
        if json_depth_exceeds(text, max_depth):
            raise ParseError(f"JSON nested too deeply (limit {max_depth} levels).")
        try:
            return json.loads(text, parse_constant=_refuse_constant)
        except (ValueError, RecursionError) as exc:
            raise ParseError(f"JSON parse error - {exc}") from None


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")
