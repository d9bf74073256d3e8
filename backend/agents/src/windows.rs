//! Windows agents: evtx-rs JSON records and Winlogbeat ECS documents.
//!
//! Both become the field map of [`picket_rules::windows::normalize_evtx`]
//! (the one the oracle and `picketctl hunt` use) and are routed by
//! [`picket_rules::windows::route`], whose logsources and field renames
//! (Security 4688: `Image` → `NewProcessName`, ...) the [`Mapped`] event
//! carries: rules see it exactly as `picketctl hunt` sees the record.

use picket_rules::windows;
use serde_json::{Map, Value as Json};

use crate::{AgentError, Format, Mapped};

/// An evtx-rs record (`{"Event": {"System": ..., "EventData": ...}}`).
pub(crate) fn from_evtx(record: &Json) -> Result<Mapped, AgentError> {
    let format = Format::Evtx;
    if !record.get("Event").is_some_and(Json::is_object) {
        return Err(AgentError::missing(format, "Event", "an object"));
    }
    let row = windows::normalize_evtx(record)
        .ok_or_else(|| AgentError::missing(format, "Event", "an object"))?;
    finish(format, row, "Event.System.EventID", "Event.System.Channel")
}

/// A Winlogbeat document (`winlog.channel`, `winlog.event_id`,
/// `winlog.event_data`, ...).
pub(crate) fn from_winlogbeat(doc: &Map<String, Json>) -> Result<Mapped, AgentError> {
    let format = Format::Winlogbeat;
    let winlog = doc
        .get("winlog")
        .and_then(Json::as_object)
        .ok_or_else(|| AgentError::missing(format, "winlog", "an object"))?;
    let mut row = Map::new();
    // `winlog.event_id` is a number in Winlogbeat 7 and a string in 8;
    // `event.code` (ECS, always a string) is the fallback.
    let eid = winlog
        .get("event_id")
        .cloned()
        .or_else(|| doc.get("event").and_then(|e| e.get("code")).cloned())
        .unwrap_or(Json::Null);
    row.insert("EventID".into(), eid);
    let sys = |k: &str| winlog.get(k).cloned().unwrap_or(Json::Null);
    row.insert("Channel".into(), sys("channel"));
    row.insert("Computer".into(), sys("computer_name"));
    row.insert("Provider_Name".into(), sys("provider_name"));
    // Same rules as normalize_evtx: spaces stripped from names, nested
    // values as their JSON text.
    for key in ["event_data", "user_data"] {
        if let Some(Json::Object(data)) = winlog.get(key) {
            for (k, v) in data {
                if k.starts_with('#') {
                    continue;
                }
                let v = match v {
                    Json::Object(_) | Json::Array(_) => Json::String(v.to_string()),
                    other => other.clone(),
                };
                row.insert(k.replace(' ', ""), v);
            }
        }
    }
    finish(format, row, "winlog.event_id", "winlog.channel")
}

fn finish(
    format: Format,
    mut row: Map<String, Json>,
    eid_field: &'static str,
    channel_field: &'static str,
) -> Result<Mapped, AgentError> {
    // One type for EventID whatever the agent wrote, so that equal records
    // from two agents are equal maps.
    let eid = match row.get("EventID") {
        Some(Json::Number(n)) => n.as_i64(),
        Some(Json::String(s)) => s.trim().parse::<i64>().ok(),
        _ => None,
    }
    .ok_or_else(|| AgentError::missing(format, eid_field, "an integer"))?;
    row.insert("EventID".into(), Json::from(eid));
    if !row.get("Channel").is_some_and(Json::is_string) {
        return Err(AgentError::missing(format, channel_field, "a string"));
    }
    // The logsources and renames `picketctl hunt`'s router uses: the
    // renames stay lookups (`Mapped`'s `Event` impl), so the stored event
    // is the record as hunt sees it.
    let routing = windows::route(&row);
    Ok(Mapped {
        format,
        sources: routing.sources,
        aliases: routing.aliases,
        fields: row,
    })
}
