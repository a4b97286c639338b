//! EBU Tech 3341 and Tech 3342 compliance, measured end to end through `lathe analyze --json`.
//! Every test signal is generated here; tolerances are the documents' own.

use std::path::PathBuf;

use lathe_tests::{analyze, sine_segments, write_float_wav};

const RATE: u32 = 48_000;

fn stereo_case(dir: &std::path::Path, name: &str, segments: &[(f64, f64)]) -> PathBuf {
    let path = dir.join(format!("{name}.wav"));
    let tone = sine_segments(1000.0, RATE, segments, 0.0);
    write_float_wav(&path, &[tone.clone(), tone], RATE);
    path
}

fn field(value: &serde_json::Value, key: &str) -> f64 {
    value[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing in {value}"))
}

fn assert_within(actual: f64, expected: f64, below: f64, above: f64, what: &str) {
    assert!(
        actual >= expected - below && actual <= expected + above,
        "{what}: measured {actual:.3}, expected {expected} (-{below}/+{above})"
    );
}

#[test]
fn tech_3341_loudness_cases_1_to_5_9_and_12() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let case9: Vec<(f64, f64)> = (0..20)
        .flat_map(|_| [(-20.0, 1.34), (-30.0, 1.66)])
        .collect();
    let case12: Vec<(f64, f64)> = (0..25)
        .flat_map(|_| [(-20.0, 0.18), (-30.0, 0.22)])
        .collect();
    let files = [
        stereo_case(d, "case1", &[(-23.0, 20.0)]),
        stereo_case(d, "case2", &[(-33.0, 20.0)]),
        stereo_case(d, "case3", &[(-36.0, 10.0), (-23.0, 60.0), (-36.0, 10.0)]),
        stereo_case(
            d,
            "case4",
            &[
                (-72.0, 10.0),
                (-36.0, 10.0),
                (-23.0, 60.0),
                (-36.0, 10.0),
                (-72.0, 10.0),
            ],
        ),
        stereo_case(d, "case5", &[(-26.0, 20.0), (-20.0, 20.1), (-26.0, 20.0)]),
        stereo_case(d, "case9", &case9),
        stereo_case(d, "case12", &case12),
    ];
    let refs: Vec<&std::path::Path> = files.iter().map(PathBuf::as_path).collect();
    let results = analyze(&refs);
    for (case, expected) in [(0, -23.0), (1, -33.0)] {
        for key in [
            "integrated_lufs",
            "max_momentary_lufs",
            "max_short_term_lufs",
        ] {
            assert_within(
                field(&results[case], key),
                expected,
                0.1,
                0.1,
                &format!("case {} {key}", case + 1),
            );
        }
    }
    for (case, result) in results.iter().enumerate().take(5).skip(2) {
        assert_within(
            field(result, "integrated_lufs"),
            -23.0,
            0.1,
            0.1,
            &format!("case {}", case + 1),
        );
    }
    assert_within(
        field(&results[5], "max_short_term_lufs"),
        -23.0,
        0.1,
        0.1,
        "case 9 short-term",
    );
    assert_within(
        field(&results[6], "max_momentary_lufs"),
        -23.0,
        0.1,
        0.1,
        "case 12 momentary",
    );
}

#[test]
fn tech_3341_case_6_five_channels() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("case6.wav");
    let channels: Vec<Vec<f32>> = [-28.0, -28.0, -24.0, -30.0, -30.0]
        .iter()
        .map(|&db| sine_segments(1000.0, RATE, &[(db, 20.0)], 0.0))
        .collect();
    write_float_wav(&path, &channels, RATE);
    let results = analyze(&[&path]);
    assert_eq!(results[0]["channels"], 5);
    assert_within(
        field(&results[0], "integrated_lufs"),
        -23.0,
        0.1,
        0.1,
        "case 6",
    );
}

/// Raised-cosine fades over `frames` at both ends. A sine switched on or off abruptly really does
/// overshoot between samples (the reconstructed waveform rings at the step); Tech 3341's true-peak
/// cases describe the steady tone, so the test tones fade in and out over 10 ms.
fn fade_edges(samples: &mut [f32], frames: usize) {
    let len = samples.len();
    for i in 0..frames {
        let gain = (0.5 - 0.5 * (std::f64::consts::PI * i as f64 / frames as f64).cos()) as f32;
        samples[i] *= gain;
        samples[len - 1 - i] *= gain;
    }
}

#[test]
fn tech_3341_true_peak_cases_15_to_19() {
    let dir = tempfile::tempdir().unwrap();
    // (case, frequency as a fraction of fs, phase in degrees, peak amplitude, expected dBTP)
    let cases = [
        (15, 4.0, 0.0, 0.5, -6.0),
        (16, 4.0, 45.0, 0.5, -6.0),
        (17, 6.0, 60.0, 0.5, -6.0),
        (18, 8.0, 67.5, 0.5, -6.0),
        (19, 4.0, 45.0, 1.41, 3.0),
    ];
    let mut files = Vec::new();
    for (case, divisor, phase_deg, amplitude, _) in cases {
        let path = dir.path().join(format!("case{case}.wav"));
        let level_db = 20.0 * f64::log10(amplitude);
        let mut tone = sine_segments(
            f64::from(RATE) / divisor,
            RATE,
            &[(level_db, 2.0)],
            f64::to_radians(phase_deg),
        );
        fade_edges(&mut tone, RATE as usize / 100);
        write_float_wav(&path, &[tone.clone(), tone], RATE);
        files.push(path);
    }
    let refs: Vec<&std::path::Path> = files.iter().map(PathBuf::as_path).collect();
    let results = analyze(&refs);
    for ((case, .., expected), result) in cases.iter().zip(&results) {
        assert_within(
            field(result, "true_peak_dbtp"),
            *expected,
            0.4,
            0.2,
            &format!("case {case} true peak"),
        );
    }
    // Case 19's samples sit just under full scale (1.41 x sin 45 degrees) while its true peak is +3 dBTP.
    let sample_peak = field(&results[4], "sample_peak_dbfs");
    assert_within(
        sample_peak,
        20.0 * f64::log10(1.41 * std::f64::consts::FRAC_1_SQRT_2),
        0.01,
        0.01,
        "case 19 sample peak",
    );
}

#[test]
fn tech_3342_loudness_range_cases_1_to_4() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let files = [
        stereo_case(d, "lra1", &[(-20.0, 20.0), (-30.0, 20.0)]),
        stereo_case(d, "lra2", &[(-20.0, 20.0), (-15.0, 20.0)]),
        stereo_case(d, "lra3", &[(-40.0, 20.0), (-20.0, 20.0)]),
        stereo_case(
            d,
            "lra4",
            &[
                (-50.0, 20.0),
                (-35.0, 20.0),
                (-20.0, 20.0),
                (-35.0, 20.0),
                (-50.0, 20.0),
            ],
        ),
    ];
    let refs: Vec<&std::path::Path> = files.iter().map(PathBuf::as_path).collect();
    let results = analyze(&refs);
    for ((case, expected), result) in [(1, 10.0), (2, 5.0), (3, 20.0), (4, 15.0)]
        .iter()
        .zip(&results)
    {
        assert_within(
            field(result, "loudness_range_lu"),
            *expected,
            1.0,
            1.0,
            &format!("Tech 3342 case {case}"),
        );
    }
}

#[test]
fn analyze_json_has_every_documented_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = stereo_case(dir.path(), "fields", &[(-20.0, 3.0)]);
    let result = &analyze(&[&path])[0];
    for key in [
        "path",
        "duration_s",
        "sample_rate",
        "channels",
        "integrated_lufs",
        "loudness_range_lu",
        "max_momentary_lufs",
        "max_short_term_lufs",
        "true_peak_dbtp",
        "sample_peak_dbfs",
        "clipped_samples",
        "dc_offset",
        "phase_correlation",
        "leading_silence_s",
        "trailing_silence_s",
    ] {
        assert!(result.get(key).is_some(), "analyze --json lacks {key}");
    }
    assert_within(field(result, "duration_s"), 3.0, 1e-6, 1e-6, "duration");
    assert_within(
        field(result, "sample_peak_dbfs"),
        -20.0,
        0.01,
        0.01,
        "sample peak",
    );
    assert_within(
        field(result, "phase_correlation"),
        1.0,
        1e-6,
        1e-6,
        "correlation",
    );
}
