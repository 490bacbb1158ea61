//! The GDB JIT interface (GDB manual, "JIT Compilation Interface").
//!
//! GDB looks up `__jit_debug_descriptor` and `__jit_debug_register_code` by
//! name in the executable's symbols and puts a breakpoint on the function.
//! To (un)register an object file the program links (unlinks) an entry in
//! the descriptor's doubly linked list, records it and the action in the
//! descriptor, and calls the function; GDB then reads the object from the
//! program's memory. With no debugger attached the call costs nothing more.

use std::ptr::{self, addr_of_mut};
use std::sync::Mutex;

const JIT_NOACTION: u32 = 0;
const JIT_REGISTER_FN: u32 = 1;
const JIT_UNREGISTER_FN: u32 = 2;

/// `struct jit_code_entry` of the GDB manual.
#[repr(C)]
pub struct JitCodeEntry {
    next: *mut JitCodeEntry,
    prev: *mut JitCodeEntry,
    symfile_addr: *const u8,
    symfile_size: u64,
}

/// `struct jit_descriptor` of the GDB manual.
#[repr(C)]
pub struct JitDescriptor {
    pub version: u32,
    pub action_flag: u32,
    pub relevant_entry: *mut JitCodeEntry,
    pub first_entry: *mut JitCodeEntry,
}

/// The descriptor GDB reads; only written under [`LOCK`].
#[no_mangle]
pub static mut __jit_debug_descriptor: JitDescriptor = JitDescriptor {
    version: 1,
    action_flag: JIT_NOACTION,
    relevant_entry: ptr::null_mut(),
    first_entry: ptr::null_mut(),
};

/// GDB's breakpoint: it reads the descriptor when this is called.
#[no_mangle]
#[inline(never)]
pub extern "C" fn __jit_debug_register_code() {
    // SAFETY: an empty asm block does nothing. Without `nomem` the compiler
    // must assume it reads memory, so the descriptor writes before the call
    // are done, and the call itself cannot be dropped as having no effect.
    unsafe { std::arch::asm!("", options(nostack, preserves_flags)) };
}

/// Serializes every change to the descriptor's list (the manual asks the
/// program to, since GDB reads it while the program is stopped at any point).
static LOCK: Mutex<()> = Mutex::new(());

/// An object registered with GDB; dropping it unregisters it.
pub struct Registration {
    /// From `Box::into_raw`, so its address, which the list holds, stays put.
    entry: *mut JitCodeEntry,
    /// What `entry.symfile_addr` points into.
    _image: Box<[u8]>,
}

// SAFETY: the raw pointers in `entry` are only followed or changed under
// LOCK, and `_image` is never written after registration.
unsafe impl Send for Registration {}
// SAFETY: as for Send; `&Registration` gives no access to the pointers.
unsafe impl Sync for Registration {}

/// Registers `image` (an ELF object, see [`crate::elf::image`]) with any
/// GDB attached now or later.
pub fn register(image: Vec<u8>) -> Registration {
    let image = image.into_boxed_slice();
    let entry = Box::into_raw(Box::new(JitCodeEntry {
        next: ptr::null_mut(),
        prev: ptr::null_mut(),
        symfile_addr: image.as_ptr(),
        symfile_size: image.len() as u64,
    }));
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: LOCK is held, so nothing else touches the descriptor or the
    // list; every entry in the list is a live Registration's box.
    unsafe {
        let descriptor = addr_of_mut!(__jit_debug_descriptor);
        let first = (*descriptor).first_entry;
        (*entry).next = first;
        if !first.is_null() {
            (*first).prev = entry;
        }
        (*descriptor).first_entry = entry;
        (*descriptor).relevant_entry = entry;
        (*descriptor).action_flag = JIT_REGISTER_FN;
    }
    __jit_debug_register_code();
    Registration {
        entry,
        _image: image,
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let entry = self.entry;
        let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: as in register; `entry` is in the list until unlinked here.
        unsafe {
            let descriptor = addr_of_mut!(__jit_debug_descriptor);
            let (prev, next) = ((*entry).prev, (*entry).next);
            if prev.is_null() {
                (*descriptor).first_entry = next;
            } else {
                (*prev).next = next;
            }
            if !next.is_null() {
                (*next).prev = prev;
            }
            (*descriptor).relevant_entry = entry;
            (*descriptor).action_flag = JIT_UNREGISTER_FN;
        }
        // GDB reads the entry during this call, so it is freed only after.
        __jit_debug_register_code();
        // SAFETY: from Box::into_raw in register, and now out of the list.
        drop(unsafe { Box::from_raw(entry) });
    }
}

/// How many objects are registered now.
pub fn registered() -> usize {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut count = 0;
    // SAFETY: LOCK is held, and every entry in the list is live.
    unsafe {
        let mut entry = (*addr_of_mut!(__jit_debug_descriptor)).first_entry;
        while !entry.is_null() {
            count += 1;
            entry = (*entry).next;
        }
    }
    count
}
