"""JSON Schema of the whole spec language, for editors' YAML language servers.

The top level comes from :class:`SpecModel`; each typed section becomes a
``oneOf`` over the registered types of its kinds, discriminated by ``type``.
"""

from __future__ import annotations

import json
from typing import Any

from compose_gen.registry import COMPONENT_KINDS, Catalogue, ComponentType
from compose_gen.registry.types import COMPONENT_PLACEHOLDER
from compose_gen.spec.model import EXTENSION_PREFIX, SpecModel
from compose_gen.spec.resolve import IDENTIFIER, LOG_RECORD_KEYS, TAKEN_BY_TORCH, origin

__all__ = ["spec_schema"]

_SECTIONS = {
    "Component": COMPONENT_KINDS,
    "Dataset": ("dataset",),
    "Loss": ("loss",),
    "Sampler": ("sampler",),
    "Metric": ("metric",),
}


def spec_schema(catalogue: Catalogue, left_out: list[str] | None = None) -> dict[str, Any]:
    """A draft 2020-12 JSON Schema describing every spec ``catalogue`` can validate.

    A type whose parameter model has no JSON Schema is named (with its plugin and why)
    in ``left_out`` and left out of the schema; without a ``left_out`` list, a
    ``ValueError`` names every such type.
    """
    schema = SpecModel.model_json_schema()
    defs = schema.setdefault("$defs", {})
    failures = []
    for section, kinds in _SECTIONS.items():
        variants = []
        for component_type in sorted(catalogue.of_kind(*kinds), key=lambda t: t.name):
            name = f"{section}_{component_type.name}"
            try:
                defs[name] = _type_schema(component_type, defs)
            except Exception as error:  # e.g. a field of a type pydantic cannot describe
                failures.append(f"{origin(component_type.name, catalogue)}: {type(error).__name__}: {str(error).splitlines()[0]}")
                continue
            variants.append({"$ref": f"#/$defs/{name}"})
        defs[section] = {"oneOf": variants} if variants else {"type": "object"}
    if failures and left_out is not None:
        left_out.extend(f"{failure} (annotate such a field with pydantic's WithJsonSchema)" for failure in failures)
    elif failures:
        raise ValueError(
            "no JSON Schema for the parameters of " + "; ".join(failures)
            + " (annotate such a field with pydantic's WithJsonSchema, or uninstall the plugin)"
        )
    props = schema["properties"]
    props["data"] = {"$ref": "#/$defs/Dataset"}
    # the names validate accepts: identifiers, and for what the model holds in a ModuleDict, none of that class's own;
    # a loss, none of the training log's own keys either
    held = {"pattern": IDENTIFIER.pattern, "not": {"enum": sorted(TAKEN_BY_TORCH)}}
    logged = {"pattern": IDENTIFIER.pattern, "not": {"enum": sorted({*TAKEN_BY_TORCH, *LOG_RECORD_KEYS})}}
    props["components"] = {"type": "object", "propertyNames": held, "additionalProperties": {"$ref": "#/$defs/Component"}}
    props["losses"] = {"type": "object", "propertyNames": logged, "additionalProperties": {"$ref": "#/$defs/Loss"}}
    props["graph"]["propertyNames"] = {"pattern": IDENTIFIER.pattern}
    props["sample"] = {"anyOf": [{"$ref": "#/$defs/Sampler"}, {"type": "null"}]}
    by_name = sorted(t.name for t in catalogue.of_kind("metric") if not any(f.is_required() for f in t.params.model_fields.values()))
    metrics = defs["EvaluateSpec"]["properties"]["metrics"]
    metrics["items"] = {"anyOf": [{"$ref": "#/$defs/Metric"}, {"enum": by_name}]}
    schema["patternProperties"] = {f"^{EXTENSION_PREFIX}": {}}  # a block of anchors of the writer's own
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "compose_gen spec"
    return schema


def _type_schema(component_type: ComponentType, defs: dict[str, Any]) -> dict[str, Any]:
    own = component_type.params.model_json_schema()
    prefix = f"{component_type.name}__"
    placeholder = json.dumps({COMPONENT_PLACEHOLDER: True})
    text = json.dumps(own).replace('"#/$defs/', f'"#/$defs/{prefix}').replace(placeholder, '{"$ref": "#/$defs/Component"}')
    own = json.loads(text)
    for name, definition in own.pop("$defs", {}).items():
        defs[prefix + name] = definition
    own.setdefault("properties", {})["type"] = {"const": component_type.name, "description": component_type.doc}
    own["required"] = ["type", *own.get("required", [])]
    own["title"] = component_type.name
    own["description"] = component_type.doc
    own["additionalProperties"] = False
    return own
