"""The fast schema check in chargepoint/protocol/ocppj.py may only ever *accept* what
jsonschema accepts.

`validate_payload` first runs a predicate compiled from each official OCPP 1.6 schema and
skips jsonschema when it says "valid". A predicate that accepted something jsonschema
rejects would let a malformed payload through, so hypothesis generates payloads shaped by
each schema (right and wrong types, missing and extra properties, enum values and near
misses, long strings, empty and full arrays) and checks the predicate against jsonschema,
strict and lenient.
"""
from __future__ import annotations

import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chargepoint.protocol import ocppj

SCHEMAS = sorted(name for name in os.listdir(ocppj.SCHEMA_DIR) if name.endswith(".json"))

junk = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                 max_size=3),
    max_leaves=6)


def shaped(schema: dict, root: dict, depth: int = 0):
    """Values near `schema`: mostly of the right shape, sometimes subtly or plainly wrong."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return shaped(root["definitions"][name], root, depth + 1)
    kinds = schema.get("type", [])
    kinds = [kinds] if isinstance(kinds, str) else kinds
    options = [junk]
    if "enum" in schema:
        options.append(st.sampled_from(schema["enum"]))
        options.append(st.sampled_from([e.lower() for e in schema["enum"]]))
    if "string" in kinds:
        limit = schema.get("maxLength", 50)
        options.append(st.text(max_size=limit + 2))
    if "integer" in kinds or "number" in kinds:
        options.append(st.integers(-5, 10**6))
        options.append(st.floats(-10, 1e6, allow_nan=False))
    if "boolean" in kinds:
        options.append(st.booleans())
    if "array" in kinds and depth < 6:
        item = schema.get("items", {})
        options.append(st.lists(shaped(item, root, depth + 1), max_size=3))
    if "object" in kinds and depth < 6:
        props = schema.get("properties", {})
        required = schema.get("required", [])
        fixed = {name: shaped(sub, root, depth + 1) for name, sub in props.items()}
        options.append(st.fixed_dictionaries(
            {k: v for k, v in fixed.items() if k in required},
            optional={**{k: v for k, v in fixed.items() if k not in required},
                      "vendorExtra": junk}))
        if required:
            options.append(st.fixed_dictionaries(
                {k: v for k, v in fixed.items() if k in required[1:]}))
    return st.one_of(*options)


def load(name: str) -> tuple[int, str, dict]:
    with open(os.path.join(ocppj.SCHEMA_DIR, name), encoding="utf-8") as f:
        schema = json.load(f)
    action = name[:-len(".json")]
    if action.endswith("Response"):
        return ocppj.CALLRESULT, action.removesuffix("Response"), schema
    return ocppj.CALL, action, schema


@pytest.mark.parametrize("name", SCHEMAS)
def test_the_fast_check_never_accepts_what_jsonschema_rejects(name):
    message_type, action, schema = load(name)
    if (message_type, action) in ocppj._DECIMAL_SCHEMAS:
        pytest.skip("decimal schemas always go through jsonschema")
    validator = ocppj.get_validator(message_type, action)
    check = ocppj._compile(validator.schema, validator.schema)
    if check is None:
        pytest.skip("no fast check for this schema: jsonschema alone decides")

    @settings(max_examples=60, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @given(payload=shaped(schema, schema), strict=st.booleans())
    def agree(payload, strict):
        errors = list(validator.iter_errors(payload))
        if not strict:
            errors = [e for e in errors if e.validator != "additionalProperties"]
        if check(payload, strict):
            assert not errors, (payload, [e.message for e in errors])

    agree()
