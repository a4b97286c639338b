//! `lathe master MANIFEST.toml` end to end: every outlet of a short album, and each deliverable
//! checked by reading it back: CUE sheet and DDP image parsed by small readers written from the
//! formats' descriptions, tags read with lofty, lossy files decoded, checksums recomputed.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use lathe_engine::album::lossy::decoded_figures;
use lathe_engine::decode::Decoder;
use lathe_engine::tags::read_bext;
use lathe_synth::{Style, TrackRecipe, write_wav};
use lathe_tests::lathe;
use lofty::file::TaggedFileExt;
use lofty::tag::{Accessor, ItemKey};
use md5::{Digest, Md5};
use sha2::Sha256;

/// Track lengths in seconds: whole CD frames (6 s = 450 frames), so every position is exact.
const LENGTHS_S: [f64; 4] = [6.0, 8.0, 6.0, 7.0];

fn album_sources(dir: &Path) {
    std::fs::create_dir_all(dir.join("src")).unwrap();
    let styles = [Style::Ambient, Style::Rock, Style::Ballad, Style::Pop];
    let levels = [-20.0, -13.0, -28.0, -18.0];
    for (i, ((style, level_db), duration_s)) in styles.iter().zip(levels).zip(LENGTHS_S).enumerate()
    {
        let recipe = TrackRecipe {
            duration_s,
            level_db,
            ..TrackRecipe::new(*style, 100 + i as u64)
        };
        write_wav(&recipe, &dir.join(format!("src/{i}.wav")), 32).unwrap();
    }
}

const MANIFEST: &str = r#"
[job]
name = "Test delivery"
outlets = ["streaming", "cd", "vinyl", "broadcast", "mp3", "opus"]

[[album]]
title = "Test Album"
artist = "Test Band"
upc = "5012345678900"
year = 1999
genre = "Rock"
label = "Test Label"
copyright = "1999 Test Label"
loudness = "album"

[[album.track]]
file = "src/0.wav"
title = "One"
isrc = "GB-TST-99-00001"
composer = "Writer One"
side = "A"

[[album.track]]
file = "src/1.wav"
title = "Two"
isrc = "GB-TST-99-00002"
side = "A"

[[album.track]]
file = "src/2.wav"
title = "Three"
isrc = "GB-TST-99-00003"
crossfade_s = 1.0
side = "B"

[[album.track]]
file = "src/3.wav"
title = "Four"
isrc = "GB-TST-99-00004"
gap_s = 0.0
side = "B"
"#;

/// A CUE track: number, ISRC, INDEX 00 frame, INDEX 01 frame.
type CueTrack = (u32, Option<String>, Option<u64>, u64);

/// A CUE sheet's CATALOG and tracks.
fn read_cue(text: &str) -> (Option<String>, Vec<CueTrack>) {
    let frames = |msf: &str| {
        let parts: Vec<u64> = msf.split(':').map(|p| p.parse().unwrap()).collect();
        (parts[0] * 60 + parts[1]) * 75 + parts[2]
    };
    let mut catalog = None;
    let mut tracks: Vec<CueTrack> = Vec::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["CATALOG", upc] => catalog = Some((*upc).to_owned()),
            ["TRACK", n, "AUDIO"] => tracks.push((n.parse().unwrap(), None, None, u64::MAX)),
            ["ISRC", isrc] => tracks.last_mut().unwrap().1 = Some((*isrc).to_owned()),
            ["INDEX", "00", at] => tracks.last_mut().unwrap().2 = Some(frames(at)),
            ["INDEX", "01", at] => tracks.last_mut().unwrap().3 = frames(at),
            _ => {}
        }
    }
    (catalog, tracks)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn a_manifest_delivers_every_outlet_and_each_deliverable_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    album_sources(dir.path());
    let manifest = dir.path().join("album.toml");
    std::fs::write(&manifest, MANIFEST).unwrap();
    let out = dir.path().join("delivery");
    let outcome = lathe(&[
        "master",
        manifest.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "-j",
        "2",
    ]);
    assert_eq!(outcome.status, 0, "{}\n{}", outcome.stdout, outcome.stderr);
    let album = out.join("Test Album");

    // The manifest: every file listed with checksums that match.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("delivery.json")).unwrap()).unwrap();
    let files = json["files"].as_array().unwrap();
    // 4 streaming + image + cue + 6 DDP + 2 sides + 4 broadcast + 8 MP3 + 4 Opus.
    assert_eq!(files.len(), 4 + 2 + 6 + 2 + 4 + 8 + 4, "{json:#}");
    for file in files {
        let path = out.join(file["path"].as_str().unwrap());
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(file["bytes"].as_u64().unwrap(), bytes.len() as u64);
        assert_eq!(file["md5"].as_str().unwrap(), hex(&Md5::digest(&bytes)));
        assert_eq!(
            file["sha256"].as_str().unwrap(),
            hex(&Sha256::digest(&bytes))
        );
        assert!(file["qc"]["passed"].as_bool().unwrap(), "{file:#}");
    }
    assert!(json["failures"].as_array().unwrap().is_empty());

    // CUE: track starts on the frames the gaps and the crossfade put them at.
    let cue = std::fs::read_to_string(album.join("cd/Test Album.cue")).unwrap();
    let (catalog, tracks) = read_cue(&cue);
    assert_eq!(catalog.as_deref(), Some("5012345678900"));
    let isrcs: Vec<_> = tracks.iter().map(|t| t.1.clone().unwrap()).collect();
    assert_eq!(
        isrcs,
        [
            "GBTST9900001",
            "GBTST9900002",
            "GBTST9900003",
            "GBTST9900004"
        ]
    );
    // One: 0-450. Two: pause 450-600, audio 600-1200. Three: crossfades 75 frames into Two's end.
    // Four: no gap, right after Three (1125 + 450).
    let indexes: Vec<_> = tracks.iter().map(|t| (t.2, t.3)).collect();
    assert_eq!(
        indexes,
        [(None, 0), (Some(450), 600), (None, 1125), (None, 1575)]
    );
    assert!(cue.contains("TITLE \"Three\"") && cue.contains("SONGWRITER \"Writer One\""));
    // The image is 16-bit 44.1 kHz and as long as the programme (1575 + 7 s).
    let image = Decoder::open(&album.join("cd/Test Album.wav")).unwrap();
    assert_eq!(image.info().bits_per_sample, Some(16));
    assert_eq!(image.info().frames, Some((1575 + 525) * 588));

    // DDP: the map names three streams, the PQ descriptor has the same frames (plus the 2-second
    // lead pregap) and ISRCs, the image is the CD image's samples, the checksums match.
    let ddp = album.join("cd/ddp");
    let id = std::fs::read(ddp.join("DDPID")).unwrap();
    assert_eq!(
        (&id[..8], &id[8..21]),
        (&b"DDP 2.00"[..], &b"5012345678900"[..])
    );
    let map = std::fs::read(ddp.join("DDPMS")).unwrap();
    let streams: Vec<(String, String)> = map
        .chunks(128)
        .map(|p| {
            assert_eq!(&p[..4], b"VVVM");
            let size: usize = String::from_utf8_lossy(&p[71..74]).parse().unwrap();
            (
                String::from_utf8_lossy(&p[4..6]).into_owned(),
                String::from_utf8_lossy(&p[74..74 + size]).into_owned(),
            )
        })
        .collect();
    assert_eq!(
        streams,
        [
            ("D0".into(), "IMAGE.DAT".into()),
            ("S0".into(), "PQDESCR".into()),
            ("S0".into(), "CDTEXT.BIN".into())
        ]
    );
    let image_sectors: u64 = String::from_utf8_lossy(&map[14..22]).parse().unwrap();
    assert_eq!(image_sectors, 1575 + 525);
    let pq = std::fs::read(ddp.join("PQDESCR")).unwrap();
    let points: Vec<(String, u32, u64, String)> = pq
        .chunks(64)
        .map(|p| {
            let text = String::from_utf8_lossy(p).into_owned();
            let n = |r: std::ops::Range<usize>| text[r].parse::<u64>().unwrap();
            (
                text[4..6].to_owned(),
                n(6..8) as u32,
                ((n(8..10) * 60 + n(10..12)) * 60 + n(12..14)) * 75 + n(14..16),
                text[20..32].trim().to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, u32, u64, String)> = vec![
        ("01".into(), 0, 0, "GBTST9900001".into()),
        ("01".into(), 1, 150, "GBTST9900001".into()),
        ("02".into(), 0, 600, "GBTST9900002".into()),
        ("02".into(), 1, 750, "GBTST9900002".into()),
        ("03".into(), 1, 1275, "GBTST9900003".into()),
        ("04".into(), 1, 1725, "GBTST9900004".into()),
        ("AA".into(), 1, 2250, String::new()),
    ];
    assert_eq!(points, expected);
    let image_dat = std::fs::read(ddp.join("IMAGE.DAT")).unwrap();
    assert_eq!(image_dat.len() as u64, (1575 + 525) * 2352);
    let sums = std::fs::read_to_string(ddp.join("CHECKSUM.MD5")).unwrap();
    for line in sums.lines() {
        let (sum, name) = line.split_once("  ").unwrap();
        let bytes = std::fs::read(ddp.join(name)).unwrap();
        assert_eq!(sum, hex(&Md5::digest(&bytes)), "{name}");
    }
    let text = std::fs::read(ddp.join("CDTEXT.BIN")).unwrap();
    assert!(
        text.chunks(18)
            .all(lathe_engine::album::ddp::cd_text_pack_ok)
    );

    // Tags, read back with lofty.
    let streaming = album.join("streaming/03 Three.flac");
    let tagged = lofty::read_from_path(&streaming).unwrap();
    let tag = tagged.primary_tag().unwrap();
    assert_eq!(tag.title().as_deref(), Some("Three"));
    assert_eq!(tag.album().as_deref(), Some("Test Album"));
    assert_eq!(tag.track(), Some(3));
    assert_eq!(tag.get_string(ItemKey::Isrc), Some("GBTST9900003"));
    assert_eq!(tag.get_string(ItemKey::Barcode), Some("5012345678900"));
    assert_eq!(tag.get_string(ItemKey::Label), Some("Test Label"));
    for (path, isrc) in [
        (album.join("mp3-320/02 Two.mp3"), "GBTST9900002"),
        (album.join("mp3-v0/04 Four.mp3"), "GBTST9900004"),
        (album.join("opus/01 One.opus"), "GBTST9900001"),
        (album.join("broadcast/01 One.wav"), "GBTST9900001"),
    ] {
        let tagged = lofty::read_from_path(&path).unwrap();
        let tag = tagged.primary_tag().unwrap();
        assert_eq!(
            tag.get_string(ItemKey::Isrc),
            Some(isrc),
            "{}",
            path.display()
        );
        assert_eq!(
            tag.artist().as_deref(),
            Some("Test Band"),
            "{}",
            path.display()
        );
    }
    let bext = read_bext(&album.join("broadcast/02 Two.wav"))
        .unwrap()
        .unwrap();
    let two = files
        .iter()
        .find(|f| f["path"] == "Test Album/broadcast/02 Two.wav")
        .unwrap();
    let lufs = two["integrated_lufs"].as_f64().unwrap();
    assert!(
        (bext.loudness_value_lufs.unwrap() - lufs).abs() <= 0.006,
        "{bext:?}"
    );
    assert_eq!(bext.originator_reference, "GBTST9900002");

    // Lossy files meet the ceiling after decoding.
    for (folder, codec) in [("mp3-320", "mp3"), ("mp3-v0", "mp3"), ("opus", "opus")] {
        for entry in std::fs::read_dir(album.join(folder)).unwrap() {
            let path = entry.unwrap().path();
            assert_eq!(
                Decoder::open(&path).unwrap().info().codec,
                codec,
                "{path:?}"
            );
            let (figures, _) = decoded_figures(&path).unwrap();
            let peak = figures.true_peak_dbtp.unwrap();
            assert!(peak <= -1.0, "{}: {peak:.2} dBTP", path.display());
        }
    }

    // Vinyl: one file per side, 24-bit, side B holds the crossfade of Three into Four (no gap).
    let side_b = Decoder::open(&album.join("vinyl/Side B.wav")).unwrap();
    assert_eq!(side_b.info().bits_per_sample, Some(24));
    assert_eq!(side_b.info().frames, Some(((6.0 + 7.0) * 44_100.0) as u64));
    let side_a = Decoder::open(&album.join("vinyl/Side A.wav")).unwrap();
    assert_eq!(
        side_a.info().frames,
        Some(((6.0 + 2.0 + 8.0) * 44_100.0) as u64)
    );

    // Streaming: album mode keeps the sources' differences; the report has its three plots.
    let level = |name: &str| {
        files
            .iter()
            .find(|f| f["path"] == format!("Test Album/streaming/{name}.flac"))
            .unwrap()["integrated_lufs"]
            .as_f64()
            .unwrap()
    };
    let source = |i: usize| {
        lathe_engine::qc::analyze_file(&dir.path().join(format!("src/{i}.wav")))
            .unwrap()
            .integrated_lufs
            .unwrap()
    };
    let kept = (level("02 Two") - level("03 Three")) - (source(1) - source(2));
    assert!(kept.abs() <= 0.1, "difference moved by {kept:.3} LU");
    let spotify = &files[0]["platforms"][0];
    assert_eq!(spotify["platform"], "Spotify");
    let report = std::fs::read_to_string(album.join("report.html")).unwrap();
    assert_eq!(report.matches("<svg").count(), 3);
    assert!(report.contains("Spotify"));
}

#[test]
fn red_book_violations_and_bad_codes_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("src")).unwrap();
    for (i, duration_s) in [6.0, 3.0].into_iter().enumerate() {
        let recipe = TrackRecipe {
            duration_s,
            ..TrackRecipe::new(Style::Pop, 7 + i as u64)
        };
        write_wav(&recipe, &dir.path().join(format!("src/{i}.wav")), 32).unwrap();
    }
    let manifest = dir.path().join("short.toml");
    let text = r#"
[job]
outlets = ["cd"]
[[album]]
title = "Short"
artist = "Band"
[[album.track]]
file = "src/0.wav"
title = "Long enough"
[[album.track]]
file = "src/1.wav"
title = "Too short"
gap_s = 0.0
"#;
    std::fs::write(&manifest, text).unwrap();
    let out = dir.path().join("out");
    let outcome = lathe(&[
        "master",
        manifest.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(outcome.status, 1, "{}\n{}", outcome.stdout, outcome.stderr);
    assert!(
        outcome
            .stderr
            .contains("track 2 \"Too short\" is 3.00 s long; a CD track is at least 4 s"),
        "{}",
        outcome.stderr
    );
    // The image and paperwork are still written, marked as failing QC.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("delivery.json")).unwrap()).unwrap();
    let cue = json["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "cue_sheet")
        .unwrap();
    assert_eq!(cue["qc"]["passed"], false);

    // A bad ISRC stops the job before any work, naming the track.
    let bad = text.replace(
        "title = \"Too short\"",
        "title = \"Too short\"\nisrc = \"GB-TST-99-0001\"",
    );
    std::fs::write(&manifest, bad).unwrap();
    let outcome = lathe(&[
        "master",
        manifest.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(outcome.status, 2);
    assert!(
        outcome.stderr.contains(
            "album[1] \"Short\" track 2 \"Too short\": isrc: \"GB-TST-99-0001\" has 11 characters"
        ),
        "{}",
        outcome.stderr
    );
}

#[test]
fn hostile_titles_deliver_safe_names_and_colliding_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("src")).unwrap();
    let recipe = TrackRecipe {
        duration_s: 5.0,
        ..TrackRecipe::new(Style::Pop, 3)
    };
    write_wav(&recipe, &dir.path().join("src/0.wav"), 32).unwrap();
    let long = "L".repeat(300);
    let manifest = dir.path().join("hostile.toml");
    let text = format!(
        r#"
[job]
outlets = ["streaming", "cd"]
[[album]]
title = "../../CON"
artist = "Band\"\nFILE \"x.wav\" WAVE"
[[album.track]]
file = "src/0.wav"
title = "{long}\u0000\n  TRACK 02 AUDIO"
"#
    );
    std::fs::write(&manifest, &text).unwrap();
    let out = dir.path().join("out");
    let outcome = lathe(&[
        "master",
        manifest.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    // Delivered: every file inside the output folder under a safe name, and a CUE sheet with one
    // FILE and one TRACK.
    let mut files = Vec::new();
    files_under(&out, &mut files);
    assert!(!files.is_empty(), "{}\n{}", outcome.stdout, outcome.stderr);
    for file in &files {
        for part in file.split('/') {
            assert!(part.len() <= 130, "{file}");
            assert!(!part.chars().any(char::is_control), "{file:?}");
            assert_ne!(part, "..");
        }
    }
    assert!(files.iter().any(|f| f.starts_with("_.._CON/")), "{files:?}");
    let cue = files
        .iter()
        .find(|f| f.ends_with(".cue"))
        .expect("a CUE sheet");
    let cue = std::fs::read_to_string(out.join(cue)).unwrap();
    let (_, tracks) = read_cue(&cue);
    assert_eq!(tracks.len(), 1, "{cue}");
    assert_eq!(
        cue.matches("\nFILE ").count() + usize::from(cue.starts_with("FILE ")),
        1
    );

    // Two albums whose titles make one folder: refused before any work, naming both.
    let colliding = format!(
        "{text}\n[[album]]\ntitle = \"../../con\"\nartist = \"Other\"\n[[album.track]]\nfile = \"src/0.wav\"\ntitle = \"One\"\n"
    );
    std::fs::write(&manifest, colliding).unwrap();
    let refused_out = dir.path().join("refused");
    let outcome = lathe(&[
        "master",
        manifest.to_str().unwrap(),
        "-o",
        refused_out.to_str().unwrap(),
    ]);
    assert_eq!(outcome.status, 2, "{}\n{}", outcome.stdout, outcome.stderr);
    assert!(
        outcome
            .stderr
            .contains("album \"../../CON\" and album \"../../con\"")
            && outcome.stderr.contains("\"_.._con/\""),
        "{}",
        outcome.stderr
    );
    assert!(!refused_out.exists(), "nothing written");
}

/// A hot profile: the streaming chain pushed to -10 LUFS under a -0.1 dBTP ceiling, where lossy
/// codecs overshoot.
fn hot_profile(dir: &Path) {
    let streaming = lathe(&["profiles", "streaming"]).stdout;
    let hot = streaming
        .replace("name = \"streaming\"", "name = \"hot\"")
        .replace("target_lufs = -14.0", "target_lufs = -10.0")
        .replace("ceiling_dbtp = -1.0", "ceiling_dbtp = -0.1");
    assert!(hot.contains("ceiling_dbtp = -0.1"), "{hot}");
    std::fs::write(dir.join("hot.toml"), hot).unwrap();
}

#[test]
fn lossy_overshoot_is_re_rendered_with_headroom_and_missing_tracks_fail_alone() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("src")).unwrap();
    let recipe = TrackRecipe {
        duration_s: 8.0,
        level_db: -14.0,
        ..TrackRecipe::new(Style::Pop, 42)
    };
    write_wav(&recipe, &dir.path().join("src/single.wav"), 32).unwrap();
    hot_profile(dir.path());
    let manifest = dir.path().join("singles.toml");
    std::fs::write(
        &manifest,
        r#"
[job]
profile = "hot.toml"
outlets = ["opus"]
[[track]]
file = "src/single.wav"
title = "Single"
[[track]]
file = "src/missing.wav"
"#,
    )
    .unwrap();
    let out = dir.path().join("out");
    let outcome = lathe(&[
        "master",
        manifest.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    // The missing track fails on its own, named; the other is delivered.
    assert_eq!(outcome.status, 1, "{}\n{}", outcome.stdout, outcome.stderr);
    assert!(outcome.stderr.contains("missing.wav"), "{}", outcome.stderr);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("delivery.json")).unwrap()).unwrap();
    let files = json["files"].as_array().unwrap();
    assert_eq!(files.len(), 1, "{json:#}");
    let single = &files[0];
    assert_eq!(single["path"], "tracks/opus/single.opus");
    let notes: Vec<&str> = single["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert!(
        notes.iter().any(|n| n.contains("re-rendered with")),
        "Opus at -0.1 dBTP overshoots and is re-rendered: {notes:?}"
    );
    let (figures, _) = decoded_figures(&out.join("tracks/opus/single.opus")).unwrap();
    assert!(figures.true_peak_dbtp.unwrap() <= -0.1, "{figures:?}");
    assert!(
        (figures.integrated_lufs.unwrap() + 10.0).abs() <= 0.5,
        "{figures:?}"
    );
    assert_eq!(single["qc"]["passed"], true, "{single:#}");
    // The scratch float master and the encoder's temporary file are gone: every file left is a
    // deliverable or the delivery's paperwork.
    let mut left = Vec::new();
    files_under(&out, &mut left);
    left.sort();
    assert_eq!(
        left,
        ["delivery.json", "tracks/opus/single.opus"],
        "{left:?}"
    );
}

/// Every file under `dir`, as paths relative to `root`.
fn files_under(root: &Path, found: &mut Vec<String>) {
    fn walk(root: &Path, dir: &Path, found: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, found);
            } else {
                let relative = path.strip_prefix(root).unwrap();
                found.push(relative.to_string_lossy().into_owned());
            }
        }
    }
    walk(root, root, found);
}

#[test]
fn deliveries_are_byte_identical_whatever_the_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    album_sources(dir.path());
    let manifest = dir.path().join("album.toml");
    std::fs::write(
        &manifest,
        MANIFEST.replace(
            "outlets = [\"streaming\", \"cd\", \"vinyl\", \"broadcast\", \"mp3\", \"opus\"]",
            "outlets = [\"cd\", \"mp3\", \"opus\"]",
        ),
    )
    .unwrap();
    let sums = |jobs: &str| {
        let out = dir.path().join(format!("out-{jobs}"));
        let outcome = lathe(&[
            "master",
            manifest.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "-j",
            jobs,
        ]);
        assert_eq!(outcome.status, 0, "{}", outcome.stderr);
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("delivery.json")).unwrap())
                .unwrap();
        json["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| (f["path"].to_string(), f["sha256"].to_string()))
            .collect::<Vec<_>>()
    };
    let one = sums("1");
    assert_eq!(one.len(), 1 + 1 + 6 + 8 + 4);
    assert_eq!(one, sums("2"));
}

#[test]
fn loose_tracks_are_delivered_as_cd_and_vinyl_singles_with_their_checks() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("src")).unwrap();
    for (name, duration_s) in [("single", 6.0), ("sting", 3.0)] {
        let recipe = TrackRecipe {
            duration_s,
            ..TrackRecipe::new(Style::Rock, 11)
        };
        write_wav(&recipe, &dir.path().join(format!("src/{name}.wav")), 32).unwrap();
    }
    let manifest = dir.path().join("singles.toml");
    let text = r#"
[job]
outlets = ["cd", "vinyl"]
[[track]]
file = "src/single.wav"
title = "Single"
[[track]]
file = "src/sting.wav"
title = "Sting"
"#;
    std::fs::write(&manifest, text).unwrap();
    let out = dir.path().join("out");
    let outcome = lathe(&[
        "master",
        manifest.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    // The 3-second sting is too short for a CD track: reported, the rest delivered.
    assert_eq!(outcome.status, 1, "{}\n{}", outcome.stdout, outcome.stderr);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("delivery.json")).unwrap()).unwrap();
    let files = json["files"].as_array().unwrap();
    assert_eq!(files.len(), 4, "{json:#}");
    for file in files {
        let path = out.join(file["path"].as_str().unwrap());
        let info = Decoder::open(&path).unwrap().info().clone();
        let peak = file["true_peak_dbtp"].as_f64().unwrap();
        let short = file["path"].as_str().unwrap().contains("sting");
        match file["outlet"].as_str().unwrap() {
            "cd" => {
                assert_eq!(
                    (info.sample_rate_hz, info.bits_per_sample),
                    (44_100, Some(16))
                );
                assert!(peak <= -0.3 + 0.05, "{path:?}: {peak} dBTP");
                assert_eq!(file["qc"]["passed"], !short, "{file:#}");
                if short {
                    let issues = file["qc"]["issues"].to_string();
                    assert!(issues.contains("a CD track is at least 4 s"), "{issues}");
                }
            }
            "vinyl" => {
                assert_eq!(info.bits_per_sample, Some(24), "{path:?}");
                assert_eq!(file["qc"]["passed"], true, "{file:#}");
            }
            other => panic!("unexpected outlet {other}"),
        }
    }
}

#[test]
fn sources_on_an_archive_are_read_and_outputs_stay_out_of_it() {
    // The manifest sits in a project folder, its sources on an "archive" beside it: one named by
    // absolute path, one through a symbolic link in the project folder.
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("archive");
    let project = dir.path().join("project");
    std::fs::create_dir_all(&project).unwrap();
    for (name, seed) in [("one", 21), ("two", 22)] {
        std::fs::create_dir_all(archive.join(name)).unwrap();
        let recipe = TrackRecipe {
            duration_s: 5.0,
            ..TrackRecipe::new(Style::Pop, seed)
        };
        write_wav(&recipe, &archive.join(format!("{name}/{name}.wav")), 24).unwrap();
    }
    std::os::unix::fs::symlink(archive.join("two/two.wav"), project.join("two.wav")).unwrap();
    let manifest = project.join("album.toml");
    let text = format!(
        r#"
[job]
outlets = ["streaming"]
[[album]]
title = "Archive"
artist = "Band"
[[album.track]]
file = "{}"
title = "One"
[[album.track]]
file = "two.wav"
title = "Two"
"#,
        archive.join("one/one.wav").display()
    );
    std::fs::write(&manifest, text).unwrap();
    let before: Vec<Vec<u8>> = ["one", "two"]
        .iter()
        .map(|n| std::fs::read(archive.join(format!("{n}/{n}.wav"))).unwrap())
        .collect();

    // Outputs may not go into the folder a source really lives in, even when it is reached
    // through a link: nothing is written and the exit status says usage.
    let inside = archive.join("two/masters");
    let refused = lathe(&[
        "master",
        manifest.to_str().unwrap(),
        "-o",
        inside.to_str().unwrap(),
    ]);
    assert_eq!(refused.status, 2, "{}\n{}", refused.stdout, refused.stderr);
    assert!(
        refused.stderr.contains("is an input folder"),
        "{}",
        refused.stderr
    );
    assert!(!inside.exists());

    let out = dir.path().join("delivery");
    let outcome = lathe(&[
        "master",
        manifest.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(outcome.status, 0, "{}\n{}", outcome.stdout, outcome.stderr);
    for (number, title) in [(1, "One"), (2, "Two")] {
        let master = out.join(format!("Archive/streaming/{number:02} {title}.flac"));
        assert!(master.is_file(), "{master:?}");
    }
    let after: Vec<Vec<u8>> = ["one", "two"]
        .iter()
        .map(|n| std::fs::read(archive.join(format!("{n}/{n}.wav"))).unwrap())
        .collect();
    assert!(before == after, "a source changed");
    assert!(
        std::fs::symlink_metadata(project.join("two.wav"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

/// Planar stereo at 44.1 kHz.
fn write_stereo(path: &Path, samples: Vec<f32>) {
    lathe_tests::write_float_wav(path, &[samples.clone(), samples], 44_100);
}

/// The album's integrated loudness over `files`, gated over all their blocks at once.
fn album_lufs(files: &[std::path::PathBuf]) -> f64 {
    let measured: Vec<_> = files
        .iter()
        .map(|f| lathe_engine::album::gain::measure_source(f).unwrap())
        .collect();
    let blocks: Vec<&[f64]> = measured
        .iter()
        .map(|m| m.gating_blocks.as_slice())
        .collect();
    lathe_model::gating::gated_lufs(&blocks).unwrap()
}

#[test]
fn silent_and_short_tracks_in_album_mode_deliver_every_outlet() {
    let dir = tempfile::tempdir().unwrap();
    album_sources(dir.path());
    let src = dir.path().join("src");
    write_stereo(&src.join("silent.wav"), vec![0.0; 44_100 * 4]);
    // A 250 ms sting: a decaying 880 Hz tone.
    let sting: Vec<f32> = (0..44_100 / 4)
        .map(|n| {
            let t = n as f32 / 44_100.0;
            0.5 * (-t / 0.08).exp() * (std::f32::consts::TAU * 880.0 * t).sin()
        })
        .collect();
    write_stereo(&src.join("sting.wav"), sting);
    let manifest = dir.path().join("album.toml");
    let mut text = r#"
[job]
outlets = ["streaming", "vinyl", "broadcast", "mp3", "opus"]

[[album]]
title = "Mixed"
artist = "Band"
loudness = "album"
"#
    .to_owned();
    for (file, title) in [
        ("0", "One"),
        ("silent", "Hidden"),
        ("1", "Two"),
        ("sting", "Sting"),
        ("2", "Three"),
        ("3", "Four"),
    ] {
        text += &format!("[[album.track]]\nfile = \"src/{file}.wav\"\ntitle = \"{title}\"\n");
    }
    // An album of nothing but silence.
    text += "[[album]]\ntitle = \"Quiet\"\nartist = \"Band\"\nloudness = \"album\"\n";
    for title in ["Pregap", "Gap"] {
        text += &format!("[[album.track]]\nfile = \"src/silent.wav\"\ntitle = \"{title}\"\n");
    }
    std::fs::write(&manifest, text).unwrap();
    let out = dir.path().join("delivery");
    let outcome = lathe(&[
        "master",
        manifest.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(outcome.status, 0, "{}\n{}", outcome.stdout, outcome.stderr);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("delivery.json")).unwrap()).unwrap();
    assert!(json["failures"].as_array().unwrap().is_empty(), "{json:#}");
    let files = json["files"].as_array().unwrap();
    for file in files {
        assert!(file["qc"]["passed"].as_bool().unwrap(), "{file:#}");
    }
    // Every track on every per-track outlet.
    let titles = ["One", "Hidden", "Two", "Sting", "Three", "Four"];
    for (folder, extension) in [
        ("streaming", "flac"),
        ("broadcast", "wav"),
        ("mp3-320", "mp3"),
        ("mp3-v0", "mp3"),
        ("opus", "opus"),
    ] {
        for (i, title) in titles.iter().enumerate() {
            let path = format!("Mixed/{folder}/{:02} {title}.{extension}", i + 1);
            assert!(
                files.iter().any(|f| f["path"] == path.as_str()),
                "{path} not delivered"
            );
        }
        for (i, title) in ["Pregap", "Gap"].iter().enumerate() {
            let path = format!("Quiet/{folder}/{:02} {title}.{extension}", i + 1);
            assert!(files.iter().any(|f| f["path"] == path.as_str()), "{path}");
        }
    }
    assert!(files.iter().any(|f| f["kind"] == "side"));

    // Silence is delivered as digital silence of its length; its file says so.
    let streaming = out.join("Mixed/streaming");
    for path in [
        streaming.join("02 Hidden.flac"),
        out.join("Quiet/streaming/01 Pregap.flac"),
        out.join("Quiet/broadcast/02 Gap.wav"),
    ] {
        let analysis = lathe_engine::qc::analyze_file(&path).unwrap();
        assert_eq!(analysis.sample_peak_dbfs, None, "{}", path.display());
        assert_eq!(analysis.duration_s, 4.0, "{}", path.display());
    }
    let hidden = files
        .iter()
        .find(|f| f["path"] == "Mixed/streaming/02 Hidden.flac")
        .unwrap();
    assert!(hidden["integrated_lufs"].is_null());
    assert!(
        hidden["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n.as_str().unwrap().contains("digital silence")),
        "{hidden:#}"
    );

    // The album's loudness comes from its sounding tracks: the streaming masters of the four
    // normal tracks still meet -14 LUFS together, and the whole album gated at once reads the same.
    let normal: Vec<_> = ["01 One", "03 Two", "05 Three", "06 Four"]
        .iter()
        .map(|name| streaming.join(format!("{name}.flac")))
        .collect();
    let album = album_lufs(&normal);
    assert!((album + 14.0).abs() <= 0.2, "album at {album:.2} LUFS");
    let mut all = normal.clone();
    all.extend(["02 Hidden", "04 Sting"].map(|n| streaming.join(format!("{n}.flac"))));
    assert!((album_lufs(&all) - album).abs() < 1e-9);
    // The sting keeps its whole-track distance from the album's loudness.
    let sources: Vec<_> = (0..4).map(|i| src.join(format!("{i}.wav"))).collect();
    let ungated = |path: &Path| {
        lathe_engine::qc::analyze_file(path)
            .unwrap()
            .ungated_lufs
            .unwrap()
    };
    let kept = (ungated(&streaming.join("04 Sting.flac")) - album)
        - (ungated(&src.join("sting.wav")) - album_lufs(&sources));
    assert!(kept.abs() <= 0.5, "the sting moved by {kept:.2} LU");
}
