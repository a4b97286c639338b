# lathe: the two commands a new user needs are `make demo` and `make test`.
CARGO ?= cargo
DEMO_DIR ?= target/demo

.PHONY: demo demo-album test deps build-deps check fmt lint modules bench bench-restore bench-farm bench-lossy scan-decode build clean farm farm-stop fuzz deny

# The demo runs the debug build of every binary of the workspace, built in one go as `make test`
# builds them (one feature set for every crate), so that the tests reuse all the demo compiled.
DEV_BIN := $(or $(CARGO_TARGET_DIR),target)/debug

## Generate a rough demo album and master it on this machine (no servers needed).
demo: build-deps
	$(CARGO) build --quiet --workspace --bins
	$(DEV_BIN)/lathe demo $(DEMO_DIR)

## The demo album delivered to every outlet from examples/demo-album.toml (after `make demo`).
demo-album: demo
	cp examples/demo-album.toml $(DEMO_DIR)/
	$(DEV_BIN)/lathe master $(DEMO_DIR)/demo-album.toml --out $(DEMO_DIR)/delivery

## Run every test (installs the codec tools the tests use to make fixtures, if missing).
test: deps
	$(CARGO) test --workspace

# apt-get runs as root, through sudo when you are not root.
SUDO := $(shell if [ "$$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then echo sudo; fi)
APT_INSTALL = $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get

## Debian packages the build needs: cmake builds the bundled libopus (Opus deliverables and
## sources) and libwavpack (WavPack sources), whose bindings need libclang; protoc generates the
## gRPC code. (LAME is built by its crate with cc.)
build-deps:
	@command -v cmake >/dev/null && command -v protoc >/dev/null && \
	  { ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1 || ls /usr/lib/*/libclang*.so* >/dev/null 2>&1; } || { \
	  echo "installing cmake, protobuf-compiler and libclang-dev (apt-get), which the build needs"; \
	  $(APT_INSTALL) update -qq && \
	  $(APT_INSTALL) install -y -qq --no-install-recommends cmake protobuf-compiler libclang-dev >/dev/null; }

## Debian packages the tests need besides: ffmpeg, flac, sox, opus-tools and wavpack make fixtures in
## other codecs and check FLAC output; nats-server and etcd run the farm tests and `make farm`;
## chromium and chromium-driver (chromedriver) run the dashboard's browser test.
deps: build-deps
	@command -v ffmpeg >/dev/null && command -v flac >/dev/null && command -v sox >/dev/null && \
	  command -v opusenc >/dev/null && command -v wavpack >/dev/null && \
	  command -v nats-server >/dev/null && command -v etcd >/dev/null && \
	  command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  echo "installing ffmpeg, flac, sox, opus-tools, wavpack, nats-server, etcd-server, chromium and chromium-driver (apt-get)"; \
	  $(APT_INSTALL) update -qq && \
	  $(APT_INSTALL) install -y -qq --no-install-recommends ffmpeg flac sox opus-tools wavpack \
	    nats-server etcd-server chromium chromium-driver >/dev/null; }

## Formatting, lints and no cycles between modules, as before every commit.
check: fmt lint modules

fmt:
	$(CARGO) fmt --all -- --check

lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## No cycles between the modules of any crate (the test lists each cycle and where its edges are).
modules:
	$(CARGO) test -p lathe-tests --test repository module_cycles

build: build-deps
	$(CARGO) build --release -p lathe-cli

## Speed and memory: x-realtime per stage and chain, peak RSS, ffmpeg for comparison.
bench: deps
	bash engine/benches/run.sh

clean:
	$(CARGO) clean

## Restoration quality and speed against ffmpeg on 30 s excerpts of the corpus (../shared/corpus.sh),
## every damage model of lathe_synth::damage (SI-SDR improvement distributions, x-realtime per core).
bench-restore: deps
	$(CARGO) bench -p lathe-engine --bench restore -- $(BENCH_RESTORE_ARGS)

## The farm on real servers: gRPC streaming, a catalogue on the farm against `lathe master`, state at
## scale (a million finished tasks and a live 100,000-task job in etcd) and the fixed cost per task
## with its breakdown. LATHE_BENCH_ONLY=streaming|farm|scale|fixed runs one; the bench's doc comment
## lists the other knobs.
bench-farm: deps
	$(CARGO) bench -p lathe-tests --bench farm

## Decoding against ffmpeg over the development corpus (../shared/corpus.sh install first):
## every file ffmpeg decodes, lathe must decode (lengths compared and listed).
scan-decode: deps
	bash engine/benches/decode_scan.sh

## Lossy deliverables against the ceiling: MP3 320, MP3 V0 and Opus of 45 corpus excerpts (30 s) and
## the demo album, through the re-render loop; overs, extra headroom and renders per codec.
## The corpus list comes from CORPUS (../shared/corpus.sh); BENCH_LOSSY_ARGS e.g. --tracks 10 --seconds 20.
CORPUS ?= ../shared/corpus.sh
CORPUS_GROUPS ?= asc singularity blupi hyperrogue nexuiz
bench-lossy: build-deps
	for g in $(CORPUS_GROUPS); do bash $(CORPUS) list $$g; done | \
	  $(CARGO) bench -p lathe-engine --profile dev --bench lossy_ceiling -- --list - $(BENCH_LOSSY_ARGS)

## Fuzz every target in fuzz/ (decoders, manifest and profile parsers, the FLAC frame check, the CD
## paperwork, the coordinator's protobuf requests) for FUZZ_S seconds each from its seed corpus, and
## print each one's executions and whether it crashed (a crash's input goes to fuzz/artifacts/).
## `make fuzz FUZZ_S=600` is the long run; FUZZ_TARGETS="decode proto" runs some. Needs nightly Rust
## and cargo-fuzz (`cargo install cargo-fuzz`).
FUZZ_S ?= 30
FUZZ_TARGETS ?=
fuzz: build-deps
	FUZZ_S=$(FUZZ_S) bash fuzz/run.sh $(FUZZ_TARGETS)

## Licences, sources and duplicate versions of every dependency against deny.toml (advisories are
## left out: their database cannot be downloaded here). CI runs it after the tests. Installs
## cargo-deny when missing: an unoptimised build, which compiles in about 1.5 minutes on 2 cores
## instead of about 6.6 and still checks this tree in a few seconds.
CARGO_DENY_VERSION := 0.20.2
deny:
	@$(CARGO) deny --version >/dev/null 2>&1 || { \
	  echo "installing cargo-deny $(CARGO_DENY_VERSION) (cargo install --debug --locked)"; \
	  $(CARGO) install --quiet --debug --locked cargo-deny --version $(CARGO_DENY_VERSION); }
	$(CARGO) deny check bans licenses sources

## A local farm on loopback (nats-server, etcd, coordinator, two workers); data and logs in farm/.
farm: deps
	bash deploy/local-farm.sh start farm

## Stop exactly the processes `make farm` started.
farm-stop:
	bash deploy/local-farm.sh stop farm
