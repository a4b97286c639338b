//! Certificates and passwords in the deploy files (issue 15): every credential a farm process reads
//! is a file from a secret (compose `secrets:` under `/run/secrets/`, a Kubernetes `Secret` volume),
//! never a value written in the file; the coordinator reaches NATS and etcd with TLS and a user,
//! workers reach NATS with TLS and their user and carry nothing of etcd; every Kubernetes `emptyDir`
//! has a `sizeLimit` and no Secret volume is readable by other users.

use std::collections::{BTreeMap, BTreeSet};

use serde_yaml::Value;

use super::yaml::{Problems, at, items, text, text_at, words};

/// Environment variables whose value is a credential file's path.
const FILE_VARIABLES: &[&str] = &[
    "LATHE_NATS_CA",
    "LATHE_NATS_CERT",
    "LATHE_NATS_KEY",
    "LATHE_NATS_PASSWORD_FILE",
    "LATHE_ETCD_CA",
    "LATHE_ETCD_CERT",
    "LATHE_ETCD_KEY",
    "LATHE_ETCD_PASSWORD_FILE",
    "LATHE_TOKEN_FILE",
];

/// Flags whose value is a credential file's path.
const FILE_FLAGS: &[&str] = &[
    "tls-cert",
    "tls-key",
    "tls-ca",
    "tls-client-ca",
    "nats-ca",
    "nats-cert",
    "nats-key",
    "nats-password-file",
    "etcd-ca",
    "etcd-cert",
    "etcd-key",
    "etcd-password-file",
    "root-password-file",
    "token-file",
];

/// Variables and flags that would hold a secret itself.
const SECRET_VARIABLES: &[&str] = &["LATHE_NATS_PASSWORD", "LATHE_ETCD_PASSWORD", "LATHE_TOKEN"];
const SECRET_FLAGS: &[&str] = &["nats-password", "etcd-password", "token"];

/// What a farm process must have, by program: (variables that must be set, prefixes of variables
/// and flags it must not have).
fn required(program: &str) -> (&'static [&'static str], &'static [&'static str]) {
    match program {
        "lathe-coordinator" => (
            &[
                "LATHE_NATS_CA",
                "LATHE_NATS_USER",
                "LATHE_NATS_PASSWORD_FILE",
                "LATHE_ETCD_CA",
                "LATHE_ETCD_USER",
                "LATHE_ETCD_PASSWORD_FILE",
            ],
            &[],
        ),
        "lathe-worker" => (
            &[
                "LATHE_NATS_CA",
                "LATHE_NATS_USER",
                "LATHE_NATS_PASSWORD_FILE",
            ],
            &["LATHE_ETCD", "etcd"],
        ),
        _ => (&[], &[]),
    }
}

/// One process as a deploy file runs it: where, its words and its environment.
struct Process<'a> {
    location: String,
    command: Vec<String>,
    env: &'a BTreeMap<String, Option<String>>,
}

impl Process<'_> {
    fn program(&self) -> &str {
        self.command
            .first()
            .map_or("", |p| p.rsplit('/').next().unwrap_or(p))
    }

    /// Each `--flag` with its value (`--flag=value` or `--flag value`).
    fn flags(&self) -> Vec<(String, Option<String>)> {
        let mut flags = Vec::new();
        let mut words = self.command.iter().peekable();
        while let Some(word) = words.next() {
            let Some(flag) = word.strip_prefix("--") else {
                continue;
            };
            match flag.split_once('=') {
                Some((name, value)) => flags.push((name.to_owned(), Some(value.to_owned()))),
                None => {
                    let value = words.next_if(|next| !next.starts_with("--")).cloned();
                    flags.push((flag.to_owned(), value));
                }
            }
        }
        flags
    }

    /// Adds a problem for every credential not a file from a secret (`is_secret_path`), and for
    /// what the program must or must not have.
    fn check(&self, is_secret_path: &dyn Fn(&str) -> bool, problems: &mut Problems) {
        let here = &self.location;
        let program = self.program();
        if !program.starts_with("lathe") {
            return;
        }
        for (name, value) in self.env {
            if SECRET_VARIABLES.contains(&name.as_str()) {
                problems.add(format!(
                    "{here}: {name} holds a secret in the file; use {name}_FILE and a secret"
                ));
            }
            if FILE_VARIABLES.contains(&name.as_str()) {
                match value {
                    Some(path) if is_secret_path(path) => {}
                    _ => problems.add(format!(
                        "{here}: {name} = {value:?} is not a file from a secret"
                    )),
                }
            }
        }
        for (flag, value) in self.flags() {
            if SECRET_FLAGS.contains(&flag.as_str()) {
                problems.add(format!(
                    "{here}: --{flag} puts a secret on the command line"
                ));
            }
            if FILE_FLAGS.contains(&flag.as_str()) && !value.as_deref().is_some_and(is_secret_path)
            {
                problems.add(format!(
                    "{here}: --{flag} {value:?} is not a file from a secret"
                ));
            }
        }
        // A command (`lathe-coordinator etcd-users`) needs only what it names; serving needs all.
        let serving = self.command.get(1).is_none_or(|w| w.starts_with("--"));
        let (must, must_not) = if serving {
            required(program)
        } else {
            (&[][..], &[][..])
        };
        for name in must {
            if !self.env.get(*name).is_some_and(Option::is_some) {
                problems.add(format!("{here}: {program} without {name}"));
            }
        }
        for prefix in must_not {
            for name in self.env.keys().filter(|n| n.starts_with(prefix)) {
                problems.add(format!(
                    "{here}: {program} must hold nothing of etcd, but has {name}"
                ));
            }
            for (flag, _) in self.flags().iter().filter(|(f, _)| f.starts_with(prefix)) {
                problems.add(format!(
                    "{here}: {program} must hold nothing of etcd, but has --{flag}"
                ));
            }
        }
        if program == "lathe-coordinator" && serving {
            for flag in ["tls-cert", "tls-key"] {
                if !self.flags().iter().any(|(f, _)| f == flag) {
                    problems.add(format!("{here}: the coordinator serves without --{flag}"));
                }
            }
        }
        for (name, scheme) in [
            ("LATHE_ETCD", "https://"),
            ("LATHE_COORDINATOR", "https://"),
        ] {
            if let Some(Some(url)) = self.env.get(name)
                && !url.starts_with(scheme)
            {
                problems.add(format!("{here}: {name} {url} is not {scheme}"));
            }
        }
    }
}

/// The names a compose `secrets:` list gives (strings or `{ source }`).
fn secret_names(list: &[Value]) -> BTreeSet<String> {
    list.iter()
        .filter_map(|s| text(s).or_else(|| text_at(s, &["source"])))
        .collect()
}

/// compose.yaml: credentials are `/run/secrets/NAME` of a secret the service lists and the file
/// defines.
pub fn check_compose(compose: &Value, problems: &mut Problems) {
    let defined: BTreeSet<String> = match compose.get("secrets") {
        Some(Value::Mapping(map)) => map
            .iter()
            .filter(|(_, v)| v.get("file").is_some() || v.get("external").is_some())
            .filter_map(|(k, _)| text(k))
            .collect(),
        _ => BTreeSet::new(),
    };
    for (name, service) in super::compose::services(compose) {
        let listed = secret_names(items(&service.raw, &["secrets"]));
        for secret in &listed {
            if !defined.contains(secret) {
                problems.add(format!(
                    "compose.yaml: service {name} uses secret {secret}, which the file does not define"
                ));
            }
        }
        let is_secret_path = |path: &str| {
            path.strip_prefix("/run/secrets/")
                .is_some_and(|secret| listed.contains(secret))
        };
        Process {
            location: format!("compose.yaml: service {name}"),
            command: service.command.clone(),
            env: &service.env,
        }
        .check(&is_secret_path, problems);
    }
}

/// The octal mode of a Secret volume's `defaultMode` (`0440` read as YAML 1.1 octal, 288, or as
/// the decimal 440).
fn mode(value: &Value) -> Option<u32> {
    let digits = text(value)?;
    if digits.chars().all(|c| ('0'..='7').contains(&c)) && digits.len() <= 4 {
        u32::from_str_radix(&digits, 8).ok()
    } else {
        digits.parse().ok()
    }
}

/// Kubernetes: credentials are files under a mount of a `secret` volume; every `emptyDir` has a
/// `sizeLimit`; Secret volumes are not readable by others.
pub fn check_kubernetes(docs: &[Value], problems: &mut Problems) {
    let config_maps: BTreeMap<String, BTreeMap<String, Option<String>>> = docs
        .iter()
        .filter(|d| text_at(d, &["kind"]).as_deref() == Some("ConfigMap"))
        .filter_map(|d| {
            let Some(Value::Mapping(data)) = d.get("data") else {
                return None;
            };
            let data = data
                .iter()
                .filter_map(|(k, v)| Some((text(k)?, text(v))))
                .collect();
            Some((text_at(d, &["metadata", "name"])?, data))
        })
        .collect();
    for doc in docs {
        let name = text_at(doc, &["metadata", "name"]).unwrap_or_default();
        let kind = text_at(doc, &["kind"]).unwrap_or_default();
        if kind == "Secret" {
            for key in ["data", "stringData"] {
                if doc.get(key).is_some() {
                    problems.add(format!(
                        "Secret/{name}: its {key} is written in the manifest; make it with kubectl"
                    ));
                }
            }
        }
        let Some(pod) = at(doc, &["spec", "template", "spec"]) else {
            continue;
        };
        let mut secret_volumes = BTreeSet::new();
        for volume in items(pod, &["volumes"]) {
            let volume_name = text_at(volume, &["name"]).unwrap_or_default();
            if let Some(empty) = volume.get("emptyDir")
                && empty.get("sizeLimit").is_none()
            {
                problems.add(format!(
                    "{kind}/{name}: emptyDir volume {volume_name} has no sizeLimit"
                ));
            }
            if let Some(secret) = volume.get("secret") {
                secret_volumes.insert(volume_name.clone());
                match secret.get("defaultMode").and_then(mode) {
                    Some(mode) if mode & 0o007 == 0 => {}
                    other => problems.add(format!(
                        "{kind}/{name}: Secret volume {volume_name} is readable by others (defaultMode {other:?}; 0440 or 0400)"
                    )),
                }
            }
        }
        for container in items(pod, &["containers"]) {
            let secret_mounts: Vec<String> = items(container, &["volumeMounts"])
                .iter()
                .filter(|m| text_at(m, &["name"]).is_some_and(|v| secret_volumes.contains(&v)))
                .filter_map(|m| text_at(m, &["mountPath"]))
                .collect();
            let mut env = BTreeMap::new();
            for source in items(container, &["envFrom"]) {
                if let Some(data) =
                    text_at(source, &["configMapRef", "name"]).and_then(|map| config_maps.get(&map))
                {
                    env.extend(data.clone());
                }
                if source.get("secretRef").is_some() {
                    problems.add(format!(
                        "{kind}/{name}: envFrom a Secret puts secrets in the environment; mount them as files"
                    ));
                }
            }
            for var in items(container, &["env"]) {
                if let Some(key) = text_at(var, &["name"]) {
                    env.insert(key, text_at(var, &["value"]));
                }
            }
            let mut command = words(container.get("command"));
            command.extend(words(container.get("args")));
            let is_secret_path = |path: &str| {
                secret_mounts
                    .iter()
                    .any(|mount| path.starts_with(&format!("{}/", mount.trim_end_matches('/'))))
            };
            Process {
                location: format!(
                    "{kind}/{name} container {}",
                    text_at(container, &["name"]).unwrap_or_default()
                ),
                command,
                env: &env,
            }
            .check(&is_secret_path, problems);
        }
    }
}
