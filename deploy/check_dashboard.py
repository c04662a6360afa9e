#!/usr/bin/env python3
"""Proves that every query of the Grafana dashboard is a recording rule of rules.yml.

Each panel target's `expr` must be one recorded series name, optionally with label
matchers (Grafana variables such as `$instance` replaced by their all-value), and the
`instance` variable's `label_values(...)` must read a recorded series too. Every
expression is then written into a temporary rule file and checked by
`promtool check rules`, so the PromQL itself is valid.

Usage: check_dashboard.py DASHBOARD.json RULES.yml
       check_dashboard.py --self-test RULES.yml   (bad dashboards must be refused)
Needs PyYAML (a dependency of kubernetes-validate) and promtool on PATH.
"""

import json
import re
import subprocess
import sys
import tempfile

import yaml

# A recorded name with optional matchers: name{label op "value", ...}.
NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
MATCHER = r'\s*[a-zA-Z_][a-zA-Z0-9_]*\s*(=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*"\s*'
SELECTOR = re.compile(rf"^\s*({NAME})\s*(\{{(?:{MATCHER}(?:,{MATCHER})*,?)?\}})?\s*$")
LABEL_VALUES = re.compile(rf"^\s*label_values\(\s*({NAME})\s*(\{{[^}}]*\}})?\s*,\s*[a-zA-Z_][a-zA-Z0-9_]*\s*\)\s*$")
VARIABLE = re.compile(r"\$\{?([a-zA-Z_][a-zA-Z0-9_]*)\}?")


def recorded_names(rules_path):
    with open(rules_path) as f:
        rules = yaml.safe_load(f)
    return {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}


def all_panels(panels):
    for p in panels:
        yield p
        yield from all_panels(p.get("panels", []))


def variables(dashboard):
    """Each template variable and the value to put in its place for the check."""
    values = {}
    for v in dashboard.get("templating", {}).get("list", []):
        values[v["name"]] = v.get("allValue") or ".*"
    return values


def substitute(expr, values, problems, where):
    def one(m):
        name = m.group(1)
        if name not in values:
            problems.append(f"{where}: unknown variable ${name} in {expr!r}")
            return m.group(0)
        return values[name]

    return VARIABLE.sub(one, expr)


def check(dashboard, recorded):
    """Returns (problems, the expressions to give promtool)."""
    problems, exprs = [], []
    values = variables(dashboard)
    panels = [p for p in all_panels(dashboard.get("panels", [])) if p.get("type") != "row"]
    if not panels:
        problems.append("the dashboard has no panels")
    for p in panels:
        where = f"panel {p.get('title')!r}"
        targets = p.get("targets", [])
        if not targets:
            problems.append(f"{where}: no queries")
        for t in targets:
            expr = t.get("expr")
            if not expr:
                problems.append(f"{where}: a target without expr")
                continue
            concrete = substitute(expr, values, problems, where)
            m = SELECTOR.match(concrete)
            if not m:
                problems.append(f"{where}: {expr!r} is not a recorded series (name with matchers)")
            elif m.group(1) not in recorded:
                problems.append(f"{where}: {m.group(1)} is not recorded in the rules")
            exprs.append(concrete)
    for v in dashboard.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        query = v.get("query")
        query = query.get("query") if isinstance(query, dict) else query
        m = LABEL_VALUES.match(query or "")
        where = f"variable {v.get('name')!r}"
        if not m:
            problems.append(f"{where}: {query!r} is not label_values(recorded series, label)")
        elif m.group(1) not in recorded:
            problems.append(f"{where}: {m.group(1)} is not recorded in the rules")
        else:
            exprs.append(m.group(1) + (m.group(2) or ""))
    return problems, exprs


def promtool_accepts(exprs, quiet=False):
    """`promtool check rules` on the expressions as recording rules: their PromQL parses."""
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard_check:expr_{i}", "expr": e} for i, e in enumerate(exprs)]}]}
    with tempfile.NamedTemporaryFile("w", suffix=".yml") as f:
        yaml.safe_dump(rules, f)
        f.flush()
        run = subprocess.run(["promtool", "check", "rules", f.name],
                             capture_output=True, text=True)
    if run.returncode != 0 and not quiet:
        print(run.stdout + run.stderr, file=sys.stderr)
    return run.returncode == 0


def verify(dashboard, recorded, quiet=False):
    problems, exprs = check(dashboard, recorded)
    if not problems and not promtool_accepts(exprs, quiet):
        problems.append("promtool check rules refused the dashboard's expressions")
    return problems, exprs


def self_test(recorded):
    """The check must refuse a raw metric, an unrecorded name, bad PromQL and a stray
    variable; and accept a good dashboard."""
    def dash(expr):
        return {"templating": {"list": [{"name": "instance", "type": "custom", "allValue": ".*"}]},
                "panels": [{"type": "timeseries", "title": "t", "targets": [{"expr": expr}]}]}

    good = 'instance:liveops_ready:min{instance=~"$instance"}'
    cases = [
        (good, True),
        ('liveops_ready{instance=~"$instance"}', False),
        ('rate(liveops_http_requests_total[5m])', False),
        ('instance:liveops_not_recorded:min', False),
        ('instance:liveops_ready:min{instance=~"$instance"', False),
        ('instance:liveops_ready:min{instance=~"$nope"}', False),
        ('instance:liveops_ready:min{instance=~"(("}', False),
    ]
    failed = 0
    for expr, ok in cases:
        problems, _ = verify(dash(expr), recorded, quiet=True)
        if (not problems) != ok:
            print(f"self-test: {expr!r} was {'refused' if problems else 'accepted'}", file=sys.stderr)
            failed += 1
    return failed


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--self-test":
        recorded = recorded_names(sys.argv[2])
        failed = self_test(recorded)
        print(f"dashboard check self-test: {'FAILED' if failed else 'ok'}")
        return 1 if failed else 0
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    with open(sys.argv[1]) as f:
        dashboard = json.load(f)
    recorded = recorded_names(sys.argv[2])
    problems, exprs = verify(dashboard, recorded)
    for p in problems:
        print(f"dashboard: {p}", file=sys.stderr)
    if problems:
        return 1
    used = {SELECTOR.match(e).group(1) for e in exprs}
    print(f"dashboard: {len(exprs)} queries, all recorded series ({len(used)} of "
          f"{len(recorded)} recording rules used), promtool check rules: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
