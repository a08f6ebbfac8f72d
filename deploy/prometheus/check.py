#!/usr/bin/env python3
"""Checks the alert rules and the Grafana dashboard (run by deploy/check.sh).

    python3 deploy/prometheus/check.py sync
        Rewrites deploy/kubernetes/base/monitoring/prometheusrule.yaml from
        deploy/prometheus/tollgate-rules.yaml (the groups, comments included).

    python3 deploy/prometheus/check.py rules --promtool PROMTOOL --workdir DIR [--rendered FILE]
        - the PrometheusRule carries exactly the groups of tollgate-rules.yaml;
        - every alert has severity page|ticket|info, summary, description and a
          runbook_url whose anchor is a "###" section under "## Runbook: alerts" in
          docs/operations.md, and every such section belongs to an alert;
        - tollgate-rules.test.yaml has, for every alert, a test where it fires and one
          where it is expected not to;
        - the dashboard (deploy/grafana/tollgate.json) is valid JSON with the template
          variables datasource, route, upstream and cost_per_gb; every panel has a
          datasource and targets; every target's PromQL, with the variables replaced by
          sample values, passes `promtool check rules` (written as recording rules);
        - with --rendered (kustomize build of deploy/kubernetes/base): the dashboard
          ConfigMap carries the same JSON, labelled grafana_dashboard: "1".

    python3 deploy/prometheus/check.py metrics
        Every metric name used by the rules and the dashboard is declared in the Rust
        sources (its quoted name appears in gateway/src, sidecar/src or config/src).
        Suffixes _bucket/_sum/_count are stripped; `up` and recording-rule names
        (with a colon) are skipped. Lists the missing names; exit status 1 if any.
"""

import json
import os
import re
import subprocess
import sys

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
RULES = "deploy/prometheus/tollgate-rules.yaml"
TESTS = "deploy/prometheus/tollgate-rules.test.yaml"
K8S_RULE = "deploy/kubernetes/base/monitoring/prometheusrule.yaml"
DASHBOARD = "deploy/grafana/tollgate.json"
DASHBOARD_CM = "grafana-dashboard-tollgate"
OPERATIONS = "docs/operations.md"
SOURCES = ("gateway/src", "sidecar/src", "config/src")

K8S_HEADER = """\
# GENERATED from deploy/prometheus/tollgate-rules.yaml, the one source of the rules (its
# comments explain them): edit that file, then run `python3 deploy/prometheus/check.py sync`.
# deploy/check.sh fails if the groups here differ from it.
#
# SLO recording rules and every alert of the gateway and the sidecar; each alert has a
# runbook section in docs/operations.md ("Runbook: alerts").
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: tollgate
  namespace: tollgate
  labels:
    app.kubernetes.io/name: gateway
spec:
"""

failures = []


def path(p):
    return os.path.join(ROOT, p)


def fail(msg):
    failures.append(msg)
    print(f"FAIL {msg}", flush=True)


def load_yaml(p):
    with open(path(p)) as f:
        return yaml.safe_load(f)


# ---------------------------------------------------------------- sync

def sync():
    with open(path(RULES)) as f:
        lines = f.read().splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith("groups:"))
    body = ["  " + l if l.strip() else "" for l in lines[start:]]
    with open(path(K8S_RULE), "w") as f:
        f.write(K8S_HEADER + "\n".join(body) + "\n")
    print(f"wrote {K8S_RULE} from {RULES}")


# ---------------------------------------------------------------- PromQL helpers

KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
            "group_right", "bool", "offset", "atan2", "inf", "nan"}


def metric_names(expr):
    """Metric names in a PromQL expression (a small lexer, good enough for ours)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", " ", s)  # ranges, subqueries
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r" ", s)
    names = set()
    for m in re.finditer(r"(?<![A-Za-z0-9_:.])[A-Za-z_:][A-Za-z0-9_:]*", s):
        word = m.group(0)
        rest = s[m.end():].lstrip()
        if rest.startswith("(") or word.lower() in KEYWORDS:
            continue
        names.add(word)
    return names


SAMPLE_VALUES = {  # template variables -> values a real query would carry
    "__rate_interval": "1m", "__interval": "1m", "__range": "6h", "__range_s": "21600",
    "__interval_ms": "60000", "route": "api|checkout", "upstream": "echo",
    "cost_per_gb": "0.01", "datasource": "prometheus",
}


def substitute(expr):
    def one(m):
        name = m.group(1) or m.group(2) or m.group(3)
        if name not in SAMPLE_VALUES:
            raise KeyError(name)
        return SAMPLE_VALUES[name]
    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]", one, expr)


# ---------------------------------------------------------------- rules

def github_anchor(heading):
    a = heading.strip().lower()
    a = re.sub(r"[^\w\- ]", "", a)
    return a.replace(" ", "-")


def runbook_sections():
    with open(path(OPERATIONS)) as f:
        text = f.read()
    m = re.search(r"^## Runbook: alerts\n(.*?)(?=^## )", text, re.S | re.M)
    if not m:
        fail(f"{OPERATIONS}: no '## Runbook: alerts' section")
        return {}
    return {github_anchor(h): h for h in re.findall(r"^### (.+)$", m.group(1), re.M)}


def alerts_of(groups):
    return [r for g in groups for r in g.get("rules", []) if "alert" in r]


def severities(alerts):
    out = {}
    for a in alerts:
        sev = (a.get("labels") or {}).get("severity")
        out[sev] = out.get(sev, 0) + 1
    return out


def check_rules():
    source = load_yaml(RULES)
    k8s = load_yaml(K8S_RULE)
    groups = source.get("groups")
    k8s_groups = ((k8s or {}).get("spec") or {}).get("groups")
    if groups != k8s_groups:
        names = [g["name"] for g in groups or []]
        k8s_names = [g["name"] for g in k8s_groups or []]
        detail = f"groups {names} vs {k8s_names}"
        if names == k8s_names:
            for a, b in zip(groups, k8s_groups):
                if a != b:
                    for ra, rb in zip(a.get("rules", []), b.get("rules", [])):
                        if ra != rb:
                            detail = (f"group {a['name']}: {ra.get('alert') or ra.get('record')} differs "
                                      f"from {rb.get('alert') or rb.get('record')}")
                            break
                    else:
                        detail = f"group {a['name']}: rule counts differ"
                    break
        fail(f"{K8S_RULE} does not carry the groups of {RULES} ({detail}): "
             "run `python3 deploy/prometheus/check.py sync`")
    else:
        print(f"ok: {K8S_RULE} carries the {len(groups)} groups of {RULES}")

    alerts = alerts_of(groups)
    records = [r for g in groups for r in g["rules"] if "record" in r]
    before = len(failures)
    sections = runbook_sections()
    seen = set()
    for a in alerts:
        name = a["alert"]
        if name in seen:
            fail(f"alert {name} is defined twice")
        seen.add(name)
        sev = (a.get("labels") or {}).get("severity")
        if sev not in ("page", "ticket", "info"):
            fail(f"alert {name}: severity {sev!r}, want page, ticket or info")
        ann = a.get("annotations") or {}
        for key in ("summary", "description", "runbook_url"):
            if not str(ann.get(key, "")).strip():
                fail(f"alert {name}: annotation {key} missing")
        url = ann.get("runbook_url", "")
        m = re.fullmatch(re.escape(OPERATIONS) + r"#([\w-]+)", url)
        if not m:
            fail(f"alert {name}: runbook_url {url!r} is not {OPERATIONS}#<anchor>")
        elif m.group(1) != name.lower():
            fail(f"alert {name}: runbook_url anchor #{m.group(1)}, want #{name.lower()} (### {name})")
        elif m.group(1) not in sections:
            fail(f"alert {name}: no '### {name}' section under '## Runbook: alerts' in {OPERATIONS}")
    orphans = sorted(set(sections) - {a["alert"].lower() for a in alerts})
    for o in orphans:
        fail(f"{OPERATIONS}: runbook section '### {sections[o]}' has no alert")
    print(f"{'ok: ' if len(failures) == before else ''}{len(alerts)} alerts "
          f"({', '.join(f'{n} {s}' for s, n in sorted(severities(alerts).items()))}), "
          f"{len(records)} recording rules; labels, annotations and runbook sections checked")

    # every alert fires in some test and is expected silent in another
    tests = load_yaml(TESTS)
    fires, silent, cases = set(), set(), 0
    for t in tests.get("tests", []):
        for c in t.get("alert_rule_test", []) or []:
            cases += 1
            name = c.get("alertname")
            if name not in seen:
                fail(f"{TESTS}: test {t.get('name')!r} names unknown alert {name}")
            (fires if c.get("exp_alerts") else silent).add(name)
    for name in sorted(seen):
        if name not in fires:
            fail(f"{TESTS}: no test where {name} fires")
        if name not in silent:
            fail(f"{TESTS}: no test where {name} is expected not to fire")
    print(f"{'ok: ' if seen <= fires and seen <= silent else ''}{TESTS}: "
          f"{len(tests.get('tests', []))} tests, {cases} alert cases "
          f"({sum(1 for t in tests.get('tests', []) for c in t.get('alert_rule_test', []) or [] if c.get('exp_alerts'))} "
          f"firing, the rest expected silent); every alert has both")


# ---------------------------------------------------------------- dashboard

def walk_panels(panels):
    for p in panels or []:
        yield p
        yield from walk_panels(p.get("panels"))


def dashboard_exprs(dash):
    """(where, expr) of every PromQL query, and (where, query) of variable queries."""
    exprs, var_queries = [], []
    for p in walk_panels(dash.get("panels")):
        for t in p.get("targets", []) or []:
            if t.get("expr"):
                exprs.append((f"panel {p.get('id')} {p.get('title')!r} target {t.get('refId')}", t["expr"]))
    for v in (dash.get("templating") or {}).get("list", []):
        if v.get("type") == "query":
            q = v.get("query")
            q = q.get("query") if isinstance(q, dict) else q
            var_queries.append((f"variable {v.get('name')}", q or ""))
    return exprs, var_queries


def check_dashboard(promtool, workdir, rendered):
    try:
        with open(path(DASHBOARD)) as f:
            raw = f.read()
        dash = json.loads(raw)
    except (OSError, ValueError) as e:
        fail(f"{DASHBOARD}: {e}")
        return
    if not isinstance(dash.get("schemaVersion"), int) or dash["schemaVersion"] < 36:
        fail(f"{DASHBOARD}: schemaVersion {dash.get('schemaVersion')!r}, want 36 or newer")
    if not dash.get("uid") or not dash.get("title"):
        fail(f"{DASHBOARD}: uid and title are required")
    variables = {v.get("name"): v for v in (dash.get("templating") or {}).get("list", [])}
    ds = variables.get("datasource") or {}
    if ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        fail(f"{DASHBOARD}: needs a template variable 'datasource' of type datasource, query prometheus")
    for name in ("route", "upstream"):
        if (variables.get(name) or {}).get("type") != "query":
            fail(f"{DASHBOARD}: needs a query variable '{name}'")
    cost = variables.get("cost_per_gb") or {}
    if cost.get("type") not in ("textbox", "constant") or str(cost.get("query")) != "0.01":
        fail(f"{DASHBOARD}: needs a textbox or constant variable 'cost_per_gb' defaulting to 0.01")

    ids, n_panels = set(), 0
    for p in walk_panels(dash.get("panels")):
        where = f"{DASHBOARD}: panel {p.get('id')} {p.get('title')!r}"
        if p.get("id") in ids:
            fail(f"{where}: duplicate id")
        ids.add(p.get("id"))
        if not p.get("gridPos"):
            fail(f"{where}: no gridPos")
        if p.get("type") in ("row", "text"):
            continue
        n_panels += 1
        if (p.get("datasource") or {}).get("uid") != "${datasource}":
            fail(f"{where}: datasource must be the template variable ${{datasource}}")
        targets = p.get("targets") or []
        if not targets:
            fail(f"{where}: no targets")
        for t in targets:
            if not str(t.get("expr", "")).strip():
                fail(f"{where}: target {t.get('refId')} has no expr")
            if (t.get("datasource") or {}).get("uid") not in (None, "${datasource}"):
                fail(f"{where}: target {t.get('refId')} uses another datasource")

    exprs, var_queries = dashboard_exprs(dash)
    rules = []
    for i, (where, expr) in enumerate(exprs):
        try:
            rules.append({"record": f"tollgate_dashboard_query_{i}", "expr": substitute(expr)})
        except KeyError as e:
            fail(f"{DASHBOARD}: {where}: unknown template variable ${e.args[0]}")
    for where, q in var_queries:
        if not re.fullmatch(r"label_values\(\s*[A-Za-z_:][A-Za-z0-9_:]*\s*,\s*\w+\s*\)", q.strip()):
            fail(f"{DASHBOARD}: {where}: expected label_values(metric, label), got {q!r}")
    # The check must be able to fail: promtool refuses a broken query.
    bad = os.path.join(workdir, "dashboard-selftest.yaml")
    with open(bad, "w") as f:
        yaml.safe_dump({"groups": [{"name": "selftest", "rules": [
            {"record": "tollgate_dashboard_selftest", "expr": "sum(rate(gateway_requests_total[5m])"}]}]}, f)
    if subprocess.run([promtool, "check", "rules", bad], capture_output=True).returncode == 0:
        fail("self-test: promtool check rules accepted a broken query")
    out = os.path.join(workdir, "dashboard-queries.yaml")
    with open(out, "w") as f:
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, f, sort_keys=False)
    r = subprocess.run([promtool, "check", "rules", out], capture_output=True, text=True)
    if r.returncode != 0:
        text = r.stdout + r.stderr
        # map "tollgate_dashboard_query_N" back to the panel
        for i, (where, _) in enumerate(exprs):
            text = text.replace(f"tollgate_dashboard_query_{i}\"", f"tollgate_dashboard_query_{i}\" ({where})")
        fail(f"{DASHBOARD}: promtool check rules on the panel queries:\n{text}")
    else:
        print(f"ok: {DASHBOARD}: {n_panels} panels, {len(exprs)} PromQL queries parse (promtool check rules)")

    if rendered:
        docs = [d for d in yaml.safe_load_all(open(rendered)) if d]
        cms = [d for d in docs if d.get("kind") == "ConfigMap" and d["metadata"]["name"] == DASHBOARD_CM]
        if len(cms) != 1:
            fail(f"{rendered}: expected one ConfigMap {DASHBOARD_CM}, found {len(cms)}")
        else:
            cm = cms[0]
            if (cm["metadata"].get("labels") or {}).get("grafana_dashboard") != "1":
                fail(f"ConfigMap {DASHBOARD_CM}: label grafana_dashboard: \"1\" missing")
            data = list((cm.get("data") or {}).values())
            if data != [raw]:
                fail(f"ConfigMap {DASHBOARD_CM}: its data is not {DASHBOARD}")
            else:
                print(f"ok: ConfigMap {DASHBOARD_CM} carries {DASHBOARD}, labelled grafana_dashboard: \"1\"")


# ---------------------------------------------------------------- metrics

def check_metrics():
    groups = load_yaml(RULES)["groups"]
    used = {}
    for g in groups:
        for r in g["rules"]:
            for n in metric_names(r["expr"]):
                used.setdefault(n, set()).add(f"rule {r.get('alert') or r.get('record')}")
    with open(path(DASHBOARD)) as f:
        dash = json.load(f)
    exprs, var_queries = dashboard_exprs(dash)
    for where, expr in exprs:
        for n in metric_names(re.sub(r"\$\{?\w+\}?", "1", expr)):
            used.setdefault(n, set()).add(f"dashboard {where}")
    for where, q in var_queries:
        m = re.match(r"label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)", q.strip())
        if m:
            used.setdefault(m.group(1), set()).add(f"dashboard {where}")

    declared_text = []
    for d in SOURCES:
        for dirpath, _, files in os.walk(path(d)):
            for fn in files:
                if fn.endswith(".rs"):
                    with open(os.path.join(dirpath, fn), encoding="utf-8", errors="replace") as f:
                        declared_text.append(f.read())
    text = "\n".join(declared_text)

    names = {}
    for n, where in used.items():
        if n == "up" or ":" in n:
            continue
        base = re.sub(r"_(bucket|sum|count)$", "", n)
        names.setdefault(base, set()).update(where)
    missing = sorted(n for n in names if f'"{n}"' not in text)
    for n in missing:
        uses = sorted(names[n])
        more = f" (+{len(uses) - 3} more)" if len(uses) > 3 else ""
        fail(f"metric {n} is not declared in {', '.join(SOURCES)} (no \"{n}\"); used by "
             f"{'; '.join(uses[:3])}{more}")
    print(f"{len(names) - len(missing)} of {len(names)} metric names used by the rules and the "
          f"dashboard are declared in the Rust sources"
          + (f"; missing: {' '.join(missing)}" if missing else ""))


def main():
    import argparse
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("sync")
    r = sub.add_parser("rules")
    r.add_argument("--promtool", default="promtool")
    r.add_argument("--workdir", required=True)
    r.add_argument("--rendered", help="kustomize build of deploy/kubernetes/base")
    sub.add_parser("metrics")
    a = ap.parse_args()
    if a.cmd == "sync":
        sync()
        return
    if a.cmd == "rules":
        check_rules()
        check_dashboard(a.promtool, a.workdir, a.rendered)
    else:
        check_metrics()
    if failures:
        print(f"{len(failures)} failure(s)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
