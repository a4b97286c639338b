//! What the binaries accept, read from their clap definitions, and one invocation of a binary as a
//! deploy file writes it (a program and its arguments, plus the environment it gets).

use std::collections::{BTreeMap, BTreeSet};

use clap::CommandFactory;

/// Environment variables a lathe binary reads besides its clap arguments' (`telemetry.rs`): the
/// log filter and the log format.
pub const NON_CLAP_ENV: &[&str] = &["LATHE_LOG", "LATHE_LOG_FORMAT"];

/// Prefixes of variables read by libraries the binaries link (OpenTelemetry's exporter).
pub const LIBRARY_ENV_PREFIXES: &[&str] = &["OTEL_"];

/// Variables any Rust binary honours.
pub const RUNTIME_ENV: &[&str] = &["RUST_BACKTRACE", "RUST_LIB_BACKTRACE"];

/// The options of one binary.
#[derive(Debug)]
pub struct BinaryOptions {
    /// The program's name (`lathe-coordinator`).
    pub program: &'static str,
    /// Long flags, without `--`, with their environment variable when they have one.
    longs: BTreeMap<String, Option<String>>,
    /// Short flags.
    shorts: BTreeSet<char>,
    /// Default values by long flag.
    defaults: BTreeMap<String, String>,
}

impl BinaryOptions {
    /// `true` for a service that runs until stopped (`lathe-coordinator`, `lathe-worker`), `false`
    /// for a command that does one thing and exits (`lathe-coordinator etcd-users`).
    pub fn is_service(&self) -> bool {
        !self.program.contains(' ')
    }

    /// Reads `command` (built, so `--help` and `--version` are there too).
    pub fn from_command(program: &'static str, mut command: clap::Command) -> Self {
        command.build();
        let mut longs = BTreeMap::new();
        let mut shorts = BTreeSet::new();
        let mut defaults = BTreeMap::new();
        for arg in command.get_arguments() {
            let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
            if let Some(long) = arg.get_long() {
                longs.insert(long.to_owned(), env);
                if let Some(default) = arg.get_default_values().first() {
                    defaults.insert(long.to_owned(), default.to_string_lossy().into_owned());
                }
            }
            if let Some(short) = arg.get_short() {
                shorts.insert(short);
            }
        }
        Self {
            program,
            longs,
            shorts,
            defaults,
        }
    }

    /// `true` when `--long` exists.
    pub fn has_long(&self, long: &str) -> bool {
        self.longs.contains_key(long)
    }

    /// `true` when `-c` exists.
    pub fn has_short(&self, short: char) -> bool {
        self.shorts.contains(&short)
    }

    /// The environment variable of `--long`, if it has one.
    pub fn env_of(&self, long: &str) -> Option<&str> {
        self.longs.get(long).and_then(|env| env.as_deref())
    }

    /// `true` when some argument reads `name` from the environment.
    pub fn reads_env(&self, name: &str) -> bool {
        self.longs.values().any(|env| env.as_deref() == Some(name))
    }

    /// The default value of `--long`.
    pub fn default_of(&self, long: &str) -> Option<&str> {
        self.defaults.get(long).map(String::as_str)
    }

    /// Why the binary would not read environment variable `name`, or `None` when it does.
    pub fn env_problem(&self, name: &str) -> Option<String> {
        let known = self.reads_env(name)
            || NON_CLAP_ENV.contains(&name)
            || RUNTIME_ENV.contains(&name)
            || LIBRARY_ENV_PREFIXES.iter().any(|p| name.starts_with(p));
        (!known).then(|| format!("{} reads no environment variable {name}", self.program))
    }
}

/// The farm's two service binaries.
#[derive(Debug)]
pub struct Binaries {
    /// `lathe-coordinator` and `lathe-worker`.
    pub all: Vec<BinaryOptions>,
}

impl Binaries {
    /// The coordinator's and the worker's `ServiceArgs`, the coordinator's administrative
    /// commands (`certs`, `token create`, `etcd-users`), and how `lathe`
    /// reaches a farm (its `CoordinatorArg`).
    pub fn of_the_farm() -> Self {
        let admin = lathe_coordinator::command_line::CoordinatorCli::command();
        let subcommand = |path: &[&str]| {
            let mut command = admin.clone();
            for name in path {
                command = command
                    .find_subcommand(name)
                    .expect("a lathe-coordinator command")
                    .clone();
            }
            command
        };
        Self {
            all: vec![
                BinaryOptions::from_command(
                    "lathe-coordinator",
                    lathe_coordinator::service::ServiceArgs::command(),
                ),
                BinaryOptions::from_command("lathe-coordinator certs", subcommand(&["certs"])),
                BinaryOptions::from_command(
                    "lathe-coordinator token create",
                    subcommand(&["token", "create"]),
                ),
                BinaryOptions::from_command(
                    "lathe-coordinator etcd-users",
                    subcommand(&["etcd-users"]),
                ),
                BinaryOptions::from_command(
                    "lathe-worker",
                    lathe_worker::service::ServiceArgs::command(),
                ),
                // Only for the variables it reads: no deploy file runs `lathe` itself.
                BinaryOptions::from_command(
                    "lathe (client)",
                    <lathe_cli::CoordinatorArg as clap::Args>::augment_args(clap::Command::new(
                        "lathe",
                    )),
                ),
            ],
        }
    }

    /// The binary a program path runs (`target/release/lathe-worker` runs `lathe-worker`).
    pub fn of_program(&self, program: &str) -> Option<&BinaryOptions> {
        let name = program.rsplit('/').next().unwrap_or(program);
        let name = name.trim_matches(|c| c == '"' || c == '\'');
        self.all.iter().find(|b| b.program == name)
    }

    /// The binary that `words` (a command line) runs, and its arguments.
    pub fn invocation(&self, words: &[String]) -> Option<(&BinaryOptions, Invocation)> {
        let (program, args) = words.split_first()?;
        let mut options = self.of_program(program)?;
        // A command of the binary (`lathe-coordinator token create`): the longest one named.
        let mut consumed = 0;
        for depth in 1..=args.len().min(2) {
            let name = format!("{} {}", options.program, args[consumed..depth].join(" "));
            if let Some(command) = self.all.iter().find(|b| b.program == name) {
                options = command;
                consumed = depth;
            }
        }
        let args = &args[consumed..];
        Some((
            options,
            Invocation {
                args: args.to_vec(),
            },
        ))
    }

    /// `true` when either binary reads `name` from the environment (or it is a log or OTel one).
    pub fn any_reads_env(&self, name: &str) -> bool {
        self.all.iter().any(|b| b.env_problem(name).is_none())
    }
}

/// The arguments of one run of a binary.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// Everything after the program.
    pub args: Vec<String>,
}

impl Invocation {
    /// The flags (`--name` or `-c`, without the value) and their values (`--name=v` or `--name v`).
    pub fn flags(&self) -> Vec<(String, Option<String>)> {
        let mut flags = Vec::new();
        let mut args = self.args.iter().peekable();
        while let Some(arg) = args.next() {
            if !arg.starts_with('-') || arg == "-" || arg == "--" {
                continue;
            }
            if let Some((flag, value)) = arg.split_once('=') {
                flags.push((flag.to_owned(), Some(value.to_owned())));
            } else {
                let value = args.next_if(|next| !next.starts_with('-')).cloned();
                flags.push((arg.clone(), value));
            }
        }
        flags
    }

    /// The value given to `--long`.
    pub fn value_of(&self, long: &str) -> Option<String> {
        let flag = format!("--{long}");
        self.flags()
            .into_iter()
            .find(|(f, _)| *f == flag)
            .and_then(|(_, value)| value)
    }
}

/// One container (or process) running a farm binary: its arguments and environment.
#[derive(Debug)]
pub struct FarmProcess<'a> {
    /// Where it is written (`compose.yaml: service worker`).
    pub location: String,
    /// The binary.
    pub options: &'a BinaryOptions,
    /// Its arguments.
    pub invocation: Invocation,
    /// Its environment: names, with the value when the file gives it literally.
    pub env: BTreeMap<String, Option<String>>,
}

impl FarmProcess<'_> {
    /// The value of a setting: the flag's, else its environment variable's (not the default).
    pub fn setting(&self, long: &str) -> Option<String> {
        self.invocation.value_of(long).or_else(|| {
            let env = self.options.env_of(long)?;
            self.env.get(env).cloned().flatten()
        })
    }

    /// The setting's value, else the binary's default.
    pub fn setting_or_default(&self, long: &str) -> Option<String> {
        self.setting(long)
            .or_else(|| self.options.default_of(long).map(str::to_owned))
    }

    /// The port of a listen address setting (`--listen 0.0.0.0:7480` gives 7480).
    pub fn port_of(&self, long: &str) -> Option<u16> {
        port_of_address(&self.setting(long)?)
    }

    /// The ports it serves HTTP on (`--http-listen`, `--metrics-listen`): `/metrics`, `/healthz`,
    /// `/readyz`.
    pub fn http_ports(&self) -> BTreeSet<u16> {
        ["http-listen", "metrics-listen"]
            .iter()
            .filter_map(|long| self.port_of(long))
            .collect()
    }

    /// Every port it listens on: gRPC (`--listen`) and HTTP.
    pub fn ports(&self) -> BTreeSet<u16> {
        let mut ports = self.http_ports();
        ports.extend(self.port_of("listen"));
        ports
    }

    /// Unknown flags, unknown environment variables, and listen addresses only the container itself
    /// could reach.
    pub fn problems(&self, container: bool) -> Vec<String> {
        let mut problems = Vec::new();
        for (flag, _) in self.invocation.flags() {
            let known = match flag.strip_prefix("--") {
                Some(long) => self.options.has_long(long),
                None => flag
                    .strip_prefix('-')
                    .and_then(|s| s.chars().next())
                    .is_some_and(|c| self.options.has_short(c)),
            };
            if !known {
                problems.push(format!(
                    "{}: {} has no option {flag}",
                    self.location, self.options.program
                ));
            }
        }
        for name in self.env.keys() {
            if let Some(problem) = self.options.env_problem(name) {
                problems.push(format!("{}: {problem}", self.location));
            }
        }
        if container {
            for long in ["listen", "http-listen", "metrics-listen"] {
                if !self.options.has_long(long) {
                    continue;
                }
                let address = if long == "listen" {
                    self.setting_or_default(long)
                } else {
                    self.setting(long)
                };
                if let Some(address) = address {
                    let host = address.rsplit_once(':').map_or("", |(host, _)| host);
                    if host == "127.0.0.1" || host == "localhost" || host == "[::1]" {
                        problems.push(format!(
                            "{}: --{long} {address} is reachable from inside the container only",
                            self.location
                        ));
                    }
                }
            }
        }
        problems
    }
}

/// The port of `host:port`, `http://host:port/path` or `[::]:port`.
pub fn port_of_address(address: &str) -> Option<u16> {
    let without_scheme = address.split_once("://").map_or(address, |(_, rest)| rest);
    let authority = without_scheme.split('/').next()?;
    authority.rsplit_once(':')?.1.parse().ok()
}

/// The host of `host:port` or `scheme://host:port/path`.
pub fn host_of_address(address: &str) -> Option<&str> {
    let without_scheme = address.split_once("://").map_or(address, |(_, rest)| rest);
    let authority = without_scheme.split('/').next()?;
    Some(
        authority
            .rsplit_once(':')
            .map_or(authority, |(host, _)| host),
    )
}
