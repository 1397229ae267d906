"""Telemetry shared by every skewless process: tracing set-up, JSON logs, a local OTLP receiver."""
