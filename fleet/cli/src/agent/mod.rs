//! `picketctl agent enroll` and `picketctl stream`: a Windows/macOS agent's
//! side of the backend's agent stream (`docs/AGENT-STREAM.md`).
//!
//! * [`enroll`] spends an enrollment token at `POST /api/v1/agents/enroll`
//!   and writes the agent secret it answers to a new file (mode 0600).
//! * [`stream`] reads EVTX files (each record rendered to JSON exactly as
//!   `picketctl hunt` renders it, sent as an `evtx` line), JSON-lines files
//!   or stdin, and sends them in batches of lines over
//!   `GET /api/v1/agents/stream` (WebSocket, `Authorization: Bearer
//!   <secret>`). One batch is in flight at a time: the next is sent after
//!   the backend's `result` for the previous one, so the client goes at the
//!   speed the backend stores alerts. Each alert and each refused line is
//!   traced back to its file and record (EVTX: the rendered
//!   `EventRecordID`, as `hunt` reports it; JSON lines: the line number).
//!
//! Both speak plain HTTP (`http://`, `ws://`) or TLS (`https://`,
//! `wss://`; rustls): the backend's certificate must chain to `--ca-file`
//! (PEM; the fleet CA's `ca.pem` for a backend serving `[http] tls =
//! "fleet-ca"`), else to the Mozilla roots of `webpki-roots`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use serde::Serialize;
use serde_json::Value;
use tungstenite::client::IntoClientRequest as _;
use tungstenite::handshake::HandshakeError;
use tungstenite::{Message, WebSocket};

use crate::hunt::{collect_inputs, InputKind};

/// Why an agent command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentCmdError {
    /// Bad arguments.
    #[error("{0}")]
    Usage(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The backend could not be reached or the connection broke.
    #[error("{url}: {message}")]
    Transport {
        /// What was called.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The backend refused (status and its error message).
    #[error("{url}: refused with {status}: {message}")]
    Refused {
        /// What was called.
        url: String,
        /// HTTP status.
        status: u16,
        /// The backend's `error`.
        message: String,
    },
    /// An EVTX file could not be read.
    #[error("{path}: not a readable EVTX file: {message}")]
    Evtx {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        message: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AgentCmdError + '_ {
    move |source| AgentCmdError::Io {
        path: path.to_owned(),
        source,
    }
}

fn base(url: &str) -> Result<&str, AgentCmdError> {
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(url.trim_end_matches('/'))
    } else {
        Err(AgentCmdError::Usage(format!(
            "backend URL {url:?} must start with http:// or https://"
        )))
    }
}

/// The certificates of a PEM file (trust anchors).
fn read_ca(path: &Path) -> Result<Vec<CertificateDer<'static>>, AgentCmdError> {
    let pem = std::fs::read(path).map_err(io(path))?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| AgentCmdError::Usage(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(AgentCmdError::Usage(format!(
            "{}: no PEM certificate",
            path.display()
        )));
    }
    Ok(certs)
}

/// rustls client configuration: `ca_file`'s certificates as the only trust
/// anchors, else the webpki roots.
fn tls_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, AgentCmdError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in read_ca(path)? {
                roots.add(cert).map_err(|e| {
                    AgentCmdError::Usage(format!(
                        "{}: unusable CA certificate: {e}",
                        path.display()
                    ))
                })?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| AgentCmdError::Usage(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The HTTP agent for enrollment, trusting `ca_file` when given.
fn http_agent(ca_file: Option<&Path>) -> Result<ureq::Agent, AgentCmdError> {
    let mut config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(60)));
    if let Some(path) = ca_file {
        let certs = read_ca(path)?
            .into_iter()
            .map(|c| ureq::tls::Certificate::from_der(&c).to_owned())
            .collect();
        config = config.tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::Specific(Arc::new(certs)))
                .build(),
        );
    }
    Ok(config.build().into())
}

/// The stream's transport: TCP, or TLS over TCP.
#[derive(Debug)]
enum Conn {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

/// Connects TCP (and TLS for `wss://`) to the request's host.
fn connect(
    req: &tungstenite::handshake::client::Request,
    ca_file: Option<&Path>,
) -> Result<Conn, String> {
    let uri = req.uri();
    let host = uri.host().ok_or("no host in the URL")?;
    let tls = uri.scheme_str() == Some("wss");
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    // `[::1]` in the URL, `::1` to connect and verify.
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let tcp = TcpStream::connect((host, port)).map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    if !tls {
        return Ok(Conn::Plain(tcp));
    }
    let config = tls_config(ca_file).map_err(|e| e.to_string())?;
    let name = ServerName::try_from(host.to_owned()).map_err(|e| format!("{host}: {e}"))?;
    let conn = rustls::ClientConnection::new(config, name).map_err(|e| e.to_string())?;
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    // Handshake now, so a certificate problem is reported as such.
    while stream.conn.is_handshaking() {
        stream
            .conn
            .complete_io(&mut stream.sock)
            .map_err(|e| format!("TLS: {e}"))?;
    }
    Ok(Conn::Tls(Box::new(stream)))
}

/// What [`enroll`] did.
#[derive(Debug, Clone, Serialize)]
pub struct Enrolled {
    /// The device id the agent streams as.
    pub device_id: String,
    /// `windows` or `macos`.
    pub platform: String,
    /// Where the secret was written.
    pub secret_file: PathBuf,
}

/// Enrolls an agent and writes its secret to `out` (created, mode 0600;
/// never overwritten). `ca_file` (PEM) is the trust anchor of an
/// `https://` backend (default: the webpki roots).
///
/// # Errors
/// [`AgentCmdError`]: `out` exists, the backend is unreachable or refuses.
pub fn enroll(
    url: &str,
    token: &str,
    hostname: &str,
    platform: &str,
    agent_version: &str,
    out: &Path,
    ca_file: Option<&Path>,
) -> Result<Enrolled, AgentCmdError> {
    let agent = http_agent(ca_file)?;
    let mut file = {
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
        o.open(out).map_err(io(out))?
    };
    let endpoint = format!("{}/api/v1/agents/enroll", base(url)?);
    let body = serde_json::json!({
        "token": token, "hostname": hostname, "platform": platform, "agent_version": agent_version,
    });
    let result = (|| {
        let mut resp = agent
            .post(&endpoint)
            .header("Content-Type", "application/json")
            .send(body.to_string().as_bytes())
            .map_err(|e| AgentCmdError::Transport {
                url: endpoint.clone(),
                message: e.to_string(),
            })?;
        let status = resp.status().as_u16();
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_to_vec()
            .map_err(|e| AgentCmdError::Transport {
                url: endpoint.clone(),
                message: e.to_string(),
            })?;
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| AgentCmdError::Transport {
            url: endpoint.clone(),
            message: format!("unreadable answer ({status}): {e}"),
        })?;
        if status != 201 {
            return Err(AgentCmdError::Refused {
                url: endpoint.clone(),
                status,
                message: v["error"].as_str().unwrap_or_default().to_owned(),
            });
        }
        Ok(v)
    })();
    let v = match result {
        Ok(v) => v,
        Err(e) => {
            drop(file);
            let _ = std::fs::remove_file(out);
            return Err(e);
        }
    };
    let secret = v["secret"].as_str().unwrap_or_default();
    std::io::Write::write_all(&mut file, format!("{secret}\n").as_bytes()).map_err(io(out))?;
    Ok(Enrolled {
        device_id: v["device_id"].as_str().unwrap_or_default().to_owned(),
        platform: v["platform"].as_str().unwrap_or_default().to_owned(),
        secret_file: out.to_owned(),
    })
}

/// How [`stream`] reads its files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InputFormat {
    /// By content, as `hunt` does (EVTX magic, else JSON lines).
    #[default]
    Auto,
    /// Every file is EVTX.
    Evtx,
    /// Every file is JSON lines, sent as they are.
    JsonLines,
}

/// What [`stream`] sends and where.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// Backend base URL (`http://127.0.0.1:8080`, `https://...`).
    pub url: String,
    /// Trust anchors (PEM) for an `https://` backend; `None`: webpki roots.
    pub ca_file: Option<PathBuf>,
    /// File holding the agent secret (first line).
    pub secret_file: PathBuf,
    /// How files are read.
    pub format: InputFormat,
    /// Files or folders; `-` is stdin (JSON lines).
    pub paths: Vec<PathBuf>,
    /// Lines per message at most.
    pub batch_lines: usize,
    /// Bytes per message at most (a single longer line is sent alone).
    pub batch_bytes: usize,
}

/// An alert the backend raised on a line sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamAlert {
    /// The stored alert's id.
    pub id: String,
    /// The file (`-` for stdin).
    pub file: String,
    /// EVTX: the rendered `EventRecordID`; JSON lines: the line number.
    pub record_id: u64,
    /// The Sigma rule id.
    pub rule_id: String,
    /// The rule title.
    pub rule_title: String,
    /// The level.
    pub level: String,
}

/// A line the backend refused, or a record that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamError {
    /// The file.
    pub file: String,
    /// Record id or line number (0: the whole file).
    pub record_id: u64,
    /// Why.
    pub error: String,
}

/// What [`stream`] did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StreamReport {
    /// Messages sent.
    pub messages: u64,
    /// Lines sent.
    pub lines: u64,
    /// Alerts raised, in the order sent.
    pub alerts: Vec<StreamAlert>,
    /// Lines refused and records or files not read.
    pub errors: Vec<StreamError>,
}

/// One line waiting to go, with where it came from.
struct Pending {
    text: String,
    origins: Vec<(String, u64)>,
}

struct Client {
    ws: WebSocket<Conn>,
    url: String,
    config_lines: usize,
    config_bytes: usize,
    pending: Pending,
    report: StreamReport,
}

impl Client {
    fn push(&mut self, file: &str, record: u64, line: &str) -> Result<(), AgentCmdError> {
        let line = line.trim_end_matches(['\r', '\n']);
        if line.trim().is_empty() {
            return Ok(());
        }
        if !self.pending.origins.is_empty()
            && self.pending.text.len() + line.len() + 1 > self.config_bytes
        {
            self.flush()?;
        }
        self.pending.text.push_str(line);
        self.pending.text.push('\n');
        self.pending.origins.push((file.to_owned(), record));
        if self.pending.origins.len() >= self.config_lines {
            self.flush()?;
        }
        Ok(())
    }

    fn broken(&self, e: &tungstenite::Error) -> AgentCmdError {
        AgentCmdError::Transport {
            url: self.url.clone(),
            message: e.to_string(),
        }
    }

    fn flush(&mut self) -> Result<(), AgentCmdError> {
        if self.pending.origins.is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(
            &mut self.pending,
            Pending {
                text: String::new(),
                origins: Vec::new(),
            },
        );
        self.ws
            .send(Message::Text(batch.text.into()))
            .map_err(|e| self.broken(&e))?;
        self.report.messages += 1;
        self.report.lines += batch.origins.len() as u64;
        let reply: Value = loop {
            match self.ws.read().map_err(|e| self.broken(&e))? {
                Message::Text(t) => {
                    break serde_json::from_str(t.as_str()).map_err(|e| {
                        AgentCmdError::Transport {
                            url: self.url.clone(),
                            message: format!("unreadable reply: {e}"),
                        }
                    })?
                }
                Message::Close(f) => {
                    return Err(AgentCmdError::Transport {
                        url: self.url.clone(),
                        message: format!("closed by the backend: {f:?}"),
                    })
                }
                _ => {}
            }
        };
        if reply["type"] != "result" {
            return Err(AgentCmdError::Transport {
                url: self.url.clone(),
                message: format!("backend error: {}", reply["error"]),
            });
        }
        let origin = |line: &Value| {
            let i = line.as_u64().unwrap_or(0).saturating_sub(1);
            usize::try_from(i)
                .ok()
                .and_then(|i| batch.origins.get(i))
                .cloned()
                .unwrap_or_else(|| ("?".into(), 0))
        };
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        for a in reply["result"]["alerts"].as_array().into_iter().flatten() {
            let (file, record_id) = origin(&a["line"]);
            self.report.alerts.push(StreamAlert {
                id: text(&a["id"]),
                file,
                record_id,
                rule_id: text(&a["rule_id"]),
                rule_title: text(&a["rule_title"]),
                level: text(&a["level"]),
            });
        }
        for e in reply["result"]["errors"].as_array().into_iter().flatten() {
            let (file, record_id) = origin(&e["line"]);
            self.report.errors.push(StreamError {
                file,
                record_id,
                error: text(&e["error"]),
            });
        }
        Ok(())
    }

    fn evtx(&mut self, path: &Path) -> Result<(), AgentCmdError> {
        let file = path.display().to_string();
        let mut parser = evtx::EvtxParser::from_path(path).map_err(|e| AgentCmdError::Evtx {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        for record in parser.records_json_value() {
            match record {
                Ok(r) => {
                    // The id hunt reports: the rendered one (see hunt's scan).
                    let id = r
                        .data
                        .pointer("/Event/System/EventRecordID")
                        .and_then(|v| v.as_u64().or_else(|| v.as_str()?.trim().parse().ok()))
                        .unwrap_or(r.event_record_id);
                    let line = r.data.to_string();
                    self.push(&file, id, &line)?;
                }
                Err(e) => self.report.errors.push(StreamError {
                    file: file.clone(),
                    record_id: 0,
                    error: format!("record not readable: {e}"),
                }),
            }
        }
        Ok(())
    }

    fn json_lines(&mut self, file: &str, reader: impl Read) -> Result<(), AgentCmdError> {
        let mut reader = BufReader::new(reader);
        let mut buf = Vec::new();
        let mut no = 0u64;
        loop {
            buf.clear();
            let n = reader
                .read_until(b'\n', &mut buf)
                .map_err(io(Path::new(file)))?;
            if n == 0 {
                return Ok(());
            }
            no += 1;
            match std::str::from_utf8(&buf) {
                Ok(line) => {
                    let line = line.to_owned();
                    self.push(file, no, &line)?;
                }
                Err(e) => self.report.errors.push(StreamError {
                    file: file.to_owned(),
                    record_id: no,
                    error: format!("not UTF-8: {e}"),
                }),
            }
        }
    }
}

/// Reads the secret file's first line.
fn read_secret(path: &Path) -> Result<String, AgentCmdError> {
    let s = std::fs::read_to_string(path).map_err(io(path))?;
    let s = s.lines().next().unwrap_or_default().trim().to_owned();
    if s.is_empty() {
        return Err(AgentCmdError::Usage(format!(
            "{}: no agent secret in the file",
            path.display()
        )));
    }
    Ok(s)
}

/// Connects to the agent stream and sends every input; returns once the
/// backend has answered every message.
///
/// # Errors
/// [`AgentCmdError`] for a refused or broken connection, unreadable inputs
/// and bad arguments. Refused lines are not errors: they are in the report.
pub fn stream(config: &StreamConfig) -> Result<StreamReport, AgentCmdError> {
    let secret = read_secret(&config.secret_file)?;
    let base = base(&config.url)?;
    let url = match (base.strip_prefix("http://"), base.strip_prefix("https://")) {
        (Some(rest), _) => format!("ws://{rest}/api/v1/agents/stream"),
        (_, Some(rest)) => format!("wss://{rest}/api/v1/agents/stream"),
        _ => unreachable!("base() checked the scheme"),
    };
    let mut req = url
        .as_str()
        .into_client_request()
        .map_err(|e| AgentCmdError::Usage(format!("{url}: {e}")))?;
    let auth = format!("Bearer {secret}")
        .parse()
        .map_err(|_| AgentCmdError::Usage("the agent secret is not a valid header value".into()))?;
    req.headers_mut().insert("authorization", auth);
    let conn =
        connect(&req, config.ca_file.as_deref()).map_err(|message| AgentCmdError::Transport {
            url: url.clone(),
            message,
        })?;
    let ws = match tungstenite::client(req, conn) {
        Ok((ws, _)) => ws,
        Err(HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
            let status = resp.status().as_u16();
            let message = resp
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice::<Value>(b).ok())
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or_default();
            return Err(AgentCmdError::Refused {
                url,
                status,
                message,
            });
        }
        Err(HandshakeError::Failure(e)) => {
            return Err(AgentCmdError::Transport {
                url,
                message: e.to_string(),
            })
        }
        Err(HandshakeError::Interrupted(_)) => {
            return Err(AgentCmdError::Transport {
                url,
                message: "WebSocket handshake interrupted".into(),
            })
        }
    };
    let mut client = Client {
        ws,
        url: url.clone(),
        config_lines: config.batch_lines.max(1),
        config_bytes: config.batch_bytes.max(1),
        pending: Pending {
            text: String::new(),
            origins: Vec::new(),
        },
        report: StreamReport::default(),
    };
    let (stdin, files): (Vec<&PathBuf>, Vec<PathBuf>) = {
        let (s, f): (Vec<&PathBuf>, Vec<&PathBuf>) =
            config.paths.iter().partition(|p| p.as_os_str() == "-");
        (s, f.into_iter().cloned().collect())
    };
    let (inputs, problems) = collect_inputs(&files);
    for p in problems {
        client.report.errors.push(StreamError {
            file: String::new(),
            record_id: 0,
            error: p.to_string(),
        });
    }
    for input in inputs {
        let kind = match config.format {
            InputFormat::Auto => input.kind,
            InputFormat::Evtx => InputKind::Evtx,
            InputFormat::JsonLines => InputKind::JsonLines,
        };
        match kind {
            InputKind::Evtx => match client.evtx(&input.path) {
                Ok(()) => {}
                Err(e @ AgentCmdError::Evtx { .. }) => client.report.errors.push(StreamError {
                    file: input.path.display().to_string(),
                    record_id: 0,
                    error: e.to_string(),
                }),
                Err(e) => return Err(e),
            },
            InputKind::JsonLines => {
                let f = std::fs::File::open(&input.path).map_err(io(&input.path))?;
                client.json_lines(&input.path.display().to_string(), f)?;
            }
        }
    }
    if !stdin.is_empty() {
        client.json_lines("-", std::io::stdin().lock())?;
    }
    client.flush()?;
    let _ = client.ws.close(None);
    let _ = client.ws.flush();
    Ok(client.report)
}
