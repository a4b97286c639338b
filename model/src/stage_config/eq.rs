//! Configuration of the parametric EQ (`type = "eq"`): up to 32 bands tagged by `type`.

use serde::{Deserialize, Serialize};

use crate::config::{InvalidValue, check_range};

/// Most bands one EQ may have.
pub const MAX_BANDS: usize = 32;

/// Configuration of the engine's `ParametricEq` stage.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EqConfig {
    /// The bands, applied in order (0..=32 of them; the order does not change the result).
    #[serde(default)]
    pub bands: Vec<EqBand>,
}

/// One EQ band. Frequencies 10..=40000 Hz (and below 0.49 times the sample rate), gains -24..=24 dB,
/// Q 0.1..=20.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum EqBand {
    /// A bell: `gain_db` at `frequency_hz`, bandwidth set by `q`.
    Peaking {
        /// Centre frequency.
        frequency_hz: f64,
        /// Gain at the centre.
        gain_db: f64,
        /// Quality factor (higher is narrower).
        q: f64,
    },
    /// Low shelf: `gain_db` below `frequency_hz`, half of it at the corner.
    LowShelf {
        /// Corner frequency.
        frequency_hz: f64,
        /// Gain of the shelf.
        gain_db: f64,
        /// Shelf slope as a Q; default 0.707 (steepest without overshoot).
        #[serde(default = "default_q")]
        q: f64,
    },
    /// High shelf: `gain_db` above `frequency_hz`, half of it at the corner.
    HighShelf {
        /// Corner frequency.
        frequency_hz: f64,
        /// Gain of the shelf.
        gain_db: f64,
        /// Shelf slope as a Q; default 0.707 (steepest without overshoot).
        #[serde(default = "default_q")]
        q: f64,
    },
    /// Second-order high-pass (12 dB/octave).
    Highpass {
        /// Corner frequency.
        frequency_hz: f64,
        /// Resonance; default 0.707 (Butterworth, -3.01 dB at the corner).
        #[serde(default = "default_q")]
        q: f64,
    },
    /// Second-order low-pass (12 dB/octave).
    Lowpass {
        /// Corner frequency.
        frequency_hz: f64,
        /// Resonance; default 0.707 (Butterworth, -3.01 dB at the corner).
        #[serde(default = "default_q")]
        q: f64,
    },
}

fn default_q() -> f64 {
    0.707
}

impl EqBand {
    /// The band's frequency (centre or corner).
    pub fn frequency_hz(&self) -> f64 {
        match *self {
            Self::Peaking { frequency_hz, .. }
            | Self::LowShelf { frequency_hz, .. }
            | Self::HighShelf { frequency_hz, .. }
            | Self::Highpass { frequency_hz, .. }
            | Self::Lowpass { frequency_hz, .. } => frequency_hz,
        }
    }

    /// Checks the band's values; keys are relative to the band (`gain_db`).
    ///
    /// # Errors
    /// The first out-of-range value.
    pub fn validate(&self) -> Result<(), InvalidValue> {
        check_range("frequency_hz", self.frequency_hz(), 10.0, 40_000.0, "Hz")?;
        let (gain_db, q) = match *self {
            Self::Peaking { gain_db, q, .. }
            | Self::LowShelf { gain_db, q, .. }
            | Self::HighShelf { gain_db, q, .. } => (Some(gain_db), q),
            Self::Highpass { q, .. } | Self::Lowpass { q, .. } => (None, q),
        };
        if let Some(gain_db) = gain_db {
            check_range("gain_db", gain_db, -24.0, 24.0, "dB")?;
        }
        check_range("q", q, 0.1, 20.0, "")
    }
}

impl EqConfig {
    /// Checks the band count and every band.
    ///
    /// # Errors
    /// The first problem, keyed `bands` (too many) or `bands[i].<field>`.
    pub fn validate(&self) -> Result<(), InvalidValue> {
        if self.bands.len() > MAX_BANDS {
            return Err(InvalidValue::new(
                "bands",
                format!("{} bands; allowed at most {MAX_BANDS}", self.bands.len()),
            ));
        }
        for (i, band) in self.bands.iter().enumerate() {
            band.validate()
                .map_err(|e| e.within(&format!("bands[{i}]")))?;
        }
        Ok(())
    }
}
