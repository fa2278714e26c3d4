#!/usr/bin/env python3
"""Checks deploy/ without a container engine or a cluster; run by scripts/test.

    python3 deploy/check.py              # every check; exit 1 on any failure
    python3 deploy/check.py --self-test  # also prove that each check can fail

What it checks:
- every YAML and JSON file under deploy/ parses;
- every metric named in the alert rules and the Grafana dashboards is exported by
  src/metrics.rs, with labels it really has (histograms: _bucket/_sum/_count only);
- the alert rules: `promtool check rules`, `promtool test rules` (each alert is tested),
  severity, summary and a runbook_url whose anchor is a heading of deploy/RUNBOOK.md; the
  Prometheus Operator copy (k8s/prometheusrule.yaml) equals them;
- the dashboards' PromQL parses (through promtool), their datasources are provisioned;
- the compose file validates (`docker-compose config`) and agrees with wearflow.toml,
  prometheus.yml (`promtool check config`) and the Grafana provisioning;
- the Kubernetes manifests, rendered by `kubectl kustomize`, validate against the
  Kubernetes schemas (`kubernetes-validate --strict`), and agree with each other (hosts file
  and replicas, headless Service, ports, probes, selectors, data volume);
- the Dockerfile: multi-stage, locked release build, non-root, EXPOSE and HEALTHCHECK match
  the config defaults of src/config.rs.

tests/deploy.rs covers the rest: the deploy configs load with the engine's own config
loader and every dashboard SQL statement runs against the real views.
"""

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOY = os.path.join(ROOT, "deploy")
K8S_VERSION = "1.32.0"
# Labels Prometheus attaches to every scraped series.
TARGET_LABELS = {"instance", "job", "namespace", "pod", "container", "endpoint", "service"}
# Series that Prometheus itself provides.
BUILTIN_SERIES = {"up", "ALERTS", "ALERTS_FOR_STATE"}


def read(rel):
    with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
        return f.read()


# ---------------------------------------------------------------------------------------
# The facts the checks compare against


def exported_metrics(metrics_rs):
    """name -> {"histogram": bool, "labels": set} from the registrations in src/metrics.rs."""
    code = metrics_rs.split("#[cfg(test)]")[0]
    found = list(re.finditer(r'"(wearflow_[a-z0-9_]+)"', code))
    metrics = {}
    for i, m in enumerate(found):
        end = found[i + 1].start() if i + 1 < len(found) else len(code)
        span = code[m.end():end]
        labels = re.search(r"&\[([^\]]*)\]", span)
        before = code[max(0, m.start() - 200):m.start()]
        metrics[m.group(1)] = {
            "histogram": bool(re.search(r"HistogramOpts::new\(\s*$", before)),
            "labels": set(re.findall(r'"(\w+)"', labels.group(1))) if labels else set(),
        }
    return metrics


def config_default_ports(config_rs):
    http = re.search(r'http_addr: "([^"]+)"\.to_string\(\)', config_rs)
    pg = re.search(r'pg_addr: "([^"]+)"\.to_string\(\)', config_rs)
    if not http or not pg:
        raise SystemExit("check.py: cannot find the http_addr/pg_addr defaults in src/config.rs")
    return int(http.group(1).rsplit(":", 1)[1]), int(pg.group(1).rsplit(":", 1)[1])


def github_anchor(heading):
    slug = heading.strip().lower()
    slug = re.sub(r"[^\w\- ]", "", slug)
    return slug.replace(" ", "-")


def runbook_anchors(runbook_md):
    return {github_anchor(h) for h in re.findall(r"^#{1,6} (.+)$", runbook_md, re.M)}


def load_context():
    """Everything the checks read, loaded once (the self-test mutates copies of it)."""
    ctx = {"files": {}}
    for dirpath, _, names in os.walk(DEPLOY):
        for name in sorted(names):
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, ROOT)
            if name.endswith((".yaml", ".yml", ".json", ".toml", ".md", ".txt")) or name == ".env":
                with open(path, encoding="utf-8") as f:
                    ctx["files"][rel] = f.read()
    for rel in ["Dockerfile", ".dockerignore", "README.md", "src/metrics.rs", "src/config.rs"]:
        ctx["files"][rel] = read(rel)
    return ctx


# ---------------------------------------------------------------------------------------
# PromQL: metric names and label names, without a full parser


def promql_selectors(expr):
    """(metric, [label names in its matcher]) for every wearflow_ metric or built-in series."""
    out = []
    for m in re.finditer(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{)?", expr):
        name = m.group(1)
        if not (name.startswith("wearflow_") or name in BUILTIN_SERIES):
            continue
        labels = []
        if m.group(2):
            i, depth, in_str, body = m.end(), 1, None, ""
            while i < len(expr) and depth:
                c = expr[i]
                if in_str:
                    if c == "\\":
                        body += expr[i:i + 2]
                        i += 2
                        continue
                    if c == in_str:
                        in_str = None
                elif c in "\"'`":
                    in_str = c
                elif c == "}":
                    depth -= 1
                    if not depth:
                        break
                body += c
                i += 1
            stripped = re.sub(r'"(\\.|[^"\\])*"', '""', body)
            labels = re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", stripped)
        out.append((name, labels))
    return out


def check_promql(expr, where, metrics, errors):
    selectors = promql_selectors(expr)
    if not selectors:
        errors.append(f"{where}: names no wearflow metric: {expr}")
    known_labels = set(TARGET_LABELS)
    for name, labels in selectors:
        if name in BUILTIN_SERIES:
            known_labels |= {"alertname", "alertstate", "severity"}
            continue
        base, allowed = name, None
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix) and name[: -len(suffix)] in metrics:
                base = name[: -len(suffix)]
                if not metrics[base]["histogram"]:
                    errors.append(f"{where}: {name}: {base} is not a histogram")
                allowed = metrics[base]["labels"] | ({"le"} if suffix == "_bucket" else set())
        if allowed is None:
            if name not in metrics:
                errors.append(f"{where}: metric {name} is not exported by src/metrics.rs")
                continue
            if metrics[name]["histogram"]:
                errors.append(f"{where}: {name} is a histogram: use _bucket, _sum or _count")
            allowed = metrics[name]["labels"]
        known_labels |= allowed
        for label in labels:
            if label not in allowed and label not in TARGET_LABELS:
                errors.append(f"{where}: {name} has no label {label!r} (it has {sorted(allowed)})")
    for clause in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", expr):
        for label in re.findall(r"\w+", clause):
            if label not in known_labels:
                errors.append(f"{where}: grouping by {label!r}, which no series of the expression has")


def run(cmd, cwd=None):
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)


def need_tool(name, hint, errors):
    if shutil.which(name):
        return True
    errors.append(f"{name} not found ({hint})")
    return False


# ---------------------------------------------------------------------------------------
# The checks: each takes the context and a list to append errors to


def check_parse(ctx, errors):
    for rel, text in ctx["files"].items():
        try:
            if rel.endswith((".yaml", ".yml")):
                docs = list(yaml.safe_load_all(text))
                if not any(d for d in docs):
                    errors.append(f"{rel}: empty YAML")
            elif rel.endswith(".json"):
                json.loads(text)
            elif rel.endswith(".toml"):
                tomllib.loads(text)
        except (yaml.YAMLError, json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
            errors.append(f"{rel}: does not parse: {e}")


def alert_rules(ctx):
    return yaml.safe_load(ctx["files"]["deploy/prometheus/alerts.yaml"])["groups"]


def check_alerts(ctx, errors):
    metrics = exported_metrics(ctx["files"]["src/metrics.rs"])
    anchors = runbook_anchors(ctx["files"]["deploy/RUNBOOK.md"])
    tests = yaml.safe_load(ctx["files"]["deploy/prometheus/alerts_test.yaml"])
    tested = {
        t["alertname"]
        for case in tests.get("tests", [])
        for t in case.get("alert_rule_test", [])
        if t.get("exp_alerts")
    }
    names = set()
    for group in alert_rules(ctx):
        for rule in group["rules"]:
            name = rule.get("alert")
            if not name:
                errors.append(f"alerts.yaml: a rule without `alert` in group {group['name']}")
                continue
            names.add(name)
            where = f"alerts.yaml: {name}"
            check_promql(rule["expr"], where, metrics, errors)
            if rule.get("labels", {}).get("severity") not in ("warning", "critical"):
                errors.append(f"{where}: severity must be warning or critical")
            notes = rule.get("annotations", {})
            for key in ("summary", "description", "runbook_url"):
                if not notes.get(key):
                    errors.append(f"{where}: no {key} annotation")
            url = notes.get("runbook_url", "")
            m = re.fullmatch(r"deploy/RUNBOOK\.md#([\w-]+)", url)
            if not m:
                errors.append(f"{where}: runbook_url {url!r} is not deploy/RUNBOOK.md#section")
            elif m.group(1) not in anchors:
                errors.append(f"{where}: RUNBOOK.md has no section #{m.group(1)}")
            if name not in tested:
                errors.append(f"{where}: alerts_test.yaml never expects it to fire")
    copy_groups = yaml.safe_load(ctx["files"]["deploy/k8s/prometheusrule.yaml"])["spec"]["groups"]
    if copy_groups != alert_rules(ctx):
        errors.append("k8s/prometheusrule.yaml: its groups differ from prometheus/alerts.yaml")


def check_promtool(ctx, errors):
    """promtool check rules + test rules on the alert rules, and a parse of dashboard PromQL."""
    if not need_tool("promtool", "apt-get install prometheus; scripts/test does", errors):
        return
    with tempfile.TemporaryDirectory() as tmp:
        for rel in ("deploy/prometheus/alerts.yaml", "deploy/prometheus/alerts_test.yaml"):
            with open(os.path.join(tmp, os.path.basename(rel)), "w") as f:
                f.write(ctx["files"][rel])
        for cmd in (["promtool", "check", "rules", "alerts.yaml"],
                    ["promtool", "test", "rules", "alerts_test.yaml"]):
            r = run(cmd, cwd=tmp)
            if r.returncode:
                errors.append(f"{' '.join(cmd)} failed:\n{r.stdout}{r.stderr}")
        rules = []
        for rel, expr in dashboard_exprs(ctx):
            expr = re.sub(r"\$__(rate_interval|interval|range)", "5m", expr)
            rules.append({"record": f"dashboard:expr:{len(rules)}", "expr": expr})
        path = os.path.join(tmp, "dashboards.yaml")
        with open(path, "w") as f:
            yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}, f)
        r = run(["promtool", "check", "rules", path])
        if r.returncode:
            errors.append(f"dashboard PromQL does not parse:\n{r.stdout}{r.stderr}")


def dashboards(ctx):
    out = {}
    for rel, text in ctx["files"].items():
        if rel.startswith("deploy/grafana/dashboards/") and rel.endswith(".json"):
            out[rel] = json.loads(text)
    return out


def panels_of(dashboard):
    pending = list(dashboard.get("panels", []))
    while pending:
        panel = pending.pop(0)
        pending.extend(panel.get("panels", []))
        yield panel


def dashboard_exprs(ctx):
    for rel, d in dashboards(ctx).items():
        for panel in panels_of(d):
            for target in panel.get("targets", []):
                if "expr" in target:
                    yield f"{rel}: {panel.get('title')}", target["expr"]


def check_dashboards(ctx, errors):
    metrics = exported_metrics(ctx["files"]["src/metrics.rs"])
    provisioned = yaml.safe_load(ctx["files"]["deploy/compose/grafana/provisioning/datasources/wearflow.yaml"])
    sources = {d["uid"]: d["type"] for d in provisioned["datasources"]}
    boards = dashboards(ctx)
    if len(boards) < 2:
        errors.append("grafana: expected the engine and the fleet dashboards")
    uids = [d.get("uid") for d in boards.values()]
    if len(set(uids)) != len(uids) or None in uids:
        errors.append(f"grafana: dashboard uids must be set and unique: {uids}")
    for rel, d in boards.items():
        ids = [p.get("id") for p in panels_of(d)]
        if len(set(ids)) != len(ids):
            errors.append(f"{rel}: duplicate panel ids")
        for panel in panels_of(d):
            if panel.get("type") == "row":
                continue
            for ds in [panel.get("datasource")] + [t.get("datasource") for t in panel.get("targets", [])]:
                ds = ds or {}
                if ds.get("uid") not in sources or sources[ds.get("uid")] != ds.get("type"):
                    errors.append(f"{rel}: {panel.get('title')}: datasource {ds} is not provisioned")
    for where, expr in dashboard_exprs(ctx):
        check_promql(expr, where, metrics, errors)
    engine = json.dumps(boards.get("deploy/grafana/dashboards/wearflow-engine.json", {}))
    missing = [m for m in metrics if m not in engine]
    if missing:
        print(f"warning: metrics not on the engine dashboard: {', '.join(missing)}")
    fleet = json.dumps(boards.get("deploy/grafana/dashboards/wearflow-fleet.json", {}))
    for view in ("tooth_wear", "machine_health", "inventory_balances"):
        if view not in fleet:
            errors.append(f"wearflow-fleet.json: no panel reads {view}")


def compose_file(ctx):
    return yaml.safe_load(ctx["files"]["deploy/compose/compose.yaml"])


def command_flag(command, flag):
    if flag in command and command.index(flag) + 1 < len(command):
        return command[command.index(flag) + 1]
    return None


def check_compose(ctx, errors):
    compose = compose_file(ctx)
    services = compose.get("services", {})
    for name in ("kafka", "simulator", "wearflow", "prometheus", "grafana"):
        if name not in services:
            errors.append(f"compose.yaml: no {name} service")
    if errors:
        return
    toml = tomllib.loads(ctx["files"]["deploy/compose/wearflow.toml"])
    http_port = int(toml["http_addr"].rsplit(":", 1)[1])
    pg_port = int(toml["sql"]["pg_addr"].rsplit(":", 1)[1])
    brokers = toml["source"]["brokers"]
    if brokers.split(":")[0] not in services:
        errors.append(f"compose wearflow.toml: broker host {brokers} is not a compose service")
    engine = services["wearflow"]
    config_path = command_flag(engine.get("command", []), "--config")
    mounts = {v.split(":")[1]: v.split(":")[0] for v in engine.get("volumes", []) if ":" in v}
    if config_path not in mounts or os.path.basename(mounts[config_path]) != "wearflow.toml":
        errors.append(f"compose.yaml: wearflow reads --config {config_path} but wearflow.toml is not mounted there")
    published = {str(p).rsplit(":", 1)[-1] for p in engine.get("ports", [])}
    if {str(http_port), str(pg_port)} - published:
        errors.append(f"compose.yaml: wearflow must publish {http_port} and {pg_port}, publishes {sorted(published)}")
    sim = services["simulator"].get("command", [])
    if sim[:1] != ["simulate"] or command_flag(sim, "--kafka") != brokers:
        errors.append(f"compose.yaml: the simulator must run `simulate --kafka {brokers}`: {sim}")
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                path = os.path.normpath(os.path.join(DEPLOY, "compose", source))
                if not os.path.exists(path):
                    errors.append(f"compose.yaml: {name} mounts {source}, which does not exist")
    # Prometheus scrapes wearflow and loads the rules from where they are mounted.
    prom = yaml.safe_load(ctx["files"]["deploy/compose/prometheus.yml"])
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    targets = [t for c in jobs.get("wearflow", {}).get("static_configs", []) for t in c["targets"]]
    if targets != [f"wearflow:{http_port}"]:
        errors.append(f"prometheus.yml: job wearflow must scrape wearflow:{http_port}, scrapes {targets}")
    if jobs.get("wearflow", {}).get("metrics_path", "/metrics") != "/metrics":
        errors.append("prometheus.yml: wearflow's metrics path is /metrics")
    prom_mounts = {v.split(":")[1]: v.split(":")[0] for v in services["prometheus"]["volumes"]}
    for rule_file in prom.get("rule_files", []):
        mounted = prom_mounts.get(os.path.join("/etc/prometheus", rule_file))
        if not mounted or os.path.normpath(os.path.join("deploy/compose", mounted)) != "deploy/prometheus/alerts.yaml":
            errors.append(f"compose.yaml: prometheus rule file {rule_file} is not deploy/prometheus/alerts.yaml")
    # Grafana reaches Prometheus and wearflow's Postgres endpoint by service name.
    grafana = yaml.safe_load(ctx["files"]["deploy/compose/grafana/provisioning/datasources/wearflow.yaml"])
    for ds in grafana["datasources"]:
        if ds["type"] == "prometheus" and ds["url"] != "http://prometheus:9090":
            errors.append(f"grafana datasource {ds['name']}: url must be http://prometheus:9090")
        if ds["type"] == "grafana-postgresql-datasource":
            if ds["url"] != f"wearflow:{pg_port}" or ds.get("jsonData", {}).get("database") != "wearflow":
                errors.append(f"grafana datasource {ds['name']}: must be wearflow:{pg_port}, database wearflow")
    providers = yaml.safe_load(ctx["files"]["deploy/compose/grafana/provisioning/dashboards/wearflow.yaml"])
    gmounts = {v.split(":")[1]: v.split(":")[0] for v in services["grafana"]["volumes"]}
    for provider in providers["providers"]:
        source = gmounts.get(provider["options"]["path"])
        if not source or os.path.normpath(os.path.join("deploy/compose", source)) != "deploy/grafana/dashboards":
            errors.append(f"grafana provider {provider['name']}: its path is not deploy/grafana/dashboards")
    home = services["grafana"].get("environment", {}).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH", "")
    if home and f"deploy/grafana/dashboards/{os.path.basename(home)}" not in ctx["files"]:
        errors.append(f"compose.yaml: grafana's home dashboard {home} does not exist")


def check_compose_tools(ctx, errors):
    if need_tool("docker-compose", "apt-get install docker-compose; scripts/test does", errors):
        with tempfile.TemporaryDirectory() as tmp:
            # Same directory layout, so relative mounts resolve as in the repository.
            shutil.copytree(DEPLOY, os.path.join(tmp, "deploy"))
            with open(os.path.join(tmp, "deploy/compose/compose.yaml"), "w") as f:
                f.write(ctx["files"]["deploy/compose/compose.yaml"])
            r = run(["docker-compose", "-f", os.path.join(tmp, "deploy/compose/compose.yaml"), "config", "-q"])
            if r.returncode:
                errors.append(f"docker-compose config failed:\n{r.stdout}{r.stderr}")
    if shutil.which("promtool"):
        with tempfile.TemporaryDirectory() as tmp:
            os.makedirs(os.path.join(tmp, "rules"))
            with open(os.path.join(tmp, "prometheus.yml"), "w") as f:
                f.write(ctx["files"]["deploy/compose/prometheus.yml"])
            with open(os.path.join(tmp, "rules", "alerts.yaml"), "w") as f:
                f.write(ctx["files"]["deploy/prometheus/alerts.yaml"])
            r = run(["promtool", "check", "config", "prometheus.yml"], cwd=tmp)
            if r.returncode:
                errors.append(f"promtool check config failed:\n{r.stdout}{r.stderr}")


def k8s_documents(ctx, errors):
    """The rendered kustomization (kubectl kustomize), or None when it cannot be rendered."""
    if not need_tool("kubectl", "it renders deploy/k8s with `kubectl kustomize`", errors):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        for rel, text in ctx["files"].items():
            if rel.startswith("deploy/k8s/"):
                with open(os.path.join(tmp, os.path.basename(rel)), "w") as f:
                    f.write(text)
        r = run(["kubectl", "kustomize", tmp])
        if r.returncode:
            errors.append(f"kubectl kustomize deploy/k8s failed:\n{r.stderr}")
            return None
        return [d for d in yaml.safe_load_all(r.stdout) if d]


def check_k8s_schemas(docs, errors):
    try:
        import kubernetes_validate
    except ImportError:
        errors.append("kubernetes-validate not installed (pip install kubernetes-validate; scripts/test does)")
        return
    for doc in docs:
        kind = doc["kind"]
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # CRDs: checked by hand in check_k8s
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            errors.append(f"k8s {kind}/{doc['metadata']['name']}: {e.message} at {'.'.join(map(str, e.path))}")


def check_k8s(ctx, docs, errors):
    by_kind = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    for kind in ("StatefulSet", "Service", "ConfigMap", "Secret", "PodDisruptionBudget", "PodMonitor", "PrometheusRule"):
        if kind not in by_kind:
            errors.append(f"k8s: no {kind}")
    if errors:
        return
    sts = by_kind["StatefulSet"][0]
    spec = sts["spec"]
    pod = spec["template"]
    pod_labels = pod["metadata"]["labels"]
    container = pod["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    services = {s["metadata"]["name"]: s for s in by_kind["Service"]}
    headless = services.get(spec.get("serviceName"))
    if not headless or headless["spec"].get("clusterIP") != "None":
        errors.append("k8s: the StatefulSet's serviceName must be a headless Service")
    elif not headless["spec"].get("publishNotReadyAddresses"):
        errors.append("k8s: the headless Service must publish not-ready pods (peers meet before ready)")
    if spec.get("podManagementPolicy") != "Parallel":
        errors.append("k8s: podManagementPolicy must be Parallel (a timely cluster starts all at once)")
    if spec.get("updateStrategy", {}).get("type") != "OnDelete":
        errors.append("k8s: updateStrategy must be OnDelete (no mixed-version cluster)")
    for s in list(services.values()) + by_kind["PodDisruptionBudget"]:
        selector = s["spec"].get("selector", {})
        selector = selector.get("matchLabels", selector)
        if not selector or any(pod_labels.get(k) != v for k, v in selector.items()):
            errors.append(f"k8s {s['kind']}/{s['metadata']['name']}: selector {selector} does not match the pods")
    # Config and hosts file from the ConfigMap, mounted where the args say.
    args = container.get("args", [])
    mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}
    configmaps = {c["metadata"]["name"]: c for c in by_kind["ConfigMap"]}
    def mounted_file(path):
        directory, name = os.path.split(path or "")
        volume = volumes.get(mounts.get(directory, ""), {})
        cm = configmaps.get(volume.get("configMap", {}).get("name", ""))
        if not cm or name not in cm.get("data", {}):
            errors.append(f"k8s: {path} is not a file of a mounted ConfigMap")
            return None
        return cm["data"][name]
    toml_text = mounted_file(command_flag(args, "--config"))
    hosts_text = mounted_file(command_flag(args, "--hosts"))
    if toml_text is None or hosts_text is None:
        return
    toml = tomllib.loads(toml_text)
    if command_flag(args, "--process") != "$(POD_INDEX)":
        errors.append("k8s: --process must be $(POD_INDEX)")
    env = {e["name"]: e for e in container.get("env", [])}
    field = env.get("POD_INDEX", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
    if field != "metadata.labels['apps.kubernetes.io/pod-index']":
        errors.append("k8s: POD_INDEX must come from the apps.kubernetes.io/pod-index label")
    hosts = [h for h in hosts_text.splitlines() if h.strip()]
    timely = [p for p in headless["spec"]["ports"] if p["name"] == "timely"] if headless else []
    expected = [f"{sts['metadata']['name']}-{i}.{spec['serviceName']}:{ports.get('timely')}" for i in range(spec["replicas"])]
    if hosts != expected:
        errors.append(f"k8s: hosts.txt must list the {spec['replicas']} replicas: expected {expected}, found {hosts}")
    if not timely or timely[0]["port"] != ports.get("timely"):
        errors.append("k8s: the headless Service must carry the timely port")
    http_port = int(toml["http_addr"].rsplit(":", 1)[1])
    pg_port = int(toml["sql"]["pg_addr"].rsplit(":", 1)[1])
    if ports.get("http") != http_port or ports.get("pg") != pg_port:
        errors.append(f"k8s: container ports {ports} do not match wearflow.toml ({http_port}, {pg_port})")
    for probe, path in (("readinessProbe", "/ready"), ("livenessProbe", "/health")):
        get = container.get(probe, {}).get("httpGet", {})
        if get.get("path") != path or get.get("port") not in ("http", http_port):
            errors.append(f"k8s: {probe} must GET {path} on the http port")
    data_mount = [m for m in container["volumeMounts"] if m["mountPath"] == toml["data_dir"]]
    claims = {c["metadata"]["name"] for c in spec.get("volumeClaimTemplates", [])}
    if not data_mount or data_mount[0]["name"] not in claims:
        errors.append(f"k8s: data_dir {toml['data_dir']} must be a volumeClaimTemplate")
    resources = container.get("resources", {})
    if not resources.get("requests", {}).get("cpu") or not resources.get("limits", {}).get("memory"):
        errors.append("k8s: the container needs CPU requests and a memory limit")
    elif float(str(resources["requests"]["cpu"]).rstrip("m")) / (1000 if str(resources["requests"]["cpu"]).endswith("m") else 1) < toml.get("workers", 2):
        errors.append("k8s: request at least one CPU per worker thread")
    uid = re.search(r"^USER (\d+)", ctx["files"]["Dockerfile"], re.M)
    security = pod["spec"].get("securityContext", {})
    if not security.get("runAsNonRoot") or (uid and security.get("runAsUser") != int(uid.group(1))):
        errors.append("k8s: run as the image's non-root user")
    for service in services.values():
        for p in service["spec"]["ports"]:
            if isinstance(p.get("targetPort"), str) and p["targetPort"] not in ports:
                errors.append(f"k8s Service {service['metadata']['name']}: targetPort {p['targetPort']} is no container port")
    monitor = by_kind["PodMonitor"][0]["spec"]
    endpoints = monitor.get("podMetricsEndpoints", [])
    if not endpoints or endpoints[0].get("port") not in ports or endpoints[0].get("path", "/metrics") != "/metrics":
        errors.append("k8s PodMonitor: must scrape /metrics on a named container port")
    if pod_labels.get(monitor.get("jobLabel", "")) != "wearflow":
        errors.append("k8s PodMonitor: jobLabel must give job=\"wearflow\" (the alert rules select it)")
    if any(pod_labels.get(k) != v for k, v in monitor.get("selector", {}).get("matchLabels", {"x": "y"}).items()):
        errors.append("k8s PodMonitor: selector does not match the pods")


def check_dockerfile(ctx, errors):
    text = ctx["files"]["Dockerfile"]
    http_port, pg_port = config_default_ports(ctx["files"]["src/config.rs"])
    lines = re.sub(r"\\\n", " ", text).splitlines()
    instructions = [l.strip() for l in lines if l.strip() and not l.strip().startswith("#")]
    froms = [l for l in instructions if l.upper().startswith("FROM ")]
    if len(froms) < 2:
        errors.append("Dockerfile: must be multi-stage")
    if not re.search(r"^ARG RUST_IMAGE=rust:1\.95", text, re.M):
        errors.append("Dockerfile: build in a rust:1.95 image")
    if not re.search(r"cargo build --release --locked", text):
        errors.append("Dockerfile: build with cargo build --release --locked")
    users = [l.split()[1] for l in instructions if l.upper().startswith("USER ")]
    if not users or users[-1].split(":")[0] in ("0", "root"):
        errors.append("Dockerfile: the final stage must run as a non-root USER")
    exposed = {p for l in instructions if l.upper().startswith("EXPOSE ") for p in l.split()[1:]}
    if exposed != {str(http_port), str(pg_port)}:
        errors.append(f"Dockerfile: EXPOSE {sorted(exposed)} differs from the config default ports {http_port}, {pg_port}")
    health = [l for l in instructions if l.upper().startswith("HEALTHCHECK ")]
    if not health or f"127.0.0.1:{http_port}/ready" not in health[0]:
        errors.append(f"Dockerfile: HEALTHCHECK must GET 127.0.0.1:{http_port}/ready")
    for var, port in (("WEARFLOW_HTTP_ADDR", http_port), ("WEARFLOW_PG_ADDR", pg_port)):
        if not re.search(rf"{var}=0\.0\.0\.0:{port}\b", text):
            errors.append(f"Dockerfile: ENV {var}=0.0.0.0:{port} (listen beyond loopback, default port)")
    if "curl" in " ".join(health) and not re.search(r"apt-get install[^\n]*\bcurl\b", text):
        errors.append("Dockerfile: the HEALTHCHECK uses curl but the image does not install it")
    ignored = {l.strip().rstrip("/") for l in ctx["files"][".dockerignore"].splitlines()}
    for entry in ("target", ".git"):
        if entry not in ignored:
            errors.append(f".dockerignore: must exclude {entry}/")
    if "deploy/" not in ctx["files"]["README.md"] or "Dockerfile" not in ctx["files"]["README.md"]:
        errors.append("README.md: the Deploy section must name deploy/ and the Dockerfile")


def all_checks(ctx):
    errors = []
    check_parse(ctx, errors)
    if errors:
        return errors
    check_alerts(ctx, errors)
    check_promtool(ctx, errors)
    check_dashboards(ctx, errors)
    check_compose(ctx, errors)
    check_compose_tools(ctx, errors)
    docs = k8s_documents(ctx, errors)
    if docs is not None:
        check_k8s_schemas(docs, errors)
        check_k8s(ctx, docs, errors)
    check_dockerfile(ctx, errors)
    return errors


# ---------------------------------------------------------------------------------------
# Self-test: each mutation must make the checks fail


def mutate(ctx, rel, old, new):
    text = ctx["files"][rel]
    if old not in text:
        raise SystemExit(f"self-test: {old!r} is not in {rel}; update the self-test")
    ctx["files"][rel] = text.replace(old, new, 1)


MUTATIONS = [
    ("an unknown metric in an alert", "deploy/prometheus/alerts.yaml",
     "wearflow_kafka_consumer_lag_seconds) > 60", "wearflow_kafka_consumer_lag_secs) > 60"),
    ("a label the metric does not have", "deploy/prometheus/alerts.yaml",
     'status=~"5..", route!="/ready"', 'code=~"5..", route!="/ready"'),
    ("a histogram used without _bucket", "deploy/grafana/dashboards/wearflow-engine.json",
     "rate(wearflow_view_freshness_seconds_bucket[", "rate(wearflow_view_freshness_seconds["),
    ("grouping by a label no series has", "deploy/grafana/dashboards/wearflow-engine.json",
     "sum by (source) (rate(wearflow_source_records_total", "sum by (stream) (rate(wearflow_source_records_total"),
    ("broken PromQL in a dashboard", "deploy/grafana/dashboards/wearflow-engine.json",
     "max by (topic) (wearflow_kafka_consumer_lag_seconds)", "max by (topic) (wearflow_kafka_consumer_lag_seconds"),
    ("a runbook_url without a section", "deploy/prometheus/alerts.yaml",
     "deploy/RUNBOOK.md#wearflowdown", "deploy/RUNBOOK.md#wearflow-down"),
    ("an alert that its test does not expect", "deploy/prometheus/alerts_test.yaml",
     "alertname: WearflowDown", "alertname: WearflowUp"),
    ("the Operator copy of the rules drifting", "deploy/k8s/prometheusrule.yaml", "> 600", "> 900"),
    ("an unprovisioned datasource", "deploy/grafana/dashboards/wearflow-fleet.json",
     '"uid": "wearflow-pg"', '"uid": "postgres"'),
    ("a compose key typo", "deploy/compose/compose.yaml", "    restart: unless-stopped", "    restrat: unless-stopped"),
    ("the config mounted elsewhere", "deploy/compose/compose.yaml",
     "./wearflow.toml:/etc/wearflow/wearflow.toml:ro", "./wearflow.toml:/etc/wearflow.toml:ro"),
    ("Prometheus scraping the wrong port", "deploy/compose/prometheus.yml", '"wearflow:8080"', '"wearflow:9000"'),
    ("a k8s schema violation", "deploy/k8s/statefulset.yaml", "  replicas: 3", "  replica: 3"),
    ("hosts file and replicas disagreeing", "deploy/k8s/hosts.txt", "wearflow-2.wearflow-peers:2101\n", ""),
    ("a headless Service hiding unready peers", "deploy/k8s/services.yaml",
     "publishNotReadyAddresses: true", "publishNotReadyAddresses: false"),
    ("a readiness probe on the wrong path", "deploy/k8s/statefulset.yaml", "path: /ready", "path: /readyz"),
    ("a Dockerfile exposing another port", "Dockerfile", "EXPOSE 8080 6875", "EXPOSE 8080 5432"),
    ("a health check on /health", "Dockerfile", "127.0.0.1:8080/ready", "127.0.0.1:8080/health"),
    ("an image running as root", "Dockerfile", "USER 10001:10001", "USER root"),
]


def self_test(ctx):
    failures = 0
    for what, rel, old, new in MUTATIONS:
        mutated = copy.deepcopy(ctx)
        mutate(mutated, rel, old, new)
        errors = all_checks(mutated)
        if errors:
            print(f"self-test: {what}: caught ({errors[0].splitlines()[0][:120]})")
        else:
            print(f"self-test: {what}: NOT caught")
            failures += 1
    return failures


def main():
    ctx = load_context()
    errors = all_checks(ctx)
    for error in errors:
        print(f"error: {error}")
    failed = len(errors)
    if "--self-test" in sys.argv[1:]:
        failed += self_test(ctx)
    if failed:
        print(f"deploy check: {failed} failed")
        return 1
    print(f"deploy check: {len(MUTATIONS) if '--self-test' in sys.argv[1:] else 0} mutations caught, all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
