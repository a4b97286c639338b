//! Vinyl sides: how long a side may run on each record format.
//!
//! The vinyl outlet renders one 24-bit WAV per side (tracks grouped by their `side`), with the
//! `vinyl` preset: bass mono below 150 Hz, no compression and no brickwall limiter (peaks are
//! normalised to the ceiling instead, so the cutting engineer keeps the transients).

use lathe_model::catalog::VinylFormat;

/// A warning when a side of `length_s` is longer than `format` cuts well, `None` otherwise.
pub fn side_length_warning(side: &str, length_s: f64, format: VinylFormat) -> Option<String> {
    let max = format.max_side_s();
    (length_s > max).then(|| {
        format!(
            "vinyl side {side} runs {}:{:02}, past the {}:{:02} a {} side holds at good level: expect a lower cut and less bass",
            (length_s / 60.0).floor() as u64,
            (length_s % 60.0).floor() as u64,
            (max / 60.0) as u64,
            (max % 60.0) as u64,
            match format {
                VinylFormat::TwelveInch33 => "12\" 33 1/3",
                VinylFormat::TwelveInch45 => "12\" 45",
                VinylFormat::SevenInch45 => "7\" 45",
            }
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sides_past_the_format_limit_are_warned_about() {
        assert_eq!(
            side_length_warning("A", 21.0 * 60.0, VinylFormat::TwelveInch33),
            None
        );
        let w = side_length_warning("B", 23.0 * 60.0 + 5.0, VinylFormat::TwelveInch33).unwrap();
        assert!(w.contains("side B runs 23:05, past the 22:00"), "{w}");
        assert!(side_length_warning("A", 8.0 * 60.0, VinylFormat::SevenInch45).is_some());
        assert!(side_length_warning("A", 14.0 * 60.0, VinylFormat::TwelveInch45).is_none());
    }
}
