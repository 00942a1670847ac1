//! Throughput and latency of the store backends, end to end through the `Store` trait: the
//! embedded store first, then (in the same run, on the same disk) etcd, with the same writers,
//! readers and watchers, so the two can be compared.
//!
//! `cargo bench -p weft-store --bench store` (set `WEFT_BENCH_DIR` to put the databases on a
//! specific disk; the default is the system temp dir). Every write is durable (fsync) and
//! awaited before it counts. The etcd part starts its own single-member `etcd` (the binary on
//! the `PATH` or `$WEFT_ETCD_BIN`), on loopback; `WEFT_BENCH_ETCD=0` skips it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use weft_store::embedded::{Embedded, Options};
#[cfg(feature = "etcd")]
use weft_store::etcd::{Etcd, LocalEtcd};
use weft_store::{Precondition, Revision, Store};

const VALUE_SIZE: usize = 1024;
const WATCHERS: usize = 4;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = match std::env::var_os("WEFT_BENCH_DIR") {
        Some(base) => tempfile::tempdir_in(base),
        None => tempfile::tempdir(),
    }
    .expect("temp dir");
    let options = Options {
        linger: std::env::var_os("WEFT_BENCH_NO_LINGER").is_none(),
        ..Options::default()
    };
    let store = Embedded::open_with(dir.path().join("bench.redb"), options).expect("open store");
    let value = Bytes::from(vec![b'x'; VALUE_SIZE]);
    println!(
        "weft-store embedded benchmark ({VALUE_SIZE} B values, db in {})",
        dir.path().display()
    );

    let (p50, p99) = fsync_baseline(dir.path());
    println!("baseline: 4 KiB pwrite + fdatasync on this disk: p50 {p50:?} p99 {p99:?}");

    runtime.block_on(async {
        // Warm up the file (first allocations) so the sequential figure is steady state.
        writes(&store, "/warm/", 1, 200, &value).await;
        for (tasks, per_task) in [(1, 3_000), (32, 500), (128, 200)] {
            let before = store.stats();
            let (elapsed, mut lat) = writes(&store, &format!("/w{tasks}/"), tasks, per_task, &value).await;
            let after = store.stats();
            let n = tasks * per_task;
            let commits = (after.commits - before.commits).max(1);
            println!(
                "durable writes, {tasks:>3} concurrent writers: {:>7.0} writes/s  latency p50 {:?} p99 {:?}; \
                 {n} writes in {commits} commits (mean batch {:.1}, mean commit {:?})",
                n as f64 / elapsed.as_secs_f64(),
                pct(&mut lat, 50.0),
                pct(&mut lat, 99.0),
                (after.requests - before.requests) as f64 / commits as f64,
                (after.commit_time - before.commit_time) / commits as u32,
            );
        }
    });

    let (keys, _) = runtime.block_on(store.list("/w32/")).expect("list");
    let keys: Arc<Vec<String>> = Arc::new(keys.into_iter().map(|kv| kv.key).collect());
    for threads in [1, 2] {
        let per_thread = 300_000;
        let started = Instant::now();
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (store, keys) = (store.clone(), keys.clone());
                std::thread::spawn(move || {
                    let mut x: usize = 0x9e37_79b9 + t;
                    for _ in 0..per_thread {
                        x = x
                            .wrapping_mul(6_364_136_223_846_793_005)
                            .wrapping_add(1_442_695_040_888_963_407);
                        let key = &keys[(x >> 33) % keys.len()];
                        let got = futures::executor::block_on(store.get(key)).expect("get");
                        assert!(got.is_some());
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("reader thread");
        }
        let n = threads * per_thread;
        println!(
            "point reads, {threads} thread(s): {:>10.0} reads/s ({n} reads of {} keys)",
            n as f64 / started.elapsed().as_secs_f64(),
            keys.len()
        );
    }

    runtime.block_on(async {
        for (writers, per_writer) in [(1, 2_000), (32, 200)] {
            let (ack_to_rx, put_to_rx) = watch_latency(&store, writers, per_writer, &value).await;
            let (mut a, mut p) = (ack_to_rx, put_to_rx);
            println!(
                "watch delivery, {WATCHERS} watchers, {writers:>2} writer(s): ack→receipt p50 {:?} p99 {:?}; put call→receipt p50 {:?} p99 {:?}",
                pct(&mut a, 50.0),
                pct(&mut a, 99.0),
                pct(&mut p, 50.0),
                pct(&mut p, 99.0),
            );
        }
    });
    runtime.block_on(async {
        let tasks = 32;
        let (reads, rate) = async_reads(&store, &keys, tasks, 4_000).await;
        println!(
            "point reads, {tasks} concurrent tasks on the runtime: {rate:>10.0} reads/s ({reads} reads)"
        );
    });
    runtime.block_on(store.close()).expect("close");

    #[cfg(not(feature = "etcd"))]
    println!("etcd: skipped (built without the etcd feature: --features etcd)");
    #[cfg(feature = "etcd")]
    etcd_bench(&runtime, dir.path(), &value);
}

#[cfg(feature = "etcd")]
fn etcd_bench(runtime: &tokio::runtime::Runtime, dir: &std::path::Path, value: &Bytes) {
    if std::env::var("WEFT_BENCH_ETCD").is_ok_and(|v| v == "0") {
        println!("etcd: skipped (WEFT_BENCH_ETCD=0)");
        return;
    }
    let etcd = match LocalEtcd::start(dir) {
        Ok(etcd) => etcd,
        Err(e) => {
            println!("etcd: skipped ({e})");
            return;
        }
    };
    let version = std::process::Command::new(LocalEtcd::binary().expect("etcd binary"))
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").to_string())
        .unwrap_or_default();
    println!(
        "\nweft-store etcd benchmark, same run ({VALUE_SIZE} B values; single-member {version} on \
         127.0.0.1, data in {})",
        dir.display()
    );
    runtime.block_on(etcd_part(&etcd, value));
}

/// The same measurements on etcd (no group-commit counters: etcd batches its own way).
#[cfg(feature = "etcd")]
async fn etcd_part(etcd: &LocalEtcd, value: &Bytes) {
    let store = Etcd::connect(&[etcd.endpoint()], "/bench").await.expect("connect to etcd");
    writes(&store, "/warm/", 1, 200, value).await;
    for (tasks, per_task) in [(1, 1_000), (32, 200), (128, 100)] {
        let (elapsed, mut lat) =
            writes(&store, &format!("/w{tasks}/"), tasks, per_task, value).await;
        let n = tasks * per_task;
        println!(
            "durable writes, {tasks:>3} concurrent writers: {:>7.0} writes/s  latency p50 {:?} p99 {:?}",
            n as f64 / elapsed.as_secs_f64(),
            pct(&mut lat, 50.0),
            pct(&mut lat, 99.0),
        );
    }
    let (keys, _) = store.list("/w32/").await.expect("list");
    let keys: Arc<Vec<String>> = Arc::new(keys.into_iter().map(|kv| kv.key).collect());
    for tasks in [1, 32] {
        let (reads, rate) = async_reads(&store, &keys, tasks, 40_000 / tasks).await;
        println!(
            "point reads, {tasks:>2} concurrent task(s) on the runtime: {rate:>10.0} reads/s ({reads} reads, linearizable)"
        );
    }
    for (writers, per_writer) in [(1, 1_000), (32, 100)] {
        let (mut a, mut p) = watch_latency(&store, writers, per_writer, value).await;
        println!(
            "watch delivery, {WATCHERS} watchers, {writers:>2} writer(s): ack→receipt p50 {:?} p99 {:?}; put call→receipt p50 {:?} p99 {:?}",
            pct(&mut a, 50.0),
            pct(&mut a, 99.0),
            pct(&mut p, 50.0),
            pct(&mut p, 99.0),
        );
    }
}

/// `tasks` tasks each reading `per_task` random keys one after another: (reads, reads/s).
async fn async_reads<S: Store + Clone>(
    store: &S,
    keys: &Arc<Vec<String>>,
    tasks: usize,
    per_task: usize,
) -> (usize, f64) {
    let started = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let (store, keys) = (store.clone(), keys.clone());
            tokio::spawn(async move {
                let mut x: usize = 0x9e37_79b9 + t;
                for _ in 0..per_task {
                    x = x
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    let key = &keys[(x >> 33) % keys.len()];
                    assert!(store.get(key).await.expect("get").is_some());
                }
            })
        })
        .collect();
    for h in handles {
        h.await.expect("reader task");
    }
    let n = tasks * per_task;
    (n, n as f64 / started.elapsed().as_secs_f64())
}

/// `tasks` concurrent writers, each awaiting `per_task` puts of distinct keys one by one.
async fn writes<S: Store + Clone>(
    store: &S,
    prefix: &str,
    tasks: usize,
    per_task: usize,
    value: &Bytes,
) -> (Duration, Vec<Duration>) {
    let started = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let (store, value, prefix) = (store.clone(), value.clone(), prefix.to_string());
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_task);
                for i in 0..per_task {
                    let begin = Instant::now();
                    store
                        .put(&format!("{prefix}{t}/{i}"), value.clone(), Precondition::None)
                        .await
                        .expect("put");
                    latencies.push(begin.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::with_capacity(tasks * per_task);
    for h in handles {
        all.extend(h.await.expect("writer task"));
    }
    (started.elapsed(), all)
}

/// Per event: (ack → receipt, put call → receipt), over all watchers.
async fn watch_latency<S: Store + Clone>(
    store: &S,
    writers: usize,
    per_writer: usize,
    value: &Bytes,
) -> (Vec<Duration>, Vec<Duration>) {
    let prefix = format!("/lat{writers}/");
    let total = writers * per_writer;
    let from = store.current_revision().await.expect("revision");
    let mut watchers = Vec::new();
    for _ in 0..WATCHERS {
        let mut watch = store.watch(&prefix, from).await.expect("watch");
        watchers.push(tokio::spawn(async move {
            let mut seen = Vec::with_capacity(total);
            while seen.len() < total {
                let event = watch.next().await.expect("watch ended").expect("watch failed");
                seen.push((event.revision(), Instant::now()));
            }
            seen
        }));
    }
    let handles: Vec<_> = (0..writers)
        .map(|t| {
            let (store, value, prefix) = (store.clone(), value.clone(), prefix.clone());
            tokio::spawn(async move {
                let mut acks = Vec::with_capacity(per_writer);
                for i in 0..per_writer {
                    let call = Instant::now();
                    let kv = store
                        .put(&format!("{prefix}{t}/{i}"), value.clone(), Precondition::None)
                        .await
                        .expect("put");
                    acks.push((kv.mod_revision, call, Instant::now()));
                }
                acks
            })
        })
        .collect();
    let mut acks: std::collections::HashMap<Revision, (Instant, Instant)> = Default::default();
    for h in handles {
        acks.extend(h.await.expect("writer").into_iter().map(|(r, c, a)| (r, (c, a))));
    }
    let (mut ack_to_rx, mut put_to_rx) = (Vec::new(), Vec::new());
    for w in watchers {
        for (rev, received) in w.await.expect("watcher") {
            let (call, ack) = acks[&rev];
            ack_to_rx.push(received.saturating_duration_since(ack));
            put_to_rx.push(received.saturating_duration_since(call));
        }
    }
    (ack_to_rx, put_to_rx)
}

/// Raw cost of a durable 4 KiB write on the benchmark's disk, for scale.
fn fsync_baseline(dir: &std::path::Path) -> (Duration, Duration) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::create(dir.join("fsync-baseline")).expect("baseline file");
    let block = vec![7u8; 4096];
    let mut samples = Vec::new();
    for i in 0..200u64 {
        let begin = Instant::now();
        file.write_all_at(&block, (i % 16) * 4096).expect("write");
        file.sync_data().expect("fdatasync");
        samples.push(begin.elapsed());
    }
    (pct(&mut samples, 50.0), pct(&mut samples, 99.0))
}

fn pct(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort_unstable();
    if samples.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((p / 100.0) * (samples.len() - 1) as f64).round() as usize;
    samples[idx]
}
