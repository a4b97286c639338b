//! The dither mode of a profile's `output.dither`.

/// What the engine's `Quantiser` adds before rounding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DitherMode {
    /// Plain rounding, no dither.
    None,
    /// Triangular-PDF dither of ±1 LSB peak, spectrally flat.
    Tpdf,
    /// Triangular-PDF dither with F-weighted error-feedback noise shaping.
    Shaped,
}
