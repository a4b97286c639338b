//! `lathe submit MANIFEST` against a real farm (`nats-server -js`, `etcd`, the coordinator and two
//! workers as processes): a catalogue's album and loose tracks become render tasks whose masters are
//! byte-identical to `lathe master MANIFEST`'s streaming outlet, under the same names, with the tags
//! the manifest gives. Manifests asking for what the farm cannot do yet are refused, saying what.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lathe_engine::synth::{Style, TrackRecipe, write_wav};
use lathe_engine::tags::read_tags;
use lathe_tests::farm::{Binaries, Farm, FarmOptions, serial};
use lathe_tests::lathe;
use serde_json::Value;

const BINARIES: Binaries = Binaries {
    coordinator: env!("CARGO_BIN_EXE_farm-coordinator"),
    worker: env!("CARGO_BIN_EXE_farm-worker"),
};

/// Every `.flac` under `dir`, by path relative to it, with its bytes.
fn flac_tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).expect("read folder") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|e| e == "flac") {
                let relative = path.strip_prefix(dir).expect("inside").to_path_buf();
                files.insert(relative, std::fs::read(&path).expect("read"));
            }
        }
    }
    files
}

/// A catalogue of two albums' worth of tracks and a loose track, with `album_settings` added to
/// the album table and `job` as the `[job]` table's body.
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
        let recipe = TrackRecipe {
            duration_s: 4.0 + index as f64,
            ..TrackRecipe::new(style, 0x5EED + index as u64)
        };
        write_wav(&recipe, &audio.join(format!("{name}.wav")), 24).expect("write track");
    }
    let manifest = dir.join("catalogue.toml");
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
file = "audio/dawn.wav"
title = "Dawn"
isrc = "GBXYZ7400001"

[[album.track]]
file = "audio/noon.wav"
title = "Noon: High"
isrc = "GBXYZ7400002"

[[track]]
file = "audio/b-side.wav"
title = "B-side"
artist = "Solo Artist"
profile = "apple"
"#
        ),
    )
    .expect("write manifest");
    manifest
}

#[test]
fn a_manifest_on_the_farm_gives_lathe_masters_bytes_names_and_tags() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("temp dir");
    let manifest = write_catalogue(dir.path(), "", r#"loudness = "track""#);
    let manifest_arg = manifest.to_str().expect("utf-8 path");

    let local = dir.path().join("local");
    let outcome = lathe(&[
        "master",
        manifest_arg,
        "--out",
        local.to_str().expect("utf-8"),
    ]);
    assert_eq!(outcome.status, 0, "lathe master: {}", outcome.stderr);
    let local_masters = flac_tree(&local);
    assert_eq!(local_masters.len(), 3, "{:?}", local_masters.keys());

    let Some(mut farm) = Farm::start(BINARIES, FarmOptions::default()) else {
        return;
    };
    farm.start_worker("w1");
    farm.start_worker("w2");
    let outcome = farm.lathe(&["submit", manifest_arg, "--json"]);
    assert_eq!(outcome.status, 0, "lathe submit: {}", outcome.stderr);
    let reply: Value = serde_json::from_str(&outcome.stdout).expect("submit --json");
    let job = reply["job_id"].as_str().expect("job id").to_owned();
    let last = farm.wait_for_status(&job, Duration::from_secs(600), |s| s["state"] != "running");
    assert_eq!(last["state"], "succeeded", "{last:#}");
    assert_eq!(last["name"], "farm manifest");

    let fetched = dir.path().join("farm");
    let outcome = farm.lathe(&["fetch", &job, "--out", fetched.to_str().expect("utf-8")]);
    assert_eq!(outcome.status, 0, "lathe fetch: {}", outcome.stderr);
    let farm_masters = flac_tree(&fetched);
    assert_eq!(
        farm_masters.keys().collect::<Vec<_>>(),
        local_masters.keys().collect::<Vec<_>>(),
        "the masters' paths"
    );
    for (path, bytes) in &farm_masters {
        assert!(
            bytes == &local_masters[path],
            "{} differs from lathe master's",
            path.display()
        );
    }

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

    // The loose track's own profile was used (with the job profile's output settings).
    let report: Value = serde_json::from_slice(
        &std::fs::read(fetched.join("tracks/streaming/b-side.report.json")).expect("report"),
    )
    .expect("report json");
    assert_eq!(report["profile"], "apple");
}

#[test]
fn what_the_farm_cannot_do_yet_is_refused_by_name() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Album loudness is the default; the CD outlet needs the album assembled.
    let manifest = write_catalogue(dir.path(), r#"outlets = ["streaming", "cd"]"#, "");
    let outcome = lathe(&[
        "submit",
        manifest.to_str().expect("utf-8 path"),
        "--coordinator",
        "http://127.0.0.1:9",
    ]);
    assert_eq!(outcome.status, 2, "{}", outcome.stderr);
    let line = outcome.stderr.trim();
    assert_eq!(line.lines().count(), 1, "one line: {line}");
    assert!(line.contains("catalogue.toml"), "{line}");
    assert!(line.contains("outlets cd"), "{line}");
    assert!(
        line.contains("album loudness in \"Northern Lights\""),
        "{line}"
    );
}
