//! `deploy/k8s/*.yaml` against the binaries: each container's flags and environment (ConfigMaps
//! included), probes and ports, Services, disruption budgets and network policies that select real
//! pods and name real ports, scrape annotations, and the KEDA ScaledObject.

use std::collections::{BTreeMap, BTreeSet};

use serde_yaml::Value;

use super::binaries::{Binaries, FarmProcess, port_of_address};
use super::image::ImageFacts;
use super::promql;
use super::yaml::{Problems, at, items, selects, text, text_at, words};

/// The metric KEDA must scale the workers on.
pub const BACKLOG_METRIC: &str = "lathe_backlog_tasks";

/// One container of a Deployment, with what the checks need of it.
#[derive(Debug)]
struct Container<'a> {
    /// `Deployment/name container`.
    location: String,
    /// Its definition.
    raw: &'a Value,
    /// Its named ports and their numbers, and the unnamed ones.
    ports: BTreeMap<String, u16>,
    /// The farm process it runs, if any.
    process: Option<FarmProcess<'a>>,
}

impl Container<'_> {
    /// A probe's or a Service's port (a number or a port's name) as a number.
    fn resolve(&self, port: &Value) -> Option<u16> {
        match port {
            Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
            Value::String(name) => self.ports.get(name).copied().or_else(|| name.parse().ok()),
            _ => None,
        }
    }

    /// Its container ports' numbers.
    fn port_numbers(&self) -> BTreeSet<u16> {
        self.ports.values().copied().collect()
    }
}

/// A Deployment: its name, pod labels and containers.
#[derive(Debug)]
struct Deployment<'a> {
    name: String,
    raw: &'a Value,
    pod_labels: Option<&'a Value>,
    containers: Vec<Container<'a>>,
}

impl Deployment<'_> {
    /// Every container port of the pod.
    fn port_numbers(&self) -> BTreeSet<u16> {
        self.containers
            .iter()
            .flat_map(Container::port_numbers)
            .collect()
    }

    /// The farm process of the pod (its first).
    fn process(&self) -> Option<&FarmProcess<'_>> {
        self.containers.iter().find_map(|c| c.process.as_ref())
    }
}

fn kind(doc: &Value) -> String {
    text_at(doc, &["kind"]).unwrap_or_default()
}

fn name(doc: &Value) -> String {
    text_at(doc, &["metadata", "name"]).unwrap_or_default()
}

/// Checks every document of the Kubernetes files together (a ConfigMap in one file may feed a
/// Deployment in another).
pub fn check(docs: &[Value], binaries: &Binaries, image: &ImageFacts, problems: &mut Problems) {
    let config_maps: BTreeMap<String, BTreeMap<String, Option<String>>> = docs
        .iter()
        .filter(|d| kind(d) == "ConfigMap")
        .map(|d| {
            let data = match d.get("data") {
                Some(Value::Mapping(map)) => map
                    .iter()
                    .filter_map(|(k, v)| Some((text(k)?, text(v))))
                    .collect(),
                _ => BTreeMap::new(),
            };
            (name(d), data)
        })
        .collect();
    let deployments: Vec<Deployment<'_>> = docs
        .iter()
        .filter(|d| kind(d) == "Deployment")
        .map(|d| deployment(d, &config_maps, binaries, problems))
        .collect();
    for deployment in &deployments {
        check_deployment(deployment, image, problems);
    }
    let farm: Vec<&Deployment<'_>> = deployments
        .iter()
        .filter(|d| d.process().is_some())
        .collect();
    let selected = |selector: Option<&Value>| -> Vec<&Deployment<'_>> {
        deployments
            .iter()
            .filter(|d| selects(selector, d.pod_labels))
            .collect()
    };
    let mut policed = BTreeSet::new();
    for doc in docs {
        let here = format!("{}/{}", kind(doc), name(doc));
        match kind(doc).as_str() {
            "Service" => {
                let pods = selected(at(doc, &["spec", "selector"]));
                let Some(pod) = pods.first() else {
                    problems.add(format!("{here}: selects no Deployment's pods"));
                    continue;
                };
                for port in items(doc, &["spec", "ports"]) {
                    let target = port.get("targetPort").or_else(|| port.get("port"));
                    let resolved =
                        target.and_then(|t| pod.containers.iter().find_map(|c| c.resolve(t)));
                    if !resolved.is_some_and(|p| pod.port_numbers().contains(&p)) {
                        problems.add(format!(
                            "{here}: targetPort {:?} is not a containerPort of {} ({:?})",
                            target.and_then(text),
                            pod.name,
                            pod.port_numbers()
                        ));
                    }
                }
            }
            "PodDisruptionBudget"
                if selected(at(doc, &["spec", "selector", "matchLabels"])).is_empty() =>
            {
                problems.add(format!("{here}: selects no Deployment's pods"));
            }
            "NetworkPolicy" => {
                let pods = selected(at(doc, &["spec", "podSelector", "matchLabels"]));
                if pods.is_empty() {
                    problems.add(format!("{here}: selects no Deployment's pods"));
                }
                for pod in &pods {
                    policed.insert(pod.name.clone());
                    check_network_policy(doc, &here, pod, &deployments, problems);
                }
            }
            "ScaledObject" => check_scaled_object(doc, &here, &deployments, problems),
            _ => {}
        }
    }
    let has_policies = docs.iter().any(|d| kind(d) == "NetworkPolicy");
    for deployment in farm {
        if has_policies && !policed.contains(&deployment.name) {
            problems.add(format!(
                "Deployment/{}: no NetworkPolicy selects it (its inbound is open)",
                deployment.name
            ));
        }
    }
}

/// Reads a Deployment and checks its farm containers' flags and environment.
fn deployment<'a>(
    doc: &'a Value,
    config_maps: &BTreeMap<String, BTreeMap<String, Option<String>>>,
    binaries: &'a Binaries,
    problems: &mut Problems,
) -> Deployment<'a> {
    let name = name(doc);
    let pod_labels = at(doc, &["spec", "template", "metadata", "labels"]);
    if !selects(at(doc, &["spec", "selector", "matchLabels"]), pod_labels) {
        problems.add(format!(
            "Deployment/{name}: its selector does not match its pods' labels"
        ));
    }
    let mut containers = Vec::new();
    for raw in items(doc, &["spec", "template", "spec", "containers"]) {
        let location = format!(
            "Deployment/{name} container {}",
            text_at(raw, &["name"]).unwrap_or_default()
        );
        let mut ports = BTreeMap::new();
        for port in items(raw, &["ports"]) {
            let Some(number) =
                text_at(port, &["containerPort"]).and_then(|p| p.parse::<u16>().ok())
            else {
                continue;
            };
            let key = text_at(port, &["name"]).unwrap_or_else(|| number.to_string());
            ports.insert(key, number);
        }
        let mut command = words(raw.get("command"));
        command.extend(words(raw.get("args")));
        let mut env = BTreeMap::new();
        for source in items(raw, &["envFrom"]) {
            let Some(map) = text_at(source, &["configMapRef", "name"]) else {
                continue;
            };
            match config_maps.get(&map) {
                Some(data) => env.extend(data.clone()),
                None => problems.add(format!(
                    "{location}: envFrom ConfigMap {map}, which no file defines"
                )),
            }
        }
        for var in items(raw, &["env"]) {
            if let Some(key) = text_at(var, &["name"]) {
                env.insert(key, text_at(var, &["value"]));
            }
        }
        let process = binaries
            .invocation(&command)
            .map(|(options, invocation)| FarmProcess {
                location: location.clone(),
                options,
                invocation,
                env,
            });
        if let Some(process) = &process {
            problems.extend(process.problems(true));
        }
        containers.push(Container {
            location,
            raw,
            ports,
            process,
        });
    }
    Deployment {
        name,
        raw: doc,
        pod_labels,
        containers,
    }
}

/// Probes, ports, annotations, mounts and grace of a farm Deployment.
fn check_deployment(deployment: &Deployment<'_>, image: &ImageFacts, problems: &mut Problems) {
    let pod_spec = at(deployment.raw, &["spec", "template", "spec"]);
    for container in &deployment.containers {
        let Some(process) = &container.process else {
            continue;
        };
        let here = &container.location;
        for port in container.port_numbers() {
            if !process.ports().contains(&port) {
                problems.add(format!(
                    "{here}: containerPort {port} is not a port the process listens on ({:?})",
                    process.ports()
                ));
            }
        }
        for port in process.ports() {
            if !container.port_numbers().contains(&port) {
                problems.add(format!(
                    "{here}: listens on {port}, which is no containerPort"
                ));
            }
        }
        for (probe, path) in [
            ("readinessProbe", Some("/readyz")),
            ("livenessProbe", Some("/healthz")),
            ("startupProbe", None),
        ] {
            let Some(spec) = container.raw.get(probe) else {
                if path.is_some() {
                    problems.add(format!("{here}: no {probe}"));
                }
                continue;
            };
            check_probe(container, process, probe, spec, path, problems);
        }
        let annotations = at(
            deployment.raw,
            &["spec", "template", "metadata", "annotations"],
        );
        if let Some(port) = annotations.and_then(|a| text_at(a, &["prometheus.io/port"])) {
            if !port
                .parse()
                .is_ok_and(|p| process.http_ports().contains(&p))
            {
                problems.add(format!(
                    "{here}: prometheus.io/port {port} is not a port serving /metrics ({:?})",
                    process.http_ports()
                ));
            }
        } else if !process.http_ports().is_empty() {
            problems.add(format!(
                "{here}: no prometheus.io/port annotation for its /metrics"
            ));
        }
        let mounts: BTreeSet<String> = items(container.raw, &["volumeMounts"])
            .iter()
            .filter_map(|m| text_at(m, &["mountPath"]))
            .collect();
        let volumes: BTreeSet<String> = pod_spec
            .map(|spec| items(spec, &["volumes"]))
            .unwrap_or_default()
            .iter()
            .filter_map(|v| text_at(v, &["name"]))
            .collect();
        for mount in items(container.raw, &["volumeMounts"]) {
            let volume = text_at(mount, &["name"]).unwrap_or_default();
            if !volumes.contains(&volume) {
                problems.add(format!(
                    "{here}: mounts volume {volume}, which the pod does not have"
                ));
            }
        }
        for long in ["blobs", "scratch"] {
            if !process.options.has_long(long) {
                continue;
            }
            let folder = process.setting_or_default(long).unwrap_or_default();
            if !mounts.contains(&folder) && !image.owned_dirs.contains(&folder) {
                problems.add(format!("{here}: --{long} {folder} is on no volume"));
            }
        }
        if process.options.program == "lathe-worker" {
            let drain_s = process
                .setting_or_default("drain-s")
                .and_then(|d| d.parse::<f64>().ok())
                .unwrap_or(0.0);
            let grace_s = pod_spec
                .and_then(|spec| text_at(spec, &["terminationGracePeriodSeconds"]))
                .and_then(|g| g.parse::<f64>().ok())
                .unwrap_or(30.0);
            if grace_s <= drain_s {
                problems.add(format!(
                    "{here}: terminationGracePeriodSeconds {grace_s} does not cover --drain-s {drain_s}"
                ));
            }
        }
    }
}

/// One probe: HTTP on a port serving health with the expected path, gRPC or TCP on a listen port.
fn check_probe(
    container: &Container<'_>,
    process: &FarmProcess<'_>,
    probe: &str,
    spec: &Value,
    path: Option<&str>,
    problems: &mut Problems,
) {
    let here = format!("{} {probe}", container.location);
    if let Some(get) = spec.get("httpGet") {
        let port = get.get("port").and_then(|p| container.resolve(p));
        if !port.is_some_and(|p| process.http_ports().contains(&p)) {
            problems.add(format!(
                "{here}: probes port {port:?}, but the process serves health on {:?}",
                process.http_ports()
            ));
        }
        let probed = text_at(get, &["path"]).unwrap_or_default();
        let healthy = ["/readyz", "/healthz"].contains(&probed.as_str());
        if !healthy || path.is_some_and(|p| p != probed) {
            problems.add(format!(
                "{here}: probes {probed}, expected {}",
                path.unwrap_or("/healthz or /readyz")
            ));
        }
    } else if let Some(socket) = spec.get("grpc").or_else(|| spec.get("tcpSocket")) {
        let port = socket.get("port").and_then(|p| container.resolve(p));
        if !port.is_some_and(|p| process.ports().contains(&p)) {
            problems.add(format!(
                "{here}: probes port {port:?}, which the process does not listen on"
            ));
        }
    } else {
        problems.add(format!("{here}: neither httpGet, grpc nor tcpSocket"));
    }
}

/// A policy's ports are the selected pods' (inbound) or the peers' (outbound) container ports, and
/// its outbound rules let the pods reach every address their environment names.
fn check_network_policy(
    doc: &Value,
    here: &str,
    pod: &Deployment<'_>,
    deployments: &[Deployment<'_>],
    problems: &mut Problems,
) {
    let rule_ports = |rule: &Value| -> Vec<u16> {
        items(rule, &["ports"])
            .iter()
            .filter_map(|p| text_at(p, &["port"]))
            .filter_map(|p| p.parse().ok())
            .collect()
    };
    for rule in items(doc, &["spec", "ingress"]) {
        for port in rule_ports(rule) {
            if !pod.port_numbers().contains(&port) {
                problems.add(format!(
                    "{here}: lets in port {port}, which {} does not listen on ({:?})",
                    pod.name,
                    pod.port_numbers()
                ));
            }
        }
    }
    let types = words(at(doc, &["spec", "policyTypes"]));
    if !types.iter().any(|t| t == "Egress") {
        return;
    }
    let mut allowed_out = BTreeSet::new();
    for rule in items(doc, &["spec", "egress"]) {
        let ports = rule_ports(rule);
        allowed_out.extend(ports.iter().copied());
        for peer in items(rule, &["to"]) {
            let selector = at(peer, &["podSelector", "matchLabels"]);
            for target in deployments
                .iter()
                .filter(|d| selects(selector, d.pod_labels))
            {
                for port in &ports {
                    if !target.port_numbers().contains(port) {
                        problems.add(format!(
                            "{here}: lets out to {} on port {port}, which it does not listen on",
                            target.name
                        ));
                    }
                }
            }
        }
    }
    let Some(process) = pod.process() else { return };
    for (var, value) in &process.env {
        let Some(value) = value else { continue };
        if !value.contains("://") {
            continue;
        }
        for address in value.split(',') {
            if let Some(port) = port_of_address(address).filter(|p| !allowed_out.contains(p)) {
                problems.add(format!(
                    "{here}: {} cannot reach {var}={address} (port {port} is not let out)",
                    pod.name
                ));
            }
        }
    }
}

/// KEDA's ScaledObject: a farm Deployment scaled from zero on a Prometheus query of the backlog,
/// with a threshold of one worker's slots.
fn check_scaled_object(
    doc: &Value,
    here: &str,
    deployments: &[Deployment<'_>],
    problems: &mut Problems,
) {
    let target = text_at(doc, &["spec", "scaleTargetRef", "name"]).unwrap_or_default();
    let Some(deployment) = deployments.iter().find(|d| d.name == target) else {
        problems.add(format!("{here}: scales {target}, which is no Deployment"));
        return;
    };
    if at(deployment.raw, &["spec", "replicas"]).is_some() {
        problems.add(format!(
            "{here}: Deployment/{target} sets replicas, which applying it again would reset"
        ));
    }
    if text_at(doc, &["spec", "minReplicaCount"]).as_deref() != Some("0") {
        problems.add(format!(
            "{here}: minReplicaCount is not 0 (no scaling to zero)"
        ));
    }
    let triggers = items(doc, &["spec", "triggers"]);
    if triggers.is_empty() {
        problems.add(format!("{here}: no trigger"));
    }
    let slots = deployment
        .process()
        .and_then(|p| p.setting_or_default("slots"))
        .unwrap_or_default();
    for trigger in triggers {
        let kind = text_at(trigger, &["type"]).unwrap_or_default();
        if kind != "prometheus" {
            problems.add(format!(
                "{here}: a {kind} trigger; the farm's backlog is the coordinator's \
                 {BACKLOG_METRIC}, read through Prometheus"
            ));
            continue;
        }
        let query = text_at(trigger, &["metadata", "query"]).unwrap_or_default();
        if !promql::metrics_read(&query).contains(&BACKLOG_METRIC) {
            problems.add(format!(
                "{here}: the query `{query}` does not read {BACKLOG_METRIC}"
            ));
        }
        problems.extend(
            promql::expression_problems(&query)
                .into_iter()
                .map(|p| format!("{here}: query: {p}")),
        );
        let server = text_at(trigger, &["metadata", "serverAddress"]).unwrap_or_default();
        if !(server.starts_with("http://") || server.starts_with("https://")) {
            problems.add(format!(
                "{here}: serverAddress {server:?} is not an http(s) URL"
            ));
        }
        let threshold = text_at(trigger, &["metadata", "threshold"]).unwrap_or_default();
        if threshold != slots {
            problems.add(format!(
                "{here}: threshold {threshold:?} is not the worker's --slots ({slots})"
            ));
        }
        if text_at(trigger, &["metadata", "activationThreshold"]).as_deref() != Some("0") {
            problems.add(format!("{here}: activationThreshold is not 0"));
        }
    }
}
