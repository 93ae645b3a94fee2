//! The call-records side of the capacity bench (`--records`, `--webhooks`, `--pg-outage`): which
//! database the gateways write to, the Twilio webhooks that add a call's other writes, and the
//! probe that reads the PostgreSQL writer's figures from each gateway's `/metrics`.
//!
//! With `--webhooks` each call makes the writes a real call makes: `created` (the voice webhook,
//! sent to the *other* gateway of the fleet, as a load balancer may), `started` (the stream),
//! three status callbacks spread evenly over the media phase, and `ended` (with its transcript,
//! empty for the echo agent): six per call.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures_util::StreamExt as _;
use switchboard::twilio::signature::{self, Algorithm};

/// Where a row's gateways keep their call records.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Backend {
    /// Each gateway its own SQLite file (the default; the baseline).
    Sqlite,
    /// Every gateway of the row on one database of a throwaway PostgreSQL server.
    Postgres,
}

impl Backend {
    pub fn parse(list: &str) -> anyhow::Result<Vec<Backend>> {
        let mut out = Vec::new();
        for name in list.split(',').map(str::trim) {
            let backend = match name {
                "sqlite" => Backend::Sqlite,
                "postgres" => Backend::Postgres,
                other => bail!("--records {other:?}: sqlite or postgres"),
            };
            if !out.contains(&backend) {
                out.push(backend);
            }
        }
        Ok(out)
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    /// The `[records]` table of gateway `instance`: a SQLite file in `dir`, or `url`.
    pub fn config(self, dir: &std::path::Path, url: Option<&str>, instance: &str) -> String {
        match (self, url) {
            (Backend::Postgres, Some(url)) => {
                format!("url = \"{url}\"\ninstance = \"{instance}\"")
            }
            _ => format!("path = \"{}\"", dir.join("calls.db").display()),
        }
    }
}

/// Status callbacks per call with `--webhooks`, spread evenly over the media phase.
pub const STATUS_CALLBACKS: usize = 3;

/// Webhook requests in flight at once while the calls open.
const WEBHOOK_CONCURRENCY: usize = 32;

/// The status each of a call's callbacks reports (none terminal: the call is still on).
const STATUSES: [&str; STATUS_CALLBACKS] = ["initiated", "ringing", "in-progress"];

/// A signed, form-encoded Twilio webhook: `POST http://{address}{path}` with `params`; errors
/// unless the gateway answers 2xx.
pub async fn post_webhook(
    http: &reqwest::Client,
    token: &str,
    address: &str,
    path: &str,
    params: &[(String, String)],
) -> anyhow::Result<()> {
    let url = format!("http://{address}{path}");
    let sig = signature::compute(token, &url, params, Algorithm::HmacSha1);
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    let response = http
        .post(&url)
        .header("x-twilio-signature", sig)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .with_context(|| format!("POST {path}"))?;
    if !response.status().is_success() {
        bail!("POST {path}: {}", response.status());
    }
    Ok(())
}

/// The voice webhook's parameters for call `call_sid`.
pub fn voice_params(call_sid: &str, i: usize) -> Vec<(String, String)> {
    vec![
        ("CallSid".into(), call_sid.into()),
        ("From".into(), format!("+1555{:07}", i)),
        ("To".into(), "+15550000000".into()),
        ("Direction".into(), "inbound".into()),
        ("CallStatus".into(), "ringing".into()),
    ]
}

/// Sends every call's voice webhook (`calls`: call sid and the address it goes to), a few at a
/// time; returns the errors.
pub async fn voice_webhooks(token: &str, calls: Vec<(String, String)>) -> Vec<String> {
    let http = reqwest::Client::new();
    futures_util::stream::iter(calls.into_iter().enumerate())
        .map(|(i, (sid, address))| {
            let http = http.clone();
            async move {
                post_webhook(
                    &http,
                    token,
                    &address,
                    "/twilio/voice",
                    &voice_params(&sid, i),
                )
                .await
                .err()
                .map(|e| format!("{e:#}"))
            }
        })
        .buffer_unordered(WEBHOOK_CONCURRENCY)
        .filter_map(|e| async move { e })
        .collect()
        .await
}

/// Sends [`STATUS_CALLBACKS`] status callbacks per call (`calls`: call sid and address), evenly
/// spaced over `duration` from `t0`, each without waiting for the one before; returns the
/// errors.
pub async fn status_callbacks(
    token: &'static str,
    calls: Vec<(String, String)>,
    t0: Instant,
    duration: Duration,
) -> Vec<String> {
    let http = reqwest::Client::new();
    let total = calls.len() * STATUS_CALLBACKS;
    let mut tasks = Vec::with_capacity(total);
    for j in 0..total {
        let at = t0 + duration.mul_f64((j as f64 + 0.5) / total as f64);
        tokio::time::sleep_until(at.into()).await;
        let (sid, address) = calls[j % calls.len()].clone();
        let params = vec![
            ("CallSid".to_string(), sid),
            (
                "CallStatus".to_string(),
                STATUSES[j / calls.len()].to_string(),
            ),
        ];
        let http = http.clone();
        tasks.push(tokio::spawn(async move {
            post_webhook(&http, token, &address, "/twilio/status", &params).await
        }));
    }
    let mut errors = Vec::new();
    for task in tasks {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errors.push(format!("{e:#}")),
            Err(e) => errors.push(e.to_string()),
        }
    }
    errors
}

/// One reading of the PostgreSQL writers of every gateway of a row.
#[derive(Clone, Copy)]
pub struct Reading {
    pub at: Instant,
    /// `switchboard_records_writes_total`, summed over the gateways.
    pub writes: f64,
    /// `switchboard_records_held_writes`, summed.
    pub held: f64,
    /// `switchboard_records_lost_writes_total` (every reason), summed.
    pub lost: f64,
}

/// Reads the records figures of a row's gateways from their `/metrics`, about once a second.
pub struct Probe {
    http: reqwest::Client,
    addresses: Vec<String>,
    pub readings: Vec<Reading>,
}

/// How often [`Probe::tick`] reads the gateways.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);

impl Probe {
    pub fn new(addresses: Vec<String>) -> Self {
        Self {
            http: reqwest::Client::new(),
            addresses,
            readings: Vec::new(),
        }
    }

    /// Reads every gateway now.
    pub async fn read(&mut self) -> anyhow::Result<Reading> {
        let mut reading = Reading {
            at: Instant::now(),
            writes: 0.0,
            held: 0.0,
            lost: 0.0,
        };
        for address in &self.addresses {
            // `Connection: close`: no pooled connection left open to count as the gateway's.
            let text = self
                .http
                .get(format!("http://{address}/metrics"))
                .header("connection", "close")
                .send()
                .await
                .context("GET /metrics")?
                .text()
                .await
                .context("GET /metrics")?;
            for line in text.lines().filter(|l| !l.starts_with('#')) {
                let Some((name, value)) = line.rsplit_once(' ') else {
                    continue;
                };
                let value: f64 = value.parse().unwrap_or(0.0);
                let metric = name.split('{').next().unwrap_or(name);
                match metric {
                    "switchboard_records_writes_total" => reading.writes += value,
                    "switchboard_records_held_writes" => reading.held += value,
                    "switchboard_records_lost_writes_total" => reading.lost += value,
                    _ => {}
                }
            }
        }
        self.readings.push(reading);
        Ok(reading)
    }

    /// Reads the gateways if the last reading is [`PROBE_EVERY`] old.
    pub async fn tick(&mut self) -> anyhow::Result<()> {
        if self
            .readings
            .last()
            .is_none_or(|r| r.at.elapsed() >= PROBE_EVERY)
        {
            self.read().await?;
        }
        Ok(())
    }

    /// Reads until nothing is held and the count of writes stood still for a reading (at most
    /// `limit`): every write of the row is in.
    pub async fn settle(&mut self, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        let mut last = self.read().await?;
        while Instant::now() < deadline {
            tokio::time::sleep(PROBE_EVERY).await;
            let now = self.read().await?;
            if now.held == 0.0 && now.writes == last.writes {
                return Ok(());
            }
            last = now;
        }
        Ok(())
    }

    /// The row's figures from its readings.
    pub fn figures(&self) -> Figures {
        let (Some(first), Some(last)) = (self.readings.first(), self.readings.last()) else {
            return Figures::default();
        };
        let mut peak = 0.0f64;
        let (mut busy_from, mut busy_to) = (None, None);
        for pair in self.readings.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            let dt = b.at.duration_since(a.at).as_secs_f64();
            if b.writes > a.writes {
                busy_from.get_or_insert(a.at);
                busy_to = Some(b.at);
                if dt > 0.0 {
                    peak = peak.max((b.writes - a.writes) / dt);
                }
            }
        }
        let busy = match (busy_from, busy_to) {
            (Some(a), Some(b)) => b.duration_since(a),
            _ => Duration::ZERO,
        };
        Figures {
            writes: last.writes - first.writes,
            busy,
            peak_per_s: peak,
            max_held: self.readings.iter().map(|r| r.held).fold(0.0, f64::max),
            lost: last.lost - first.lost,
        }
    }
}

/// What the PostgreSQL writers of a row's gateways did.
#[derive(Default, Clone)]
pub struct Figures {
    /// Writes committed during the row.
    pub writes: f64,
    /// From the first reading interval with a write to the last.
    pub busy: Duration,
    /// The most writes committed per second over one reading interval.
    pub peak_per_s: f64,
    /// The most writes held at one reading (summed over the gateways).
    pub max_held: f64,
    pub lost: f64,
}

impl Figures {
    pub fn mean_per_s(&self) -> f64 {
        self.writes / self.busy.as_secs_f64().max(1e-9)
    }
}
