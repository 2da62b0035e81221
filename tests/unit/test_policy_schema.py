"""The policy file's JSON Schema: fresh, and in agreement with nsprov's own reader.

The schema is rendered from policy.schema.POLICY, the declaration the reader checks a
file with; these tests keep the committed copies equal to it, and prove with the
jsonschema library that the schema accepts every policy nsprov accepts (every one in
the READMEs, docs/ and the examples, found by content) and refuses what nsprov refuses for its
shape. Checks that need several values (an issuer a tenant names, ttl above maxTTL)
are nsprov's alone: the schema may accept such a file, never refuse a good one.
"""

from __future__ import annotations

import json
import re
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from nsprov.core.settings import Settings
from nsprov.policy import schema as policyschema
from nsprov.policy.file import PolicyError, check_policy, parse_policy, policy_from
from nsprov.policy.model import flags_profile

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = (ROOT / "schemas/policy.schema.json", ROOT / "service/nsprov/policy/policy.schema.json")
POLICY_KEYS = frozenset(policyschema.POLICY.keys)
REGENERATE = "make policy-schema"


def _schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(COMMITTED[0].read_text())
    return loaded


def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(_schema())


def _nsprov_refusal(text: str | Any, *, loaded: bool = False) -> str | None:
    """What a reload would say about ``text`` offline (None: it loads); ``loaded=True``:
    ``text`` is the document YAML made of it already."""
    try:
        if loaded:
            policy = policy_from(text, check_files=False)
        else:
            policy = parse_policy(text, check_files=False)
        check_policy(policy, flags_profile(Settings()), Settings().min_ttl, grants=None)
    except PolicyError as exc:
        return str(exc)
    return None


def _schema_refusal(text: str) -> str | None:
    error = jsonschema.exceptions.best_match(_validator().iter_errors(yaml.safe_load(text) or {}))
    return None if error is None else f"{error.json_path}: {error.message}"


# ---- fresh ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_committed_schema_is_the_one_the_declaration_renders(path: Path) -> None:
    assert path.read_text(encoding="utf-8") == policyschema.render(), (
        f"{path.relative_to(ROOT)} is stale: run `{REGENERATE}` and commit it"
    )


def test_the_package_ships_the_schema() -> None:
    assert policyschema.shipped() == policyschema.render()


def test_the_schema_is_valid_draft_2020_12() -> None:
    schema = _schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    # Every key the reader knows is in the schema, and only those.
    assert set(schema["properties"]) == POLICY_KEYS == {"issuers", "defaults", "tenants"}
    tenant = schema["properties"]["tenants"]["anyOf"][1]["items"]
    assert set(tenant["properties"]) == set(policyschema.TENANT.keys)
    assert tenant["additionalProperties"] is False


# ---- every policy in the docs and the examples -----------------------------------------------


def _documents(path: Path) -> Iterator[tuple[str, str]]:
    """(where, YAML text) of each YAML file, or each ```yaml block of a Markdown file."""
    text = path.read_text(encoding="utf-8")
    where = str(path.relative_to(ROOT))
    if path.suffix != ".md":
        yield where, text
        return
    fence = re.compile(r"^( *)```ya?ml[^\n]*\n(.*?)^\1```", re.MULTILINE | re.DOTALL)
    for found in fence.finditer(text):
        line = text.count("\n", 0, found.start()) + 1
        yield f"{where}:{line}", textwrap.dedent(found.group(2))


def _looks_like_policy(node: Any) -> bool:
    return isinstance(node, dict) and bool(node) and set(node) <= POLICY_KEYS


def _policies_in(node: Any) -> Iterator[Any]:
    """Every mapping in ``node`` whose keys are policy file keys, also inside YAML strings
    (a ConfigMap's ``data``)."""
    if _looks_like_policy(node):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _policies_in(value)
    elif isinstance(node, list):
        for value in node:
            yield from _policies_in(value)
    elif isinstance(node, str) and "\n" in node:
        try:
            yield from _policies_in(yaml.safe_load(node))
        except yaml.YAMLError:
            return


def _policy_texts() -> list[tuple[str, str]]:
    sources = [*sorted(ROOT.glob("*.md")), *sorted((ROOT / "docs").glob("**/*.md"))]
    sources += sorted((ROOT / "action").glob("*.md"))
    sources += sorted((ROOT / "k8s/examples").glob("*.yaml"))
    sources += sorted((ROOT / "charts").glob("*/values*.yaml"))
    sources += sorted((ROOT / "charts").glob("*/ci/*.yaml"))
    found: list[tuple[str, str]] = []
    top_level_key = re.compile(r"^(issuers|defaults|tenants):", re.MULTILINE)
    for path in sources:
        for where, text in _documents(path):
            try:
                documents = list(yaml.safe_load_all(text))
            except yaml.YAMLError:
                if top_level_key.search(text):  # a policy that is not even YAML
                    found.append((where, text))
                continue
            for document in documents:
                found.extend((where, yaml.safe_dump(p)) for p in _policies_in(document))
    return found


POLICIES = _policy_texts()


def test_the_docs_and_examples_have_policies_to_check() -> None:
    places = {where.partition(":")[0] for where, _ in POLICIES}
    assert {"k8s/examples/policy.yaml", "docs/operator/policy.md", "action/README.md"} <= places
    assert len(POLICIES) >= 3, POLICIES


def test_policies_are_found_by_content_wherever_they_are(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a fence indented under a list item, in a ConfigMap's string, in Helm values;
    not a mapping that merely shares one key with other keys beside it."""
    page = tmp_path / "page.md"
    page.write_text(
        "1. a step\n\n   ```yaml\n   tenants: [{name: a, match: {tokn: x}}]\n   ```\n\n"
        "```yaml\nkind: ConfigMap\ndata:\n  policy.yaml: |\n    defaults: {ttl: 1h}\n"
        "    tenants: []\n```\n\n"
        "```yml\npolicy:\n  issuers: []\nimage: {tag: x}\n```\n\n"
        "```yaml\ntenants: []\nkind: NotAPolicy\n```\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    found = [
        (where, policy)
        for where, source in _documents(page)
        for document in yaml.safe_load_all(source)
        for policy in _policies_in(document)
    ]
    assert found == [
        ("page.md:3", {"tenants": [{"name": "a", "match": {"tokn": "x"}}]}),
        ("page.md:7", {"defaults": {"ttl": "1h"}, "tenants": []}),
        ("page.md:15", {"issuers": []}),
    ]
    assert _nsprov_refusal(yaml.safe_dump(found[0][1])) is not None


@pytest.mark.parametrize(("where", "text"), POLICIES, ids=[w for w, _ in POLICIES])
def test_every_policy_in_the_docs_is_valid_for_both(where: str, text: str) -> None:
    refusal = _nsprov_refusal(text)
    assert refusal is None, f"{where}: nsprov refuses it: {refusal}"
    refusal = _schema_refusal(text)
    assert refusal is None, f"{where}: the schema refuses it: {refusal}"


# ---- they agree on files nsprov accepts and on files out of shape ----------------------------

_ISSUER = "issuers: [{name: gh, issuer: 'https://a', audience: x}]\n"

GOOD = [
    "",
    "defaults:\ntenants:\n",
    "defaults: {podSecurity: '', finalizers: [], clusterRole: view}",
    "defaults: {template: {resourceQuota: none, limitRange: none, networkPolicy: none}}",
    "defaults: {template: {resourceQuota: {hard: {pods: 2, requests.cpu: 1.5, "
    "count/configmaps: '3'}}, limitRange: {max: {cpu: '2'}}}}",
    "defaults: {labels: {example.com/team: web, tier: ''}, annotations: {note: 'any text'}}",
    "defaults: {pool: {size: 0}, maxGracePeriod: 1m30s, ttl: 1d, maxTTL: 2d, maxLifetime: 3d}",
    _ISSUER + "tenants: [{name: t, match: {issuer: gh, claims: {/a/b: [x, 'y*']}}}]",
    "tenants: [{name: t, match: {token: [ci, 'team-*']}, owner: 'ci-{token}'}]",
    # A key without a value is absent for nsprov, so for the schema too.
    "tenants: [{name: t, match: {token: ci, issuer: null, claims: null}, ttl: null}]",
    _ISSUER + "tenants: [{name: t, match: {token: null, issuer: gh, claims: {sub: x}}}]",
    "defaults: {ttl: ' 1h ', maxTTL: 2h}",
]

BAD = [
    "tenant: []",
    "issuers: [{name: gh, issuer: 'https://a', audience: x, audiance: y}]",
    "issuers: [{name: gh, issuer: 'https://a'}]",
    "issuers: [{name: gh, issuer: 'http://a', audience: x}]",
    "issuers: [{name: GH, issuer: 'https://a', audience: x}]",
    "issuers: [{name: a, issuer: 'https://a', audience: x, tokenReview: 'yes'}]",
    _ISSUER + "tenants: [{name: t, match: {issuer: gh}}]",
    _ISSUER + "tenants: [{name: t, match: {issuer: gh, claim: {sub: x}}}]",
    _ISSUER + "tenants: [{name: t, match: {issuer: gh, claims: {ok: true}}}]",
    "tenants: [{name: t, match: {token: 'a b'}}]",
    "tenants: [{name: t, match: {token: ci, issuer: gh}}]",
    "tenants: [{name: t}]",
    "tenants: [{name: t, match: {token: ci}, ttl: 5}]",
    "tenants: [{name: t, match: {token: ci}, ttl: 5x}]",
    "tenants: [{name: t, match: {token: ci}, maxNamespaces: -1}]",
    "tenants: [{name: t, match: {token: ci}, podSecurity: strict}]",
    "tenants: [{name: t, match: {token: ci}, template: {quota: {}}}]",
    "tenants: {name: t}",
    "defaults: {clusterRol: x}",
    "defaults: {clusterRole: [a, a]}",
    "defaults: {clusterRole: [a, b, c, d, e, f, g, h, i]}",
    "defaults: {clusterRole: ../admin}",
    "defaults: {serviceTypes: [ClusterIP, Ingress]}",
    "defaults: {serviceTypes: []}",
    "defaults: {finalizers: [never]}",
    "defaults: {pool: {size: 101}}",
    "defaults: {pool: {maxAge: 1h}}",
    "defaults: {template: {resourceQuota: {hard: {pods: lots}}}}",
    "defaults: {template: {resourceQuota: {hard: {'no such/thing/x': '1'}}}}",
    "defaults: {template: {resourceQuota: {hard: {" + "a" * 250 + ".b/c: '1'}}}}",
    "defaults: {template: {limitRange: {}}}",
    "defaults: {template: {networkPolicy: open}}",
    "defaults: {labels: {team: 'not a value'}}",
    "defaults: {labels: {team: 3}}",
    "- a list",
    "tenants: [{name: t, match: {token: null}}]",
    _ISSUER + "tenants: [{name: t, match: {issuer: gh, claims: {sub: x}, token: ci}}]",
]


@pytest.mark.parametrize("text", GOOD)
def test_what_nsprov_accepts_the_schema_accepts(text: str) -> None:
    assert _nsprov_refusal(text) is None
    assert _schema_refusal(text) is None


@pytest.mark.parametrize("text", BAD)
def test_what_is_out_of_shape_both_refuse(text: str) -> None:
    assert _nsprov_refusal(text) is not None
    assert _schema_refusal(text) is not None


def test_what_needs_several_values_is_nsprovs_alone() -> None:
    """The schema cannot see that a tenant names no issuer, or ttl passes maxTTL: nsprov
    refuses, the schema lets it through (editors check the shape, CI runs validate)."""
    for text in (
        "tenants: [{name: t, match: {issuer: nope, claims: {sub: x}}}]",
        "defaults: {ttl: 3h, maxTTL: 2h}",
    ):
        assert _nsprov_refusal(text) is not None
        assert _schema_refusal(text) is None


def test_draft_7_readers_get_the_same_answers() -> None:
    """Editors' YAML language server validates with draft-07: the schema uses only keywords
    both drafts have with one meaning (no $defs, prefixItems, unevaluated*), so it gives
    the same verdicts there."""
    schema = {k: v for k, v in _schema().items() if k != "$schema"}
    jsonschema.Draft7Validator.check_schema(schema)
    draft7 = jsonschema.Draft7Validator(schema)
    for text in GOOD + BAD + [t for _, t in POLICIES]:
        document = yaml.safe_load(text) or {}
        assert draft7.is_valid(document) == _validator().is_valid(document), text


_ODD_VALUES = (None, 0, -1, 2.5, True, "", "x", "none", "0s", [], ["x"], {}, {"x": "y"})


def _mutants(node: Any) -> Iterator[Any]:
    """``node`` with one value replaced by an odd one, or one key dropped, everywhere."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield {k: v for k, v in node.items() if k != key}
            for odd in (*_ODD_VALUES, *_mutants(value)):
                yield {**node, key: odd}
    elif isinstance(node, list):
        for i, value in enumerate(node):
            for odd in (*_ODD_VALUES, *_mutants(value)):
                yield [*node[:i], odd, *node[i + 1 :]]


def test_the_schema_never_refuses_a_file_nsprov_loads() -> None:
    """Every policy of the docs, each value swapped for an odd one or a key dropped: where
    nsprov loads the result, the schema must accept it (the other way round, nsprov may
    refuse what the schema lets through: the checks that need several values)."""
    validator = _validator()
    tried = loaded = 0
    for where, text in POLICIES:
        for mutant in _mutants(yaml.safe_load(text)):
            tried += 1
            if _nsprov_refusal(mutant, loaded=True) is None:
                loaded += 1
                assert validator.is_valid(mutant), (where, mutant)
    assert loaded > 100, (tried, loaded)
