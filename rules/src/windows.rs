//! Windows event logs: EVTX record normalization and logsource routing.
//!
//! Records are normalized exactly as `shared/tools/sigma-oracle/README.md`
//! describes (the oracle must see the same fields as the engine):
//! - system fields `EventID` (also when given as `{"#text": ...}`),
//!   `Channel`, `Computer`, `Provider_Name`;
//! - `EventData` keys with spaces stripped (`Threat Name` → `ThreatName`);
//! - the one provider element inside `UserData` lifted to top-level fields;
//! - nested maps and lists kept as their JSON text.
//!
//! Routing follows SigmaHQ's `tests/thor.yml`: the channel gives the
//! service, Sysmon event ids give the category, Security 4688 is
//! `process_creation` with `Image` → `NewProcessName`, `ParentImage` →
//! `ParentProcessName` and `LogonId` → `SubjectLogonId` (the renames of
//! pySigma's `windows-audit` pipeline that apply to 4688; the pySigma oracle
//! run with that pipeline fires exactly these on the shared set's 4688
//! records, `rules/tests/oracle/audit_4688.py`), and Defender detection events are `antivirus` with
//! `Signature` → `ThreatName` and `Filename` → `Path`.

use serde_json::{Map, Value as Json};

use crate::event::{Event, Value};
use std::sync::{Arc, PoisonError, RwLock};

use crate::fxhash::FxHashMap;
use crate::ruleset::{LogSource, Match, Route, RuleSet};

/// Flattens one evtx-rs JSON record (`{"Event": {...}}`) into the field map
/// rules see. Returns `None` for JSON that is not an event record.
#[must_use]
pub fn normalize_evtx(record: &Json) -> Option<Map<String, Json>> {
    let event = record.get("Event")?.as_object()?;
    let mut row = Map::new();
    let system = event.get("System").and_then(Json::as_object);
    let sys = |k: &str| system.and_then(|s| s.get(k)).cloned().unwrap_or(Json::Null);
    let eid = match sys("EventID") {
        Json::Object(o) => o.get("#text").cloned().unwrap_or(Json::Null),
        other => other,
    };
    row.insert("EventID".into(), eid);
    row.insert("Channel".into(), sys("Channel"));
    row.insert("Computer".into(), sys("Computer"));
    let provider = system
        .and_then(|s| s.get("Provider"))
        .and_then(|p| p.get("#attributes"))
        .and_then(|a| a.get("Name"))
        .cloned()
        .unwrap_or(Json::Null);
    row.insert("Provider_Name".into(), provider);
    let mut data: Vec<(&String, &Json)> = Vec::new();
    if let Some(Json::Object(ed)) = event.get("EventData") {
        data.extend(ed.iter());
    }
    if let Some(Json::Object(ud)) = event.get("UserData") {
        for inner in ud.values() {
            if let Json::Object(fields) = inner {
                data.extend(fields.iter());
            }
        }
    }
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
    Some(row)
}

/// Renames a rule asks for on some events (`Image` → `NewProcessName` on
/// Security 4688).
pub type Aliases = &'static [(&'static str, &'static str)];

/// Where a normalized Windows event belongs: its logsources (several for
/// Sysmon registry events) and the field renames rules need on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routing {
    /// The logsources; rules of any of them see the event.
    pub sources: Vec<LogSource>,
    /// Rule field → event field, for this kind of event.
    pub aliases: Aliases,
}

/// A text field of a normalized event under its Sigma name: through
/// `aliases` first (as rules see the event, e.g. `Image` of a Security 4688
/// event is its `NewProcessName`), then the field itself; `None` when
/// absent, empty or not a string.
#[must_use]
pub fn sigma_text<'a>(ev: &'a Map<String, Json>, aliases: Aliases, name: &str) -> Option<&'a str> {
    aliases
        .iter()
        .find(|(from, _)| *from == name)
        .and_then(|(_, to)| ev.get(*to))
        .and_then(Json::as_str)
        .or_else(|| ev.get(name).and_then(Json::as_str))
        .filter(|s| !s.is_empty())
}

const SECURITY_4688: Aliases = &[
    ("Image", "NewProcessName"),
    ("ParentImage", "ParentProcessName"),
    ("LogonId", "SubjectLogonId"),
];
const DEFENDER: Aliases = &[("Signature", "ThreatName"), ("Filename", "Path")];
const DEFENDER_DETECTION_IDS: [i64; 12] = [
    1006, 1007, 1008, 1009, 1010, 1011, 1012, 1017, 1018, 1019, 1115, 1116,
];

/// Channel → service, from the `sources` of thor.yml.
const CHANNELS: &[(&str, &str)] = &[
    ("Application", "application"),
    ("Security", "security"),
    ("System", "system"),
    ("Microsoft-Windows-NTLM/Operational", "ntlm"),
    ("Microsoft-Windows-Sysmon/Operational", "sysmon"),
    ("Microsoft-Windows-PowerShell/Operational", "powershell"),
    ("PowerShellCore/Operational", "powershell"),
    ("Windows PowerShell", "powershell-classic"),
    (
        "Microsoft-Windows-TaskScheduler/Operational",
        "taskscheduler",
    ),
    ("Microsoft-Windows-WMI-Activity/Operational", "wmi"),
    ("Microsoft-Windows-DHCP-Server/Operational", "dhcp"),
    ("Microsoft-Windows-PrintService/Admin", "printservice-admin"),
    ("Microsoft-Windows-SmbClient/Security", "smbclient-security"),
    (
        "Microsoft-Windows-SmbClient/Connectivity",
        "smbclient-connectivity",
    ),
    (
        "Microsoft-Windows-SMBServer/Connectivity",
        "smbserver-connectivity",
    ),
    (
        "Microsoft-Windows-PrintService/Operational",
        "printservice-operational",
    ),
    (
        "Microsoft-Windows-TerminalServices-LocalSessionManager/Operational",
        "terminalservices-localsessionmanager",
    ),
    (
        "Microsoft-Windows-CodeIntegrity/Operational",
        "codeintegrity-operational",
    ),
    ("Microsoft-Windows-AppLocker/MSI and Script", "applocker"),
    ("Microsoft-Windows-AppLocker/EXE and DLL", "applocker"),
    (
        "Microsoft-Windows-AppLocker/Packaged app-Deployment",
        "applocker",
    ),
    (
        "Microsoft-Windows-AppLocker/Packaged app-Execution",
        "applocker",
    ),
    ("MSExchange Management", "msexchange-management"),
    (
        "Microsoft-Windows-Windows Defender/Operational",
        "windefend",
    ),
    (
        "Microsoft-Windows-Windows Firewall With Advanced Security/Firewall",
        "firewall-as",
    ),
    ("Microsoft-Windows-Bits-Client/Operational", "bits-client"),
    (
        "Microsoft-Windows-Security-Mitigations/Kernel Mode",
        "security-mitigations",
    ),
    (
        "Microsoft-Windows-Security-Mitigations/User Mode",
        "security-mitigations",
    ),
    (
        "Microsoft-Windows-Diagnosis-Scripted/Operational",
        "diagnosis-scripted",
    ),
    ("Microsoft-Windows-Shell-Core/Operational", "shell-core"),
    ("OpenSSH/Operational", "openssh"),
    ("Microsoft-Windows-LDAP-Client/Debug", "ldap"),
    (
        "Microsoft-Windows-BitLocker/BitLocker Management",
        "bitlocker",
    ),
    ("Microsoft-Windows-VHDMP/Operational", "vhdmp"),
    (
        "Microsoft-Windows-AppXDeploymentServer/Operational",
        "appxdeployment-server",
    ),
    ("Microsoft-Windows-LSA/Operational", "lsa-server"),
    (
        "Microsoft-Windows-AppxPackaging/Operational",
        "appxpackaging-om",
    ),
    (
        "Microsoft-Windows-DNS Client Events/Operational",
        "dns-client",
    ),
    (
        "Microsoft-Windows-AppModel-Runtime/Admin",
        "appmodel-runtime",
    ),
    ("Microsoft-Windows-CAPI2/Operational", "capi2"),
    (
        "Microsoft-Windows-CertificateServicesClient-Lifecycle-System/Operational",
        "certificateservicesclient-lifecycle-system",
    ),
    (
        "Microsoft-Windows-Kernel-ShimEngine/Operational",
        "kernel-shimengine",
    ),
    (
        "Microsoft-Windows-Kernel-ShimEngine/Diagnostic",
        "kernel-shimengine",
    ),
    (
        "Microsoft-Windows-Application-Experience/Program-Telemetry",
        "application-experience",
    ),
    (
        "Microsoft-Windows-Application-Experience/Program-Compatibility-Assistant",
        "application-experience",
    ),
    ("Microsoft-Windows-Ntfs/Operational", "ntfs"),
    ("Microsoft-Windows-Hyper-V-Worker", "hyper-v-worker"),
    (
        "Microsoft-Windows-Kernel-EventTracing",
        "kernel-event-tracing",
    ),
    ("Microsoft-Windows-SENSE/Operational", "sense"),
    ("Microsoft-ServiceBus-Client/Admin", "servicebus-client"),
    (
        "Microsoft-ServiceBus-Client/Operational",
        "servicebus-client",
    ),
    (
        "Microsoft-IIS-Configuration/Operational",
        "iis-configuration",
    ),
];

/// Sysmon event id → categories (thor.yml; ids 12–14 are also
/// `registry_event`, and 12 splits on `EventType`).
fn sysmon_categories(eid: i64, event_type: Option<&str>) -> &'static [&'static str] {
    match eid {
        1 => &["process_creation"],
        2 => &["file_change"],
        3 => &["network_connection"],
        4 | 16 => &["sysmon_status"],
        5 => &["process_termination"],
        6 => &["driver_load"],
        7 => &["image_load"],
        8 => &["create_remote_thread"],
        9 => &["raw_access_thread"],
        10 => &["process_access"],
        11 => &["file_event"],
        12 => match event_type {
            Some("CreateKey") => &["registry_event", "registry_add"],
            Some("DeleteKey" | "DeleteValue") => &["registry_event", "registry_delete"],
            _ => &["registry_event"],
        },
        13 => &["registry_event", "registry_set"],
        14 => &["registry_event", "registry_rename"],
        15 => &["create_stream_hash"],
        17 | 18 => &["pipe_created"],
        19..=21 => &["wmi_event"],
        22 => &["dns_query"],
        23 => &["file_delete"],
        24 => &["clipboard_change"],
        25 => &["process_tampering"],
        26 => &["file_delete_detected"],
        27 => &["file_block_executable"],
        28 => &["file_block_shredding"],
        29 => &["file_executable_detected"],
        255 => &["sysmon_error"],
        _ => &[],
    }
}

fn event_id(ev: &Map<String, Json>) -> Option<i64> {
    event_id_of(ev.get("EventID")?)
}

fn event_id_of(v: &Json) -> Option<i64> {
    match v {
        Json::Number(n) => n.as_i64(),
        Json::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// `Channel`, `EventID` and `EventType` of a normalized event. A normalized
/// record has a few dozen keys at most: one pass comparing them is cheaper
/// than three hashed lookups (serde_json's map hashes with SipHash).
fn routing_fields(ev: &Map<String, Json>) -> [Option<&Json>; 3] {
    if ev.len() > 32 {
        return [ev.get("Channel"), ev.get("EventID"), ev.get("EventType")];
    }
    let mut out = [None; 3];
    for (k, v) in ev {
        match k.as_str() {
            "Channel" => out[0] = Some(v),
            "EventID" => out[1] = Some(v),
            "EventType" => out[2] = Some(v),
            _ => {}
        }
    }
    out
}

/// Routes a normalized event (see [`normalize_evtx`]).
#[must_use]
pub fn route(ev: &Map<String, Json>) -> Routing {
    let channel = ev.get("Channel").and_then(Json::as_str).unwrap_or_default();
    let service = CHANNELS
        .iter()
        .find(|(c, _)| c.eq_ignore_ascii_case(channel))
        .map(|(_, s)| *s);
    let eid = event_id(ev).unwrap_or(-1);
    let win = |category: Option<&str>| LogSource::new(Some("windows"), category, service);
    let mut sources = Vec::new();
    let mut aliases: Aliases = &[];
    match service {
        Some("sysmon") => {
            let et = ev.get("EventType").and_then(Json::as_str);
            sources.extend(sysmon_categories(eid, et).iter().map(|c| win(Some(c))));
        }
        Some("security") if eid == 4688 => {
            sources.push(win(Some("process_creation")));
            aliases = SECURITY_4688;
        }
        Some("powershell") => match eid {
            4103 => sources.push(win(Some("ps_module"))),
            4104 => sources.push(win(Some("ps_script"))),
            _ => {}
        },
        Some("powershell-classic") => match eid {
            400 => sources.push(win(Some("ps_classic_start"))),
            600 => sources.push(win(Some("ps_classic_provider_start"))),
            800 => sources.push(win(Some("ps_classic_script"))),
            _ => {}
        },
        Some("windefend") if DEFENDER_DETECTION_IDS.contains(&eid) => {
            sources.push(win(Some("antivirus")));
            aliases = DEFENDER;
        }
        _ => {}
    }
    // Every event also reaches the rules of its service without a category
    // (`product: windows, service: security`) and the product-only rules;
    // the category-specific sources above already include those, so only
    // add the plain source when there is none.
    if sources.is_empty() {
        sources.push(win(None));
    }
    Routing { sources, aliases }
}

/// An event seen through field renames: a renamed field is looked up under
/// its event name first, then under the name the rule used.
#[derive(Debug, Clone, Copy)]
pub struct Aliased<'a, E: ?Sized> {
    /// The event.
    pub event: &'a E,
    /// Rule field → event field.
    pub aliases: Aliases,
}

impl<E: Event + ?Sized> Event for Aliased<'_, E> {
    fn field(&self, name: &str) -> Option<Value<'_>> {
        if let Some((_, to)) = self.aliases.iter().find(|(from, _)| *from == name) {
            if let Some(v) = self.event.field(to) {
                return Some(v);
            }
        }
        self.event.field(name)
    }

    fn for_each_value(&self, visit: &mut dyn FnMut(&Value<'_>) -> bool) {
        self.event.for_each_value(visit);
    }
}

/// Routes and evaluates one normalized Windows event (builds the routing
/// per call; [`Router`] caches it).
pub fn evaluate(rules: &RuleSet, ev: &Map<String, Json>, out: &mut Vec<Match>) -> usize {
    let routing = route(ev);
    let aliased = Aliased {
        event: ev,
        aliases: routing.aliases,
    };
    rules.evaluate_sources(&routing.sources, &aliased, out)
}

/// Routes and evaluates normalized Windows events against one rule set,
/// caching the route of each (channel, event id) so that an event costs no
/// allocation before it matches. Share it between threads by reference.
#[derive(Debug)]
pub struct Router<'r> {
    rules: &'r RuleSet,
    cache: RwLock<FxHashMap<RouteKey, (Aliases, Arc<Route>)>>,
}

/// (index in `CHANNELS` or `usize::MAX`, event id, Sysmon 12 `EventType`
/// class).
type RouteKey = (usize, i64, u8);

/// Distinct (channel, event id) pairs cached; past this, routes are built
/// per event (event ids come from the logs, so the set is not bounded).
const ROUTER_CACHE_MAX: usize = 4096;

impl<'r> Router<'r> {
    /// A router for `rules`.
    #[must_use]
    pub fn new(rules: &'r RuleSet) -> Self {
        Router {
            rules,
            cache: RwLock::new(FxHashMap::default()),
        }
    }

    /// Routes and evaluates one normalized event (see [`normalize_evtx`]).
    pub fn evaluate(&self, ev: &Map<String, Json>, out: &mut Vec<Match>) -> usize {
        let [channel, eid, event_type] = routing_fields(ev);
        let channel = channel.and_then(Json::as_str).unwrap_or_default();
        let ch = CHANNELS
            .iter()
            .position(|(c, _)| c.eq_ignore_ascii_case(channel))
            .unwrap_or(usize::MAX);
        let eid = eid.and_then(event_id_of).unwrap_or(-1);
        let class = match event_type.and_then(Json::as_str) {
            Some("CreateKey") => 1,
            Some("DeleteKey" | "DeleteValue") => 2,
            _ => 0,
        };
        let key = (ch, eid, class);
        let cached = self
            .cache
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .cloned();
        let (aliases, route) = match cached {
            Some(hit) => hit,
            None => {
                let routing = route(ev);
                let entry = (routing.aliases, self.rules.route(&routing.sources));
                let mut cache = self.cache.write().unwrap_or_else(PoisonError::into_inner);
                if cache.len() < ROUTER_CACHE_MAX {
                    cache.insert(key, entry.clone());
                }
                entry
            }
        };
        self.rules
            .evaluate_route(&route, &Aliased { event: ev, aliases }, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigma_text_reads_through_the_routings_aliases() {
        let ev = serde_json::json!({
            "Channel": "Security", "EventID": 4688,
            "NewProcessName": "C:\\Windows\\System32\\cmd.exe", "CommandLine": "",
        });
        let ev = ev.as_object().unwrap();
        let aliases = route(ev).aliases;
        assert_eq!(
            sigma_text(ev, aliases, "Image"),
            Some("C:\\Windows\\System32\\cmd.exe")
        );
        assert_eq!(
            sigma_text(ev, aliases, "NewProcessName"),
            sigma_text(ev, aliases, "Image")
        );
        assert_eq!(sigma_text(ev, aliases, "CommandLine"), None, "empty");
        assert_eq!(sigma_text(ev, &[], "Image"), None, "no alias, no field");
    }

    #[test]
    fn normalizes_like_the_oracle() {
        let rec: Json = serde_json::json!({"Event": {
            "System": {"EventID": {"#text": 4688, "#attributes": {"Qualifiers": 0}},
                       "Channel": "Security", "Computer": "pc",
                       "Provider": {"#attributes": {"Name": "Microsoft-Windows-Security-Auditing"}}},
            "EventData": {"New Process Name": "C:\\x.exe", "#attributes": {}, "List": [1, 2]},
            "UserData": {"Inner": {"Lifted": "yes"}}
        }});
        let ev = normalize_evtx(&rec).unwrap();
        assert_eq!(ev["EventID"], 4688);
        assert_eq!(ev["Provider_Name"], "Microsoft-Windows-Security-Auditing");
        assert_eq!(ev["NewProcessName"], "C:\\x.exe");
        assert_eq!(ev["List"], "[1,2]");
        assert_eq!(ev["Lifted"], "yes");
        assert!(!ev.contains_key("#attributes"));
        let r = route(&ev);
        assert_eq!(
            r.sources,
            [LogSource::new(
                Some("windows"),
                Some("process_creation"),
                Some("security")
            )]
        );
        assert_eq!(
            Aliased {
                event: &ev,
                aliases: r.aliases
            }
            .field("Image"),
            Some(Value::Str("C:\\x.exe".into()))
        );
    }

    #[test]
    fn router_agrees_with_evaluate() {
        let rule = "title: t\nlogsource: {product: windows, category: process_creation}\ndetection:\n    s:\n        Image|endswith: '\\\\x.exe'\n    condition: s\n";
        let set = RuleSet::from_sources([("t.yml", rule)], &crate::EngineConfig::new()).rules;
        let router = Router::new(&set);
        let sysmon = serde_json::json!({"EventID": 1, "Channel": "Microsoft-Windows-Sysmon/Operational", "Image": "C:\\x.exe"});
        let security = serde_json::json!({"EventID": "4688", "Channel": "Security", "NewProcessName": "C:\\x.exe"});
        let other = serde_json::json!({"EventID": 4689, "Channel": "Security", "NewProcessName": "C:\\x.exe"});
        for (ev, want) in [(&sysmon, 1), (&security, 1), (&other, 0), (&security, 1)] {
            let ev = ev.as_object().unwrap();
            let mut out = Vec::new();
            assert_eq!(router.evaluate(ev, &mut out), want);
            assert_eq!(evaluate(&set, ev, &mut Vec::new()), want);
        }
    }

    #[test]
    fn sysmon_registry_is_two_categories() {
        let ev = serde_json::json!({"EventID": 12, "Channel": "Microsoft-Windows-Sysmon/Operational", "EventType": "CreateKey"});
        let r = route(ev.as_object().unwrap());
        assert_eq!(r.sources.len(), 2);
    }
}
