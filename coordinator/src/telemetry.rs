//! Logging and OpenTelemetry for the farm's processes.
//!
//! [`Telemetry::init`] sets up what every farm binary needs: log lines on standard error (filtered by
//! `LATHE_LOG`, default `info`) and, when `OTEL_EXPORTER_OTLP_ENDPOINT` names a collector (e.g.
//! `http://127.0.0.1:4317`), every span exported to it over OTLP/gRPC with the process's
//! `service.name`. [`crate::trace`] carries the context from process to process, so a collector
//! shows one trace per job with the CLI's, the coordinator's and every worker's spans in it.
//! Without the variable nothing is exported and nothing is started.
//!
//! `LATHE_LOG_FORMAT=json` writes the log as JSON lines (one object per event, with its span's
//! fields), for a log collector; anything else writes plain text.

use opentelemetry::trace::TracerProvider;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::error::{Error, Result};

/// The environment variable naming the OTLP/gRPC collector (the OpenTelemetry convention).
pub const OTLP_ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// The environment variable choosing the log format: `json` for JSON lines.
pub const LOG_FORMAT_VAR: &str = "LATHE_LOG_FORMAT";

/// The process's logging and exporter; spans still buffered are sent when it is dropped.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Installs the global subscriber for `service_name` (call once, from `main`, inside the Tokio
    /// runtime: the exporter's gRPC client runs on it).
    ///
    /// # Errors
    /// [`Error::Telemetry`] when the exporter cannot be built or a subscriber is already installed.
    pub fn init(service_name: &str) -> Result<Self> {
        Self::init_with_filter(service_name, "info")
    }

    /// [`init`](Self::init) with `default_filter` in place of `info` when `LATHE_LOG` is not set.
    ///
    /// # Errors
    /// As [`init`](Self::init).
    pub fn init_with_filter(service_name: &str, default_filter: &str) -> Result<Self> {
        let filter = tracing_subscriber::EnvFilter::try_from_env("LATHE_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
        let json = std::env::var(LOG_FORMAT_VAR)
            .is_ok_and(|format| format.trim().eq_ignore_ascii_case("json"));
        let provider = match std::env::var(OTLP_ENDPOINT_VAR) {
            Ok(endpoint) if !endpoint.trim().is_empty() => {
                Some(exporting_provider(endpoint.trim(), service_name)?)
            }
            _ => None,
        };
        // Spans are exported at `info` and above whatever the log's filter: `LATHE_LOG=warn` (the
        // CLI's default) quiets the log, not the trace.
        let spans = provider.as_ref().map(|provider| {
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer(service_name.to_owned()))
                .with_filter(tracing_subscriber::filter::LevelFilter::INFO)
        });
        let (text, json) = if json {
            let layer = tracing_subscriber::fmt::layer()
                .json()
                .with_current_span(true)
                .with_span_list(false)
                .with_writer(std::io::stderr)
                .with_filter(filter);
            (None, Some(layer))
        } else {
            let layer = tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(filter);
            (Some(layer), None)
        };
        tracing_subscriber::registry()
            .with(spans)
            .with(text)
            .with(json)
            .try_init()
            .map_err(|e| Error::Telemetry(e.to_string()))?;
        Ok(Self { provider })
    }

    /// `true` when spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            // Flushes what is still buffered; a collector that went away is not worth a panic.
            let _ = provider.shutdown();
        }
    }
}

/// A tracer provider that batches spans to the OTLP/gRPC collector at `endpoint`, naming the
/// process `service_name`.
///
/// # Errors
/// [`Error::Telemetry`] when the exporter cannot be built (a malformed endpoint).
pub fn exporting_provider(endpoint: &str, service_name: &str) -> Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| Error::Telemetry(format!("OTLP exporter for {endpoint}: {e}")))?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(service_name.to_owned())
                .build(),
        )
        .build())
}
