"""The release workflow keeps its promises: what a tag publishes, and with which rights.

actionlint (make lint) checks that the workflow is valid; these check what it says: PyPI
by trusted publishing with no stored secret, an image for both architectures with an SBOM
and provenance, the Action's major tag moved only for a release, and the versions a tag
names checked against each other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    text = (REPO / ".github" / "workflows" / "release.yml").read_text()
    loaded: dict[str, Any] = yaml.safe_load(text)
    return loaded


def _steps(workflow: dict[str, Any], job: str) -> list[dict[str, Any]]:
    return list(workflow["jobs"][job]["steps"])


def _uses(workflow: dict[str, Any], job: str, action: str) -> dict[str, Any]:
    found = [s for s in _steps(workflow, job) if s.get("uses", "").startswith(action + "@")]
    assert len(found) == 1, f"{job} uses {action} {len(found)} times"
    return found[0]


def test_runs_on_version_tags_only(workflow: dict[str, Any]) -> None:
    # PyYAML reads the key `on` as True (YAML 1.1).
    trigger = workflow[True]
    assert list(trigger) == ["push"]
    assert list(trigger["push"]) == ["tags"]
    assert all(t.startswith("v[0-9]") for t in trigger["push"]["tags"])
    assert workflow["permissions"] == {"contents": "read"}


def test_pypi_by_trusted_publishing_without_a_stored_secret(workflow: dict[str, Any]) -> None:
    pypi = workflow["jobs"]["pypi"]
    assert pypi["permissions"] == {"id-token": "write"}
    assert pypi["environment"]["name"] == "pypi"
    publish = _uses(workflow, "pypi", "pypa/gh-action-pypi-publish")
    assert "with" not in publish  # no password, no token: OIDC
    text = (REPO / ".github" / "workflows" / "release.yml").read_text()
    secrets = {part.split("}}")[0].strip() for part in text.split("${{ secrets.")[1:]}
    assert secrets == {"GITHUB_TOKEN"}
    # Only the publishing job may mint an OIDC token.
    minting = [n for n, j in workflow["jobs"].items() if "id-token" in j.get("permissions", {})]
    assert minting == ["pypi"]


def test_dist_is_checked_and_installed_before_publishing(workflow: dict[str, Any]) -> None:
    runs = "\n".join(s.get("run", "") for s in _steps(workflow, "dist"))
    assert "python -m build" in runs
    assert "twine check --strict dist/*" in runs
    assert "python -m venv" in runs
    assert "--version" in runs
    assert '"v$version" != "$GITHUB_REF_NAME"' in runs
    assert workflow["jobs"]["pypi"]["needs"] == ["dist"]


def test_image_for_two_architectures_with_sbom_and_provenance(workflow: dict[str, Any]) -> None:
    assert workflow["jobs"]["image"]["permissions"] == {"contents": "read", "packages": "write"}
    build = _uses(workflow, "image", "docker/build-push-action")["with"]
    assert build["platforms"] == "linux/amd64,linux/arm64"
    assert build["sbom"] is True
    assert build["provenance"] == "mode=max"
    assert build["push"] is True
    assert "steps.meta.outputs.labels" in build["labels"]
    meta = _uses(workflow, "image", "docker/metadata-action")["with"]
    assert "org.opencontainers.image.licenses=Apache-2.0" in meta["labels"]
    _uses(workflow, "image", "docker/setup-qemu-action")


def test_major_tag_moves_after_everything_is_published(workflow: dict[str, Any]) -> None:
    job = workflow["jobs"]["action-tag"]
    assert set(job["needs"]) == {"pypi", "image", "chart"}
    assert "contains(github.ref_name, '-')" in job["if"]  # no pre-release moves v1
    assert job["permissions"] == {"contents": "write"}
    run = "\n".join(s.get("run", "") for s in job["steps"])
    assert 'major="${GITHUB_REF_NAME%%.*}"' in run
    assert 'git push --force origin "refs/tags/$major"' in run
