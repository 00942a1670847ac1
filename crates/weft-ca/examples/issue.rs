//! Writes a CA and workload certificates for benchmarks and manual tests:
//! `cargo run -p weft-ca --example issue -- DIR NAME=NAMESPACE/SERVICE...` creates (or reuses)
//! `DIR/ca.crt` + `DIR/ca.key` and writes `DIR/NAME.crt` (chain) + `DIR/NAME.key` for each
//! identity `spiffe://weft.local/ns/NAMESPACE/svc/SERVICE`, valid 24 h.

use std::path::PathBuf;
use std::time::SystemTime;

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next().map(PathBuf::from) else {
        eprintln!("usage: issue DIR NAME=NAMESPACE/SERVICE...");
        std::process::exit(64);
    };
    let now = SystemTime::now();
    std::fs::create_dir_all(&dir).expect("create the directory");
    let (ca, _) = weft_ca::Ca::load_or_create(&dir, weft_ca::DEFAULT_TRUST_DOMAIN, now)
        .unwrap_or_else(|e| panic!("{e}"));
    for spec in args {
        let Some((name, ns_svc)) = spec.split_once('=') else { panic!("{spec}: NAME=NS/SVC") };
        let Some((ns, svc)) = ns_svc.split_once('/') else { panic!("{spec}: NAME=NS/SVC") };
        let id = weft_ca::SpiffeId::new(weft_ca::DEFAULT_TRUST_DOMAIN, ns, svc);
        let csr = weft_ca::Csr::generate(&id).expect("key");
        let issued = ca.sign_csr(&csr.csr_pem, &id, weft_ca::DEFAULT_TTL, now).expect("sign");
        std::fs::write(dir.join(format!("{name}.crt")), issued.chain_pem).expect("write");
        std::fs::write(dir.join(format!("{name}.key")), csr.key_pem).expect("write");
        println!("{name}: {id}");
    }
}
