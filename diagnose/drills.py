"""`python -m diagnose.drills`: inject a fault in the lab, diagnose it, heal it, and write
the timeline and a post-mortem draft from what happened.

    python -m diagnose.drills list
    python -m diagnose.drills fault NAME     inject one fault and leave it (make fault)
    python -m diagnose.drills heal           heal what is injected, or everything (make heal)
    python -m diagnose.drills drill [NAME…]  the whole drill, for each fault (make drill)

A drill keeps a steady client on `office` the whole time, so the gateway's access log
counts the requests the fault cost. Whatever happens, a drill heals its fault before it
returns, and checks that the lab is whole again.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import health, labctl, postmortem
from .faults import FAULTS, Fault, heal_all
from .lab import LAB_LOGS, ROOT, public_ca
from .labctl import DRILL_STATE, LabError
from .timeline import Timeline, app_events, gateway_records, hms

PUBLIC_URL = "https://app.example.com/"
OFFICE = "203.0.113.10"
RUNS = DRILL_STATE / "runs"
ACTIVE = DRILL_STATE / "active"
# A drill request's id in the gateway's access line (diagnose.prober puts it in the query).
_REQ_ID = re.compile(r"[?&]req=([^&]+)")


class Prober:
    """The steady client on office; its results are JSON lines in a file."""

    def __init__(self, out: Path, prefix: str) -> None:
        self.path = out
        self.prefix = prefix
        cmd = [
            "ip",
            "netns",
            "exec",
            "office",
            sys.executable,
            "-m",
            "diagnose.prober",
            # The query string marks the drill's requests in the gateway's access log.
            f"{PUBLIC_URL}?probe={prefix}",
            "--interval",
            "0.2",
            "--timeout",
            "2",
            "--max-seconds",
            "300",
            "--id-prefix",
            prefix,
        ]
        ca = public_ca()
        if ca:
            cmd += ["--ca", ca]
        self.file = out.open("w")
        self.proc = subprocess.Popen(cmd, stdout=self.file, stderr=subprocess.DEVNULL, cwd=ROOT)

    def rows(self) -> list[dict[str, Any]]:
        rows = []
        for line in self.path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
        return rows

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.file.close()


class ReadyzWatcher(threading.Thread):
    """Polls the app's /readyz on web and keeps each change of its answer."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.changes: list[tuple[float, str]] = []
        self._halt = threading.Event()

    def current(self) -> str | None:
        return self.changes[-1][1] if self.changes else None

    def run(self) -> None:
        while not self._halt.is_set():
            at = time.time()
            try:
                out = health.readyz_status(1.5, timeout=4)
            except LabError:
                # curl and its `ip netns exec` outlasted their limit on a busy machine: an
                # answer not had, and the watcher goes on (a dead thread would freeze it).
                out = ""
            state = out if out and out != "000" else "no answer"
            if state != self.current():
                self.changes.append((at, state))
            self._halt.wait(0.25)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)


@dataclass
class DrillResult:
    name: str
    verdict: dict[str, Any]
    diagnosis_seconds: float
    named_cause: bool
    healthy_after: list[str]
    impact: dict[str, Any]
    folder: Path
    timeline: Timeline
    errors: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.named_cause and not self.healthy_after and not self.errors


def diagnose_lab() -> tuple[dict[str, Any], float]:
    start = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "diagnose", "--lab", "--json"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        check=False,
    )
    seconds = time.monotonic() - start
    try:
        return json.loads(out.stdout), seconds
    except ValueError as exc:
        raise LabError(f"the diagnosis printed no JSON: {out.stderr.strip()[-400:]}") from exc


def _first(rows: list[dict[str, Any]], since: float, ok: bool) -> dict[str, Any] | None:
    return next((r for r in rows if r["at"] >= since and r["ok"] == ok), None)


def _wait_probe(prober: Prober, since: float, ok: bool, timeout: float) -> dict | None:
    found: dict[str, Any] = {}

    def seen() -> bool:
        row = _first(prober.rows(), since, ok)
        if row:
            found.update(row)
        return row is not None

    labctl.wait_for(seen, timeout, 0.1)
    return found or None


def mark_active(name: str) -> None:
    DRILL_STATE.mkdir(parents=True, exist_ok=True)
    names = active()
    if name not in names:
        names.append(name)
    ACTIVE.write_text("\n".join(names) + "\n")


def unmark_active(name: str) -> None:
    names = [n for n in active() if n != name]
    if names:
        ACTIVE.write_text("\n".join(names) + "\n")
    else:
        ACTIVE.unlink(missing_ok=True)


def active() -> list[str]:
    return ACTIVE.read_text().split() if ACTIVE.exists() else []


def heal(names: list[str] | None = None) -> list[str]:
    """Heal the named faults (default: those marked active, else all); returns errors."""
    names = names or active()
    if not names:
        errors = heal_all()
    else:
        errors = []
        for name in names:
            try:
                FAULTS[name].heal()
            except (LabError, OSError) as exc:
                errors.append(f"{name}: {exc}")
    if not errors:
        ACTIVE.unlink(missing_ok=True)
    return errors


def run_drill(fault: Fault) -> DrillResult:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    folder = RUNS / f"{stamp}-{fault.name}"
    folder.mkdir(parents=True, exist_ok=True)
    tl = Timeline(fault.name)
    prefix = f"drill-{fault.name}-{stamp}"
    errors: list[str] = []
    verdict: dict[str, Any] = {}
    diag_secs = 0.0
    tl.add(
        "drill", "drill started; a client on office requests / every 0.2 s", time.time(), "started"
    )
    prober = Prober(folder / "probes.jsonl", prefix)
    watcher = ReadyzWatcher()
    watcher.start()
    injected = False
    t_inject = t_heal = t_recovered = None
    try:
        start = time.time()
        if not _wait_probe(prober, start, True, 20):
            raise LabError("the lab does not serve office before the drill; not injecting")
        t_inject = time.time()
        mark_active(fault.name)
        injected = True
        fault.inject()
        tl.add("drill", f"fault injected: {fault.what}", t_inject, "injected")
        if fault.name == "mysql-crashed":
            pass  # diagnose at once, while the supervisor restarts it
        elif fault.turns_readyz:
            labctl.wait_for(lambda: watcher.current() not in (None, "200"), 8, 0.1)
        elif fault.status == "slow":
            time.sleep(1.0)
        else:
            _wait_probe(prober, t_inject, False, 8)
        t_diag = time.time()
        report, diag_secs = diagnose_lab()
        verdict = report["verdict"]
        (folder / "diagnosis.json").write_text(json.dumps(report, indent=2))
        tl.add(
            "diagnosis",
            f"diagnosis ran ({diag_secs:.1f} s): {verdict['status'].upper()} "
            f"[{verdict['layer']}] {verdict['summary']}",
            t_diag,
            "diagnosed",
        )
        if fault.status == "down" and not fault.self_healing:
            # The impact is what the client on office felt: hold the fault until one of its
            # requests sent after the injection has failed. A request can take its whole 2 s
            # timeout to fail, and a quick diagnosis ends sooner than that.
            _wait_probe(prober, t_inject, False, 30)
        if not fault.self_healing:
            t_heal = time.time()
            fault.heal()
            tl.add("drill", "fault healed", t_heal, "healed")
        else:
            t_heal = time.time()
            fault.heal()  # waits for the supervisor; touches nothing unless it gave up
        ok = labctl.wait_for(lambda: watcher.current() == "200", 60, 0.1)
        if not ok:
            errors.append("/readyz did not come back within 60 s")
        row = _wait_probe(prober, t_heal, True, 30)
        if row:
            t_recovered = row["at"]
            tl.add(
                "prober",
                f"first good request after the fault ({row['id']})",
                t_recovered,
                "recovered",
            )
        else:
            errors.append("office got no good answer within 30 s of the heal")
        time.sleep(0.5)
    except (LabError, OSError) as exc:
        errors.append(str(exc))
    finally:
        if injected:
            try:
                fault.heal()
                unmark_active(fault.name)
            except (LabError, OSError) as exc:
                errors.append(f"heal: {exc}")
        prober.stop()
        watcher.stop()
    end = time.time()
    _collect(tl, prober, watcher, prefix, t_inject or end, end)
    impact = _impact(tl, prober, prefix, t_inject or end, end)
    problems = health.settled()
    if problems:
        # A drill leaves the lab as it found it: heal everything, then look again.
        heal_all()
        problems = health.settled()
    named = verdict.get("cause") in fault.causes and verdict.get("status") == (
        "healthy" if verdict.get("cause") == "mysql-restarted" else fault.status
    )
    result = DrillResult(
        fault.name, verdict, diag_secs, named, problems, impact, folder, tl, errors
    )
    (folder / "timeline.json").write_text(
        json.dumps(
            {
                "drill": fault.name,
                "marks": {k: hms(v) for k, v in tl.marks.items()},
                "events": [e.as_dict() for e in tl.sorted()],
                "impact": impact,
                "verdict": verdict,
                "errors": errors,
                "lab_problems_after": problems,
            },
            indent=2,
        )
    )
    (folder / "postmortem.md").write_text(postmortem.render(fault, result))
    return result


def _collect(
    tl: Timeline, prober: Prober, watcher: ReadyzWatcher, prefix: str, t_inject: float, end: float
) -> None:
    rows = prober.rows()
    first_bad = _first(rows, t_inject, False)
    if first_bad:
        what = (
            f"status {first_bad['status']}"
            if first_bad["status"]
            else first_bad.get("error", "no answer")
        )
        tl.add(
            "prober",
            f"first failed request from office ({first_bad['id']}: {what})",
            first_bad["at"],
            "first_failed",
        )
    for at, state in watcher.changes:
        if at >= t_inject - 1:
            tl.add(
                "readyz",
                f"/readyz answers {state}",
                at,
                "readyz_turned" if state != "200" else None,
            )
    records = gateway_records(LAB_LOGS / "gateway.log", t_inject, end, OFFICE, prefix)
    bad = next((r for r in records if r.status != 200), None)
    if bad:
        why = f", error {bad.error}" if bad.error else ""
        tl.add(
            "gateway",
            f"first failed request the gateway logged: {bad.status} (decision {bad.decision}{why})",
            bad.at,
            "gateway_first_failed",
        )
    first_app_failure = True
    for at, obj in app_events(LAB_LOGS / "app.log", t_inject, end):
        message = obj.get("message", "")
        status = obj.get("status")
        failed = isinstance(status, int) and status >= 500 and obj.get("path") != "/readyz"
        if first_app_failure and failed:
            first_app_failure = False
            tl.add(
                "app",
                f"first failed request the app logged: {status} "
                f"{obj.get('method', '')} {obj.get('path', '')}".rstrip(),
                at,
                "app_first_failed",
            )
        if "outage" in message.lower():
            kind = obj.get("kind", "?")
            tl.add(
                "app",
                f"app logged: {message} (kind {kind}, pid {obj.get('pid')})",
                at,
                "app_outage_started" if "started" in message else None,
            )


def _impact(
    tl: Timeline, prober: Prober, prefix: str, since: float, until: float
) -> dict[str, Any]:
    records = gateway_records(LAB_LOGS / "gateway.log", since, until, OFFICE, prefix)
    failed = [r for r in records if r.status != 200]
    rows = [r for r in prober.rows() if since <= r["at"] <= until]
    client_failed = [r for r in rows if not r["ok"]]
    # Which of the client's failed requests the gateway never logged, matched by the id the
    # client puts in the query string. Counts alone would not tell: a request sent just
    # before the fault can be logged by the gateway just after it, and one sent in the window
    # can be logged after it.
    logged = {
        m.group(1)
        for r in gateway_records(LAB_LOGS / "gateway.log", since, time.time(), OFFICE, prefix)
        if (m := _REQ_ID.search(r.path))
    }
    never = [r for r in client_failed if r["id"] not in logged]
    statuses: dict[str, int] = {}
    for r in failed:
        statuses[str(r.status)] = statuses.get(str(r.status), 0) + 1
    span = (failed[-1].at - failed[0].at) if failed else 0.0
    client_span = (client_failed[-1]["at"] - client_failed[0]["at"]) if client_failed else 0.0
    return {
        "gateway_logged": len(records),
        "gateway_failed": len(failed),
        "gateway_statuses": statuses,
        "gateway_failed_minutes": round(span / 60, 2),
        "client_sent": len(rows),
        "client_failed": len(client_failed),
        "client_failed_minutes": round(client_span / 60, 2),
        "never_reached_gateway": len(never),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m diagnose.drills",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="the faults")
    f = sub.add_parser("fault", help="inject one fault and leave it")
    f.add_argument("name", choices=sorted(FAULTS))
    h = sub.add_parser("heal", help="heal the injected faults (or all, with --all)")
    h.add_argument("--all", action="store_true")
    d = sub.add_parser("drill", help="inject, diagnose, heal, write the post-mortem")
    d.add_argument("names", nargs="*", help="faults (default: all)")
    args = p.parse_args(argv)

    if args.cmd == "list":
        for fault in FAULTS.values():
            print(f"{fault.name:<20} {fault.what}")
        return 0
    if not Path("/run/netns/db").exists():
        print("drills: the lab is not up: make up", file=sys.stderr)
        return 2
    if args.cmd == "fault":
        mark_active(args.name)
        FAULTS[args.name].inject()
        print(f"injected {args.name}: {FAULTS[args.name].what}")
        print("now: make diagnose; then: make heal")
        return 0
    if args.cmd == "heal":
        errors = heal_all() if args.all else heal()
        for err in errors:
            print(f"heal: {err}", file=sys.stderr)
        problems = health.settled()
        for prob in problems:
            print(f"still wrong: {prob}", file=sys.stderr)
        if not errors and not problems:
            print("healed; the lab is whole")
        return 1 if errors or problems else 0
    names = args.names or list(FAULTS)
    unknown = [n for n in names if n not in FAULTS]
    if unknown:
        print(f"drills: unknown fault(s) {', '.join(unknown)}; see: list", file=sys.stderr)
        return 2
    failed = 0
    for name in names:
        res = run_drill(FAULTS[name])
        mark = "PASS" if res.passed else "FAIL"
        v = res.verdict
        print(
            f"{mark} {name:<20} {v.get('status', '?').upper()} [{v.get('layer', '?')}] "
            f"{v.get('cause', '?')} ({res.diagnosis_seconds:.1f} s); "
            f"{res.impact['gateway_failed']} failed at the gateway, "
            f"{res.impact['client_failed']} at the client; {res.folder}"
        )
        for err in res.errors + res.healthy_after:
            print(f"     {err}")
        failed += not res.passed
    print(f"{len(names) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
