"""`meso controller` end to end on the lab: the API over real HTTP (httpx and curl), the CLI as
its client with the same output and exit codes as embedded, Prometheus, SIGTERM and restart with
a service running, and the controller re-placing a vanished instance with no command typed."""

import json
import os
import re
import ssl
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from meso_agentless.testing.controller import running_controller, start_controller
from tests.lab.common import cli, units, wait_for

pytestmark = pytest.mark.lab

ROOT = Path(__file__).parents[2]
FAILING = """\
job: flaky
tasks:
  - name: t
    command: ["sh", "-c", "exit 3"]
    resources: {cpus: 0.1, mem: 32MiB}
    restart: {policy: on-failure, attempts: 1}
"""
HUGE = 'job: huge\ntasks:\n  - name: t\n    command: ["true"]\n    resources: {cpus: 64}\n'
BAD = 'job: bad\ntasks:\n  - name: t\n    command: ["true"]\n    count: -1\n'


@pytest.fixture
def base_env(meso_lab):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESO_")}
    return {**env, "MESO_INVENTORY": str(meso_lab.inventory)}


def normalized(name, done):
    """What must be equal between embedded and controller runs of one command."""
    out = done.stdout
    if name in ("status", "run-json"):
        data = json.loads(out)
        jobs = data.get("jobs", [data])
        return done.returncode, [
            sorted(
                (t["task"], t["index"], t["attempt"], t["state"], t["exit_code"])
                for t in j["tasks"]
            )
            for j in jobs
        ]
    if name == "hosts":
        hosts = json.loads(out)["hosts"]
        return done.returncode, [(h["host"], h["state"], sorted(h)) for h in hosts]
    return done.returncode, out, done.stderr.splitlines()[-1:] if done.returncode else []


def clean_journals(lab):
    """Each session's state names its units the same as earlier runs on these hosts did, and
    `meso logs` reads a unit's journal: start from an empty one."""
    for host in lab.hosts:
        lab.run(host.name, ["journalctl", "--rotate", "--vacuum-time=1s", "-q"])


def session(env, tmp_path):
    """The same commands, in order, as a user would type them."""
    files = {}
    for name, text in (("flaky", FAILING), ("huge", HUGE), ("bad", BAD)):
        files[name] = tmp_path / f"{name}.yaml"
        files[name].write_text(text)  # the same file both times: errors name it
    wordcount, web = str(ROOT / "examples/wordcount.yaml"), str(ROOT / "examples/web.yaml")
    results = {}
    results["plan"] = cli(env, "plan", wordcount, web, "-o", "json")
    results["run"] = cli(env, "run", wordcount)
    results["run-json"] = cli(env, "run", str(files["flaky"]), "-o", "json")
    results["run-huge"] = cli(env, "run", str(files["huge"]))
    results["run-bad"] = cli(env, "run", str(files["bad"]))
    results["logs"] = cli(env, "logs", "wordcount", "mapper/2")
    results["logs-missing"] = cli(env, "logs", "wordcount", "nosuch")
    results["status"] = cli(env, "status", "wordcount", "-o", "json")
    results["status-missing"] = cli(env, "status", "nosuch")
    results["run-done"] = cli(env, "run", wordcount)  # retried: done already, not run twice
    results["run-again"] = cli(env, "run", wordcount, "--again")
    results["run-service"] = cli(env, "run", web)
    results["scale"] = cli(env, "scale", "web", "server", "4")
    results["kill"] = cli(env, "kill", "web")
    results["hosts"] = cli(env, "hosts", "-o", "json")
    results["schema"] = cli(env, "schema")
    cli(env, "kill", "huge")
    return results


def test_every_command_gives_the_same_output_and_exit_code_through_the_controller(
    meso_lab, base_env, tmp_path
):
    clean_journals(meso_lab)
    embedded = session({**base_env, "MESO_STATE": str(tmp_path / "embedded.db")}, tmp_path)
    clean_journals(meso_lab)
    with running_controller(meso_lab.inventory, tmp_path / "ctl") as ctl:
        remote = session({**base_env, **ctl.env}, tmp_path)
    codes = {name: done.returncode for name, done in embedded.items()}
    assert codes == {"plan": 0, "run": 0, "run-json": 1, "run-huge": 3, "run-bad": 2, "logs": 0,
                     "logs-missing": 2, "status": 0, "status-missing": 2, "run-done": 0,
                     "run-again": 0, "run-service": 0,
                     "scale": 0, "kill": 0, "hosts": 0, "schema": 0}  # fmt: skip
    for name in embedded:
        assert normalized(name, remote[name]) == normalized(name, embedded[name]), name
    assert embedded["run"].stdout == "wordcount: all 5 task(s) finished\n"
    assert embedded["run-done"].stdout == (
        "wordcount: already done (run 1): all 5 task(s) finished; --again runs it again\n"
    )
    assert embedded["run-again"].stdout == "wordcount: all 5 task(s) finished\n"
    assert embedded["logs"].stdout == "[('a', 2), ('b', 1)]\n"
    assert "web/server: 4 instance(s); service up: 4 instances running" in remote["scale"].stdout
    assert "Traceback" not in "".join(d.stderr for d in remote.values())


def test_the_api_over_http_with_httpx_and_curl_and_prometheus(meso_lab, tmp_path):
    with running_controller(meso_lab.inventory, tmp_path) as ctl:
        assert oct(ctl.token_file.stat().st_mode & 0o777) == "0o600"
        with httpx.Client(base_url=ctl.url, headers=ctl.headers, timeout=30) as http:
            assert httpx.get(f"{ctl.url}/v1/health").json()["ok"] is True
            assert httpx.get(f"{ctl.url}/v1/hosts").status_code == 401
            hosts = http.get("/v1/hosts").json()["hosts"]
            assert [h["host"] for h in hosts] == [h.name for h in meso_lab.hosts]
            assert all(h["state"] == "up" and h["boot"] for h in hosts)
            job = (ROOT / "examples/wordcount.yaml").read_text()
            done = http.post("/v1/jobs", content=job,
                             headers={"Content-Type": "application/yaml"})  # fmt: skip
            assert done.status_code == 201, done.text
            final = wait_for(lambda: (j := http.get("/v1/jobs/wordcount").json())["state"]
                             == "done" and j)  # fmt: skip
            assert final["outcome"]["code"] == 0 and final["counts"] == {"finished": 5}
            metrics = http.get("/metrics").text
        curl = subprocess.run(["curl", "-sf", "-H", f"Authorization: Bearer {ctl.token}",
                               f"{ctl.url}/v1/hosts"], capture_output=True, text=True,
                              timeout=30, check=True)  # fmt: skip
        assert len(json.loads(curl.stdout)["hosts"]) == len(meso_lab.hosts)
    families = {f.name: f for f in text_string_to_metric_families(metrics)}
    assert {s.labels["state"]: s.value for s in families["meso_hosts"].samples} == {
        "up": float(len(meso_lab.hosts))}  # fmt: skip
    assert {s.labels["state"]: s.value for s in families["meso_tasks"].samples} == {
        "finished": 5.0}  # fmt: skip
    samples = [s for s in families["meso_sample_seconds"].samples
               if s.name == "meso_sample_seconds_count"]  # fmt: skip
    assert sum(s.value for s in samples) >= len(meso_lab.hosts)


def test_sigterm_and_restart_with_a_service_running_loses_and_duplicates_nothing(
    meso_lab, base_env, tmp_path
):
    ctl = start_controller(meso_lab.inventory, tmp_path)
    env = {**base_env, **ctl.env}
    try:
        assert cli(env, "run", str(ROOT / "examples/web.yaml")).returncode == 0
        before = {u: h for u, h in units(meso_lab).items() if u.startswith("meso-web_")}
        assert len(before) == 3
        started = time.monotonic()
        assert ctl.stop(timeout=10) == 0
        assert time.monotonic() - started < 10
        assert units(meso_lab) == before  # the tasks keep running without a controller
        ctl = start_controller(meso_lab.inventory, tmp_path)
        env = {**base_env, **ctl.env}
        status = json.loads(cli(env, "status", "web", "-o", "json").stdout)["jobs"][0]
        assert {t["unit"]: t["host"] for t in status["tasks"]} == before
        assert {t["state"] for t in status["tasks"]} == {"running"}
        time.sleep(3)  # a few cycles: nothing relaunched, nothing adopted twice
        assert {u: h for u, h in units(meso_lab).items() if u.startswith("meso-web_")} == before
        # an instance stopped behind its back is launched again by the controller itself
        victim, host = sorted(before.items())[0]
        meso_lab.run(host, ["systemctl", "stop", f"{victim}.service"])
        seen = time.monotonic()
        replaced = wait_for(lambda: len([u for u in units(meso_lab) if u.startswith("meso-web_")])
                            == 3 and units(meso_lab), timeout=30)  # fmt: skip
        assert victim not in replaced
        assert time.monotonic() - seen < 10
    finally:
        cli(env, "kill", "web")
        ctl.stop()
    assert not [u for u in units(meso_lab) if u.startswith("meso-web_")]


def test_a_task_end_is_seen_through_the_controller_and_hosts_answers_from_it(
    meso_lab, base_env, tmp_path
):
    """How soon: bench/controller_bench.py prints both figures (`meso run` of a 2 s task, and
    `meso hosts` through the controller); here, that they work."""
    job = tmp_path / "quick.yaml"
    job.write_text("job: quick\ntasks:\n  - name: t\n    command: [\"sleep\", \"2\"]\n"
                   "    resources: {cpus: 0.1, mem: 32MiB}\n")  # fmt: skip
    with running_controller(meso_lab.inventory, tmp_path / "ctl") as ctl:
        env = {**base_env, **ctl.env}
        done = cli(env, "run", str(job))
        assert done.returncode == 0, done.stderr
        hosts = cli(env, "hosts", "-o", "json")
        assert hosts.returncode == 0, hosts.stderr
        names = {h["host"] for h in json.loads(hosts.stdout)["hosts"]}
        assert names == {h.name for h in meso_lab.hosts}
    assert re.search(r"quick/t\[0\] on \S+: finished \(exit 0\)", done.stderr)


def test_a_second_controller_or_embedded_writer_on_the_same_state_is_told_who_holds_it(
    meso_lab, base_env, tmp_path
):
    with running_controller(meso_lab.inventory, tmp_path) as ctl:
        other = cli(base_env, "controller", "--state", str(ctl.state), "--listen",
                    "127.0.0.1:0", "--token-file", str(tmp_path / "t2"))  # fmt: skip
        assert other.returncode == 2
        assert f"belongs to a running meso controller (pid {ctl.process.pid}, {ctl.url})" in (
            other.stderr
        )
        embedded = cli({**base_env, "MESO_STATE": str(ctl.state)}, "run",
                       str(ROOT / "examples/wordcount.yaml"))  # fmt: skip
        assert embedded.returncode == 2 and f"MESO_ADDR={ctl.url}" in embedded.stderr


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as an operator would make them."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "meso controller")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(
            ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    return cert_file, key_file


def test_tls_with_the_operators_certificate(meso_lab, base_env, tmp_path):
    cert, key = self_signed(tmp_path)
    with running_controller(meso_lab.inventory, tmp_path / "ctl", "--tls-cert", str(cert),
                            "--tls-key", str(key)) as ctl:  # fmt: skip
        assert ctl.url.startswith("https://127.0.0.1:")
        trusting = ssl.create_default_context(cafile=str(cert))
        assert httpx.get(f"{ctl.url}/v1/health", verify=trusting).json()["ok"] is True
        with pytest.raises(httpx.ConnectError):  # not trusted without the certificate
            httpx.get(f"{ctl.url}/v1/health")
        done = cli({**base_env, **ctl.env, "SSL_CERT_FILE": str(cert)}, "hosts", "-o", "json")
        assert done.returncode == 0, done.stderr
        assert len(json.loads(done.stdout)["hosts"]) == len(meso_lab.hosts)
