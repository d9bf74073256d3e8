//! The record layout of `probes/include/picket_abi.h`, and its decoder.
//!
//! Offsets are written out rather than derived from `#[repr(C)]` structs:
//! records come from the kernel as bytes of any length, and reading them
//! field by field with bounds checks is what keeps a malformed or truncated
//! record from ever becoming undefined behaviour or a panic. The C side has
//! `_Static_assert`s on the same offsets.

/// Version of the record layout.
pub const ABI_VERSION: u32 = 1;
/// Size of `struct pk_header`.
pub const HEADER_SIZE: usize = 80;
/// Size of `union pk_body`.
pub const BODY_SIZE: usize = 128;
/// Largest tail a probe writes.
pub const TAIL_MAX: usize = 8192;
/// Largest record a probe writes.
pub const RECORD_MAX: usize = HEADER_SIZE + BODY_SIZE + TAIL_MAX;
/// Bytes of argv a probe copies at most.
pub const ARGV_MAX: usize = 4095;
/// Longest path prefix the kernel-side file filter compares.
pub const PREFIX_MAX: usize = 256;
/// Longest executable path an image rule can name.
pub const IMAGE_MAX: usize = 256;

/// Header flag: a string or argv did not fit and was cut.
pub const F_TRUNCATED: u16 = 1 << 0;
/// Header flag: the executable has no links left (memfd or deleted file).
pub const F_EXE_DELETED: u16 = 1 << 1;
/// Header flag: the path has `..` in it; normalize before judging it.
pub const F_UNNORMALIZED: u16 = 1 << 2;
/// Header flag: the kernel has no audit login uid.
pub const F_NO_LOGINUID: u16 = 1 << 3;

/// Interest bit: drop this process's process events.
pub const IGNORE_PROCESS: u32 = 1 << 0;
/// Interest bit: drop this process's file events.
pub const IGNORE_FILE: u32 = 1 << 1;
/// Interest bit: drop this process's network events.
pub const IGNORE_NETWORK: u32 = 1 << 2;
/// Interest bit: drop this process's privilege and kernel syscall events.
pub const IGNORE_SYSCALLS: u32 = 1 << 3;
/// All ignore bits.
pub const IGNORE_ALL: u32 = IGNORE_PROCESS | IGNORE_FILE | IGNORE_NETWORK | IGNORE_SYSCALLS;
/// Interest bit: children inherit the entry.
pub const INTEREST_CHILDREN: u32 = 1 << 8;
/// Interest bit: the entry was inherited.
pub const INTEREST_INHERITED: u32 = 1 << 9;

macro_rules! ops {
    ($($name:ident = $v:literal),* $(,)?) => {
        /// Syscall operations named in records (`enum pk_op`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum Op { $($name = $v),* }
        impl Op {
            /// The operation with this number.
            pub fn from_u32(v: u32) -> Option<Op> {
                match v { $($v => Some(Op::$name),)* _ => None }
            }
        }
    };
}

ops! {
    Unlink = 1, Rmdir = 2, Rename = 3, Chmod = 4, Chown = 5, Link = 6, Symlink = 7,
    Setuid = 20, Setgid = 21, Setreuid = 22, Setregid = 23, Setresuid = 24, Setresgid = 25,
    Setfsuid = 26, Setfsgid = 27,
    Ptrace = 30, MemfdCreate = 31, Mount = 32, InitModule = 33, FinitModule = 34,
    DeleteModule = 35,
    Connect = 40, Accept = 41, Bind = 42, Listen = 43,
}

/// Size of `struct pk_config`.
pub const CONFIG_SIZE: usize = 32;

/// Runtime settings in the `pk_config` map (`struct pk_config`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProbeConfig {
    /// `IGNORE_*` bits applying to the whole module.
    pub flags: u32,
    /// Bit n: report TCP transitions into state n.
    pub tcp_state_mask: u32,
    /// Report only paths under a watched prefix.
    pub file_filter: bool,
    /// The image-rule map has entries.
    pub image_rules: bool,
    /// Syscall numbers the raw_syscalls fallback watches (0: not watched):
    /// init_module, finit_module, delete_module.
    pub fallback_nr: [u32; 3],
}

impl ProbeConfig {
    /// The bytes of `struct pk_config`.
    pub fn to_bytes(&self) -> [u8; CONFIG_SIZE] {
        let mut b = [0u8; CONFIG_SIZE];
        b[0..4].copy_from_slice(&self.flags.to_ne_bytes());
        b[4..8].copy_from_slice(&self.tcp_state_mask.to_ne_bytes());
        b[8..12].copy_from_slice(&u32::from(self.file_filter).to_ne_bytes());
        b[12..16].copy_from_slice(&u32::from(self.image_rules).to_ne_bytes());
        for (i, nr) in self.fallback_nr.iter().enumerate() {
            b[16 + 4 * i..20 + 4 * i].copy_from_slice(&nr.to_ne_bytes());
        }
        b
    }
}

/// The key of a path-prefix trie entry (`struct pk_prefix_key`).
pub fn prefix_key(prefix: &str) -> Option<[u8; 4 + PREFIX_MAX]> {
    let bytes = prefix.as_bytes();
    if bytes.is_empty() || bytes.len() >= PREFIX_MAX {
        return None;
    }
    let mut k = [0u8; 4 + PREFIX_MAX];
    let bits = u32::try_from(bytes.len() * 8).ok()?;
    k[0..4].copy_from_slice(&bits.to_ne_bytes());
    k[4..4 + bytes.len()].copy_from_slice(bytes);
    Some(k)
}

/// The key of an image-rule entry (`struct pk_image_key`).
pub fn image_key(path: &str) -> Option<[u8; IMAGE_MAX]> {
    let bytes = path.as_bytes();
    if bytes.is_empty() || bytes.len() >= IMAGE_MAX {
        return None;
    }
    let mut k = [0u8; IMAGE_MAX];
    k[..bytes.len()].copy_from_slice(bytes);
    Some(k)
}

/// Why a record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer bytes than a header and body.
    #[error("record of {len} bytes is shorter than header and body ({min})")]
    Short {
        /// bytes received
        len: usize,
        /// bytes needed
        min: usize,
    },
    /// The header's length disagrees with the bytes received.
    #[error("record says {said} bytes but {got} arrived")]
    Length {
        /// header's len
        said: usize,
        /// bytes received
        got: usize,
    },
    /// A kind this decoder does not know.
    #[error("unknown record kind {0}")]
    Kind(u16),
    /// A string reference points outside the tail.
    #[error("string {field} at {off}+{len} is outside the {tail}-byte tail")]
    String {
        /// which field
        field: &'static str,
        /// offset in the tail
        off: usize,
        /// length
        len: usize,
        /// tail size
        tail: usize,
    },
}

/// The fields every record carries (`struct pk_header`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// `F_*` flags.
    pub flags: u16,
    /// `CLOCK_BOOTTIME` nanoseconds.
    pub ts_ns: u64,
    /// Thread-group id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// The real parent's thread-group id.
    pub ppid: u32,
    /// Real uid.
    pub uid: u32,
    /// Real gid.
    pub gid: u32,
    /// Effective uid.
    pub euid: u32,
    /// Effective gid.
    pub egid: u32,
    /// Audit login uid (`u32::MAX`: unset or unknown).
    pub auid: u32,
    /// Audit session id.
    pub sessionid: u32,
    /// cgroup v2 id.
    pub cgroup_id: u64,
    /// `comm`, up to 15 bytes.
    pub comm: String,
}

/// A decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Body {
    /// A successful execve/execveat.
    Exec {
        /// The name passed to exec.
        filename: String,
        /// The executable, resolved.
        exe: String,
        /// The arguments (possibly cut: see `F_TRUNCATED`).
        argv: Vec<String>,
        /// argv bytes the process had.
        argv_len: u32,
        /// Working directory.
        cwd: String,
        /// Links of the executable (0: memfd or deleted).
        exe_nlink: u32,
        /// Mode bits of the executable.
        exe_mode: u32,
        /// Owner of the executable.
        exe_uid: u32,
    },
    /// A new process.
    Fork {
        /// Its pid.
        child_pid: u32,
    },
    /// A process ended.
    Exit {
        /// `(status << 8) | signal`.
        exit_code: i32,
    },
    /// A successful open with write intent.
    FileOpen {
        /// Resolved path.
        path: String,
        /// open(2) flags.
        flags: u32,
        /// `file->f_mode`.
        fmode: u32,
        /// Inode mode.
        i_mode: u32,
        /// Inode owner.
        i_uid: u32,
        /// Inode number.
        ino: u64,
        /// The fd.
        ret: i64,
    },
    /// A path-changing syscall, at entry.
    PathOp {
        /// Which syscall.
        op: Option<Op>,
        /// AT_* or rename flags.
        flags: u32,
        /// chmod mode.
        mode: u32,
        /// chown uid.
        uid: u32,
        /// chown gid.
        gid: u32,
        /// The object.
        path: String,
        /// Rename/link destination, or symlink target text.
        path2: String,
    },
    /// The result of a syscall reported at entry.
    SysExit {
        /// Which syscall.
        op: Option<Op>,
        /// Its return value.
        ret: i64,
    },
    /// connect/accept/bind/listen, at exit.
    Net {
        /// Which syscall.
        op: Option<Op>,
        /// AF_INET or AF_INET6.
        family: u16,
        /// SOCK_* type.
        sock_type: u16,
        /// IPPROTO_*.
        protocol: u16,
        /// Local address (v4 in the first 4 bytes).
        laddr: [u8; 16],
        /// Local port.
        lport: u16,
        /// Remote address.
        raddr: [u8; 16],
        /// Remote port.
        rport: u16,
        /// Return value.
        ret: i64,
        /// The socket's fd.
        fd: i32,
        /// listen backlog.
        backlog: u32,
    },
    /// A TCP state change.
    TcpState {
        /// Old state.
        oldstate: u16,
        /// New state.
        newstate: u16,
        /// AF_*.
        family: u16,
        /// Source address.
        saddr: [u8; 16],
        /// Source port.
        sport: u16,
        /// Destination address.
        daddr: [u8; 16],
        /// Destination port.
        dport: u16,
        /// The socket's kernel address (a connection id).
        skaddr: u64,
    },
    /// A setuid-family syscall, at entry.
    Priv {
        /// Which syscall.
        op: Option<Op>,
        /// Its arguments (`u32::MAX`: unchanged or absent).
        args: [u32; 3],
    },
    /// A ptrace request that attaches or writes.
    Ptrace {
        /// PTRACE_* request.
        request: i64,
        /// Target pid.
        target_pid: u32,
        /// addr argument.
        addr: u64,
    },
    /// memfd_create.
    Memfd {
        /// Name given.
        name: String,
        /// MFD_* flags.
        flags: u32,
    },
    /// mount.
    Mount {
        /// Source (device).
        source: String,
        /// Mount point.
        target: String,
        /// Filesystem type.
        fstype: String,
        /// MS_* flags.
        flags: u64,
    },
    /// Kernel module load or unload.
    Module {
        /// Which syscall.
        op: Option<Op>,
        /// Flags argument.
        flags: u32,
        /// Module name (delete), file path (finit) or params (init).
        name: String,
        /// Image length (init_module).
        len: u64,
    },
}

/// A decoded record: header and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Common fields.
    pub header: Header,
    /// Kind-specific fields.
    pub body: Body,
}

struct Reader<'a> {
    body: &'a [u8],
    tail: &'a [u8],
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_ne_bytes([b[o], b[o + 1]])
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_ne_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_ne_bytes(a)
}
fn addr_at(b: &[u8], o: usize) -> [u8; 16] {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[o..o + 16]);
    a
}

impl Reader<'_> {
    fn u16(&self, o: usize) -> u16 {
        u16_at(self.body, o)
    }
    fn u32(&self, o: usize) -> u32 {
        u32_at(self.body, o)
    }
    fn i32(&self, o: usize) -> i32 {
        self.u32(o).cast_signed()
    }
    fn u64(&self, o: usize) -> u64 {
        u64_at(self.body, o)
    }
    fn i64(&self, o: usize) -> i64 {
        self.u64(o).cast_signed()
    }
    fn raw(&self, field: &'static str, o: usize) -> Result<&[u8], DecodeError> {
        let off = usize::from(self.u16(o));
        let len = usize::from(self.u16(o + 2));
        if len == 0 {
            return Ok(&[]);
        }
        self.tail.get(off..off + len).ok_or(DecodeError::String {
            field,
            off,
            len,
            tail: self.tail.len(),
        })
    }
    fn str(&self, field: &'static str, o: usize) -> Result<String, DecodeError> {
        Ok(String::from_utf8_lossy(self.raw(field, o)?).into_owned())
    }
}

/// Decodes one ring-buffer record.
///
/// # Errors
/// A [`DecodeError`] naming what is wrong: too short, a length that
/// disagrees with the bytes, an unknown kind, or a string outside the tail.
pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
    let min = HEADER_SIZE + BODY_SIZE;
    if bytes.len() < min {
        return Err(DecodeError::Short {
            len: bytes.len(),
            min,
        });
    }
    let said = u32_at(bytes, 4) as usize;
    if said < min || said > bytes.len() {
        return Err(DecodeError::Length {
            said,
            got: bytes.len(),
        });
    }
    let kind = u16_at(bytes, 0);
    let comm = &bytes[64..80];
    let comm_len = comm.iter().position(|&c| c == 0).unwrap_or(comm.len());
    let header = Header {
        flags: u16_at(bytes, 2),
        ts_ns: u64_at(bytes, 8),
        pid: u32_at(bytes, 16),
        tid: u32_at(bytes, 20),
        ppid: u32_at(bytes, 24),
        uid: u32_at(bytes, 28),
        gid: u32_at(bytes, 32),
        euid: u32_at(bytes, 36),
        egid: u32_at(bytes, 40),
        auid: u32_at(bytes, 44),
        cgroup_id: u64_at(bytes, 48),
        sessionid: u32_at(bytes, 56),
        comm: String::from_utf8_lossy(&comm[..comm_len]).into_owned(),
    };
    let r = Reader {
        body: &bytes[HEADER_SIZE..min],
        tail: &bytes[min..said],
    };
    let body = match kind {
        1 => {
            let argv_raw = r.raw("argv", 8)?;
            let mut argv: Vec<String> = argv_raw
                .split(|&c| c == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            // argv ends with a NUL, which leaves one empty piece behind
            if argv_raw.last() == Some(&0) {
                argv.pop();
            }
            Body::Exec {
                filename: r.str("filename", 0)?,
                exe: r.str("exe", 4)?,
                argv,
                cwd: r.str("cwd", 12)?,
                argv_len: r.u32(16),
                exe_nlink: r.u32(20),
                exe_mode: r.u32(24),
                exe_uid: r.u32(28),
            }
        }
        2 => Body::Fork {
            child_pid: r.u32(0),
        },
        3 => Body::Exit {
            exit_code: r.i32(0),
        },
        4 => Body::FileOpen {
            path: r.str("path", 0)?,
            flags: r.u32(4),
            fmode: r.u32(8),
            i_mode: r.u32(12),
            i_uid: r.u32(16),
            ret: r.i64(24),
            ino: r.u64(32),
        },
        5 => Body::PathOp {
            op: Op::from_u32(r.u32(0)),
            flags: r.u32(4),
            mode: r.u32(8),
            uid: r.u32(12),
            gid: r.u32(16),
            path: r.str("path", 24)?,
            path2: r.str("path2", 28)?,
        },
        6 => Body::SysExit {
            op: Op::from_u32(r.u32(0)),
            ret: r.i64(8),
        },
        7 => Body::Net {
            op: Op::from_u32(r.u32(0)),
            family: r.u16(4),
            sock_type: r.u16(6),
            protocol: r.u16(8),
            lport: r.u16(10),
            rport: r.u16(12),
            laddr: addr_at(r.body, 16),
            raddr: addr_at(r.body, 32),
            ret: r.i64(48),
            fd: r.i32(56),
            backlog: r.u32(60),
        },
        8 => Body::TcpState {
            oldstate: r.u16(0),
            newstate: r.u16(2),
            sport: r.u16(4),
            dport: r.u16(6),
            family: r.u16(8),
            saddr: addr_at(r.body, 16),
            daddr: addr_at(r.body, 32),
            skaddr: r.u64(48),
        },
        9 => Body::Priv {
            op: Op::from_u32(r.u32(0)),
            args: [r.u32(8), r.u32(12), r.u32(16)],
        },
        10 => Body::Ptrace {
            request: r.i64(0),
            target_pid: r.u32(8),
            addr: r.u64(16),
        },
        11 => Body::Memfd {
            name: r.str("name", 0)?,
            flags: r.u32(4),
        },
        12 => Body::Mount {
            source: r.str("source", 0)?,
            target: r.str("target", 4)?,
            fstype: r.str("fstype", 8)?,
            flags: r.u64(16),
        },
        13 => Body::Module {
            op: Op::from_u32(r.u32(0)),
            flags: r.u32(4),
            name: r.str("name", 8)?,
            len: r.u64(16),
        },
        k => return Err(DecodeError::Kind(k)),
    };
    Ok(Record { header, body })
}

/// Builds record bytes the way a probe does; for tests and fuzzing of the
/// layers above the decoder.
#[derive(Debug, Clone)]
pub struct RecordBuilder {
    buf: Vec<u8>,
}

impl RecordBuilder {
    /// A record of `kind` with the given pid and tid, and everything else 0.
    pub fn new(kind: u16, pid: u32, tid: u32) -> Self {
        let mut buf = vec![0u8; HEADER_SIZE + BODY_SIZE];
        buf[0..2].copy_from_slice(&kind.to_ne_bytes());
        buf[16..20].copy_from_slice(&pid.to_ne_bytes());
        buf[20..24].copy_from_slice(&tid.to_ne_bytes());
        RecordBuilder { buf }
    }
    /// Sets a header field by byte offset.
    #[must_use]
    pub fn header_u32(mut self, off: usize, v: u32) -> Self {
        self.buf[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    /// Sets a body field by byte offset.
    #[must_use]
    pub fn body_u32(mut self, off: usize, v: u32) -> Self {
        let o = HEADER_SIZE + off;
        self.buf[o..o + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    /// Sets a 64-bit body field by byte offset.
    #[must_use]
    pub fn body_u64(mut self, off: usize, v: u64) -> Self {
        let o = HEADER_SIZE + off;
        self.buf[o..o + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
    /// Appends a string to the tail and points the body's `pk_str` at `off` to it.
    #[must_use]
    pub fn string(mut self, off: usize, s: &[u8]) -> Self {
        let tail_off = self.buf.len() - HEADER_SIZE - BODY_SIZE;
        let o = HEADER_SIZE + off;
        let (t, l) = (
            u16::try_from(tail_off).unwrap_or(u16::MAX),
            u16::try_from(s.len()).unwrap_or(u16::MAX),
        );
        self.buf[o..o + 2].copy_from_slice(&t.to_ne_bytes());
        self.buf[o + 2..o + 4].copy_from_slice(&l.to_ne_bytes());
        self.buf.extend_from_slice(s);
        self.buf.push(0);
        self
    }
    /// The finished bytes, with the header's length set.
    pub fn build(mut self) -> Vec<u8> {
        let len = u32::try_from(self.buf.len()).unwrap_or(u32::MAX);
        self.buf[4..8].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_exec() {
        let bytes = RecordBuilder::new(1, 42, 42)
            .header_u32(24, 7)
            .string(0, b"/bin/true")
            .string(4, b"/usr/bin/true")
            .string(8, b"true\0--flag\0")
            .string(12, b"/tmp")
            .body_u32(16, 12)
            .build();
        let r = decode(&bytes).unwrap();
        assert_eq!(r.header.pid, 42);
        assert_eq!(r.header.ppid, 7);
        match r.body {
            Body::Exec {
                filename,
                exe,
                argv,
                cwd,
                argv_len,
                ..
            } => {
                assert_eq!(filename, "/bin/true");
                assert_eq!(exe, "/usr/bin/true");
                assert_eq!(argv, vec!["true", "--flag"]);
                assert_eq!(cwd, "/tmp");
                assert_eq!(argv_len, 12);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rejects_bad_records() {
        assert!(matches!(decode(&[]), Err(DecodeError::Short { .. })));
        let mut b = RecordBuilder::new(99, 1, 1).build();
        assert_eq!(decode(&b), Err(DecodeError::Kind(99)));
        b[4..8].copy_from_slice(&10_000u32.to_ne_bytes());
        assert!(matches!(decode(&b), Err(DecodeError::Length { .. })));
        // a string pointing past the tail
        let mut b = RecordBuilder::new(11, 1, 1).string(0, b"x").build();
        b[HEADER_SIZE + 2] = 200;
        assert!(matches!(
            decode(&b),
            Err(DecodeError::String { field: "name", .. })
        ));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A deterministic sweep of lengths and kinds, with junk in between.
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        for len in [0, 1, 79, 80, 207, 208, 209, 300, 1000, RECORD_MAX] {
            for kind in 0..16u16 {
                let mut b: Vec<u8> = (0..len)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        seed as u8
                    })
                    .collect();
                if b.len() >= 8 {
                    b[0..2].copy_from_slice(&kind.to_ne_bytes());
                    let l = u32::try_from(b.len()).unwrap();
                    b[4..8].copy_from_slice(&l.to_ne_bytes());
                }
                let _ = decode(&b);
            }
        }
    }

    #[test]
    fn prefix_and_image_keys() {
        let k = prefix_key("/etc/").unwrap();
        assert_eq!(u32::from_ne_bytes([k[0], k[1], k[2], k[3]]), 40);
        assert_eq!(&k[4..9], b"/etc/");
        assert!(prefix_key("").is_none());
        assert!(prefix_key(&"a".repeat(300)).is_none());
        assert_eq!(&image_key("/bin/sh").unwrap()[..7], b"/bin/sh");
    }
}
