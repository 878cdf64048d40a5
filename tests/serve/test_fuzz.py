"""Property-based fuzzing of the API from its own OpenAPI schema (schemathesis): no input,
valid or invalid, may produce a server error (5xx), and every response must have a documented
status code and match the documented schema.

POST /products (cold start writes to the model folder) and POST /admin/reload (reloads the
model: slow) are left out: test_app.py and test_store.py cover them. Any Host is accepted here
(schemathesis sends its own); the Host check has its own tests.
Schemathesis' own pytest plugin is not used (it does not run under
this pytest); each operation's strategy is driven by Hypothesis directly.
"""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance  # noqa: E402

from dualrec.serve.app import create_app  # noqa: E402

from .conftest import write_model  # noqa: E402

OPERATIONS = [
    ("GET", "/products/{product_id}/related"),
    ("GET", "/products/{product_id}/incoming"),
    ("GET", "/products/{product_id}"),
    ("POST", "/related"),
    ("GET", "/search"),
    ("GET", "/health"),
]
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory):
    model = write_model(tmp_path_factory.mktemp("fuzz") / "m", n=120)
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(model, allowed_hosts=["*"]))


def test_every_fuzzed_operation_is_in_the_schema(api_schema):
    ops = {(m.upper(), p) for p, item in api_schema.raw_schema["paths"].items() for m in item}
    assert set(OPERATIONS) == ops - {("POST", "/products"), ("POST", "/admin/reload")}


def _fuzz(operation, **kwargs):
    @given(case=operation.as_strategy(**kwargs))
    @settings(max_examples=30, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def run(case):
        case.call_and_validate(checks=CHECKS)

    run()


@pytest.mark.parametrize("method,path", OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_valid_requests_never_fail(api_schema, method, path):
    _fuzz(api_schema[path][method], generation_mode=GenerationMode.POSITIVE)


@pytest.mark.parametrize("path", [p for _, p in OPERATIONS if "{product_id}" in p])
def test_valid_requests_for_a_known_product_never_fail(api_schema, path):
    # random ids are (almost) all unknown -> 404; pin a real one so the 200 path is fuzzed too
    _fuzz(api_schema[path]["GET"], generation_mode=GenerationMode.POSITIVE, path_parameters={"product_id": "P0000007"})


# operations with constraints to violate (k, limit, q, the JSON body)
NEGATIVE = [
    ("GET", "/products/{product_id}/related"),
    ("GET", "/products/{product_id}/incoming"),
    ("POST", "/related"),
    ("GET", "/search"),
]


@pytest.mark.parametrize("method,path", NEGATIVE, ids=[f"{m} {p}" for m, p in NEGATIVE])
def test_invalid_requests_are_rejected_not_crashing(api_schema, method, path):
    _fuzz(api_schema[path][method], generation_mode=GenerationMode.NEGATIVE)
