//! `[restore.declip]`: settings of the declipper.

use serde::{Deserialize, Serialize};

use crate::config::{InvalidValue, check_range};

/// `[restore.declip]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeclipConfig {
    /// AR model order.
    pub ar_order: usize,
    /// Model refits per segment (Janssen iterations).
    pub iterations: usize,
    /// Longest clipped run rebuilt, ms; longer runs are rebuilt only where the look-ahead reaches.
    pub max_run_ms: f64,
}

impl Default for DeclipConfig {
    fn default() -> Self {
        Self {
            ar_order: 32,
            iterations: 3,
            max_run_ms: 20.0,
        }
    }
}

impl DeclipConfig {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<(), InvalidValue> {
        check_range("ar_order", self.ar_order as f64, 4.0, 64.0, "")?;
        check_range("iterations", self.iterations as f64, 1.0, 10.0, "")?;
        check_range("max_run_ms", self.max_run_ms, 1.0, 100.0, "ms")?;
        Ok(())
    }
}
