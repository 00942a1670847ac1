//! W3C trace context (`traceparent`) for one proxy hop: parse the incoming value, decide the
//! span's identity (same trace, new span id, parent = the incoming span), write the outgoing
//! value. Pure; the random bits come from the per-thread generator.

use crate::rng;

/// An incoming `traceparent`'s trace id, parent (span) id and flags, as lowercase hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Incoming<'a> {
    pub(crate) trace: &'a [u8],
    pub(crate) parent: &'a [u8],
    pub(crate) flags: u8,
}

fn is_lower_hex(b: &[u8]) -> bool {
    b.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

fn hex_byte(b: &[u8]) -> u8 {
    let d = |c: u8| if c.is_ascii_digit() { c - b'0' } else { c - b'a' + 10 };
    d(b[0]) << 4 | d(b[1])
}

/// Parses a `traceparent` value by the W3C Trace Context rules: version 00 is exactly 55
/// bytes; a later version (not ff) may append fields after a dash; ids are lowercase hex and
/// not all zeros.
pub(crate) fn parse(v: &[u8]) -> Option<Incoming<'_>> {
    if v.len() < 55 || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let (version, trace, parent, flags) = (&v[..2], &v[3..35], &v[36..52], &v[53..55]);
    let all_hex =
        is_lower_hex(version) && is_lower_hex(trace) && is_lower_hex(parent) && is_lower_hex(flags);
    if !all_hex || version == b"ff" {
        return None;
    }
    if trace.iter().all(|&c| c == b'0') || parent.iter().all(|&c| c == b'0') {
        return None;
    }
    let tail_ok = if version == b"00" { v.len() == 55 } else { v.len() == 55 || v[55] == b'-' };
    tail_ok.then(|| Incoming { trace, parent, flags: hex_byte(flags) })
}

/// Head sampling of the traces a proxy starts: a new trace is sampled when a random 64-bit
/// value is below `threshold` (0: never, `u64::MAX`: always).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sampler {
    threshold: u64,
}

impl Sampler {
    /// Never samples (no exporter: nothing would record the spans).
    pub(crate) const OFF: Sampler = Sampler { threshold: 0 };

    /// Samples a `ratio` (0.0..=1.0) of new traces.
    pub(crate) fn ratio(ratio: f64) -> Sampler {
        let threshold = if ratio >= 1.0 {
            u64::MAX
        } else if ratio <= 0.0 || ratio.is_nan() {
            0
        } else {
            (ratio * u64::MAX as f64) as u64
        };
        Sampler { threshold }
    }

    /// The decision for a random draw `r`.
    pub(crate) fn decide(self, r: u64) -> bool {
        self.threshold == u64::MAX || r < self.threshold
    }
}

/// One hop's trace context: the identity of the span this proxy records for the request, and
/// the `traceparent` it sends to the next hop (which carries this span's id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TraceHop {
    /// `00-<trace>-<span>-<flags>`.
    pub(crate) traceparent: [u8; 55],
    /// The incoming span id (hex), when the trace was continued.
    pub(crate) parent: Option<[u8; 16]>,
    /// An incoming value was present but malformed or repeated: a new trace was started (and
    /// its `tracestate` must not be passed on).
    pub(crate) restarted: bool,
}

impl Default for TraceHop {
    /// No trace (all zeros, not sampled): for request heads built without one.
    fn default() -> TraceHop {
        TraceHop {
            traceparent: *b"00-00000000000000000000000000000000-0000000000000000-00",
            parent: None,
            restarted: false,
        }
    }
}

impl TraceHop {
    pub(crate) fn trace_id(&self) -> &[u8] {
        &self.traceparent[3..35]
    }

    pub(crate) fn span_id(&self) -> &[u8] {
        &self.traceparent[36..52]
    }

    pub(crate) fn sampled(&self) -> bool {
        self.traceparent[54] & 1 == 1 // '1', '3', ... '9', 'b', 'd', 'f' are odd in ASCII too
    }
}

/// The hop for a request whose `traceparent` values are `incoming` (the first one) and
/// `repeated` (more than one: ambiguous, treated as malformed). A single valid value is
/// continued: same trace id and flags, a new span id whose parent is the incoming one. Anything
/// else starts a new trace, sampled by `sampler`.
pub(crate) fn hop(incoming: Option<&[u8]>, repeated: bool, sampler: Sampler) -> TraceHop {
    let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
    let valid = incoming.filter(|_| !repeated).and_then(parse);
    let parent = match valid {
        Some(inc) => {
            out[3..35].copy_from_slice(inc.trace);
            // Only the sampled bit is defined for version 00; others are not passed on.
            out[54] = if inc.flags & 1 == 1 { b'1' } else { b'0' };
            let mut p = [0u8; 16];
            p.copy_from_slice(inc.parent);
            Some(p)
        }
        None => {
            rng::hex_u64(rng::next_u64(), &mut out[3..19]);
            rng::hex_u64(rng::nonzero_u64(), &mut out[19..35]);
            if sampler != Sampler::OFF && sampler.decide(rng::next_u64()) {
                out[54] = b'1';
            }
            None
        }
    };
    rng::hex_u64(rng::nonzero_u64(), &mut out[36..52]);
    TraceHop { traceparent: out, parent, restarted: valid.is_none() && incoming.is_some() }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The examples of the W3C Trace Context recommendation.
    const SPEC: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const SPEC_UNSAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";

    #[test]
    fn parses_spec_vectors() {
        let p = parse(SPEC.as_bytes()).unwrap();
        assert_eq!(p.trace, b"4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(p.parent, b"00f067aa0ba902b7");
        assert_eq!(p.flags, 1);
        assert_eq!(parse(SPEC_UNSAMPLED.as_bytes()).unwrap().flags, 0);
        // A future version with more fields.
        let future = format!("cc-{}-what-ever", &SPEC[3..55]);
        assert_eq!(parse(future.as_bytes()).unwrap().trace, p.trace);
        for bad in [
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", // upper case
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01", // zero trace id
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", // zero parent id
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", // version ff
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", // 00 with a tail
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",  // short
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01", // separators
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01", // not hex
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x", // no dash before a tail
            "",
            "garbage",
        ] {
            assert!(parse(bad.as_bytes()).is_none(), "{bad}");
        }
    }

    #[test]
    fn continues_a_valid_trace() {
        let h = hop(Some(SPEC.as_bytes()), false, Sampler::OFF);
        let out = std::str::from_utf8(&h.traceparent).unwrap();
        assert_eq!(&out[..36], &SPEC[..36], "same version and trace id");
        assert_ne!(&out[36..52], &SPEC[36..52], "a new span id");
        assert_eq!(&out[52..], "-01", "sampled stays sampled");
        assert_eq!(h.parent.as_ref().map(|p| &p[..]), Some(&b"00f067aa0ba902b7"[..]));
        assert!(h.sampled() && !h.restarted);
        assert_eq!(h.span_id(), &h.traceparent[36..52]);
        assert!(parse(&h.traceparent).is_some());
        // Not sampled stays not sampled, whatever this proxy's own ratio.
        let h = hop(Some(SPEC_UNSAMPLED.as_bytes()), false, Sampler::ratio(1.0));
        assert!(!h.sampled());
        // Unknown flag bits are not passed on (version 00 defines only "sampled").
        let h = hop(Some(SPEC.replace("-01", "-ff").as_bytes()), false, Sampler::OFF);
        assert_eq!(&h.traceparent[52..], b"-01");
        // A future version is continued as version 00.
        let future = format!("cc-{}-more", &SPEC[3..55]);
        let h = hop(Some(future.as_bytes()), false, Sampler::OFF);
        assert_eq!(&h.traceparent[..36], &SPEC.as_bytes()[..36]);
    }

    #[test]
    fn starts_a_new_trace_when_missing_malformed_or_repeated() {
        let h = hop(None, false, Sampler::ratio(1.0));
        assert!(h.parent.is_none() && !h.restarted && h.sampled());
        assert!(parse(&h.traceparent).is_some());
        let h = hop(Some(b"garbage"), false, Sampler::OFF);
        assert!(h.parent.is_none() && h.restarted && !h.sampled());
        assert!(parse(&h.traceparent).is_some());
        let h = hop(Some(SPEC.as_bytes()), true, Sampler::OFF);
        assert!(h.restarted);
        assert_ne!(h.trace_id(), &SPEC.as_bytes()[3..35]);
    }

    #[test]
    fn sampling_ratio() {
        assert!(!Sampler::OFF.decide(0));
        assert!(Sampler::ratio(1.0).decide(u64::MAX));
        assert!(!Sampler::ratio(0.0).decide(0));
        assert!(!Sampler::ratio(f64::NAN).decide(0));
        let half = Sampler::ratio(0.5);
        assert!(half.decide(u64::MAX / 2 - 1_000_000) && !half.decide(u64::MAX / 2 + 1_000_000));
        // Over many draws the ratio holds.
        let quarter = Sampler::ratio(0.25);
        let n = (0..20_000).filter(|_| quarter.decide(rng::next_u64())).count();
        assert!((4_000..6_000).contains(&n), "{n}");
    }
}
