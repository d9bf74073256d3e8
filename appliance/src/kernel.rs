//! The one seam for kernel access: loading probe objects with aya, writing
//! their settings maps, attaching their programs, reading their rings and
//! lost counters, and probing what the kernel offers.
//!
//! Everything that needs root and a BPF-capable kernel goes through here;
//! the rest of the appliance works on [`picket_probes::Record`]s and
//! [`crate::event::Event`]s and is tested without either. Nothing is ever
//! pinned: every program and map lives as long as picketd's file
//! descriptors, so a crash leaves nothing attached.

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::{BtfTracePoint, FEntry, Lsm, Program, ProgramError, RawTracePoint, TracePoint};
use aya::{Btf, Ebpf, EbpfLoader};
use object::{Object as _, ObjectSection as _, ObjectSymbol as _};
use picket_probes::{Object, ProbeConfig, IMAGE_MAX, PREFIX_MAX};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Where kernel BTF is looked for, unless `PICKET_BTF_PATH` says otherwise.
pub const DEFAULT_BTF_PATH: &str = "/sys/kernel/btf/vmlinux";

/// Why a kernel operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KernelError {
    /// No BTF: CO-RE cannot relocate the probes.
    #[error("kernel BTF not readable at {path} ({reason}); picketd needs a kernel built with CONFIG_DEBUG_INFO_BTF=y")]
    Btf {
        /// Where it was looked for.
        path: PathBuf,
        /// Why it failed.
        reason: String,
    },
    /// The object could not be loaded (maps, relocations).
    #[error("module {module}: cannot load probe object: {reason}")]
    Object {
        /// Module.
        module: &'static str,
        /// Why.
        reason: String,
    },
    /// The verifier refused a program.
    #[error("module {module}: the verifier rejected program {program}: {reason}\n--- verifier log (tail) ---\n{log}")]
    Verifier {
        /// Module.
        module: &'static str,
        /// Program.
        program: String,
        /// Error.
        reason: String,
        /// Verifier log tail.
        log: String,
    },
    /// A program could not be attached.
    #[error("module {module}: cannot attach {program} to {hook}: {reason}")]
    Attach {
        /// Module.
        module: &'static str,
        /// Program.
        program: String,
        /// Hook.
        hook: String,
        /// Why.
        reason: String,
    },
    /// None of the module's hooks exist on this kernel.
    #[error("module {module}: none of its hooks exist on this kernel")]
    NoHooks {
        /// Module.
        module: &'static str,
    },
    /// A map operation failed.
    #[error("module {module}: map {map}: {reason}")]
    Map {
        /// Module.
        module: &'static str,
        /// Map.
        map: &'static str,
        /// Why.
        reason: String,
    },
}

/// The probe object of a module. `PICKET_OBJECT_<MODULE>` names a file to
/// load instead: the kernel tests use it to prove how a verifier rejection
/// is reported; an operator can use it to try a rebuilt probe.
pub fn object_for(name: &'static str) -> Option<picket_probes::Object> {
    let var = format!("PICKET_OBJECT_{}", name.to_ascii_uppercase());
    if let Some(path) = std::env::var_os(&var) {
        match std::fs::read(&path) {
            Ok(bytes) => {
                tracing::warn!(
                    module = name,
                    "loading probe object {} from {var}",
                    std::path::Path::new(&path).display()
                );
                // loaded once per module start; the leak is bounded by restarts
                return Some(picket_probes::Object {
                    module: name,
                    bytes: Box::leak(bytes.into_boxed_slice()),
                });
            }
            Err(e) => tracing::error!(module = name, "{var}: {e}; using the built-in object"),
        }
    }
    picket_probes::Object::for_module(name)
}

/// Loads kernel BTF from `PICKET_BTF_PATH` or [`DEFAULT_BTF_PATH`].
///
/// # Errors
/// [`KernelError::Btf`] naming the path.
pub fn load_btf() -> Result<Btf, KernelError> {
    let path = std::env::var_os("PICKET_BTF_PATH")
        .map_or_else(|| PathBuf::from(DEFAULT_BTF_PATH), PathBuf::from);
    Btf::parse_file(&path, aya::Endianness::default()).map_err(|e| KernelError::Btf {
        path: path.clone(),
        reason: e.to_string(),
    })
}

/// Mounts tracefs at `/sys/kernel/tracing` when no tracefs is reachable
/// (minimal images often leave it unmounted); returns the events root.
pub fn ensure_tracefs() -> Option<PathBuf> {
    for root in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        let events = Path::new(root).join("events");
        if events.is_dir() {
            return Some(events);
        }
    }
    let target = c"/sys/kernel/tracing";
    // SAFETY: all pointers are valid NUL-terminated strings.
    let rc = unsafe {
        libc::mount(
            c"tracefs".as_ptr(),
            target.as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        tracing::info!("mounted tracefs at /sys/kernel/tracing");
        return Some(PathBuf::from("/sys/kernel/tracing/events"));
    }
    None
}

/// The hook of a program, from its ELF section name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hook {
    /// `tracepoint/<category>/<name>`
    TracePoint(String, String),
    /// `raw_tracepoint/<name>`
    RawTracePoint(String),
    /// Something else (not attached by modules).
    Other(String),
}

impl std::fmt::Display for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Hook::TracePoint(c, n) => write!(f, "tracepoint {c}:{n}"),
            Hook::RawTracePoint(n) => write!(f, "raw_tracepoint {n}"),
            Hook::Other(s) => write!(f, "{s}"),
        }
    }
}

/// Program name to hook, read from the object's symbols and sections.
pub fn program_hooks(bytes: &[u8]) -> HashMap<String, Hook> {
    let mut out = HashMap::new();
    let Ok(file) = object::File::parse(bytes) else {
        return out;
    };
    for sym in file.symbols() {
        if sym.kind() != object::SymbolKind::Text {
            continue;
        }
        let (Ok(name), Some(idx)) = (sym.name(), sym.section_index()) else {
            continue;
        };
        let Ok(section) = file.section_by_index(idx) else {
            continue;
        };
        let Ok(sec) = section.name() else { continue };
        let hook = if let Some(rest) = sec.strip_prefix("tracepoint/") {
            match rest.split_once('/') {
                Some((c, n)) => Hook::TracePoint(c.to_owned(), n.to_owned()),
                None => Hook::Other(sec.to_owned()),
            }
        } else if let Some(n) = sec.strip_prefix("raw_tracepoint/") {
            Hook::RawTracePoint(n.to_owned())
        } else {
            Hook::Other(sec.to_owned())
        };
        out.insert(name.to_owned(), hook);
    }
    out
}

fn verifier_error(module: &'static str, program: &str, e: ProgramError) -> KernelError {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(15)..].join("\n");
            KernelError::Verifier {
                module,
                program: program.to_owned(),
                reason: io_error.to_string(),
                log: tail,
            }
        }
        other => KernelError::Verifier {
            module,
            program: program.to_owned(),
            reason: other.to_string(),
            log: String::new(),
        },
    }
}

/// Syscalls the `syscalls` module can watch through `raw_syscalls` when
/// their own tracepoints are missing, with this architecture's numbers.
#[cfg(target_arch = "x86_64")]
pub const FALLBACK_SYSCALLS: [(&str, u32); 3] = [
    ("init_module", 175),
    ("finit_module", 313),
    ("delete_module", 176),
];
/// Syscalls the `syscalls` module can watch through `raw_syscalls` when
/// their own tracepoints are missing, with this architecture's numbers.
#[cfg(target_arch = "aarch64")]
pub const FALLBACK_SYSCALLS: [(&str, u32); 3] = [
    ("init_module", 105),
    ("finit_module", 273),
    ("delete_module", 106),
];
/// Syscalls the `syscalls` module can watch through `raw_syscalls` when
/// their own tracepoints are missing (none known for this architecture).
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub const FALLBACK_SYSCALLS: [(&str, u32); 3] = [
    ("init_module", 0),
    ("finit_module", 0),
    ("delete_module", 0),
];

/// The fallback syscalls whose tracepoints this kernel lacks (the
/// `syscalls` module only).
fn missing_syscalls(tracefs_events: &Path, module: &str) -> Vec<&'static str> {
    if module != "syscalls" || !tracefs_events.join("raw_syscalls/sys_enter").is_dir() {
        return Vec::new();
    }
    FALLBACK_SYSCALLS
        .iter()
        .filter(|(n, nr)| {
            *nr != 0
                && !tracefs_events
                    .join("syscalls")
                    .join(format!("sys_enter_{n}"))
                    .is_dir()
        })
        .map(|(n, _)| *n)
        .collect()
}

/// What a module's probes are told at load and on reload.
#[derive(Debug, Clone, Default)]
pub struct ProbeSettings {
    /// The config map's value.
    pub config: ProbeConfig,
    /// Ring buffer size in bytes.
    pub ring_buffer_bytes: u32,
    /// tgid -> interest bits set from user space (picketd itself).
    pub interest: Vec<(u32, u32)>,
    /// executable -> interest bits.
    pub image_rules: Vec<(String, u32)>,
    /// Watched path prefixes (file module).
    pub watch_prefixes: Vec<String>,
    /// Ignored path prefixes (file module).
    pub ignore_prefixes: Vec<String>,
    /// Attach the `raw_syscalls` fallback where it applies (syscalls module).
    pub raw_syscalls_fallback: bool,
}

/// A module's probes, loaded and attached.
pub struct LoadedProbes {
    /// The module.
    pub module: &'static str,
    ebpf: Ebpf,
    ring: RingBuf<MapData>,
    /// Hooks attached.
    pub attached: Vec<String>,
    /// Hooks this kernel does not have, skipped.
    pub skipped: Vec<String>,
}

impl std::fmt::Debug for LoadedProbes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedProbes")
            .field("module", &self.module)
            .field("attached", &self.attached.len())
            .field("skipped", &self.skipped)
            .finish_non_exhaustive()
    }
}

impl LoadedProbes {
    /// Loads `object`, writes `settings` into its maps, then attaches every
    /// program whose hook exists on this kernel. Programs are attached only
    /// after the maps are set, so the first event is already filtered.
    ///
    /// # Errors
    /// A [`KernelError`] naming the module, the program and the cause; a
    /// verifier rejection carries the tail of the verifier log.
    pub fn load(
        object: Object,
        btf: &Btf,
        tracefs_events: &Path,
        settings: &ProbeSettings,
    ) -> Result<Self, KernelError> {
        let module = object.module;
        let mut settings = settings.clone();
        let fallback = if settings.raw_syscalls_fallback {
            missing_syscalls(tracefs_events, module)
        } else {
            Vec::new()
        };
        for (i, (name, nr)) in FALLBACK_SYSCALLS.iter().enumerate() {
            settings.config.fallback_nr[i] = if fallback.contains(name) { *nr } else { 0 };
        }
        let settings = &settings;
        let mut ebpf = EbpfLoader::new()
            .btf(Some(btf))
            .set_max_entries("pk_events", settings.ring_buffer_bytes)
            .load(object.bytes)
            .map_err(|e| KernelError::Object {
                module,
                reason: e.to_string(),
            })?;
        Self::write_settings(module, &mut ebpf, settings)?;
        let hooks = program_hooks(object.bytes);
        let mut names: Vec<String> = ebpf.programs().map(|(n, _)| n.to_owned()).collect();
        names.sort();
        let mut attached = Vec::new();
        let mut skipped = Vec::new();
        for name in names {
            let Some(hook) = hooks.get(&name).cloned() else {
                continue;
            };
            // raw_syscalls fires for every syscall: only where it stands in
            // for tracepoints this kernel lacks
            if name.starts_with("pk_fallback_") && fallback.is_empty() {
                continue;
            }
            if let Hook::TracePoint(c, n) = &hook {
                if !tracefs_events.join(c).join(n).is_dir() {
                    skipped.push(hook.to_string());
                    continue;
                }
            }
            let Some(prog) = ebpf.program_mut(&name) else {
                continue;
            };
            let result = match (&hook, prog) {
                (Hook::TracePoint(c, n), Program::TracePoint(tp)) => {
                    tp.load().map_err(|e| verifier_error(module, &name, e))?;
                    tp.attach(c, n).map(|_| ())
                }
                (Hook::RawTracePoint(n), Program::RawTracePoint(rtp)) => {
                    rtp.load().map_err(|e| verifier_error(module, &name, e))?;
                    rtp.attach(n).map(|_| ())
                }
                _ => {
                    skipped.push(hook.to_string());
                    continue;
                }
            };
            result.map_err(|e| KernelError::Attach {
                module,
                program: name.clone(),
                hook: hook.to_string(),
                reason: e.to_string(),
            })?;
            if name.starts_with("pk_fallback_") {
                attached.push(format!("{hook} (fallback for {})", fallback.join(", ")));
            } else {
                attached.push(hook.to_string());
            }
        }
        if attached.is_empty() {
            return Err(KernelError::NoHooks { module });
        }
        let map = ebpf.take_map("pk_events").ok_or(KernelError::Map {
            module,
            map: "pk_events",
            reason: "missing".into(),
        })?;
        let ring = RingBuf::try_from(map).map_err(|e| KernelError::Map {
            module,
            map: "pk_events",
            reason: e.to_string(),
        })?;
        Ok(LoadedProbes {
            module,
            ebpf,
            ring,
            attached,
            skipped,
        })
    }

    fn write_settings(
        module: &'static str,
        ebpf: &mut Ebpf,
        s: &ProbeSettings,
    ) -> Result<(), KernelError> {
        let err = |map: &'static str| {
            move |e: aya::maps::MapError| KernelError::Map {
                module,
                map,
                reason: e.to_string(),
            }
        };
        {
            let m = ebpf.map_mut("pk_config").ok_or(KernelError::Map {
                module,
                map: "pk_config",
                reason: "missing".into(),
            })?;
            let mut cfg: Array<_, [u8; picket_probes::CONFIG_SIZE]> =
                Array::try_from(m).map_err(err("pk_config"))?;
            let mut c = s.config;
            c.image_rules = !s.image_rules.is_empty();
            cfg.set(0, c.to_bytes(), 0).map_err(err("pk_config"))?;
        }
        {
            let m = ebpf.map_mut("pk_interest").ok_or(KernelError::Map {
                module,
                map: "pk_interest",
                reason: "missing".into(),
            })?;
            let mut interest: BpfHashMap<_, u32, u32> =
                BpfHashMap::try_from(m).map_err(err("pk_interest"))?;
            for (tgid, bits) in &s.interest {
                interest.insert(tgid, bits, 0).map_err(err("pk_interest"))?;
            }
        }
        {
            let m = ebpf.map_mut("pk_image_rules").ok_or(KernelError::Map {
                module,
                map: "pk_image_rules",
                reason: "missing".into(),
            })?;
            let mut rules: BpfHashMap<_, [u8; IMAGE_MAX], u32> =
                BpfHashMap::try_from(m).map_err(err("pk_image_rules"))?;
            let keys: Vec<[u8; IMAGE_MAX]> = rules.keys().filter_map(Result::ok).collect();
            for k in keys {
                let _ = rules.remove(&k);
            }
            for (path, bits) in &s.image_rules {
                if let Some(k) = picket_probes::image_key(path) {
                    rules.insert(k, bits, 0).map_err(err("pk_image_rules"))?;
                }
            }
        }
        for (map, list) in [
            ("pk_watch_prefixes", &s.watch_prefixes),
            ("pk_ignore_prefixes", &s.ignore_prefixes),
        ] {
            let Some(m) = ebpf.map_mut(map) else { continue };
            let mut trie: LpmTrie<_, [u8; PREFIX_MAX], u32> =
                LpmTrie::try_from(m).map_err(err(if map == "pk_watch_prefixes" {
                    "pk_watch_prefixes"
                } else {
                    "pk_ignore_prefixes"
                }))?;
            let old: Vec<Key<[u8; PREFIX_MAX]>> = trie.keys().filter_map(Result::ok).collect();
            for k in old {
                let _ = trie.remove(&k);
            }
            for p in list {
                let Some(raw) = picket_probes::prefix_key(p) else {
                    continue;
                };
                let mut data = [0u8; PREFIX_MAX];
                data.copy_from_slice(&raw[4..]);
                let bits = u32::try_from(p.len() * 8).unwrap_or(0);
                trie.insert(&Key::new(bits, data), 1, 0)
                    .map_err(|e| KernelError::Map {
                        module,
                        map: "prefixes",
                        reason: e.to_string(),
                    })?;
            }
        }
        Ok(())
    }

    /// Rewrites the settings maps (a config reload).
    ///
    /// # Errors
    /// [`KernelError::Map`] naming the map.
    pub fn reload(&mut self, settings: &ProbeSettings) -> Result<(), KernelError> {
        Self::write_settings(self.module, &mut self.ebpf, settings)
    }

    /// The module's ring buffer.
    pub fn ring(&mut self) -> &mut RingBuf<MapData> {
        &mut self.ring
    }

    /// The ring buffer's file descriptor, for epoll.
    pub fn ring_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.ring.as_raw_fd()
    }

    /// Records the probes could not write because the ring was full, since load.
    pub fn lost(&self) -> u64 {
        let Some(m) = self.ebpf.map("pk_lost") else {
            return 0;
        };
        let Ok(arr) = PerCpuArray::<_, u64>::try_from(m) else {
            return 0;
        };
        arr.get(&0, 0).map(|v| v.iter().sum()).unwrap_or(0)
    }
}

/// What the kernel offers beyond tracepoints, found by loading trivial
/// programs of each type.
#[derive(Debug, Clone, Default)]
pub struct Features {
    /// `(attach type, Ok or the kernel's refusal)`.
    pub results: Vec<(&'static str, Result<(), String>)>,
    /// kprobes are available (`kprobe_events` exists in tracefs).
    pub kprobes: bool,
}

impl Features {
    /// Whether an attach type loaded.
    pub fn has(&self, kind: &str) -> bool {
        self.results.iter().any(|(k, r)| *k == kind && r.is_ok())
    }
}

/// Probes `fentry`, `lsm`, `tp_btf` and `raw_tracepoint` support, and kprobes.
pub fn probe_features(btf: &Btf, tracefs_events: &Path) -> Features {
    let mut f = Features {
        kprobes: tracefs_events
            .parent()
            .is_some_and(|t| t.join("kprobe_events").exists()),
        ..Features::default()
    };
    let mut ebpf = match EbpfLoader::new()
        .btf(Some(btf))
        .load(picket_probes::FEATURES.bytes)
    {
        Ok(e) => e,
        Err(e) => {
            for k in ["fentry", "lsm", "tp_btf", "raw_tracepoint"] {
                f.results.push((k, Err(e.to_string())));
            }
            return f;
        }
    };
    let short = |e: ProgramError| match e {
        ProgramError::LoadError { io_error, .. } => io_error.to_string(),
        other => other.to_string(),
    };
    let r = match ebpf.program_mut("pk_feature_fentry") {
        Some(Program::FEntry(p)) => p.load("vfs_unlink", btf).map_err(short),
        _ => Err("program missing".into()),
    };
    f.results.push(("fentry", r));
    let r = match ebpf.program_mut("pk_feature_lsm") {
        Some(Program::Lsm(p)) => p.load("file_open", btf).map_err(short),
        _ => Err("program missing".into()),
    };
    f.results.push(("lsm", r));
    let r = match ebpf.program_mut("pk_feature_tp_btf") {
        Some(Program::BtfTracePoint(p)) => p.load("sched_process_exec", btf).map_err(short),
        _ => Err("program missing".into()),
    };
    f.results.push(("tp_btf", r));
    let r = match ebpf.program_mut("pk_feature_raw_tp") {
        Some(Program::RawTracePoint(p)) => p.load().map_err(short),
        _ => Err("program missing".into()),
    };
    f.results.push(("raw_tracepoint", r));
    // the types are named so the compiler keeps the imports honest
    let _: Option<(&FEntry, &Lsm, &BtfTracePoint, &RawTracePoint, &TracePoint)> = None;
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hooks_come_from_sections() {
        let file = Object::for_module("file").unwrap();
        let hooks = program_hooks(file.bytes);
        assert_eq!(
            hooks.get("pk_exit_openat"),
            Some(&Hook::TracePoint(
                "syscalls".into(),
                "sys_exit_openat".into()
            ))
        );
        assert_eq!(
            hooks.get("pk_track_fork"),
            Some(&Hook::RawTracePoint("sched_process_fork".into()))
        );
        let process = Object::for_module("process").unwrap();
        let hooks = program_hooks(process.bytes);
        assert_eq!(
            hooks.get("pk_sched_exec"),
            Some(&Hook::TracePoint(
                "sched".into(),
                "sched_process_exec".into()
            ))
        );
    }
}
