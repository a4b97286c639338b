//! The deploy files against the binaries (issue 16): no cluster or Docker engine runs here, so every
//! file under `deploy/` is parsed and checked against what `lathe-coordinator` and `lathe-worker`
//! accept (their clap definitions, `ServiceArgs::command()`), against each other (probes on the
//! ports the processes listen on, Services on container ports, Prometheus on the metrics ports) and
//! against the metrics the binaries export (`promql::KNOWN_METRICS`, the one list to change when the
//! code names a metric differently), and for their secrets (`secrets`: certificates and passwords
//! are files from compose secrets or Kubernetes Secret volumes, workers hold nothing of etcd,
//! scratch volumes are bounded).
//!
//! Each check is a function from parsed files to problems; the `a_*_is_caught` tests run them on
//! small broken snippets to show that each can fail. `cargo test -p lathe-tests --test
//! repository deploy_manifests` runs just this (no network, no build of anything).

#[path = "deploy_manifests/binaries.rs"]
mod binaries;
#[path = "deploy_manifests/compose.rs"]
mod compose;
#[path = "deploy_manifests/image.rs"]
mod image;
#[path = "deploy_manifests/kubernetes.rs"]
mod kubernetes;
#[path = "deploy_manifests/observability.rs"]
mod observability;
#[path = "deploy_manifests/promql.rs"]
mod promql;
#[path = "deploy_manifests/secrets.rs"]
mod secrets;
#[path = "deploy_manifests/yaml.rs"]
mod yaml;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use binaries::Binaries;
use image::ImageFacts;
use serde_yaml::Value;
use yaml::Problems;

/// The repository's `deploy/` folder.
fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn read(relative: &str) -> String {
    let path = deploy_dir().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One YAML document (the file's only one).
fn yaml_file(relative: &str) -> Value {
    let mut docs =
        yaml::documents(&read(relative)).unwrap_or_else(|e| panic!("deploy/{relative}: {e}"));
    assert_eq!(docs.len(), 1, "deploy/{relative}: one document expected");
    docs.remove(0)
}

/// The YAML files the checks read, relative to `deploy/`; every YAML file there must be one.
const CHECKED_YAML: &[&str] = &[
    "compose.yaml",
    "prometheus.yml",
    "otel-collector.yaml",
    "grafana/provisioning/datasources/prometheus.yaml",
    "grafana/provisioning/dashboards/lathe.yaml",
    "k8s/farm.yaml",
    "k8s/network-policy.yaml",
    "k8s/keda-scaledobject.yaml",
];

/// The Grafana dashboards, relative to `deploy/`.
const DASHBOARD_DIR: &str = "grafana/dashboards";

fn image_facts(binaries: &Binaries) -> ImageFacts {
    let mut problems = Problems::default();
    let facts = image::check_dockerfile(&read("Dockerfile"), binaries, &mut problems);
    problems.assert_none("deploy/Dockerfile");
    facts
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).expect("a readable folder") {
            let path = entry.expect("a folder entry").path();
            if path.is_dir() {
                folders.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

#[test]
fn every_yaml_file_under_deploy_parses_and_is_checked() {
    let deploy = deploy_dir();
    let mut unchecked = Vec::new();
    for path in files_under(&deploy) {
        let relative = path
            .strip_prefix(&deploy)
            .expect("under deploy/")
            .to_string_lossy()
            .replace('\\', "/");
        if relative.ends_with(".yaml") || relative.ends_with(".yml") {
            yaml::documents(&read(&relative)).unwrap_or_else(|e| panic!("deploy/{relative}: {e}"));
            if !CHECKED_YAML.contains(&relative.as_str()) {
                unchecked.push(relative);
            }
        }
    }
    assert!(
        unchecked.is_empty(),
        "YAML files no check reads (add them to CHECKED_YAML and check them): {unchecked:?}"
    );
}

#[test]
fn the_dockerfile_builds_locked_and_runs_as_65532_owning_its_volumes() {
    let binaries = Binaries::of_the_farm();
    let facts = image_facts(&binaries);
    for folder in ["/blobs", "/scratch"] {
        assert!(
            facts.owned_dirs.contains(folder),
            "the image does not chown {folder}: {facts:?}"
        );
    }
    let dockerignore = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.dockerignore");
    let text =
        std::fs::read_to_string(&dockerignore).expect("a .dockerignore at the repository's root");
    let mut problems = Problems::default();
    image::check_dockerignore(&text, &mut problems);
    problems.assert_none(".dockerignore");
    // Every file the image copies from the context is there.
    assert!(
        deploy_dir().join("probe.sh").exists(),
        "deploy/probe.sh, the image's healthcheck"
    );
}

#[test]
fn the_compose_file_matches_the_binaries() {
    let binaries = Binaries::of_the_farm();
    let image = image_facts(&binaries);
    let compose = yaml_file("compose.yaml");
    let mut problems = Problems::default();
    compose::check(
        &compose,
        &binaries,
        &image,
        Some(&deploy_dir()),
        &mut problems,
    );
    problems.assert_none("deploy/compose.yaml");
    let services = compose::services(&compose);
    for (service, program) in [
        ("coordinator", "lathe-coordinator"),
        ("worker", "lathe-worker"),
    ] {
        let process = services
            .get(service)
            .and_then(|s| compose::farm_process(s, &binaries))
            .unwrap_or_else(|| panic!("compose.yaml: service {service} runs no farm binary"));
        assert_eq!(process.options.program, program);
    }
}

#[test]
fn the_kubernetes_manifests_match_the_binaries() {
    let binaries = Binaries::of_the_farm();
    let image = image_facts(&binaries);
    let mut docs = Vec::new();
    for file in CHECKED_YAML.iter().filter(|f| f.starts_with("k8s/")) {
        docs.extend(yaml::documents(&read(file)).unwrap_or_else(|e| panic!("deploy/{file}: {e}")));
    }
    let mut problems = Problems::default();
    kubernetes::check(&docs, &binaries, &image, &mut problems);
    problems.assert_none("deploy/k8s");
    let kinds: BTreeSet<String> = docs
        .iter()
        .filter_map(|d| yaml::text_at(d, &["kind"]))
        .collect();
    for kind in [
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ScaledObject",
    ] {
        assert!(kinds.contains(kind), "deploy/k8s has no {kind}: {kinds:?}");
    }
}

#[test]
fn prometheus_grafana_and_the_collector_match_the_farm() {
    let binaries = Binaries::of_the_farm();
    let services = compose::services(&yaml_file("compose.yaml"));
    let mut problems = Problems::default();
    observability::check_prometheus(
        &yaml_file("prometheus.yml"),
        &services,
        &binaries,
        &mut problems,
    );
    observability::check_otel_collector(
        &yaml_file("otel-collector.yaml"),
        &services,
        &mut problems,
    );
    let uids = observability::check_grafana_provisioning(
        &yaml_file("grafana/provisioning/datasources/prometheus.yaml"),
        &yaml_file("grafana/provisioning/dashboards/lathe.yaml"),
        &services,
        &mut problems,
    );
    let mut read = BTreeSet::new();
    let dashboards: Vec<PathBuf> = files_under(&deploy_dir().join(DASHBOARD_DIR))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    assert!(
        !dashboards.is_empty(),
        "no dashboard under deploy/{DASHBOARD_DIR}"
    );
    for path in dashboards {
        let text = std::fs::read_to_string(&path).expect("a readable dashboard");
        let dashboard: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        read.extend(observability::check_dashboard(
            &name,
            &dashboard,
            &uids,
            &mut problems,
        ));
    }
    for metric in promql::KNOWN_METRICS {
        if !read.contains(metric.name) {
            problems.add(format!("no dashboard panel shows {}", metric.name));
        }
    }
    problems.assert_none("the observability profile");
}

#[test]
fn the_local_farm_script_passes_existing_flags() {
    let binaries = Binaries::of_the_farm();
    let mut problems = Problems::default();
    let found = image::check_script(
        &read("local-farm.sh"),
        "local-farm.sh",
        &binaries,
        &mut problems,
    );
    problems.assert_none("deploy/local-farm.sh");
    assert_eq!(
        found, 2,
        "local-farm.sh starts a coordinator and workers: two command lines"
    );
}

// --- Each check can fail: broken snippets --------------------------------------------------------

fn snippet(text: &str) -> Value {
    serde_yaml::from_str(text).expect("a YAML snippet")
}

/// An image as the Dockerfile makes it, without reading it.
fn snippet_image() -> ImageFacts {
    ImageFacts {
        owned_dirs: ["/blobs", "/scratch"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
        programs: ["lathe-probe", "lathe-worker", "lathe-coordinator"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
    }
}

fn compose_problems(text: &str) -> Problems {
    let mut problems = Problems::default();
    compose::check(
        &snippet(text),
        &Binaries::of_the_farm(),
        &snippet_image(),
        None,
        &mut problems,
    );
    problems
}

const GOOD_WORKER: &str = r#"
services:
  worker:
    image: lathe:latest
    entrypoint: [lathe-worker, --drain-s=25, --metrics-listen=0.0.0.0:7482]
    environment: { LATHE_NATS: "nats://nats:4222", LATHE_LOG: info, OTEL_EXPORTER_OTLP_ENDPOINT: "" }
    healthcheck: { test: [CMD, lathe-probe, "http://127.0.0.1:7482/readyz"] }
    restart: unless-stopped
    stop_grace_period: 30s
"#;

#[test]
fn a_good_compose_snippet_passes() {
    compose_problems(GOOD_WORKER).assert_none("the good snippet");
}

#[test]
fn a_wrong_flag_in_compose_is_caught() {
    let problems = compose_problems(&GOOD_WORKER.replace("--drain-s=25", "--drain=25"));
    assert!(
        problems.mentions("lathe-worker has no option --drain"),
        "{problems:?}"
    );
}

#[test]
fn an_unknown_environment_variable_is_caught() {
    let problems = compose_problems(&GOOD_WORKER.replace("LATHE_LOG:", "LATHE_BLOBS:"));
    assert!(
        problems.mentions("reads no environment variable LATHE_BLOBS"),
        "{problems:?}"
    );
    let problems = compose_problems(&GOOD_WORKER.replace("LATHE_LOG:", "RUST_LOG:"));
    assert!(
        problems.mentions("reads no environment variable RUST_LOG"),
        "{problems:?}"
    );
}

#[test]
fn a_healthcheck_on_the_wrong_port_or_path_is_caught() {
    let problems = compose_problems(&GOOD_WORKER.replace("7482/readyz", "7481/readyz"));
    assert!(problems.mentions("serves HTTP on {7482}"), "{problems:?}");
    let problems = compose_problems(&GOOD_WORKER.replace("/readyz", "/health"));
    assert!(problems.mentions("not /readyz or /healthz"), "{problems:?}");
    let problems = compose_problems(&GOOD_WORKER.replace("lathe-probe", "curl"));
    assert!(
        problems.mentions("which the image does not have"),
        "{problems:?}"
    );
}

#[test]
fn a_grace_shorter_than_the_drain_is_caught() {
    let problems =
        compose_problems(&GOOD_WORKER.replace("stop_grace_period: 30s", "stop_grace_period: 20s"));
    assert!(
        problems.mentions("does not cover --drain-s 25"),
        "{problems:?}"
    );
}

#[test]
fn a_loopback_listen_address_in_a_container_is_caught() {
    let problems = compose_problems(&GOOD_WORKER.replace("0.0.0.0:7482", "127.0.0.1:7482"));
    assert!(
        problems.mentions("reachable from inside the container only"),
        "{problems:?}"
    );
}

#[test]
fn waiting_for_health_that_is_never_checked_is_caught() {
    let text = format!(
        "{GOOD_WORKER}    depends_on: {{ nats: {{ condition: service_healthy }} }}\n  nats:\n    image: nats:2.10-alpine\n    restart: always\n"
    );
    let problems = compose_problems(&text);
    assert!(problems.mentions("nats has no healthcheck"), "{problems:?}");
}

#[test]
fn a_coordinator_without_a_blob_volume_is_caught() {
    let text = r#"
services:
  coordinator:
    image: lathe:latest
    entrypoint: [lathe-coordinator, --listen=0.0.0.0:7480, --http-listen=0.0.0.0:7481, --blobs=/data]
    healthcheck: { test: [CMD, lathe-probe, "http://127.0.0.1:7481/readyz"] }
    restart: unless-stopped
"#;
    let problems = compose_problems(text);
    assert!(
        problems.mentions("the blob store /data is not on a volume"),
        "{problems:?}"
    );
    assert!(
        problems.mentions("--blobs /data is neither a volume"),
        "{problems:?}"
    );
}

fn kubernetes_problems(text: &str) -> Problems {
    let docs = yaml::documents(text).expect("YAML documents");
    let mut problems = Problems::default();
    kubernetes::check(
        &docs,
        &Binaries::of_the_farm(),
        &snippet_image(),
        &mut problems,
    );
    problems
}

const GOOD_K8S: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: { name: lathe }
data: { LATHE_NATS: "nats://nats:4222", LATHE_LOG: info }
---
apiVersion: apps/v1
kind: Deployment
metadata: { name: lathe-worker }
spec:
  selector: { matchLabels: { app: w } }
  template:
    metadata:
      labels: { app: w }
      annotations: { prometheus.io/port: "7482" }
    spec:
      terminationGracePeriodSeconds: 30
      containers:
        - name: worker
          command: [lathe-worker, --slots=2, --drain-s=25, --scratch=/scratch, --metrics-listen=0.0.0.0:7482]
          envFrom: [{ configMapRef: { name: lathe } }]
          ports: [{ name: http, containerPort: 7482 }]
          readinessProbe: { httpGet: { path: /readyz, port: http } }
          livenessProbe: { httpGet: { path: /healthz, port: 7482 } }
---
apiVersion: v1
kind: Service
metadata: { name: lathe-worker }
spec:
  selector: { app: w }
  ports: [{ port: 80, targetPort: http }]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: { name: lathe-worker }
spec:
  podSelector: { matchLabels: { app: w } }
  policyTypes: [Ingress, Egress]
  ingress: [{ ports: [{ port: 7482 }] }]
  egress: [{ ports: [{ port: 4222 }] }]
---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: { name: lathe-worker }
spec:
  scaleTargetRef: { name: lathe-worker }
  minReplicaCount: 0
  triggers:
    - type: prometheus
      metadata:
        serverAddress: http://prometheus:9090
        query: sum(lathe_backlog_tasks)
        threshold: "2"
        activationThreshold: "0"
"#;

#[test]
fn a_good_kubernetes_snippet_passes() {
    kubernetes_problems(GOOD_K8S).assert_none("the good snippet");
}

#[test]
fn a_wrong_flag_or_config_map_variable_in_kubernetes_is_caught() {
    let problems = kubernetes_problems(&GOOD_K8S.replace("--slots=2", "--slot=2"));
    assert!(
        problems.mentions("lathe-worker has no option --slot"),
        "{problems:?}"
    );
    let problems = kubernetes_problems(&GOOD_K8S.replace("LATHE_LOG: info", "LATHE_LISTEN: x"));
    assert!(
        problems.mentions("reads no environment variable LATHE_LISTEN"),
        "{problems:?}"
    );
}

#[test]
fn a_probe_or_port_that_does_not_match_the_listen_address_is_caught() {
    let problems = kubernetes_problems(&GOOD_K8S.replace("port: 7482 } }", "port: 7481 } }"));
    assert!(
        problems.mentions("livenessProbe: probes port Some(7481)"),
        "{problems:?}"
    );
    let problems = kubernetes_problems(&GOOD_K8S.replace("path: /healthz", "path: /readyz"));
    assert!(
        problems.mentions("probes /readyz, expected /healthz"),
        "{problems:?}"
    );
    let problems =
        kubernetes_problems(&GOOD_K8S.replace("containerPort: 7482", "containerPort: 8080"));
    assert!(
        problems.mentions("containerPort 8080 is not a port the process listens on"),
        "{problems:?}"
    );
    let problems =
        kubernetes_problems(&GOOD_K8S.replace("targetPort: http", "targetPort: metrics"));
    assert!(
        problems.mentions("targetPort Some(\"metrics\") is not a containerPort"),
        "{problems:?}"
    );
    let problems = kubernetes_problems(&GOOD_K8S.replace(
        "prometheus.io/port: \"7482\"",
        "prometheus.io/port: \"9100\"",
    ));
    assert!(problems.mentions("prometheus.io/port 9100"), "{problems:?}");
}

#[test]
fn a_network_policy_on_the_wrong_ports_is_caught() {
    let problems = kubernetes_problems(&GOOD_K8S.replace(
        "ingress: [{ ports: [{ port: 7482 }] }]",
        "ingress: [{ ports: [{ port: 7480 }] }]",
    ));
    assert!(problems.mentions("lets in port 7480"), "{problems:?}");
    let problems = kubernetes_problems(
        &GOOD_K8S.replace("egress: [{ ports: [{ port: 4222 }] }]", "egress: []"),
    );
    assert!(
        problems.mentions("cannot reach LATHE_NATS=nats://nats:4222"),
        "{problems:?}"
    );
}

#[test]
fn a_scaled_object_not_on_the_backlog_is_caught() {
    let problems = kubernetes_problems(
        &GOOD_K8S.replace("sum(lathe_backlog_tasks)", "sum(lathe_worker_slots_busy)"),
    );
    assert!(
        problems.mentions("does not read lathe_backlog_tasks"),
        "{problems:?}"
    );
    let problems = kubernetes_problems(&GOOD_K8S.replace(
        "sum(lathe_backlog_tasks)",
        "sum(lathe_backlog_tasks) + sum(lathe_pending)",
    ));
    assert!(
        problems.mentions("`lathe_pending` is not a metric"),
        "{problems:?}"
    );
    let problems = kubernetes_problems(&GOOD_K8S.replace("threshold: \"2\"", "threshold: \"1\""));
    assert!(
        problems.mentions("is not the worker's --slots (2)"),
        "{problems:?}"
    );
    let problems =
        kubernetes_problems(&GOOD_K8S.replace("type: prometheus", "type: nats-jetstream"));
    assert!(
        problems.mentions("a nats-jetstream trigger"),
        "{problems:?}"
    );
    let problems = kubernetes_problems(&GOOD_K8S.replace(
        "terminationGracePeriodSeconds: 30",
        "terminationGracePeriodSeconds: 20",
    ));
    assert!(
        problems.mentions("does not cover --drain-s 25"),
        "{problems:?}"
    );
}

#[test]
fn a_dockerfile_without_locked_or_the_user_or_the_chown_is_caught() {
    let binaries = Binaries::of_the_farm();
    let good = read("Dockerfile");
    let check = |text: &str| {
        let mut problems = Problems::default();
        image::check_dockerfile(text, &binaries, &mut problems);
        problems
    };
    check(&good).assert_none("deploy/Dockerfile");
    assert!(check(&good.replace("--locked", "")).mentions("without --locked"));
    assert!(check(&good.replace(" cmake ", " ")).mentions("installs cmake"));
    assert!(check(&good.replace("USER 65532:65532", "USER root")).mentions("not uid 65532"));
    assert!(
        check(&good.replace("chown 65532:65532", "chown 0:0")).mentions("no folder is chown'ed")
    );
    assert!(
        check(&good.replace("ENV LATHE_BLOBS", "ENV LATHE_BLOB"))
            .mentions("ENV LATHE_BLOB, which no binary reads")
    );
    let mut problems = Problems::default();
    image::check_dockerignore(".git\n*.flac\n", &mut problems);
    assert!(problems.mentions("does not exclude target"), "{problems:?}");
}

#[test]
fn a_wrong_flag_in_a_script_is_caught() {
    let mut problems = Problems::default();
    let script = "cargo build -p lathe-worker\nstart_process w \"target/$BUILD/lathe-worker\" --slots 1 \\\n  --scrach \"$dir\"\nexport LATHE_NAT=x\n";
    let found = image::check_script(script, "farm.sh", &Binaries::of_the_farm(), &mut problems);
    assert_eq!(found, 1);
    assert!(
        problems.mentions("lathe-worker has no option --scrach"),
        "{problems:?}"
    );
    assert!(problems.mentions("exports LATHE_NAT"), "{problems:?}");
    assert_eq!(problems.0.len(), 2, "{problems:?}");
}

#[test]
fn prometheus_on_the_wrong_port_and_an_unknown_dashboard_metric_are_caught() {
    let binaries = Binaries::of_the_farm();
    let services = compose::services(&snippet(GOOD_WORKER));
    let mut problems = Problems::default();
    let config = snippet(
        "scrape_configs: [{ job_name: w, dns_sd_configs: [{ names: [worker], type: A, port: 7481 }] }]",
    );
    observability::check_prometheus(&config, &services, &binaries, &mut problems);
    assert!(
        problems.mentions("scrapes worker on Some(7481)"),
        "{problems:?}"
    );
    let mut problems = Problems::default();
    observability::check_prometheus(
        &snippet("scrape_configs: []"),
        &services,
        &binaries,
        &mut problems,
    );
    assert!(problems.mentions("no job scrapes worker"), "{problems:?}");
    let dashboard = serde_json::json!({ "panels": [{ "title": "t", "datasource": { "uid": "other" },
        "targets": [{ "expr": "sum by (state) (lathe_jobs_tasks)" }] }] });
    let mut problems = Problems::default();
    let uids = BTreeSet::from(["lathe-prometheus".to_owned()]);
    observability::check_dashboard("d.json", &dashboard, &uids, &mut problems);
    assert!(
        problems.mentions("`lathe_jobs_tasks` is not a metric"),
        "{problems:?}"
    );
    assert!(
        problems.mentions("data source other is not provisioned"),
        "{problems:?}"
    );
}

#[test]
fn credentials_come_from_secrets_and_workers_hold_nothing_of_etcd() {
    let mut problems = Problems::default();
    secrets::check_compose(&yaml_file("compose.yaml"), &mut problems);
    let mut docs = Vec::new();
    for file in CHECKED_YAML.iter().filter(|f| f.starts_with("k8s/")) {
        docs.extend(yaml::documents(&read(file)).unwrap_or_else(|e| panic!("deploy/{file}: {e}")));
    }
    secrets::check_kubernetes(&docs, &mut problems);
    problems.assert_none("deploy/ secrets");
    // The NATS users the deploy files name are the ones nats-auth.conf defines.
    let auth = read("nats-auth.conf");
    for user in [
        "user: coordinator",
        "user: worker",
        "$NATS_COORDINATOR_PASSWORD",
        "$NATS_WORKER_PASSWORD",
    ] {
        assert!(auth.contains(user), "deploy/nats-auth.conf has no {user}");
    }
}

fn secrets_in_compose(text: &str) -> Problems {
    let mut problems = Problems::default();
    secrets::check_compose(&snippet(text), &mut problems);
    problems
}

fn secrets_in_kubernetes(text: &str) -> Problems {
    let mut problems = Problems::default();
    let docs = yaml::documents(text).expect("a YAML snippet");
    secrets::check_kubernetes(&docs, &mut problems);
    problems
}

#[test]
fn a_password_in_a_file_or_a_worker_with_etcd_is_caught() {
    let good = r#"
secrets:
  ca: { file: ./secrets/tls/ca.pem }
  nats-worker-password: { file: ./secrets/nats-worker-password }
services:
  worker:
    entrypoint: [lathe-worker, --tls-ca=/run/secrets/ca]
    environment:
      LATHE_NATS_CA: /run/secrets/ca
      LATHE_NATS_USER: worker
      LATHE_NATS_PASSWORD_FILE: /run/secrets/nats-worker-password
    secrets: [ca, nats-worker-password]
"#;
    secrets_in_compose(good).assert_none("the good snippet");
    let problems = secrets_in_compose(&good.replace(
        "LATHE_NATS_PASSWORD_FILE: /run/secrets/nats-worker-password",
        "LATHE_NATS_PASSWORD: hunter2",
    ));
    assert!(
        problems.mentions("holds a secret in the file"),
        "{problems:?}"
    );
    assert!(
        problems.mentions("without LATHE_NATS_PASSWORD_FILE"),
        "{problems:?}"
    );
    let problems = secrets_in_compose(&good.replace(
        "LATHE_NATS_USER: worker",
        "LATHE_NATS_USER: worker\n      LATHE_ETCD: https://etcd:2379",
    ));
    assert!(problems.mentions("nothing of etcd"), "{problems:?}");
    let problems = secrets_in_compose(&good.replace("[ca, nats-worker-password]", "[ca]"));
    assert!(
        problems.mentions("LATHE_NATS_PASSWORD_FILE"),
        "{problems:?}"
    );
    let problems =
        secrets_in_compose(&good.replace("--tls-ca=/run/secrets/ca", "--tls-ca=/tmp/ca.pem"));
    assert!(problems.mentions("--tls-ca"), "{problems:?}");
}

#[test]
fn an_unbounded_empty_dir_or_a_readable_secret_volume_is_caught() {
    let good = r#"
apiVersion: apps/v1
kind: Deployment
metadata: { name: lathe-worker }
spec:
  template:
    spec:
      containers:
        - name: worker
          command: [lathe-worker, --tls-ca=/etc/lathe/tls/ca.pem]
          env:
            - { name: LATHE_NATS_CA, value: /etc/lathe/tls/ca.pem }
            - { name: LATHE_NATS_USER, value: worker }
            - { name: LATHE_NATS_PASSWORD_FILE, value: /etc/lathe/nats/password }
          volumeMounts:
            - { name: tls, mountPath: /etc/lathe/tls }
            - { name: nats, mountPath: /etc/lathe/nats }
      volumes:
        - name: scratch
          emptyDir: { sizeLimit: 20Gi }
        - name: tls
          secret: { secretName: lathe-worker-tls, defaultMode: 0440 }
        - name: nats
          secret: { secretName: lathe-nats-worker, defaultMode: 0400 }
"#;
    secrets_in_kubernetes(good).assert_none("the good snippet");
    let problems = secrets_in_kubernetes(&good.replace("{ sizeLimit: 20Gi }", "{}"));
    assert!(problems.mentions("has no sizeLimit"), "{problems:?}");
    let problems = secrets_in_kubernetes(&good.replace("defaultMode: 0400", "defaultMode: 0644"));
    assert!(problems.mentions("readable by others"), "{problems:?}");
    let problems = secrets_in_kubernetes(&good.replace(
        "{ name: LATHE_NATS_PASSWORD_FILE, value: /etc/lathe/nats/password }",
        "{ name: LATHE_NATS_PASSWORD_FILE, value: /tmp/password }",
    ));
    assert!(
        problems.mentions("not a file from a secret"),
        "{problems:?}"
    );
    let with_secret = format!(
        "{good}---\napiVersion: v1\nkind: Secret\nmetadata: {{ name: lathe-etcd }}\nstringData: {{ password: hunter2 }}\n"
    );
    assert!(secrets_in_kubernetes(&with_secret).mentions("written in the manifest"));
}
