//! A global allocator that keeps hostile length fields from aborting the process.
//!
//! `kafka-protocol` sizes vectors from counts read off the wire
//! (`Vec::with_capacity(n)`) before it knows whether the bytes exist, so a 20-byte
//! request claiming 2^31 elements asks for hundreds of gigabytes. With the system
//! allocator that fails and Rust aborts the whole broker. This allocator serves such
//! huge requests with a lazily committed `MAP_NORESERVE` mapping instead: nothing is
//! touched beyond what the decoder really fills (bounded by the frame size limit), the
//! decoder then fails cleanly on the missing bytes, and the mapping is released.
//! Ordinary allocations go to the system allocator unchanged.

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations at or above this size use a reserve-less mapping.
const HUGE: usize = 1 << 30;

pub struct GuardedAlloc;

unsafe impl GlobalAlloc for GuardedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= HUGE && layout.align() <= 4096 {
            // SAFETY: an anonymous private mapping with no fixed address; the result is
            // checked for MAP_FAILED before use.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    layout.size(),
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                return std::ptr::null_mut();
            }
            return p.cast();
        }
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.size() >= HUGE && layout.align() <= 4096 {
            // SAFETY: `ptr` came from the mmap above with this exact size.
            unsafe {
                libc::munmap(ptr.cast(), layout.size());
            }
            return;
        }
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= HUGE && layout.align() <= 4096 {
            // Fresh anonymous mappings are already zeroed.
            // SAFETY: same contract as `alloc`.
            return unsafe { self.alloc(layout) };
        }
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let was_huge = layout.size() >= HUGE && layout.align() <= 4096;
        let is_huge = new_size >= HUGE && layout.align() <= 4096;
        if !was_huge && !is_huge {
            // SAFETY: both sides are system allocations with this layout.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // SAFETY: new layout has the same alignment and a non-zero size.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: allocate, copy the smaller size, free the old block.
        unsafe {
            let new = self.alloc(new_layout);
            if !new.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}
