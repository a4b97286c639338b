#!/usr/bin/env bash
# Decoding against ffmpeg on real files: every file ffmpeg decodes without error, lathe must decode
# too. Lengths are compared and every difference listed (not a failure: at the ends of a lossy
# stream the two trim differently; for Ogg, lathe ends exactly at the last granule position).
#   bash engine/benches/decode_scan.sh [FILE...]    (default: every track of ../shared/corpus.sh list)
#   make scan-decode
# Prints one line per file that disagrees and a summary of counts. Exit 1 if lathe refuses a file
# ffmpeg decodes.
set -euo pipefail
cd "$(dirname "$0")/../.."
corpus=${LATHE_CORPUS_SCRIPT:-../shared/corpus.sh}
# LATHE=path/to/lathe scans with a binary already built; else a release build.
if [ -z "${LATHE:-}" ]; then
  cargo build --quiet --release -p lathe-cli --bin lathe
fi
lathe=${LATHE:-target/release/lathe}
if [ $# -gt 0 ]; then files=("$@"); else mapfile -t files < <(bash "$corpus" list); fi

lathe_errors=$(mktemp)
trap 'rm -f "$lathe_errors"' EXIT
scanned=0 both=0 ffmpeg_only=0 lathe_only=0 neither=0 length_differs=0 noted=0
for file in "${files[@]}"; do
  scanned=$((scanned + 1))
  # ffmpeg: the first audio stream as 32-bit float at its own rate; count the frames.
  channels=$(ffprobe -v error -select_streams a:0 -show_entries stream=channels -of csv=p=0 "$file" 2>/dev/null | head -n 1 | tr -dc 0-9 || true)
  ffmpeg_frames=""
  # (pipefail: a decode error of ffmpeg's fails the substitution.)
  if [ -n "$channels" ] && bytes=$(ffmpeg -nostdin -v error -xerror -i "$file" -map 0:a:0 -f f32le - 2>/dev/null | wc -c) \
      && [ "$bytes" -gt 0 ]; then
    ffmpeg_frames=$((bytes / (4 * channels)))
  fi
  lathe_json=$("$lathe" analyze --json "$file" 2>"$lathe_errors" || true)
  lathe_frames=$(printf '%s' "$lathe_json" | python3 -c '
import json, sys
try:
    a = json.load(sys.stdin)[0]
    print(round(a["duration_s"] * a["sample_rate"]))
except Exception:
    pass' )
  name=${file##*/}
  if [ -n "$ffmpeg_frames" ] && [ -n "$lathe_frames" ]; then
    both=$((both + 1))
    diff=$((lathe_frames - ffmpeg_frames)); diff=${diff#-}
    if [ "$diff" -gt 0 ]; then
      length_differs=$((length_differs + 1))
      echo "length  $name: lathe $lathe_frames frames, ffmpeg $ffmpeg_frames"
    fi
  elif [ -n "$ffmpeg_frames" ]; then
    lathe_error=$(head -c 300 "$lathe_errors")
    ffmpeg_only=$((ffmpeg_only + 1))
    echo "refused $name: ffmpeg decodes $ffmpeg_frames frames; lathe: $lathe_error"
  elif [ -n "$lathe_frames" ]; then
    lathe_only=$((lathe_only + 1))
    echo "lathe-only $name: lathe decodes $lathe_frames frames; ffmpeg refuses it"
  else
    neither=$((neither + 1))
  fi
done
echo "scanned $scanned files: both decode $both (length differs: $length_differs), ffmpeg only $ffmpeg_only, lathe only $lathe_only, neither $neither"
[ "$ffmpeg_only" -eq 0 ]
