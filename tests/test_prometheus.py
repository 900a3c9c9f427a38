"""Prometheus on bastion scrapes the gateway: the real server's HTTP API, asked from bastion.

Debian's Prometheus runs in the bastion namespace under the lab's supervisor with
config/prometheus.yml; these tests ask its API (http://127.0.0.1:9090 inside bastion) what it
sees of the gateway's metrics listener, 10.0.1.10:9180.
"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime

API = "http://127.0.0.1:9090/api/v1"
JOB = "edge-gateway"
# Bounds on waiting for scrapes (every 5 s for this job), so that a broken lab fails the test
# instead of hanging it. Nothing is asserted about how fast anything happens.
PATIENCE = 60.0


def api(lab, path: str, **params: str) -> dict:
    """GET an API path from inside bastion; the decoded `data` of a successful answer."""
    args = ["curl", "-fsS", "-m", "5", "-G", f"{API}/{path}"]
    for key, value in params.items():
        args += ["--data-urlencode", f"{key}={value}"]
    out = lab.run("bastion", *args, check=True)
    answer = json.loads(out.stdout)
    assert answer["status"] == "success", answer
    return answer["data"]


def instant(lab, expr: str) -> list[dict]:
    """The vector result of an instant query."""
    data = api(lab, "query", query=expr)
    assert data["resultType"] == "vector", data
    return data["result"]


def wait_for(what: str, probe, patience: float = PATIENCE):
    """probe() until it returns something true; fail naming `what` after `patience` s."""
    deadline = time.monotonic() + patience
    while True:
        value = probe()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not seen within {patience:.0f} s"
        time.sleep(1)


def gateway_target(lab) -> dict | None:
    """The gateway's scrape target once this Prometheus has scraped it successfully."""
    targets = api(lab, "targets", state="active")["activeTargets"]
    gateway = [t for t in targets if t["labels"]["job"] == JOB]
    assert len(gateway) <= 1, targets
    return gateway[0] if gateway and gateway[0]["health"] == "up" else None


def _epoch(stamp: str) -> float:
    """Seconds since the epoch of an RFC 3339 time as Prometheus's API writes it: up to
    nanoseconds, which Python's parser does not take, and the zero time for never."""
    match = re.fullmatch(r"([^.]+?)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", stamp)
    assert match, stamp
    whole, fraction, zone = match.groups()
    micros = (fraction or "")[:6].ljust(6, "0")
    return datetime.fromisoformat(f"{whole}.{micros}{zone.replace('Z', '+00:00')}").timestamp()


# Only samples of the last 15 s: the TSDB under .lab/bastion may hold series from an earlier
# lab, whose last values an instant query would still return for five minutes.
FRESH = "15s"


def https_requests(lab) -> float | None:
    series = f'edge_gateway_requests_total{{job="{JOB}",listener="https"}}'
    result = instant(lab, f"sum(last_over_time({series}[{FRESH}]))")
    return float(result[0]["value"][1]) if result else None


def test_prometheus_scrapes_the_gateway_and_up_is_1(lab):
    target = wait_for("a successful scrape of the gateway", lambda: gateway_target(lab))
    assert target["scrapeUrl"] == "http://10.0.1.10:9180/metrics"
    assert target["labels"]["instance"] == "10.0.1.10:9180"
    result = instant(lab, f'last_over_time(up{{job="{JOB}"}}[{FRESH}])')
    assert [(r["metric"]["instance"], r["value"][1]) for r in result] == [
        ("10.0.1.10:9180", "1")
    ], result


def test_the_request_counter_rises_after_requests_from_office(lab):
    wait_for("a successful scrape of the gateway", lambda: gateway_target(lab))
    before = wait_for("edge_gateway_requests_total in Prometheus", lambda: https_requests(lab))
    for _ in range(5):
        r = lab.curl("office", "https://app.example.com/")
        assert r.status == 200, r
    after = wait_for(
        "the https request counter rising by 5",
        lambda: (n := https_requests(lab)) is not None and n >= before + 5 and n,
    )
    assert after >= before + 5


def test_the_alert_rules_are_loaded_and_the_gateway_is_not_alerting(lab):
    groups = api(lab, "rules")["groups"]
    names = {rule["name"] for g in groups for rule in g["rules"]}
    assert {
        "EdgeGatewayDown",
        "EdgeGatewayCertificateExpiringSoon",
        "EdgeGatewayUpstreamErrorRatioHigh",
        "EdgeGatewayConfigReloadFailing",
    } <= names, names
    assert all(rule["health"] != "err" for g in groups for rule in g["rules"]), groups
    target = wait_for("a successful scrape of the gateway", lambda: gateway_target(lab))
    # Alerts follow the rules' evaluations, every 15 s: until one runs after that scrape, a
    # Prometheus that has just started still holds what it concluded before any scrape
    # (EdgeGatewayAbsent pending). lastScrape is when the scrape began; its samples are
    # written when it ends.
    scraped = _epoch(target["lastScrape"]) + target["lastScrapeDuration"]
    wait_for(
        "an evaluation of the alert rules after that scrape",
        lambda: all(_epoch(g["lastEvaluation"]) > scraped for g in api(lab, "rules")["groups"]),
    )
    firing = [a["labels"]["alertname"] for a in api(lab, "alerts")["alerts"]]
    assert "EdgeGatewayDown" not in firing and "EdgeGatewayAbsent" not in firing, firing
