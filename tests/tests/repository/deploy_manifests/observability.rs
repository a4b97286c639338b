//! The observability profile: `prometheus.yml` scrapes the ports the farm serves `/metrics` on,
//! Grafana's provisioning points at that Prometheus and at the mounted dashboards, whose queries
//! read known metrics only (and every known metric somewhere), and the OpenTelemetry collector
//! receives OTLP/gRPC on 4317.

use std::collections::{BTreeMap, BTreeSet};

use serde_yaml::Value;

use super::binaries::{Binaries, host_of_address, port_of_address};
use super::compose::{ComposeService, farm_process};
use super::promql;
use super::yaml::{Problems, at, items, text, text_at, words};

/// The OTLP/gRPC port the binaries' `OTEL_EXPORTER_OTLP_ENDPOINT` names.
pub const OTLP_GRPC_PORT: u16 = 4317;

/// Every scrape target names a compose service and a port it serves metrics on; every farm service
/// serving `/metrics` is scraped.
pub fn check_prometheus(
    config: &Value,
    services: &BTreeMap<String, ComposeService>,
    binaries: &Binaries,
    problems: &mut Problems,
) {
    let mut scraped: BTreeSet<String> = BTreeSet::new();
    for job in items(config, &["scrape_configs"]) {
        let here = format!(
            "prometheus.yml: job {}",
            text_at(job, &["job_name"]).unwrap_or_default()
        );
        let mut targets: Vec<(String, Option<u16>)> = Vec::new();
        for group in items(job, &["static_configs"]) {
            for target in words(group.get("targets")) {
                let host = host_of_address(&target).unwrap_or_default().to_owned();
                targets.push((host, port_of_address(&target)));
            }
        }
        for sd in items(job, &["dns_sd_configs"]) {
            let port = text_at(sd, &["port"]).and_then(|p| p.parse().ok());
            for name in words(sd.get("names")) {
                // Swarm's `tasks.NAME` and compose's `NAME` name the same service.
                let host = name.strip_prefix("tasks.").unwrap_or(&name).to_owned();
                targets.push((host, port));
            }
        }
        if targets.is_empty() {
            problems.add(format!("{here}: no targets"));
        }
        for (host, port) in targets {
            let Some(service) = services.get(&host) else {
                problems.add(format!(
                    "{here}: scrapes {host}, which is no compose service"
                ));
                continue;
            };
            let serving = match farm_process(service, binaries) {
                Some(process) => process.http_ports(),
                None => service.command_ports(),
            };
            if !port.is_some_and(|p| serving.contains(&p)) {
                problems.add(format!(
                    "{here}: scrapes {host} on {port:?}, which serves metrics on {serving:?}"
                ));
            }
            scraped.insert(host);
        }
    }
    for service in services.values() {
        let serves_metrics =
            farm_process(service, binaries).is_some_and(|p| !p.http_ports().is_empty());
        if serves_metrics && !scraped.contains(&service.name) {
            problems.add(format!("prometheus.yml: no job scrapes {}", service.name));
        }
    }
}

/// Grafana's data sources point at compose services, its dashboard provider at a folder the Grafana
/// service mounts; returns the data sources' uids.
pub fn check_grafana_provisioning(
    datasources: &Value,
    providers: &Value,
    services: &BTreeMap<String, ComposeService>,
    problems: &mut Problems,
) -> BTreeSet<String> {
    let mut uids = BTreeSet::new();
    for source in items(datasources, &["datasources"]) {
        let url = text_at(source, &["url"]).unwrap_or_default();
        let host = host_of_address(&url).unwrap_or_default();
        if !services.contains_key(host) {
            problems.add(format!(
                "grafana data source {url}: {host} is no compose service"
            ));
        }
        uids.extend(text_at(source, &["uid"]));
    }
    let grafana = services
        .values()
        .find(|s| text_at(&s.raw, &["image"]).is_some_and(|i| i.starts_with("grafana/")));
    let Some(grafana) = grafana else {
        problems.add("compose.yaml: no grafana service");
        return uids;
    };
    for provider in items(providers, &["providers"]) {
        let path = text_at(provider, &["options", "path"]).unwrap_or_default();
        if !grafana.mounts.iter().any(|(_, target)| *target == path) {
            problems.add(format!(
                "grafana dashboard provider: {path} is not a folder the grafana service mounts"
            ));
        }
    }
    if !grafana
        .mounts
        .iter()
        .any(|(_, target)| target == "/etc/grafana/provisioning")
    {
        problems.add(
            "compose.yaml: grafana does not mount the provisioning at /etc/grafana/provisioning",
        );
    }
    uids
}

/// Every query of `dashboard` reads known metrics with their labels, from a provisioned data
/// source; returns the metrics it reads.
pub fn check_dashboard(
    name: &str,
    dashboard: &serde_json::Value,
    datasource_uids: &BTreeSet<String>,
    problems: &mut Problems,
) -> BTreeSet<&'static str> {
    let mut read = BTreeSet::new();
    let mut panels: Vec<&serde_json::Value> = Vec::new();
    let mut stack: Vec<&serde_json::Value> = dashboard["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    while let Some(panel) = stack.pop() {
        // Rows hold their panels when collapsed.
        stack.extend(panel["panels"].as_array().into_iter().flatten());
        panels.push(panel);
    }
    if panels.is_empty() {
        problems.add(format!("{name}: no panels"));
    }
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or("?");
        for target in panel["targets"].as_array().into_iter().flatten() {
            let Some(expr) = target["expr"].as_str() else {
                continue;
            };
            let here = format!("{name}: panel \"{title}\"");
            problems.extend(
                promql::expression_problems(expr)
                    .into_iter()
                    .map(|p| format!("{here}: {p}")),
            );
            let metrics = promql::metrics_read(expr);
            if metrics.is_empty() {
                problems.add(format!("{here}: `{expr}` reads no lathe metric"));
            }
            read.extend(metrics);
            for datasource in [&panel["datasource"], &target["datasource"]] {
                let uid = datasource["uid"].as_str();
                if let Some(uid) = uid.filter(|uid| !datasource_uids.contains(*uid)) {
                    problems.add(format!("{here}: data source {uid} is not provisioned"));
                }
            }
        }
    }
    read
}

/// The collector receives OTLP/gRPC on 4317 and its pipelines name defined components whose
/// endpoints are compose services.
pub fn check_otel_collector(
    config: &Value,
    services: &BTreeMap<String, ComposeService>,
    problems: &mut Problems,
) {
    let endpoint = text_at(
        config,
        &["receivers", "otlp", "protocols", "grpc", "endpoint"],
    );
    if endpoint.as_deref().and_then(port_of_address) != Some(OTLP_GRPC_PORT) {
        problems.add(format!(
            "otel-collector.yaml: the otlp receiver's gRPC endpoint is {endpoint:?}, not port {OTLP_GRPC_PORT}"
        ));
    }
    let pipelines = match at(config, &["service", "pipelines"]) {
        Some(Value::Mapping(map)) => map.iter().collect::<Vec<_>>(),
        _ => Vec::new(),
    };
    if pipelines.is_empty() {
        problems.add("otel-collector.yaml: no pipelines");
    }
    for (pipeline, spec) in pipelines {
        let pipeline = text(pipeline).unwrap_or_default();
        for section in ["receivers", "processors", "exporters"] {
            for component in words(spec.get(section)) {
                if at(config, &[section, component.as_str()]).is_none() {
                    problems.add(format!(
                        "otel-collector.yaml: pipeline {pipeline} names {section} {component}, which is not defined"
                    ));
                }
            }
        }
    }
    if let Some(Value::Mapping(exporters)) = config.get("exporters") {
        for (exporter, spec) in exporters {
            let Some(endpoint) = text_at(spec, &["endpoint"]) else {
                continue;
            };
            let host = host_of_address(&endpoint).unwrap_or_default();
            if !services.contains_key(host) {
                problems.add(format!(
                    "otel-collector.yaml: exporter {} sends to {host}, which is no compose service",
                    text(exporter).unwrap_or_default()
                ));
            }
        }
    }
}
