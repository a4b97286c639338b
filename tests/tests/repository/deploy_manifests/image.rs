//! The files that are not YAML: `deploy/Dockerfile` (the build's packages, `--locked`, the user, the
//! folders it owns), `.dockerignore`, and the flags `deploy/local-farm.sh` passes to the binaries.

use std::collections::BTreeSet;

use super::binaries::{Binaries, FarmProcess};
use super::yaml::Problems;

/// The binaries' names, as the image must hold them.
pub const IMAGE_BINARIES: &[&str] = &["lathe", "lathe-coordinator", "lathe-worker"];

/// The user the image runs as (distroless's `nonroot`).
pub const IMAGE_UID: &str = "65532";

/// What the other checks need to know about the image.
#[derive(Debug, Default)]
pub struct ImageFacts {
    /// Folders created and `chown`ed to the image's user (named volumes mounted there are writable).
    pub owned_dirs: BTreeSet<String>,
    /// Programs in the image's `PATH` that the deploy files may run (healthchecks).
    pub programs: BTreeSet<String>,
}

/// The Dockerfile's instructions, continuation lines joined, comments left out.
fn instructions(dockerfile: &str) -> Vec<String> {
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                instructions.push(std::mem::take(&mut current));
            }
        }
    }
    if !current.is_empty() {
        instructions.push(current);
    }
    instructions
}

/// Checks the Dockerfile and returns what it makes of the image.
pub fn check_dockerfile(
    dockerfile: &str,
    binaries: &Binaries,
    problems: &mut Problems,
) -> ImageFacts {
    let instructions = instructions(dockerfile);
    let keyword = |i: &String| {
        i.split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase()
    };
    let runs: Vec<&String> = instructions
        .iter()
        .filter(|i| keyword(i) == "RUN")
        .collect();
    for package in ["cmake", "protobuf-compiler", "libclang-dev"] {
        let installed = runs.iter().any(|run| {
            run.contains("apt-get install") && run.split_whitespace().any(|w| w == package)
        });
        if !installed {
            problems.add(format!(
                "Dockerfile: no RUN installs {package}, which the build needs"
            ));
        }
    }
    let builds: Vec<&&String> = runs
        .iter()
        .filter(|run| run.contains("cargo build"))
        .collect();
    if builds.is_empty() {
        problems.add("Dockerfile: no RUN cargo build");
    }
    for build in &builds {
        let words: Vec<&str> = build.split_whitespace().collect();
        for flag in ["--locked", "--release"] {
            if !words.contains(&flag) {
                problems.add(format!("Dockerfile: cargo build without {flag}"));
            }
        }
        for binary in IMAGE_BINARIES {
            if !words.iter().any(|w| w.ends_with(&format!("/{binary}"))) {
                problems.add(format!(
                    "Dockerfile: the build step does not copy out {binary}"
                ));
            }
        }
    }
    // The runtime stage: from the last FROM on.
    let last_from = instructions
        .iter()
        .rposition(|i| keyword(i) == "FROM")
        .unwrap_or(0);
    let runtime = &instructions[last_from..];
    if !runtime[0].contains("debian:bookworm-slim") {
        problems.add(format!(
            "Dockerfile: the runtime stage is `{}`, not debian:bookworm-slim",
            runtime[0]
        ));
    }
    let user = runtime
        .iter()
        .rfind(|i| keyword(i) == "USER")
        .and_then(|i| i.split_whitespace().nth(1))
        .map(|user| user.split(':').next().unwrap_or(user).to_owned());
    if user.as_deref() != Some(IMAGE_UID) {
        problems.add(format!(
            "Dockerfile: the runtime stage runs as {user:?}, not uid {IMAGE_UID}"
        ));
    }
    let mut facts = ImageFacts::default();
    for instruction in runtime {
        let words: Vec<&str> = instruction.split_whitespace().collect();
        match keyword(instruction).as_str() {
            "RUN" => {
                for command in instruction.split("&&") {
                    let words: Vec<&str> = command.split_whitespace().collect();
                    let Some(chown) = words.iter().position(|w| *w == "chown") else {
                        continue;
                    };
                    let rest: Vec<&str> = words[chown + 1..]
                        .iter()
                        .copied()
                        .filter(|w| !w.starts_with('-'))
                        .collect();
                    let Some((owner, dirs)) = rest.split_first() else {
                        continue;
                    };
                    if owner.split(':').next() == Some(IMAGE_UID) {
                        facts
                            .owned_dirs
                            .extend(dirs.iter().map(|d| d.trim_end_matches('/').to_owned()));
                    }
                }
            }
            "COPY" => {
                let paths: Vec<&str> = words[1..]
                    .iter()
                    .copied()
                    .filter(|w| !w.starts_with("--"))
                    .collect();
                if let Some((destination, sources)) = paths.split_last() {
                    if destination.ends_with('/') {
                        for source in sources {
                            let name = source
                                .trim_end_matches('/')
                                .rsplit('/')
                                .next()
                                .unwrap_or(source);
                            facts.programs.insert(name.to_owned());
                        }
                    } else if let Some(name) = destination.rsplit('/').next() {
                        facts.programs.insert(name.to_owned());
                    }
                }
            }
            "ENV" => {
                for pair in &words[1..] {
                    let name = pair.split('=').next().unwrap_or(pair);
                    if name.starts_with("LATHE_") && !binaries.any_reads_env(name) {
                        problems.add(format!("Dockerfile: ENV {name}, which no binary reads"));
                    }
                }
            }
            _ => {}
        }
    }
    // The build stage's binaries arrive by `COPY --from=build /out/ ...`: named by the build step.
    if builds
        .iter()
        .any(|b| IMAGE_BINARIES.iter().all(|n| b.contains(n)))
    {
        facts
            .programs
            .extend(IMAGE_BINARIES.iter().map(|n| (*n).to_owned()));
    }
    if facts.owned_dirs.is_empty() {
        problems.add(format!(
            "Dockerfile: no folder is chown'ed to {IMAGE_UID} (named volumes would be root's)"
        ));
    }
    facts
}

/// `.dockerignore` keeps the build's output and the repository's history out of the context.
pub fn check_dockerignore(dockerignore: &str, problems: &mut Problems) {
    let patterns: Vec<&str> = dockerignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for (what, accepted) in [
        (
            "target",
            &[
                "target",
                "target/",
                "/target",
                "/target/",
                "**/target",
                "**/target/",
            ][..],
        ),
        (".git", &[".git", ".git/", "/.git"][..]),
    ] {
        if !patterns.iter().any(|p| accepted.contains(p)) {
            problems.add(format!(".dockerignore: does not exclude {what}"));
        }
    }
}

/// The shell script's logical lines (continuations joined, comments dropped).
fn shell_lines(script: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    for line in script.lines() {
        let code = line.trim();
        if code.starts_with('#') {
            continue;
        }
        match code.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(code);
                lines.push(std::mem::take(&mut current));
            }
        }
    }
    lines
}

/// The flags `script` passes to the farm binaries exist, and the `LATHE_*` variables it exports are
/// read by one of them. Returns how many invocations it found.
pub fn check_script(
    script: &str,
    name: &str,
    binaries: &Binaries,
    problems: &mut Problems,
) -> usize {
    let mut found = 0;
    for line in shell_lines(script) {
        let words: Vec<String> = line
            .split_whitespace()
            .map(|w| w.trim_matches('"').to_owned())
            .collect();
        if words.first().map(String::as_str) == Some("export") {
            for pair in &words[1..] {
                let var = pair.split('=').next().unwrap_or(pair);
                if var.starts_with("LATHE_") && !binaries.any_reads_env(var) {
                    problems.add(format!("{name}: exports {var}, which no binary reads"));
                }
            }
        }
        // The program is a path (`target/$BUILD/lathe-worker`) or the line's first word; a
        // `cargo build -p lathe-worker` names the package, not the program.
        let Some(at) = words
            .iter()
            .enumerate()
            .position(|(i, w)| (i == 0 || w.contains('/')) && binaries.of_program(w).is_some())
        else {
            continue;
        };
        // The program and its command, if it names one (`lathe-coordinator token create`).
        let Some((options, invocation)) = binaries.invocation(&words[at..]) else {
            continue;
        };
        // The services a script starts; a command (certs, token) is checked, not counted.
        if !options.program.contains(' ') {
            found += 1;
        }
        let process = FarmProcess {
            location: format!("{name}: `{line}`"),
            options,
            invocation,
            env: Default::default(),
        };
        problems.extend(process.problems(false));
    }
    found
}
