"""docker-compose.yml, reference/Dockerfile, .pgpass and the CI workflow agree with each other and with the code."""

from __future__ import annotations

import importlib.util
import itertools
import json
import re
import shlex
import subprocess
from pathlib import Path

import psycopg2.extensions
import pytest
import yaml

from reference.collector.cli import build_parser as collector_parser
from reference.emitter import build_parser as emitter_parser
from reference.sizes import MAX_SOURCE_LENGTH

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "reference" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PGPASS = ROOT / ".pgpass"
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"
CI_RUN = ROOT / ".ci" / "run"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

DATABASE = "timescaledb"
REFERENCE_SERVICES = ("collector", "emitter", "locust")
FIFO_VOLUME = "fifo"
# Options whose value is a path relative to the image's WORKDIR, which holds a copy of the repository.
PATH_OPTIONS = ("-f", "--locustfile", "--config")
COMPOSE_CONFIG_TIMEOUT_S = 60
# ${NAME:-default} as compose interpolates it when NAME is unset.
COMPOSE_DEFAULT = re.compile(r"\$\{(\w+):-([^}]*)\}")


def _compose_default(text: str) -> str:
    """text with every ${NAME:-default} replaced by its default."""
    return COMPOSE_DEFAULT.sub(lambda m: m.group(2), text)


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs of reference/Dockerfile, continuation lines joined, comments dropped."""
    logical, pending = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1].strip()) for text in logical]


def _instruction(name: str) -> str:
    """The arguments of the last instruction called name (the one in force)."""
    values = [args for key, args in _dockerfile() if key == name]
    assert values, f"reference/Dockerfile has no {name}"
    return values[-1]


def _expand(text: str) -> str:
    """text with ${NAME} and $NAME of the Dockerfile's ARG defaults substituted, as the build does."""
    defaults = dict(args.split("=", 1) for key, args in _dockerfile() if key == "ARG" and "=" in args)
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: defaults.get(m.group(1) or m.group(2), m.group(0)), text)


def _argv(service: dict) -> list[str]:
    """What a reference container runs: compose's entrypoint/command over the image's ENTRYPOINT/CMD."""
    if "entrypoint" in service:
        # Compose drops the image's CMD when a service sets its own entrypoint.
        return [*service["entrypoint"], *service.get("command", [])]
    return [*json.loads(_instruction("ENTRYPOINT")), *service.get("command", json.loads(_instruction("CMD")))]


def _problems(argv: list[str]) -> list[str]:
    """What in argv names a module that cannot be imported or a repository path that does not exist."""
    problems = []
    if argv[:2] != ["python", "-m"]:
        return [f"{argv} does not start with python -m"]
    if importlib.util.find_spec(argv[2]) is None:
        problems.append(f"module {argv[2]} not found")
    for option, value in itertools.pairwise(argv):
        if option in PATH_OPTIONS and not (ROOT / value).exists():
            problems.append(f"{option} {value}: no such file in the repository")
    return problems


def _option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def _mounts(service: dict) -> dict[str, str]:
    """Mount target -> source of a service's volumes, short or long syntax."""
    mounts = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            mounts[volume["target"]] = volume.get("source", "")
        else:
            source, target = volume.split(":")[:2]
            mounts[target] = source
    return mounts


def _published(entry: str | dict) -> tuple[str, int, int]:
    """(host ip, host port, container port) of one ports entry, defaults of ${...} applied."""
    if isinstance(entry, dict):
        return entry.get("host_ip", ""), int(_compose_default(str(entry["published"]))), int(entry["target"])
    parts = _compose_default(str(entry)).split(":")
    if len(parts) != 3:
        return "", int(parts[0]), int(parts[-1])
    return parts[0], int(parts[1]), int(parts[2])


def _run_lines(job: dict) -> list[str]:
    return [step["run"] for step in job["steps"] if "run" in step]


def _shell_commands(job: dict) -> list[list[str]]:
    """Every command line of a job's run steps, split like the shell would (continuation lines joined)."""
    lines = "\n".join(_run_lines(job)).replace("\\\n", " ").splitlines()
    return [shlex.split(line) for line in lines if line.strip()]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


@pytest.fixture(scope="module")
def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


class TestComposeServices:
    def test_the_four_services_exist(self, services):
        """The stack has the database, the collector, the emitter and Locust."""
        assert {DATABASE, *REFERENCE_SERVICES} <= set(services)

    def test_database_is_timescaledb_on_postgresql_16(self, services):
        """The database is the official TimescaleDB image for PostgreSQL 16."""
        image = services[DATABASE]["image"]
        assert image.startswith("timescale/timescaledb:")
        assert image.endswith("-pg16")

    def test_database_healthcheck_uses_pg_isready(self, services):
        """The database is healthy when pg_isready says so."""
        test = services[DATABASE]["healthcheck"]["test"]
        assert "pg_isready" in (test if isinstance(test, str) else " ".join(test))

    def test_database_credentials_are_the_readmes(self, services):
        """myuser and mydb as in the original README; the password comes from a variable with a placeholder."""
        env = services[DATABASE]["environment"]
        assert env["POSTGRES_USER"] == "myuser"
        assert env["POSTGRES_DB"] == "mydb"
        assert COMPOSE_DEFAULT.fullmatch(env["POSTGRES_PASSWORD"]).group(1) == "POSTGRES_PASSWORD"

    def test_collector_waits_for_a_healthy_database(self, services):
        """The collector starts only once the healthcheck passes."""
        assert services["collector"]["depends_on"][DATABASE]["condition"] == "service_healthy"

    def test_emitter_and_locust_start_after_the_collector(self, services):
        """Writers start after the collector, which creates the FIFO."""
        for name in ("emitter", "locust"):
            assert "collector" in services[name]["depends_on"]

    def test_reference_services_build_the_reference_dockerfile(self, services):
        """collector, emitter and locust run the one image built from reference/Dockerfile."""
        for name in REFERENCE_SERVICES:
            build = services[name]["build"]
            assert (ROOT / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
        assert len({services[name]["image"] for name in REFERENCE_SERVICES}) == 1

    @pytest.mark.parametrize("name", REFERENCE_SERVICES)
    def test_commands_name_modules_and_files_that_exist(self, services, name):
        """Each command runs an importable module with locustfiles and scenarios that are in the repository."""
        assert _problems(_argv(services[name])) == []

    def test_collector_arguments_parse(self, services):
        """The collector's command line is accepted by its parser and prints stats every few seconds."""
        argv = _argv(services["collector"])
        assert argv[2] == "reference.collector"
        args = collector_parser().parse_args(argv[3:])
        assert 0 < args.stats_interval <= 5
        assert args.apply_schema

    def test_emitter_arguments_parse(self, services):
        """The emitter writes at a modest rate for a long time, and restarts when its time is up."""
        argv = _argv(services["emitter"])
        assert argv[2] == "reference.emitter"
        args = emitter_parser().parse_args(argv[3:])
        assert args.duration is not None
        assert args.duration >= 600
        assert 0 < args.rate <= 1000
        assert len(f"{args.source}{args.writers - 1}") <= MAX_SOURCE_LENGTH
        assert services["emitter"]["restart"] in ("always", "unless-stopped")

    def test_one_fifo_on_one_named_volume(self, compose, services):
        """Collector, emitter and locust open the same FIFO, inside the shared named volume each one mounts."""
        fifos = {
            "collector": _option(_argv(services["collector"]), "--fifo"),
            "emitter": _option(_argv(services["emitter"]), "--fifo"),
            "locust": services["locust"]["environment"]["NAMEDPIPER_FIFO"],
        }
        assert len(set(fifos.values())) == 1
        folder = str(Path(fifos["collector"]).parent)
        for name in REFERENCE_SERVICES:
            assert _mounts(services[name]).get(folder) == FIFO_VOLUME, name
        assert FIFO_VOLUME in compose["volumes"]

    def test_collector_and_locust_connect_to_the_database_service(self, services):
        """NAMEDPIPER_DSN names the database service, its user and database; the password rides in PGPASSWORD."""
        db_env = services[DATABASE]["environment"]
        for name in ("collector", "locust"):
            env = services[name]["environment"]
            dsn = psycopg2.extensions.parse_dsn(env["NAMEDPIPER_DSN"])
            assert dsn["host"] == DATABASE
            assert (dsn["user"], dsn["dbname"]) == (db_env["POSTGRES_USER"], db_env["POSTGRES_DB"])
            assert env["PGPASSWORD"] == db_env["POSTGRES_PASSWORD"]

    def test_locust_relies_on_the_compose_collector(self, services):
        """The harness in compose starts no collector of its own and writes reports to a mounted folder."""
        env = services["locust"]["environment"]
        assert env["NAMEDPIPER_COLLECTOR_CMD"] == "none"
        assert env["NAMEDPIPER_REPORT_DIR"] in _mounts(services["locust"])

    def test_ports_are_published_on_localhost_only(self, services):
        """Every published port binds 127.0.0.1; the database publishes 5432 and Locust its web UI on 8089."""
        published = {}
        for name, service in services.items():
            for entry in service.get("ports", []):
                host_ip, host_port, container_port = _published(entry)
                assert host_ip == "127.0.0.1", f"{name}: {entry}"
                published[name, container_port] = host_port
        assert published[DATABASE, 5432] == 5432
        assert published["locust", 8089] == 8089


class TestDockerfile:
    def test_base_image_is_python_slim(self):
        """The image starts from a slim Python 3.11+ base."""
        assert re.fullmatch(r"python:3\.1[1-9]-slim(-\w+)?", _instruction("FROM"))

    def test_runs_as_a_non_root_user(self):
        """The last USER is a numeric uid other than 0, so runtimes can check it without /etc/passwd."""
        uid = _expand(_instruction("USER")).split(":")[0]
        assert uid.isdigit()
        assert int(uid) != 0

    def test_entrypoint_and_cmd_run_the_collector(self):
        """ENTRYPOINT is python -m and CMD is a collector command line its parser accepts."""
        argv = [*json.loads(_instruction("ENTRYPOINT")), *json.loads(_instruction("CMD"))]
        assert _problems(argv) == []
        assert argv[2] == "reference.collector"
        collector_parser().parse_args(argv[3:])

    def test_copies_files_that_exist(self):
        """Every COPY source (other than a wildcard) is in the repository."""
        for key, args in _dockerfile():
            if key == "COPY":
                for source in shlex.split(args)[:-1]:
                    assert "*" in source or (ROOT / source).exists(), source

    def test_the_fifo_folder_belongs_to_the_app_user(self):
        """The shared volume's mount point is created and chowned for the user the containers run as."""
        user = _expand(_instruction("USER"))
        runs = [_expand(args).replace('"', "") for key, args in _dockerfile() if key == "RUN"]
        assert any("/fifo" in run and f"chown {user} " in run for run in runs)

    def test_the_compiled_parser_is_built_and_its_compiler_removed(self):
        """The install RUN brings gcc, fails unless the C parser imports, and purges gcc in the same layer."""
        (run,) = [args for key, args in _dockerfile() if key == "RUN" and "pip install" in args]
        steps = [step.strip() for step in run.split("&&")]
        install = next(i for i, step in enumerate(steps) if step.startswith("apt-get install") and " gcc" in step)
        pip = next(i for i, step in enumerate(steps) if step.startswith("pip install"))
        check = steps.index('python -c "import reference.collector._fastrows"')
        purge = next(i for i, step in enumerate(steps) if step.startswith("apt-get purge") and " gcc" in step)
        assert install < pip < check < purge

    def test_dockerignore_keeps_local_state_out(self):
        """Git data, tox and CI venvs, the embedded database, reports and bytecode stay out of the build context."""
        patterns = {line.strip() for line in DOCKERIGNORE.read_text().splitlines()}
        assert {".git", ".tox", ".namedpiper", "reports", ".ci/venv"} <= patterns
        assert any("__pycache__" in pattern for pattern in patterns)


class TestPgpass:
    def test_pgpass_matches_the_compose_database(self, services):
        """.pgpass names the compose database's host port, database, user and placeholder password."""
        lines = [line for line in PGPASS.read_text().splitlines() if line and not line.startswith("#")]
        assert len(lines) == 1
        host, port, dbname, user, password = lines[0].split(":")
        env = services[DATABASE]["environment"]
        published = {_published(entry)[2]: _published(entry)[1] for entry in services[DATABASE]["ports"]}
        assert host == "localhost"
        assert int(port) == published[5432]
        assert (dbname, user) == (env["POSTGRES_DB"], env["POSTGRES_USER"])
        assert password == _compose_default(env["POSTGRES_PASSWORD"]) == "CHANGE_ME"


class TestWorkflow:
    def test_tox_runs_on_each_supported_python(self, workflow):
        """One job runs tox, the command .ci/run and the README give, on Python 3.11, 3.12 and 3.13."""
        ci_run = [line for line in CI_RUN.read_text().splitlines() if line.strip() and not line.startswith("#")]
        assert ci_run[-1].split()[0].endswith("/tox") or ci_run[-1].split()[0] == "tox"
        jobs = [job for job in workflow["jobs"].values() if ["tox"] in _shell_commands(job)]
        assert jobs, "no job runs `tox`"
        versions = {str(v) for v in jobs[0]["strategy"]["matrix"]["python-version"]}
        assert {"3.11", "3.12", "3.13"} <= versions

    def test_integration_job_uses_a_timescaledb_service(self, workflow, services):
        """The integration job runs tox -e integration against a TimescaleDB service that NAMEDPIPER_DSN names."""
        jobs = [job for job in workflow["jobs"].values() if ["tox", "-e", "integration"] in _shell_commands(job)]
        assert len(jobs) == 1
        job = jobs[0]
        (service,) = job["services"].values()
        assert service["image"] == services[DATABASE]["image"]
        assert "pg_isready" in service["options"]
        dsn = psycopg2.extensions.parse_dsn(job["env"]["NAMEDPIPER_DSN"])
        assert (dsn["user"], dsn["dbname"]) == (service["env"]["POSTGRES_USER"], service["env"]["POSTGRES_DB"])
        assert dsn["password"] == service["env"]["POSTGRES_PASSWORD"]
        assert f"{dsn['port']}:5432" in service["ports"]

    def test_scenario_job_runs_an_existing_scenario_and_keeps_the_reports(self, workflow):
        """The scenario job runs Locust headless on a scenario that exists and uploads reports/ whatever happens."""
        jobs = [job for job in workflow["jobs"].values() if any(argv[0] == "locust" for argv in _shell_commands(job))]
        assert len(jobs) == 1
        job = jobs[0]
        commands = _shell_commands(job)
        install = commands.index(["python", "-m", "pip", "install", "."])
        (argv,) = [argv for argv in commands if argv[0] == "locust"]
        assert commands.index(argv) > install
        assert "--headless" in argv
        assert _problems(["python", "-m", *argv]) == []
        assert job["env"]["NAMEDPIPER_REPORT_DIR"] == "reports"
        uploads = [step for step in job["steps"] if step.get("uses", "").startswith("actions/upload-artifact@")]
        assert len(uploads) == 1
        assert uploads[0]["if"] == "always()"
        assert uploads[0]["with"]["path"].rstrip("/") == "reports"


class TestDocs:
    def test_documented_scenarios_exist(self):
        """Every scenario the README and docs/ run is in scenarios/ (NAME.conf is the README's placeholder)."""
        configs = re.findall(r"--config (scenarios/[a-z_]+\.conf)", "\n".join(doc.read_text() for doc in DOCS))
        assert configs
        for config in configs:
            assert (ROOT / config).exists(), config


class TestComposeConfig:
    @pytest.mark.parametrize("client", [["docker", "compose"], ["docker-compose"]], ids=["plugin", "legacy"])
    def test_compose_client_accepts_the_file(self, client):
        """`config -q` of each compose client present validates docker-compose.yml (no engine needed)."""
        try:
            subprocess.run([*client, "version"], capture_output=True, timeout=COMPOSE_CONFIG_TIMEOUT_S, check=True)
        except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired):
            pytest.skip(f"`{' '.join(client)}` is not installed: install it to validate docker-compose.yml")
        result = subprocess.run(
            [*client, "-f", str(COMPOSE_FILE), "config", "-q"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=COMPOSE_CONFIG_TIMEOUT_S,
            check=False,
        )
        assert result.returncode == 0, result.stderr
