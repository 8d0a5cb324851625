//! Ids 10 and 13: lies in the capability directory's host-readable index.
//!
//! The header is a heap block the kernel's directory rewrites after every
//! insert; the guest itself never reads it back. Corrupting it, or pointing
//! it at a forged table, misleads only the host's reader. The forged tables
//! are leaked on purpose (the header keeps pointing at them).

use alloc::{boxed::Box, vec, vec::Vec};

use nub_arch_x86::{
    GuestError, Output,
    abi::directory::{DIRECTORY_VERSION, MAX_CAPACITY, MAX_PROBE, SLOT_SIZE, home_slot, offsets},
    state_cache::DIRECTORY,
};

use crate::{boot, selector};

/// One forged slot, laid out as the host reads it.
#[repr(C)]
#[derive(Clone, Copy)]
struct Slot {
    hash: [u8; 32],
    cap_va: u64,
    cap_len: u64,
}

const _: () = assert!(core::mem::size_of::<Slot>() == SLOT_SIZE);

/// The directory header's address.
fn header() -> *mut u64 {
    DIRECTORY.lock().header_addr() as *mut u64
}

/// Reads the header word at byte offset `offset`.
fn read_word(offset: usize) -> u64 {
    // SAFETY: the header is the directory's 64-byte, 8-aligned heap block
    // and `offset` < 64; the guest is single-threaded and no reference to
    // the header is live (the lock was released).
    unsafe { header().add(offset / 8).read_volatile() }
}

/// Writes header word at byte offset `offset`.
fn write_word(offset: usize, value: u64) {
    // SAFETY: as for `read_word`; the header is writable guest heap.
    unsafe { header().add(offset / 8).write_volatile(value) }
}

/// Id 10: corrupts the directory index. Selector 0: a cycle (a forged
/// four-slot table, every slot occupied, probed around eight times);
/// 1: a capacity of 2^40; 2: the largest capacity a reader accepts, so the
/// table runs far outside guest memory; 3: a table address whose slots
/// overflow the address space; 4: a table just outside guest memory; 5: a
/// table overlapping the header; 6: a probe limit of `u32::MAX`.
pub fn corrupt_directory(input: &[u8], _: &mut Output<'_>) -> Result<(), GuestError> {
    match selector(input) {
        0 => {
            let table: Vec<Slot> = (0..4u8)
                .map(|i| Slot {
                    hash: [0x11u8.wrapping_mul(i + 1); 32],
                    cap_va: 1,
                    cap_len: 1,
                })
                .collect();
            let table = Box::leak(table.into_boxed_slice());
            write_word(offsets::CAPACITY, 4);
            write_word(offsets::LENGTH, 4);
            write_word(offsets::TABLE_VA, table.as_ptr() as u64);
        }
        1 => write_word(offsets::CAPACITY, 1 << 40),
        2 => write_word(offsets::CAPACITY, MAX_CAPACITY),
        3 => write_word(offsets::TABLE_VA, u64::MAX - 16),
        4 => write_word(offsets::TABLE_VA, boot().memory_size),
        5 => write_word(offsets::TABLE_VA, header() as u64),
        6 => write_word(
            offsets::VERSION,
            u64::from(DIRECTORY_VERSION) | (u64::from(u32::MAX) << 32),
        ),
        _ => return Err(GuestError::new("unknown corruption selector")),
    }
    Ok(())
}

/// Id 13: points the header at a copy of the real table with an occupied
/// slot for the 32-byte hash given, whose cap bytes are garbage. The
/// guest's own directory is untouched: it still does not hold that hash.
/// Answers the slot index used (u64 LE).
pub fn fake_directory_slot(input: &[u8], out: &mut Output<'_>) -> Result<(), GuestError> {
    let hash: [u8; 32] = input
        .try_into()
        .map_err(|_| GuestError::new("expected a 32-byte hash"))?;
    let capacity = read_word(offsets::CAPACITY);
    let real = read_word(offsets::TABLE_VA) as *const Slot;
    if !capacity.is_power_of_two() || capacity > 1 << 20 {
        return Err(GuestError::new("the directory header is already corrupt"));
    }
    let mut table: Vec<Slot> = (0..capacity as usize)
        // SAFETY: the kernel's own table has `capacity` slots at `real`
        // (the header was checked above and only this guest writes it);
        // the volatile reads copy them out.
        .map(|i| unsafe { real.add(i).read_volatile() })
        .collect();
    let garbage = Box::leak(vec![0xEEu8; 64].into_boxed_slice());
    let mut index = home_slot(&hash, capacity) as usize;
    for _ in 0..MAX_PROBE {
        match table.get_mut(index) {
            Some(slot) if slot.cap_va == 0 || slot.hash == hash => {
                *slot = Slot {
                    hash,
                    cap_va: garbage.as_ptr() as u64,
                    cap_len: garbage.len() as u64,
                };
                let table = Box::leak(table.into_boxed_slice());
                write_word(offsets::TABLE_VA, table.as_ptr() as u64);
                return out.write(&(index as u64).to_le_bytes());
            }
            _ => index = (index + 1) & (capacity as usize - 1),
        }
    }
    Err(GuestError::new("no free slot near the hash's home"))
}
