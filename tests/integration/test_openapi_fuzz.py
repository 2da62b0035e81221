"""The running service against its own OpenAPI document, fuzzed by schemathesis (issue 24).

Schemathesis reads /openapi.json from a real nsprov on the test control plane and sends
what the document allows and what it refuses, in all four of its phases (the document's
examples, boundary coverage, random fuzzing, and stateful chains that create a namespace
and then get, extend and delete it through the document's links). Every check runs: no
5xx, every status and content type and body as declared, schema-violating requests
refused, schema-valid ones accepted, a deleted namespace not served as live. The one
narrowing is fuzz_checks.py's: a few answers the contract gives by design (a ttl outside
its configured bounds, a namespace being deleted still shown), each named there.

Bounded and repeatable: a fixed seed, one worker, at most MAX_EXAMPLES cases per
operation and phase, and a cap on the owner's namespaces so the stateful phase cannot
create without bound; every namespace it made is deleted at the end.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from kubernetes import client

from nsprov.api import openapi
from tests.integration.conftest import (
    SELECTOR,
    Cluster,
    delete_namespaces,
    live_managed_namespaces,
)
from tests.integration.service import RunningService, problem, running_service

pytestmark = pytest.mark.usefixtures("grants", "clean_namespaces")

# NSPROV_FUZZ_EXAMPLES and NSPROV_FUZZ_SEED make a longer or another run (the default's
# fuzzing takes 5 to 30 s here, about 500 cases; 200 examples about 2,800 cases in 40 s).
SEED = int(os.environ.get("NSPROV_FUZZ_SEED", "24"))
MAX_EXAMPLES = int(os.environ.get("NSPROV_FUZZ_EXAMPLES", "25"))
NAMESPACE_CAP = 10
"""--max-namespaces-per-owner: what the stateful phase may hold at once (then 429s)."""


@pytest.fixture(scope="module")
def service(cluster: Cluster, grants: None, tmp_path_factory) -> Iterator[RunningService]:
    workdir = tmp_path_factory.mktemp("nsprov-fuzz")
    args = [f"--max-namespaces-per-owner={NAMESPACE_CAP}", "--max-ttl=24h"]
    with running_service(cluster.kubeconfig, workdir, args) as running:
        yield running


def _fuzz(service: RunningService, workdir: Path) -> subprocess.CompletedProcess[str]:
    argv = [
        sys.executable, "-m", "schemathesis.cli", "run", f"{service.url}/openapi.json",
        "--checks=all",
        # Replaced by fuzz_checks' *_by_contract, which `all` includes (it says why).
        "--exclude-checks=positive_data_acceptance,use_after_free",
        f"--max-examples={MAX_EXAMPLES}",
        f"--seed={SEED}",
        "--generation-database=none",
        # One at a time: a 2-core machine, and InFlightLimit's 503 is not what is tested.
        "--workers=1",
        "--request-timeout=30",
        "--header", f"Authorization: Bearer {service.tokens['alice']}",
        "--report=junit", f"--report-junit-path={workdir / 'junit.xml'}",
        "--no-color",
    ]  # fmt: skip
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.integration.fuzz_checks",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    # In workdir: schemathesis keeps its state (.schemathesis/) in the working directory.
    return subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=240, check=False, cwd=workdir
    )  # fmt: skip


def _managed(core: client.CoreV1Api) -> set[str]:
    return {ns.metadata.name for ns in core.list_namespace(label_selector=SELECTOR).items}


@pytest.mark.timeout(300)
def test_the_service_keeps_its_openapi_document(
    service: RunningService, core: client.CoreV1Api, tmp_path: Path
) -> None:
    before = _managed(core)
    try:
        run = _fuzz(service, tmp_path)
    finally:
        made = _managed(core) - before
        delete_namespaces(core, sorted(made))
    output = run.stdout + run.stderr
    print(output[-3000:])  # the figures, for whoever runs it with -s
    assert run.returncode == 0, output[-20000:]
    # Every operation was tested, in every phase, and enough cases ran to mean something.
    # Schemathesis leaves out the document's own route, GET /openapi.json.
    operations = sum(len(item) for item in openapi.DOCUMENT["paths"].values()) - 1
    assert f"{operations} selected / {operations} total" in output
    for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
        assert re.search(rf"✅\s+{phase}", output), (phase, output[-3000:])
    cases = re.search(r"(\d+) generated", output)
    assert cases is not None, output[-3000:]
    assert int(cases.group(1)) >= 20 * operations, output[-3000:]
    # The stateful phase chained creates into get, extend and delete: it reached Kubernetes.
    assert made, "the fuzzer created no namespace"
    assert not any(name in live_managed_namespaces(core) for name in made)


def test_limit_true_is_refused_in_both_forms_of_the_list(service: RunningService) -> None:
    """What the fuzzer first found: GET ?idempotencyKey= ignored limit, so limit=true was 200."""
    with httpx.Client(base_url=service.url, timeout=30, headers=service.auth()) as http:
        for params in ({"limit": "true"}, {"limit": "true", "idempotencyKey": "job-1"}):
            detail = problem(http.get("/api/v1/namespaces", params=params), 400)["detail"]
            assert "limit 'true' must be a whole number from 1 to 500" in detail
        refused = http.get("/api/v1/namespaces", params={"continue": "x", "idempotencyKey": "j"})
        assert "continue" in problem(refused, 400)["detail"]
