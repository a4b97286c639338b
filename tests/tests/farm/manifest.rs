//! `lathe submit MANIFEST` against a real farm (`nats-server -js`, `etcd`, the coordinator and two
//! workers as processes): a catalogue's delivery runs as the engine's task graph (measure, render,
//! assemble) and `lathe fetch` writes the same delivery as `lathe master MANIFEST`: the same files,
//! byte for byte, under the same names, with the same `delivery.json`. A corrupt track fails its
//! album's tasks, naming the file, while the other album is delivered.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::BINARIES;
use lathe_engine::tags::read_tags;
use lathe_synth::{Style, TrackRecipe, write_wav};
use lathe_tests::farm::{Farm, FarmOptions, serial};
use lathe_tests::lathe;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Writes a synthetic track (24-bit WAV) of `duration_s` seconds.
fn write_track(path: &Path, style: Style, seed: u64, duration_s: f64) {
    let recipe = TrackRecipe {
        duration_s,
        ..TrackRecipe::new(style, seed)
    };
    write_wav(&recipe, path, 24).expect("write track");
}

/// A catalogue of one album (two tracks) and a loose track, with `album_settings` added to the
/// album table and `job` as the `[job]` table's body. As at a label, the manifest sits in a project
/// folder (`dir/project`) and the sources on an "archive" beside it (`dir/audio`), named three
/// ways: by absolute path, through a symbolic link in the project folder, and by `../`.
fn write_catalogue(dir: &Path, job: &str, album_settings: &str) -> PathBuf {
    let audio = dir.join("audio");
    std::fs::create_dir_all(&audio).expect("audio folder");
    for (index, (name, style)) in [
        ("dawn", Style::Ballad),
        ("noon", Style::Rock),
        ("b-side", Style::Pop),
    ]
    .into_iter()
    .enumerate()
    {
        write_track(
            &audio.join(format!("{name}.wav")),
            style,
            0x5EED + index as u64,
            4.0 + index as f64,
        );
    }
    let project = dir.join("project");
    std::fs::create_dir_all(project.join("links")).expect("project folder");
    std::os::unix::fs::symlink(audio.join("noon.wav"), project.join("links/noon.wav"))
        .expect("link to the archive");
    let dawn = audio.join("dawn.wav");
    let manifest = project.join("catalogue.toml");
    std::fs::write(
        &manifest,
        format!(
            r#"[job]
name = "farm manifest"
{job}

[[album]]
title = "Northern Lights"
artist = "The Example Band"
{album_settings}

[[album.track]]
file = "{dawn}"
title = "Dawn"
isrc = "GBXYZ7400001"

[[album.track]]
file = "links/noon.wav"
title = "Noon: High"
isrc = "GBXYZ7400002"

[[track]]
file = "../audio/b-side.wav"
title = "B-side"
artist = "Solo Artist"
profile = "apple"
"#,
            dawn = dawn.display()
        ),
    )
    .expect("write manifest");
    manifest
}

/// `delivery.json`'s files: path -> (sha256, md5, kind).
fn delivered(dir: &Path) -> BTreeMap<String, (String, String, String)> {
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join("delivery.json")).expect("delivery.json"))
            .expect("delivery.json is JSON");
    manifest["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|file| {
            let text = |key: &str| file[key].as_str().expect(key).to_owned();
            (text("path"), (text("sha256"), text("md5"), text("kind")))
        })
        .collect()
}

/// The SHA-256 of a file, hexadecimal.
fn sha256_of(path: &Path) -> String {
    Sha256::digest(std::fs::read(path).expect("read delivered file"))
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Checks that every file `delivery.json` lists under `dir` has the listed SHA-256.
fn assert_files_match_their_manifest(dir: &Path) {
    for (path, (sha256, _, _)) in delivered(dir) {
        assert_eq!(
            sha256_of(&dir.join(&path)),
            sha256,
            "{path} in {}",
            dir.display()
        );
    }
}

/// Runs `lathe master MANIFEST --out OUT`, which must deliver everything.
fn master_locally(manifest: &Path, out: &Path) {
    let outcome = lathe(&[
        "master",
        manifest.to_str().expect("utf-8 path"),
        "--out",
        out.to_str().expect("utf-8"),
    ]);
    assert_eq!(
        outcome.status, 0,
        "lathe master: {}\n{}",
        outcome.stdout, outcome.stderr
    );
}

/// Submits `manifest` to `farm`, waits for the job to end; returns its id and final status.
fn run_on_farm(farm: &Farm, manifest: &Path) -> (String, Value) {
    let outcome = farm.lathe(&["submit", manifest.to_str().expect("utf-8"), "--json"]);
    assert_eq!(outcome.status, 0, "lathe submit: {}", outcome.stderr);
    let reply: Value = serde_json::from_str(&outcome.stdout).expect("submit --json");
    let job = reply["job_id"].as_str().expect("job id").to_owned();
    let last = farm.wait_for_status(&job, Duration::from_secs(900), |s| s["state"] != "running");
    (job, last)
}

/// A farm of two one-slot workers, or `None` when nats-server or etcd is missing.
fn farm_of_two() -> Option<Farm> {
    let mut farm = Farm::start(BINARIES, FarmOptions::default())?;
    farm.start_worker("w1");
    farm.start_worker("w2");
    Some(farm)
}

#[test]
fn a_manifest_on_the_farm_gives_lathe_masters_bytes_names_and_tags() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("temp dir");
    let manifest = write_catalogue(dir.path(), "", r#"loudness = "track""#);
    let local = dir.path().join("local");
    master_locally(&manifest, &local);
    let local_files = delivered(&local);
    assert_eq!(
        local_files.keys().filter(|p| p.ends_with(".flac")).count(),
        3,
        "{:?}",
        local_files.keys()
    );

    let Some(farm) = farm_of_two() else {
        return;
    };
    let (job, last) = run_on_farm(&farm, &manifest);
    assert_eq!(last["state"], "succeeded", "{last:#}");
    assert_eq!(last["name"], "farm manifest");
    let fetched = dir.path().join("farm");
    let outcome = farm.lathe(&["fetch", &job, "--out", fetched.to_str().expect("utf-8")]);
    assert_eq!(outcome.status, 0, "lathe fetch: {}", outcome.stderr);
    assert_eq!(delivered(&fetched), local_files, "delivery.json's files");
    assert_files_match_their_manifest(&fetched);

    let noon = read_tags(&fetched.join("Northern Lights/streaming/02 Noon_ High.flac"))
        .expect("album track tags");
    assert_eq!(noon.title.as_deref(), Some("Noon: High"));
    assert_eq!(noon.artist.as_deref(), Some("The Example Band"));
    assert_eq!(noon.album.as_deref(), Some("Northern Lights"));
    assert_eq!(noon.isrc.as_deref(), Some("GBXYZ7400002"));
    assert_eq!(noon.track_number, Some(2));
    let b_side =
        read_tags(&fetched.join("tracks/streaming/b-side.flac")).expect("loose track tags");
    assert_eq!(b_side.title.as_deref(), Some("B-side"));
    assert_eq!(b_side.artist.as_deref(), Some("Solo Artist"));
    assert_eq!(b_side.album, None);
}

#[test]
fn an_album_delivery_on_the_farm_is_byte_identical_to_lathe_master() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("temp dir");
    let audio = dir.path().join("audio");
    std::fs::create_dir_all(&audio).expect("audio folder");
    for (index, (name, style)) in [
        ("intro", Style::Ambient),
        ("single", Style::Rock),
        ("ballad", Style::Ballad),
    ]
    .into_iter()
    .enumerate()
    {
        write_track(
            &audio.join(format!("{name}.wav")),
            style,
            0xA1B0 + index as u64,
            // Long enough that each CD track is 4 s after the crossfade takes its share.
            6.5,
        );
    }
    let manifest = dir.path().join("album.toml");
    std::fs::write(
        &manifest,
        r#"[job]
name = "album on the farm"
outlets = ["streaming", "cd", "vinyl", "mp3"]

[[album]]
title = "Dawn Chorus"
artist = "The Example Band"
upc = "5012345678900"
loudness = "album"

[[album.track]]
file = "audio/intro.wav"
title = "Intro"
isrc = "GBXYZ7400011"
fade_in_s = 1.0

[[album.track]]
file = "audio/single.wav"
title = "Single"
isrc = "GBXYZ7400012"
crossfade_s = 1.5
side = "A"

[[album.track]]
file = "audio/ballad.wav"
title = "Ballad"
isrc = "GBXYZ7400013"
fade_out_s = 2.0
side = "B"
"#,
    )
    .expect("write manifest");
    let local = dir.path().join("local");
    master_locally(&manifest, &local);
    let local_files = delivered(&local);
    let kinds: std::collections::BTreeSet<&str> = local_files
        .values()
        .map(|(_, _, kind)| kind.as_str())
        .collect();
    for kind in ["track", "album_image", "cue_sheet", "side"] {
        assert!(
            kinds.contains(kind),
            "no {kind} in {:?}",
            local_files.keys()
        );
    }

    let Some(farm) = farm_of_two() else {
        return;
    };
    let (job, last) = run_on_farm(&farm, &manifest);
    assert_eq!(last["state"], "succeeded", "{last:#}");
    let tasks = last["tasks"].as_array().expect("tasks");
    let workers: std::collections::BTreeSet<&str> =
        tasks.iter().filter_map(|t| t["worker"].as_str()).collect();
    assert_eq!(workers.len(), 2, "both workers ran tasks: {workers:?}");
    for kind in ["measure", "render", "assemble"] {
        assert!(
            tasks.iter().any(|t| t["kind"] == kind),
            "no {kind} task: {last:#}"
        );
    }
    assert!(
        tasks.iter().all(|t| t["label"]
            .as_str()
            .is_some_and(|l| l.starts_with("Dawn Chorus"))),
        "every task is labelled by its album: {last:#}"
    );

    let fetched = dir.path().join("farm");
    let outcome = farm.lathe(&["fetch", &job, "--out", fetched.to_str().expect("utf-8")]);
    assert_eq!(outcome.status, 0, "lathe fetch: {}", outcome.stderr);
    let farm_files = delivered(&fetched);
    assert_eq!(
        farm_files.keys().collect::<Vec<_>>(),
        local_files.keys().collect::<Vec<_>>(),
        "the delivered files"
    );
    assert_eq!(farm_files, local_files, "the same checksums");
    assert_files_match_their_manifest(&fetched);
    assert_files_match_their_manifest(&local);
}

#[test]
fn a_corrupt_track_fails_its_albums_tasks_while_the_other_album_is_delivered() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("temp dir");
    let audio = dir.path().join("audio");
    std::fs::create_dir_all(&audio).expect("audio folder");
    for (index, name) in ["one", "two", "good", "broken"].into_iter().enumerate() {
        write_track(
            &audio.join(format!("{name}.wav")),
            Style::Pop,
            0xC0 + index as u64,
            4.5,
        );
    }
    // A header announcing more audio than the file holds: it opens, then fails to decode.
    let broken = audio.join("broken.wav");
    let bytes = std::fs::read(&broken).expect("read");
    std::fs::write(&broken, &bytes[..bytes.len() / 2]).expect("truncate");
    let manifest = dir.path().join("two-albums.toml");
    std::fs::write(
        &manifest,
        r#"[job]
outlets = ["streaming", "cd"]

[[album]]
title = "Whole"
artist = "A"
[[album.track]]
file = "audio/one.wav"
title = "One"
[[album.track]]
file = "audio/two.wav"
title = "Two"

[[album]]
title = "Damaged"
artist = "B"
[[album.track]]
file = "audio/good.wav"
title = "Good"
[[album.track]]
file = "audio/broken.wav"
title = "Broken"
"#,
    )
    .expect("write manifest");

    let Some(farm) = farm_of_two() else {
        return;
    };
    let (job, last) = run_on_farm(&farm, &manifest);
    assert_eq!(last["state"], "completed_with_failures", "{last:#}");
    let tasks = last["tasks"].as_array().expect("tasks");
    let of_album = |title: &str| -> Vec<&Value> {
        tasks
            .iter()
            .filter(|t| t["label"].as_str().is_some_and(|l| l.starts_with(title)))
            .collect()
    };
    assert!(
        of_album("Whole").iter().all(|t| t["state"] == "succeeded"),
        "the whole album: {last:#}"
    );
    let damaged = of_album("Damaged");
    let broken_errors: Vec<&str> = damaged
        .iter()
        .filter(|t| t["state"] == "failed" && t["attempts"].as_u64() > Some(0))
        .map(|t| t["last_error"].as_str().expect("error"))
        .collect();
    assert!(!broken_errors.is_empty(), "{last:#}");
    for error in &broken_errors {
        assert!(
            error.starts_with("broken.wav:") && error.contains("truncated"),
            "names the file and the reason: {error}"
        );
    }
    let assemble = damaged
        .iter()
        .find(|t| t["kind"] == "assemble")
        .expect("the damaged album's CD assembly");
    assert_eq!(assemble["state"], "failed");
    assert_eq!(assemble["attempts"], 0, "never ran");
    let reason = assemble["last_error"].as_str().expect("error");
    assert!(
        reason.starts_with("needs Damaged / ") && reason.ends_with(", which failed"),
        "{reason}"
    );

    let fetched = dir.path().join("farm");
    let outcome = farm.lathe(&["fetch", &job, "--out", fetched.to_str().expect("utf-8")]);
    assert_eq!(outcome.status, 1, "failures: {}", outcome.stderr);
    assert!(outcome.stderr.contains("broken.wav"), "{}", outcome.stderr);
    let files = delivered(&fetched);
    assert!(
        files.keys().any(|p| p.starts_with("Whole/cd/")),
        "the whole album's CD: {:?}",
        files.keys()
    );
    assert!(
        !files.keys().any(|p| p.starts_with("Damaged/cd/")),
        "no CD for the damaged album: {:?}",
        files.keys()
    );
    assert_files_match_their_manifest(&fetched);
}

#[test]
fn a_manifest_that_cannot_be_planned_is_refused_before_anything_is_sent() {
    let dir = tempfile::tempdir().expect("temp dir");
    let manifest = write_catalogue(dir.path(), r#"profile = "no-such-preset""#, "");
    let outcome = lathe(&[
        "submit",
        manifest.to_str().expect("utf-8 path"),
        "--coordinator",
        "http://127.0.0.1:9",
    ]);
    assert_eq!(outcome.status, 2, "{}", outcome.stderr);
    let line = outcome.stderr.trim();
    assert_eq!(line.lines().count(), 1, "one line: {line}");
    assert!(line.contains("no-such-preset"), "{line}");
}
