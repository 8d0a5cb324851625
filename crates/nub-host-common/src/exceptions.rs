//! The x86 exception table: vector, name, and whether the CPU pushes an
//! error code.
//!
//! Both host sides use it: `nub-hypervisor` generates its per-vector
//! handler stubs from [`ERROR_CODE_VECTORS`] (a stub pushes a 0 in place of
//! an error code exactly where the CPU pushes none) and `nub-sandbox`
//! names the vector of a guest fault with [`name`]. The vector a handler
//! stores in the report page ([`crate::report`]) indexes this table.

/// One x86 exception vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exception {
    /// The vector, 0..=31.
    pub vector: u8,
    /// What it is called, with its mnemonic where it has one, e.g.
    /// `"page fault (#PF)"`.
    pub name: &'static str,
    /// Whether the CPU pushes an error code when it delivers it.
    pub error_code: bool,
}

const fn entry(vector: u8, name: &'static str, error_code: bool) -> Exception {
    Exception {
        vector,
        name,
        error_code,
    }
}

/// Name of the vectors Intel and AMD reserve.
const RESERVED: &str = "reserved exception";

/// Every exception vector (0..=31), indexed by vector (Intel SDM vol. 3
/// table 6-1, AMD APM vol. 2 table 8-1).
pub const EXCEPTIONS: [Exception; 32] = [
    entry(0, "divide error (#DE)", false),
    entry(1, "debug (#DB)", false),
    entry(2, "non-maskable interrupt", false),
    entry(3, "breakpoint (#BP)", false),
    entry(4, "overflow (#OF)", false),
    entry(5, "bound range exceeded (#BR)", false),
    entry(6, "invalid opcode (#UD)", false),
    entry(7, "device not available (#NM)", false),
    entry(8, "double fault (#DF)", true),
    entry(9, RESERVED, false),
    entry(10, "invalid TSS (#TS)", true),
    entry(11, "segment not present (#NP)", true),
    entry(12, "stack-segment fault (#SS)", true),
    entry(13, "general protection fault (#GP)", true),
    entry(14, "page fault (#PF)", true),
    entry(15, RESERVED, false),
    entry(16, "x87 floating-point error (#MF)", false),
    entry(17, "alignment check (#AC)", true),
    entry(18, "machine check (#MC)", false),
    entry(19, "SIMD floating-point exception (#XM)", false),
    entry(20, "virtualization exception (#VE)", false),
    entry(21, "control protection exception (#CP)", true),
    entry(22, RESERVED, false),
    entry(23, RESERVED, false),
    entry(24, RESERVED, false),
    entry(25, RESERVED, false),
    entry(26, RESERVED, false),
    entry(27, RESERVED, false),
    entry(28, "hypervisor injection exception (#HV)", false),
    entry(29, "VMM communication exception (#VC)", true),
    entry(30, "security exception (#SX)", true),
    entry(31, RESERVED, false),
];

/// Number of exception vectors.
pub const VECTORS: u8 = EXCEPTIONS.len() as u8;

/// `#UD`: an instruction the CPU does not run in this mode.
pub const INVALID_OPCODE: u8 = 6;
/// `#DF`: an exception while delivering another one (a stack overflow into
/// the guard page ends here). The host delivers it on its own stack (IST1).
pub const DOUBLE_FAULT: u8 = 8;
/// `#GP`: a privilege or segment violation (at CPL 3: a privileged
/// instruction, a closed I/O port).
pub const GENERAL_PROTECTION: u8 = 13;
/// `#PF`: an access the page tables refuse; CR2 holds the address.
pub const PAGE_FAULT: u8 = 14;

/// Bit `v` is set when the CPU pushes an error code for vector `v`.
pub const ERROR_CODE_VECTORS: u32 = {
    let mut mask = 0u32;
    let mut i = 0;
    while i < EXCEPTIONS.len() {
        if EXCEPTIONS[i].error_code {
            mask |= 1 << i;
        }
        i += 1;
    }
    mask
};

/// The table entry of `vector`, or `None` above 31 (an interrupt, not an
/// exception).
pub const fn exception(vector: u8) -> Option<&'static Exception> {
    if (vector as usize) < EXCEPTIONS.len() {
        Some(&EXCEPTIONS[vector as usize])
    } else {
        None
    }
}

/// Whether the CPU pushes an error code for `vector` (never above 31).
pub const fn pushes_error_code(vector: u8) -> bool {
    vector < VECTORS && ERROR_CODE_VECTORS & (1 << vector) != 0
}

/// The name of `vector`: the table's, or `"reserved exception"` for
/// reserved vectors and `"not an exception vector"` above 31 (a value no
/// handler reports; only a guest forging its report page can).
pub const fn name(vector: u8) -> &'static str {
    match exception(vector) {
        Some(e) => e.name,
        None => "not an exception vector",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_indexed_by_vector() {
        for (i, e) in EXCEPTIONS.iter().enumerate() {
            assert_eq!(usize::from(e.vector), i);
            assert_eq!(exception(e.vector), Some(e));
        }
        assert_eq!(exception(32), None);
        assert_eq!(name(255), "not an exception vector");
    }

    #[test]
    fn error_code_vectors_are_the_architectural_ones() {
        // Intel SDM vol. 3 table 6-1 and AMD APM vol. 2 table 8-1.
        let pushing: Vec<u8> = (0..=255).filter(|&v| pushes_error_code(v)).collect();
        assert_eq!(pushing, [8, 10, 11, 12, 13, 14, 17, 21, 29, 30]);
        assert_eq!(ERROR_CODE_VECTORS, 0x6022_7D00);
    }

    #[test]
    fn named_constants_match_the_table() {
        assert_eq!(name(INVALID_OPCODE), "invalid opcode (#UD)");
        assert_eq!(name(DOUBLE_FAULT), "double fault (#DF)");
        assert_eq!(name(GENERAL_PROTECTION), "general protection fault (#GP)");
        assert_eq!(name(PAGE_FAULT), "page fault (#PF)");
        assert_eq!(name(15), "reserved exception");
    }
}
