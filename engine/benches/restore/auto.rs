//! Automatic restoration as the bench runs it: the defect detector over the whole excerpt, the
//! plan it implies (`[restore] auto = true` with no sub-table), and the planned restorers run in
//! memory like the others.

use lathe_engine::AudioBlock;
use lathe_engine::restore::BuildRestorers;
use lathe_engine::restore::detect::DefectDetector;
use lathe_model::restore_plan::RestorePlan;
use lathe_model::stage_config::restore::RestoreConfig;
use lathe_synth::cpu_time::thread_cpu_time;

use crate::restorer::run_stage;

/// Frames per block the detector is fed.
const BLOCK_FRAMES: usize = 4096;

/// What automatic restoration did to one excerpt.
pub struct AutoRun {
    /// The restorers the plan chose, in running order.
    pub triggered: Vec<String>,
    /// The restored audio (the input itself when nothing ran).
    pub output: AudioBlock,
    /// CPU seconds of the detection and the restoration.
    pub cpu_s: f64,
}

/// Detects, plans and restores `input` as `[restore] auto = true` does.
pub fn run(input: &AudioBlock) -> AutoRun {
    let (channels, rate) = (input.channel_count(), input.sample_rate_hz());
    let started = thread_cpu_time();
    let mut detector = DefectDetector::new(channels, rate);
    let mut block = AudioBlock::new(channels, BLOCK_FRAMES, rate);
    let mut pos = 0;
    while pos < input.frames() {
        let n = BLOCK_FRAMES.min(input.frames() - pos);
        block.set_frames(n);
        for ch in 0..channels {
            block
                .channel_mut(ch)
                .copy_from_slice(&input.channel(ch)[pos..pos + n]);
        }
        detector.feed(&block);
        pos += n;
    }
    let section = RestoreConfig {
        auto: true,
        ..RestoreConfig::default()
    };
    let plan = RestorePlan::new(detector.finish(), &section);
    let detect_s = match (started, thread_cpu_time()) {
        (Some(a), Some(b)) => b.saturating_sub(a).as_secs_f64(),
        _ => 0.0,
    };
    let triggered: Vec<String> = plan.restorers().iter().map(|r| (*r).to_owned()).collect();
    let mut stages = plan
        .config
        .build_with_noise(channels, rate, BLOCK_FRAMES, None)
        .expect("a plan's settings are valid");
    let mut output = input.clone();
    let mut cpu_s = detect_s;
    for stage in &mut stages {
        let (next, seconds) = run_stage(stage.as_mut(), &output);
        output = next;
        cpu_s += seconds;
    }
    AutoRun {
        triggered,
        output,
        cpu_s,
    }
}
