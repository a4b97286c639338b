//! `deploy/compose.yaml` against the binaries and the image: flags and environment, healthchecks on
//! the ports the processes listen on, start order on health, restart policies, the worker's grace
//! against its drain, volumes on folders the image's user owns.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_yaml::Value;

use super::binaries::{Binaries, FarmProcess, Invocation, port_of_address};
use super::image::ImageFacts;
use super::yaml::{Problems, at, text, text_at, words};

/// One service of the compose file.
#[derive(Debug)]
pub struct ComposeService {
    /// Its name (its host name on the compose network).
    pub name: String,
    /// Its definition.
    pub raw: Value,
    /// `entrypoint` then `command`.
    pub command: Vec<String>,
    /// Its environment (names, literal values).
    pub env: BTreeMap<String, Option<String>>,
    /// Its volumes: (source, target).
    pub mounts: Vec<(String, String)>,
}

impl ComposeService {
    /// Every port named in its command line (`-m 8222`, `--listen-client-urls=http://0.0.0.0:2379`).
    pub fn command_ports(&self) -> BTreeSet<u16> {
        let mut ports = BTreeSet::new();
        for word in &self.command {
            let value = word.split_once('=').map_or(word.as_str(), |(_, v)| v);
            for part in value.split(',') {
                if let Some(port) = port_of_address(part).or_else(|| part.parse().ok()) {
                    ports.insert(port);
                }
            }
        }
        ports
    }
}

/// The services of a compose file, by name.
pub fn services(compose: &Value) -> BTreeMap<String, ComposeService> {
    let mut services = BTreeMap::new();
    let Some(Value::Mapping(map)) = compose.get("services") else {
        return services;
    };
    for (name, raw) in map {
        let Some(name) = text(name) else { continue };
        let mut command = words(raw.get("entrypoint"));
        command.extend(words(raw.get("command")));
        let mut env = BTreeMap::new();
        match raw.get("environment") {
            Some(Value::Mapping(vars)) => {
                for (key, value) in vars {
                    if let Some(key) = text(key) {
                        env.insert(key, text(value));
                    }
                }
            }
            Some(Value::Sequence(vars)) => {
                for var in vars.iter().filter_map(text) {
                    let (key, value) = var.split_once('=').map_or((var.clone(), None), |(k, v)| {
                        (k.to_owned(), Some(v.to_owned()))
                    });
                    env.insert(key, value);
                }
            }
            _ => {}
        }
        let mounts = words(raw.get("volumes"))
            .iter()
            .filter_map(|volume| {
                let mut parts = volume.split(':');
                Some((parts.next()?.to_owned(), parts.next()?.to_owned()))
            })
            .collect();
        services.insert(
            name.clone(),
            ComposeService {
                name,
                raw: raw.clone(),
                command,
                env,
                mounts,
            },
        );
    }
    services
}

/// The farm process a service runs, if it runs `lathe-coordinator` or `lathe-worker`.
pub fn farm_process<'a>(
    service: &ComposeService,
    binaries: &'a Binaries,
) -> Option<FarmProcess<'a>> {
    let (options, invocation): (_, Invocation) = binaries.invocation(&service.command)?;
    Some(FarmProcess {
        location: format!("compose.yaml: service {}", service.name),
        options,
        invocation,
        env: service.env.clone(),
    })
}

/// Seconds of a compose duration (`30s`, `1m30s`, `90s`).
pub fn duration_s(duration: &str) -> Option<f64> {
    let mut total = 0.0;
    let mut number = String::new();
    for c in duration.chars() {
        if c.is_ascii_digit() || c == '.' {
            number.push(c);
        } else {
            let value: f64 = number.parse().ok()?;
            number.clear();
            total += value
                * match c {
                    'h' => 3600.0,
                    'm' => 60.0,
                    's' => 1.0,
                    _ => return None,
                };
        }
    }
    number.is_empty().then_some(total)
}

/// Checks a compose file; `base` is its folder (for bind mounts' sources), `None` for a snippet.
pub fn check(
    compose: &Value,
    binaries: &Binaries,
    image: &ImageFacts,
    base: Option<&Path>,
    problems: &mut Problems,
) {
    let services = services(compose);
    if services.is_empty() {
        problems.add("compose.yaml: no services");
    }
    let named_volumes: BTreeSet<String> = match compose.get("volumes") {
        Some(Value::Mapping(map)) => map.keys().filter_map(text).collect(),
        _ => BTreeSet::new(),
    };
    for service in services.values() {
        let here = format!("compose.yaml: service {}", service.name);
        if service.raw.get("restart").is_none() {
            problems.add(format!("{here}: no restart policy"));
        }
        check_depends_on(service, &services, problems);
        for (source, _) in &service.mounts {
            let bind = source.starts_with('.') || source.starts_with('/');
            if bind {
                if base.is_some_and(|base| !base.join(source).exists()) {
                    problems.add(format!("{here}: mounts {source}, which does not exist"));
                }
            } else if !named_volumes.contains(source) {
                problems.add(format!(
                    "{here}: volume {source} is not declared under volumes"
                ));
            }
        }
        let runs_lathe_image = text_at(&service.raw, &["image"])
            .is_some_and(|i| i.starts_with("lathe"))
            || at(&service.raw, &["build"]).is_some();
        let Some(process) = farm_process(service, binaries) else {
            if runs_lathe_image {
                problems.add(format!(
                    "{here}: runs the lathe image without naming lathe-coordinator or lathe-worker"
                ));
            }
            check_other_healthcheck(service, problems);
            continue;
        };
        problems.extend(process.problems(true));
        if process.options.is_service() {
            check_farm_healthcheck(service, &process, image, problems);
        }
        for (source, target) in &service.mounts {
            let named = !(source.starts_with('.') || source.starts_with('/'));
            if named && !image.owned_dirs.contains(target.trim_end_matches('/')) {
                problems.add(format!(
                    "{here}: named volume {source} on {target}, a folder the image does not chown to \
                     its user (the volume would be root's)"
                ));
            }
        }
        for long in ["blobs", "scratch"] {
            if !process.options.has_long(long) {
                continue;
            }
            let Some(folder) = process.setting(long) else {
                continue;
            };
            let mounted = service.mounts.iter().any(|(_, target)| *target == folder);
            if !mounted && !image.owned_dirs.contains(folder.trim_end_matches('/')) {
                problems.add(format!(
                    "{here}: --{long} {folder} is neither a volume nor a folder the image's user owns"
                ));
            }
        }
        if process.options.program == "lathe-coordinator" {
            let blobs = process.setting_or_default("blobs").unwrap_or_default();
            if !service.mounts.iter().any(|(_, target)| *target == blobs) {
                problems.add(format!(
                    "{here}: the blob store {blobs} is not on a volume (it would go with the container)"
                ));
            }
        }
        for mapping in words(service.raw.get("ports")) {
            let container_port = mapping.rsplit(':').next().and_then(|p| p.split('/').next());
            match container_port.and_then(|p| p.parse::<u16>().ok()) {
                Some(port) if process.ports().contains(&port) => {}
                _ => problems.add(format!(
                    "{here}: publishes {mapping}, but the process listens on {:?}",
                    process.ports()
                )),
            }
        }
        if process.options.program == "lathe-worker" {
            let drain_s = process
                .setting_or_default("drain-s")
                .and_then(|d| d.parse::<f64>().ok())
                .unwrap_or(0.0);
            let grace_s = text_at(&service.raw, &["stop_grace_period"])
                .and_then(|g| duration_s(&g))
                .unwrap_or(10.0);
            if grace_s <= drain_s {
                problems.add(format!(
                    "{here}: stop_grace_period {grace_s} s does not cover --drain-s {drain_s}"
                ));
            }
        }
    }
}

/// `depends_on` names services, and `condition: service_healthy` ones that have a healthcheck.
fn check_depends_on(
    service: &ComposeService,
    services: &BTreeMap<String, ComposeService>,
    problems: &mut Problems,
) {
    let here = format!("compose.yaml: service {}", service.name);
    let needs: Vec<(String, Option<String>)> = match service.raw.get("depends_on") {
        Some(Value::Sequence(names)) => names.iter().filter_map(text).map(|n| (n, None)).collect(),
        Some(Value::Mapping(map)) => map
            .iter()
            .filter_map(|(name, spec)| Some((text(name)?, text_at(spec, &["condition"]))))
            .collect(),
        _ => Vec::new(),
    };
    for (name, condition) in needs {
        let Some(needed) = services.get(&name) else {
            problems.add(format!("{here}: depends on {name}, which is not a service"));
            continue;
        };
        if condition.as_deref() == Some("service_healthy")
            && needed.raw.get("healthcheck").is_none()
        {
            problems.add(format!(
                "{here}: waits for {name} to be healthy, but {name} has no healthcheck"
            ));
        }
    }
}

/// The URL a healthcheck's `test` probes, if it names one.
fn healthcheck_url(service: &ComposeService) -> Option<String> {
    words(at(&service.raw, &["healthcheck", "test"]))
        .into_iter()
        .flat_map(|word| {
            word.split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .find_map(|word| {
            let word = word
                .split_once('=')
                .map_or(word.as_str(), |(_, v)| v)
                .to_owned();
            (word.starts_with("http://") || word.starts_with("https://")).then_some(word)
        })
}

/// A farm process's healthcheck: a program the image has, probing `/readyz` or `/healthz` on one
/// of the process's HTTP ports.
fn check_farm_healthcheck(
    service: &ComposeService,
    process: &FarmProcess<'_>,
    image: &ImageFacts,
    problems: &mut Problems,
) {
    let here = format!("compose.yaml: service {}", service.name);
    let test = words(at(&service.raw, &["healthcheck", "test"]));
    if test.is_empty() {
        problems.add(format!("{here}: no healthcheck"));
        return;
    }
    let program = match test.first().map(String::as_str) {
        Some("CMD") => test.get(1),
        Some("CMD-SHELL") => None,
        _ => test.first(),
    };
    if let Some(program) = program {
        let name = program.rsplit('/').next().unwrap_or(program);
        if !image.programs.contains(name) {
            problems.add(format!(
                "{here}: the healthcheck runs {program}, which the image does not have"
            ));
        }
    }
    let Some(url) = healthcheck_url(service) else {
        problems.add(format!("{here}: the healthcheck probes no http:// URL"));
        return;
    };
    let port = port_of_address(&url);
    if !port.is_some_and(|p| process.http_ports().contains(&p)) {
        problems.add(format!(
            "{here}: the healthcheck probes {url}, but the process serves HTTP on {:?}",
            process.http_ports()
        ));
    }
    let path = url.splitn(4, '/').nth(3).map(|p| format!("/{p}"));
    if !matches!(path.as_deref(), Some("/readyz" | "/healthz")) {
        problems.add(format!(
            "{here}: the healthcheck probes {url}, not /readyz or /healthz"
        ));
    }
}

/// Another service's healthcheck (NATS, etcd) must exist and probe a port its command sets.
fn check_other_healthcheck(service: &ComposeService, problems: &mut Problems) {
    let here = format!("compose.yaml: service {}", service.name);
    if service.raw.get("healthcheck").is_none() {
        // Only services others wait for need one.
        return;
    }
    let port = healthcheck_url(service)
        .as_deref()
        .and_then(port_of_address);
    if let Some(port) = port.filter(|p| !service.command_ports().contains(p)) {
        problems.add(format!(
            "{here}: the healthcheck probes port {port}, which its command does not set ({:?})",
            service.command_ports()
        ));
    }
}
