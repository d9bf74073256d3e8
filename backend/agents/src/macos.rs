//! macOS agents: Apple's `eslogger` JSON and Elastic Endpoint ECS documents.

use picket_rules::LogSource;
use serde_json::{Map, Value as Json};

use crate::{AgentError, Format, Mapped};

fn macos(category: Option<&str>) -> LogSource {
    LogSource::new(Some("macos"), category, None)
}

/// `a.b.c` inside `v`.
fn path<'a>(v: &'a Json, dotted: &str) -> Option<&'a Json> {
    dotted.split('.').try_fold(v, |cur, k| cur.get(k))
}

fn put(row: &mut Map<String, Json>, sigma: &str, v: Option<&Json>) {
    if let Some(v) = v.filter(|v| !v.is_null()) {
        row.insert(sigma.to_owned(), v.clone());
    }
}

/// Arguments joined with spaces: the command line as `ps` shows it. Neither
/// ES nor ECS keeps the original quoting, so an argument with a space in it
/// is not quoted (rules match substrings of the command line, and SigmaHQ's
/// macOS rules are written against this form).
fn join_args(args: &Json) -> Option<Json> {
    let args = args.as_array()?;
    let parts: Vec<String> = args
        .iter()
        .map(|a| match a {
            Json::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect();
    Some(Json::String(parts.join(" ")))
}

/// One `eslogger` message (`eslogger(1)`: one JSON object per line, the
/// serialized `es_message_t`).
pub(crate) fn from_eslogger(msg: &Json) -> Result<Mapped, AgentError> {
    let format = Format::Eslogger;
    let event = msg
        .get("event")
        .and_then(Json::as_object)
        .ok_or_else(|| AgentError::missing(format, "event", "an object"))?;
    // The event object has exactly one key, the event kind (`exec`, ...).
    let (kind, body) = event
        .iter()
        .next()
        .ok_or_else(|| AgentError::missing(format, "event", "an object with one event kind"))?;
    let process = msg
        .get("process")
        .filter(|p| p.is_object())
        .ok_or_else(|| AgentError::missing(format, "process", "an object"))?;
    let actor = path(process, "executable.path")
        .filter(|p| p.is_string())
        .ok_or_else(|| AgentError::missing(format, "process.executable.path", "a string"))?;
    let mut row = Map::new();
    row.insert("EventType".into(), Json::String(kind.clone()));
    let mut sources = Vec::new();
    match kind.as_str() {
        "exec" => {
            let target = body
                .get("target")
                .filter(|t| t.is_object())
                .ok_or_else(|| AgentError::missing(format, "event.exec.target", "an object"))?;
            let image = path(target, "executable.path")
                .filter(|p| p.is_string())
                .ok_or_else(|| {
                    AgentError::missing(format, "event.exec.target.executable.path", "a string")
                })?;
            put(&mut row, "Image", Some(image));
            let cmd = body.get("args").and_then(join_args);
            put(&mut row, "CommandLine", cmd.as_ref().or(Some(image)));
            // The message's process is the image that called exec: after a
            // fork, the parent's image (ES reports no parent path).
            put(&mut row, "ParentImage", Some(actor));
            put(&mut row, "ProcessId", path(target, "audit_token.pid"));
            put(&mut row, "ParentProcessId", target.get("ppid"));
            put(&mut row, "CurrentDirectory", path(body, "cwd.path"));
            process_identity(&mut row, target);
            sources.push(macos(Some("process_creation")));
        }
        "fork" => {
            let child = body
                .get("child")
                .filter(|c| c.is_object())
                .ok_or_else(|| AgentError::missing(format, "event.fork.child", "an object"))?;
            put(&mut row, "Image", path(child, "executable.path"));
            put(&mut row, "ParentImage", Some(actor));
            put(&mut row, "ProcessId", path(child, "audit_token.pid"));
            put(&mut row, "ParentProcessId", child.get("ppid"));
            process_identity(&mut row, child);
            // No category: a fork starts no new image, and process_creation
            // rules would see every exec twice.
            sources.push(macos(None));
        }
        "exit" => {
            put(&mut row, "ExitStatus", body.get("stat"));
            sources.push(macos(Some("process_termination")));
        }
        "open" => {
            let file = required_path(body, "file.path", "event.open.file.path")?;
            put(&mut row, "TargetFilename", Some(&file));
            sources.push(macos(Some("file_access")));
        }
        "create" => {
            let file = destination(body, "event.create.destination")?;
            put(&mut row, "TargetFilename", Some(&file));
            sources.push(macos(Some("file_event")));
        }
        "rename" => {
            let src = required_path(body, "source.path", "event.rename.source.path")?;
            let dst = destination(body, "event.rename.destination")?;
            put(&mut row, "SourceFilename", Some(&src));
            put(&mut row, "TargetFilename", Some(&dst));
            // A rename creates its destination name, which is what
            // file_event rules look for (a plist moved into place).
            sources.push(macos(Some("file_event")));
            sources.push(macos(Some("file_rename")));
        }
        "unlink" => {
            let file = required_path(body, "target.path", "event.unlink.target.path")?;
            put(&mut row, "TargetFilename", Some(&file));
            sources.push(macos(Some("file_delete")));
        }
        _ => sources.push(macos(None)),
    }
    if !row.contains_key("Image") {
        put(&mut row, "Image", Some(actor));
        put(&mut row, "ProcessId", path(process, "audit_token.pid"));
        put(&mut row, "ParentProcessId", process.get("ppid"));
        process_identity(&mut row, process);
    }
    Ok(Mapped {
        format,
        sources,
        aliases: &[],
        fields: row,
    })
}

/// Code signing and user of an `es_process_t`. ES carries user ids, not
/// names, so `User` is not set; `UserId` is the effective uid.
fn process_identity(row: &mut Map<String, Json>, p: &Json) {
    put(row, "UserId", path(p, "audit_token.euid"));
    put(row, "SigningId", p.get("signing_id"));
    put(row, "TeamId", p.get("team_id"));
    put(row, "PlatformBinary", p.get("is_platform_binary"));
}

fn required_path(body: &Json, rel: &str, field: &'static str) -> Result<Json, AgentError> {
    path(body, rel)
        .filter(|p| p.is_string())
        .cloned()
        .ok_or_else(|| AgentError::missing(Format::Eslogger, field, "a string"))
}

/// `destination_type` 0: `existing_file.path`; 1: `new_path.dir.path` +
/// `/` + `new_path.filename` (EndpointSecurity `es_event_create_t`,
/// `es_event_rename_t`).
fn destination(body: &Json, field: &'static str) -> Result<Json, AgentError> {
    let dest = body.get("destination");
    if let Some(p) = dest.and_then(|d| path(d, "existing_file.path")) {
        if p.is_string() {
            return Ok(p.clone());
        }
    }
    let dir = dest
        .and_then(|d| path(d, "new_path.dir.path"))
        .and_then(Json::as_str);
    let name = dest
        .and_then(|d| path(d, "new_path.filename"))
        .and_then(Json::as_str);
    match (dir, name) {
        (Some(dir), Some(name)) => Ok(Json::String(format!(
            "{}/{name}",
            dir.strip_suffix('/').unwrap_or(dir)
        ))),
        _ => Err(AgentError::missing(
            Format::Eslogger,
            field,
            "existing_file.path or new_path.dir.path and new_path.filename",
        )),
    }
}

/// Does the ECS document's `event.category` / `event.type` (string or list)
/// contain `want`?
fn ecs_has(ev: &Json, field: &str, want: &str) -> bool {
    match ev.get("event").and_then(|e| e.get(field)) {
        Some(Json::Array(v)) => v.iter().any(|x| x == want),
        Some(Json::String(s)) => s == want,
        _ => false,
    }
}

/// One Elastic Endpoint document for macOS (its `_source`).
pub(crate) fn from_ecs(doc: &Json) -> Result<Mapped, AgentError> {
    let format = Format::EcsMacos;
    if !doc.get("event").is_some_and(Json::is_object) {
        return Err(AgentError::missing(format, "event", "an object"));
    }
    let mut row = Map::new();
    for (sigma, ecs) in picket_rules::MACOS_ECS_FIELDS
        .iter()
        .chain(&[("Computer", "host.hostname")])
    {
        put(&mut row, sigma, path(doc, ecs));
    }
    // Elastic Endpoint 7.x leaves out command_line on some events; args is
    // always there.
    for (sigma, args) in [
        ("CommandLine", "process.args"),
        ("ParentCommandLine", "process.parent.args"),
    ] {
        if !row.contains_key(sigma) {
            if let Some(cmd) = path(doc, args).and_then(join_args) {
                if cmd.as_str().is_some_and(|s| !s.is_empty()) {
                    row.insert(sigma.to_owned(), cmd);
                }
            }
        }
    }
    let category = if ecs_has(doc, "category", "process") && ecs_has(doc, "type", "start") {
        Some("process_creation")
    } else if ecs_has(doc, "category", "process") && ecs_has(doc, "type", "end") {
        Some("process_termination")
    } else if ecs_has(doc, "category", "file") && ecs_has(doc, "type", "deletion") {
        Some("file_delete")
    } else if ecs_has(doc, "category", "file") {
        Some("file_event")
    } else if ecs_has(doc, "category", "network") {
        Some("network_connection")
    } else {
        None
    };
    match category {
        Some("process_creation" | "process_termination") if !row.contains_key("Image") => {
            return Err(AgentError::missing(
                format,
                "process.executable",
                "a string",
            ));
        }
        Some("file_event" | "file_delete") if !row.contains_key("TargetFilename") => {
            return Err(AgentError::missing(format, "file.path", "a string"));
        }
        _ => {}
    }
    Ok(Mapped {
        format,
        sources: vec![macos(category)],
        aliases: &[],
        fields: row,
    })
}
