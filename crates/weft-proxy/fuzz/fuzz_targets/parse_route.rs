//! The HTTP/1 request parser (and the response-head and chunked-framing readers) and the
//! sidecar router on arbitrary bytes: nothing may panic, and a request the proxy answers itself
//! gets 400, 429 or 503.

#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use weft_proxy::fuzzing::Target;

thread_local! {
    static TARGET: RefCell<Target> = RefCell::new(Target::new());
}

fuzz_target!(|data: &[u8]| {
    TARGET.with_borrow_mut(|t| {
        let status = t.run(data);
        assert!(matches!(status, 0 | 400 | 429 | 503), "{status}");
    });
});
