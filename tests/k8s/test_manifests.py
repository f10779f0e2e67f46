"""Rendered overlays: strict schema validity, resources, autoscaling, Secret references."""

from __future__ import annotations

import copy

import pytest

from .conftest import OVERLAYS, SECRET_NAMES, pod_templates


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def containers(doc: dict):
    """(where, container) for every container KubeRay will run for this document."""
    for where, template in pod_templates(doc):
        for c in template["spec"].get("containers", []) + template["spec"].get("initContainers", []):
            yield f"{where}/{c['name']}", c
    autoscaler = doc.get("spec", {}).get("autoscalerOptions")
    if doc["kind"] == "RayCluster" and doc["spec"].get("enableInTreeAutoscaling"):
        yield "spec.autoscalerOptions (autoscaler sidecar)", autoscaler or {}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_has_cluster_and_both_jobs(rendered, overlay):
    docs = rendered[overlay]
    (cluster,) = of_kind(docs, "RayCluster")
    assert cluster["apiVersion"] == "ray.io/v1"
    jobs = of_kind(docs, "RayJob")
    scripts = sorted(job["spec"]["entrypoint"].split()[1].rsplit("/", 1)[-1] for job in jobs)
    assert scripts == ["jmp_pretrain.py", "preprocess.py"]
    assert all(d["metadata"].get("namespace") for d in docs), "every object needs the overlay's namespace"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_document_validates_strictly(rendered, check_manifest, overlay):
    errors = [e for doc in rendered[overlay] for e in check_manifest(doc)]
    assert not errors, "\n".join(errors)


def _cluster(rendered) -> dict:
    return copy.deepcopy(of_kind(rendered[OVERLAYS[0]], "RayCluster")[0])


def _job(rendered) -> dict:
    return copy.deepcopy(of_kind(rendered[OVERLAYS[0]], "RayJob")[0])


def _misspelt_top_field(doc):
    doc["spec"]["enableInTreeAutoScaling"] = doc["spec"].pop("enableInTreeAutoscaling")


def _string_replicas(doc):
    doc["spec"]["workerGroupSpecs"][0]["replicas"] = "2"


def _misspelt_group_field(doc):
    doc["spec"]["workerGroupSpecs"][0]["maxReplica"] = 3


def _misspelt_container_field(doc):
    doc["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["resource"] = {}


def _string_container_port(doc):
    doc["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "6379"


def _misspelt_job_field(doc):
    doc["spec"]["entryPoint"] = doc["spec"].pop("entrypoint")


def _misspelt_submitter_field(doc):
    doc["spec"]["submitterPodTemplate"]["spec"]["containers"][0]["envv"] = []


BREAKAGES = {
    "misspelt RayCluster field": (_cluster, _misspelt_top_field),
    "string replica count": (_cluster, _string_replicas),
    "misspelt worker group field": (_cluster, _misspelt_group_field),
    "misspelt container field": (_cluster, _misspelt_container_field),
    "string container port": (_cluster, _string_container_port),
    "misspelt RayJob field": (_job, _misspelt_job_field),
    "misspelt submitter container field": (_job, _misspelt_submitter_field),
}


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_broken_manifest_is_rejected(rendered, check_manifest, breakage):
    pick, breaks = BREAKAGES[breakage]
    doc = pick(rendered)
    assert not check_manifest(doc), "the unbroken document must pass first"
    breaks(doc)
    assert check_manifest(doc), f"{breakage} was accepted"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_requests_and_limits_resources(rendered, overlay):
    for doc in rendered[overlay]:
        for where, container in containers(doc):
            resources = container.get("resources", {})
            requests, limits = resources.get("requests", {}), resources.get("limits", {})
            assert {"cpu", "memory"} <= requests.keys(), f"{where}: requests need cpu and memory"
            assert "memory" in limits, f"{where}: a memory limit keeps one pod from taking a node"
            for name in (requests.keys() | limits.keys()) - {"cpu", "memory", "ephemeral-storage"}:
                # Extended resources (GPUs) must be whole and equal in requests and limits.
                assert str(requests.get(name)) == str(limits.get(name)), f"{where}: {name} requests != limits"


def gpu_counts(docs: list[dict]) -> list[int]:
    return [int(c["resources"]["limits"]["nvidia.com/gpu"])
            for doc in docs for _, c in containers(doc)
            if "nvidia.com/gpu" in c.get("resources", {}).get("limits", {})]


def test_gpu_overlay_has_gpu_workers_and_dev_has_none(rendered):
    assert gpu_counts(rendered["gpu-multinode"]) and min(gpu_counts(rendered["gpu-multinode"])) >= 1
    assert gpu_counts(rendered["dev-cpu"]) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_autoscaling_bounds(rendered, overlay):
    (cluster,) = of_kind(rendered[overlay], "RayCluster")
    spec = cluster["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["rayVersion"] == "2.60.0"
    assert {g["groupName"] for g in spec["workerGroupSpecs"]} >= {"cpu"}
    for group in spec["workerGroupSpecs"]:
        low, high = group["minReplicas"], group["maxReplicas"]
        assert 0 <= low <= group.get("replicas", low) <= high and high >= 1, group["groupName"]


def references(node, kind: str):
    """Names under every `<kind>` key (secretKeyRef, secretRef, configMapRef, ...) in a document."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == kind and isinstance(value, dict):
                yield value["name"]
            yield from references(value, kind)
    elif isinstance(node, list):
        for value in node:
            yield from references(value, kind)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_are_referenced_never_included(rendered, overlay):
    docs = rendered[overlay]
    assert not of_kind(docs, "Secret"), "Secrets are created with kubectl, never rendered from the repo"
    names = set()
    for doc in docs:
        names |= set(references(doc, "secretKeyRef")) | set(references(doc, "secretRef"))
    (cluster,) = of_kind(docs, "RayCluster")
    names.add(cluster["spec"]["authOptions"]["secretName"])
    assert cluster["spec"]["authOptions"]["mode"] == "token"
    assert names == SECRET_NAMES
    for doc in docs:
        for where, container in containers(doc):
            for env in container.get("env", []):
                if any(word in env["name"].upper() for word in ("SECRET", "TOKEN", "PASSWORD", "ACCESS_KEY")):
                    assert "valueFrom" in env, f"{where}: {env['name']} must come from a Secret"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_references_resolve_within_the_overlay(rendered, overlay):
    docs = rendered[overlay]
    config_maps = {d["metadata"]["name"] for d in of_kind(docs, "ConfigMap")}
    for doc in docs:
        assert set(references(doc, "configMapRef")) <= config_maps
    (cluster,) = of_kind(docs, "RayCluster")
    for job in of_kind(docs, "RayJob"):
        assert job["spec"]["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
        assert job["metadata"]["namespace"] == cluster["metadata"]["namespace"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_run_as_non_root(rendered, overlay):
    for doc in rendered[overlay]:
        for where, template in pod_templates(doc):
            context = template["spec"].get("securityContext", {})
            assert context.get("runAsNonRoot") is True and context.get("runAsUser", 0) != 0, where


def test_strictness_is_what_catches_misspellings(rendered, crd_schemas):
    import jsonschema

    doc = _cluster(rendered)
    _misspelt_top_field(doc)
    published = jsonschema.Draft7Validator(crd_schemas["RayCluster"])
    assert not list(published.iter_errors(doc)), "the published schema alone tolerates unknown fields"


def test_docs_say_how_to_create_every_secret_and_apply_every_overlay():
    from .conftest import REPO

    text = (REPO / "docs" / "cluster.md").read_text()
    for name in SECRET_NAMES:
        assert f"create secret generic {name}" in text
    for overlay in OVERLAYS:
        assert f"k8s/overlays/{overlay}" in text
    assert "RAY_AUTH_MODE=token" in text and "port-forward" in text


def _cpus(quantity) -> float:
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_elastic_pretraining_range_fits_the_worker_groups(rendered, overlay):
    """`--num-workers MIN..MAX` (elastic): the groups at maxReplicas hold MAX Ray Train workers (Ray Train asks
    for MAX; the autoscaler adds pods for them), and where MAX spans several pods the pods left after losing
    one still hold MIN, so the run continues on fewer workers instead of waiting for a replacement."""
    import shlex

    from atomforge.recipes.jmp import recipe
    from atomforge.training.config import worker_overrides
    from atomforge.training.overrides import apply_overrides

    docs = rendered[overlay]
    (job,) = [j for j in of_kind(docs, "RayJob") if "jmp_pretrain.py" in j["spec"]["entrypoint"]]
    args = shlex.split(job["spec"]["entrypoint"])
    workers = args[args.index("--num-workers") + 1]
    scaling = apply_overrides(recipe(args[args.index("--recipe") + 1]), worker_overrides(workers)).scaling
    assert scaling.elastic, f"{overlay}: pretraining --num-workers {workers} is not an elastic MIN..MAX range"
    (cluster,) = of_kind(docs, "RayCluster")
    per_pod = []  # Ray Train workers each pod of each group can hold, every pod up to maxReplicas
    for group in cluster["spec"]["workerGroupSpecs"]:
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        fit = int(_cpus(limits["cpu"]) // scaling.cpus_per_worker)
        if scaling.use_gpu:
            fit = min(fit, int(limits.get("nvidia.com/gpu", 0)))
        per_pod += [fit] * group["maxReplicas"]
    per_pod.sort(reverse=True)
    used = next((n for n in range(1, len(per_pod) + 1) if sum(per_pod[:n]) >= scaling.num_workers), None)
    assert used is not None, f"{overlay}: {sum(per_pod)} workers fit at maxReplicas, fewer than {scaling.num_workers}"
    if used > 1:
        assert sum(per_pod[1:used]) >= scaling.min_workers, f"{overlay}: losing one of {used} pods leaves too few"
