//! Every request frame a client can send goes through `decode_frame` before any
//! handler runs: it must turn any bytes into a request or a rejection, never a
//! panic or an abort. The broker's own allocator is installed, as in the broker:
//! decoders size vectors from counts on the wire, and that allocator is what keeps
//! such counts from aborting the process.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_broker::alloc_guard::GuardedAlloc;
use strata_broker::kafka::dispatch::decode_frame;

#[global_allocator]
static GLOBAL: GuardedAlloc = GuardedAlloc;

fuzz_target!(|data: &[u8]| {
    let _ = decode_frame(bytes::Bytes::copy_from_slice(data));
});
