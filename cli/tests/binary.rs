//! The real `lathe` binary: exit statuses and streams as a shell script sees them.

use std::process::Command;

fn lathe() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lathe"))
}

#[test]
fn usage_error_exits_2_with_one_line_on_stderr() {
    let output = lathe()
        .args([
            "master",
            "/nonexistent/input",
            "-p",
            "streaming",
            "-o",
            "/tmp/x",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("/nonexistent/input"), "{stderr}");
    assert!(output.stdout.is_empty());
}

#[test]
fn missing_arguments_exit_2() {
    let output = lathe().arg("master").output().unwrap();
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn analyze_of_a_non_audio_file_exits_1_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("readme.wav");
    std::fs::write(&path, "not audio at all").unwrap();
    let output = lathe()
        .args(["analyze", "--json"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("readme.wav"));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        json.as_array().map(Vec::len),
        Some(0),
        "no analysis for a file that is not audio"
    );
}

#[test]
fn profiles_prints_a_preset_as_toml() {
    let output = lathe().args(["profiles", "broadcast"]).output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("target_lufs = -23.0"), "{text}");
}

#[test]
fn master_refuses_the_real_folder_of_a_linked_source_file() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("a");
    let named = dir.path().join("b");
    std::fs::create_dir(&real).unwrap();
    std::fs::create_dir(&named).unwrap();
    std::fs::write(real.join("track.wav"), "the source").unwrap();
    std::os::unix::fs::symlink(real.join("track.wav"), named.join("track.wav")).unwrap();
    let output = lathe()
        .args(["master", "-p", "streaming", "-o"])
        .arg(&real)
        .arg(named.join("track.wav"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("is an input folder") && stderr.contains("choose another"),
        "{stderr}"
    );
    let mut left: Vec<_> = std::fs::read_dir(&real)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    left.sort();
    assert_eq!(left, ["track.wav"], "nothing written into a");
    assert!(output.stdout.is_empty());
}
