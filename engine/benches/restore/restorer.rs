//! Our restorers as the bench runs them: which one answers which damage model, built with
//! automatic settings and run in memory in fixed blocks with their latency removed.

use std::time::{Duration, Instant};

use lathe_engine::AudioBlock;
use lathe_engine::restore::declick::Declicker;
use lathe_engine::restore::declip::Declipper;
use lathe_engine::restore::decrackle::Decrackler;
use lathe_engine::restore::dehum::Dehummer;
use lathe_engine::restore::denoise::Denoiser;
use lathe_engine::stage::Stage;
use lathe_model::stage_config::restore::{
    DeclickConfig, DeclipConfig, DecrackleConfig, DehumConfig, DenoiseConfig,
};
use lathe_synth::cpu_time::thread_cpu_time;

/// Frames per block the stages are fed.
const BLOCK_FRAMES: usize = 4096;

/// One of our restorers.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Restorer {
    Declick,
    Decrackle,
    Denoise,
    Dehum,
    Declip,
}

impl Restorer {
    /// Every restorer, in the order the pipeline runs them... and the tables list them.
    pub const ALL: [Restorer; 5] = [
        Restorer::Declip,
        Restorer::Declick,
        Restorer::Decrackle,
        Restorer::Dehum,
        Restorer::Denoise,
    ];

    /// The restorer that answers the damage model `model` (named as in `lathe_synth::damage`).
    pub fn for_model(model: &str) -> Restorer {
        match model.split('-').next() {
            Some("clicks") => Restorer::Declick,
            Some("crackle") => Restorer::Decrackle,
            Some("hiss") => Restorer::Denoise,
            Some("hum") => Restorer::Dehum,
            _ => Restorer::Declip,
        }
    }

    /// The name the CLI and profiles use.
    pub fn name(self) -> &'static str {
        match self {
            Restorer::Declick => "declick",
            Restorer::Decrackle => "decrackle",
            Restorer::Denoise => "denoise",
            Restorer::Dehum => "dehum",
            Restorer::Declip => "declip",
        }
    }

    /// The restorer with automatic settings.
    pub fn stage(self, channels: usize, rate: u32) -> Box<dyn Stage> {
        let built: Result<Box<dyn Stage>, _> = match self {
            Restorer::Declick => {
                Declicker::new(&DeclickConfig::default(), channels, rate, BLOCK_FRAMES)
                    .map(|s| Box::new(s) as Box<dyn Stage>)
            }
            Restorer::Decrackle => {
                Decrackler::new(&DecrackleConfig::default(), channels, rate, BLOCK_FRAMES)
                    .map(|s| Box::new(s) as Box<dyn Stage>)
            }
            Restorer::Denoise => {
                Denoiser::new(&DenoiseConfig::default(), channels, rate, BLOCK_FRAMES)
                    .map(|s| Box::new(s) as Box<dyn Stage>)
            }
            Restorer::Dehum => Dehummer::new(&DehumConfig::default(), channels, rate, BLOCK_FRAMES)
                .map(|s| Box::new(s) as Box<dyn Stage>),
            Restorer::Declip => {
                Declipper::new(&DeclipConfig::default(), channels, rate, BLOCK_FRAMES)
                    .map(|s| Box::new(s) as Box<dyn Stage>)
            }
        };
        built.expect("automatic settings are valid")
    }
}

/// Runs `stage` over `input` in blocks and removes its latency; returns the output, as long as the
/// input and aligned with it, and the thread's CPU seconds (wall seconds where there is no CPU
/// clock).
pub fn run_stage(stage: &mut dyn Stage, input: &AudioBlock) -> (AudioBlock, f64) {
    let channels = input.channel_count();
    let latency = stage.latency_frames();
    let mut out = AudioBlock::new(channels, input.frames() + latency, input.sample_rate_hz());
    let mut block = AudioBlock::new(channels, BLOCK_FRAMES, input.sample_rate_hz());
    let mut elapsed = Duration::ZERO;
    let mut pos = 0;
    let total = input.frames() + latency;
    while pos < total {
        let n = BLOCK_FRAMES.min(total - pos);
        block.set_frames(n);
        for ch in 0..channels {
            let source = input.channel(ch);
            for (i, d) in block.channel_mut(ch).iter_mut().enumerate() {
                *d = source.get(pos + i).copied().unwrap_or(0.0);
            }
        }
        let (cpu0, wall0) = (thread_cpu_time(), Instant::now());
        stage.process(&mut block);
        elapsed += match (cpu0, thread_cpu_time()) {
            (Some(a), Some(b)) => b.saturating_sub(a),
            _ => wall0.elapsed(),
        };
        out.append(&block);
        pos += n;
    }
    out.discard_front(latency);
    out.set_frames(input.frames());
    (out, elapsed.as_secs_f64())
}
