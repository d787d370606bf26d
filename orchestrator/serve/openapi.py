"""GET /openapi.json: the API described by hand (OpenAPI 3.1), next to the routes it describes (app.py)."""

from __future__ import annotations

from typing import Any

from .. import __version__

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "hint"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "hint": {"type": ["string", "null"]},
            },
        }
    },
}
_SCHOOL = {
    "type": "object",
    "description": "The report's per-school object (docs/report.md).",
    "required": ["id", "database", "server", "status", "ok", "version_before", "version_after", "notes", "error"],
    "properties": {
        "id": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "database": {"type": "string"},
        "server": {"type": "string", "description": "host:port"},
        "status": {"type": "string", "description": "docs/statuses.md"},
        "ok": {"type": "boolean"},
        "version_before": {"type": ["integer", "null"]},
        "version_after": {"type": ["integer", "null"]},
        "applied": {"type": "array", "items": {"type": "integer"}},
        "pending": {"type": "array", "items": {"type": "integer"}},
        "notes": {"type": "array", "items": {"type": "string"}},
        "created_database": {"type": "boolean"},
        "error": {"oneOf": [{"type": "null"}, {"type": "object"}]},
    },
}
_NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}
_FLEET = {
    "type": "object",
    "required": ["surveyed_at", "age_s", "latest_version", "histogram", "servers", "schools", "onboardings"],
    "properties": {
        "surveyed_at": {"type": "string", "format": "date-time"},
        "age_s": {"type": "number"},
        "latest_version": {"type": ["integer", "null"]},
        "histogram": {"type": "array", "items": {"type": "object", "properties": {
            "version": {"type": ["integer", "null"]}, "schools": {"type": "integer"}}}},
        "servers": {"type": "array", "items": {"type": "object", "properties": {
            "server": {"type": "string"}, "healthy": {"type": "boolean"}, "last_answer_at": _NULLABLE_TIME,
            "spares_ready": {"type": "integer"}, "template": {"type": ["string", "null"]},
            "error": {"type": ["string", "null"]}}}},
        "schools": {"type": "array", "items": {"type": "object", "properties": {
            "tenant": {"type": "string"}, "server": {"type": "string"}, "status": {"type": "string"},
            "ok": {"type": "boolean"}, "version": {"type": ["integer", "null"]}, "pending": {"type": "integer"},
            "message": {"type": ["string", "null"]}, "hint": {"type": ["string", "null"]}}}},
        "onboardings": {"type": "array", "items": {"type": "object", "properties": {
            "tenant": {"type": "string"}, "at": {"type": "string", "format": "date-time"},
            "status": {"type": "string"}, "path": {"enum": ["spare", "template", "files", "existing"]},
            "ms": {"type": "number"}}}},
    },
}  # fmt: skip


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_.-]{0,62}$"},
}
_REFUSED = _json(_ERROR, "Refused, nothing done")


def openapi() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "orchestrator provisioning service",
            "version": __version__,
            "description": "Onboard schools (create the database from a spare, the template or the files, apply "
            "every migration, idempotently) and read the fleet's state. /v1 needs `Authorization: Bearer <token>`.",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": _ERROR, "School": _SCHOOL, "Fleet": _FLEET},
        },
        "paths": {
            "/v1/schools/{id}": {
                "put": {
                    "summary": "Onboard a school (what `orchestrator provision` does), idempotently",
                    "security": [{"bearer": []}],
                    "parameters": [_ID],
                    "requestBody": {"required": False, "content": {"application/json": {"schema": {
                        "type": "object", "properties": {"url": {"type": "string"}}, "additionalProperties": False,
                    }}}},
                    "responses": {
                        "200": _json(_SCHOOL, "The school is at the latest migration (applied or up_to_date)"),
                        "400": _REFUSED, "401": _REFUSED, "404": _REFUSED, "413": _REFUSED, "422": _REFUSED,
                        "409": _json(_SCHOOL, "dirty, modified, locked or missing (or an error object: the files "
                                     "differ from what the fleet or the template holds)"),
                        "503": _json(_SCHOOL, "unreachable or pooled (or an error object: the files were refused)"),
                        "500": _json(_SCHOOL, "failed"),
                    },
                },
                "get": {
                    "summary": "The school's live status",
                    "security": [{"bearer": []}],
                    "parameters": [_ID],
                    "responses": {"200": _json(_SCHOOL, "Its status"), "401": _REFUSED, "404": _REFUSED},
                },
            },
            "/v1/fleet": {
                "get": {
                    "summary": "The version histogram and every school's status, from a survey no older than "
                    "--survey-every",
                    "security": [{"bearer": []}],
                    "parameters": [{"name": "refresh", "in": "query", "required": False,
                                    "schema": {"enum": ["1", "true"]}}],
                    "responses": {"200": _json(_FLEET, "The fleet"), "401": _REFUSED},
                }
            },
            "/healthz": {"get": {"summary": "The process is up", "responses": {"200": {"description": "up"}}}},
            "/readyz": {"get": {"summary": "Files and registry loaded, every server answered recently",
                                "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text"}}}},
            "/": {"get": {"summary": "The operators' dashboard", "responses": {"200": {"description": "HTML"}}}},
        },
    }  # fmt: skip
