//! The compiled probe objects, embedded with the alignment an ELF parser
//! expects.

/// A compiled probe object of one module.
#[derive(Debug, Clone, Copy)]
pub struct Object {
    /// The module the object serves (`process`, `file`, `network`, `syscalls`).
    pub module: &'static str,
    /// The ELF bytes, aligned to 8.
    pub bytes: &'static [u8],
}

#[repr(C, align(8))]
struct Aligned<T: ?Sized>(T);

macro_rules! object {
    ($module:literal) => {{
        static BYTES: &Aligned<[u8]> =
            &Aligned(*include_bytes!(concat!("../bpf/", $module, ".bpf.o")));
        Object {
            module: $module,
            bytes: &BYTES.0,
        }
    }};
}

/// Every probe object, by module name.
pub const OBJECTS: [Object; 4] = [
    object!("process"),
    object!("file"),
    object!("network"),
    object!("syscalls"),
];

/// The feature-probe object: one trivial program per attach type picketd
/// checks at start (`fentry`, `lsm`, `tp_btf`, `raw_tracepoint`).
pub const FEATURES: Object = object!("features");

impl Object {
    /// The object of a module, if there is one.
    pub fn for_module(module: &str) -> Option<Object> {
        OBJECTS.iter().copied().find(|o| o.module == module)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_bpf_elf_and_aligned() {
        for o in OBJECTS {
            assert_eq!(&o.bytes[..4], b"\x7fELF", "{}", o.module);
            // e_machine at offset 18: EM_BPF = 247
            assert_eq!(
                u16::from_le_bytes([o.bytes[18], o.bytes[19]]),
                247,
                "{}",
                o.module
            );
            assert_eq!(o.bytes.as_ptr() as usize % 8, 0, "{}", o.module);
        }
        assert!(Object::for_module("file").is_some());
        assert!(Object::for_module("nope").is_none());
    }
}
