"""docker-compose.yml's fleet profile: two application hosts (collector + Locust worker on one FIFO volume each),
the master and TimescaleDB, consistent with each other and with the harness's options (no Docker engine needed)."""

from __future__ import annotations

import configargparse
import psycopg2.extensions
import pytest
import yaml
from test_containers import COMPOSE_FILE, DATABASE, _argv, _mounts, _option, _problems

from loadtests.options import add_options

HOSTS = ("app1", "app2")
MASTER = "fleet-master"


@pytest.fixture(scope="module")
def services() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())["services"]


def harness_options(argv: list[str], env: dict[str, str]):
    """The harness's options as a worker or master would parse them (command line over NAMEDPIPER_* variables)."""
    parser = configargparse.ArgumentParser()
    add_options(parser)
    return parser.parse_known_args(argv, env_vars={k: str(v) for k, v in env.items()})[0]


class TestFleetProfile:
    """The fleet profile runs real hosts' topology: one FIFO per host, one master, one central database."""

    def test_only_with_the_profile(self, services):
        """Every fleet service belongs to the fleet profile; plain `docker compose up` starts none of them."""
        names = [MASTER, *(f"{h}-{role}" for h in HOSTS for role in ("collector", "worker"))]
        for name in names:
            assert services[name]["profiles"] == ["fleet"], name

    @pytest.mark.parametrize("name", [MASTER, *(f"{h}-{r}" for h in HOSTS for r in ("collector", "worker"))])
    def test_commands_name_modules_and_files_that_exist(self, services, name):
        """Each fleet container runs an importable module and files that are in the repository."""
        assert _problems(_argv(services[name])) == []

    def test_each_host_shares_one_fifo_volume_between_its_collector_and_worker_only(self, services):
        """A host's collector reads the FIFO its worker writes; no other host mounts that volume."""
        volumes = set()
        for host in HOSTS:
            collector, worker = services[f"{host}-collector"], services[f"{host}-worker"]
            fifo = _option(_argv(collector), "--fifo")
            assert worker["environment"]["NAMEDPIPER_FIFO"] == fifo
            folder = fifo.rsplit("/", 1)[0]
            volume = _mounts(collector)[folder]
            assert _mounts(worker)[folder] == volume
            volumes.add(volume)
        assert len(volumes) == len(HOSTS)
        for name, service in services.items():
            owners = [h for h in HOSTS if name.startswith(f"{h}-")]
            for volume in volumes & set(_mounts(service).values()):
                assert owners, f"{name} mounts {volume}"
                assert volume == f"fifo-{owners[0]}", name

    def test_workers_join_the_master_as_their_own_hosts(self, services):
        """Each worker is a Locust worker of the master, with a host id of its own, starting no collector."""
        ids = set()
        for host in HOSTS:
            service = services[f"{host}-worker"]
            argv = _argv(service)
            assert "--worker" in argv
            assert _option(argv, "--master-host") == MASTER
            options = harness_options(argv[3:], service["environment"])
            assert options.collector_cmd == "none"
            ids.add(options.host_id)
            assert MASTER in service["depends_on"]
        assert ids == set(HOSTS)

    def test_master_runs_fleet_conf_expecting_every_worker(self, services):
        """The master's scenario is fleet.conf, without local hosts, expecting as many workers as there are."""
        argv = _argv(services[MASTER])
        assert _option(argv, "--config") == "scenarios/fleet.conf"
        assert _option(argv, "--local-hosts") == "0"
        assert int(_option(argv, "--expect-workers")) == len(HOSTS)
        assert "ports" not in services[MASTER]  # the master port stays on the compose network

    def test_everyone_reaches_the_database_service_without_a_password_in_a_command(self, services):
        """The DSN names the TimescaleDB service; the password rides in PGPASSWORD, never in a command line."""
        for name in (MASTER, *(f"{h}-{r}" for h in HOSTS for r in ("collector", "worker"))):
            env = services[name]["environment"]
            assert psycopg2.extensions.parse_dsn(env["NAMEDPIPER_DSN"])["host"] == DATABASE
            assert "password" not in env["NAMEDPIPER_DSN"].lower()
            assert "PGPASSWORD" in env
            assert not any("password" in a.lower() for a in _argv(services[name]))
