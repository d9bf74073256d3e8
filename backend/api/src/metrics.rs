//! The API's own Prometheus counters, appended to `Fleet::metrics()` on
//! `GET /metrics`. Names follow `picket_<noun>_<verb>_total`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::state::AppState;

/// Counters. Label values are bounded: the route is the router's path
/// template (or `unmatched`), the status a code the API answers with, the
/// auth failure reason one of a fixed set.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    requests: Mutex<BTreeMap<(String, &'static str, u16), u64>>,
    auth_failures: Mutex<BTreeMap<&'static str, u64>>,
    ws_clients: AtomicI64,
    agent_streams: AtomicUsize,
    agent_streams_refused: AtomicU64,
    agent_closes: Mutex<BTreeMap<&'static str, u64>>,
    agent_line_errors: Mutex<BTreeMap<&'static str, u64>>,
    agent_messages_refused: Mutex<BTreeMap<&'static str, u64>>,
}

fn bump(m: &Mutex<BTreeMap<&'static str, u64>>, label: &'static str) {
    if let Ok(mut m) = m.lock() {
        *m.entry(label).or_default() += 1;
    }
}

fn render_labeled(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    m: &Mutex<BTreeMap<&'static str, u64>>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    if let Ok(m) = m.lock() {
        for (value, n) in m.iter() {
            let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {n}");
        }
    }
}

fn method_label(m: &axum::http::Method) -> &'static str {
    match m.as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PATCH" => "PATCH",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}

impl Metrics {
    pub(crate) fn request(&self, route: &str, method: &'static str, status: u16) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry((route.to_owned(), method, status)).or_default() += 1;
        }
    }

    pub(crate) fn auth_failure(&self, reason: &'static str) {
        if let Ok(mut m) = self.auth_failures.lock() {
            *m.entry(reason).or_default() += 1;
        }
    }

    /// Counts a connected WebSocket client until the guard drops.
    pub(crate) fn ws_client(&self) -> WsClientGuard<'_> {
        self.ws_clients.fetch_add(1, Ordering::Relaxed);
        WsClientGuard(self)
    }

    /// Takes an agent stream slot; `false` (counted) when `max` are open.
    pub(crate) fn agent_stream_started(&self, max: usize) -> bool {
        let taken = self
            .agent_streams
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok();
        if !taken {
            self.agent_streams_refused.fetch_add(1, Ordering::Relaxed);
        }
        taken
    }

    /// Gives an agent stream slot back.
    pub(crate) fn agent_stream_ended(&self) {
        self.agent_streams.fetch_sub(1, Ordering::AcqRel);
    }

    pub(crate) fn agent_stream_closed(&self, reason: &'static str) {
        bump(&self.agent_closes, reason);
    }

    pub(crate) fn agent_line_error(&self, reason: &'static str) {
        bump(&self.agent_line_errors, reason);
    }

    pub(crate) fn agent_message_refused(&self, reason: &'static str) {
        bump(&self.agent_messages_refused, reason);
    }

    pub(crate) fn render(&self, out: &mut String) {
        out.push_str(
            "# HELP picket_api_requests_total API requests by route, method and status.\n",
        );
        out.push_str("# TYPE picket_api_requests_total counter\n");
        if let Ok(m) = self.requests.lock() {
            for ((route, method, status), n) in m.iter() {
                let _ = writeln!(
                    out,
                    "picket_api_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {n}"
                );
            }
        }
        out.push_str("# HELP picket_api_auth_failures_total Refused authentications by reason.\n");
        out.push_str("# TYPE picket_api_auth_failures_total counter\n");
        if let Ok(m) = self.auth_failures.lock() {
            for (reason, n) in m.iter() {
                let _ = writeln!(
                    out,
                    "picket_api_auth_failures_total{{reason=\"{reason}\"}} {n}"
                );
            }
        }
        out.push_str("# HELP picket_api_ws_clients Connected WebSocket stream clients.\n");
        out.push_str("# TYPE picket_api_ws_clients gauge\n");
        let _ = writeln!(
            out,
            "picket_api_ws_clients {}",
            self.ws_clients.load(Ordering::Relaxed)
        );
        out.push_str("# HELP picket_agent_streams Open agent streams.\n");
        out.push_str("# TYPE picket_agent_streams gauge\n");
        let _ = writeln!(
            out,
            "picket_agent_streams {}",
            self.agent_streams.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP picket_agent_streams_refused_total Agent streams refused with 503 (max_streams open).\n\
             # TYPE picket_agent_streams_refused_total counter\n\
             picket_agent_streams_refused_total {}",
            self.agent_streams_refused.load(Ordering::Relaxed)
        );
        render_labeled(
            out,
            "picket_agent_streams_closed_total",
            "Agent streams ended, by reason.",
            "reason",
            &self.agent_closes,
        );
        render_labeled(
            out,
            "picket_agent_line_errors_total",
            "Agent lines answered with an error, by reason.",
            "reason",
            &self.agent_line_errors,
        );
        render_labeled(
            out,
            "picket_agent_messages_refused_total",
            "Agent messages answered with an error and not processed, by reason.",
            "reason",
            &self.agent_messages_refused,
        );
    }
}

/// Decrements the WebSocket client gauge on drop.
#[derive(Debug)]
pub(crate) struct WsClientGuard<'a>(&'a Metrics);

impl Drop for WsClientGuard<'_> {
    fn drop(&mut self) {
        self.0.ws_clients.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Middleware counting every request by route template and status.
pub(crate) async fn count_requests(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = method_label(req.method());
    let resp = next.run(req).await;
    state
        .metrics
        .request(&route, method, resp.status().as_u16());
    resp
}
