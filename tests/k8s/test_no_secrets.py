"""No secret values in the cluster files: manifests, image files, docs/cluster.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from .conftest import REPO

SCANNED = [*sorted((REPO / "k8s").rglob("*")), *sorted((REPO / "platform" / "docker").rglob("*")),
           REPO / ".dockerignore", REPO / "docs" / "cluster.md"]

# A value is fine when it is a placeholder or comes from the shell at run time.
PLACEHOLDER = re.compile(r"""^["']?(\$|<[^>]*>|\.\.\.|REPLACE_ME|changeme)""", re.IGNORECASE)
LEAKS = {
    "AWS access key id": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "credentials in a URL": re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@$<]+@"),
}
ASSIGNMENT = re.compile(
    r"(?i)\b(aws_secret_access_key|aws_access_key_id|aws_session_token|ray_auth_token|auth_token|"
    r"password|secret|token)\b\s*[=:]\s*(\S+)")


def random_looking(token: str) -> bool:
    """Hex or base64 noise of 32+ characters (keys, tokens, Secret data), not paths or identifiers."""
    if len(token) < 32 or token.startswith("/"):
        return False
    if re.fullmatch(r"[0-9a-fA-F]+", token):
        return True
    # Random base64 switches between digit, upper and lower case at ~65% of characters; words and
    # identifiers (AWS_SECRET_ACCESS_KEY, workerGroupSpecs) rarely do.
    kinds = ["d" if c.isdigit() else "u" if c.isupper() else "l" for c in token if c.isalnum()]
    return sum(a != b for a, b in zip(kinds, kinds[1:])) / len(kinds) > 0.3


def literal(value: str) -> bool:
    """True for a value written out in the file; false for placeholders, shell expansions, names."""
    value = value.rstrip("\\,;")
    if PLACEHOLDER.match(value):
        return False
    # `key: AWS_SECRET_ACCESS_KEY` or `secretName: atomforge-ray-token` names something; it isn't a value.
    named = re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]*", value) and sum(c.isdigit() for c in value) < 4
    return not named


def leaks(text: str) -> list[str]:
    """Every line that looks like it carries a credential, with the reason."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        found += [f"line {number}: {what}" for what, pattern in LEAKS.items() if pattern.search(line)]
        if any(random_looking(token) for token in re.findall(r"(?<![/\w])[A-Za-z0-9+/=_-]{32,}", line)):
            found.append(f"line {number}: long random-looking string")
        found += [f"line {number}: {m.group(1)} is given a literal value"
                  for m in ASSIGNMENT.finditer(line) if literal(m.group(2))]
    return found


@pytest.mark.parametrize("path", [p for p in SCANNED if p.is_file()], ids=lambda p: str(p.relative_to(REPO)))
def test_no_secret_values(path: Path):
    problems = leaks(path.read_text())
    assert not problems, f"{path.relative_to(REPO)}:\n" + "\n".join(problems)


def test_manifests_define_no_secrets():
    for path in (REPO / "k8s").rglob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict):
                assert doc.get("kind") != "Secret", f"{path}: Secrets are created with kubectl, not committed"
                assert "secretGenerator" not in doc, f"{path}: no secretGenerator (it would need the values here)"


@pytest.mark.parametrize("planted", [
    "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "  --from-literal=AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE",
    "auth_token: 3f9c2a7e4b1d8f6a0c5e9b2d7a4f1c8e",
    "data:\n  auth_token: ZTJhYjRjZDg5ZmE2NDFiM2E5Yzc1ZDBlMWY4NzZiNDI=",
    "endpoint: https://admin:hunter22@s3.example.com",
])
def test_scanner_catches_planted_secrets(planted):
    assert leaks(planted)


@pytest.mark.parametrize("harmless", [
    'kubectl create secret generic atomforge-s3 --from-literal=AWS_SECRET_ACCESS_KEY="$AWS_SECRET_ACCESS_KEY"',
    'kubectl create secret generic atomforge-ray-token --from-literal=auth_token="$(openssl rand -hex 32)"',
    "valueFrom: {secretKeyRef: {name: atomforge-s3, key: AWS_SECRET_ACCESS_KEY}}",
    "secretName: atomforge-ray-token",
    "export RAY_AUTH_TOKEN=$(kubectl get secret atomforge-ray-token -o jsonpath='{.data.auth_token}' | base64 -d)",
])
def test_scanner_passes_references(harmless):
    assert not leaks(harmless)
