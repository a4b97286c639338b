#!/usr/bin/env bash
# `make bench`: lathe's speed and memory, with ffmpeg for comparison.
#
#   1. builds `lathe` and the `throughput` bench (release);
#   2. generates a 5-minute 44.1 kHz stereo track and a 60-minute 96 kHz stereo track (24-bit WAV,
#      about 2 GB; both are generated once and reused, BENCH_REGENERATE=1 makes them again);
#   3. `throughput stages` on the 5-minute track: x-realtime per core of decode, encode, resample,
#      every stage, the meters and the whole `streaming` chain (render::master_track);
#   4. peak RSS, wall time and x-realtime of `lathe master -p streaming -j 1` on both tracks;
#   5. where ffmpeg is installed, the nearest ffmpeg chain (highpass,acompressor,loudnorm) on the
#      5-minute track, single-threaded, and the ratio of the two;
#   6. on the development corpus (../shared/corpus.sh install), `lathe master -j 1` on a few real
#      Vorbis, MP3 and Opus tracks against ffmpeg's chain on the same files, CPU seconds;
#   7. a summary of the headline numbers.
#
# Every timed run first finds its source in the page cache (it is read through, untimed, just
# before), lathe's and ffmpeg's alike: virtual machines that page out idle memory within seconds
# would otherwise make some runs wait on the disk and others not.
#
# Numbers only: nothing here fails because something is slow. A step that fails (the engine is
# work in progress) is reported and the others still run; the exit status is then 1. Work files go
# to target/bench (git-ignored). Knobs: BENCH_DIR, BENCH_RUNS (best of, default 3),
# BENCH_LONG_MINUTES (default 60), BENCH_SKIP_LONG=1 (skip the long track), BENCH_REGENERATE=1,
# BENCH_CORPUS_TRACKS (tracks per codec, default 3), BENCH_SKIP_CORPUS=1, CORPUS_SH.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BENCH_DIR="${BENCH_DIR:-$TARGET_DIR/bench}"
RUNS="${BENCH_RUNS:-3}"
SHORT_MINUTES=5
SHORT_RATE=44100
LONG_MINUTES="${BENCH_LONG_MINUTES:-60}"
LONG_RATE=96000
SHORT="$BENCH_DIR/pop-${SHORT_MINUTES}min-44k.wav"
LONG="$BENCH_DIR/pop-${LONG_MINUTES}min-96k.wav"
mkdir -p "$BENCH_DIR"

FAILED=0
section() { printf '\n=== %s\n' "$*"; }
# awk does the arithmetic: calc 'expression' (prints with 1 decimal unless a format is given).
calc() { awk "BEGIN { printf \"${2:-%.1f}\", $1 }"; }
# ratio A B: A / B to two decimals, or n/a when either is not a number.
ratio() {
  if [[ "$1" =~ ^[0-9.]+$ && "$2" =~ ^[0-9.]+$ ]]; then calc "$1 / $2" '%.2f'; else echo "n/a"; fi
}
load() { cut -d ' ' -f 1-3 /proc/loadavg; }

section "build (release)"
cargo build --release -p lathe-cli
LATHE="$TARGET_DIR/release/lathe"
THROUGHPUT="$(cargo bench -p lathe-engine --bench throughput --no-run \
    --message-format=json-render-diagnostics \
  | grep -o '"executable":"[^"]*throughput[^"]*"' | tail -n 1 | cut -d '"' -f 4 || true)"
if [[ -z "$THROUGHPUT" || ! -x "$THROUGHPUT" ]]; then
  echo "run.sh: cannot find the throughput bench executable" >&2
  exit 1
fi
echo "lathe:      $LATHE"
echo "throughput: $THROUGHPUT"
echo "machine:    $(nproc) cores, load average $(load) (other work on the machine slows every figure)"

if [[ ! -x /usr/bin/time ]]; then
  echo "installing GNU time (apt-get) for peak-RSS figures"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null
fi
HAVE_FFMPEG=0
command -v ffmpeg >/dev/null && HAVE_FFMPEG=1

section "test material"
generate() { # generate PATH MINUTES RATE
  if [[ -s "$1" && "${BENCH_REGENERATE:-0}" != 1 ]]; then
    echo "reusing $1 ($(du -h "$1" | cut -f 1))"
  else
    "$THROUGHPUT" generate "$1" --minutes "$2" --rate "$3" --bits 24
  fi
}
generate "$SHORT" "$SHORT_MINUTES" "$SHORT_RATE"
if [[ "${BENCH_SKIP_LONG:-0}" != 1 ]]; then
  generate "$LONG" "$LONG_MINUTES" "$LONG_RATE"
fi

section "components, single thread, $SHORT_MINUTES-minute ${SHORT_RATE} Hz stereo (throughput stages)"
STAGES_LOG="$BENCH_DIR/stages.log"
"$THROUGHPUT" stages "$SHORT" --runs "$RUNS" --work "$BENCH_DIR/stages" | tee "$STAGES_LOG" \
  || FAILED=1
result_field() { # result_field NAME KEY: a figure from a RESULT line of the stages run
  { grep "^RESULT name=$1 " "$STAGES_LOG" | tail -n 1 | tr ' ' '\n' | grep "^$2=" | cut -d '=' -f 2; } \
    || echo "n/a"
}
CHAIN_XRT="$(result_field streaming_chain xrt)"
CHAIN_PASSES="$(result_field streaming_chain passes)"
CHAIN_PER_PASS="$(result_field streaming_chain per_pass_xrt)"

# measured NAME AUDIO_SECONDS COMMAND...: reads $WARM through (untimed), then runs COMMAND under
# GNU time (output in NAME.log) and sets
# WALL_S, CPU_S, RSS_MB, XRT (audio seconds per wall second) and CPU_XRT; if it fails, reports it,
# sets them to "failed" and returns 1.
measured() {
  local name="$1" audio_s="$2"
  shift 2
  local times="$BENCH_DIR/$name.time" log="$BENCH_DIR/$name.log"
  local status=0
  # Every measured command finds the source in the page cache (see the note at the top).
  cat "$WARM" >/dev/null
  /usr/bin/time -v -o "$times" "$@" >"$log" 2>&1 || status=$?
  if (( status != 0 )); then
    echo "run.sh: $name failed (exit status $status); the end of $log:" >&2
    tail -n 20 "$log" >&2
    printf 'RESULT name=%s error="exit status %s"\n' "$name" "$status"
    FAILED=1
    WALL_S="failed" CPU_S="failed" RSS_MB="failed" XRT="failed" CPU_XRT="failed"
    return 1
  fi
  WALL_S="$(awk -F ': ' '/Elapsed \(wall clock\)/ {
      n = split($2, t, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + t[i]; print s }' "$times")"
  CPU_S="$(awk -F ': ' '/User time/ {u = $2} /System time/ {s = $2} END {print u + s}' "$times")"
  RSS_MB="$(awk -F ': ' '/Maximum resident set size/ {printf "%.1f", $2 / 1024}' "$times")"
  XRT="$(calc "$audio_s / $WALL_S")"
  CPU_XRT="$(calc "$audio_s / $CPU_S")"
  printf 'RESULT name=%s audio_s=%s wall_s=%s cpu_s=%s xrt=%s cpu_xrt=%s peak_rss_mb=%s\n' \
    "$name" "$audio_s" "$WALL_S" "$CPU_S" "$XRT" "$CPU_XRT" "$RSS_MB"
}

# master NAME INPUT MINUTES: `lathe master -j 1` under GNU time; keeps the reports, not the audio.
master() {
  local out="$BENCH_DIR/$1"
  rm -rf "$out"
  MASTER_PASSES="?"
  WARM="$2"
  measured "$1" "$(( $3 * 60 ))" "$LATHE" master "$2" -p streaming -o "$out" -j 1 || return 0
  local passes
  passes="$(sed -n 's/.*"passes": *\([0-9]*\).*/\1/p' "$out"/*.report.json | head -n 1 || true)"
  if [[ -n "$passes" ]]; then
    MASTER_PASSES="$passes"
  fi
  rm -f "$out"/*.flac
}

section "lathe master -p streaming -j 1, $SHORT_MINUTES-minute ${SHORT_RATE} Hz stereo"
master master_short "$SHORT" "$SHORT_MINUTES"
SHORT_RSS="$RSS_MB" SHORT_XRT="$XRT" SHORT_CPU_XRT="$CPU_XRT" SHORT_WALL="$WALL_S"
SHORT_PASSES="$MASTER_PASSES"
echo "wall ${SHORT_WALL} s, ${SHORT_XRT}x realtime (${SHORT_CPU_XRT}x per CPU second)," \
  "${SHORT_PASSES} passes, peak RSS ${SHORT_RSS} MB"

LONG_RSS="skipped" LONG_XRT="skipped" LONG_WALL="skipped"
if [[ "${BENCH_SKIP_LONG:-0}" != 1 ]]; then
  section "lathe master -p streaming -j 1, $LONG_MINUTES-minute ${LONG_RATE} Hz stereo (takes minutes)"
  master master_long "$LONG" "$LONG_MINUTES"
  LONG_RSS="$RSS_MB" LONG_XRT="$XRT" LONG_WALL="$WALL_S"
  echo "wall ${LONG_WALL} s, ${LONG_XRT}x realtime (${CPU_XRT}x per CPU second)," \
    "${MASTER_PASSES} passes, peak RSS ${LONG_RSS} MB"
fi

FF_XRT="n/a" FF_CPU_XRT="n/a" FF_NULL_XRT="n/a" FF_RSS="n/a"
RATIO="n/a" RATIO_CLI="n/a" RATIO_CPU="n/a" RATIO_PASS="n/a"
if [[ "$HAVE_FFMPEG" == 1 ]]; then
  section "ffmpeg highpass,acompressor,loudnorm, single thread, same $SHORT_MINUTES-minute file"
  # loudnorm (one-pass, dynamic mode) upsamples to 192 kHz internally and outputs 192 kHz unless told
  # otherwise: -ar 44100 delivers at the source rate, as lathe's streaming profile does.
  FF_FILTERS="highpass=f=20,acompressor,loudnorm=I=-14:TP=-1"
  FF=(ffmpeg -y -hide_banner -nostats -threads 1 -filter_threads 1 -i "$SHORT" -af "$FF_FILTERS"
    -ar "$SHORT_RATE")
  WARM="$SHORT"
  measured ffmpeg_flac "$(( SHORT_MINUTES * 60 ))" \
    "${FF[@]}" -c:a flac -sample_fmt s32 "$BENCH_DIR/ffmpeg-streaming.flac" || true
  FF_XRT="$XRT" FF_CPU_XRT="$CPU_XRT" FF_RSS="$RSS_MB" FF_WALL="$WALL_S"
  echo "to 24-bit FLAC: wall ${FF_WALL} s, ${FF_XRT}x realtime, peak RSS ${FF_RSS} MB"
  measured ffmpeg_null "$(( SHORT_MINUTES * 60 ))" "${FF[@]}" -f null - || true
  FF_NULL_XRT="$XRT"
  echo "to the null muxer (filters only): wall ${WALL_S} s, ${FF_NULL_XRT}x realtime"
  rm -f "$BENCH_DIR/ffmpeg-streaming.flac"
  RATIO="$(ratio "$CHAIN_XRT" "$FF_XRT")"
  RATIO_CLI="$(ratio "$SHORT_XRT" "$FF_XRT")"
  # On a shared machine neither process gets a whole core all the time: per CPU second is fairer.
  RATIO_CPU="$(ratio "$SHORT_CPU_XRT" "$FF_CPU_XRT")"
  RATIO_PASS="$(ratio "$CHAIN_PER_PASS" "$FF_XRT")"
  printf 'RESULT name=ratio_lathe_to_ffmpeg engine=%s cli=%s cli_cpu=%s per_pass=%s\n' \
    "$RATIO" "$RATIO_CLI" "$RATIO_CPU" "$RATIO_PASS"
else
  section "ffmpeg not installed: no comparison"
fi

# Compressed sources, as users' catalogues hold them: `lathe master -j 1` on a folder of real tracks
# of each codec group of the development corpus, against ffmpeg's chain on the same files, one after
# another, each to 24-bit FLAC at the rate lathe delivers (the source's, at least 44.1 kHz). Both as
# whole commands, CPU seconds (user + system) over the same audio.
CORPUS_SH="${CORPUS_SH:-$ROOT/../shared/corpus.sh}"
CORPUS_TRACKS="${BENCH_CORPUS_TRACKS:-3}"
CORPUS_ROWS=()
# corpus_codec NAME GROUP: the first $CORPUS_TRACKS tracks of GROUP that ffprobe reads.
corpus_codec() {
  local name="$1" group="$2" dir="$BENCH_DIR/corpus-$1" audio_s=0 count=0 file seconds
  rm -rf "$dir"
  mkdir -p "$dir/src"
  while IFS= read -r file && (( count < CORPUS_TRACKS )); do
    seconds="$(ffprobe -v error -show_entries format=duration -of csv=p=0 "$file" 2>/dev/null || true)"
    [[ "$seconds" =~ ^[0-9.]+$ ]] || continue
    count=$((count + 1))
    ln -s "$file" "$dir/src/$(printf '%02d' "$count").${file##*.}"
    cat "$file" >/dev/null
    audio_s="$(calc "$audio_s + $seconds" '%.3f')"
  done < <(bash "$CORPUS_SH" list "$group")
  if (( count == 0 )); then
    echo "no readable tracks in the corpus group $group"
    return 0
  fi
  echo "$count tracks of $group, $(calc "$audio_s / 60") minutes"
  WARM=/dev/null
  measured "corpus_${name}_lathe" "$audio_s" "$LATHE" master "$dir/src" -p streaming \
    -o "$dir/out" -j 1 || return 0
  local lathe_cpu="$CPU_S" lathe_xrt="$CPU_XRT" lathe_rss="$RSS_MB"
  measured "corpus_${name}_ffmpeg" "$audio_s" bash -c '
    for f in "$1"/src/*; do
      rate=$(ffprobe -v error -select_streams a:0 -show_entries stream=sample_rate -of csv=p=0 "$f")
      (( rate < 44100 )) && rate=44100
      ffmpeg -y -hide_banner -nostats -loglevel error -threads 1 -filter_threads 1 -i "$f" \
        -af "$2" -ar "$rate" -c:a flac -sample_fmt s32 "$1/ffmpeg.flac" || exit 1
    done' _ "$dir" "highpass=f=20,acompressor,loudnorm=I=-14:TP=-1" || return 0
  local ratio
  ratio="$(ratio "$CPU_S" "$lathe_cpu")"
  echo "lathe ${lathe_cpu} CPU s (${lathe_xrt}x per core, peak RSS ${lathe_rss} MB)," \
    "ffmpeg ${CPU_S} CPU s (${CPU_XRT}x): lathe is ${ratio}x ffmpeg per core"
  printf 'RESULT name=corpus_%s_ratio tracks=%s audio_s=%s lathe_cpu_s=%s ffmpeg_cpu_s=%s ratio=%s\n' \
    "$name" "$count" "$audio_s" "$lathe_cpu" "$CPU_S" "$ratio"
  CORPUS_ROWS+=("$name|$count|$ratio|$lathe_xrt|$CPU_XRT|$lathe_rss")
  rm -rf "$dir/out" "$dir/ffmpeg.flac"
}
if [[ "$HAVE_FFMPEG" == 1 && "${BENCH_SKIP_CORPUS:-0}" != 1 ]] \
  && [[ -n "$(bash "$CORPUS_SH" list asc 2>/dev/null)" ]]; then
  for codec in vorbis:singularity mp3:asc opus:warzone; do
    section "compressed sources: ${codec%%:*} (corpus group ${codec#*:}), lathe master -j 1 against ffmpeg"
    corpus_codec "${codec%%:*}" "${codec#*:}"
  done
else
  section "compressed sources: skipped (needs ffmpeg and ../shared/corpus.sh install)"
fi

section "summary"
row() { printf '%-70s %10s  %s\n' "$@"; }
row "streaming chain, x-realtime per core (master_track, ${CHAIN_PASSES} passes)" "${CHAIN_XRT}x" ""
row "  the same per pass" "${CHAIN_PER_PASS}x" ""
row "lathe master -j 1, ${SHORT_MINUTES} min ${SHORT_RATE} Hz (wall)" "${SHORT_XRT}x" \
  "${SHORT_WALL} s"
row "  the same per CPU second" "${SHORT_CPU_XRT}x" ""
row "ffmpeg highpass,acompressor,loudnorm -> 24-bit FLAC, 1 thread (wall)" "${FF_XRT}x" \
  "per CPU second ${FF_CPU_XRT}x; null muxer ${FF_NULL_XRT}x"
row "ratio lathe / ffmpeg, whole command (target >= 6x)" "${RATIO}x" \
  "CLI ${RATIO_CLI}x; CLI per CPU second ${RATIO_CPU}x"
row "ratio lathe per pass / ffmpeg" "${RATIO_PASS}x" ""
row "peak RSS lathe master, ${SHORT_MINUTES} min ${SHORT_RATE} Hz" "${SHORT_RSS} MB" \
  "ffmpeg: ${FF_RSS} MB"
if [[ "$LONG_RSS" == skipped ]]; then
  row "peak RSS lathe master, ${LONG_MINUTES} min ${LONG_RATE} Hz" "skipped" "(BENCH_SKIP_LONG=1)"
else
  row "peak RSS lathe master, ${LONG_MINUTES} min ${LONG_RATE} Hz" "${LONG_RSS} MB" \
    "target < 200 MB; wall ${LONG_WALL} s, ${LONG_XRT}x realtime"
fi
for corpus_row in "${CORPUS_ROWS[@]}"; do
  IFS='|' read -r name count ratio lathe_xrt ff_xrt rss <<<"$corpus_row"
  target=8
  [[ "$name" == opus ]] && target=6
  row "corpus, $count $name tracks: lathe master -j 1 / ffmpeg per core (target >= ${target}x)" \
    "${ratio}x" "lathe ${lathe_xrt}x, ffmpeg ${ff_xrt}x realtime per core; peak RSS ${rss} MB"
done
echo "load average at the end: $(load)"
if (( FAILED )); then
  echo "run.sh: some steps failed (see RESULT ... error= above)" >&2
  exit 1
fi
