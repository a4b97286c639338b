#!/usr/bin/env bash
# Regenerates the seed corpus in fuzz/seeds/<target>/ with the tools `make deps` installs (sox,
# ffmpeg, flac, opusenc, wavpack, protoc) and python3. Seeds are tiny on purpose (under 4 KiB
# each): libFuzzer mutates them, and large inputs only slow it down. Run from anywhere.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
q="-hide_banner -loglevel error -y"

# decode: a tenth of a second or less of a tone in every container and codec lathe reads.
d="$here/decode"; rm -rf "$d"; mkdir -p "$d"
sox -n -r 8000 -c 1 -b 16 "$d/mono16.wav" synth 0.02 sine 440
sox -n -r 8000 -c 2 -b 24 "$d/stereo24.wav" synth 0.01 sine 440
sox -n -r 8000 -c 1 -e floating-point -b 32 "$d/float32.wav" synth 0.01 sine 440
sox -n -r 8000 -c 1 -b 8 "$d/u8.wav" synth 0.02 sine 440
sox -n -r 8000 -c 1 -b 16 "$d/mono16.aiff" synth 0.02 sine 440
sox -n -r 8000 -c 1 -b 16 "$d/mono16.w64" synth 0.02 sine 440
ffmpeg $q -f lavfi -i "sine=f=440:r=8000:d=0.02" -c:a pcm_s16le -rf64 always "$d/rf64.wav"
sox -n -r 8000 -c 1 -b 16 "$tmp/tone.wav" synth 0.05 sine 440
flac -s -f --no-padding --no-seektable --blocksize=192 -o "$d/mono16.flac" "$tmp/tone.wav"
ffmpeg $q -i "$tmp/tone.wav" -c:a libmp3lame -b:a 32k "$d/tone.mp3"
ffmpeg $q -i "$tmp/tone.wav" -c:a libvorbis -q:a 0 "$d/tone.ogg"
opusenc --quiet --bitrate 8 "$tmp/tone.wav" "$d/tone.opus"
ffmpeg $q -i "$tmp/tone.wav" -c:a flac -f ogg "$d/flac.oga"
ffmpeg $q -i "$tmp/tone.wav" -c:a alac "$d/alac.m4a"
ffmpeg $q -i "$tmp/tone.wav" -c:a aac -b:a 16k "$d/aac.m4a"
ffmpeg $q -i "$tmp/tone.wav" -c:a aac -b:a 16k -f adts "$d/tone.aac"
wavpack -q -y "$tmp/tone.wav" -o "$d/tone.wv"

# catalog_manifest: the example album and small manifests of each kind.
c="$here/catalog_manifest"; rm -rf "$c"; mkdir -p "$c"
cp "$repo/examples/demo-album.toml" "$c/demo-album.toml"
cat > "$c/loose.toml" <<'TOML'
[job]
name = "Loose tracks"
priority = 3
profile = "streaming"
outlets = ["streaming", "mp3"]

[[track]]
file = "a.wav"
title = "A"
isrc = "GB-XYZ-74-00001"
fade_in_s = 0.5
fade_curve = "linear"

[[track]]
file = "b.flac"
profile = "cd"
TOML
cat > "$c/album.toml" <<'TOML'
[job]
outlets = ["cd", "vinyl", "opus", "broadcast"]

[[album]]
title = "Northern Lights"
artist = "The Example Band"
upc = "5012345678900"
year = 2024
genre = "Rock"

[[album.track]]
file = "src/1.wav"
title = "Dawn"
isrc = "GBXYZ7400001"
side = "A"

[[album.track]]
file = "src/2.wav"
title = "Dusk"
crossfade_s = 2.0
gap_s = 0.0
side = "B"
TOML

# profile: the six presets.
p="$here/profile"; rm -rf "$p"; mkdir -p "$p"
cp "$repo"/model/src/presets/*.toml "$p/"

# flac_check: the target's input (see fuzz_targets/flac_check.rs) for frames libFLAC made from a
# tone and noise: shape bytes, the samples, the frame.
f="$here/flac_check"; rm -rf "$f"; mkdir -p "$f"
python3 - "$tmp" "$f" <<'PY'
import math, random, struct, subprocess, sys
tmp, out = sys.argv[1], sys.argv[2]
BITS = [8, 12, 16, 20, 24]
RATES = [44100, 48000, 96000, 8000, 192000, 22050, 37800, 11000]
random.seed(7)
def seed(name, channels, bits, frames, rate, level, noise, options):
    samples = []
    for c in range(channels):
        for i in range(frames):
            x = level * math.sin(2 * math.pi * 440 * (c + 1) * i / rate) + noise * random.uniform(-1, 1)
            samples.append(max(-(1 << (bits - 1)), min((1 << (bits - 1)) - 1, round(x * (1 << (bits - 1))))))
    width = (bits + 7) // 8
    raw = bytearray()
    for i in range(frames):
        for c in range(channels):
            raw += samples[c * frames + i].to_bytes(4, "little", signed=True)[:width]
    open(f"{tmp}/in.raw", "wb").write(raw)
    subprocess.run(["flac", "-s", "-f", *options, "--no-padding", "--no-seektable", "--force-raw-format",
                    "--endian=little", "--sign=signed", f"--channels={channels}", f"--bps={bits}",
                    f"--sample-rate={rate}", f"--blocksize={frames}", "-o", f"{tmp}/out.flac", f"{tmp}/in.raw"],
                   check=True)
    flac = open(f"{tmp}/out.flac", "rb").read()
    at = 4
    while True:
        last, length = flac[at] & 0x80, int.from_bytes(flac[at + 1:at + 4], "big")
        at += 4 + length
        if last:
            break
    frame = flac[at:]
    shape = bytes([channels - 1, BITS.index(bits)]) + (frames - 1).to_bytes(2, "little") + bytes([RATES.index(rate)])
    planar = b"".join(s.to_bytes(4, "little", signed=True)[:width] for s in samples)
    open(f"{out}/{name}", "wb").write(shape + planar + frame)
seed("mono16_fixed", 1, 16, 64, 44100, 0.5, 0.0, ["-0"])
seed("stereo16_lpc", 2, 16, 192, 48000, 0.5, 0.01, ["-8"])
seed("stereo24_lpc", 2, 24, 100, 96000, 0.3, 0.001, ["-8"])
seed("mono8_verbatim", 1, 8, 32, 8000, 0.0, 1.0, ["-0"])
seed("quad16", 4, 16, 40, 37800, 0.4, 0.05, ["-5"])
seed("stereo8_silence", 2, 8, 24, 11000, 0.0, 0.0, ["-5"])
PY

# cue_ddp: bytes the target reads with `arbitrary`: a few of (seeded) random content.
u="$here/cue_ddp"; rm -rf "$u"; mkdir -p "$u"
python3 -c '
import random, sys
for i in (1, 2, 3):
    random.seed(i)
    open(f"{sys.argv[1]}/random{i}", "wb").write(bytes(random.getrandbits(8) for _ in range(200 * i)))
' "$u"

# proto: a selector byte (see fuzz_targets/proto.rs), then the message (protoc --encode).
r="$here/proto"; rm -rf "$r"; mkdir -p "$r"
digest=$(printf 'a%.0s' $(seq 64))
encode() { # selector message name < text
  { printf "\\x$(printf %02x "$1")"; protoc -I "$repo/proto/proto" --encode="lathe.v1.$2" lathe.proto; } > "$r/$3"
}
profile=$(python3 -c 'import json,sys; print(json.dumps(open(sys.argv[1]).read()))' "$repo/model/src/presets/streaming.toml")
encode 0 SubmitJobRequest submit_tracks <<TXT
name: "Back catalogue" priority: 5 profile_toml: $profile
tracks { source_digest: "$digest" source_name: "01 Dawn.wav" }
tracks { source_digest: "$digest" source_name: "01 dawn.flac" output_name: "b/dawn.flac" tags_json: "{\"title\":\"Dawn\"}" }
TXT
work='{\"kind\":\"measure\",\"album\":\"A\",\"track\":0}'
encode 1 JobTasks job_tasks_graph <<TXT
graph { kind: "measure" work_json: "$work" source_digests: "$digest" source_names: "x.wav" }
graph { kind: "measure" work_json: "$work" needs: 0 inputs_from: 0 source_digests: "$digest" source_names: "y.wav" }
TXT
encode 2 CompleteTaskRequest complete_graph <<TXT
task_id: "job.0000001" worker_id: "w1" report_json: "{\"files\":[{\"path\":\"A/cd/A.cue\"}]}"
outputs { path: "A/cd/A.cue" digest: "$digest" delivered: true }
TXT
encode 3 BlobChunk blob_chunk <<TXT
digest: "$digest" data: "abc"
TXT
