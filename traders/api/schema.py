"""OpenAPI schema generation for the REST API [issue 7 #6].

drf-spectacular documents only the success response of each operation. A client (and the
schemathesis fuzz in ``tests/traders/test_api_fuzz.py``) must also know the errors: this
``AutoSchema`` adds them to every operation, with the bodies the exception handler
(``quantweb.api.exception_handler``) really sends:

* 400 ``ValidationError``: ``{"field": ["message", ...], ...}`` or ``{"detail": ...}``, on every
  operation that takes a body or query parameters;
* 401 / 403 ``Error``: ``{"detail": "..."}`` (not logged in; not allowed, with the reason);
* 404 ``Error``: on operations with a path parameter.

Set as ``REST_FRAMEWORK["DEFAULT_SCHEMA_CLASS"]`` so every app's views get it; the traders API
views also name it explicitly (``schema = AutoSchema()``).
"""

from __future__ import annotations

from drf_spectacular import openapi
from drf_spectacular.plumbing import ResolvedComponent

ERROR_SCHEMA = {
    "type": "object",
    "description": "An error with its reason.",
    "properties": {"detail": {"type": "string"}},
    "required": ["detail"],
}
VALIDATION_ERROR_SCHEMA = {
    "type": "object",
    "description": "Field errors: each bad field (or query parameter) maps to its messages; errors that "
                   "belong to no single field are under 'detail' or 'non_field_errors'.",
    "additionalProperties": {
        "oneOf": [
            {"type": "array", "items": {"type": "string"}},
            {"type": "string"},
            {"type": "object"},
        ],
    },
}
ERRORS = {
    "400": ("ValidationError", VALIDATION_ERROR_SCHEMA, "Bad input: field errors with messages."),
    "401": ("Error", ERROR_SCHEMA, "Not logged in (session or token required)."),
    "403": ("Error", ERROR_SCHEMA, "Logged in but not allowed; the message says why."),
    "404": ("Error", ERROR_SCHEMA, "No such object."),
}


class AutoSchema(openapi.AutoSchema):
    """drf-spectacular's AutoSchema plus the error responses every operation can return."""

    def get_override_parameters(self) -> list:
        """A list endpoint's ``filter_class`` (traders.api.filters) documents its query parameters."""
        params = list(super().get_override_parameters())
        filter_class = getattr(self.view, "filter_class", None)
        if filter_class is not None and self.method == "GET" and getattr(self.view, "action", None) == "list":
            params.append(filter_class)
        return params

    def _error_codes(self) -> list[str]:
        codes = ["401", "403"]
        takes_input = self.method in ("POST", "PUT", "PATCH") or any(
            p.get("in") == "query" for p in self._get_parameters())
        if takes_input:
            codes.insert(0, "400")
        if "{" in self.path:
            codes.append("404")
        return codes

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        if direction != "response":
            return responses
        for code in self._error_codes():
            if code in responses:
                continue
            name, schema, description = ERRORS[code]
            component = ResolvedComponent(name=name, type=ResolvedComponent.SCHEMA, schema=schema, object=name)
            self.registry.register_on_missing(component)
            responses[code] = {"content": {"application/json": {"schema": component.ref}}, "description": description}
        return responses
