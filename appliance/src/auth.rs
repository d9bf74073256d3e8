//! Logins and privilege use from the system's authentication log.
//!
//! Successful and failed logins are decided in user space by PAM and
//! sshd, not in any syscall a probe could see, so this module reads what
//! they log: it follows log files like `tail -F` (rotation and truncation
//! included; a file that appears later is read from its start) and, on
//! images without a syslog daemon, can serve the syslog datagram socket
//! (`/dev/log`) itself. Each line becomes an `auth` event with the program
//! as its Sigma service, and a classification for the common messages of
//! sshd, sudo, su, login and pam_unix.

use crate::event::{Event, Kind, Process};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A parsed log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthLine {
    /// The logging program (`sshd`, `sudo`, ...).
    pub program: String,
    /// Its pid, if the line names one.
    pub pid: Option<u32>,
    /// Classification.
    pub action: &'static str,
    /// `success`, `failure` or `info`.
    pub outcome: &'static str,
    /// Account concerned.
    pub account: String,
    /// Remote address.
    pub source_ip: String,
    /// The message after `program[pid]: `.
    pub message: String,
}

fn word_after<'a>(s: &'a str, key: &str) -> Option<&'a str> {
    let i = s.find(key)? + key.len();
    s[i..].split_whitespace().next()
}

/// Parses one syslog line (file format `Mmm dd hh:mm:ss host prog[pid]: msg`,
/// socket format `<PRI>Mmm dd hh:mm:ss prog[pid]: msg`, or RFC 3339 stamps).
pub fn parse_line(line: &str) -> Option<AuthLine> {
    let mut s = line.trim_end_matches(['\n', '\r', '\0']);
    if let Some(rest) = s.strip_prefix('<') {
        s = rest.split_once('>').map_or(s, |(_, r)| r);
    }
    // the tag is the last token before the first ": " that looks like prog or prog[pid]
    let colon = s.find(": ")?;
    let head = &s[..colon];
    let message = s[colon + 2..].to_owned();
    let tag = head.rsplit(' ').next()?;
    let (program, pid) = match tag.split_once('[') {
        Some((p, rest)) => (p, rest.trim_end_matches(']').parse().ok()),
        None => (tag, None),
    };
    if program.is_empty() {
        return None;
    }
    let program = program.to_owned();
    let m = message.as_str();
    let mut account = String::new();
    let mut source_ip = String::new();
    let (action, outcome) = if let Some(rest) = m.strip_prefix("Accepted ") {
        account = word_after(rest, " for ").unwrap_or("").to_owned();
        source_ip = word_after(rest, " from ").unwrap_or("").to_owned();
        ("login", "success")
    } else if m.starts_with("Failed password for") || m.starts_with("Failed publickey for") {
        let rest = m.split_once(" for ").map_or("", |x| x.1);
        let rest = rest.strip_prefix("invalid user ").unwrap_or(rest);
        account = rest.split_whitespace().next().unwrap_or("").to_owned();
        source_ip = word_after(m, " from ").unwrap_or("").to_owned();
        ("login_failed", "failure")
    } else if let Some(rest) = m.strip_prefix("Invalid user ") {
        account = rest.split_whitespace().next().unwrap_or("").to_owned();
        source_ip = word_after(m, " from ").unwrap_or("").to_owned();
        ("login_failed", "failure")
    } else if m.contains("authentication failure") {
        account = word_after(m, " user=")
            .or_else(|| word_after(m, "ruser="))
            .unwrap_or("")
            .to_owned();
        source_ip = word_after(m, "rhost=").unwrap_or("").to_owned();
        ("auth_failed", "failure")
    } else if m.starts_with("FAILED SU") {
        account = word_after(m, ") ").unwrap_or("").to_owned();
        ("su", "failure")
    } else if m.starts_with("(to ") {
        account = word_after(m, ") ").unwrap_or("").to_owned();
        ("su", "success")
    } else if program == "sudo" && m.contains("COMMAND=") {
        account = m.split(':').next().unwrap_or("").trim().to_owned();
        ("sudo", "success")
    } else if program == "sudo" && m.contains("incorrect password") {
        account = m.split(':').next().unwrap_or("").trim().to_owned();
        ("sudo", "failure")
    } else if m.contains("session opened for user") {
        account = word_after(m, "for user ")
            .unwrap_or("")
            .split('(')
            .next()
            .unwrap_or("")
            .to_owned();
        ("session_open", "success")
    } else if m.contains("session closed for user") {
        account = word_after(m, "for user ")
            .unwrap_or("")
            .split('(')
            .next()
            .unwrap_or("")
            .to_owned();
        ("session_close", "info")
    } else if m.starts_with("FAILED LOGIN") {
        ("login_failed", "failure")
    } else if m.starts_with("ROOT LOGIN") {
        account = "root".into();
        ("login", "success")
    } else {
        ("other", "info")
    };
    Some(AuthLine {
        program,
        pid,
        action,
        outcome,
        account,
        source_ip,
        message,
    })
}

impl AuthLine {
    /// The line as an event.
    pub fn to_event(&self) -> Event {
        Event {
            time_ns: crate::decoder::unix_ns(),
            module: "auth".into(),
            process: Process {
                pid: self.pid.unwrap_or(0),
                comm: self.program.clone(),
                ..Process::default()
            },
            kind: Kind::Auth {
                program: self.program.clone(),
                action: self.action.into(),
                outcome: self.outcome.into(),
                account: self.account.clone(),
                source_ip: self.source_ip.clone(),
                message: self.message.clone(),
            },
        }
    }
}

/// Follows one file like `tail -F`.
#[derive(Debug)]
pub struct Follower {
    path: PathBuf,
    ino: Option<u64>,
    offset: u64,
    partial: String,
    started: bool,
}

/// Longest line kept; longer ones are cut (a log line that size is an attack on the parser).
pub const MAX_LINE: usize = 16 * 1024;

impl Follower {
    /// Follows `path`: from its current end if it exists now, from the start
    /// of any file that appears or replaces it later.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let mut f = Follower {
            path,
            ino: None,
            offset: 0,
            partial: String::new(),
            started: false,
        };
        if let Ok(m) = std::fs::metadata(&f.path) {
            f.ino = Some(m.ino());
            f.offset = m.len();
        }
        f.started = true;
        f
    }

    /// The followed path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads complete new lines.
    pub fn poll(&mut self, out: &mut Vec<String>) {
        let Ok(meta) = std::fs::metadata(&self.path) else {
            self.ino = None;
            return;
        };
        if self.ino != Some(meta.ino()) {
            // rotated or newly created: read the new file from its start
            self.ino = Some(meta.ino());
            self.offset = 0;
            self.partial.clear();
        } else if meta.len() < self.offset {
            self.offset = 0; // truncated
            self.partial.clear();
        }
        if meta.len() == self.offset {
            return;
        }
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return;
        };
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut buf = Vec::new();
        let want = (meta.len() - self.offset).min(8 << 20);
        if file.by_ref().take(want).read_to_end(&mut buf).is_err() {
            return;
        }
        self.offset += buf.len() as u64;
        self.partial.push_str(&String::from_utf8_lossy(&buf));
        // one pass, one shift of the remainder: draining line by line moved
        // the rest of an 8 MiB read once per line
        let mut start = 0;
        while let Some(i) = self.partial[start..].find('\n') {
            let end = start + i + 1;
            out.push(at_most_max_line(&self.partial[start..end]).to_owned());
            start = end;
        }
        self.partial.drain(..start);
        if self.partial.len() > MAX_LINE {
            out.push(at_most_max_line(&self.partial).to_owned());
            self.partial.clear();
        }
    }
}

/// The first [`MAX_LINE`] bytes of `line`, cut at a character boundary.
fn at_most_max_line(line: &str) -> &str {
    let mut end = line.len().min(MAX_LINE);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    &line[..end]
}

/// Runs the module until `shutdown` changes.
pub async fn run(
    cfg: crate::config::AuthModuleConfig,
    bus: crate::bus::Bus,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut followers: Vec<Follower> = cfg.log_files.iter().map(Follower::new).collect();
    let socket = match &cfg.syslog_socket {
        Some(p) => match bind_syslog(p) {
            Ok(s) => {
                tracing::info!("auth: serving syslog socket {}", p.display());
                Some(s)
            }
            Err(e) => {
                tracing::error!("auth: cannot serve syslog socket {}: {e}", p.display());
                None
            }
        },
        None => None,
    };
    let mut tick = tokio::time::interval(cfg.poll_interval);
    let mut buf = vec![0u8; MAX_LINE];
    let mut lines = Vec::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = tick.tick() => {
                for f in &mut followers {
                    f.poll(&mut lines);
                }
            }
            r = async {
                match &socket {
                    Some(s) => s.recv(&mut buf).await,
                    None => std::future::pending().await,
                }
            } => {
                if let Ok(n) = r {
                    lines.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                }
            }
        }
        // in bus batches: one queue operation and one wake-up of detection
        // per batch, not per line
        let mut batch = Vec::with_capacity(crate::bus::MAX_BATCH);
        for l in lines.drain(..) {
            if let Some(a) = parse_line(&l) {
                batch.push(a.to_event());
                if batch.len() == crate::bus::MAX_BATCH {
                    bus.publish_batch(std::mem::replace(
                        &mut batch,
                        Vec::with_capacity(crate::bus::MAX_BATCH),
                    ))
                    .await;
                }
            }
        }
        bus.publish_batch(batch).await;
    }
    if let Some(p) = &cfg.syslog_socket {
        if socket.is_some() {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn bind_syslog(path: &Path) -> std::io::Result<tokio::net::UnixDatagram> {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if !m.file_type().is_socket() {
            return Err(std::io::Error::other("exists and is not a socket"));
        }
        // a socket nobody answers on is stale; a live one belongs to a syslog daemon
        let probe = std::os::unix::net::UnixDatagram::unbound()?;
        if probe.connect(path).is_ok() {
            return Err(std::io::Error::other("a syslog daemon already serves it"));
        }
        std::fs::remove_file(path)?;
    }
    let s = tokio::net::UnixDatagram::bind(path)?;
    // SAFETY: chmod on a valid path; everyone must be able to log
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(std::io::Error::other)?;
    unsafe { libc::chmod(c.as_ptr(), 0o666) };
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_lines() {
        let a = parse_line("Nov 28 21:00:00 gw sshd[812]: Accepted publickey for admin from 192.0.2.7 port 51514 ssh2: ED25519 SHA256:x").unwrap();
        assert_eq!(
            (a.program.as_str(), a.pid, a.action, a.outcome),
            ("sshd", Some(812), "login", "success")
        );
        assert_eq!(
            (a.account.as_str(), a.source_ip.as_str()),
            ("admin", "192.0.2.7")
        );
        let a = parse_line("Nov 28 21:00:01 gw sshd[813]: Failed password for invalid user oracle from 198.51.100.2 port 4242 ssh2").unwrap();
        assert_eq!(
            (a.action, a.account.as_str(), a.source_ip.as_str()),
            ("login_failed", "oracle", "198.51.100.2")
        );
        let a = parse_line("<86>Nov 28 21:00:02 su[900]: pam_unix(su:session): session opened for user nobody(uid=65534) by (uid=0)").unwrap();
        assert_eq!(
            (a.program.as_str(), a.action, a.account.as_str()),
            ("su", "session_open", "nobody")
        );
        let a = parse_line("<85>Nov 28 21:00:03 su[901]: pam_unix(su:auth): authentication failure; logname=bob uid=1000 euid=0 tty=/dev/pts/0 ruser=bob rhost=  user=root").unwrap();
        assert_eq!(
            (a.action, a.outcome, a.account.as_str()),
            ("auth_failed", "failure", "root")
        );
        let a = parse_line("Nov 28 21:00:04 gw sudo:      bob : TTY=pts/0 ; PWD=/home/bob ; USER=root ; COMMAND=/usr/bin/id").unwrap();
        assert_eq!(
            (a.program.as_str(), a.action, a.account.as_str()),
            ("sudo", "sudo", "bob")
        );
        assert!(parse_line("garbage without a tag").is_none());
        assert!(parse_line("").is_none());
    }

    #[test]
    fn follows_appends_rotation_and_truncation() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("auth.log");
        std::fs::write(&p, "old line: before start\n").unwrap();
        let mut f = Follower::new(&p);
        let mut out = Vec::new();
        f.poll(&mut out);
        assert!(out.is_empty(), "history is not replayed");
        std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        std::fs::write(&p, "old line: before start\nsshd[1]: one\nsshd[1]: par").unwrap();
        f.poll(&mut out);
        assert_eq!(out, vec!["sshd[1]: one\n"]);
        // rotation: a new file at the same path
        std::fs::rename(&p, d.path().join("auth.log.1")).unwrap();
        std::fs::write(&p, "sshd[2]: two\n").unwrap();
        out.clear();
        f.poll(&mut out);
        assert_eq!(out, vec!["sshd[2]: two\n"]);
        // truncation
        std::fs::write(&p, "x: 3\n").unwrap();
        out.clear();
        f.poll(&mut out);
        assert_eq!(out, vec!["x: 3\n"]);
    }

    #[test]
    fn reads_many_lines_in_order_and_cuts_long_ones_at_a_character() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("auth.log");
        std::fs::write(&p, "").unwrap();
        let mut f = Follower::new(&p);
        let mut text: String = (0..10_000)
            .map(|i| format!("sshd[1]: line {i}\n"))
            .collect();
        // a 2-byte character across the cut, then an unfinished line
        text.push('x');
        text.push_str(&"\u{e9}".repeat(MAX_LINE));
        text.push_str("\nsshd[1]: unfin");
        std::fs::write(&p, &text).unwrap();
        let mut out = Vec::new();
        f.poll(&mut out);
        assert_eq!(out.len(), 10_001);
        assert!(out[..10_000]
            .iter()
            .enumerate()
            .all(|(i, l)| *l == format!("sshd[1]: line {i}\n")));
        assert_eq!(
            out[10_000],
            format!("x{}", "\u{e9}".repeat(MAX_LINE / 2 - 1))
        );
        out.clear();
        std::fs::write(&p, format!("{text}ished\n")).unwrap();
        f.poll(&mut out);
        assert_eq!(out, vec!["sshd[1]: unfinished\n"]);
    }
}
