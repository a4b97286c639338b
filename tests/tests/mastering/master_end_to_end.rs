//! `lathe master` end to end: every preset on a generated rough album, outputs re-decoded and measured;
//! determinism; bad input handled track by track.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use lathe_engine::decode::Decoder;
use lathe_model::profile::{PRESETS, Profile};
use lathe_synth::{demo_album, write_wav};
use lathe_tests::{analyze, fingerprint, lathe, write_float_wav};

/// The demo album, shortened to 20 s a track to keep the test quick, as float WAVs in `dir`.
fn rough_album(dir: &Path) -> Vec<PathBuf> {
    demo_album(44_100)
        .into_iter()
        .map(|(name, mut recipe)| {
            recipe.duration_s = recipe.duration_s.min(20.0);
            let path = dir.join(format!("{name}.wav"));
            write_wav(&recipe, &path, 32).unwrap();
            path
        })
        .collect()
}

fn masters_in(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == extension))
        .collect();
    found.sort();
    found
}

#[test]
fn every_preset_meets_its_target_and_ceiling_measured_from_the_written_files() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    std::fs::create_dir(&source).unwrap();
    let tracks = rough_album(&source);
    for (name, _) in PRESETS {
        let profile = Profile::preset(name).unwrap();
        let out = dir.path().join(format!("out-{name}"));
        let outcome = lathe(&[
            "master",
            source.to_str().unwrap(),
            "--profile",
            name,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert_eq!(
            outcome.status, 0,
            "{name}: {}\n{}",
            outcome.stdout, outcome.stderr
        );
        let masters = masters_in(&out, profile.output.format.extension());
        assert_eq!(masters.len(), tracks.len(), "{name}: one master per track");
        let refs: Vec<&Path> = masters.iter().map(PathBuf::as_path).collect();
        for (master, measured) in masters.iter().zip(analyze(&refs)) {
            let lufs = measured["integrated_lufs"].as_f64().unwrap();
            let peak = measured["true_peak_dbtp"].as_f64().unwrap();
            if let Some(target) = profile.loudness.target_lufs {
                assert!(
                    (lufs - target).abs() <= 0.2,
                    "{name} {}: {lufs:.2} LUFS, target {target}",
                    master.display()
                );
            }
            assert!(
                peak <= profile.loudness.ceiling_dbtp,
                "{name} {}: true peak {peak:.3} dBTP over the {} dBTP ceiling",
                master.display(),
                profile.loudness.ceiling_dbtp
            );
            let info = Decoder::open(master).unwrap().info().clone();
            assert_eq!(
                info.sample_rate_hz,
                profile.output_rate_hz(44_100),
                "{name}: output rate"
            );
            assert_eq!(
                info.bits_per_sample,
                Some(profile.output.bit_depth),
                "{name}: bit depth"
            );
            let stem = master.file_stem().unwrap().to_string_lossy().into_owned();
            let report: serde_json::Value = serde_json::from_slice(
                &std::fs::read(out.join(format!("{stem}.report.json"))).unwrap(),
            )
            .unwrap();
            assert_eq!(
                report["qc"]["passed"], true,
                "{name} {stem}: {}",
                report["qc"]
            );
            // The report's own output analysis agrees with the independent re-measurement.
            let reported = report["output_analysis"]["integrated_lufs"]
                .as_f64()
                .unwrap();
            assert!((reported - lufs).abs() < 1e-9);
        }
        let job: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
        assert_eq!(job["succeeded"], tracks.len());
        assert_eq!(job["failed"], 0);
    }
}

#[test]
fn masters_are_bit_identical_across_runs_and_thread_counts() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    std::fs::create_dir(&source).unwrap();
    rough_album(&source);
    let run = |out: &str, jobs: &str| {
        let out = dir.path().join(out);
        let outcome = lathe(&[
            "master",
            source.to_str().unwrap(),
            "-p",
            "cd",
            "-o",
            out.to_str().unwrap(),
            "-j",
            jobs,
        ]);
        assert_eq!(outcome.status, 0, "{}", outcome.stderr);
        masters_in(&out, "wav")
            .iter()
            .map(|p| std::fs::read(p).unwrap())
            .collect::<Vec<_>>()
    };
    let first = run("a", "1");
    let second = run("b", "2");
    assert!(!first.is_empty());
    assert_eq!(first, second, "masters differ between -j 1 and -j 2");
}

/// A 200-byte RF64 WAV whose ds64 chunk declares a day of 16-bit audio at 384 kHz in 8 channels
/// (2.65e11 samples, 530 GB): a decompression bomb, refused from its header.
fn rf64_declaring_a_day_at_384_khz() -> Vec<u8> {
    let frames: u64 = 24 * 3600 * 384_000;
    let data_size = frames * 16;
    let mut bytes = b"RF64".to_vec();
    bytes.extend(u32::MAX.to_le_bytes());
    bytes.extend(b"WAVEds64");
    bytes.extend(28u32.to_le_bytes());
    for size in [4 + 36 + 24 + 8 + data_size, data_size, frames] {
        bytes.extend(size.to_le_bytes());
    }
    bytes.extend(0u32.to_le_bytes());
    bytes.extend(b"fmt ");
    bytes.extend(16u32.to_le_bytes());
    bytes.extend(1u16.to_le_bytes()); // PCM
    bytes.extend(8u16.to_le_bytes()); // channels
    bytes.extend(384_000u32.to_le_bytes());
    bytes.extend((384_000u32 * 16).to_le_bytes());
    bytes.extend(16u16.to_le_bytes()); // bytes a frame
    bytes.extend(16u16.to_le_bytes()); // bits
    bytes.extend(b"data");
    bytes.extend(u32::MAX.to_le_bytes());
    bytes.extend([0u8; 128]);
    bytes
}

#[test]
fn bad_inputs_fail_alone_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("in");
    std::fs::create_dir(&source).unwrap();
    let good = source.join("good.wav");
    let tone: Vec<f32> = (0..44_100 * 5)
        .map(|n| 0.3 * (n as f32 * 0.0627).sin())
        .collect();
    write_float_wav(&good, &[tone.clone(), tone.clone()], 44_100);
    std::fs::write(source.join("empty.wav"), b"").unwrap();
    std::fs::write(
        source.join("noise.flac"),
        (0..5000u32)
            .map(|i| (i * 7919 % 251) as u8)
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    std::fs::write(source.join("notes.mp3"), "this is not audio\n".repeat(100)).unwrap();
    let truncated = std::fs::read(&good).unwrap();
    std::fs::write(
        source.join("truncated.wav"),
        &truncated[..truncated.len() / 3],
    )
    .unwrap();
    let mut nan = tone.clone();
    nan[1000] = f32::NAN;
    write_float_wav(&source.join("nan.wav"), &[nan, tone], 44_100);
    std::fs::write(source.join("bomb.wav"), rf64_declaring_a_day_at_384_khz()).unwrap();
    let before: Vec<(PathBuf, u64)> = std::fs::read_dir(&source)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let f = fingerprint(&p);
            (p, f)
        })
        .collect();

    let out = dir.path().join("out");
    let outcome = lathe(&[
        "master",
        source.to_str().unwrap(),
        "-p",
        "streaming",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(outcome.status, 1, "a failed track means exit 1");
    for bad in [
        "empty.wav",
        "noise.flac",
        "notes.mp3",
        "truncated.wav",
        "nan.wav",
        "bomb.wav",
    ] {
        let line = outcome.stderr.lines().find(|l| l.contains(bad));
        assert!(
            line.is_some(),
            "no error line names {bad}:\n{}",
            outcome.stderr
        );
    }
    assert!(outcome.stderr.contains("truncated"), "{}", outcome.stderr);
    assert!(outcome.stderr.contains("NaN"), "{}", outcome.stderr);
    assert!(
        outcome
            .stderr
            .contains("more than lathe decodes from one source"),
        "{}",
        outcome.stderr
    );
    assert!(out.join("good.flac").exists(), "the good track is mastered");
    let leftovers: Vec<PathBuf> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    assert!(
        leftovers.is_empty(),
        "partial files left behind: {leftovers:?}"
    );
    assert_eq!(
        masters_in(&out, "flac").len(),
        1,
        "no master for a bad input"
    );
    for (path, fingerprint_before) in before {
        assert_eq!(
            fingerprint(&path),
            fingerprint_before,
            "{} was modified",
            path.display()
        );
    }
    let job: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(
        (job["succeeded"].as_u64(), job["failed"].as_u64()),
        (Some(1), Some(6))
    );
}

#[test]
fn usage_errors_exit_2_and_touch_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("in");
    std::fs::create_dir(&source).unwrap();
    let tone: Vec<f32> = (0..44_100)
        .map(|n| 0.3 * (n as f32 * 0.0627).sin())
        .collect();
    write_float_wav(&source.join("a.wav"), &[tone], 44_100);
    let src = source.to_str().unwrap();

    let same = lathe(&["master", src, "-p", "streaming", "-o", src]);
    assert_eq!(same.status, 2);
    assert!(
        same.stderr.contains("is an input folder"),
        "{}",
        same.stderr
    );
    let nested = source.join("masters");
    let inside = lathe(&[
        "master",
        src,
        "-p",
        "streaming",
        "-o",
        nested.to_str().unwrap(),
    ]);
    assert_eq!(inside.status, 2, "{}", inside.stderr);

    let profile = dir.path().join("mine.toml");
    let text = Profile::preset("streaming")
        .unwrap()
        .to_toml()
        .replace("[limiter]", "[limiter]\nattack_ms = 1.0");
    std::fs::write(&profile, text).unwrap();
    let out = dir.path().join("out");
    let bad_key = lathe(&[
        "master",
        src,
        "-p",
        profile.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(bad_key.status, 2);
    assert!(
        bad_key.stderr.contains("mine.toml") && bad_key.stderr.contains("attack_ms"),
        "{}",
        bad_key.stderr
    );

    let unknown = lathe(&["master", src, "-p", "spotify", "-o", out.to_str().unwrap()]);
    assert_eq!(unknown.status, 2);
    assert!(
        unknown.stderr.contains("streaming, apple"),
        "{}",
        unknown.stderr
    );
    assert!(
        !out.exists() || std::fs::read_dir(&out).unwrap().next().is_none(),
        "nothing written on usage errors"
    );
}

#[test]
fn profiles_lists_presets_and_prints_parseable_toml() {
    let list = lathe(&["profiles"]);
    assert_eq!(list.status, 0);
    for (name, _) in PRESETS {
        assert!(
            list.stdout.lines().any(|l| l.starts_with(name)),
            "{name} not listed"
        );
    }
    let cd = lathe(&["profiles", "cd"]);
    assert_eq!(cd.status, 0);
    assert_eq!(
        Profile::from_toml(&cd.stdout, "printed").unwrap(),
        Profile::preset("cd").unwrap()
    );
}

/// Every channel of `path`, decoded.
fn decode_channels(path: &Path) -> Vec<Vec<f32>> {
    let mut decoder = Decoder::open(path).unwrap();
    let info = decoder.info().clone();
    let mut block =
        lathe_engine::audio::AudioBlock::new(info.channel_count, 4096, info.sample_rate_hz);
    let mut channels = vec![Vec::new(); info.channel_count];
    while decoder.read(&mut block).unwrap() > 0 {
        for (c, channel) in channels.iter_mut().enumerate() {
            channel.extend_from_slice(&block.channel(c)[..block.frames()]);
        }
    }
    channels
}

#[test]
fn lathe_master_learns_the_denoise_noise_range_a_profile_gives() {
    let dir = tempfile::tempdir().unwrap();
    let music = dir.path().join("music.wav");
    let recipe = lathe_synth::TrackRecipe {
        duration_s: 6.0,
        ..lathe_synth::TrackRecipe::new(lathe_synth::Style::Pop, 8)
    };
    write_wav(&recipe, &music, 32).unwrap();
    // 1.5 s of hiss alone (a tape's lead-in), then the music under the same hiss.
    let lead_in = 66_150;
    let clean: Vec<Vec<f32>> = decode_channels(&music)
        .into_iter()
        .map(|c| std::iter::repeat_n(0.0, lead_in).chain(c).collect())
        .collect();
    let mut state = 7u64;
    let damaged: Vec<Vec<f32>> = clean
        .iter()
        .map(|c| {
            c.iter()
                .map(|x| {
                    state = state
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    x + 0.01 * ((state >> 11) as f32 / (1u64 << 53) as f32 - 0.5)
                })
                .collect()
        })
        .collect();
    let source = dir.path().join("source");
    std::fs::create_dir(&source).unwrap();
    let input = source.join("tape.wav");
    write_float_wav(&input, &damaged, 44_100);
    let profile = dir.path().join("tape.toml");
    std::fs::write(
        &profile,
        "name = \"tape\"\n[output]\nformat = \"wav\"\nbit_depth = 32\n[loudness]\n\
         [restore.denoise]\nnoise_from_s = 0.0\nnoise_to_s = 1.5\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let outcome = lathe(&[
        "master",
        input.to_str().unwrap(),
        "-p",
        profile.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(outcome.status, 0, "{}", outcome.stderr);
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("tape.report.json")).unwrap()).unwrap();
    let denoise = report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == "denoise")
        .unwrap();
    assert_eq!(denoise["report"]["noise_from"], "range", "{denoise}");
    let mastered = decode_channels(&out.join("tape.wav"));
    for c in 0..2 {
        let (clean, damaged, mastered) = (
            &clean[c][lead_in..],
            &damaged[c][lead_in..],
            &mastered[c][lead_in..],
        );
        let before = lathe_synth::score::si_sdr_db(clean, damaged);
        let after = lathe_synth::score::si_sdr_db(clean, mastered);
        assert!(after > before + 1.5, "ch{c}: {before:.1} -> {after:.1} dB");
    }
}

/// A 250 ms sting: a decaying 880 Hz tone, as planar stereo samples at 44.1 kHz.
fn sting() -> Vec<Vec<f32>> {
    let samples: Vec<f32> = (0..44_100 / 4)
        .map(|n| {
            let t = n as f32 / 44_100.0;
            0.5 * (-t / 0.08).exp() * (std::f32::consts::TAU * 880.0 * t).sin()
        })
        .collect();
    vec![samples.clone(), samples]
}

#[test]
fn silent_near_silent_and_very_short_tracks_are_mastered_with_a_note() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("in");
    std::fs::create_dir(&source).unwrap();
    let tone: Vec<f32> = (0..44_100 * 5)
        .map(|n| 0.3 * (n as f32 * 0.0627).sin())
        .collect();
    write_float_wav(&source.join("good.wav"), &[tone.clone(), tone], 44_100);
    write_float_wav(
        &source.join("silent.wav"),
        &[vec![0.0; 44_100 * 3], vec![0.0; 44_100 * 3]],
        44_100,
    );
    write_float_wav(&source.join("sting.wav"), &sting(), 44_100);
    // Room tone far under the -70 LUFS gate: a -86 dBFS buzz.
    let room: Vec<f32> = (0..44_100 * 3)
        .map(|n| if (n * 7919) % 13 < 6 { 5e-5 } else { -5e-5 })
        .collect();
    write_float_wav(&source.join("room.wav"), &[room.clone(), room], 44_100);

    let out = dir.path().join("out");
    let outcome = lathe(&[
        "master",
        source.to_str().unwrap(),
        "-p",
        "streaming",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(outcome.status, 0, "{}\n{}", outcome.stdout, outcome.stderr);
    assert_eq!(masters_in(&out, "flac").len(), 4);

    // The silent source: digital silence of the same length, in the profile's format.
    let silent = out.join("silent.flac");
    let channels = decode_channels(&silent);
    assert_eq!(channels[0].len(), 44_100 * 3);
    assert!(channels.iter().flatten().all(|&x| x == 0.0));
    assert_eq!(
        Decoder::open(&silent).unwrap().info().bits_per_sample,
        Some(24)
    );

    // The job report: loudness figures null where undefined, the rule and its note.
    let job: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(
        (job["succeeded"].as_u64(), job["failed"].as_u64()),
        (Some(4), Some(0))
    );
    let track = |name: &str| {
        job["tracks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["input"].as_str().unwrap().ends_with(name))
            .unwrap()
            .clone()
    };
    for (name, rule) in [
        ("good.wav", "integrated_loudness"),
        ("silent.wav", "silence"),
        ("sting.wav", "whole_track_loudness"),
        ("room.wav", "unity_gain"),
    ] {
        assert_eq!(track(name)["level_rule"], rule, "{name}");
        assert_eq!(track(name)["status"], "ok", "{name}");
    }
    let silent = track("silent.wav");
    assert!(silent["integrated_lufs"].is_null() && silent["true_peak_dbtp"].is_null());
    assert!(
        silent["notes"][0]
            .as_str()
            .unwrap()
            .contains("digital silence"),
        "{silent:#}"
    );
    // The track's own report says the same.
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("silent.report.json")).unwrap()).unwrap();
    assert_eq!(report["level_rule"], "silence");
    assert!(report["output_analysis"]["integrated_lufs"].is_null());

    // The summary: dashes for the missing figures, a note line for each track not levelled by
    // its integrated loudness.
    let row = outcome
        .stdout
        .lines()
        .find(|l| l.starts_with("silent.wav"))
        .unwrap();
    assert_eq!(row.split_whitespace().nth(2), Some("-"), "{row}");
    for name in ["silent.wav", "sting.wav", "room.wav"] {
        assert!(
            outcome.stdout.contains(&format!("note: {name}: ")),
            "{}",
            outcome.stdout
        );
    }
    assert!(!outcome.stdout.contains("note: good.wav"));
}
