"""The files under deploy/, checked without Docker or Kubernetes: they parse, the DaskCluster
manifest validates against the operator's own CRD schema, the SLURM job script renders, every
image and pin agrees with pyproject.toml, and the scripts the image and the TLS setup rely on
do what they say."""

from __future__ import annotations

import fnmatch
import importlib.metadata
import importlib.resources
import importlib.util
import re
import shlex
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import threading
import tomllib
from pathlib import Path

import dask
import pytest
import yaml
from cluster_utils import DEPLOY, compose_command, compose_services, interpolate
from dask.utils import parse_bytes
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = DEPLOY.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
VERSION = PYPROJECT["version"]
IMAGE = f"ghcr.io/dask-repsim/dask-repsim:{VERSION}"
#: pyproject extras whose requirements the image installs besides [project] dependencies
IMAGE_EXTRAS = ("s3",)


def _yaml(relative: str) -> dict:
    return yaml.safe_load((DEPLOY / relative).read_text())


def _module(relative: str):
    spec = importlib.util.spec_from_file_location(Path(relative).stem, DEPLOY / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _option(args: list[str], flag: str) -> str:
    """The value after ``flag`` in an argument list."""
    assert flag in args, f"{flag} not in {args}"
    return str(args[args.index(flag) + 1])


def _cpu(quantity) -> float:
    """A Kubernetes CPU quantity ("4", 4, "500m") in cores."""
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


# ---------------------------------------------------------------------------------------------
# Every file parses
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", sorted(p.relative_to(DEPLOY).as_posix() for p in DEPLOY.rglob("*.y*ml")), ids=str
)
def test_yaml_parses(path):
    """Each YAML file is one or more mappings."""
    documents = list(yaml.safe_load_all((DEPLOY / path).read_text()))
    assert documents and all(isinstance(d, dict) and d for d in documents)


def test_expected_files_exist():
    """The deployments the README documents are all there."""
    for relative in [
        "Dockerfile",
        "Dockerfile.dockerignore",
        "requirements.txt",
        "entrypoint.sh",
        "compose.yaml",
        "compose.tls.yaml",
        "kubernetes/daskcluster.yaml",
        "helm/values.yaml",
        "hpc/jobqueue.yaml",
        "hpc/slurm_cluster.py",
        "tls/make-certs.sh",
        "tls/client.py",
        "README.md",
    ]:
        assert (DEPLOY / relative).is_file(), relative


def test_readme_names_only_files_that_exist():
    """Every deploy/ path the README's commands mention is a file of the repository."""
    readme = (DEPLOY / "README.md").read_text()
    mentioned = set(re.findall(r"deploy/[\w./-]*\w", readme))
    assert len(mentioned) >= 8
    for relative in mentioned:
        if relative.startswith("deploy/tls/certs") or relative == "deploy/data":
            continue  # written by the commands themselves
        assert (ROOT / relative).exists(), relative


# ---------------------------------------------------------------------------------------------
# Kubernetes: the DaskCluster custom resource, validated against the operator's CRD
# ---------------------------------------------------------------------------------------------


def _daskcluster_schema() -> dict:
    """openAPIV3Schema of the DaskCluster CRD shipped in the installed dask-kubernetes."""
    pytest.importorskip("dask_kubernetes")
    package = Path(str(importlib.resources.files("dask_kubernetes")))
    for path in sorted(package.rglob("daskcluster.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not (isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition"):
                continue
            for version in doc["spec"]["versions"]:
                schema = version["schema"]["openAPIV3Schema"]
                if "properties" in schema:  # the built CRD, not the one with a $ref to build
                    return schema
    raise AssertionError(f"no DaskCluster CRD with a resolved schema in {package}")


def _pruned_fields(value, schema: dict, where: str = "") -> list[str]:
    """Fields Kubernetes would silently drop: not declared in the structural schema."""
    if isinstance(value, dict):
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            return []
        properties = schema.get("properties")
        extra = schema.get("additionalProperties")
        out = []
        for key, item in value.items():
            if properties is not None and key in properties:
                out += _pruned_fields(item, properties[key], f"{where}.{key}")
            elif isinstance(extra, dict):
                out += _pruned_fields(item, extra, f"{where}.{key}")
            elif properties is not None or extra is False:
                out.append(f"{where}.{key}")
        return out
    if isinstance(value, list) and "items" in schema:
        items = schema["items"]
        return [f for i, v in enumerate(value) for f in _pruned_fields(v, items, f"{where}[{i}]")]
    return []


def _validate_daskcluster(manifest: dict) -> list[str]:
    jsonschema = pytest.importorskip("jsonschema")
    schema = _daskcluster_schema()
    validator = jsonschema.Draft4Validator(schema)  # OpenAPI 3.0 schemas are draft-4 based
    errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(manifest)]
    body = {k: v for k, v in manifest.items() if k not in ("apiVersion", "kind", "metadata")}
    return errors + [f"pruned: {f}" for f in _pruned_fields(body, schema)]


def test_daskcluster_validates_against_operator_crd():
    """deploy/kubernetes/daskcluster.yaml is a valid DaskCluster with no field the operator's
    schema would drop."""
    manifest = _yaml("kubernetes/daskcluster.yaml")
    assert manifest["apiVersion"] == "kubernetes.dask.org/v1"
    assert manifest["kind"] == "DaskCluster"
    assert _validate_daskcluster(manifest) == []


def test_daskcluster_validation_catches_mistakes():
    """The check above can fail: a wrong type and a misspelt field are both reported."""
    manifest = _yaml("kubernetes/daskcluster.yaml")
    manifest["spec"]["worker"]["replicas"] = "four"
    manifest["spec"]["worker"]["spec"]["containers"][0]["resource"] = {}  # for "resources"
    problems = _validate_daskcluster(manifest)
    assert any("replicas" in p and "'four'" in p for p in problems), problems
    assert any(p.endswith(".resource") and p.startswith("pruned") for p in problems), problems
    del manifest["spec"]["scheduler"]
    assert any("'scheduler' is a required property" in p for p in _validate_daskcluster(manifest))


def _container(manifest: dict, role: str) -> dict:
    (container,) = manifest["spec"][role]["spec"]["containers"]
    return container


def test_daskcluster_consistency():
    """Images are this version's; the commands are `dask scheduler` / `dask worker`; the
    worker's threads and memory limit fit its container; the service selects this cluster."""
    manifest = _yaml("kubernetes/daskcluster.yaml")
    scheduler, worker = _container(manifest, "scheduler"), _container(manifest, "worker")
    assert scheduler["image"] == worker["image"] == IMAGE
    assert scheduler["args"][:2] == ["dask", "scheduler"]
    assert worker["args"][:2] == ["dask", "worker"]
    limits = worker["resources"]["limits"]
    assert int(_option(worker["args"], "--nthreads")) <= _cpu(limits["cpu"])
    assert parse_bytes(_option(worker["args"], "--memory-limit")) <= parse_bytes(limits["memory"])
    selector = manifest["spec"]["scheduler"]["service"]["selector"]
    assert selector["dask.org/cluster-name"] == manifest["metadata"]["name"]
    ports = {p["name"] for p in scheduler["ports"]}
    for port in manifest["spec"]["scheduler"]["service"]["ports"]:
        assert port["targetPort"] in ports
    for probe in ("readinessProbe", "livenessProbe"):
        assert scheduler[probe]["httpGet"]["path"] == "/health"


def test_helm_values():
    """The dask chart's values: this version's image for both roles, the chart's notebook off,
    and the threads and memory the chart passes to workers fit their limits."""
    values = _yaml("helm/values.yaml")
    for role in ("scheduler", "worker"):
        image = values[role]["image"]
        assert f"{image['repository']}:{image['tag']}" == IMAGE
    assert values["jupyter"]["enabled"] is False
    worker = values["worker"]
    limits = worker["resources"]["limits"]
    assert worker["threads_per_worker"] <= _cpu(limits["cpu"])
    parse_bytes(str(limits["memory"]))  # the chart passes it to --memory-limit: dask must parse it
    # The chart runs this command; the image's entry point must turn it into `dask worker`.
    assert worker["image"]["dask_worker"] == "dask-worker"


# ---------------------------------------------------------------------------------------------
# The image's entry point
# ---------------------------------------------------------------------------------------------


def _entrypoint(*args: str) -> str:
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
    result = subprocess.run(
        ["sh", str(DEPLOY / "entrypoint.sh"), *args],
        capture_output=True, text=True, env=env, timeout=60, check=True,
    )
    return result.stdout


def test_entrypoint_maps_the_charts_dashed_commands():
    """`dask-scheduler` / `dask-worker` (what the Helm chart runs) become `dask scheduler` /
    `dask worker`; any other command runs unchanged."""
    assert _entrypoint("dask-scheduler", "--help").startswith("Usage: dask scheduler")
    assert _entrypoint("dask-worker", "--help").startswith("Usage: dask worker")
    assert _entrypoint("sh", "-c", "echo $0 $1", "plain", "command").strip() == "plain command"


# ---------------------------------------------------------------------------------------------
# Compose
# ---------------------------------------------------------------------------------------------


def test_compose_defaults_make_complete_command_lines():
    """With no variables set, every command line is complete and uses `dask scheduler` /
    `dask worker`; the worker finds the scheduler service by name."""
    for files in (("compose.yaml",), ("compose.yaml", "compose.tls.yaml")):
        scheduler = compose_command("scheduler", {}, files)
        worker = compose_command("worker", {}, files)
        assert scheduler[:2] == ["dask", "scheduler"]
        assert worker[:2] == ["dask", "worker"]
        assert all(arg and "$" not in arg for arg in scheduler + worker)
        scheme = "tls" if "compose.tls.yaml" in files else "tcp"
        assert worker[2] == f"{scheme}://scheduler:{_option(scheduler, '--port')}"
        assert parse_bytes(_option(worker, "--memory-limit")) > 0


def test_compose_tls_is_the_plain_command_plus_tls():
    """compose.tls.yaml's command lines are compose.yaml's with TLS added, nothing else
    changed, and scheduler and workers use the same certificate files."""
    tls_flags = ("--tls-ca-file", "--tls-cert", "--tls-key")

    def without_tls(args: list[str]) -> list[str]:
        out, skip = [], False
        for i, arg in enumerate(args):
            if skip:
                skip = False
                continue
            if arg in tls_flags or (arg == "--protocol" and args[i + 1] == "tls"):
                skip = True
                continue
            out.append(arg)
        return out

    tls = ("compose.yaml", "compose.tls.yaml")
    for service in ("scheduler", "worker"):
        plain = compose_command(service, {})
        secured = compose_command(service, {}, tls)
        expected = [a.replace("tcp://", "tls://") for a in plain]
        assert without_tls(secured) == expected
    scheduler = compose_command("scheduler", {}, tls)
    worker = compose_command("worker", {}, tls)
    assert _option(scheduler, "--protocol") == "tls"
    for flag in tls_flags:
        assert _option(scheduler, flag) == _option(worker, flag)


def test_compose_tls_client_environment_configures_security():
    """The client service's DASK_DISTRIBUTED__COMM__TLS__* variables are the dask settings that
    distributed.Security() reads, so `dask-repsim compare --scheduler tls://...` connects."""
    from distributed.security import Security

    environment = _yaml("compose.tls.yaml")["services"]["client"]["environment"]

    def dotted(tree: dict, prefix: str = "") -> dict:
        out = {}
        for key, value in tree.items():
            if isinstance(value, dict):
                out.update(dotted(value, f"{prefix}{key}."))
            else:
                out[f"{prefix}{key}"] = value
        return out

    settings = dotted(dask.config.collect_env(environment))
    assert len(settings) == len(environment)
    with dask.config.set(settings):
        security = Security()
    assert security.require_encryption is True
    assert security.tls_ca_file == "/certs/ca.pem"
    assert security.tls_client_cert == "/certs/client.pem"
    assert security.tls_client_key == "/certs/client-key.pem"


def test_compose_services():
    """Scheduler, worker and client share this version's image; the scheduler's ports are
    published on the host's loopback only; the object store is optional."""
    services = compose_services()
    images = {
        name: interpolate(services[name]["image"], {}) for name in ("scheduler", "worker", "client")
    }
    assert set(images.values()) == {IMAGE}
    for port in services["scheduler"]["ports"]:
        assert port.startswith("127.0.0.1:")
    assert services["s3"]["profiles"] == ["s3"]
    assert services["client"]["profiles"] == ["client"]
    assert services["scheduler"]["build"]["dockerfile"] == "deploy/Dockerfile"


# ---------------------------------------------------------------------------------------------
# SLURM through dask-jobqueue
# ---------------------------------------------------------------------------------------------


def test_jobqueue_job_script_renders():
    """SLURMCluster(...).job_script() with deploy/hpc/jobqueue.yaml: `dask worker` with the
    configured threads and memory, and SBATCH lines asking for them."""
    dask_jobqueue = pytest.importorskip("dask_jobqueue")
    settings = _yaml("hpc/jobqueue.yaml")["jobqueue"]["slurm"]
    with (
        _module("hpc/slurm_cluster.py").jobqueue_config(),
        dask_jobqueue.SLURMCluster(
            scheduler_options={"host": "127.0.0.1", "dashboard_address": None}
        ) as cluster,
    ):
        script = cluster.job_script()
    lines = script.splitlines()
    header = [line for line in lines if line.startswith("#SBATCH")]
    assert f"#SBATCH --cpus-per-task={settings['cores']}" in header
    assert f"#SBATCH -t {settings['walltime']}" in header
    assert f"#SBATCH -J {settings['name']}" in header
    (mem,) = [line.split("=", 1)[1] for line in header if line.startswith("#SBATCH --mem=")]
    assert parse_bytes(mem + "iB") >= parse_bytes(settings["memory"])  # SLURM's G is GiB

    command = shlex.split(lines[-1])
    assert command[1:4] == ["-m", "dask", "worker"]
    assert command[4].startswith("tcp://127.0.0.1:")
    threads = settings["cores"] // settings["processes"]
    assert int(_option(command, "--nthreads")) == threads
    memory = parse_bytes(_option(command, "--memory-limit"))
    per_process = parse_bytes(settings["memory"]) / settings["processes"]
    assert memory == pytest.approx(per_process, rel=0.01)
    assert _option(command, "--local-directory") == settings["local-directory"]


def test_jobqueue_config_is_applied_and_restored():
    """The example's config loader changes dask's jobqueue settings only inside its context."""
    before = dask.config.get("jobqueue.slurm.cores")
    with _module("hpc/slurm_cluster.py").jobqueue_config():
        cores = _yaml("hpc/jobqueue.yaml")["jobqueue"]["slurm"]["cores"]
        assert dask.config.get("jobqueue.slurm.cores") == cores
        assert dask.config.get("jobqueue.slurm.shebang")  # defaults kept for unset keys
    assert dask.config.get("jobqueue.slurm.cores") == before


# ---------------------------------------------------------------------------------------------
# Pins and images against pyproject.toml
# ---------------------------------------------------------------------------------------------


def _pyproject_requirements() -> dict[str, Requirement]:
    """What the image must install: [project] dependencies and the image's extras, with
    references to the package's own extras followed."""
    extras = PYPROJECT.get("optional-dependencies", {})
    own = canonicalize_name(PYPROJECT["name"])
    wanted, seen, out = [*PYPROJECT["dependencies"]], set(), {}
    for extra in IMAGE_EXTRAS:
        wanted += extras.get(extra, [])
    while wanted:
        req = Requirement(wanted.pop())
        name = canonicalize_name(req.name)
        if name == own:
            for extra in req.extras - seen:
                seen.add(extra)
                wanted += extras.get(extra, [])
            continue
        out[name] = req
    return out


def _pins() -> dict[str, Requirement]:
    lines = (DEPLOY / "requirements.txt").read_text().splitlines()
    reqs = [Requirement(line.split("#")[0]) for line in lines if line.split("#")[0].strip()]
    pins = {canonicalize_name(r.name): r for r in reqs}
    assert len(pins) == len(reqs), "a package is pinned twice"
    return pins


def test_pins_match_pyproject():
    """deploy/requirements.txt pins exactly the packages pyproject requires, each with == to a
    version inside pyproject's range and with the same extras."""
    required, pins = _pyproject_requirements(), _pins()
    assert set(pins) == set(required)
    for name, pin in pins.items():
        (spec,) = pin.specifier
        assert spec.operator == "==" and "*" not in spec.version, pin
        assert required[name].specifier.contains(Version(spec.version), prereleases=True), (
            f"{pin} is outside pyproject's {required[name]}"
        )
        assert pin.extras == required[name].extras, pin


def test_pins_agree_with_each_other():
    """Where the environment has a pinned package at its pinned version, that package's own
    requirements on the other pinned packages hold for their pins (e.g. s3fs on fsspec)."""
    pins = _pins()
    versions = {name: Version(next(iter(req.specifier)).version) for name, req in pins.items()}
    checked = 0
    for name, version in versions.items():
        try:
            installed = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        if Version(installed.version) != version:
            continue
        for text in installed.requires or []:
            req = Requirement(text)
            other = canonicalize_name(req.name)
            if other in versions and (req.marker is None or req.marker.evaluate({"extra": ""})):
                assert req.specifier.contains(versions[other], prereleases=True), (name, text)
                checked += 1
    if checked == 0:
        pytest.skip("no pinned package is installed at its pinned version here")


def test_dockerfile_installs_the_pins():
    """The Dockerfile installs requirements.txt, then the package without touching the pins,
    on a Python pyproject allows, labelled with pyproject's version."""
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    steps = [line.strip() for line in dockerfile.splitlines() if line.strip()]
    pip_steps = [s for s in steps if "pip install" in s]
    assert pip_steps[0] == "RUN pip install -r deploy/requirements.txt"
    assert "pip install --no-deps ." in pip_steps[1] and "pip check" in pip_steps[1]
    python = re.search(r"ARG PYTHON_VERSION=(\d+\.\d+)", dockerfile).group(1)
    assert SpecifierSet(PYPROJECT["requires-python"]).contains(Version(python))
    assert f'org.opencontainers.image.version="{VERSION}"' in dockerfile
    assert f"-t {IMAGE} ." in dockerfile  # the build command in its header


def test_docker_context_has_what_the_dockerfile_copies():
    """Each COPY source exists and is let through by deploy/Dockerfile.dockerignore."""
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    allowed = [p[1:].rstrip("/") for p in ignore if p.startswith("!")]
    copies = re.findall(r"^COPY (?!--from)(\S+) ", (DEPLOY / "Dockerfile").read_text(), re.M)
    assert copies
    for source in copies:
        assert (ROOT / source).exists(), source
        assert any(fnmatch.fnmatch(source, pattern) for pattern in allowed), source


def test_every_image_reference_is_this_version():
    """All deploy/ files name the same image, tagged with pyproject's version."""
    text = "\n".join(
        p.read_text() for p in DEPLOY.rglob("*") if p.is_file() and p.suffix in (".yaml", ".md")
    )
    tags = set(re.findall(r"ghcr\.io/dask-repsim/dask-repsim:([\w.-]+)", text))
    assert tags == {VERSION}


# ---------------------------------------------------------------------------------------------
# TLS certificates from deploy/tls/make-certs.sh
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def made_certs(tmp_path_factory) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    out = tmp_path_factory.mktemp("certs")
    subprocess.run(
        ["sh", str(DEPLOY / "tls" / "make-certs.sh"), str(out)],
        check=True, capture_output=True, timeout=120,
    )
    return out


def test_make_certs_chain_and_names(made_certs):
    """Both leaf certificates are signed by the CA, serve as TLS server and client, and name
    the scheduler; private keys are readable by their owner only."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.x509.oid import ExtendedKeyUsageOID

    ca = x509.load_pem_x509_certificate((made_certs / "ca.pem").read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for role in ("node", "client"):
        cert = x509.load_pem_x509_certificate((made_certs / f"{role}.pem").read_bytes())
        cert.verify_directly_issued_by(ca)
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH} <= set(usage)
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert "scheduler" in names.get_values_for_type(x509.DNSName)
        mode = stat.S_IMODE((made_certs / f"{role}-key.pem").stat().st_mode)
        assert mode == 0o600, oct(mode)


def test_make_certs_mutual_tls_handshake(made_certs):
    """A server holding node.pem that requires client certificates (as dask's listeners do)
    accepts client.pem, and refuses a client without a certificate."""

    def server_context():
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=made_certs / "ca.pem")
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_cert_chain(made_certs / "node.pem", made_certs / "node-key.pem")
        return ctx

    def client_context(with_cert: bool):
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=made_certs / "ca.pem")
        ctx.check_hostname = False
        if with_cert:
            ctx.load_cert_chain(made_certs / "client.pem", made_certs / "client-key.pem")
        return ctx

    def exchange(with_cert: bool) -> bytes:
        left, right = socket.socketpair()
        left.settimeout(10)
        right.settimeout(10)
        served = {}

        def serve():
            try:
                with server_context().wrap_socket(left, server_side=True) as conn:
                    served["peer"] = conn.getpeercert()["subject"]
                    conn.sendall(b"ok")
            except (ssl.SSLError, OSError) as err:
                served["error"] = err

        thread = threading.Thread(target=serve)
        thread.start()
        try:
            with client_context(with_cert).wrap_socket(right) as conn:
                return conn.recv(2)
        finally:
            thread.join(timeout=10)
            left.close()
            right.close()

    assert exchange(with_cert=True) == b"ok"
    with pytest.raises((ssl.SSLError, OSError)):
        assert exchange(with_cert=False) == b"ok"
