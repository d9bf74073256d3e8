//! `picketd enroll`: joins the fleet with a one-time token.
//!
//! 1. Loads (or creates, mode 0600) the device identity key named by
//!    `[uplink] identity_file`; the device id derives from it.
//! 2. Sends an EnrollRequest frame (docs/WIRE.md §4), signed by that key as
//!    proof of possession, to `POST <backend>/api/v1/enroll`.
//! 3. Fetches the backend's command key (`GET /api/v1/fleet/command-key`)
//!    and verifies the EnrollResponse frame with it; the key is pinned in
//!    `fleet-command.pub` beside the identity, for rule bundles and commands.
//! 4. On acceptance writes the fleet CA (`ca_file`), the device certificate
//!    (`cert_file`) and the identity key as PKCS#8 (`key_file`, mode 0600):
//!    the TLS client key *is* the identity key, so the certificate and the
//!    batch signatures name the same device.
//!
//! Transport: `http://` for a backend on the same host or a trusted network
//! (the quick start), `https://` verified against `--ca-file` otherwise. The
//! client is a few lines of HTTP/1.1 on purpose: one request, one response,
//! no extra dependency on the appliance image.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use picket_proto::identity::DeviceIdentity;
use picket_proto::{
    encode_frame_to_vec, BoundedStr, EnrollRequest, EnrollResponse, Frame, Message,
};

use crate::config::UplinkSettings;

/// What `picketd enroll` was asked to do.
#[derive(Debug, Clone)]
pub struct EnrollOptions {
    /// Backend base URL (`http://127.0.0.1:8080`).
    pub url: String,
    /// One-time enrollment token.
    pub token: String,
    /// CA to verify an `https://` backend with.
    pub ca_file: Option<PathBuf>,
    /// Host name for the inventory.
    pub hostname: String,
}

/// What enrollment produced.
#[derive(Debug, Clone)]
pub struct Enrolled {
    /// The device id (32 hex digits).
    pub device_id: String,
    /// Files written.
    pub files: Vec<PathBuf>,
}

/// Enrolls this appliance; see the module doc.
///
/// # Errors
/// Transport failures, a refusal (with the backend's reason), a response
/// that does not verify, or files that cannot be written.
pub fn enroll(settings: &UplinkSettings, opts: &EnrollOptions) -> anyhow::Result<Enrolled> {
    if let Some(parent) = settings.identity_file.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let identity = DeviceIdentity::load_or_generate(&settings.identity_file)
        .with_context(|| format!("device identity {}", settings.identity_file.display()))?;
    let device = identity.device_id();
    let request = Message::EnrollRequest(EnrollRequest {
        token: BoundedStr::new(&opts.token).context("the token is too long")?,
        public_key: identity.verifying_key().to_bytes(),
        csr_der: None,
        hostname: BoundedStr::truncated(&opts.hostname),
        agent_version: BoundedStr::truncated(env!("CARGO_PKG_VERSION")),
    });
    let frame = encode_frame_to_vec(&request, device, identity.signing_key())
        .context("cannot encode the enrollment request")?;
    let http = Http::new(&opts.url, opts.ca_file.as_deref())?;

    let key_hex = http.request("GET", "/api/v1/fleet/command-key", None)?;
    let key_hex = String::from_utf8_lossy(&key_hex);
    let key_hex = key_hex.trim().trim_matches('"');
    let command_key = parse_key(key_hex)
        .with_context(|| format!("the backend's command key {key_hex:?} is not 64 hex digits"))?;

    let body = http.request("POST", "/api/v1/enroll", Some(&frame))?;
    let response = Frame::decode_exact(&body).context("the enrollment response is not a frame")?;
    let message = response
        .open_for(device, &command_key)
        .context("the enrollment response does not verify with the backend's command key")?;
    let Message::EnrollResponse(answer) = message else {
        bail!("the backend answered with a {:?} frame", response.kind());
    };
    match answer {
        EnrollResponse::Rejected { reason, message } => {
            bail!("enrollment refused ({reason:?}): {}", message.as_str())
        }
        EnrollResponse::Accepted {
            certificate_der,
            ca_certificate_der,
        } => {
            write_file(
                &settings.ca_file,
                pem("CERTIFICATE", ca_certificate_der.as_bytes()).as_bytes(),
                0o644,
            )?;
            write_file(
                &settings.cert_file,
                pem("CERTIFICATE", certificate_der.as_bytes()).as_bytes(),
                0o644,
            )?;
            write_file(
                &settings.key_file,
                pem(
                    "PRIVATE KEY",
                    &pkcs8_ed25519(identity.signing_key().as_bytes()),
                )
                .as_bytes(),
                0o600,
            )?;
            let pinned = settings.identity_file.with_file_name("fleet-command.pub");
            write_file(&pinned, format!("{key_hex}\n").as_bytes(), 0o644)?;
            Ok(Enrolled {
                device_id: device.to_string(),
                files: vec![
                    settings.ca_file.clone(),
                    settings.cert_file.clone(),
                    settings.key_file.clone(),
                    pinned,
                ],
            })
        }
    }
}

fn parse_key(hex_key: &str) -> Option<picket_proto::ed25519_dalek::VerifyingKey> {
    let bytes = hex::decode(hex_key).ok()?;
    let arr: [u8; 32] = bytes.try_into().ok()?;
    picket_proto::ed25519_dalek::VerifyingKey::from_bytes(&arr).ok()
}

fn write_file(path: &Path, data: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    // written beside, then renamed: a crash never leaves half a key
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// PKCS#8 v1 (RFC 8410) of an Ed25519 private key (its 32-byte seed).
fn pkcs8_ed25519(seed: &[u8; 32]) -> Vec<u8> {
    const PREFIX: [u8; 16] = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    let mut v = PREFIX.to_vec();
    v.extend_from_slice(seed);
    v
}

fn pem(label: &str, der: &[u8]) -> String {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::with_capacity(der.len() * 4 / 3 + 4);
    for chunk in der.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(char::from(B64[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// One backend, reached over plain HTTP or TLS.
struct Http {
    host: String,
    port: u16,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Http {
    fn new(url: &str, ca_file: Option<&Path>) -> anyhow::Result<Self> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            bail!("backend URL {url:?} must start with http:// or https://");
        };
        let authority = rest.split('/').next().unwrap_or_default();
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => (
                h.trim_matches(['[', ']']).to_owned(),
                p.parse::<u16>()
                    .with_context(|| format!("bad port in backend URL {url:?}"))?,
            ),
            _ => (
                authority.trim_matches(['[', ']']).to_owned(),
                if tls { 443 } else { 80 },
            ),
        };
        if host.is_empty() {
            bail!("backend URL {url:?} names no host");
        }
        let tls = if tls {
            let ca = ca_file.context("an https:// backend needs --ca-file (the fleet CA)")?;
            let pem = std::fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?;
            Some(
                picket_uplink::tls::client_config_server_only(&pem)
                    .with_context(|| format!("{}: not a usable CA certificate", ca.display()))?,
            )
        } else {
            None
        };
        Ok(Self { host, port, tls })
    }

    /// One request; the body of a 2xx answer, else an error with the
    /// backend's message.
    fn request(&self, method: &str, path: &str, body: Option<&[u8]>) -> anyhow::Result<Vec<u8>> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .with_context(|| format!("cannot connect to {}:{}", self.host, self.port))?;
        tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
        tcp.set_write_timeout(Some(Duration::from_secs(30)))?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nUser-Agent: picketd/{}\r\n",
            self.host,
            env!("CARGO_PKG_VERSION")
        );
        if let Some(b) = body {
            head.push_str(&format!(
                "Content-Type: application/octet-stream\r\nContent-Length: {}\r\n",
                b.len()
            ));
        }
        head.push_str("\r\n");
        let mut raw = Vec::new();
        match &self.tls {
            None => {
                let mut s = tcp;
                s.write_all(head.as_bytes())?;
                s.write_all(body.unwrap_or_default())?;
                s.take(1 << 20).read_to_end(&mut raw)?;
            }
            Some(cfg) => {
                let name = rustls::pki_types::ServerName::try_from(self.host.clone())
                    .with_context(|| format!("{:?} is not a valid server name", self.host))?;
                let conn = rustls::ClientConnection::new(cfg.clone(), name)?;
                let mut s = rustls::StreamOwned::new(conn, tcp);
                s.write_all(head.as_bytes())?;
                s.write_all(body.unwrap_or_default())?;
                // a peer that closes without close_notify still sent its answer
                let _ = s.take(1 << 20).read_to_end(&mut raw);
            }
        }
        parse_response(&raw).with_context(|| format!("{method} {path}"))
    }
}

fn parse_response(raw: &[u8]) -> anyhow::Result<Vec<u8>> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no HTTP response")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut body = raw[split + 4..].to_vec();
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("bad HTTP status line")?;
    let lower = head.to_ascii_lowercase();
    if lower.contains("transfer-encoding: chunked") {
        body = dechunk(&body).context("bad chunked body")?;
    } else if let Some(len) = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        body.truncate(len);
    }
    if !(200..300).contains(&status) {
        bail!(
            "backend answered {status}: {}",
            String::from_utf8_lossy(&body).trim()
        );
    }
    Ok(body)
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = b.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&b[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        b = &b[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;

    #[test]
    fn pem_matches_a_known_encoding() {
        assert_eq!(
            pem("X", b"hello world!?"),
            "-----BEGIN X-----\naGVsbG8gd29ybGQhPw==\n-----END X-----\n"
        );
    }

    #[test]
    fn responses_parse_plain_and_chunked_and_errors_name_the_status() {
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nabcdef";
        assert_eq!(parse_response(ok).unwrap(), b"abc");
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap(), b"abcde");
        let err = parse_response(b"HTTP/1.1 403 Forbidden\r\n\r\nno").unwrap_err();
        assert!(format!("{err:#}").contains("403"), "{err:#}");
        assert!(parse_response(b"garbage").is_err());
    }

    #[test]
    fn urls_are_checked() {
        assert!(Http::new("ftp://x", None).is_err());
        assert!(
            Http::new("https://x:8443", None).is_err(),
            "https needs a CA"
        );
        let h = Http::new("http://127.0.0.1:8080", None).unwrap();
        assert_eq!((h.host.as_str(), h.port), ("127.0.0.1", 8080));
        let h = Http::new("http://[::1]:9", None).unwrap();
        assert_eq!((h.host.as_str(), h.port), ("::1", 9));
    }
}
