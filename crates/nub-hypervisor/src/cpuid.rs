//! What the guest's `CPUID` says.
//!
//! The guest sees KVM's supported CPUID (`KVM_GET_SUPPORTED_CPUID`: the
//! host CPU's model, caches and features as KVM can virtualise them, plus
//! the hypervisor bit and KVM's own leaves) with the features this vCPU does
//! not actually provide cleared, so that a guest using runtime feature
//! detection (e.g. the `cpufeatures` crate, which works in `no_std`) picks
//! code that runs instead of code that raises #UD:
//!
//! - **SIMD** beyond SSE2: SSE3 through AVX-512 and AMX, AES-NI, SHA,
//!   PCLMULQDQ, FMA, F16C, GFNI, VAES, XSAVE. nub leaves CR4.OSXSAVE
//!   clear, so every AVX instruction is #UD. It sets CR4.OSFXSR, so FXSR,
//!   SSE and SSE2 (the x86-64 baseline, what a hard-float guest is built
//!   for: docs/wasm.md) work and stay reported; the later SSE extensions
//!   would run too but stay hidden, which keeps feature-detecting code on
//!   baseline paths.
//! - **APIC**: the local APIC, x2APIC and the TSC deadline timer. nub creates
//!   no interrupt controller.
//! - **MONITOR/MWAIT, FSGSBASE, PKU**: not usable at CPL 3 with this vCPU's
//!   CR4 (the instructions are #UD).
//!
//! Everything else stays, including the hypervisor bit and `UMIP`, which
//! [`supports_umip`] reads to decide whether the host turns CR4.UMIP on. The
//! decisions are in docs/security.md, *CPU features*.

use kvm_bindings::{CpuId, kvm_cpuid_entry2};

/// One register of one CPUID leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reg {
    Eax,
    Ebx,
    Ecx,
    Edx,
}

/// Bits cleared in the guest's CPUID: `(leaf, subleaf, register, mask)`.
/// A `None` subleaf matches every subleaf.
const CLEARED: &[(u32, Option<u32>, Reg, u32)] = &[
    // Leaf 1 ECX: SSE3 0, PCLMULQDQ 1, MONITOR 3, SSSE3 9, FMA 12, SSE4.1 19,
    // SSE4.2 20, x2APIC 21, TSC-deadline 24, AES 25, XSAVE 26, OSXSAVE 27,
    // AVX 28, F16C 29.
    (
        1,
        None,
        Reg::Ecx,
        bits(&[0, 1, 3, 9, 12, 19, 20, 21, 24, 25, 26, 27, 28, 29]),
    ),
    // Leaf 1 EDX: APIC 9. FXSR 24, SSE 25 and SSE2 26 stay: the host
    // enables them (CR4.OSFXSR, `cpu::long_mode_sregs`).
    (1, None, Reg::Edx, bits(&[9])),
    // Leaf 7.0 EBX: FSGSBASE 0, AVX2 5, AVX512F 16, AVX512DQ 17,
    // AVX512IFMA 21, AVX512PF 26, AVX512ER 27, AVX512CD 28, SHA 29,
    // AVX512BW 30, AVX512VL 31.
    (
        7,
        Some(0),
        Reg::Ebx,
        bits(&[0, 5, 16, 17, 21, 26, 27, 28, 29, 30, 31]),
    ),
    // Leaf 7.0 ECX: AVX512_VBMI 1, PKU 3, AVX512_VBMI2 6, GFNI 8, VAES 9,
    // VPCLMULQDQ 10, AVX512_VNNI 11, AVX512_BITALG 12, AVX512_VPOPCNTDQ 14.
    (7, Some(0), Reg::Ecx, bits(&[1, 3, 6, 8, 9, 10, 11, 12, 14])),
    // Leaf 7.0 EDX: AVX512_4VNNIW 2, AVX512_4FMAPS 3, AVX512_VP2INTERSECT 8,
    // AMX_BF16 22, AVX512_FP16 23, AMX_TILE 24, AMX_INT8 25.
    (7, Some(0), Reg::Edx, bits(&[2, 3, 8, 22, 23, 24, 25])),
    // Leaf 7.1 EAX: AVX_VNNI 4, AVX512_BF16 5, AVX_IFMA 23.
    (7, Some(1), Reg::Eax, bits(&[4, 5, 23])),
    // Leaf 0x8000_0001 ECX: SSE4A 6, XOP 11, FMA4 16.
    (0x8000_0001, None, Reg::Ecx, bits(&[6, 11, 16])),
];

/// The mask with `positions` set.
const fn bits(positions: &[u32]) -> u32 {
    let mut mask = 0;
    let mut i = 0;
    while i < positions.len() {
        mask |= 1 << positions[i];
        i += 1;
    }
    mask
}

/// Leaf 7.0 ECX bit 2: user-mode instruction prevention.
const UMIP_BIT: u32 = 1 << 2;

fn reg(entry: &mut kvm_cpuid_entry2, reg: Reg) -> &mut u32 {
    match reg {
        Reg::Eax => &mut entry.eax,
        Reg::Ebx => &mut entry.ebx,
        Reg::Ecx => &mut entry.ecx,
        Reg::Edx => &mut entry.edx,
    }
}

/// Clears what the guest's vCPU does not provide (see the module docs)
/// from `cpuid`, in place.
pub(crate) fn restrict(cpuid: &mut CpuId) {
    for entry in cpuid.as_mut_slice() {
        for &(leaf, subleaf, r, mask) in CLEARED {
            if entry.function == leaf && subleaf.is_none_or(|s| s == entry.index) {
                *reg(entry, r) &= !mask;
            }
        }
    }
}

/// Whether `cpuid` reports UMIP, so that KVM accepts CR4.UMIP.
pub(crate) fn supports_umip(cpuid: &CpuId) -> bool {
    cpuid
        .as_slice()
        .iter()
        .any(|e| e.function == 7 && e.index == 0 && e.ecx & UMIP_BIT != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Leaf 1 ECX bit 31: running under a hypervisor.
    const HYPERVISOR_BIT: u32 = 1 << 31;
    /// Leaf 1 EDX bit 26: SSE2 (kept: the host enables it).
    const SSE2_BIT: u32 = 1 << 26;

    fn entry(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            eax: u32::MAX,
            ebx: u32::MAX,
            ecx: u32::MAX,
            edx: u32::MAX,
            ..Default::default()
        }
    }

    #[test]
    fn clears_exactly_the_listed_bits() {
        let mut cpuid =
            CpuId::from_entries(&[entry(1, 0), entry(7, 0), entry(7, 1), entry(0x4000_0000, 0)])
                .unwrap();
        restrict(&mut cpuid);
        let e = cpuid.as_slice();
        // Leaf 1: APIC, SSE3 and x2APIC gone; SSE2, the hypervisor bit and
        // CX16 (ECX 13) kept.
        assert_ne!(e[0].edx & SSE2_BIT, 0);
        assert_eq!(e[0].edx & (1 << 9), 0);
        assert_eq!(e[0].ecx & 1, 0);
        assert_eq!(e[0].ecx & (1 << 21), 0);
        assert_ne!(e[0].ecx & HYPERVISOR_BIT, 0);
        assert_ne!(e[0].ecx & (1 << 13), 0);
        assert_eq!(e[0].eax, u32::MAX, "leaf 1 EAX (family/model) untouched");
        // Leaf 7.0: AVX2 gone, BMI1 (EBX 3) and UMIP kept.
        assert_eq!(e[1].ebx & (1 << 5), 0);
        assert_ne!(e[1].ebx & (1 << 3), 0);
        assert!(supports_umip(&cpuid));
        // Leaf 7.1: AVX-VNNI gone, the rest kept.
        assert_eq!(e[2].eax, !bits(&[4, 5, 23]));
        // Leaves not listed are untouched.
        assert_eq!(e[3].ebx, u32::MAX);
    }

    #[test]
    fn umip_needs_leaf_seven() {
        let mut no_umip = entry(7, 0);
        no_umip.ecx &= !UMIP_BIT;
        assert!(!supports_umip(&CpuId::from_entries(&[no_umip]).unwrap()));
        assert!(!supports_umip(
            &CpuId::from_entries(&[entry(1, 0)]).unwrap()
        ));
        assert!(!supports_umip(
            &CpuId::from_entries(&[entry(7, 1)]).unwrap()
        ));
    }
}
