//! Settings of the true-peak limiter (its timing from a profile's `[limiter]`, its ceiling from
//! `[loudness]`).

use crate::config::{InvalidValue, check_range};

/// Settings of the engine's `TruePeakLimiter`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimiterConfig {
    /// The highest true peak allowed at the output, dBTP (-20 to 0; default -1).
    pub ceiling_dbtp: f64,
    /// Look-ahead, and so the delay of the audio, in ms (1 to 20; default 5). The gain ramps down over
    /// this window ahead of each peak.
    pub lookahead_ms: f64,
    /// Time constant of the gain's recovery after a peak, in ms (10 to 2000; default 150): the time for
    /// the gain reduction, in dB, to fall to 1/e (37 %) of its value.
    pub release_ms: f64,
    /// Oversampling of the ideal true-peak reconstruction: 4 or 8 (default 4). 8 reads content near
    /// Nyquist more exactly (under-reads at most 0.14 dB at 0.45 fs, against 0.55 dB at 4x) at twice
    /// the detection cost.
    pub oversampling: u32,
}

impl Default for LimiterConfig {
    fn default() -> Self {
        Self {
            ceiling_dbtp: -1.0,
            lookahead_ms: 5.0,
            release_ms: 150.0,
            oversampling: 4,
        }
    }
}

impl LimiterConfig {
    /// Checks every value against its allowed range; returns the first one out of range.
    pub fn validate(&self) -> Result<(), InvalidValue> {
        check_range("ceiling_dbtp", self.ceiling_dbtp, -20.0, 0.0, "dBTP")?;
        check_range("lookahead_ms", self.lookahead_ms, 1.0, 20.0, "ms")?;
        check_range("release_ms", self.release_ms, 10.0, 2000.0, "ms")?;
        if !matches!(self.oversampling, 4 | 8) {
            return Err(InvalidValue::new(
                "oversampling",
                format!("{} is not allowed; allowed 4 or 8", self.oversampling),
            ));
        }
        Ok(())
    }
}
