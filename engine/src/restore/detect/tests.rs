#![allow(clippy::unwrap_used)]

use lathe_model::defects::Defects;
use lathe_model::restore_plan::RestorePlan;
use lathe_model::stage_config::restore::RestoreConfig;
use lathe_synth::Style;
use lathe_synth::damage::{Damage, MODELS, Model};

use super::*;
use crate::restore::testing::{damaged, music};

/// The defects of `audio`, fed in blocks of varying sizes.
fn detect(audio: &AudioBlock) -> Defects {
    let mut detector = DefectDetector::new(audio.channel_count(), audio.sample_rate_hz());
    feed_in_blocks(&mut detector, audio, &[4096, 1, 1000, 333]);
    detector.finish()
}

fn feed_in_blocks(detector: &mut DefectDetector, audio: &AudioBlock, sizes: &[usize]) {
    let mut block = AudioBlock::new(audio.channel_count(), 4096, audio.sample_rate_hz());
    let (mut at, mut turn) = (0, 0);
    while at < audio.frames() {
        let n = sizes[turn % sizes.len()].min(audio.frames() - at);
        block.set_frames(n);
        for ch in 0..audio.channel_count() {
            block
                .channel_mut(ch)
                .copy_from_slice(&audio.channel(ch)[at..at + n]);
        }
        detector.feed(&block);
        at += n;
        turn += 1;
    }
}

/// The restorers an automatic plan runs for `defects`.
fn triggered(defects: &Defects) -> Vec<String> {
    let auto = RestoreConfig {
        auto: true,
        ..RestoreConfig::default()
    };
    RestorePlan::new(defects.clone(), &auto)
        .restorers()
        .into_iter()
        .map(str::to_owned)
        .collect()
}

/// The restorer of a damage model's family.
fn family(model_name: &str) -> &'static str {
    match model_name.split('-').next().unwrap_or("") {
        "clicks" => "declick",
        "crackle" => "decrackle",
        "hiss" => "denoise",
        "hum" => "dehum",
        _ => "declip",
    }
}

/// The damage of `model` at one end of its ranges: `weak` the hardest to hear (fewest clicks,
/// best SNR, quietest hum, clipping nearest the peak), else the strongest.
fn at_end(model: Model, weak: bool) -> Damage {
    let pick = |(lo, hi): (f64, f64), low_is_weak: bool| {
        if weak == low_is_weak { lo } else { hi }
    };
    match model {
        Model::Clicks {
            shape,
            per_second,
            width,
            relative_amplitude,
        } => Damage::Clicks {
            shape,
            per_second: pick(per_second, true),
            width,
            relative_amplitude,
        },
        Model::Hiss { color, snr_db } => Damage::Hiss {
            color,
            snr_db: pick(snr_db, false),
        },
        Model::Hum {
            mains_hz,
            harmonics,
            profile,
            level_dbfs,
            drift_hz,
        } => Damage::Hum {
            mains_hz,
            harmonics: harmonics.1,
            profile,
            level_dbfs: pick(level_dbfs, true),
            drift_hz,
        },
        Model::Clipping { kind, level } => Damage::Clipping {
            kind,
            level: pick(level, false),
        },
    }
}

/// The hum models.
fn is_hum(name: &str) -> bool {
    name.starts_with("hum")
}

#[test]
fn clean_generated_music_triggers_nothing() {
    for (i, style) in Style::ALL.into_iter().enumerate() {
        let defects = detect(&music(style, 8.0, 40 + i as u64));
        assert!(
            triggered(&defects).is_empty(),
            "{}: {:?}\n{defects:#?}",
            style.name(),
            triggered(&defects)
        );
    }
}

/// Models this test leaves to others: hum needs longer material than these 8 s
/// (`hum_triggers_dehum_with_its_mains_frequency`), soft clipping a better measure than the
/// pile-up under the peak (not yet detected).
fn not_yet_detected(name: &str) -> bool {
    is_hum(name) || name == "clip-soft"
}

/// Each model at the strong end of its range (and at one draw from it, except rectangular clicks,
/// whose rarest draws leave only a step's two edges a second, which the detector counts as
/// crackle on this material): the corpus report measures the whole ranges on real music.
#[test]
fn every_damage_model_triggers_its_restorer() {
    let clean = music(Style::Pop, 8.0, 21);
    for (name, model) in MODELS {
        if not_yet_detected(name) {
            continue;
        }
        let mut draws = vec![at_end(model, false)];
        if name != "clicks-rect" {
            draws.push(model.draw(2));
        }
        for damage in draws {
            let defects = detect(&damaged(&clean, &damage, 5));
            let restorers = triggered(&defects);
            assert!(
                restorers.iter().any(|r| r == family(name)),
                "{name} ({damage}): {restorers:?}\n{defects:#?}"
            );
        }
    }
}

#[test]
fn mixed_damage_triggers_each_restorer() {
    let clean = music(Style::Ballad, 8.0, 9);
    let mut audio = clean;
    for (i, name) in ["clicks-hann", "hiss-white", "hum-50"]
        .into_iter()
        .enumerate()
    {
        let damage = lathe_synth::damage::model(name).unwrap().draw(i as u64);
        audio = damaged(&audio, &damage, 100 + i as u64);
    }
    let restorers = triggered(&detect(&audio));
    for expected in ["declick", "denoise"] {
        assert!(restorers.iter().any(|r| r == expected), "{restorers:?}");
    }
}

#[test]
fn hum_triggers_dehum_with_its_mains_frequency() {
    let clean = music(Style::Pop, 30.0, 21);
    for (name, model) in MODELS.into_iter().filter(|(n, _)| is_hum(n)) {
        let defects = detect(&damaged(&clean, &at_end(model, true), 5));
        let plan = RestorePlan::new(
            defects,
            &RestoreConfig {
                auto: true,
                ..RestoreConfig::default()
            },
        );
        let dehum = plan.config.dehum.as_ref().expect(name);
        let Model::Hum { mains_hz, .. } = model else {
            unreachable!()
        };
        assert_eq!(dehum.mains_hz, Some(mains_hz), "{name}");
    }
}

#[test]
fn block_size_does_not_change_the_measurement() {
    let audio = damaged(
        &music(Style::Rock, 5.0, 3),
        &at_end(lathe_synth::damage::model("clicks-rect").unwrap(), false),
        2,
    );
    let whole = {
        let mut detector = DefectDetector::new(2, audio.sample_rate_hz());
        detector.feed(&audio);
        detector.finish()
    };
    assert_eq!(whole, detect(&audio));
}

#[test]
fn silence_has_no_defects() {
    let silence = AudioBlock::from_channels(vec![vec![0.0; 44_100]; 2], 44_100);
    let defects = detect(&silence);
    assert!(triggered(&defects).is_empty(), "{defects:#?}");
    assert_eq!(defects.clicks_per_min, 0.0);
    assert!(serde_json::to_string(&defects).is_ok());
}
