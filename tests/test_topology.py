"""Every row of the topology's table "What must hold once the lab is up", asserted from the
host the row names, with real clients over the lab's real network and firewall rules.

A "filtered" port is one whose connect times out: a DROP, not a refusal. Where a row says a
port gives no answer, a service really listens behind it (the gateway, MariaDB, gunicorn), so
what the test sees is the firewall and not an absent server.
"""

from __future__ import annotations

import uuid

import pytest

INTERNET = ("office", "outsider", "acme")
APP = "https://app.example.com/"


def test_office_gets_the_page_flask_renders_from_mysql(lab):
    text = f"written on db {uuid.uuid4().hex}"
    lab.sql(f"INSERT INTO notes.notes (body) VALUES ('{text}')")
    r = lab.curl("office", APP)
    assert r.status == 200, r
    assert text in r.body, "the page does not show a row just written to MySQL"
    assert "text/html" in r.headers.get("content-type", "")


@pytest.mark.parametrize("status_for", ["GET", "POST"])
def test_office_http_is_redirected_to_https_with_path_and_query(lab, status_for):
    r = lab.curl("office", "http://app.example.com/any/path?q=1", "-X", status_for)
    assert r.status in (301, 308), r
    assert r.headers.get("location") == "https://app.example.com/any/path?q=1"


@pytest.mark.parametrize("url", [APP, "http://app.example.com/", "http://app.example.com/x?y=1"])
def test_outsider_gets_403_from_the_gateway_saying_why(lab, url):
    r = lab.curl("outsider", url)
    assert r.status == 403, r
    assert 0 < len(r.body) < 200, f"the body should be short and say why: {r.body!r}"
    assert "203.0.113.200" in r.body or "allow" in r.body.lower(), r.body


@pytest.mark.parametrize("host", ["acme", "outsider"])
def test_acme_challenge_path_is_neither_redirected_nor_filtered(lab, host):
    """The challenge path reaches the gateway's ACME responder from any internet address.

    With no order pending the responder answers 404 for an unknown token: not the redirect,
    not the 403 the outsider gets everywhere else.
    """
    r = lab.curl(host, "http://app.example.com/.well-known/acme-challenge/TOKEN")
    assert r.status not in (0, 301, 308, 403), r
    assert r.status == 404, r


@pytest.mark.parametrize("host", INTERNET)
@pytest.mark.parametrize("port", [22, 3306, 8000, 9180, 8080])
def test_public_address_answers_nothing_but_80_and_443(lab, host, port):
    assert lab.connect(host, "198.51.100.10", port) == "timeout"


@pytest.mark.parametrize("host", INTERNET)
def test_public_address_does_answer_80_and_443(lab, host):
    assert lab.connect(host, "198.51.100.10", 80) == "open"
    assert lab.connect(host, "198.51.100.10", 443) == "open"


@pytest.mark.parametrize("host", INTERNET)
@pytest.mark.parametrize(
    "addr,port",
    [("10.0.1.10", 443), ("10.0.1.10", 80), ("10.0.2.10", 3306), ("198.51.100.20", 22),
     ("198.51.100.20", 3306)],
)  # fmt: skip
def test_private_addresses_and_nat_address_are_out_of_reach(lab, host, addr, port):
    assert lab.connect(host, addr, port) in ("timeout", "unreachable")


@pytest.mark.parametrize("host", INTERNET)
@pytest.mark.parametrize("addr", ["10.0.1.10", "10.0.2.10", "198.51.100.20"])
def test_no_ping_from_the_internet_inward(lab, host, addr):
    assert not lab.ping(host, addr)


def test_web_reaches_mysql_and_app_logs_in_over_tls(lab):
    assert lab.connect("web", "10.0.2.10", 3306) == "open"
    password = (lab.state / "web" / "app-password").read_text().strip()
    login = [
        "mariadb", "-h", "10.0.2.10", "-u", "app", "--ssl", f"--ssl-ca={lab.ca}",
        "--ssl-verify-server-cert", "-N", "-B", "-e",
        "SELECT CURRENT_USER(); SHOW SESSION STATUS LIKE 'Ssl_version'",
    ]  # fmt: skip
    out = lab.run("web", *login, env={"MYSQL_PWD": password, "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    user, tls = out.stdout.splitlines()
    assert user == "app@10.0.1.10"
    assert tls.split("\t")[1].startswith("TLSv1."), tls


def test_web_login_without_tls_is_refused(lab):
    password = (lab.state / "web" / "app-password").read_text().strip()
    out = lab.run(
        "web", "mariadb", "-h", "10.0.2.10", "-u", "app", "--skip-ssl", "-e", "SELECT 1",
        env={"MYSQL_PWD": password, "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert out.returncode != 0, "a login without TLS succeeded"


def test_bastion_is_blocked_from_mysql(lab):
    assert lab.connect("bastion", "10.0.2.10", 3306) == "timeout"


@pytest.mark.parametrize("host", ["web", "bastion"])
def test_public_subnet_pings_the_db_host(lab, host):
    assert lab.ping(host, "10.0.2.10")


@pytest.mark.parametrize("target", ["office", "acme"])
def test_db_reaches_the_internet_as_the_nat_gateway(lab, target):
    addr = {"office": "203.0.113.10", "acme": "203.0.113.50"}[target]
    with lab.listener(target, 7000) as peers:
        assert lab.connect("db", addr, 7000) == "open"
    assert peers() == ["198.51.100.20"]


def test_web_reaches_the_internet_as_its_public_address(lab):
    """The ACME server sees the web host as 198.51.100.10, the address it validates."""
    with lab.listener("acme", 7002) as peers:
        assert lab.connect("web", "203.0.113.50", 7002) == "open"
    assert peers() == ["198.51.100.10"]


def test_bastion_has_no_way_out(lab):
    with lab.listener("office", 7000):
        assert lab.connect("bastion", "203.0.113.10", 7000) == "timeout"


def test_nothing_on_the_internet_opens_a_connection_to_db(lab):
    with lab.listener("db", 7001, addr="10.0.2.10") as peers:
        for host in INTERNET:
            assert lab.connect(host, "10.0.2.10", 7001) in ("timeout", "unreachable")
            assert lab.connect(host, "198.51.100.20", 7001) in ("timeout", "unreachable")
    assert peers() == []


def test_flask_listens_on_the_web_hosts_loopback_only(lab):
    out = lab.run("web", "ss", "-ltnH", "sport", "=", ":8000", check=True)
    addrs = {line.split()[3] for line in out.stdout.splitlines()}
    assert addrs == {"127.0.0.1:8000"}, out.stdout
    r = lab.curl("web", "http://127.0.0.1:8000/healthz")
    assert r.status == 200


@pytest.mark.parametrize(
    "host,addr",
    [("bastion", "10.0.1.10"), ("db", "10.0.1.10"), ("router", "10.0.1.10"),
     ("office", "198.51.100.10"), ("office", "10.0.1.10")],
)  # fmt: skip
def test_flask_port_is_closed_from_every_other_host(lab, host, addr):
    assert lab.connect(host, addr, 8000) != "open"


def test_metrics_answer_the_bastion(lab):
    r = lab.curl("bastion", "http://10.0.1.10:9180/metrics")
    assert r.status == 200, r
    assert "edge_gateway_requests_total" in r.body


@pytest.mark.parametrize("host", INTERNET)
@pytest.mark.parametrize("addr", ["198.51.100.10", "10.0.1.10"])
def test_metrics_give_the_internet_no_answer(lab, host, addr):
    assert lab.connect(host, addr, 9180) == "timeout"


def test_gateway_sees_the_real_client_address(lab):
    """Inbound NAT keeps the source: the gateway logs office's own address."""
    tag = uuid.uuid4().hex
    r = lab.curl("office", APP + f"probe-{tag}")
    assert r.status == 404, r  # Flask's answer to an unknown path, through the gateway
    lines = lab.log_lines("gateway", tag)
    assert lines and '"client.addr":"203.0.113.10"' in lines[-1], lines
