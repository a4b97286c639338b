//! Automatic restoration (`[restore] auto = true`): from the [`Defects`] measured in a track to
//! the restorers that run on it, each with the settings its measurement implies and the reason.
//!
//! A restorer runs when its defect passes its threshold below. The thresholds were set on the
//! tuning groups of the development corpus (`asc`, `singularity`, `hyperrogue`: clean music, whole
//! tracks and 30 s excerpts, none of which should trigger anything) against the damage models of
//! `lathe_synth::damage` at the weak end of their ranges (each should trigger its restorer); the
//! held-out groups were not looked at while setting them. A restorer with a sub-table of its own in
//! `[restore]` always runs with those settings.

use serde::{Deserialize, Serialize};

use crate::defects::{Defects, FLOOR_DBFS};
use crate::stage_config::restore::{
    DeclickConfig, DeclipConfig, DecrackleConfig, DehumConfig, DenoiseConfig, MAX_HARMONICS,
    RestoreConfig,
};

/// Clicks a minute (per channel) above which declick runs.
pub const CLICKS_PER_MIN_THRESHOLD: f64 = 20.0;
/// Crackle a second (per channel) above which decrackle runs.
pub const CRACKLE_PER_S_THRESHOLD: f64 = 100.0;
/// Denoise runs when the programme is less than this far above its noise floor, dB...
pub const NOISE_SNR_THRESHOLD_DB: f64 = 45.0;
/// ... and the floor is steady: the steadiest band from 2 kHz up rises less than this above its
/// floor in half of the frames, dB.
pub const NOISE_SPREAD_THRESHOLD_DB: f64 = 3.5;
/// Hum louder than this, dBFS, is removed.
pub const HUM_LEVEL_THRESHOLD_DBFS: f64 = -75.0;
/// A harmonic this far under the strongest one is left alone, dB.
pub const HUM_HARMONIC_RANGE_DB: f64 = 30.0;
/// Hard-clipped runs a minute (per channel) above which declip runs.
pub const CLIPPED_RUNS_PER_MIN_THRESHOLD: f64 = 6.0;
/// The pile-up of samples under the peak above which declip runs (soft clipping).
pub const PILE_UP_THRESHOLD: f64 = 1.0;

/// What was detected in a track, which restorers run, with which settings, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestorePlan {
    /// What the defect detector measured.
    pub defects: Defects,
    /// The restorers that run and their settings (`auto` off: this is the plan carried out).
    pub config: RestoreConfig,
    /// One decision a restorer, in running order: declip, declick, decrackle, dehum, denoise.
    pub decisions: Vec<RestoreDecision>,
}

/// Whether one restorer runs, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreDecision {
    /// The restorer (`declick`).
    pub restorer: String,
    /// True when it runs.
    pub runs: bool,
    /// Why, in one line ("declick: 143 clicks/min over the 20/min threshold").
    pub reason: String,
}

/// One restorer's verdict before the section's own sub-tables are taken into account.
struct Finding<C> {
    /// The settings the measurement implies, when the defect is present.
    settings: Option<C>,
    /// The measurement against its threshold, in words.
    measured: String,
}

impl RestorePlan {
    /// The plan for a track with `defects` under the profile's `section`: every restorer with a
    /// sub-table runs with it; the others run when their defect passes its threshold.
    pub fn new(defects: Defects, section: &RestoreConfig) -> Self {
        let mut decisions = Vec::new();
        let config = RestoreConfig {
            auto: false,
            declip: decide("declip", &section.declip, declip(&defects), &mut decisions),
            declick: decide(
                "declick",
                &section.declick,
                declick(&defects),
                &mut decisions,
            ),
            decrackle: decide(
                "decrackle",
                &section.decrackle,
                decrackle(&defects),
                &mut decisions,
            ),
            dehum: decide("dehum", &section.dehum, dehum(&defects), &mut decisions),
            denoise: decide(
                "denoise",
                &section.denoise,
                denoise(&defects),
                &mut decisions,
            ),
        };
        Self {
            defects,
            config,
            decisions,
        }
    }

    /// The restorers that run, by name, in running order.
    pub fn restorers(&self) -> Vec<&str> {
        self.decisions
            .iter()
            .filter(|d| d.runs)
            .map(|d| d.restorer.as_str())
            .collect()
    }
}

/// The settings `restorer` runs with (the section's own, else the finding's) and its decision.
fn decide<C: Clone>(
    restorer: &str,
    explicit: &Option<C>,
    finding: Finding<C>,
    decisions: &mut Vec<RestoreDecision>,
) -> Option<C> {
    let (settings, reason) = match (explicit, finding.settings) {
        (Some(own), _) => (
            Some(own.clone()),
            format!(
                "{restorer}: listed in [restore] (measured {})",
                finding.measured
            ),
        ),
        (None, settings) => (settings, format!("{restorer}: {}", finding.measured)),
    };
    decisions.push(RestoreDecision {
        restorer: restorer.to_owned(),
        runs: settings.is_some(),
        reason,
    });
    settings
}

/// `value` against `threshold` in words: "143 clicks/min over the 20/min threshold".
fn against(value: &str, over: bool, threshold: &str) -> String {
    let side = if over { "over" } else { "under" };
    format!("{value} {side} the {threshold} threshold")
}

/// Clicks found: the declicker with its wide-click search on. That search is off by default
/// because it can take a strongly periodic synthetic attack for a bump; here it runs only on a
/// track the detector found clicks in, where it triples the gain on smooth clicks of tens of
/// samples (measured on the tuning groups, `make bench-restore`).
fn declick(defects: &Defects) -> Finding<DeclickConfig> {
    let rate = defects.clicks_per_min;
    let over = rate > CLICKS_PER_MIN_THRESHOLD;
    Finding {
        settings: over.then(|| DeclickConfig {
            wide_clicks: true,
            ..DeclickConfig::default()
        }),
        measured: against(
            &format!("{rate:.0} clicks/min"),
            over,
            &format!("{CLICKS_PER_MIN_THRESHOLD:.0}/min"),
        ),
    }
}

fn decrackle(defects: &Defects) -> Finding<DecrackleConfig> {
    let rate = defects.crackle_per_s;
    let over = rate > CRACKLE_PER_S_THRESHOLD;
    Finding {
        settings: over.then(DecrackleConfig::default),
        measured: against(
            &format!("{rate:.0} crackles/s"),
            over,
            &format!("{CRACKLE_PER_S_THRESHOLD:.0}/s"),
        ),
    }
}

fn dehum(defects: &Defects) -> Finding<DehumConfig> {
    let Some(hum) = &defects.hum else {
        return Finding {
            settings: None,
            measured: "no hum found".to_owned(),
        };
    };
    let over = hum.level_dbfs > HUM_LEVEL_THRESHOLD_DBFS;
    let strongest = hum
        .harmonics
        .iter()
        .map(|h| h.level_dbfs)
        .fold(f64::NEG_INFINITY, f64::max);
    // Up to the highest harmonic within range of the strongest: the dehummer removes 1..=n.
    let harmonics = hum
        .harmonics
        .iter()
        .filter(|h| h.level_dbfs > strongest - HUM_HARMONIC_RANGE_DB)
        .map(|h| h.number)
        .max()
        .unwrap_or(1)
        .clamp(1, MAX_HARMONICS);
    let mains_hz = (hum.mains_hz == 50.0 || hum.mains_hz == 60.0).then_some(hum.mains_hz);
    Finding {
        settings: over.then_some(DehumConfig {
            mains_hz,
            harmonics,
        }),
        measured: against(
            &format!(
                "{:.0} Hz hum ({:.2} Hz, {} harmonics) at {:.1} dBFS",
                hum.mains_hz,
                hum.fundamental_hz,
                hum.harmonics.len(),
                hum.level_dbfs
            ),
            over,
            &format!("{HUM_LEVEL_THRESHOLD_DBFS:.0} dBFS"),
        ),
    }
}

/// The denoiser's strength for a programme `snr_db` above its noise: the noisier, the stronger
/// (30 dB at 18 dB SNR or less, 10 dB at 38 dB or more).
pub fn denoise_strength_db(snr_db: f64) -> f64 {
    (48.0 - snr_db).clamp(10.0, 30.0)
}

fn denoise(defects: &Defects) -> Finding<DenoiseConfig> {
    let noise = &defects.noise;
    // Digital silence has no floor to speak of.
    let over = noise.level_dbfs > FLOOR_DBFS
        && noise.snr_db < NOISE_SNR_THRESHOLD_DB
        && noise.spread_db < NOISE_SPREAD_THRESHOLD_DB;
    let measured = format!(
        "{} noise floor {:.1} dBFS, SNR {:.1} dB (threshold {NOISE_SNR_THRESHOLD_DB:.0} dB), \
         {:.1} dB above it in half the frames (threshold {NOISE_SPREAD_THRESHOLD_DB:.0} dB)",
        noise.shape.name(),
        noise.level_dbfs,
        noise.snr_db,
        noise.spread_db,
    );
    let strength_db = denoise_strength_db(noise.snr_db);
    Finding {
        settings: over.then(|| DenoiseConfig {
            strength_db,
            ..DenoiseConfig::default()
        }),
        measured: if over {
            format!("{measured}: a steady floor, strength {strength_db:.0} dB")
        } else {
            format!("{measured}: no steady floor")
        },
    }
}

fn declip(defects: &Defects) -> Finding<DeclipConfig> {
    let clip = &defects.clipping;
    let hard = clip.runs_per_min > CLIPPED_RUNS_PER_MIN_THRESHOLD;
    let soft = clip.pile_up > PILE_UP_THRESHOLD;
    // The longest run, with room to spare, within the declipper's range.
    let longest_ms = clip.longest_run as f64 * 1000.0 / f64::from(defects.sample_rate_hz.max(1));
    let max_run_ms = (2.0 * longest_ms).clamp(DeclipConfig::default().max_run_ms, 100.0);
    let measured = format!(
        "{:.1} clipped runs/min at {:.1} dBFS (longest {} samples; threshold \
         {CLIPPED_RUNS_PER_MIN_THRESHOLD:.0}/min), pile-up {:.2} under the peak (threshold \
         {PILE_UP_THRESHOLD:.1})",
        clip.runs_per_min, clip.peak_dbfs, clip.longest_run, clip.pile_up
    );
    let verdict = match (hard, soft) {
        (true, _) => "hard clipping",
        (false, true) => "soft clipping",
        (false, false) => "no clipping",
    };
    Finding {
        settings: (hard || soft).then(|| DeclipConfig {
            max_run_ms,
            ..DeclipConfig::default()
        }),
        measured: format!("{measured}: {verdict}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defects::{Clipping, Hum, HumHarmonic, NoiseFloor, NoiseShape};

    fn clean() -> Defects {
        Defects {
            sample_rate_hz: 44_100,
            duration_s: 30.0,
            clicks_per_min: 2.0,
            crackle_per_s: 0.5,
            noise: NoiseFloor {
                level_dbfs: -110.0,
                snr_db: 80.0,
                bands: Vec::new(),
                slope_db_per_octave: -6.0,
                high_lift_db: -10.0,
                shape: NoiseShape::Other,
                spread_db: 25.0,
            },
            hum: None,
            clipping: Clipping {
                peak_dbfs: -1.0,
                runs: 0,
                runs_per_min: 0.0,
                longest_run: 0,
                pile_up: 0.02,
            },
        }
    }

    #[test]
    fn clean_defects_run_nothing_and_say_why() {
        let plan = RestorePlan::new(
            clean(),
            &RestoreConfig {
                auto: true,
                ..RestoreConfig::default()
            },
        );
        assert!(plan.restorers().is_empty(), "{:?}", plan.decisions);
        assert!(plan.config.has_no_restorer());
        let names: Vec<_> = plan.decisions.iter().map(|d| d.restorer.as_str()).collect();
        assert_eq!(
            names,
            ["declip", "declick", "decrackle", "dehum", "denoise"]
        );
        assert_eq!(
            plan.decisions[1].reason,
            "declick: 2 clicks/min under the 20/min threshold"
        );
    }

    #[test]
    fn each_defect_runs_its_restorer_with_settings_from_the_measurement() {
        let mut defects = clean();
        defects.clicks_per_min = 143.0;
        defects.crackle_per_s = 400.0;
        defects.noise.snr_db = 25.0;
        defects.noise.spread_db = 1.5;
        defects.noise.shape = NoiseShape::White;
        defects.hum = Some(Hum {
            mains_hz: 60.0,
            fundamental_hz: 60.02,
            level_dbfs: -40.0,
            harmonics: [(1, -43.0), (2, -49.0), (3, -52.0), (5, -80.0)]
                .map(|(number, level_dbfs)| HumHarmonic { number, level_dbfs })
                .to_vec(),
        });
        defects.clipping.runs_per_min = 300.0;
        defects.clipping.longest_run = 2205;
        let plan = RestorePlan::new(defects, &RestoreConfig::default());
        assert_eq!(
            plan.restorers(),
            ["declip", "declick", "decrackle", "dehum", "denoise"]
        );
        assert_eq!(
            plan.decisions[1].reason,
            "declick: 143 clicks/min over the 20/min threshold"
        );
        let dehum = plan.config.dehum.as_ref().unwrap();
        assert_eq!((dehum.mains_hz, dehum.harmonics), (Some(60.0), 3));
        assert_eq!(plan.config.denoise.as_ref().unwrap().strength_db, 23.0);
        // 2205 samples at 44.1 kHz are 50 ms: twice that, at the declipper's limit.
        assert_eq!(plan.config.declip.as_ref().unwrap().max_run_ms, 100.0);
        assert!(plan.config.validate().is_ok());
        assert!(!plan.config.auto);
    }

    #[test]
    fn a_listed_restorer_runs_with_its_settings_whatever_was_found() {
        let section: RestoreConfig =
            toml::from_str("auto = true\n[denoise]\nstrength_db = 6.0\n").unwrap();
        assert!(section.auto && !section.is_empty() && !section.has_no_restorer());
        let mut defects = clean();
        defects.clicks_per_min = 500.0;
        let plan = RestorePlan::new(defects, &section);
        assert_eq!(plan.restorers(), ["declick", "denoise"]);
        assert_eq!(plan.config.denoise.as_ref().unwrap().strength_db, 6.0);
        assert!(
            plan.decisions[4]
                .reason
                .starts_with("denoise: listed in [restore] (measured "),
            "{}",
            plan.decisions[4].reason
        );
    }

    #[test]
    fn denoise_strength_follows_the_snr() {
        assert_eq!(denoise_strength_db(10.0), 30.0);
        assert_eq!(denoise_strength_db(30.0), 18.0);
        assert_eq!(denoise_strength_db(60.0), 10.0);
    }
}
