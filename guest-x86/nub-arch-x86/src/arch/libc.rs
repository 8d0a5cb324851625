//! The C symbols a hard-float guest links against (docs/wasm.md, *Why this
//! dispatch*): built only for a guest compiled for `x86_64-unknown-linux-gnu`
//! with `--cfg nub_guest`, whose precompiled `core` and `alloc` call
//! `memcpy`, `memmove`, `memset`, `memcmp` and `bcmp` from libc (the
//! bare-metal target's `compiler_builtins` provides them itself) and whose
//! `alloc` was built with unwinding, so it names `_Unwind_Resume`.
//!
//! The copies and fills are `rep movsb` / `rep stosb`: fast on every CPU
//! with ERMSB, and no loop the compiler could turn back into a call to
//! the very function it is in.

/// Copies `n` bytes from `src` to `dest` (which must not overlap).
///
/// # Safety
///
/// C's `memcpy` contract: both ranges valid for `n` bytes, not overlapping.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller's contract; `rep movsb` copies forwards (the
    // direction flag is clear under the SysV ABI) and touches exactly the
    // two ranges. rdi, rsi and rcx are declared clobbered.
    unsafe {
        core::arch::asm!(
            "rep movsb",
            inout("rcx") n => _,
            inout("rdi") dest => _,
            inout("rsi") src => _,
            options(nostack, preserves_flags)
        );
    }
    dest
}

/// Copies `n` bytes from `src` to `dest`; the ranges may overlap.
///
/// # Safety
///
/// C's `memmove` contract: both ranges valid for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dest as usize).wrapping_sub(src as usize) >= n {
        // dest is below src or past its end: a forward copy is safe.
        // SAFETY: the caller's contract, and no byte is read after it is
        // written (checked above).
        return unsafe { memcpy(dest, src, n) };
    }
    // SAFETY: the caller's contract; with the direction flag set `rep
    // movsb` copies backwards from the last byte, so an overlap where dest
    // is above src reads every byte before it is overwritten. The flag is
    // cleared again before the block ends, as the ABI requires.
    unsafe {
        core::arch::asm!(
            "std",
            "rep movsb",
            "cld",
            inout("rcx") n => _,
            inout("rdi") dest.wrapping_add(n).wrapping_sub(1) => _,
            inout("rsi") src.wrapping_add(n).wrapping_sub(1) => _,
            options(nostack)
        );
    }
    dest
}

/// Fills `n` bytes at `dest` with the low byte of `c`.
///
/// # Safety
///
/// C's `memset` contract: the range valid for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memset(dest: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller's contract; `rep stosb` stores al at rdi..rdi+n.
    unsafe {
        core::arch::asm!(
            "rep stosb",
            inout("rcx") n => _,
            inout("rdi") dest => _,
            in("al") c as u8,
            options(nostack, preserves_flags)
        );
    }
    dest
}

/// Compares `n` bytes: negative, zero or positive as `a` sorts before, equal
/// to or after `b`.
///
/// # Safety
///
/// C's `memcmp` contract: both ranges valid for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        // SAFETY: i < n, and both ranges are valid for n bytes.
        let (x, y) = unsafe { (*a.add(i), *b.add(i)) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
        i += 1;
    }
    0
}

/// Whether `n` bytes differ (zero when equal).
///
/// # Safety
///
/// C's `bcmp` contract: both ranges valid for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: the same contract.
    unsafe { memcmp(a, b, n) }
}

/// Named by the precompiled `alloc`'s landing pads. Guests abort on panic,
/// so no unwinding ever starts and this is never reached; if it were, the
/// guest aborts.
#[unsafe(no_mangle)]
pub extern "C" fn _Unwind_Resume(_exception: *mut u8) -> ! {
    crate::abort(1, "_Unwind_Resume reached: guests do not unwind")
}
