//! Deterministic, music-like test material.
//!
//! lathe's demo (`lathe demo DIR`), its tests and its benchmarks need audio that behaves like a record
//! (broadband, with transients, bass, stereo width, and loudness that changes between sections) without
//! shipping audio files. [`TrackSynth`] generates such a track from a [`TrackRecipe`], streaming, in
//! bounded memory and several hundred times faster than real time; [`demo_album`] describes a
//! deliberately rough album and [`write_wav`](crate::write_wav) renders a recipe to a WAV file.
//!
//! # What plays
//! A small band, arranged in sections (intro, verse, chorus, bridge, outro) of different density and level:
//! - a drum machine: kick (pitch-swept sine, exponential decay) and snare (band-passed noise burst plus a
//!   tone) on a bus that saturates them (rock) and carries the recipe's peak boost, closed and open
//!   hi-hats (high-passed noise), crash cymbals at section entries;
//! - a bass line: two detuned band-limited saws through a two-pole lowpass whose cutoff follows an
//!   envelope (driven for rock; a round, nearly sine bass for ballads, a slow drone for ambient);
//! - chords (keys stabs, piano-like arpeggios, string pads, or driven power chords doubled left and right)
//!   and a melody, from band-limited wavetables with ADSR envelopes. Key, mode, chord progression, grooves
//!   and melody all derive from the seed; melodies repeat with the section, as songs do;
//! - a comb-and-allpass reverb on a send bus that spreads the stereo image.
//!
//! Mono recipes fold the stereo mix (`(L + R) / 2`).
//!
//! # Determinism
//! Every musical choice comes from a counter-based hash of the seed and the bar, so any bar can be
//! rendered without rendering what precedes it; noise comes from per-voice xorshift generators. No `sin`,
//! `exp` or `powf` from the platform's maths library is used, because their last bit differs between
//! libms: the module carries its own polynomial sine and exponential, built only from `+ - * /` and
//! `sqrt`, which IEEE 754 rounds identically everywhere. Voices run sample by sample and every event falls
//! on an absolute frame, so the output does not depend on the block capacity the caller reads with.
//!
//! # Speed
//! Every voice is a wavetable oscillator (a table read and a multiply-add), envelopes and filters are
//! one multiply-add per sample, and voices are freed as soon as their release reaches zero: about
//! 300-500x real time for stereo 44.1 kHz on one core, depending on the style (rock is the densest).
//!
//! # Level
//! [`TrackSynth::new`] meets `level_db` by calibration: it renders a few seconds of each kind of section
//! once, combines their mean squares with the known section gains and fades, and scales the whole track so
//! that its RMS lands on the target (within a fraction of a dB in practice). DC offset and rumble are
//! added after that scaling, as the defects of a transfer are added to a record.

use std::sync::OnceLock;

// ------------------------------------------------------------------------------------------------------
// Public API
// ------------------------------------------------------------------------------------------------------

/// The character of a generated track: which instruments play, how densely, how loudly, and how much the
/// level moves between sections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Style {
    /// Sparse and soft: piano-like arpeggios, a soft kit that fills out only in the chorus, pads, wide
    /// dynamics between sections.
    Ballad,
    /// A full band: drums, bass, keys stabs, pads and a lead melody.
    Pop,
    /// Dense and loud: driven power chords doubled left and right, a driven bass, busy drums and
    /// crashes, narrow dynamics.
    Rock,
    /// Pads, a drone, bells and air noise; no drums.
    Ambient,
}

impl Style {
    /// Every style, in declaration order.
    pub const ALL: [Style; 4] = [Style::Ballad, Style::Pop, Style::Rock, Style::Ambient];

    /// Lower-case name: `"ballad"`, `"pop"`, `"rock"` or `"ambient"`.
    pub fn name(self) -> &'static str {
        match self {
            Style::Ballad => "ballad",
            Style::Pop => "pop",
            Style::Rock => "rock",
            Style::Ambient => "ambient",
        }
    }

    /// A tempo typical of the style, in beats per minute.
    pub fn typical_tempo_bpm(self) -> f64 {
        match self {
            Style::Ballad => 72.0,
            Style::Pop => 118.0,
            Style::Rock => 140.0,
            Style::Ambient => 76.0,
        }
    }

    /// A whole-track RMS level typical of the style, in dBFS.
    pub fn typical_level_db(self) -> f64 {
        match self {
            Style::Ballad => -24.0,
            Style::Pop => -16.0,
            Style::Rock => -12.0,
            Style::Ambient => -22.0,
        }
    }
}

/// What to generate. Everything derives from `seed`: same recipe, same samples, on any machine.
///
/// Out-of-range values are tamed rather than refused (this is test material): `channel_count` is clamped
/// to 1..=2, `tempo_bpm` to 30..=300, and non-finite levels fall back to the style's typical level.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackRecipe {
    /// Seed of every musical and random choice (key, progression, grooves, melody, noise).
    pub seed: u64,
    /// Length of the track in seconds.
    pub duration_s: f64,
    /// Sample rate of the generated audio.
    pub sample_rate_hz: u32,
    /// 1 (the stereo mix folded to mono) or 2 (stereo, instruments panned).
    pub channel_count: usize,
    /// Tempo in beats per minute (4/4, sixteenth-note grid).
    pub tempo_bpm: f64,
    /// Instrumentation, density and dynamics.
    pub style: Style,
    /// Approximate RMS of the whole track in dBFS (over all channels), not counting `dc_offset` and
    /// `rumble_db`, which are added on top like the defects of a rough transfer.
    pub level_db: f64,
    /// Added to every sample (the "rough transfer" defect).
    pub dc_offset: f64,
    /// Extra level on kick and snare hits, decaying within about 20 ms: over-loud transients. Samples are
    /// `f32` and not clipped, so peaks may exceed 0 dBFS. 0 leaves the hits alone.
    pub peak_boost_db: f64,
    /// Optional sub-sonic rumble (two tones between 8 and 18 Hz, like a turntable's) at this RMS level in
    /// dBFS, the same in every channel.
    pub rumble_db: Option<f64>,
}

impl TrackRecipe {
    /// A clean recipe: 30 s of stereo at 44.1 kHz, at the style's typical tempo and level, no defects.
    /// Adjust it with struct update syntax: `TrackRecipe { duration_s: 60.0, ..TrackRecipe::new(style, 7) }`.
    pub fn new(style: Style, seed: u64) -> Self {
        Self {
            seed,
            duration_s: 30.0,
            sample_rate_hz: 44_100,
            channel_count: 2,
            tempo_bpm: style.typical_tempo_bpm(),
            style,
            level_db: style.typical_level_db(),
            dc_offset: 0.0,
            peak_boost_db: 0.0,
            rumble_db: None,
        }
    }

    /// Length of the track in frames: `round(duration_s * sample_rate_hz)`, or 0 for a negative or
    /// non-finite duration.
    pub fn total_frames(&self) -> u64 {
        let frames = (self.duration_s * f64::from(self.sample_rate_hz)).round();
        if frames.is_finite() && frames > 0.0 {
            frames as u64
        } else {
            0
        }
    }
}

/// A streaming generator of one [`TrackRecipe`]: call [`TrackSynth::read`] until it returns 0.
///
/// Memory is fixed at construction (wavetables are shared, reverb lines hold about 40 ms), whatever the
/// length of the track; `read` allocates nothing.
pub struct TrackSynth {
    engine: Engine,
    channel_count: usize,
    sample_rate_hz: u32,
    total_frames: u64,
    frame: u64,
    master_gain: f64,
    section_gain: f64,
    section_gain_coef: f64,
    dc_offset: f64,
    rumble: Option<Rumble>,
}

impl std::fmt::Debug for TrackSynth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrackSynth")
            .field("style", &self.engine.song.style)
            .field("channel_count", &self.channel_count)
            .field("sample_rate_hz", &self.sample_rate_hz)
            .field("frame", &self.frame)
            .field("total_frames", &self.total_frames)
            .field("master_gain", &self.master_gain)
            .finish_non_exhaustive()
    }
}

impl TrackSynth {
    /// Builds the generator and calibrates its level (renders a few seconds of each kind of section once,
    /// which takes a few tens of milliseconds).
    pub fn new(recipe: &TrackRecipe) -> Self {
        let params = Params::from_recipe(recipe);
        let mut engine = Engine::new(&params);
        let master_gain = calibrate(&mut engine, params.channel_count, params.target_rms);
        engine.reset_at_bar(0);
        let section_gain = engine.song.gain_at_step(0);
        let rumble = params
            .rumble_rms
            .map(|rms| Rumble::new(params.seed, params.sr, rms));
        Self {
            engine,
            channel_count: params.channel_count,
            sample_rate_hz: params.sample_rate_hz,
            total_frames: params.total_frames,
            frame: 0,
            master_gain,
            section_gain,
            section_gain_coef: 1.0 - det::exp(-1.0 / (SECTION_GAIN_SMOOTHING_S * params.sr)),
            dc_offset: params.dc_offset,
            rumble,
        }
    }

    /// Length of the track in frames (`round(duration_s * sample_rate_hz)`).
    pub fn total_frames(&self) -> u64 {
        self.total_frames
    }

    /// Frames generated so far.
    pub fn position_frames(&self) -> u64 {
        self.frame
    }

    /// Channels generated: the recipe's `channel_count` clamped to 1..=2.
    pub fn channel_count(&self) -> usize {
        self.channel_count
    }

    /// Sample rate of the generated audio.
    pub fn sample_rate_hz(&self) -> u32 {
        self.sample_rate_hz
    }

    /// Fills each buffer of `channels` (one per channel, planar) from its start, with as many frames as
    /// the shortest buffer holds, or fewer at the end of the track; returns the frames written, 0 when
    /// done (or if a buffer is empty). Samples past the returned count are left alone.
    ///
    /// # Panics
    /// If `channels.len()` differs from [`TrackSynth::channel_count`].
    pub fn read<C: AsMut<[f32]>>(&mut self, channels: &mut [C]) -> usize {
        assert_eq!(
            channels.len(),
            self.channel_count,
            "TrackSynth::read needs one buffer per channel of the track"
        );
        let remaining = self.total_frames - self.frame;
        let capacity = channels
            .iter_mut()
            .map(|channel| channel.as_mut().len())
            .min()
            .unwrap_or(0);
        let frames = (capacity as u64).min(remaining) as usize;
        // The channel count is 1 or 2: the first buffer is the left (or mono) one.
        let (left, right) = channels.split_at_mut(1);
        let right = right.first_mut().map(|right| &mut right.as_mut()[..frames]);
        self.render_into(&mut left[0].as_mut()[..frames], right);
        self.frame += frames as u64;
        frames
    }

    /// Renders `left.len()` frames: the band, then section gain, master gain, rumble and DC.
    fn render_into(&mut self, left: &mut [f32], mut right: Option<&mut [f32]>) {
        let mut done = 0;
        while done < left.len() {
            let n = self.engine.render_chunk(left.len() - done);
            let target = self.engine.gain_target;
            let music_l = &self.engine.buf_l[..n];
            let music_r = &self.engine.buf_r[..n];
            for i in 0..n {
                self.section_gain += (target - self.section_gain) * self.section_gain_coef;
                let gain = self.section_gain * self.master_gain;
                let defects = self.dc_offset + self.rumble.as_mut().map_or(0.0, Rumble::next);
                match right.as_deref_mut() {
                    Some(right) => {
                        left[done + i] = (music_l[i] * gain + defects) as f32;
                        right[done + i] = (music_r[i] * gain + defects) as f32;
                    }
                    None => {
                        left[done + i] = (0.5 * (music_l[i] + music_r[i]) * gain + defects) as f32;
                    }
                }
            }
            done += n;
        }
    }
}

/// A short, deliberately rough album for the demo: five tracks of 24-36 s with uneven levels.
///
/// | name | style | level (dBFS RMS) | defect |
/// |---|---|---|---|
/// | `01-dawn` | ambient | -21 | none |
/// | `02-city-lights` | pop | -15 | DC offset +0.03 |
/// | `03-hush` | ballad | -30 | rumble at -40 dBFS |
/// | `04-iron-road` | rock | -13 | kick and snare transients boosted 10 dB, over 0 dBFS |
/// | `05-old-radio` | pop, mono | -19 | none |
pub fn demo_album(sample_rate_hz: u32) -> Vec<(String, TrackRecipe)> {
    let track = |style, seed| TrackRecipe {
        sample_rate_hz,
        ..TrackRecipe::new(style, seed)
    };
    vec![
        (
            "01-dawn".to_owned(),
            TrackRecipe {
                duration_s: 28.0,
                tempo_bpm: 68.0,
                level_db: -21.0,
                ..track(Style::Ambient, 0xDA_0001)
            },
        ),
        (
            "02-city-lights".to_owned(),
            TrackRecipe {
                duration_s: 34.0,
                tempo_bpm: 118.0,
                level_db: -15.0,
                dc_offset: 0.03,
                ..track(Style::Pop, 0xDA_0002)
            },
        ),
        (
            "03-hush".to_owned(),
            TrackRecipe {
                duration_s: 36.0,
                tempo_bpm: 70.0,
                level_db: -30.0,
                rumble_db: Some(-40.0),
                ..track(Style::Ballad, 0xDA_0003)
            },
        ),
        (
            "04-iron-road".to_owned(),
            TrackRecipe {
                duration_s: 30.0,
                tempo_bpm: 142.0,
                level_db: -13.0,
                peak_boost_db: 10.0,
                ..track(Style::Rock, 0xDA_0004)
            },
        ),
        (
            "05-old-radio".to_owned(),
            TrackRecipe {
                duration_s: 24.0,
                tempo_bpm: 104.0,
                level_db: -19.0,
                channel_count: 1,
                ..track(Style::Pop, 0xDA_0005)
            },
        ),
    ]
}

// ------------------------------------------------------------------------------------------------------
// Constants
// ------------------------------------------------------------------------------------------------------

/// Frames rendered per voice pass: scratch buffers stay in L1 cache.
const CHUNK_FRAMES: usize = 256;
const STEPS_PER_BAR: u64 = 16;
/// Level below which the ambient air layer, fading out, stops.
const SILENT: f64 = 1e-4;
/// Releases and drum decays fall as `e' = -(e + RELEASE_FLOOR e0) / tau`: exponential at first, reaching
/// zero after `tau * ln(1 + 1 / RELEASE_FLOOR)` (3.5 time constants), so ended notes free their voice
/// instead of lingering near silence.
const RELEASE_FLOOR: f64 = 0.03;
/// Section level changes glide with this time constant (a fader, not a switch).
const SECTION_GAIN_SMOOTHING_S: f64 = 0.04;
/// Seconds of each section kind rendered to calibrate the level (at least one bar).
const CALIBRATION_S: f64 = 4.0;
/// Tiny offset fed into the reverb so its recirculating state never decays into subnormal numbers.
const ANTI_DENORMAL: f64 = 1e-18;

// ------------------------------------------------------------------------------------------------------
// Deterministic maths
// ------------------------------------------------------------------------------------------------------

/// Transcendental functions built only from IEEE 754 basic operations, so that they give the same bits on
/// every platform (the platform's `exp` and `sin` may differ in the last bit between libms).
mod det {
    use std::f64::consts::{LN_2, LN_10, LOG2_E, TAU};

    /// ln 2 split Cody-Waite style: `k * LN_2_HI` is exact for the `k` that `exp` meets.
    const LN_2_HI: f64 = f64::from_bits(0x3FE6_2E42_FEE0_0000);
    const LN_2_LO: f64 = f64::from_bits(0x3DEA_39EF_3579_3C76);

    /// `e^x`, relative error below 1e-15 over the whole range.
    pub fn exp(x: f64) -> f64 {
        if x.is_nan() {
            return x;
        }
        if x < -708.0 {
            return 0.0;
        }
        if x > 709.0 {
            return f64::INFINITY;
        }
        let k = (x * LOG2_E).round();
        let r = (x - k * LN_2_HI) - k * LN_2_LO; // |r| <= ln 2 / 2
        let mut p = 1.0;
        for n in (1..=13).rev() {
            p = 1.0 + p * r / f64::from(n);
        }
        // k lies in -1022..=1023 here, so 2^k is a normal number built from its exponent bits.
        let two_k = f64::from_bits(((k as i64 + 1023) as u64) << 52);
        p * two_k
    }

    /// `sin(2 pi turns)`, absolute error below 1e-11.
    pub fn sin_turns(turns: f64) -> f64 {
        let t = turns - turns.floor();
        let x = if t < 0.25 {
            t
        } else if t < 0.75 {
            0.5 - t
        } else {
            t - 1.0
        };
        let r = x * TAU;
        let r2 = r * r;
        let mut p = 1.0;
        for d in [210.0, 156.0, 110.0, 72.0, 42.0, 20.0, 6.0] {
            p = 1.0 - p * r2 / d;
        }
        r * p
    }

    /// Linear gain of a level in dB.
    pub fn db_to_gain(db: f64) -> f64 {
        exp(db * (LN_10 / 20.0))
    }

    /// Frequency of a MIDI note (A4 = 69 = 440 Hz).
    pub fn midi_hz(note: f64) -> f64 {
        440.0 * exp((note - 69.0) / 12.0 * LN_2)
    }

    /// Per-sample multiplier of an exponential decay that falls to 1/e in `time_s`.
    pub fn decay_coef(time_s: f64, sample_rate: f64) -> f64 {
        if time_s > 0.0 {
            exp(-1.0 / (time_s * sample_rate))
        } else {
            0.0
        }
    }

    /// Coefficient `a` of the one-pole lowpass `y += a (x - y)` with cutoff `cutoff_hz`.
    pub fn lowpass_coef(cutoff_hz: f64, sample_rate: f64) -> f64 {
        1.0 - exp(-TAU * cutoff_hz.min(0.45 * sample_rate) / sample_rate)
    }

    /// Coefficient `a` of the one-pole highpass `y = a (y + x - x_prev)` with cutoff `cutoff_hz`.
    pub fn highpass_coef(cutoff_hz: f64, sample_rate: f64) -> f64 {
        1.0 / (1.0 + TAU * cutoff_hz.min(0.45 * sample_rate) / sample_rate)
    }
}

// ------------------------------------------------------------------------------------------------------
// Randomness: counter-based hashing for musical choices, xorshift streams for noise
// ------------------------------------------------------------------------------------------------------

/// SplitMix64's finaliser: a bijective mix of 64 bits.
fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Independent streams of choices, each hashed with the seed and an index.
#[derive(Debug, Clone, Copy)]
enum Lane {
    Song = 1,
    Bar = 2,
    Melody = 3,
    Noise = 4,
    Rumble = 5,
}

fn hash_key(seed: u64, lane: Lane, index: u64) -> u64 {
    mix64(mix64(seed ^ (lane as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93)) ^ index)
}

/// xorshift64* generator.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(key: u64) -> Self {
        Self(mix64(key) | 1)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = xorshift(self.0);
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1_u64 << 53) as f64)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    fn chance(&mut self, probability: f64) -> bool {
        self.unit() < probability
    }
}

#[inline]
fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

/// White noise in [-1, 1) from a xorshift state.
#[inline]
fn white(state: &mut u64) -> f64 {
    *state = xorshift(*state);
    (*state >> 11) as f64 * (1.0 / (1_u64 << 52) as f64) - 1.0
}

fn noise_state(seed: u64, index: u64) -> u64 {
    mix64(hash_key(seed, Lane::Noise, index)) | 1
}

// ------------------------------------------------------------------------------------------------------
// Wavetables
// ------------------------------------------------------------------------------------------------------

const TABLE_BITS: u32 = 10;
const TABLE_LEN: usize = 1 << TABLE_BITS;
const FRAC_BITS: u32 = 32 - TABLE_BITS;
const FRAC_MASK: u32 = (1 << FRAC_BITS) - 1;
const FRAC_SCALE: f64 = 1.0 / (1_u64 << FRAC_BITS) as f64;
/// Harmonic counts of the band-limited versions of each timbre, one table each.
const MIP_HARMONICS: [usize; 7] = [64, 32, 16, 8, 4, 2, 1];

/// One cycle as `[value, slope to the next value]` pairs: an interpolated read is one load and one
/// multiply-add.
type Table = [[f64; 2]; TABLE_LEN];

/// Single-cycle waveforms, each normalised to unit RMS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timbre {
    Sine,
    /// All harmonics at 1/h.
    Saw,
    /// Harmonics at 1/h^1.5: an electric-piano-like tone.
    Keys,
    /// Odd harmonics at 1/h, even ones at 0.35/h: a hollow, reedy lead.
    Lead,
    /// A saw through a gentle lowpass around the sixth harmonic, baked into the table: string pads
    /// without a per-sample filter.
    Strings,
    /// Harmonics at 1/h^3: nearly a sine with a little warmth, for drones and round basses.
    Soft,
    /// A power chord in one cycle: a saw and a saw a just fifth above (harmonics 2k and 3k of a
    /// fundamental an octave below the chord's root; play it at half the root's frequency).
    PowerChord,
}

impl Timbre {
    const ALL: [Timbre; 7] = [
        Timbre::Sine,
        Timbre::Saw,
        Timbre::Keys,
        Timbre::Lead,
        Timbre::Strings,
        Timbre::Soft,
        Timbre::PowerChord,
    ];

    fn index(self) -> usize {
        self as usize
    }

    fn harmonic(self, h: usize) -> f64 {
        let hf = h as f64;
        match self {
            Timbre::Sine => f64::from(u8::from(h == 1)),
            Timbre::Saw => 1.0 / hf,
            Timbre::Keys => 1.0 / (hf * hf.sqrt()),
            Timbre::Lead if h % 2 == 1 => 1.0 / hf,
            Timbre::Lead => 0.35 / hf,
            Timbre::Strings => 1.0 / (hf * (1.0 + hf * hf / 36.0)),
            Timbre::Soft => 1.0 / (hf * hf * hf),
            Timbre::PowerChord => {
                let root = if h % 2 == 0 { 2.0 / hf } else { 0.0 };
                let fifth = if h % 3 == 0 { 0.9 * 3.0 / hf } else { 0.0 };
                root + fifth
            }
        }
    }
}

/// Every timbre at every band limit, built once per process (the tables do not depend on the sample rate:
/// each note picks the table whose top harmonic stays below 0.45 of it).
fn wavetables() -> &'static [Table] {
    static TABLES: OnceLock<Vec<Table>> = OnceLock::new();
    TABLES.get_or_init(|| {
        let base: Vec<f64> = (0..TABLE_LEN)
            .map(|i| det::sin_turns(i as f64 / TABLE_LEN as f64))
            .collect();
        let mut tables = vec![[[0.0; 2]; TABLE_LEN]; Timbre::ALL.len() * MIP_HARMONICS.len()];
        let mut cycle = vec![0.0; TABLE_LEN];
        for timbre in Timbre::ALL {
            let power: f64 = (1..=MIP_HARMONICS[0])
                .map(|h| timbre.harmonic(h) * timbre.harmonic(h) / 2.0)
                .sum();
            let norm = 1.0 / power.sqrt();
            for (level, &harmonics) in MIP_HARMONICS.iter().enumerate() {
                for (i, sample) in cycle.iter_mut().enumerate() {
                    let mut sum = 0.0;
                    for h in 1..=harmonics {
                        let amplitude = timbre.harmonic(h);
                        if amplitude != 0.0 {
                            sum += amplitude * base[(i * h) % TABLE_LEN];
                        }
                    }
                    *sample = sum * norm;
                }
                let table = &mut tables[table_index(timbre, level)];
                for (i, entry) in table.iter_mut().enumerate() {
                    let next = cycle[(i + 1) % TABLE_LEN];
                    *entry = [cycle[i], next - cycle[i]];
                }
            }
        }
        tables
    })
}

fn table_index(timbre: Timbre, level: usize) -> usize {
    timbre.index() * MIP_HARMONICS.len() + level
}

/// The table of `timbre` with as many harmonics as fit below 0.45 of the sample rate at `hz`.
fn band_limited_table(timbre: Timbre, hz: f64, sample_rate: f64) -> usize {
    let max_harmonics = (0.45 * sample_rate / hz.max(1e-3)).floor();
    let level = MIP_HARMONICS
        .iter()
        .position(|&h| h as f64 <= max_harmonics)
        .unwrap_or(MIP_HARMONICS.len() - 1);
    table_index(timbre, level)
}

/// Linear interpolation in a table at a 32-bit phase (the top bits index, the rest interpolate).
#[inline(always)]
fn lookup(table: &Table, phase: u32) -> f64 {
    let [value, slope] = table[(phase >> FRAC_BITS) as usize];
    value + slope * (f64::from(phase & FRAC_MASK) * FRAC_SCALE)
}

fn phase_increment(hz: f64, sample_rate: f64) -> u32 {
    (hz.clamp(0.0, 0.49 * sample_rate) / sample_rate * 4_294_967_296.0) as u32
}

/// Cubic soft clipper: unity gain for small signals, flattening to +-2/3 at |x| >= 1. Branch-free and
/// without a division, which matters in per-sample voice loops.
#[inline(always)]
fn soft_clip(x: f64) -> f64 {
    let x = x.clamp(-1.0, 1.0);
    x - x * x * x * (1.0 / 3.0)
}

/// Constant-power pan law: `pan` -1 is hard left, +1 hard right.
fn pan_gains(pan: f64) -> (f64, f64) {
    let pan = pan.clamp(-1.0, 1.0);
    ((0.5 * (1.0 - pan)).sqrt(), (0.5 * (1.0 + pan)).sqrt())
}

// ------------------------------------------------------------------------------------------------------
// Recipe sanitising
// ------------------------------------------------------------------------------------------------------

/// The recipe with every value made usable.
#[derive(Debug, Clone)]
struct Params {
    seed: u64,
    style: Style,
    sample_rate_hz: u32,
    sr: f64,
    channel_count: usize,
    total_frames: u64,
    tempo_bpm: f64,
    target_rms: f64,
    dc_offset: f64,
    boost_gain: f64,
    rumble_rms: Option<f64>,
}

impl Params {
    fn from_recipe(recipe: &TrackRecipe) -> Self {
        let sample_rate_hz = recipe.sample_rate_hz.max(1);
        let finite_or =
            |value: f64, fallback: f64| if value.is_finite() { value } else { fallback };
        let level_db = finite_or(recipe.level_db, recipe.style.typical_level_db());
        Self {
            seed: recipe.seed,
            style: recipe.style,
            sample_rate_hz,
            sr: f64::from(sample_rate_hz),
            channel_count: recipe.channel_count.clamp(1, 2),
            total_frames: recipe.total_frames(),
            tempo_bpm: finite_or(recipe.tempo_bpm, recipe.style.typical_tempo_bpm())
                .clamp(30.0, 300.0),
            target_rms: det::db_to_gain(level_db),
            dc_offset: finite_or(recipe.dc_offset, 0.0),
            boost_gain: det::db_to_gain(finite_or(recipe.peak_boost_db, 0.0)),
            rumble_rms: recipe
                .rumble_db
                .filter(|db| db.is_finite())
                .map(det::db_to_gain),
        }
    }
}

// ------------------------------------------------------------------------------------------------------
// Song: form, harmony and the per-bar plan of events
// ------------------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    Intro,
    Verse,
    Chorus,
    Bridge,
    Outro,
}

impl Section {
    const ALL: [Section; 5] = [
        Section::Intro,
        Section::Verse,
        Section::Chorus,
        Section::Bridge,
        Section::Outro,
    ];

    fn index(self) -> usize {
        self as usize
    }

    /// Fader level of the section in dB, per style (the arrangement's density adds to the difference).
    fn gain_db(self, style: Style) -> f64 {
        let [intro, verse, chorus, bridge, outro] = match style {
            Style::Ballad => [-8.0, -5.0, 0.0, -6.0, -3.0],
            Style::Pop => [-6.0, -3.0, 0.0, -5.0, -1.0],
            Style::Rock => [-4.0, -2.0, 0.0, -4.0, 0.0],
            Style::Ambient => [-6.0, -3.0, 0.0, -4.0, -2.0],
        };
        [intro, verse, chorus, bridge, outro][self.index()]
    }
}

/// Where the sections fall: an intro, then verse-chorus-verse-chorus-bridge-chorus cycles, and an outro
/// over the last bars. Section lengths shrink for short tracks so that every track has its contrasts.
#[derive(Debug, Clone, Copy)]
struct Form {
    intro: u64,
    verse: u64,
    chorus: u64,
    bridge: u64,
    outro: u64,
    total_bars: u64,
}

impl Form {
    fn new(total_bars: u64) -> Self {
        let unit = match total_bars {
            48.. => 4,
            20..=47 => 2,
            _ => 1,
        };
        Self {
            intro: unit,
            verse: 2 * unit,
            chorus: 2 * unit,
            bridge: unit,
            outro: unit,
            total_bars,
        }
    }

    /// The section of `bar`, the bar's index within it, and the section's length in bars.
    fn section_at(&self, bar: u64) -> (Section, u64, u64) {
        let outro_start = self.total_bars.saturating_sub(self.outro);
        if bar >= outro_start {
            return (Section::Outro, bar - outro_start, self.outro);
        }
        if bar < self.intro {
            return (Section::Intro, bar, self.intro);
        }
        let cycle = [
            (Section::Verse, self.verse),
            (Section::Chorus, self.chorus),
            (Section::Verse, self.verse),
            (Section::Chorus, self.chorus),
            (Section::Bridge, self.bridge),
            (Section::Chorus, self.chorus),
        ];
        let cycle_len: u64 = cycle.iter().map(|&(_, len)| len).sum();
        let mut pos = (bar - self.intro) % cycle_len;
        for (section, len) in cycle {
            if pos < len {
                // A section cut short by the outro keeps its full length: fills still land where planned.
                return (section, pos, len);
            }
            pos -= len;
        }
        (Section::Verse, 0, self.verse)
    }

    /// First bar of `section` in the track and how many bars that occurrence lasts, if it occurs.
    fn first_bar_of(&self, section: Section) -> Option<(u64, u64)> {
        let first = (0..self.total_bars).find(|&bar| self.section_at(bar).0 == section)?;
        let bars = (first..self.total_bars)
            .take_while(|&bar| self.section_at(bar).0 == section)
            .count();
        Some((first, bars as u64))
    }
}

const MAJOR_SCALE: [i32; 7] = [0, 2, 4, 5, 7, 9, 11];
const MINOR_SCALE: [i32; 7] = [0, 2, 3, 5, 7, 8, 10];
/// Chord progressions as scale degrees (0 = tonic), one chord per bar or two.
const MAJOR_PROGRESSIONS: [[i32; 4]; 5] = [
    [0, 4, 5, 3],
    [0, 5, 3, 4],
    [5, 3, 0, 4],
    [0, 3, 4, 3],
    [0, 3, 5, 4],
];
const MINOR_PROGRESSIONS: [[i32; 4]; 4] = [[0, 5, 2, 6], [0, 3, 6, 2], [0, 6, 5, 6], [0, 5, 3, 4]];
const POP_KICKS: [&[usize]; 3] = [&[0, 8, 10], &[0, 6, 8], &[0, 4, 8, 12]];
const ROCK_KICKS: [&[usize]; 3] = [&[0, 3, 8, 10], &[0, 2, 8, 10, 11], &[0, 7, 8, 14]];
const POP_STABS: [&[(usize, u16)]; 3] = [
    &[(2, 2), (6, 2), (10, 2), (14, 2)],
    &[(0, 3), (3, 3), (6, 4), (12, 3)],
    &[(0, 6), (6, 4), (12, 4)],
];

/// A note of the plan: MIDI note, length in sixteenth steps, velocity 0..1.
#[derive(Debug, Clone, Copy)]
struct NoteEvent {
    note: u8,
    steps: u16,
    velocity: f64,
}

/// Everything that starts in one bar, step by step. Rebuilt at every bar line from the seed and the bar
/// index alone.
#[derive(Debug, Clone, Copy)]
struct BarPlan {
    /// The bar's triad, voiced around middle C.
    chord: [u8; 3],
    kick: [f64; 16],
    snare: [f64; 16],
    hat: [f64; 16],
    open_hat: [f64; 16],
    crash: [f64; 16],
    bass: [Option<NoteEvent>; 16],
    /// Chord hits (keys stabs or power chords; `note` is the chord root for the guitar).
    comp: [Option<NoteEvent>; 16],
    arp: [Option<NoteEvent>; 16],
    melody: [Option<NoteEvent>; 16],
    /// A pad chord starting on the downbeat, `note` unused.
    pad: Option<NoteEvent>,
    air: bool,
}

impl BarPlan {
    fn empty(chord: [u8; 3]) -> Self {
        Self {
            chord,
            kick: [0.0; 16],
            snare: [0.0; 16],
            hat: [0.0; 16],
            open_hat: [0.0; 16],
            crash: [0.0; 16],
            bass: [None; 16],
            comp: [None; 16],
            arp: [None; 16],
            melody: [None; 16],
            pad: None,
            air: false,
        }
    }
}

/// A velocity with a little human variation.
fn humanise(rng: &mut Rng, velocity: f64) -> f64 {
    velocity * (0.88 + 0.24 * rng.unit())
}

fn note(midi: i32) -> u8 {
    midi.clamp(0, 127) as u8
}

/// The song's fixed choices (key, mode, progression, groove) and its timing.
#[derive(Debug, Clone)]
struct Song {
    style: Style,
    seed: u64,
    step_frames: f64,
    total_frames: u64,
    form: Form,
    key: i32,
    minor: bool,
    progression: [i32; 4],
    bars_per_chord: u64,
    groove: usize,
}

impl Song {
    fn new(params: &Params) -> Self {
        let mut rng = Rng::new(hash_key(params.seed, Lane::Song, 0));
        let style = params.style;
        let key = rng.below(12) as i32;
        let minor = rng.chance(match style {
            Style::Ballad | Style::Ambient => 0.5,
            Style::Pop => 0.35,
            Style::Rock => 0.55,
        });
        let progression = if minor {
            MINOR_PROGRESSIONS[rng.below(MINOR_PROGRESSIONS.len())]
        } else {
            MAJOR_PROGRESSIONS[rng.below(MAJOR_PROGRESSIONS.len())]
        };
        let groove = rng.below(3);
        let step_frames = (params.sr * 60.0 / params.tempo_bpm / 4.0).max(2.0);
        let total_bars = (params.total_frames as f64 / (step_frames * STEPS_PER_BAR as f64)).ceil();
        Self {
            style,
            seed: params.seed,
            step_frames,
            total_frames: params.total_frames,
            form: Form::new(total_bars as u64),
            key,
            minor,
            progression,
            bars_per_chord: if style == Style::Ambient { 2 } else { 1 },
            groove,
        }
    }

    /// First frame of a sixteenth step.
    fn step_start(&self, step: u64) -> u64 {
        (step as f64 * self.step_frames).round() as u64
    }

    fn total_steps(&self) -> u64 {
        self.form.total_bars * STEPS_PER_BAR
    }

    /// Semitones above the key's tonic of a scale degree (any integer: 7 is the octave).
    fn degree_semitones(&self, degree: i32) -> i32 {
        let scale = if self.minor {
            &MINOR_SCALE
        } else {
            &MAJOR_SCALE
        };
        12 * degree.div_euclid(7) + scale[degree.rem_euclid(7) as usize]
    }

    fn chord_degree(&self, bar: u64) -> i32 {
        self.progression[((bar / self.bars_per_chord) % 4) as usize]
    }

    /// Section fader of a step, with the outro fading linearly to silence at the end of the track.
    fn gain_at_step(&self, step: u64) -> f64 {
        let (section, _, _) = self.form.section_at(step / STEPS_PER_BAR);
        let gain = det::db_to_gain(section.gain_db(self.style));
        if section != Section::Outro {
            return gain;
        }
        let outro_start_bar = self.form.total_bars.saturating_sub(self.form.outro);
        let start = self.step_start(outro_start_bar * STEPS_PER_BAR) as f64;
        let end = self.total_frames as f64;
        let here = self.step_start(step) as f64;
        if end <= start {
            return gain;
        }
        gain * ((end - here) / (end - start)).clamp(0.0, 1.0)
    }

    /// Builds the plan of one bar.
    fn plan_bar(&self, bar: u64) -> BarPlan {
        let (section, bar_in, len) = self.form.section_at(bar);
        let mut rng = Rng::new(hash_key(self.seed, Lane::Bar, bar));
        let degree = self.chord_degree(bar);
        let chord = [0, 2, 4].map(|third| {
            let mut midi = 60 + self.key + self.degree_semitones(degree + third);
            while midi >= 67 {
                midi -= 12;
            }
            while midi < 55 {
                midi += 12;
            }
            note(midi)
        });
        let bass_root = note(36 + (self.key + self.degree_semitones(degree)).rem_euclid(12));
        let mut plan = BarPlan::empty(chord);
        let bar_shape = BarShape {
            section,
            first: bar_in == 0,
            last: bar_in + 1 == len,
            chord_start: bar_in % self.bars_per_chord == 0,
            bass_root,
        };
        match self.style {
            Style::Pop => self.plan_pop(&mut plan, &bar_shape, &mut rng),
            Style::Rock => self.plan_rock(&mut plan, &bar_shape, &mut rng),
            Style::Ballad => self.plan_ballad(&mut plan, &bar_shape, &mut rng),
            Style::Ambient => self.plan_ambient(&mut plan, &bar_shape, &mut rng),
        }
        let melody_density = match (self.style, section) {
            (Style::Pop, Section::Verse) => 0.4,
            (Style::Pop, Section::Chorus) => 0.65,
            (Style::Pop, Section::Outro) => 0.5,
            (Style::Rock, Section::Chorus) => 0.55,
            (Style::Rock, Section::Bridge) => 0.45,
            (Style::Ballad, Section::Verse | Section::Bridge) => 0.35,
            (Style::Ballad, Section::Chorus) => 0.5,
            (Style::Ambient, Section::Chorus) => 0.3,
            _ => 0.0,
        };
        if melody_density > 0.0 {
            self.plan_melody(&mut plan, section, bar_in, degree, melody_density);
        }
        plan
    }

    fn plan_pop(&self, plan: &mut BarPlan, shape: &BarShape, rng: &mut Rng) {
        let root = shape.bass_root;
        match shape.section {
            Section::Intro => {
                hats(plan, 2, 0.45, rng);
                if shape.chord_start {
                    plan.pad = Some(pad_event(self.bars_per_chord, 0.8));
                }
            }
            Section::Verse | Section::Chorus | Section::Outro => {
                let big = shape.section != Section::Verse;
                for &pos in POP_KICKS[self.groove] {
                    plan.kick[pos] = humanise(rng, if pos % 4 == 0 { 1.0 } else { 0.8 });
                }
                plan.snare[4] = humanise(rng, 0.9);
                plan.snare[12] = humanise(rng, 0.95);
                hats(plan, if big { 1 } else { 2 }, 0.7, rng);
                if big {
                    plan.hat[14] = 0.0;
                    plan.open_hat[14] = humanise(rng, 0.6);
                    if shape.first {
                        plan.crash[0] = humanise(rng, 0.9);
                    }
                    if shape.chord_start {
                        plan.pad = Some(pad_event(self.bars_per_chord, 0.7));
                    }
                }
                bass_eighths(plan, root, rng);
                for &(pos, steps) in POP_STABS[self.groove] {
                    plan.comp[pos] = Some(NoteEvent {
                        note: 0,
                        steps,
                        velocity: humanise(rng, 0.8),
                    });
                }
                if shape.last && shape.section != Section::Outro && rng.chance(0.7) {
                    fill(plan, rng);
                }
            }
            Section::Bridge => {
                hats(plan, 4, 0.5, rng);
                for pos in [0, 8] {
                    plan.bass[pos] = Some(NoteEvent {
                        note: root,
                        steps: 8,
                        velocity: humanise(rng, 0.8),
                    });
                }
                arpeggio(plan, 2, 12, 0.6, rng);
                if shape.chord_start {
                    plan.pad = Some(pad_event(self.bars_per_chord, 0.9));
                }
            }
        }
    }

    fn plan_rock(&self, plan: &mut BarPlan, shape: &BarShape, rng: &mut Rng) {
        let root = shape.bass_root;
        let guitar_root = note(i32::from(root) + 12);
        let strum = |plan: &mut BarPlan, rng: &mut Rng, pos: usize, steps: u16, velocity: f64| {
            plan.comp[pos] = Some(NoteEvent {
                note: guitar_root,
                steps,
                velocity: humanise(rng, velocity),
            });
        };
        match shape.section {
            Section::Intro => {
                strum(plan, rng, 0, 16, 0.8);
                hats(plan, 2, 0.5, rng);
                plan.kick[0] = humanise(rng, 0.8);
            }
            Section::Verse | Section::Chorus | Section::Outro => {
                let big = shape.section != Section::Verse;
                for &pos in ROCK_KICKS[self.groove] {
                    plan.kick[pos] = humanise(rng, if pos % 4 == 0 { 1.0 } else { 0.85 });
                }
                plan.snare[4] = humanise(rng, 1.0);
                plan.snare[12] = humanise(rng, 1.0);
                if big {
                    for pos in (0..16).step_by(2) {
                        if pos % 4 == 0 {
                            plan.open_hat[pos] = humanise(rng, 0.7);
                        } else {
                            plan.hat[pos] = humanise(rng, 0.7);
                        }
                    }
                    if shape.first || rng.chance(0.25) {
                        plan.crash[0] = humanise(rng, 1.0);
                    }
                    for (pos, steps) in [(0, 3), (3, 3), (6, 2), (8, 3), (11, 3), (14, 2)] {
                        strum(plan, rng, pos, steps, 0.95);
                    }
                } else {
                    hats(plan, 2, 0.75, rng);
                    for pos in (0..16).step_by(2) {
                        strum(plan, rng, pos, 1, 0.75);
                    }
                }
                bass_eighths(plan, root, rng);
                if shape.last && shape.section != Section::Outro && rng.chance(0.8) {
                    fill(plan, rng);
                }
            }
            Section::Bridge => {
                plan.kick[0] = humanise(rng, 1.0);
                if rng.chance(0.5) {
                    plan.kick[10] = humanise(rng, 0.8);
                }
                plan.snare[8] = humanise(rng, 1.0);
                hats(plan, 4, 0.7, rng);
                plan.bass[0] = Some(NoteEvent {
                    note: root,
                    steps: 16,
                    velocity: humanise(rng, 0.9),
                });
                strum(plan, rng, 0, 8, 0.85);
                strum(plan, rng, 8, 8, 0.8);
            }
        }
    }

    fn plan_ballad(&self, plan: &mut BarPlan, shape: &BarShape, rng: &mut Rng) {
        let root = shape.bass_root;
        match shape.section {
            Section::Intro => arpeggio(plan, 4, 0, 0.6, rng),
            Section::Verse => {
                arpeggio(plan, 2, 0, 0.6, rng);
                plan.bass[0] = Some(NoteEvent {
                    note: root,
                    steps: 16,
                    velocity: humanise(rng, 0.8),
                });
                plan.kick[0] = humanise(rng, 0.8);
                if rng.chance(0.5) {
                    plan.kick[10] = humanise(rng, 0.6);
                }
                plan.snare[8] = humanise(rng, 0.45);
            }
            Section::Chorus | Section::Outro => {
                arpeggio(plan, 2, 0, 0.75, rng);
                let fifth = note(i32::from(root) + 7);
                plan.bass[0] = Some(NoteEvent {
                    note: root,
                    steps: 8,
                    velocity: humanise(rng, 0.9),
                });
                plan.bass[8] = Some(NoteEvent {
                    note: fifth,
                    steps: 8,
                    velocity: humanise(rng, 0.8),
                });
                plan.kick[0] = humanise(rng, 0.9);
                plan.kick[10] = humanise(rng, 0.7);
                plan.snare[4] = humanise(rng, 0.7);
                plan.snare[12] = humanise(rng, 0.75);
                hats(plan, 2, 0.5, rng);
                if shape.first && shape.section == Section::Chorus {
                    plan.crash[0] = humanise(rng, 0.6);
                }
                if shape.chord_start {
                    plan.pad = Some(pad_event(self.bars_per_chord, 0.8));
                }
            }
            Section::Bridge => {
                arpeggio(plan, 4, 12, 0.55, rng);
                if shape.chord_start {
                    plan.pad = Some(pad_event(self.bars_per_chord, 0.9));
                }
            }
        }
    }

    fn plan_ambient(&self, plan: &mut BarPlan, shape: &BarShape, rng: &mut Rng) {
        plan.air = true;
        if shape.chord_start {
            plan.pad = Some(pad_event(self.bars_per_chord, 0.9));
        }
        let drone = matches!(
            shape.section,
            Section::Verse | Section::Chorus | Section::Outro
        );
        if drone && shape.chord_start {
            plan.bass[0] = Some(NoteEvent {
                note: shape.bass_root,
                steps: (self.bars_per_chord * STEPS_PER_BAR) as u16,
                velocity: 0.9,
            });
        }
        let bells = match shape.section {
            Section::Verse => 0.25,
            Section::Chorus => 0.4,
            Section::Bridge => 0.15,
            _ => 0.0,
        };
        for pos in (0..16).step_by(2) {
            if rng.chance(bells) {
                let tone = plan.chord[rng.below(3)];
                let octave = if rng.chance(0.5) { 12 } else { 24 };
                plan.arp[pos] = Some(NoteEvent {
                    note: note(i32::from(tone) + octave),
                    steps: 4,
                    velocity: humanise(rng, 0.7),
                });
            }
        }
    }

    /// A melody bar: onsets on the eighth (or quarter) grid, a walk on the scale that lands on chord tones
    /// at the half bar. Seeded by the section, the bar's place in it and the chord, so phrases repeat.
    fn plan_melody(
        &self,
        plan: &mut BarPlan,
        section: Section,
        bar_in: u64,
        degree: i32,
        density: f64,
    ) {
        let motif = section.index() as u64 * 1000 + (bar_in % 4) * 10 + degree as u64;
        let mut rng = Rng::new(hash_key(self.seed, Lane::Melody, motif));
        let grid = if self.style == Style::Ambient { 4 } else { 2 };
        let mut onsets = [false; 16];
        onsets[0] = rng.chance(0.85);
        for pos in (grid..16).step_by(grid) {
            onsets[pos] = rng.chance(density);
        }
        let mut current = degree + 7 + [0, 2, 4][rng.below(3)];
        for pos in 0..16 {
            if !onsets[pos] {
                continue;
            }
            if pos % 8 == 0 {
                // Land on the chord tone nearest the current degree.
                let tones = [degree + 7, degree + 9, degree + 11, degree + 14];
                current = tones
                    .into_iter()
                    .min_by_key(|t| (t - current).abs())
                    .unwrap_or(degree + 7);
            } else {
                current += [-2, -1, -1, 0, 1, 1, 2][rng.below(7)];
            }
            current = current.clamp(2, 13);
            let next = (pos + 1..16).find(|&p| onsets[p]).unwrap_or(16);
            let mut steps = (next - pos) as u16;
            if steps > 2 && rng.chance(0.3) {
                steps -= 1;
            }
            plan.melody[pos] = Some(NoteEvent {
                note: note(60 + self.key + self.degree_semitones(current)),
                steps,
                velocity: humanise(&mut rng, if pos % 4 == 0 { 0.85 } else { 0.7 }),
            });
        }
    }
}

/// What a bar is, for the style planners.
struct BarShape {
    section: Section,
    first: bool,
    last: bool,
    chord_start: bool,
    bass_root: u8,
}

fn pad_event(bars: u64, velocity: f64) -> NoteEvent {
    NoteEvent {
        note: 0,
        steps: (bars * STEPS_PER_BAR) as u16,
        velocity,
    }
}

/// Closed hats every `every` steps, accented on the beat.
fn hats(plan: &mut BarPlan, every: usize, velocity: f64, rng: &mut Rng) {
    for pos in (0..16).step_by(every) {
        let accent = if pos % 4 == 0 { 1.0 } else { 0.7 };
        plan.hat[pos] = humanise(rng, velocity * accent);
    }
}

/// Eighth-note bass on the root, jumping an octave now and then.
fn bass_eighths(plan: &mut BarPlan, root: u8, rng: &mut Rng) {
    for pos in (0..16).step_by(2) {
        let up = (pos == 6 || pos == 14) && rng.chance(0.35);
        plan.bass[pos] = Some(NoteEvent {
            note: if up { root.saturating_add(12) } else { root },
            steps: 2,
            velocity: humanise(rng, if pos % 4 == 0 { 0.95 } else { 0.8 }),
        });
    }
}

/// A snare fill over the last beat, hats out of the way.
fn fill(plan: &mut BarPlan, rng: &mut Rng) {
    for (k, pos) in (12..16).enumerate() {
        plan.snare[pos] = humanise(rng, 0.55 + 0.13 * k as f64);
        plan.hat[pos] = 0.0;
        plan.open_hat[pos] = 0.0;
    }
}

/// Up-and-down arpeggio over the chord every `every` steps, `transpose` semitones up.
fn arpeggio(plan: &mut BarPlan, every: usize, transpose: i32, velocity: f64, rng: &mut Rng) {
    const SHAPE: [(usize, i32); 8] = [
        (0, 0),
        (1, 0),
        (2, 0),
        (0, 12),
        (1, 12),
        (2, 0),
        (1, 0),
        (2, -12),
    ];
    for (k, pos) in (0..16).step_by(every).enumerate() {
        let (tone, octave) = SHAPE[k % SHAPE.len()];
        let accent = if pos % 8 == 0 { 1.0 } else { 0.8 };
        plan.arp[pos] = Some(NoteEvent {
            note: note(i32::from(plan.chord[tone]) + octave + transpose),
            steps: (every + every / 2) as u16,
            velocity: humanise(rng, velocity * accent),
        });
    }
}

// ------------------------------------------------------------------------------------------------------
// Voices
// ------------------------------------------------------------------------------------------------------

/// A wavetable instrument's sound, in musical units.
#[derive(Debug, Clone, Copy)]
struct PatchSpec {
    timbre: Timbre,
    /// Second oscillator: timbre, frequency ratio to the first, level.
    osc2: Option<(Timbre, f64, f64)>,
    attack_s: f64,
    decay_s: f64,
    sustain: f64,
    release_s: f64,
    /// Two-pole lowpass: base cutoff, extra cutoff at note-on, time constant of that extra's decay.
    lowpass: Option<(f64, f64, f64)>,
    /// Soft-clipping drive (0 = clean).
    drive: f64,
    level: f64,
    send: f64,
}

/// A [`PatchSpec`] turned into per-sample coefficients for one sample rate.
#[derive(Debug, Clone, Copy)]
struct Patch {
    timbre: Timbre,
    osc2_timbre: Timbre,
    osc2_ratio: f64,
    osc2_level: f64,
    dual: bool,
    attack_inc: f64,
    decay_coef: f64,
    sustain: f64,
    release_coef: f64,
    filter: bool,
    lp_base: f64,
    lp_env: f64,
    lp_env_decay: f64,
    drive: f64,
    level: f64,
    send: f64,
}

impl Patch {
    fn new(spec: &PatchSpec, sr: f64) -> Self {
        let (osc2_timbre, osc2_ratio, osc2_level) = spec.osc2.unwrap_or((Timbre::Sine, 1.0, 0.0));
        let (cutoff, env_hz, env_s) = spec.lowpass.unwrap_or((sr, 0.0, 1.0));
        let lp_base = det::lowpass_coef(cutoff, sr);
        Self {
            timbre: spec.timbre,
            osc2_timbre,
            osc2_ratio,
            osc2_level,
            dual: spec.osc2.is_some(),
            attack_inc: 1.0 / (spec.attack_s.max(0.001) * sr),
            decay_coef: det::decay_coef(spec.decay_s, sr),
            sustain: spec.sustain,
            release_coef: det::decay_coef(spec.release_s.max(0.002), sr),
            filter: spec.lowpass.is_some(),
            lp_base,
            lp_env: det::lowpass_coef(cutoff + env_hz, sr) - lp_base,
            lp_env_decay: det::decay_coef(env_s, sr),
            drive: spec.drive,
            level: spec.level,
            send: spec.send,
        }
    }
}

/// Where a note's envelope is. The envelope is `env_base + env_q`, and outside the attack only `env_q`
/// moves, by one multiplication per sample (the shortest loop-carried chain, which is what bounds the
/// speed of a voice):
/// - attack: base 0, `env_q` rises linearly to 1;
/// - decay: base `sustain`, `env_q` decays from `1 - sustain` towards 0;
/// - release: base `-RELEASE_FLOOR`, `env_q` decays from `env + RELEASE_FLOOR`, so the envelope reaches
///   exactly zero after at most `ln(1 + 1 / RELEASE_FLOOR)` time constants and the voice is freed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum EnvStage {
    #[default]
    Attack,
    Decay,
    Release,
}

/// One sounding note of a wavetable instrument.
#[derive(Debug, Clone, Copy, Default)]
struct ToneVoice {
    active: bool,
    table1: usize,
    table2: usize,
    phase1: u32,
    inc1: u32,
    phase2: u32,
    inc2: u32,
    stage: EnvStage,
    env_base: f64,
    env_q: f64,
    env_coef: f64,
    /// Frames until the release starts.
    gate: u64,
    lp1: f64,
    lp2: f64,
    filter_env: f64,
    gain_l: f64,
    gain_r: f64,
    gain_send: f64,
}

impl ToneVoice {
    fn env(&self) -> f64 {
        self.env_base + self.env_q
    }
}

/// A polyphonic wavetable instrument: a patch and a fixed set of voices.
#[derive(Debug, Clone)]
struct TonePool {
    patch: Patch,
    voices: Vec<ToneVoice>,
}

/// Calls `$f::<DUAL, FILTER, DRIVE>($args)` with the flags of patch `$p`.
macro_rules! dispatch_patch {
    ($p:expr, $f:ident($($arg:expr),*)) => {
        match ($p.dual, $p.filter, $p.drive > 0.0) {
            (false, false, false) => $f::<false, false, false>($($arg),*),
            (false, false, true) => $f::<false, false, true>($($arg),*),
            (false, true, false) => $f::<false, true, false>($($arg),*),
            (false, true, true) => $f::<false, true, true>($($arg),*),
            (true, false, false) => $f::<true, false, false>($($arg),*),
            (true, false, true) => $f::<true, false, true>($($arg),*),
            (true, true, false) => $f::<true, true, false>($($arg),*),
            (true, true, true) => $f::<true, true, true>($($arg),*),
        }
    };
}

impl TonePool {
    fn new(spec: &PatchSpec, sr: f64, voices: usize) -> Self {
        Self {
            patch: Patch::new(spec, sr),
            voices: vec![ToneVoice::default(); voices],
        }
    }

    fn reset(&mut self) {
        self.voices.fill(ToneVoice::default());
    }

    /// Starts a note on an idle voice (or, if none is idle, on the quietest releasing one).
    fn note_on(&mut self, sr: f64, hz: f64, gate: u64, velocity: f64, pan: f64) {
        let mut chosen = 0;
        let mut quietest = f64::INFINITY;
        for (i, voice) in self.voices.iter().enumerate() {
            if !voice.active {
                chosen = i;
                break;
            }
            let score = voice.env() + if voice.gate > 0 { 10.0 } else { 0.0 };
            if score < quietest {
                quietest = score;
                chosen = i;
            }
        }
        let p = &self.patch;
        let (pan_l, pan_r) = pan_gains(pan);
        let amplitude = p.level * velocity;
        let hz2 = hz * p.osc2_ratio;
        self.voices[chosen] = ToneVoice {
            active: true,
            table1: band_limited_table(p.timbre, hz, sr),
            table2: band_limited_table(p.osc2_timbre, hz2, sr),
            phase1: 0,
            inc1: phase_increment(hz, sr),
            phase2: 0,
            inc2: phase_increment(hz2, sr),
            stage: EnvStage::Attack,
            env_base: 0.0,
            env_q: 0.0,
            env_coef: 1.0,
            gate,
            lp1: 0.0,
            lp2: 0.0,
            filter_env: 1.0,
            gain_l: amplitude * pan_l,
            gain_r: amplitude * pan_r,
            gain_send: amplitude * p.send,
        };
    }

    /// Adds every sounding voice into the buffers, one after the other.
    fn render(&mut self, tables: &[Table], l: &mut [f64], r: &mut [f64], send: &mut [f64]) {
        let p = &self.patch;
        for voice in self.voices.iter_mut().filter(|v| v.active) {
            dispatch_patch!(p, render_tone(voice, p, tables, l, r, send));
        }
    }
}

/// Adds one voice into the buffers until it ends or the buffers do.
///
/// Per sample the voice counts its gate down (the release starts on the first sample after the gate
/// has run out), advances its envelope stage, and computes oscillators, filter and drive. The frames are
/// processed in runs that share a stage, so the inner loops carry no per-sample stage or gate tests.
fn render_tone<const DUAL: bool, const FILTER: bool, const DRIVE: bool>(
    voice: &mut ToneVoice,
    p: &Patch,
    tables: &[Table],
    l: &mut [f64],
    r: &mut [f64],
    send: &mut [f64],
) {
    let (t1, t2) = (&tables[voice.table1], &tables[voice.table2]);
    let mut v = *voice;
    let frames = l.len().min(r.len()).min(send.len());
    let mut i = 0;
    while i < frames {
        if v.gate == 0 && v.stage != EnvStage::Release {
            v.stage = EnvStage::Release;
            v.env_q = v.env() + RELEASE_FLOOR;
            v.env_base = -RELEASE_FLOOR;
            v.env_coef = p.release_coef;
        }
        let run_end = if v.stage == EnvStage::Release {
            frames
        } else {
            frames.min(i + usize::try_from(v.gate).unwrap_or(usize::MAX))
        };
        let run = i..run_end;
        let (out_l, out_r, out_send) = (&mut l[run.clone()], &mut r[run.clone()], &mut send[run]);
        let done = match v.stage {
            EnvStage::Attack => {
                tone_run::<DUAL, FILTER, DRIVE, 0>(&mut v, p, t1, t2, out_l, out_r, out_send)
            }
            EnvStage::Decay => {
                tone_run::<DUAL, FILTER, DRIVE, 1>(&mut v, p, t1, t2, out_l, out_r, out_send)
            }
            EnvStage::Release => {
                tone_run::<DUAL, FILTER, DRIVE, 2>(&mut v, p, t1, t2, out_l, out_r, out_send)
            }
        };
        if v.stage != EnvStage::Release {
            v.gate -= done as u64;
        } else if !v.active {
            break;
        }
        i += done;
    }
    *voice = v;
}

/// Renders a run of frames in one envelope stage (`STAGE` 0 attack, 1 decay, 2 release); returns the
/// frames done. An attack stops where it reaches full level (the caller continues with the decay), a
/// release where the envelope reaches zero (the voice is then idle).
#[inline(always)]
fn tone_run<const DUAL: bool, const FILTER: bool, const DRIVE: bool, const STAGE: u8>(
    v: &mut ToneVoice,
    p: &Patch,
    t1: &Table,
    t2: &Table,
    l: &mut [f64],
    r: &mut [f64],
    send: &mut [f64],
) -> usize {
    let (mut phase1, mut phase2) = (v.phase1, v.phase2);
    let (mut q, base, coef) = (v.env_q, v.env_base, v.env_coef);
    let (mut lp1, mut lp2, mut filter_env) = (v.lp1, v.lp2, v.filter_env);
    let mut done = 0;
    for ((out_l, out_r), out_send) in l.iter_mut().zip(r.iter_mut()).zip(send.iter_mut()) {
        done += 1;
        let mut x = lookup(t1, phase1);
        phase1 = phase1.wrapping_add(v.inc1);
        if DUAL {
            x += p.osc2_level * lookup(t2, phase2);
            phase2 = phase2.wrapping_add(v.inc2);
        }
        let mut switch_to_decay = false;
        let mut env = if STAGE == 0 {
            q += p.attack_inc;
            if q >= 1.0 {
                q = 1.0 - p.sustain;
                switch_to_decay = true;
                p.sustain + q
            } else {
                q
            }
        } else {
            q *= coef;
            base + q
        };
        let ended = STAGE == 2 && env <= 0.0;
        if ended {
            env = 0.0;
        }
        if FILTER {
            // y = y (1 - a) + a x: the loop-carried chain is one multiply and one add.
            let a = p.lp_base + p.lp_env * filter_env;
            let keep = 1.0 - a;
            filter_env *= p.lp_env_decay;
            lp1 = lp1 * keep + a * x;
            lp2 = lp2 * keep + a * lp1;
            x = lp2;
        }
        if DRIVE {
            x = soft_clip(x * p.drive);
        }
        let y = x * env;
        *out_l += y * v.gain_l;
        *out_r += y * v.gain_r;
        *out_send += y * v.gain_send;
        if switch_to_decay {
            v.stage = EnvStage::Decay;
            v.env_base = p.sustain;
            v.env_coef = p.decay_coef;
            break;
        }
        if ended {
            v.active = false;
            break;
        }
    }
    (v.phase1, v.phase2) = (phase1, phase2);
    v.env_q = q;
    (v.lp1, v.lp2, v.filter_env) = (lp1, lp2, filter_env);
    done
}

/// Drum sounds of a style.
#[derive(Debug, Clone, Copy)]
struct DrumKit {
    kick_start_hz: f64,
    kick_end_hz: f64,
    kick_sweep_s: f64,
    kick_decay_s: f64,
    kick_level: f64,
    snare_tone_hz: f64,
    snare_tone_s: f64,
    snare_noise_s: f64,
    snare_level: f64,
    hat_level: f64,
    hat_closed_s: f64,
    hat_open_s: f64,
    crash_level: f64,
    /// Saturation of the kick-and-snare bus before any peak boost (0 = clean): [`soft_clip`] scaled to
    /// unity gain for small signals, which keeps the bus under `2 / (3 drive)` and lowers the kit's
    /// crest factor.
    drive: f64,
}

impl DrumKit {
    fn of(style: Style) -> Self {
        match style {
            Style::Rock => Self {
                kick_start_hz: 170.0,
                kick_end_hz: 50.0,
                kick_sweep_s: 0.03,
                kick_decay_s: 0.18,
                kick_level: 0.7,
                snare_tone_hz: 200.0,
                snare_tone_s: 0.05,
                snare_noise_s: 0.16,
                snare_level: 0.8,
                hat_level: 0.14,
                hat_closed_s: 0.04,
                hat_open_s: 0.3,
                crash_level: 0.12,
                drive: 1.6,
            },
            Style::Pop => Self {
                kick_start_hz: 150.0,
                kick_end_hz: 52.0,
                kick_sweep_s: 0.035,
                kick_decay_s: 0.22,
                kick_level: 0.6,
                snare_tone_hz: 190.0,
                snare_tone_s: 0.05,
                snare_noise_s: 0.13,
                snare_level: 0.65,
                hat_level: 0.16,
                hat_closed_s: 0.035,
                hat_open_s: 0.3,
                crash_level: 0.15,
                drive: 0.6,
            },
            Style::Ballad | Style::Ambient => Self {
                kick_start_hz: 110.0,
                kick_end_hz: 48.0,
                kick_sweep_s: 0.05,
                kick_decay_s: 0.25,
                kick_level: 0.45,
                snare_tone_hz: 180.0,
                snare_tone_s: 0.04,
                snare_noise_s: 0.1,
                snare_level: 0.4,
                hat_level: 0.09,
                hat_closed_s: 0.03,
                hat_open_s: 0.25,
                crash_level: 0.09,
                drive: 0.0,
            },
        }
    }
}

/// A drum's amplitude: exponential at first, then reaching exactly zero after
/// `ln(1 + 1 / RELEASE_FLOOR)` (3.5) time constants, so a hit frees its voice instead of lingering.
/// Kept as `shifted - offset` with only `shifted` decaying: one multiplication per sample.
#[derive(Debug, Clone, Copy, Default)]
struct Decay {
    shifted: f64,
    offset: f64,
    coef: f64,
}

impl Decay {
    fn start(value: f64, coef: f64) -> Self {
        let offset = value * RELEASE_FLOOR;
        Self {
            shifted: value + offset,
            offset,
            coef,
        }
    }

    /// The current value; advances by one sample.
    #[inline(always)]
    fn tick(&mut self) -> f64 {
        let value = (self.shifted - self.offset).max(0.0);
        self.shifted *= self.coef;
        value
    }

    fn done(&self) -> bool {
        self.shifted <= self.offset
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct KickVoice {
    active: bool,
    phase: u32,
    sweep: f64,
    amp: Decay,
}

/// Pitch-swept sine with exponential decay; two voices so a hit never cuts the previous one's tail.
/// Plays into the mono [`DrumBus`].
#[derive(Debug, Clone)]
struct Kick {
    voices: [KickVoice; 2],
    next: usize,
    inc_end: f64,
    inc_sweep: f64,
    sweep_coef: f64,
    amp_coef: f64,
    level: f64,
    send: f64,
}

impl Kick {
    fn new(kit: &DrumKit, sr: f64) -> Self {
        let inc = |hz: f64| hz / sr * 4_294_967_296.0;
        Self {
            voices: [KickVoice::default(); 2],
            next: 0,
            inc_end: inc(kit.kick_end_hz),
            inc_sweep: inc(kit.kick_start_hz - kit.kick_end_hz),
            sweep_coef: det::decay_coef(kit.kick_sweep_s, sr),
            amp_coef: det::decay_coef(kit.kick_decay_s, sr),
            level: kit.kick_level,
            send: 0.05,
        }
    }

    fn trigger(&mut self, velocity: f64) {
        self.voices[self.next] = KickVoice {
            active: true,
            phase: 0,
            sweep: 1.0,
            amp: Decay::start(velocity * self.level, self.amp_coef),
        };
        self.next ^= 1;
    }

    fn render(&mut self, sine: &Table, bus: &mut [f64], send: &mut [f64]) {
        for v in self.voices.iter_mut().filter(|v| v.active) {
            for (out, out_send) in bus.iter_mut().zip(send.iter_mut()) {
                let y = lookup(sine, v.phase) * v.amp.tick();
                let inc = self.inc_end + self.inc_sweep * v.sweep;
                v.phase = v.phase.wrapping_add(inc as u32);
                v.sweep *= self.sweep_coef;
                *out += y;
                *out_send += y * self.send;
                if v.amp.done() {
                    v.active = false;
                    break;
                }
            }
        }
    }
}

/// Boosted drum transients fall back to normal level with this time constant.
const BOOST_DECAY_S: f64 = 0.012;

/// Kick and snare summed in mono, saturated as a bus (rock drums are loud but not spiky), then given the
/// recipe's peak boost: every kick or snare hit restarts an extra gain of `peak_boost_db` that decays
/// within about 20 ms, so the hits' first cycles poke out as over-loud transients.
#[derive(Debug, Clone)]
struct DrumBus {
    boost: f64,
    boost_start: f64,
    boost_coef: f64,
    drive: f64,
    inv_drive: f64,
}

impl DrumBus {
    fn new(kit: &DrumKit, sr: f64, boost_gain: f64) -> Self {
        Self {
            boost: 0.0,
            boost_start: boost_gain - 1.0,
            boost_coef: det::decay_coef(BOOST_DECAY_S, sr),
            drive: kit.drive,
            inv_drive: if kit.drive > 0.0 {
                1.0 / kit.drive
            } else {
                0.0
            },
        }
    }

    fn hit(&mut self) {
        self.boost = self.boost_start;
    }

    /// Adds the bus into both channels.
    fn mix(&mut self, bus: &[f64], l: &mut [f64], r: &mut [f64]) {
        for ((&x, out_l), out_r) in bus.iter().zip(l.iter_mut()).zip(r.iter_mut()) {
            let mut y = x;
            if self.drive > 0.0 {
                y = soft_clip(x * self.drive) * self.inv_drive;
            }
            y *= 1.0 + self.boost;
            self.boost *= self.boost_coef;
            *out_l += y;
            *out_r += y;
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct SnareVoice {
    active: bool,
    noise: u64,
    phase: u32,
    tone: Decay,
    body: Decay,
    hp_x: f64,
    hp_y: f64,
    lp: f64,
}

/// A band-passed noise burst over a short tone; two voices, each with its own noise stream (a shared
/// stream would make the output depend on how frames are chunked). Plays into the mono [`DrumBus`].
#[derive(Debug, Clone)]
struct Snare {
    voices: [SnareVoice; 2],
    next: usize,
    tone_inc: u32,
    tone_coef: f64,
    noise_coef: f64,
    hp_a: f64,
    lp_a: f64,
    level: f64,
    send: f64,
}

impl Snare {
    fn new(kit: &DrumKit, sr: f64, seed: u64) -> Self {
        let mut voices = [SnareVoice::default(); 2];
        for (i, v) in voices.iter_mut().enumerate() {
            v.noise = noise_state(seed, 10 + i as u64);
        }
        Self {
            voices,
            next: 0,
            tone_inc: phase_increment(kit.snare_tone_hz, sr),
            tone_coef: det::decay_coef(kit.snare_tone_s, sr),
            noise_coef: det::decay_coef(kit.snare_noise_s, sr),
            hp_a: det::highpass_coef(1200.0, sr),
            lp_a: det::lowpass_coef(9000.0, sr),
            level: kit.snare_level,
            send: 0.35,
        }
    }

    fn trigger(&mut self, velocity: f64) {
        let v = &mut self.voices[self.next];
        *v = SnareVoice {
            active: true,
            noise: v.noise,
            phase: 0,
            tone: Decay::start(0.45 * velocity * self.level, self.tone_coef),
            body: Decay::start(velocity * self.level, self.noise_coef),
            ..SnareVoice::default()
        };
        self.next ^= 1;
    }

    fn render(&mut self, sine: &Table, bus: &mut [f64], send: &mut [f64]) {
        for v in self.voices.iter_mut().filter(|v| v.active) {
            for (out, out_send) in bus.iter_mut().zip(send.iter_mut()) {
                let x = white(&mut v.noise);
                v.hp_y = self.hp_a * (v.hp_y + x - v.hp_x);
                v.hp_x = x;
                v.lp += self.lp_a * (v.hp_y - v.lp);
                let y = lookup(sine, v.phase) * v.tone.tick() + 1.6 * v.lp * v.body.tick();
                v.phase = v.phase.wrapping_add(self.tone_inc);
                *out += y;
                *out_send += y * self.send;
                if v.body.done() {
                    v.active = false;
                    break;
                }
            }
        }
    }
}

/// High-passed noise ticks (closed) or hisses (open), panned right of centre. One voice: a new hit
/// chokes the previous one, as on a real hi-hat.
#[derive(Debug, Clone)]
struct HiHat {
    active: bool,
    noise: u64,
    amp: Decay,
    hp: [f64; 4],
    hp_a: f64,
    closed_coef: f64,
    open_coef: f64,
    level: f64,
    gain_l: f64,
    gain_r: f64,
    send: f64,
}

impl HiHat {
    fn new(kit: &DrumKit, sr: f64, seed: u64) -> Self {
        let (gain_l, gain_r) = pan_gains(0.5);
        Self {
            active: false,
            noise: noise_state(seed, 20),
            amp: Decay::default(),
            hp: [0.0; 4],
            hp_a: det::highpass_coef(7000.0, sr),
            closed_coef: det::decay_coef(kit.hat_closed_s, sr),
            open_coef: det::decay_coef(kit.hat_open_s, sr),
            level: kit.hat_level,
            gain_l,
            gain_r,
            send: 0.2,
        }
    }

    fn trigger(&mut self, velocity: f64, open: bool) {
        self.active = true;
        let coef = if open {
            self.open_coef
        } else {
            self.closed_coef
        };
        self.amp = Decay::start(velocity * self.level, coef);
    }

    fn render(&mut self, l: &mut [f64], r: &mut [f64], send: &mut [f64]) {
        if !self.active {
            return;
        }
        let [mut x1, mut y1, mut x2, mut y2] = self.hp;
        for ((out_l, out_r), out_send) in l.iter_mut().zip(r.iter_mut()).zip(send.iter_mut()) {
            let x = white(&mut self.noise);
            y1 = self.hp_a * (y1 + x - x1);
            x1 = x;
            y2 = self.hp_a * (y2 + y1 - x2);
            x2 = y1;
            let y = y2 * self.amp.tick();
            *out_l += y * self.gain_l;
            *out_r += y * self.gain_r;
            *out_send += y * self.send;
            if self.amp.done() {
                self.active = false;
                break;
            }
        }
        self.hp = [x1, y1, x2, y2];
    }
}

/// A long high-passed noise wash, a different noise in each channel (wide).
#[derive(Debug, Clone)]
struct Crash {
    active: bool,
    noise: [u64; 2],
    hp: [f64; 4],
    amp: Decay,
    coef: f64,
    hp_a: f64,
    level: f64,
}

impl Crash {
    fn new(kit: &DrumKit, sr: f64, seed: u64) -> Self {
        Self {
            active: false,
            noise: [noise_state(seed, 30), noise_state(seed, 31)],
            hp: [0.0; 4],
            amp: Decay::default(),
            coef: det::decay_coef(1.0, sr),
            hp_a: det::highpass_coef(4500.0, sr),
            level: kit.crash_level,
        }
    }

    fn trigger(&mut self, velocity: f64) {
        self.active = true;
        self.amp = Decay::start(velocity * self.level, self.coef);
    }

    fn render(&mut self, l: &mut [f64], r: &mut [f64], send: &mut [f64]) {
        if !self.active {
            return;
        }
        let [mut xl, mut yl, mut xr, mut yr] = self.hp;
        for ((out_l, out_r), out_send) in l.iter_mut().zip(r.iter_mut()).zip(send.iter_mut()) {
            let nl = white(&mut self.noise[0]);
            let nr = white(&mut self.noise[1]);
            yl = self.hp_a * (yl + nl - xl);
            xl = nl;
            yr = self.hp_a * (yr + nr - xr);
            xr = nr;
            let amp = self.amp.tick();
            *out_l += yl * amp;
            *out_r += yr * amp;
            *out_send += 0.15 * (yl + yr) * amp;
            if self.amp.done() {
                self.active = false;
                break;
            }
        }
        self.hp = [xl, yl, xr, yr];
    }
}

/// Ambient "air": high-passed stereo noise breathing with a slow triangle LFO.
#[derive(Debug, Clone)]
struct Air {
    noise: [u64; 2],
    hp: [f64; 4],
    hp_a: f64,
    level: f64,
    target: f64,
    smooth: f64,
    lfo_phase: u32,
    lfo_inc: u32,
}

impl Air {
    const LEVEL: f64 = 0.05;

    fn new(sr: f64, seed: u64) -> Self {
        Self {
            noise: [noise_state(seed, 40), noise_state(seed, 41)],
            hp: [0.0; 4],
            hp_a: det::highpass_coef(2500.0, sr),
            level: 0.0,
            target: 0.0,
            smooth: 1.0 - det::exp(-1.0 / (0.5 * sr)),
            lfo_phase: 0,
            lfo_inc: phase_increment(0.09, sr),
        }
    }

    fn render(&mut self, l: &mut [f64], r: &mut [f64]) {
        if self.level == 0.0 && self.target == 0.0 {
            return;
        }
        let [mut xl, mut yl, mut xr, mut yr] = self.hp;
        for (out_l, out_r) in l.iter_mut().zip(r.iter_mut()) {
            self.level += (self.target - self.level) * self.smooth;
            // Triangle 0..1 from the top bit and the rest of the phase.
            let ramp = f64::from(self.lfo_phase) * (1.0 / 4_294_967_296.0);
            let triangle = if ramp < 0.5 {
                2.0 * ramp
            } else {
                2.0 - 2.0 * ramp
            };
            self.lfo_phase = self.lfo_phase.wrapping_add(self.lfo_inc);
            let amp = self.level * (0.5 + 0.5 * triangle);
            let nl = white(&mut self.noise[0]);
            let nr = white(&mut self.noise[1]);
            yl = self.hp_a * (yl + nl - xl);
            xl = nl;
            yr = self.hp_a * (yr + nr - xr);
            xr = nr;
            *out_l += yl * amp;
            *out_r += yr * amp;
        }
        if self.target == 0.0 && self.level < SILENT {
            self.level = 0.0;
        }
        self.hp = [xl, yl, xr, yr];
    }
}

/// A circular delay line read and written one sample per frame.
#[derive(Debug, Clone)]
struct DelayLine {
    line: Vec<f64>,
    pos: usize,
}

impl DelayLine {
    fn new(delay_ms: f64, sr: f64) -> Self {
        Self {
            line: vec![0.0; ((delay_ms * sr / 1000.0) as usize).max(1)],
            pos: 0,
        }
    }

    /// Frames until the position wraps.
    fn room(&self) -> usize {
        self.line.len() - self.pos
    }

    /// The next `frames` cells (at most [`DelayLine::room`]); each holds the sample written one delay
    /// ago and is overwritten with the new one.
    fn cells(&mut self, frames: usize) -> &mut [f64] {
        &mut self.line[self.pos..self.pos + frames]
    }

    fn advance(&mut self, frames: usize) {
        self.pos += frames;
        if self.pos == self.line.len() {
            self.pos = 0;
        }
    }

    fn clear(&mut self) {
        self.line.fill(0.0);
        self.pos = 0;
    }
}

/// A small stereo reverb: per side, two feedback combs with a damping lowpass in the loop (Freeverb's)
/// into a Schroeder allpass, with different lengths left and right so the tail is decorrelated between
/// channels.
#[derive(Debug, Clone)]
struct Reverb {
    /// Left combs, right combs, left allpass, right allpass.
    lines: [DelayLine; 6],
    /// Damping lowpass state of each comb.
    stores: [f64; 4],
    feedback: f64,
    damp: f64,
    input_gain: f64,
    wet: f64,
}

impl Reverb {
    fn new(style: Style, sr: f64) -> Self {
        let (feedback, wet) = match style {
            Style::Rock => (0.74, 1.0),
            Style::Pop => (0.8, 1.3),
            Style::Ballad => (0.84, 1.3),
            Style::Ambient => (0.9, 1.4),
        };
        Self {
            lines: [25.3, 33.7, 28.1, 36.9, 5.1, 5.6].map(|ms| DelayLine::new(ms, sr)),
            stores: [0.0; 4],
            feedback,
            damp: 0.35,
            input_gain: (1.0 - feedback) * 0.9,
            wet,
        }
    }

    fn clear(&mut self) {
        self.lines.iter_mut().for_each(DelayLine::clear);
        self.stores = [0.0; 4];
    }

    /// Adds the reverb of `send` into `l` and `r`. Works in runs over which no delay line wraps, so the
    /// inner loop indexes plain slices.
    fn process(&mut self, send: &[f64], l: &mut [f64], r: &mut [f64]) {
        let (fb, damp, keep, gain, wet) = (
            self.feedback,
            self.damp,
            1.0 - self.damp,
            self.input_gain,
            self.wet,
        );
        let frames = send.len().min(l.len()).min(r.len());
        let mut start = 0;
        while start < frames {
            let run = self
                .lines
                .iter()
                .map(DelayLine::room)
                .fold(frames - start, usize::min);
            let [l0, l1, r0, r1, ap_l, ap_r] = &mut self.lines;
            let (c_l0, c_l1, c_r0, c_r1) =
                (l0.cells(run), l1.cells(run), r0.cells(run), r1.cells(run));
            let (a_l, a_r) = (ap_l.cells(run), ap_r.cells(run));
            let [mut s_l0, mut s_l1, mut s_r0, mut s_r1] = self.stores;
            let input = &send[start..start + run];
            let (out_l, out_r) = (&mut l[start..start + run], &mut r[start..start + run]);
            for k in 0..run {
                let x = input[k] * gain + ANTI_DENORMAL;
                let (o_l0, o_l1, o_r0, o_r1) = (c_l0[k], c_l1[k], c_r0[k], c_r1[k]);
                s_l0 = o_l0 * keep + s_l0 * damp;
                s_l1 = o_l1 * keep + s_l1 * damp;
                s_r0 = o_r0 * keep + s_r0 * damp;
                s_r1 = o_r1 * keep + s_r1 * damp;
                c_l0[k] = x + s_l0 * fb;
                c_l1[k] = x + s_l1 * fb;
                c_r0[k] = x + s_r0 * fb;
                c_r1[k] = x + s_r1 * fb;
                let (w_l, w_r) = (o_l0 + o_l1, o_r0 + o_r1);
                let (d_l, d_r) = (a_l[k], a_r[k]);
                a_l[k] = w_l + 0.5 * d_l;
                a_r[k] = w_r + 0.5 * d_r;
                out_l[k] += (d_l - w_l) * wet;
                out_r[k] += (d_r - w_r) * wet;
            }
            self.stores = [s_l0, s_l1, s_r0, s_r1];
            self.lines.iter_mut().for_each(|line| line.advance(run));
            start += run;
        }
    }
}

/// Sub-sonic rumble: two sines between 8 and 18 Hz.
#[derive(Debug, Clone)]
struct Rumble {
    phases: [u32; 2],
    incs: [u32; 2],
    amps: [f64; 2],
}

impl Rumble {
    fn new(seed: u64, sr: f64, rms: f64) -> Self {
        let mut rng = Rng::new(hash_key(seed, Lane::Rumble, 0));
        let f1 = 8.0 + 4.0 * rng.unit();
        let f2 = f1 * (1.35 + 0.15 * rng.unit());
        // The sine table has unit RMS, so a1 T(f1) + a2 T(f2) with a2 = a1 / 2 has RMS a1 sqrt(1.25).
        let a1 = rms / 1.25_f64.sqrt();
        Self {
            phases: [0, 0x4000_0000],
            incs: [phase_increment(f1, sr), phase_increment(f2, sr)],
            amps: [a1, 0.5 * a1],
        }
    }

    fn next(&mut self) -> f64 {
        let sine = &wavetables()[table_index(Timbre::Sine, 0)];
        let y = self.amps[0] * lookup(sine, self.phases[0])
            + self.amps[1] * lookup(sine, self.phases[1]);
        self.phases[0] = self.phases[0].wrapping_add(self.incs[0]);
        self.phases[1] = self.phases[1].wrapping_add(self.incs[1]);
        y
    }
}

// ------------------------------------------------------------------------------------------------------
// Engine: the band, sequenced, at unit master gain
// ------------------------------------------------------------------------------------------------------

/// The instruments of a style.
struct Instruments {
    bass: PatchSpec,
    comp: PatchSpec,
    pad: PatchSpec,
    arp: PatchSpec,
    melody: PatchSpec,
}

impl Instruments {
    fn of(style: Style) -> Self {
        let pad = PatchSpec {
            timbre: Timbre::Strings,
            osc2: None,
            attack_s: 0.5,
            decay_s: 1.0,
            sustain: 0.8,
            release_s: 0.5,
            lowpass: None,
            drive: 0.0,
            level: 0.12,
            send: 0.5,
        };
        let keys = PatchSpec {
            timbre: Timbre::Keys,
            osc2: None,
            attack_s: 0.003,
            decay_s: 0.45,
            sustain: 0.25,
            release_s: 0.12,
            lowpass: None,
            drive: 0.0,
            level: 0.14,
            send: 0.3,
        };
        let arp = PatchSpec {
            decay_s: 0.7,
            sustain: 0.12,
            release_s: 0.3,
            level: 0.2,
            send: 0.35,
            ..keys
        };
        let lead = PatchSpec {
            timbre: Timbre::Lead,
            osc2: Some((Timbre::Lead, 1.003, 0.5)),
            attack_s: 0.015,
            decay_s: 0.3,
            sustain: 0.7,
            release_s: 0.15,
            lowpass: Some((3000.0, 2500.0, 0.2)),
            drive: 0.0,
            level: 0.16,
            send: 0.3,
        };
        let bass = PatchSpec {
            timbre: Timbre::Saw,
            osc2: Some((Timbre::Saw, 1.006, 0.8)),
            attack_s: 0.003,
            decay_s: 0.25,
            sustain: 0.6,
            release_s: 0.06,
            lowpass: Some((250.0, 1200.0, 0.08)),
            drive: 0.0,
            level: 0.3,
            send: 0.0,
        };
        match style {
            Style::Pop => Self {
                bass,
                comp: keys,
                pad,
                arp,
                melody: lead,
            },
            Style::Rock => Self {
                bass: PatchSpec {
                    lowpass: Some((400.0, 1500.0, 0.08)),
                    drive: 2.5,
                    level: 0.3,
                    ..bass
                },
                comp: PatchSpec {
                    timbre: Timbre::PowerChord,
                    osc2: None,
                    attack_s: 0.002,
                    decay_s: 0.5,
                    sustain: 0.7,
                    release_s: 0.05,
                    lowpass: Some((2500.0, 2500.0, 0.05)),
                    drive: 4.0,
                    level: 0.2,
                    send: 0.15,
                },
                pad,
                arp,
                melody: PatchSpec {
                    drive: 2.0,
                    level: 0.18,
                    ..lead
                },
            },
            Style::Ballad => Self {
                bass: PatchSpec {
                    timbre: Timbre::Soft,
                    osc2: None,
                    attack_s: 0.01,
                    decay_s: 0.8,
                    sustain: 0.7,
                    release_s: 0.3,
                    lowpass: None,
                    level: 0.3,
                    ..bass
                },
                comp: keys,
                pad: PatchSpec {
                    attack_s: 0.8,
                    release_s: 0.8,
                    ..pad
                },
                arp,
                melody: PatchSpec {
                    attack_s: 0.03,
                    lowpass: Some((2500.0, 1500.0, 0.3)),
                    level: 0.14,
                    ..lead
                },
            },
            Style::Ambient => Self {
                bass: PatchSpec {
                    timbre: Timbre::Soft,
                    osc2: Some((Timbre::Soft, 1.004, 1.0)),
                    attack_s: 1.5,
                    decay_s: 2.0,
                    sustain: 1.0,
                    release_s: 1.5,
                    lowpass: None,
                    level: 0.3,
                    send: 0.2,
                    ..bass
                },
                comp: keys,
                pad: PatchSpec {
                    osc2: Some((Timbre::Strings, 1.007, 1.0)),
                    attack_s: 2.0,
                    release_s: 1.3,
                    level: 0.09,
                    send: 0.7,
                    ..pad
                },
                arp: PatchSpec {
                    timbre: Timbre::Sine,
                    osc2: Some((Timbre::Sine, 2.756, 0.4)),
                    attack_s: 0.002,
                    decay_s: 1.5,
                    sustain: 0.0,
                    release_s: 1.5,
                    lowpass: None,
                    drive: 0.0,
                    level: 0.12,
                    send: 0.7,
                },
                melody: PatchSpec {
                    timbre: Timbre::Strings,
                    osc2: Some((Timbre::Strings, 1.003, 0.5)),
                    attack_s: 0.3,
                    release_s: 1.0,
                    lowpass: None,
                    level: 0.12,
                    send: 0.6,
                    ..lead
                },
            },
        }
    }
}

/// Stereo pan of the three chord tones of keys stabs.
const KEYS_PANS: [f64; 3] = [-0.6, 0.15, 0.6];
/// Stereo pan of the three chord tones of pads.
const PAD_PANS: [f64; 3] = [-0.85, 0.1, 0.85];

/// The band and its sequencer: renders the music (before section gain and master gain) chunk by chunk,
/// triggering each sixteenth step's events at its exact frame.
struct Engine {
    song: Song,
    sr: f64,
    seed: u64,
    boost_gain: f64,
    tables: &'static [Table],
    midi_hz: [f64; 128],
    kick: Kick,
    snare: Snare,
    drum_bus: DrumBus,
    hat: HiHat,
    crash: Crash,
    bass: TonePool,
    comp: TonePool,
    pad: TonePool,
    arp: TonePool,
    melody: TonePool,
    air: Air,
    reverb: Reverb,
    plan: BarPlan,
    /// Next frame to render.
    frame: u64,
    /// Next step to trigger, and its first frame.
    step: u64,
    next_step_frame: u64,
    /// Section fader target of the current step.
    gain_target: f64,
    buf_l: Vec<f64>,
    buf_r: Vec<f64>,
    buf_send: Vec<f64>,
    buf_drums: Vec<f64>,
}

impl Engine {
    fn new(params: &Params) -> Self {
        let sr = params.sr;
        let song = Song::new(params);
        let kit = DrumKit::of(params.style);
        let instruments = Instruments::of(params.style);
        let mut midi_hz = [0.0; 128];
        for (n, hz) in midi_hz.iter_mut().enumerate() {
            *hz = det::midi_hz(n as f64);
        }
        let mut engine = Self {
            sr,
            seed: params.seed,
            boost_gain: params.boost_gain,
            tables: wavetables(),
            midi_hz,
            kick: Kick::new(&kit, sr),
            snare: Snare::new(&kit, sr, params.seed),
            drum_bus: DrumBus::new(&kit, sr, params.boost_gain),
            hat: HiHat::new(&kit, sr, params.seed),
            crash: Crash::new(&kit, sr, params.seed),
            bass: TonePool::new(&instruments.bass, sr, 3),
            comp: TonePool::new(&instruments.comp, sr, 9),
            pad: TonePool::new(&instruments.pad, sr, 9),
            arp: TonePool::new(&instruments.arp, sr, 8),
            melody: TonePool::new(&instruments.melody, sr, 4),
            air: Air::new(sr, params.seed),
            reverb: Reverb::new(params.style, sr),
            plan: BarPlan::empty([60, 64, 67]),
            frame: 0,
            step: 0,
            next_step_frame: 0,
            gain_target: 1.0,
            buf_l: vec![0.0; CHUNK_FRAMES],
            buf_r: vec![0.0; CHUNK_FRAMES],
            buf_send: vec![0.0; CHUNK_FRAMES],
            buf_drums: vec![0.0; CHUNK_FRAMES],
            song,
        };
        engine.reset_at_bar(0);
        engine
    }

    /// Returns every voice to silence and positions the sequencer at the downbeat of `bar`, exactly as a
    /// fresh engine would be there had nothing sounded before.
    fn reset_at_bar(&mut self, bar: u64) {
        let kit = DrumKit::of(self.song.style);
        self.kick = Kick::new(&kit, self.sr);
        self.snare = Snare::new(&kit, self.sr, self.seed);
        self.drum_bus = DrumBus::new(&kit, self.sr, self.boost_gain);
        self.hat = HiHat::new(&kit, self.sr, self.seed);
        self.crash = Crash::new(&kit, self.sr, self.seed);
        self.air = Air::new(self.sr, self.seed);
        for pool in [
            &mut self.bass,
            &mut self.comp,
            &mut self.pad,
            &mut self.arp,
            &mut self.melody,
        ] {
            pool.reset();
        }
        self.reverb.clear();
        self.step = bar * STEPS_PER_BAR;
        self.frame = self.song.step_start(self.step);
        self.next_step_frame = self.frame;
        self.gain_target = self.song.gain_at_step(self.step);
    }

    /// Renders up to `max_frames` (at most one chunk, never across a step boundary) into `buf_l` and
    /// `buf_r`; returns the number of frames rendered (at least 1 when `max_frames` > 0).
    fn render_chunk(&mut self, max_frames: usize) -> usize {
        if self.frame == self.next_step_frame {
            self.trigger_step();
        }
        let to_step = (self.next_step_frame - self.frame) as usize;
        let n = max_frames.min(CHUNK_FRAMES).min(to_step);
        let (l, r, send) = (
            &mut self.buf_l[..n],
            &mut self.buf_r[..n],
            &mut self.buf_send[..n],
        );
        l.fill(0.0);
        r.fill(0.0);
        send.fill(0.0);
        let sine = &self.tables[table_index(Timbre::Sine, 0)];
        let drums = &mut self.buf_drums[..n];
        drums.fill(0.0);
        self.kick.render(sine, drums, send);
        self.snare.render(sine, drums, send);
        self.drum_bus.mix(drums, l, r);
        self.hat.render(l, r, send);
        self.crash.render(l, r, send);
        self.bass.render(self.tables, l, r, send);
        self.comp.render(self.tables, l, r, send);
        self.pad.render(self.tables, l, r, send);
        self.arp.render(self.tables, l, r, send);
        self.melody.render(self.tables, l, r, send);
        self.air.render(l, r);
        self.reverb.process(send, l, r);
        self.frame += n as u64;
        n
    }

    /// Starts the events of the current step and advances to the next.
    fn trigger_step(&mut self) {
        let step = self.step;
        let pos = (step % STEPS_PER_BAR) as usize;
        if pos == 0 {
            self.plan = self.song.plan_bar(step / STEPS_PER_BAR);
        }
        self.gain_target = self.song.gain_at_step(step);
        let plan = self.plan;
        let song = &self.song;
        let sr = self.sr;
        let hz = |n: u8| self.midi_hz[usize::from(n.min(127))];
        let gate = |steps: u16, fraction: f64| -> u64 {
            let frames = song.step_start(step + u64::from(steps)) - song.step_start(step);
            (frames as f64 * fraction) as u64
        };

        if plan.kick[pos] > 0.0 {
            self.kick.trigger(plan.kick[pos]);
            self.drum_bus.hit();
        }
        if plan.snare[pos] > 0.0 {
            self.snare.trigger(plan.snare[pos]);
            self.drum_bus.hit();
        }
        if plan.open_hat[pos] > 0.0 {
            self.hat.trigger(plan.open_hat[pos], true);
        } else if plan.hat[pos] > 0.0 {
            self.hat.trigger(plan.hat[pos], false);
        }
        if plan.crash[pos] > 0.0 {
            self.crash.trigger(plan.crash[pos]);
        }
        if let Some(ev) = plan.bass[pos] {
            self.bass
                .note_on(sr, hz(ev.note), gate(ev.steps, 0.85), ev.velocity, 0.0);
        }
        if let Some(ev) = plan.comp[pos] {
            if song.style == Style::Rock {
                // Power chord double-tracked hard left and right, the right take slightly sharp. The
                // power-chord wavetable's fundamental is an octave below the root.
                let length = gate(ev.steps, 0.8);
                let half = 0.5 * hz(ev.note);
                self.comp.note_on(sr, half, length, ev.velocity, -0.85);
                self.comp
                    .note_on(sr, half * 1.003, length, ev.velocity * 0.95, 0.85);
            } else {
                for (&n, &pan) in plan.chord.iter().zip(KEYS_PANS.iter()) {
                    self.comp
                        .note_on(sr, hz(n), gate(ev.steps, 0.8), ev.velocity, pan);
                }
            }
        }
        if pos == 0 {
            if let Some(ev) = plan.pad {
                for (&n, &pan) in plan.chord.iter().zip(PAD_PANS.iter()) {
                    self.pad
                        .note_on(sr, hz(n), gate(ev.steps, 0.95), ev.velocity, pan);
                }
            }
            self.air.target = if plan.air { Air::LEVEL } else { 0.0 };
        }
        if let Some(ev) = plan.arp[pos] {
            let pan = if pos % 4 == 0 { -0.5 } else { 0.5 };
            self.arp
                .note_on(sr, hz(ev.note), gate(ev.steps, 0.9), ev.velocity, pan);
        }
        if let Some(ev) = plan.melody[pos] {
            self.melody
                .note_on(sr, hz(ev.note), gate(ev.steps, 0.9), ev.velocity, -0.1);
        }
        self.step += 1;
        self.next_step_frame = self.song.step_start(self.step);
    }
}

/// The master gain that brings the track's RMS to `target_rms`: the mean square of each kind of section
/// is measured on a few seconds of it (at unit gain), then weighted by where the sections fall and by the
/// section fader of every step.
fn calibrate(engine: &mut Engine, channel_count: usize, target_rms: f64) -> f64 {
    let song = engine.song.clone();
    if song.total_frames == 0 {
        return 1.0;
    }
    let bar_s = song.step_frames * STEPS_PER_BAR as f64 / engine.sr;
    let calibration_bars = ((CALIBRATION_S / bar_s).ceil() as u64).max(1);
    let mut section_ms = [0.0; 5];
    for section in Section::ALL {
        let Some((first_bar, bars_left)) = song.form.first_bar_of(section) else {
            continue;
        };
        let bars = bars_left.min(calibration_bars).max(1);
        engine.reset_at_bar(first_bar);
        let start = engine.frame;
        let end = song
            .step_start((first_bar + bars) * STEPS_PER_BAR)
            .min(song.total_frames)
            .max(start);
        let mut remaining = (end - start) as usize;
        let mut sum = 0.0;
        while remaining > 0 {
            let n = engine.render_chunk(remaining);
            for (&l, &r) in engine.buf_l[..n].iter().zip(&engine.buf_r[..n]) {
                sum += if channel_count == 1 {
                    let m = 0.5 * (l + r);
                    m * m
                } else {
                    0.5 * (l * l + r * r)
                };
            }
            remaining -= n;
        }
        if end > start {
            section_ms[section.index()] = sum / (end - start) as f64;
        }
    }
    let mut energy = 0.0;
    for step in 0..song.total_steps() {
        let begin = song.step_start(step).min(song.total_frames);
        let end = song.step_start(step + 1).min(song.total_frames);
        if end <= begin {
            break;
        }
        let (section, _, _) = song.form.section_at(step / STEPS_PER_BAR);
        let gain = song.gain_at_step(step);
        energy += section_ms[section.index()] * gain * gain * (end - begin) as f64;
    }
    let mean_square = energy / song.total_frames as f64;
    if mean_square > 0.0 {
        target_rms / mean_square.sqrt()
    } else {
        1.0
    }
}

// ------------------------------------------------------------------------------------------------------
// Tests
// ------------------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    /// Renders a whole recipe, reading with buffers of `capacity` frames.
    fn render(recipe: &TrackRecipe, capacity: usize) -> Vec<Vec<f32>> {
        let mut synth = TrackSynth::new(recipe);
        let channels = synth.channel_count();
        let mut out = vec![Vec::with_capacity(synth.total_frames() as usize); channels];
        let mut buffers = vec![vec![0.0; capacity]; channels];
        loop {
            let n = synth.read(&mut buffers);
            if n == 0 {
                break;
            }
            for (dst, src) in out.iter_mut().zip(&buffers) {
                dst.extend_from_slice(&src[..n]);
            }
        }
        out
    }

    fn rms_db(samples: &[f32]) -> f64 {
        let ms = samples.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / samples.len() as f64;
        10.0 * ms.log10()
    }

    fn track_rms_db(channels: &[Vec<f32>]) -> f64 {
        let ms: f64 = channels
            .iter()
            .map(|c| c.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / c.len() as f64)
            .sum::<f64>()
            / channels.len() as f64;
        10.0 * ms.log10()
    }

    fn correlation(a: &[f32], b: &[f32]) -> f64 {
        let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
        for (&x, &y) in a.iter().zip(b) {
            let (x, y) = (f64::from(x), f64::from(y));
            ab += x * y;
            aa += x * x;
            bb += y * y;
        }
        ab / (aa * bb).sqrt()
    }

    fn recipe(style: Style, seed: u64, duration_s: f64) -> TrackRecipe {
        TrackRecipe {
            duration_s,
            ..TrackRecipe::new(style, seed)
        }
    }

    #[test]
    fn det_maths_matches_std_closely() {
        for i in -2000..=2000 {
            let x = f64::from(i) * 0.35;
            let (ours, reference) = (det::exp(x), x.exp());
            assert!(
                ((ours - reference) / reference).abs() < 1e-14,
                "exp({x}) = {ours}, std says {reference}"
            );
        }
        for i in -5000..=5000 {
            let t = f64::from(i) * 0.000_713;
            let (ours, reference) = (det::sin_turns(t), (t * std::f64::consts::TAU).sin());
            assert!((ours - reference).abs() < 1e-11, "sin at {t} turns");
        }
        assert!((det::midi_hz(69.0) - 440.0).abs() < 1e-12);
        assert!((det::db_to_gain(-20.0) - 0.1).abs() < 1e-15);
    }

    /// In-place iterative radix-2 FFT (length a power of two).
    fn fft(re: &mut [f64], im: &mut [f64]) {
        let n = re.len();
        let mut j = 0;
        for i in 1..n {
            let mut bit = n >> 1;
            while j & bit != 0 {
                j ^= bit;
                bit >>= 1;
            }
            j |= bit;
            if i < j {
                re.swap(i, j);
                im.swap(i, j);
            }
        }
        let mut len = 2;
        while len <= n {
            let angle = -std::f64::consts::TAU / len as f64;
            for start in (0..n).step_by(len) {
                for k in 0..len / 2 {
                    let (w_re, w_im) = ((angle * k as f64).cos(), (angle * k as f64).sin());
                    let (a, b) = (start + k, start + k + len / 2);
                    let t_re = re[b] * w_re - im[b] * w_im;
                    let t_im = re[b] * w_im + im[b] * w_re;
                    re[b] = re[a] - t_re;
                    im[b] = im[a] - t_im;
                    re[a] += t_re;
                    im[a] += t_im;
                }
            }
            len <<= 1;
        }
    }

    /// Energy (dB, arbitrary reference) of the mid signal in each band, from Hann-windowed FFTs.
    fn band_energies_db(channels: &[Vec<f32>], sample_rate: f64, bands: &[(f64, f64)]) -> Vec<f64> {
        const N: usize = 8192;
        let frames = channels[0].len();
        let mut energy = vec![0.0; bands.len()];
        let mut start = 0;
        while start + N <= frames {
            let mut re: Vec<f64> = (0..N)
                .map(|i| {
                    let mid = channels
                        .iter()
                        .map(|c| f64::from(c[start + i]))
                        .sum::<f64>()
                        / channels.len() as f64;
                    let w = 0.5 - 0.5 * (std::f64::consts::TAU * i as f64 / N as f64).cos();
                    mid * w
                })
                .collect();
            let mut im = vec![0.0; N];
            fft(&mut re, &mut im);
            for (bin, (r, i)) in re.iter().zip(&im).enumerate().take(N / 2) {
                let hz = bin as f64 * sample_rate / N as f64;
                for (e, &(lo, hi)) in energy.iter_mut().zip(bands) {
                    if hz >= lo && hz < hi {
                        *e += r * r + i * i;
                    }
                }
            }
            start += N;
        }
        energy.iter().map(|e| 10.0 * e.log10()).collect()
    }

    /// RMS in dB of consecutive windows of `window_s` seconds over all channels.
    fn short_term_db(channels: &[Vec<f32>], sample_rate: f64, window_s: f64) -> Vec<f64> {
        let window = (window_s * sample_rate) as usize;
        (0..channels[0].len() / window)
            .map(|w| {
                let parts: Vec<Vec<f32>> = channels
                    .iter()
                    .map(|c| c[w * window..(w + 1) * window].to_vec())
                    .collect();
                track_rms_db(&parts)
            })
            .collect()
    }

    fn peak(channels: &[Vec<f32>]) -> f32 {
        channels
            .iter()
            .flatten()
            .fold(0.0_f32, |m, &x| m.max(x.abs()))
    }

    #[test]
    fn output_is_identical_for_block_capacities_1_333_and_8192() {
        for style in Style::ALL {
            let r = recipe(style, 11, 6.0);
            let reference = render(&r, 8192);
            assert_eq!(reference[0].len(), 264_600);
            assert_eq!(render(&r, 1), reference, "{style:?}, capacity 1");
            assert_eq!(render(&r, 333), reference, "{style:?}, capacity 333");
            assert_eq!(render(&r, 8192), reference, "{style:?}, second run");
        }
    }

    /// FNV-1a over the bits of every sample, channel after channel.
    fn fingerprint(channels: &[Vec<f32>]) -> u64 {
        channels
            .iter()
            .flatten()
            .fold(0xCBF2_9CE4_8422_2325, |hash, x| {
                (hash ^ u64::from(x.to_bits())).wrapping_mul(0x0100_0000_01B3)
            })
    }

    #[test]
    fn output_matches_the_recorded_fingerprints() {
        // The demo, the tests and the benchmarks of the whole project run on this material, and the
        // synthesiser promises the same bits on every machine: a change here must be deliberate.
        let expected: [u64; 4] = [
            0x9F3D_2B8F_38BF_4BC8,
            0xDB01_462D_02FC_1C2B,
            0xD7F8_8485_3E05_0CA4,
            0xC158_9CCE_24DB_6684,
        ];
        for (style, expected) in Style::ALL.into_iter().zip(expected) {
            let hash = fingerprint(&render(&recipe(style, 42, 3.0), 4096));
            assert_eq!(hash, expected, "{style:?}: {hash:#018X}");
        }
    }

    #[test]
    fn a_different_seed_gives_different_audio() {
        for style in Style::ALL {
            let a = render(&recipe(style, 1, 8.0), 4096);
            let b = render(&recipe(style, 2, 8.0), 4096);
            let diff: Vec<f32> = a[0].iter().zip(&b[0]).map(|(x, y)| x - y).collect();
            // Unrelated signals: the difference is about as loud as either (+3 dB), never near silence.
            let margin = rms_db(&diff) - rms_db(&a[0]);
            assert!(
                margin > -3.0,
                "{style:?}: difference only {margin:.1} dB re signal"
            );
        }
    }

    #[test]
    fn whole_track_rms_is_within_2_db_of_level_for_every_style() {
        for style in Style::ALL {
            for (seed, duration_s, level_db) in
                [(3, 40.0, style.typical_level_db()), (4, 75.0, -27.0)]
            {
                let r = TrackRecipe {
                    level_db,
                    ..recipe(style, seed, duration_s)
                };
                let measured = track_rms_db(&render(&r, 4096));
                assert!(
                    (measured - level_db).abs() < 2.0,
                    "{style:?} seed {seed}: {measured:.2} dBFS for a target of {level_db} dBFS"
                );
            }
        }
    }

    #[test]
    fn mono_track_rms_is_within_2_db_of_level() {
        let r = TrackRecipe {
            channel_count: 1,
            level_db: -20.0,
            ..recipe(Style::Pop, 5, 30.0)
        };
        let out = render(&r, 4096);
        assert_eq!(out.len(), 1);
        assert!((track_rms_db(&out) + 20.0).abs() < 2.0);
    }

    #[test]
    fn dc_offset_is_recovered_as_the_track_mean() {
        for dc_offset in [0.05, -0.02] {
            let r = TrackRecipe {
                dc_offset,
                ..recipe(Style::Rock, 6, 20.0)
            };
            for channel in render(&r, 4096) {
                let mean =
                    channel.iter().map(|&x| f64::from(x)).sum::<f64>() / channel.len() as f64;
                assert!(
                    (mean - dc_offset).abs() < 0.01,
                    "mean {mean} for DC {dc_offset}"
                );
            }
        }
    }

    #[test]
    fn peak_boost_pushes_the_demo_rock_track_over_full_scale() {
        let (_, rock) = demo_album(44_100)
            .into_iter()
            .find(|(_, r)| r.style == Style::Rock)
            .expect("demo album has a rock track");
        assert!(rock.peak_boost_db > 0.0);
        let boosted = peak(&render(&rock, 4096));
        let plain = peak(&render(
            &TrackRecipe {
                peak_boost_db: 0.0,
                ..rock.clone()
            },
            4096,
        ));
        assert!(boosted > 1.0, "boosted peak {boosted}");
        assert!(plain < 1.0, "unboosted peak {plain}");
        let gain_db = 20.0 * f64::from(boosted / plain).log10();
        assert!(
            gain_db > 2.0,
            "boost raised the peak by only {gain_db:.1} dB"
        );
    }

    #[test]
    fn spectrum_is_broadband_for_every_style() {
        let bands = [(40.0, 200.0), (200.0, 2000.0), (2000.0, 10_000.0)];
        for style in Style::ALL {
            let out = render(&recipe(style, 7, 30.0), 4096);
            let energies = band_energies_db(&out, 44_100.0, &bands);
            let strongest = energies.iter().copied().fold(f64::MIN, f64::max);
            for (energy, band) in energies.iter().zip(&bands) {
                assert!(
                    strongest - energy < 30.0,
                    "{style:?}: {band:?} Hz is {:.1} dB below the strongest band",
                    strongest - energy
                );
            }
        }
    }

    #[test]
    fn pop_loudness_varies_by_at_least_4_db_over_3_s_windows() {
        let out = render(&recipe(Style::Pop, 8, 60.0), 4096);
        // Only windows before the outro, so the fade alone cannot pass the test.
        let windows = short_term_db(&out, 44_100.0, 3.0);
        let before_outro = &windows[..windows.len() * 3 / 4];
        let max = before_outro.iter().copied().fold(f64::MIN, f64::max);
        let min = before_outro.iter().copied().fold(f64::MAX, f64::min);
        assert!(
            max - min >= 4.0,
            "short-term loudness spans only {:.1} dB",
            max - min
        );
    }

    #[test]
    fn stereo_channels_differ_but_stay_in_phase() {
        for style in Style::ALL {
            let out = render(&recipe(style, 9, 30.0), 4096);
            let c = correlation(&out[0], &out[1]);
            assert!(c < 0.98 && c > 0.3, "{style:?}: correlation {c:.3}");
        }
    }

    #[test]
    fn mono_is_the_fold_of_stereo() {
        let stereo = render(&recipe(Style::Rock, 10, 10.0), 4096);
        let mono = render(
            &TrackRecipe {
                channel_count: 1,
                ..recipe(Style::Rock, 10, 10.0)
            },
            4096,
        );
        let fold: Vec<f32> = stereo[0]
            .iter()
            .zip(&stereo[1])
            .map(|(l, r)| 0.5 * (l + r))
            .collect();
        assert!(correlation(&mono[0], &fold) > 0.999_99);
    }

    #[test]
    fn rumble_adds_subsonic_energy_at_its_level() {
        let clean = recipe(Style::Ballad, 12, 20.0);
        let rumbling = TrackRecipe {
            rumble_db: Some(-35.0),
            ..clean.clone()
        };
        let (a, b) = (render(&clean, 4096), render(&rumbling, 4096));
        let rumble: Vec<Vec<f32>> = a
            .iter()
            .zip(&b)
            .map(|(x, y)| x.iter().zip(y).map(|(x, y)| y - x).collect())
            .collect();
        let level = track_rms_db(&rumble);
        assert!((level + 35.0).abs() < 0.2, "rumble at {level:.2} dBFS");
        // Below 30 Hz against above 40 Hz: the 8192-point Hann window smears an 18 Hz tone over +-11 Hz.
        let bands = [(0.0, 30.0), (40.0, 22_050.0)];
        let energies = band_energies_db(&rumble, 44_100.0, &bands);
        assert!(
            energies[0] - energies[1] > 50.0,
            "rumble is not sub-sonic: {energies:?}"
        );
    }

    #[test]
    fn total_frames_is_the_rounded_duration_times_the_rate() {
        for (duration_s, rate, expected) in [
            (1.5, 44_100, 66_150),
            (2.345_678, 96_000, 225_185),
            (0.000_01, 48_000, 0),
            (-1.0, 48_000, 0),
            (f64::NAN, 48_000, 0),
            (1.000_01, 8000, 8000),
        ] {
            let r = TrackRecipe {
                duration_s,
                sample_rate_hz: rate,
                ..TrackRecipe::new(Style::Pop, 1)
            };
            let mut synth = TrackSynth::new(&r);
            assert_eq!(
                synth.total_frames(),
                expected,
                "{duration_s} s at {rate} Hz"
            );
            assert_eq!(r.total_frames(), expected);
            let mut buffers = [[0.0; 1000]; 2];
            let mut read = 0;
            loop {
                let n = synth.read(&mut buffers);
                if n == 0 {
                    break;
                }
                read += n as u64;
            }
            assert_eq!(read, expected);
            assert_eq!(synth.read(&mut buffers), 0);
        }
    }

    #[test]
    fn read_fills_the_shortest_buffer_and_leaves_the_rest_alone() {
        let r = recipe(Style::Pop, 15, 1.0);
        let expected = render(&r, 4096);
        let mut synth = TrackSynth::new(&r);
        let (mut left, mut right) = (vec![9.0_f32; 700], vec![9.0_f32; 500]);
        assert_eq!(synth.read(&mut [&mut left[..], &mut right[..]]), 500);
        assert_eq!(left[..500], expected[0][..500]);
        assert_eq!(right[..], expected[1][..500]);
        assert!(
            left[500..].iter().all(|&x| x == 9.0),
            "past the count, untouched"
        );
        assert_eq!(synth.position_frames(), 500);
        let mut empty: [Vec<f32>; 2] = Default::default();
        assert_eq!(synth.read(&mut empty), 0);
    }

    #[test]
    fn demo_album_is_rough_in_the_documented_ways() {
        let album = demo_album(48_000);
        assert!((4..=5).contains(&album.len()));
        for (i, (name, r)) in album.iter().enumerate() {
            assert!(name.starts_with(&format!("{:02}-", i + 1)), "{name}");
            assert!((20.0..=40.0).contains(&r.duration_s));
            assert_eq!(r.sample_rate_hz, 48_000);
        }
        let recipes: Vec<&TrackRecipe> = album.iter().map(|(_, r)| r).collect();
        assert!(recipes.iter().any(|r| r.dc_offset != 0.0));
        assert!(recipes.iter().any(|r| r.rumble_db.is_some()));
        assert!(recipes.iter().any(|r| r.channel_count == 1));
        let ballad = recipes
            .iter()
            .find(|r| r.style == Style::Ballad)
            .expect("a ballad");
        assert!((track_rms_db(&render(ballad, 4096)) - -30.0).abs() < 2.0);
    }

    #[test]
    fn samples_stay_finite_for_extreme_recipes() {
        for style in Style::ALL {
            let r = TrackRecipe {
                tempo_bpm: 1e9,
                sample_rate_hz: 8000,
                level_db: f64::NAN,
                channel_count: 7,
                ..recipe(style, 14, 10.0)
            };
            let out = render(&r, 512);
            assert_eq!(out.len(), 2);
            assert!(out.iter().flatten().all(|x| x.is_finite()));
        }
    }

    /// Numbers for tuning: `cargo test -p lathe-synth --lib generator::tests::report -- --ignored --nocapture`.
    #[test]
    #[ignore = "prints measurements"]
    fn report() {
        let bands = [(40.0, 200.0), (200.0, 2000.0), (2000.0, 10_000.0)];
        for style in Style::ALL {
            let r = recipe(style, 7, 60.0);
            let start = std::time::Instant::now();
            let out = render(&r, 4096);
            let speed = 60.0 / start.elapsed().as_secs_f64();
            let energies = band_energies_db(&out, 44_100.0, &bands);
            let windows = short_term_db(&out, 44_100.0, 3.0);
            let max = windows.iter().copied().fold(f64::MIN, f64::max);
            let min = windows.iter().copied().fold(f64::MAX, f64::min);
            println!(
                "{style:?}: rms {:.2} (target {}), peak {:.2}, bands {:.1?}, st-range {:.1} {:.1?}, corr {:.3}, {speed:.0}x realtime",
                track_rms_db(&out),
                r.level_db,
                peak(&out),
                energies,
                max - min,
                windows,
                correlation(&out[0], &out[1]),
            );
        }
    }
}
