//! A deterministic fuzz-style test of the request parser and router (the same entry point as
//! the cargo-fuzz target in `fuzz/`): mutated and random inputs straight into the functions, no
//! sockets, so hundreds of thousands of cases run in a few seconds. Nothing may panic; a routed
//! request must name a known service, a refused one gets 400/429/503.

use weft_proxy::fuzzing::Target;

use crate::support::Rng;

const SEEDS: &[&[u8]] = &[
    b"GET http://catalog/items?x=1 HTTP/1.1\r\nHost: catalog\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: cart.shop:9090\r\nX-User: u1\r\n\r\n",
    b"POST http://cart.shop.svc.cluster.local:80/x HTTP/1.1\r\nContent-Length: 3\r\nX-User: z\r\n\r\nabc",
    b"GET /slow/q HTTP/1.1\r\nHost: catalog.default\r\n\r\n",
    b"GET /items/1?q HTTP/1.1\r\nHost: Catalog:8080\r\n\r\n",
    b"GET HTTP://Catalog.:80 HTTP/1.1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nx: y\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nConnection: x, close\r\n\r\n",
];

const TOKENS: &[&[u8]] = &[
    b"http://", b":", b"@", b"[::1]", b".svc", b"?", b"#", b"\r\n", b"Host: ", b"%", b"\0",
    b"catalog",
];

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(v.len() + 1);
        match rng.below(6) {
            0 => v.insert(at, rng.next() as u8),
            1 if at < v.len() => {
                v.remove(at);
            }
            2 if at < v.len() => v[at] = rng.next() as u8,
            3 => {
                let t = TOKENS[rng.below(TOKENS.len())];
                v.splice(at..at, t.iter().copied());
            }
            4 => v.truncate(at),
            _ => {
                let from = rng.below(v.len() + 1);
                let to = (from + rng.below(16)).min(v.len());
                let dup = v[from..to].to_vec();
                v.splice(at..at, dup);
            }
        }
    }
    v
}

#[test]
fn parser_and_router_survive_mutated_input() {
    let mut target = Target::new();
    let mut rng = Rng(0x5eed_f00d_0000_0001);
    let cases = if cfg!(debug_assertions) { 200_000 } else { 2_000_000 };
    let mut statuses = std::collections::BTreeMap::new();
    for i in 0..cases {
        let input = if i % 16 == 0 {
            (0..rng.below(200)).map(|_| rng.next() as u8).collect()
        } else {
            let seed = SEEDS[rng.below(SEEDS.len())];
            mutate(&mut rng, seed)
        };
        let status = target.run(&input);
        assert!(
            matches!(status, 0 | 400 | 429 | 503),
            "{status} for {:?}",
            String::from_utf8_lossy(&input)
        );
        *statuses.entry(status).or_insert(0u32) += 1;
    }
    // The corpus reaches both outcomes.
    assert!(statuses.get(&0).is_some_and(|n| *n > 1000), "{statuses:?}");
    assert!(statuses.get(&503).is_some_and(|n| *n > 1000), "{statuses:?}");
}
