"""JSON Schema of recipes, built from the components the installed plugins register."""

from __future__ import annotations

from typing import Any

from sslhub.catalog import Catalog
from sslhub.recipe import RecipeModel


def _component_variants(
    catalog: Catalog, kind: str, key: str, definitions: dict[str, Any], extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    variants = []
    for component in catalog.registry(kind):
        schema = component.params.model_json_schema()
        properties = {key: {"const": component.name}, **(extra or {}), **schema.get("properties", {})}
        variant = {
            "type": "object",
            "title": f"{kind} {component.name}",
            "properties": properties,
            "required": [key, *schema.get("required", [])],
            "additionalProperties": False,
        }
        if component.description:
            variant["description"] = component.description
        # pydantic's references point at the document root (#/$defs/X), so definitions live there.
        definitions.update(schema.get("$defs", {}))
        variants.append(variant)
    return {"anyOf": variants} if variants else {"type": "object"}


def recipe_json_schema(catalog: Catalog) -> dict[str, Any]:
    """The recipe schema with ``data``, ``augment``, ``encoder`` and ``objectives`` expanded per component."""
    schema = RecipeModel.model_json_schema()
    properties = schema["properties"]
    definitions = schema.setdefault("$defs", {})
    properties["data"] = _component_variants(catalog, "modality", "modality", definitions)
    properties["augment"] = {
        "type": "array",
        "items": _component_variants(catalog, "augmentation", "name", definitions),
    }
    encoder = _component_variants(catalog, "encoder", "name", definitions)
    properties["encoder"] = {"anyOf": [encoder, {"type": "null"}]}
    properties["encoders"] = {"anyOf": [{"type": "object", "additionalProperties": encoder}, {"type": "null"}]}
    engine_keys = {
        "weight": {"type": "number", "minimum": 0},
        "start_step": {"type": "integer", "minimum": 0},
        "encoder": {"type": ["string", "null"]},
    }
    properties["objectives"] = {
        "type": "array",
        "minItems": 1,
        "items": _component_variants(catalog, "objective", "name", definitions, engine_keys),
    }
    schema["title"] = "sslhub recipe"
    return schema
