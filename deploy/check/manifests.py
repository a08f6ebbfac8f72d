#!/usr/bin/env python3
"""Checks the rendered Kubernetes manifests of deploy/kubernetes (run by deploy/check.sh).

For each rendered overlay (one multi-document YAML file per overlay):

1. Schemas. Core kinds are validated strictly (unknown fields are errors) with
   kubernetes-validate against every Kubernetes version given. Custom resources are
   validated against the pydantic models of the cloudcoil packages, made strict here
   (extra fields forbidden): prometheus-operator (ServiceMonitor, PodMonitor,
   PrometheusRule) and cert-manager (Certificate, Issuer, ClusterIssuer). A kind with
   no schema is a failure, never skipped silently.
2. Policy (our own test of what the deploy issue asks for, whatever a scanner says):
   strict securityContext on every pod and container, no token automount, resources,
   probes, no subPath on reloaded volumes, images with a tag, and the gateway's
   cross-file rules (shutdown budget vs terminationGracePeriodSeconds, threads vs CPU
   limit, PROXY protocol on the listeners vs the NLB annotation, zone env, spreading,
   PDB, HPA and the Prometheus adapter's metric name).
3. Embedded configs. Every container that runs `gateway` or `sidecar --config PATH`
   has its config taken from the ConfigMap mounted at PATH's directory, written to a
   temp dir with the same relative layout as in the pod, with throwaway certificates
   (openssl) at the relative paths the config names, and checked with the real
   `gateway validate` / `sidecar validate`. The configs use paths relative to the
   config file, so the validated text is byte for byte the deployed one (the version
   fingerprint printed is the one `GET /config` will show). Each path must also land in
   a volume the container mounts, with a file name that volume provides.
4. PrometheusRule groups are written out for `promtool check rules` (run by check.sh).

Exit status 1 if anything failed.
"""

import argparse
import inspect
import math
import os
import posixpath
import re
import shlex
import subprocess
import sys
import tempfile

import kubernetes_validate
import pydantic
import yaml

failures = []
passed = 0


def ok():
    global passed
    passed += 1


def fail(where, msg):
    failures.append(f"{where}: {msg}")
    print(f"FAIL {where}: {msg}", flush=True)


def check(cond, where, msg):
    if cond:
        ok()
    else:
        fail(where, msg)
    return cond


# ---------------------------------------------------------------- custom resources

def strict_models(*modules):
    """Forbid unknown fields in every pydantic model of these modules."""
    classes = []
    for mod in modules:
        for _, cls in vars(mod).items():
            if (inspect.isclass(cls) and issubclass(cls, pydantic.BaseModel)
                    and cls.__module__ == mod.__name__):
                cls.model_config["extra"] = "forbid"
                classes.append(cls)
    for cls in classes:
        cls.model_rebuild(force=True)


def crd_models():
    import cloudcoil.apimachinery as apimachinery
    from cloudcoil.models.cert_manager import v1 as cm_v1
    from cloudcoil.models.prometheus_operator import v1 as po_v1
    strict_models(apimachinery, cm_v1, po_v1)
    return {
        ("monitoring.coreos.com/v1", "ServiceMonitor"): po_v1.ServiceMonitor,
        ("monitoring.coreos.com/v1", "PodMonitor"): po_v1.PodMonitor,
        ("monitoring.coreos.com/v1", "PrometheusRule"): po_v1.PrometheusRule,
        ("cert-manager.io/v1", "Certificate"): cm_v1.Certificate,
        ("cert-manager.io/v1", "Issuer"): cm_v1.Issuer,
        ("cert-manager.io/v1", "ClusterIssuer"): cm_v1.ClusterIssuer,
    }


def kn(doc):
    md = doc.get("metadata", {})
    ns = md.get("namespace")
    return f"{doc.get('kind')}/{ns + '/' if ns else ''}{md.get('name')}"


def validate_schemas(where, docs, versions, crds):
    for doc in docs:
        key = (doc.get("apiVersion"), doc.get("kind"))
        if key in crds:
            try:
                crds[key].model_validate(doc)
                ok()
            except pydantic.ValidationError as e:
                fail(f"{where} {kn(doc)}", "schema: " + str(e).replace("\n", " | "))
            continue
        for version in versions:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
                ok()
            except kubernetes_validate.SchemaNotFoundError:
                fail(f"{where} {kn(doc)}", f"no schema for {key[0]} {key[1]} in Kubernetes "
                     f"{version} nor among the vendored CRD models: add one, do not skip it")
                break
            except kubernetes_validate.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                fail(f"{where} {kn(doc)}", f"Kubernetes {version}: {path}: {e.message}")


# ---------------------------------------------------------------- helpers

DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|ms|s|m|h|d)\s*$")
UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400}


def seconds(value, default):
    if value is None:
        return default
    if value == 0 or value == "0":
        return 0
    m = DURATION.match(str(value))
    if not m:
        raise ValueError(f"bad duration {value!r}")
    return float(m.group(1)) * UNITS[m.group(2)]


def cpu_cores(q):
    q = str(q)
    return float(q[:-1]) / 1000 if q.endswith("m") else float(q)


def pod_templates(docs):
    for doc in docs:
        kind = doc.get("kind")
        spec = doc.get("spec", {})
        if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
            yield doc, spec.get("template", {})
        elif kind == "CronJob":
            yield doc, spec.get("jobTemplate", {}).get("spec", {}).get("template", {})
        elif kind == "Pod":
            yield doc, doc


def long_running(pod_spec):
    """(container, is_init) for containers that run for the pod's life."""
    for c in pod_spec.get("initContainers", []) or []:
        if c.get("restartPolicy") == "Always":
            yield c, True
    for c in pod_spec.get("containers", []) or []:
        yield c, False


def all_containers(pod_spec):
    for c in pod_spec.get("initContainers", []) or []:
        yield c
    for c in pod_spec.get("containers", []) or []:
        yield c


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def command_line(c):
    return " ".join(str(x) for x in (c.get("command") or []) + (c.get("args") or []))


RUNS = re.compile(r"(?:^|[\s/])(gateway|sidecar)\s+--config\s+(\S+)")


# ---------------------------------------------------------------- policy

def check_pod_security(where, doc, template):
    spec = template.get("spec", {})
    psc = spec.get("securityContext", {}) or {}
    # Only the gateway reads the API (EndpointSlice discovery); every other pod must not
    # carry a token.
    token_ok = spec.get("automountServiceAccountToken") is False or (
        (template.get("metadata", {}).get("labels", {}) or {}).get("app.kubernetes.io/name") == "gateway"
        and spec.get("serviceAccountName") == "gateway")
    check(token_ok, where,
          "automountServiceAccountToken must be false (only the gateway, which watches EndpointSlices, gets a token)")
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        check(not spec.get(key), where, f"{key} must not be set")
    for v in spec.get("volumes", []) or []:
        check("hostPath" not in v, where, f"volume {v.get('name')}: hostPath is not allowed")
    pod_nonroot = psc.get("runAsNonRoot") is True
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type") == "RuntimeDefault"
    check(pod_nonroot, where, "pod securityContext.runAsNonRoot must be true")
    check(pod_seccomp, where, "pod securityContext.seccompProfile.type must be RuntimeDefault")
    check(psc.get("runAsUser", 1) != 0, where, "pod runs as root (runAsUser 0)")
    volumes = {v["name"]: v for v in spec.get("volumes", []) or []}
    for c in all_containers(spec):
        cw = f"{where} container {c.get('name')}"
        sc = c.get("securityContext", {}) or {}
        check(sc.get("allowPrivilegeEscalation") is False, cw, "allowPrivilegeEscalation must be false")
        check(sc.get("readOnlyRootFilesystem") is True, cw, "readOnlyRootFilesystem must be true")
        check(not sc.get("privileged"), cw, "privileged must not be true")
        caps = sc.get("capabilities", {}) or {}
        check("ALL" in (caps.get("drop") or []), cw, "capabilities.drop must contain ALL")
        check(not caps.get("add"), cw, f"capabilities.add must be empty, not {caps.get('add')}")
        check(sc.get("runAsNonRoot", pod_nonroot) is True, cw, "must run as non-root")
        check(sc.get("runAsUser", 1) != 0, cw, "runs as root (runAsUser 0)")
        check(((sc.get("seccompProfile") or {}).get("type") or ("RuntimeDefault" if pod_seccomp else None))
              == "RuntimeDefault", cw, "seccompProfile must be RuntimeDefault")
        image = c.get("image", "")
        tag = image.rsplit("/", 1)[-1]
        check(("@sha256:" in image) or (":" in tag and not tag.endswith(":latest")), cw,
              f"image {image!r} needs a fixed tag or digest")
        res = c.get("resources", {}) or {}
        req, lim = res.get("requests", {}) or {}, res.get("limits", {}) or {}
        check("cpu" in req and "memory" in req, cw, "resources.requests needs cpu and memory")
        check("memory" in lim, cw, "resources.limits needs memory")
        for m in c.get("volumeMounts", []) or []:
            vol = volumes.get(m.get("name"), {})
            if "configMap" in vol or "secret" in vol or "csi" in vol or "projected" in vol:
                check("subPath" not in m and "subPathExpr" not in m, cw,
                      f"volumeMount {m.get('name')}: subPath is never updated by Kubernetes: "
                      "mount the directory so reloads see changes")
    for c, _ in long_running(spec):
        cw = f"{where} container {c.get('name')}"
        check("readinessProbe" in c, cw, "readinessProbe missing")
        check("livenessProbe" in c, cw, "livenessProbe missing")


def probe_port(c, probe):
    port = ((c.get(probe) or {}).get("httpGet") or {}).get("port")
    if isinstance(port, str):
        for p in c.get("ports", []) or []:
            if p.get("name") == port:
                return p.get("containerPort")
    return port


def check_gateway(where, docs, doc, template, c, cfg, adapter_metric):
    spec = template["spec"]
    labels = template.get("metadata", {}).get("labels", {}) or {}
    server = cfg.get("server") or {}
    shutdown = server.get("shutdown") or {}
    drain = seconds(shutdown.get("drain_delay"), 5)
    grace = seconds(shutdown.get("grace_period"), 30)
    pre = (((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}).get("seconds", 0)
    tgps = spec.get("terminationGracePeriodSeconds", 30)
    check(tgps >= pre + drain + grace, where,
          f"terminationGracePeriodSeconds {tgps} < preStop {pre}s + drain_delay {drain:g}s + "
          f"grace_period {grace:g}s: in-flight requests would be killed")
    check(tgps <= pre + drain + grace + 30, where,
          f"terminationGracePeriodSeconds {tgps} is far above the drain budget "
          f"{pre + drain + grace:g}s: keep them in step")
    cpu_limit = ((c.get("resources") or {}).get("limits") or {}).get("cpu")
    if cpu_limit is not None:
        want = max(1, math.ceil(cpu_cores(cpu_limit)))
        check(server.get("threads") == want, where,
              f"server.threads is {server.get('threads')}, the CPU limit is {cpu_limit}: set threads to {want}")
    admin = (cfg.get("admin") or {}).get("address", "127.0.0.1:9901")
    admin_host, admin_port = admin.rsplit(":", 1)
    check(admin_host not in ("127.0.0.1", "[::1]", "localhost"), where,
          f"admin.address {admin} is loopback: kubelet probes and Prometheus cannot reach it")
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        got = ((c.get(probe) or {}).get("httpGet") or {})
        check(got.get("path") == path and str(probe_port(c, probe)) == admin_port, where,
              f"{probe} must be GET {path} on the admin port {admin_port}")
    env = {e.get("name") for e in c.get("env", []) or []}
    check("GATEWAY_ZONE" in env or "GATEWAY_ZONE" in command_line(c), where,
          "GATEWAY_ZONE is not passed: zone-aware balancing needs each replica's zone")
    keys = {t.get("topologyKey") for t in spec.get("topologySpreadConstraints", []) or []}
    check({"topology.kubernetes.io/zone", "kubernetes.io/hostname"} <= keys, where,
          "topologySpreadConstraints must spread over topology.kubernetes.io/zone and kubernetes.io/hostname")
    # Listeners vs Services: PROXY protocol where the NLB sends it, and only there.
    by_port = {}
    for p in c.get("ports", []) or []:
        by_port[p.get("name")] = p.get("containerPort")
        by_port[p.get("containerPort")] = p.get("containerPort")
    listeners = {int(l["address"].rsplit(":", 1)[1]): l for l in cfg.get("listeners", [])}
    ns = doc["metadata"].get("namespace")
    services = [s for s in docs if s.get("kind") == "Service"
                and s["metadata"].get("namespace") == ns
                and selects((s.get("spec") or {}).get("selector"), labels)]
    public = [s for s in services if s["spec"].get("type") == "LoadBalancer"]
    check(len(public) >= 1, where, "no Service of type LoadBalancer selects the gateway")
    for s in services:
        sw = f"{where} {kn(s)}"
        pp = (s["metadata"].get("annotations") or {}).get(
            "service.beta.kubernetes.io/aws-load-balancer-proxy-protocol") == "*"
        for sp in s["spec"].get("ports", []):
            port = by_port.get(sp.get("targetPort", sp.get("port")))
            if s["spec"].get("type") == "LoadBalancer":
                check(port in listeners, sw, f"port {sp.get('name')} goes to container port {port}, "
                      "which no listener binds")
                if port in listeners:
                    check(bool(listeners[port].get("proxy_protocol")) == pp, sw,
                          f"listener {listeners[port]['name']}: proxy_protocol is "
                          f"{bool(listeners[port].get('proxy_protocol'))} but the NLB "
                          f"{'sends' if pp else 'does not send'} PROXY protocol v2")
            else:
                check(port not in listeners or not listeners[port].get("proxy_protocol"), sw,
                      f"in-cluster Service to a proxy_protocol listener ({port}): clients send no PROXY header")
        if s["spec"].get("type") == "LoadBalancer":
            check(s["spec"].get("externalTrafficPolicy") == "Local", sw,
                  "externalTrafficPolicy must be Local (client addresses, no second hop)")
            check(str(admin_port) not in {str(by_port.get(p.get("targetPort"))) for p in s["spec"]["ports"]},
                  sw, "the admin port must not be on the public Service")
    name = doc["metadata"]["name"]
    pdbs = [p for p in docs if p.get("kind") == "PodDisruptionBudget"
            and p["metadata"].get("namespace") == ns
            and selects(((p.get("spec") or {}).get("selector") or {}).get("matchLabels"), labels)]
    check(len(pdbs) == 1, where, f"expected one PodDisruptionBudget for the gateway, found {len(pdbs)}")
    hpas = [h for h in docs if h.get("kind") == "HorizontalPodAutoscaler"
            and h["metadata"].get("namespace") == ns
            and (h["spec"].get("scaleTargetRef") or {}).get("name") == name]
    if check(len(hpas) == 1, where, f"expected one HorizontalPodAutoscaler for the gateway, found {len(hpas)}"):
        h = hpas[0]["spec"]
        zones = set()
        for term in (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                     .get("requiredDuringSchedulingIgnoredDuringExecution") or {}).get("nodeSelectorTerms", []):
            for e in term.get("matchExpressions", []):
                if e.get("key") == "topology.kubernetes.io/zone" and e.get("operator") == "In":
                    zones |= set(e.get("values", []))
        check(h.get("minReplicas", 1) >= max(2, len(zones)), where,
              f"HPA minReplicas {h.get('minReplicas')} is below max(2, zones={len(zones)})")
        check(h.get("maxReplicas", 0) > h.get("minReplicas", 1), where, "HPA maxReplicas must exceed minReplicas")
        check(((h.get("behavior") or {}).get("scaleDown") or {}).get("stabilizationWindowSeconds", 0) >= 60,
              where, "HPA scaleDown.stabilizationWindowSeconds should be at least 60")
        kinds = {m.get("type") for m in h.get("metrics", [])}
        check({"Resource", "Pods"} <= kinds, where, "HPA must scale on CPU and on a per-pod request rate")
        for m in h.get("metrics", []):
            if m.get("type") == "Pods":
                check(m["pods"]["metric"]["name"] == adapter_metric, where,
                      f"HPA metric {m['pods']['metric']['name']!r} is not the one the Prometheus adapter "
                      f"serves ({adapter_metric!r})")


def check_sidecar(where, template, c, is_init):
    check(is_init and c.get("restartPolicy") == "Always", where,
          "the sidecar must be a native sidecar: an initContainer with restartPolicy: Always")
    check("startupProbe" in c, where, "startupProbe missing: the app would start before the sidecar is ready")


# ---------------------------------------------------------------- embedded configs

def openssl(*args):
    subprocess.run(["openssl", *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


class TestPki:
    def __init__(self, root):
        self.root = root
        os.makedirs(root, exist_ok=True)
        self.ca_crt = os.path.join(root, "ca.crt")
        self.ca_key = os.path.join(root, "ca.key")
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", self.ca_key, "-out", self.ca_crt, "-days", "2", "-subj", "/CN=tollgate deploy check CA",
                "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        self.n = 0

    def leaf(self, cert, key, san):
        self.n += 1
        os.makedirs(os.path.dirname(cert), exist_ok=True)
        os.makedirs(os.path.dirname(key), exist_ok=True)
        csr = os.path.join(self.root, f"leaf{self.n}.csr")
        ext = os.path.join(self.root, f"leaf{self.n}.ext")
        with open(ext, "w") as f:
            f.write(f"subjectAltName={san}\nbasicConstraints=critical,CA:FALSE\n"
                    "keyUsage=critical,digitalSignature,keyEncipherment\n"
                    "extendedKeyUsage=serverAuth,clientAuth\n")
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key,
                "-out", csr, "-subj", "/O=tollgate deploy check")
        openssl("x509", "-req", "-in", csr, "-CA", self.ca_crt, "-CAkey", self.ca_key, "-CAcreateserial",
                "-days", "1", "-extfile", ext, "-out", cert)

    def copy_ca(self, path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(self.ca_crt, "rb") as src, open(path, "wb") as dst:
            dst.write(src.read())


def config_files(kind, cfg):
    """(role, relative path) of every file a config names."""
    out = []
    if kind == "gateway":
        for i, l in enumerate(cfg.get("listeners", []) or []):
            tls = l.get("tls") or {}
            for j, c in enumerate(tls.get("certificates", []) or []):
                out.append(("cert", c["cert"], c["key"]))
            ca = (tls.get("client_auth") or {}).get("ca")
            if ca:
                out.append(("ca", ca, None))
        for name, u in (cfg.get("upstreams") or {}).items():
            ca = ((u or {}).get("tls") or {}).get("ca")
            if ca:
                out.append(("ca", ca, None))
    else:
        ident = cfg.get("identity") or {}
        out.append(("identity", ident.get("cert"), ident.get("key")))
        out.append(("ca", ident.get("trust_bundle"), None))
    return out


def volume_files(vol, docs, ns):
    """File names a volume provides, or None if unknown (any name accepted)."""
    if "csi" in vol and vol["csi"].get("driver") == "spiffe.csi.cert-manager.io":
        return {"tls.crt", "tls.key", "ca.crt"}
    if "secret" in vol:
        sec = vol["secret"]
        if sec.get("items"):
            return {i["path"] for i in sec["items"]}
        for d in docs:
            if d.get("kind") == "Certificate" and d["metadata"].get("namespace") == ns \
                    and d["spec"].get("secretName") == sec.get("secretName"):
                return {"tls.crt", "tls.key", "ca.crt"}
        for d in docs:
            if d.get("kind") == "Secret" and d["metadata"].get("namespace") == ns \
                    and d["metadata"].get("name") == sec.get("secretName"):
                return set((d.get("data") or {}).keys()) | set((d.get("stringData") or {}).keys())
        return None
    if "configMap" in vol:
        for d in docs:
            if d.get("kind") == "ConfigMap" and d["metadata"].get("namespace") == ns \
                    and d["metadata"].get("name") == vol["configMap"].get("name"):
                return set((d.get("data") or {}).keys())
        return None
    return None


def mount_for(c, path):
    best = None
    for m in c.get("volumeMounts", []) or []:
        mp = m["mountPath"].rstrip("/")
        if path == mp or path.startswith(mp + "/"):
            if best is None or len(mp) > len(best["mountPath"].rstrip("/")):
                best = m
    return best


def check_configs(where, docs, doc, template, c, is_init, binaries, workdir, adapter_metric):
    """Validate the config of one gateway/sidecar container; returns the config kind or None."""
    m = RUNS.search(command_line(c))
    if not m:
        return None
    kind, cfg_path = m.group(1), m.group(2)
    ns = doc["metadata"].get("namespace")
    spec = template["spec"]
    volumes = {v["name"]: v for v in spec.get("volumes", []) or []}
    mnt = mount_for(c, cfg_path)
    if not check(mnt is not None and "configMap" in volumes.get(mnt["name"], {}), where,
                 f"--config {cfg_path} is not in a mounted ConfigMap"):
        return kind
    vol = volumes[mnt["name"]]
    key = posixpath.relpath(cfg_path, mnt["mountPath"])
    cms = [d for d in docs if d.get("kind") == "ConfigMap" and d["metadata"].get("namespace") == ns
           and d["metadata"]["name"] == vol["configMap"]["name"]]
    if not check(len(cms) == 1 and key in (cms[0].get("data") or {}), where,
                 f"ConfigMap {vol['configMap']['name']} with key {key} not found in the render"):
        return kind
    text = cms[0]["data"][key]
    cfg = yaml.safe_load(text) or {}
    # Lay the files out as in the pod: the config at its path, test material at the
    # paths it names, all under a temp root.
    root = tempfile.mkdtemp(prefix=f"{kind}-", dir=workdir)
    local_cfg = root + cfg_path
    os.makedirs(os.path.dirname(local_cfg), exist_ok=True)
    with open(local_cfg, "w") as f:
        f.write(text)
    pki = TestPki(os.path.join(root, ".pki"))
    sa = spec.get("serviceAccountName", "default")
    for role, path, key_path in config_files(kind, cfg):
        if not check(path and not path.startswith("/"), where,
                     f"{kind} config names {path!r}: use a path relative to the config file, "
                     "so the deployed text validates byte for byte"):
            continue
        for p in [path] + ([key_path] if key_path else []):
            in_pod = posixpath.normpath(posixpath.join(posixpath.dirname(cfg_path), p))
            pm = mount_for(c, in_pod)
            if check(pm is not None, where, f"{p} resolves to {in_pod}, which no volume of the container mounts"):
                provided = volume_files(volumes.get(pm["name"], {}), docs, ns)
                rel = posixpath.relpath(in_pod, pm["mountPath"])
                check(provided is None or rel in provided, where,
                      f"{p} -> {in_pod}: volume {pm['name']} provides {sorted(provided or [])}, not {rel}")
        abs_of = lambda p: root + posixpath.normpath(posixpath.join(posixpath.dirname(cfg_path), p))
        if role == "cert":
            pki.leaf(abs_of(path), abs_of(key_path), "DNS:gateway.deploy-check.test")
        elif role == "identity":
            pki.leaf(abs_of(path), abs_of(key_path), f"URI:spiffe://cluster.local/ns/{ns}/sa/{sa}")
        else:
            pki.copy_ca(abs_of(path))
    env = dict(os.environ)
    env.setdefault("GATEWAY_ZONE", "us-east-1a")
    env.setdefault("GATEWAY_REGION", "us-east-1")
    r = subprocess.run([binaries[kind], "validate", local_cfg], capture_output=True, text=True, env=env)
    out = (r.stdout + r.stderr).strip().replace(root, "")
    if check(r.returncode == 0, where, f"{kind} validate ({vol['configMap']['name']}/{key}):\n{out}"):
        print(f"  {kind} validate {ns}/{vol['configMap']['name']}/{key}: {out}", flush=True)
    if kind == "gateway":
        check_gateway(where, docs, doc, template, c, cfg, adapter_metric)
    else:
        check_sidecar(where, template, c, is_init)
    return kind


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--k8s-versions", required=True, help="space-separated, e.g. '1.33.0 1.35.0'")
    ap.add_argument("--gateway", required=True, help="gateway binary")
    ap.add_argument("--sidecar", required=True, help="sidecar binary")
    ap.add_argument("--adapter-values", required=True, help="prometheus-adapter Helm values")
    ap.add_argument("--rules-out", required=True, help="directory for PrometheusRule groups (promtool)")
    ap.add_argument("--workdir", required=True)
    ap.add_argument("rendered", nargs="+", help="kustomize output, one file per overlay")
    a = ap.parse_args()

    versions = a.k8s_versions.split()
    binaries = {"gateway": a.gateway, "sidecar": a.sidecar}
    crds = crd_models()

    adapter = yaml.safe_load(open(a.adapter_values))
    adapter_metrics = [r["name"]["as"] for r in adapter["rules"]["custom"]]
    check(len(adapter_metrics) == 1, a.adapter_values, "expected one custom rule")
    adapter_metric = adapter_metrics[0]

    os.makedirs(a.rules_out, exist_ok=True)
    for path in a.rendered:
        where = os.path.basename(path).removesuffix(".yaml")
        before_pass, before_fail = passed, len(failures)
        docs = [d for d in yaml.safe_load_all(open(path)) if d]
        validate_schemas(where, docs, versions, crds)
        kinds_run = {"gateway": 0, "sidecar": 0}
        for doc, template in pod_templates(docs):
            w = f"{where} {kn(doc)}"
            check_pod_security(w, doc, template)
            spec = template.get("spec", {})
            for c in spec.get("initContainers", []) or []:
                k = check_configs(f"{w} container {c['name']}", docs, doc, template, c, True,
                                  binaries, a.workdir, adapter_metric)
                if k:
                    kinds_run[k] += 1
            for c in spec.get("containers", []) or []:
                k = check_configs(f"{w} container {c['name']}", docs, doc, template, c, False,
                                  binaries, a.workdir, adapter_metric)
                if k:
                    kinds_run[k] += 1
        check(kinds_run["gateway"] >= 1, where, "no gateway container found")
        # Every embedded config is used by some container.
        used = set()
        for doc, template in pod_templates(docs):
            for v in template.get("spec", {}).get("volumes", []) or []:
                if "configMap" in v:
                    used.add((doc["metadata"].get("namespace"), v["configMap"]["name"]))
        for d in docs:
            if d.get("kind") == "ConfigMap" and {"gateway.yaml", "sidecar.yaml"} & set(d.get("data") or {}):
                check((d["metadata"].get("namespace"), d["metadata"]["name"]) in used, f"{where} {kn(d)}",
                      "config not mounted by any workload")
        for d in docs:
            if d.get("kind") == "PrometheusRule":
                out = os.path.join(a.rules_out, f"{where}-{d['metadata']['name']}.yaml")
                with open(out, "w") as f:
                    yaml.safe_dump({"groups": d["spec"]["groups"]}, f, sort_keys=False)
        print(f"{where}: {len(docs)} objects, schemas for Kubernetes {', '.join(versions)}, "
              f"{kinds_run['gateway']} gateway + {kinds_run['sidecar']} sidecar configs: "
              f"{passed - before_pass} checks passed, {len(failures) - before_fail} failed", flush=True)

    print(f"manifest checks: {passed} passed, {len(failures)} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
