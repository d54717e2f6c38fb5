"""A form generated from a JSON Schema (a DAG's configuration model), with per-field error messages.

Handles what DAG configurations use: text, numbers, booleans, choices (`enum`), lists of
text (chips) and optional fields (`anyOf` with null). Anything else is edited as JSON.
Validation is the DAG's own (pydantic, on submit); its messages are put on the fields.
"""

from __future__ import annotations

import json
from typing import Any

from nicegui import ui


def _resolve(schema: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        return definitions.get(schema["$ref"].split("/")[-1], {})
    options = [o for o in schema.get("anyOf", []) if o.get("type") != "null"]
    if len(options) == 1:
        return {**schema, **_resolve(options[0], definitions)}
    if "allOf" in schema and len(schema["allOf"]) == 1:
        return {**schema, **_resolve(schema["allOf"][0], definitions)}
    return schema


class SchemaForm:
    """Inputs for each property of `schema`; `values()` gives the configuration, `show_errors()` marks fields."""

    def __init__(self, schema: dict[str, Any], values: dict[str, Any] | None = None) -> None:
        self.schema = schema
        self.fields: dict[str, tuple[Any, str]] = {}
        definitions = schema.get("$defs", {})
        values = values or {}
        required = set(schema.get("required", []))
        properties = schema.get("properties", {})
        with ui.column().classes("w-full gap-2").mark("config-form"):
            if not properties:
                ui.label("This DAG needs no configuration.").classes("text-grey-7")
            for name, raw in properties.items():
                prop = _resolve(raw, definitions)
                label = prop.get("title") or name
                if name in required:
                    label += " *"
                value = values.get(name, prop.get("default"))
                element, kind = self._field(prop, label, value)
                if prop.get("description"):
                    element.tooltip(prop["description"])
                element.mark(f"conf-{name}")
                self.fields[name] = (element, kind)

    @staticmethod
    def _field(prop: dict[str, Any], label: str, value: Any) -> tuple[Any, str]:
        kind = prop.get("type")
        if "enum" in prop:
            return ui.select(list(prop["enum"]), label=label, value=value).classes("w-96"), "enum"
        if kind == "boolean":
            return ui.switch(label, value=bool(value)), "boolean"
        if kind in ("integer", "number"):
            number = ui.number(label, value=value, min=prop.get("minimum"), max=prop.get("maximum"),
                               step=1 if kind == "integer" else None, format="%d" if kind == "integer" else None).classes("w-96")
            return number, kind
        if kind == "array" and _resolve(prop.get("items", {}), {}).get("type", "string") == "string":
            return ui.input_chips(label, value=list(value or [])).classes("w-96"), "chips"
        if kind == "string":
            return ui.input(label, value=value if value is not None else "").classes("w-96"), "string"
        return ui.textarea(label, value=json.dumps(value) if value is not None else "").classes("w-96"), "json"

    def values(self) -> dict[str, Any]:
        """The configuration as entered; empty fields are left out (the DAG's defaults apply)."""
        out: dict[str, Any] = {}
        for name, (element, kind) in self.fields.items():
            element.error = None
            value = element.value
            if kind == "string" and value == "":
                continue
            if kind in ("integer", "number"):
                if value is None:
                    continue
                value = int(value) if kind == "integer" and float(value).is_integer() else value
            if kind == "json":
                if not str(value).strip():
                    continue
                try:
                    value = json.loads(value)
                except ValueError:
                    pass  # the DAG's validation says what is wrong with it
            if kind == "enum" and value is None:
                continue
            if kind == "chips" and not value:
                continue
            out[name] = value
        return out

    def show_errors(self, errors: list[dict[str, Any]]) -> list[str]:
        """Put pydantic's messages on their fields; returns the messages that belong to no field."""
        unplaced = []
        for error in errors:
            location = [str(p) for p in error.get("loc", ())]
            field = self.fields.get(location[0]) if location else None
            if field is None:
                unplaced.append(f"{'.'.join(location) or 'configuration'}: {error.get('msg')}")
            else:
                field[0].error = str(error.get("msg"))
        return unplaced
