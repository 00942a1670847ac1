//! Notification: watch streams (push), long-polls (pull), and `weft_client::watcher` over both,
//! including across a server restart.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use serde_json::{Value, json};
use weft_client::watcher::{self, Config, Event, Mode};

const SERVICES: &str = "/api/v1/namespaces/default/services";

#[track_caller]
fn expect(ev: &Value, ty: &str, name: &str) -> u64 {
    assert_eq!(ev["type"], ty, "{ev}");
    assert_eq!(name_of(&ev["object"]), name, "{ev}");
    rv(&ev["object"])
}

#[test]
fn watch_lists_as_added_then_bookmark_then_follows_changes() {
    let s = Server::start();
    let a = s.put_json(&svc_path("a"), &service("a")).json();
    let b = s.put_json(&svc_path("b"), &service("b")).json();
    let list_rev = s.revision();

    let mut w = s.watch(&format!("{SERVICES}?watch=true"));
    assert_eq!(
        w.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            .map(|(_, v)| v.as_str()),
        Some("application/x-ndjson")
    );
    let e = w.next();
    assert_eq!(expect(&e, "ADDED", "a"), rv(&a));
    assert_eq!(e["object"], a, "ADDED carries the object as GET shows it");
    assert_eq!(expect(&w.next(), "ADDED", "b"), rv(&b));
    let bm = w.next();
    assert_eq!(bm["type"], "BOOKMARK");
    assert_eq!(rv(&bm["object"]), list_rev);
    assert_eq!(bm["object"]["kind"], "Service");

    let a2 = s.put_json(&svc_path("a"), &service_labeled("a", json!({ "v": "2" }))).json();
    let e = w.next_change();
    assert_eq!(expect(&e, "MODIFIED", "a"), rv(&a2));
    assert_eq!(e["object"], a2);
    let c = s.put_json(&svc_path("c"), &service("c")).json();
    assert_eq!(expect(&w.next_change(), "ADDED", "c"), rv(&c));
    let deleted = s.delete(&svc_path("b"));
    assert_eq!(deleted.status, 200);
    let e = w.next_change();
    let del_rev = expect(&e, "DELETED", "b");
    assert_eq!(del_rev, s.revision(), "DELETED carries the deletion's revision");
    assert_eq!(e["object"]["spec"], b["spec"], "DELETED carries the last state");
    // Other kinds and namespaces do not show up.
    s.put_json(&deploy_path("a"), &deployment("a", 1));
    let mut other = service("x");
    other["metadata"]["namespace"] = json!("other");
    assert_eq!(s.put_json("/api/v1/namespaces/other/services/x", &other).status, 201);
    let last = s.put_json(&svc_path("d"), &service("d")).json();
    assert_eq!(expect(&w.next_change(), "ADDED", "d"), rv(&last));
    // Every line is one JSON object and a newline.
    for l in &w.lines {
        assert!(l.ends_with('\n') && !l[..l.len() - 1].contains('\n'), "{l:?}");
    }
}

#[test]
fn watch_from_a_revision_resumes_exactly() {
    let s = Server::start();
    let mut changes = Vec::new(); // (type, name, rev)
    for i in 0..10 {
        let r = s.put_json(&svc_path(&format!("s{i}")), &service(&format!("s{i}")));
        changes.push(("ADDED", format!("s{i}"), rv(&r.json())));
    }
    for i in (0..10).step_by(2) {
        let r = s.put_json(
            &svc_path(&format!("s{i}")),
            &service_labeled(&format!("s{i}"), json!({ "m": "1" })),
        );
        changes.push(("MODIFIED", format!("s{i}"), rv(&r.json())));
    }
    for i in (0..10).step_by(3) {
        assert_eq!(s.delete(&svc_path(&format!("s{i}"))).status, 200);
        changes.push(("DELETED", format!("s{i}"), s.revision()));
    }
    for from in [0, changes[4].2, changes[12].2, changes.last().unwrap().2 - 1] {
        let want: Vec<_> = changes.iter().filter(|c| c.2 > from).collect();
        let mut w = s.watch(&format!("{SERVICES}?watch=true&resourceVersion={from}"));
        for c in &want {
            let e = w.next();
            assert_eq!(
                (e["type"].as_str().unwrap(), name_of(&e["object"]), rv(&e["object"])),
                (c.0, c.1.as_str(), c.2),
                "from {from}"
            );
        }
        // Nothing else (the default bookmark interval is 10 s).
        assert_eq!(w.next_within(Duration::from_millis(300)), None, "from {from}: an extra event");
    }
    // All namespaces, from the start.
    let mut w = s.watch("/api/v1/services?watch=true&resourceVersion=0");
    for c in &changes {
        let e = w.next();
        assert_eq!(rv(&e["object"]), c.2);
    }
    // From the current revision: only what happens next.
    let now = s.revision();
    let mut w = s.watch(&format!("{SERVICES}?watch=true&resourceVersion={now}"));
    assert_eq!(w.next_within(Duration::from_millis(200)), None);
    let n = s.put_json(&svc_path("new"), &service("new")).json();
    assert_eq!(expect(&w.next(), "ADDED", "new"), rv(&n));
}

#[test]
fn selector_and_single_object_watches_see_only_their_objects() {
    let s = Server::start();
    s.put_json(&svc_path("web-1"), &service_labeled("web-1", json!({ "tier": "web" })));
    s.put_json(&svc_path("db-1"), &service_labeled("db-1", json!({ "tier": "db" })));
    let mut sel = s.watch(&format!("{SERVICES}?watch=true&labelSelector=tier%3Dweb"));
    assert_eq!(expect(&sel.next(), "ADDED", "web-1"), rv(&s.object(&svc_path("web-1")).unwrap()));
    assert_eq!(sel.next()["type"], "BOOKMARK");
    let mut one = s.watch(&format!("{}?watch=true", svc_path("db-1")));
    expect(&one.next(), "ADDED", "db-1");
    assert_eq!(one.next()["type"], "BOOKMARK");

    s.put_json(&svc_path("db-2"), &service_labeled("db-2", json!({ "tier": "db" })));
    s.put_json(&svc_path("db-1"), &service_labeled("db-1", json!({ "tier": "db", "v": "2" })));
    let w2 =
        s.put_json(&svc_path("web-2"), &service_labeled("web-2", json!({ "tier": "web" }))).json();
    s.delete(&svc_path("db-2"));
    s.delete(&svc_path("db-1"));
    assert_eq!(expect(&sel.next_change(), "ADDED", "web-2"), rv(&w2));
    assert_eq!(sel.next_within(Duration::from_millis(300)), None);
    expect(&one.next_change(), "MODIFIED", "db-1");
    expect(&one.next_change(), "DELETED", "db-1");
    assert_eq!(one.next_within(Duration::from_millis(300)), None);
    // A single object that does not exist yet: nothing, then its creation.
    let mut later = s.watch(&format!("{}?watch=true", svc_path("later")));
    assert_eq!(later.next()["type"], "BOOKMARK");
    s.put_json(&svc_path("later"), &service("later"));
    expect(&later.next_change(), "ADDED", "later");
}

#[test]
fn selector_watch_reports_objects_leaving_the_selection() {
    let s = Server::start();
    s.put_json(&svc_path("web-1"), &service_labeled("web-1", json!({ "tier": "web" })));
    let mut sel = s.watch(&format!("{SERVICES}?watch=true&labelSelector=tier%3Dweb"));
    expect(&sel.next(), "ADDED", "web-1");
    assert_eq!(sel.next()["type"], "BOOKMARK");
    s.put_json(&svc_path("web-1"), &service_labeled("web-1", json!({ "tier": "db" })));
    let e =
        sel.next_within(Duration::from_secs(2)).expect("an event for web-1 leaving the selection");
    assert_eq!(e["type"], "DELETED", "{e}");
}

#[test]
fn idle_watches_get_periodic_bookmarks() {
    let s = Server::with_args(&["--bookmark-interval", "200ms"]);
    s.put_json(&svc_path("a"), &service("a"));
    let rev = s.revision();
    let mut w = s.watch(&format!("{SERVICES}?watch=true&resourceVersion={rev}"));
    let start = Instant::now();
    let mut times = Vec::new();
    for _ in 0..4 {
        let e = w.next_within(Duration::from_secs(3)).expect("a bookmark on an idle stream");
        assert_eq!(e["type"], "BOOKMARK", "{e}");
        assert_eq!(rv(&e["object"]), rev);
        times.push(start.elapsed());
    }
    assert!(times[3] >= Duration::from_millis(600), "bookmarks too fast: {times:?}");
    assert!(times[3] < Duration::from_secs(3), "bookmarks too slow: {times:?}");
    // A write to another kind moves the bookmark's revision on (nothing to send, but seen).
    s.put_json(&deploy_path("d"), &deployment("d", 1));
    let now = s.revision();
    let e = wait_for("a bookmark at the new revision", Duration::from_secs(5), || {
        let e = w.next_within(Duration::from_secs(1))?;
        assert_eq!(e["type"], "BOOKMARK", "{e}");
        (rv(&e["object"]) == now).then_some(e)
    });
    assert_eq!(e["object"]["kind"], "Service");
}

#[test]
fn a_multi_object_apply_is_delivered_whole() {
    let s = Server::start();
    let start = s.revision();
    let mut w = s.watch(&format!("{SERVICES}?watch=true&resourceVersion={start}"));
    // More objects than the server's per-chunk batch (512) and its store-watch chunk (1024).
    let n = 1100;
    let objects: Vec<Value> = (0..n).map(|i| service(&format!("bulk-{i:04}"))).collect();
    let r = s.apply_json(&Value::Array(objects));
    assert_eq!(r.status, 200, "{}", r.text());
    let rev: u64 = r.json()["results"][0]["resourceVersion"].as_str().unwrap().parse().unwrap();
    assert_eq!(rev, start + 1, "one apply, one revision");
    let mut names = HashSet::new();
    for _ in 0..n {
        let e = w.next();
        assert_eq!(e["type"], "ADDED");
        assert_eq!(rv(&e["object"]), rev);
        names.insert(name_of(&e["object"]).to_string());
    }
    assert_eq!(names.len(), n);
    assert_eq!(w.next_within(Duration::from_millis(300)), None);
    // Resuming from just before it, by push and by pull (even with a small limit), gets it whole.
    let mut w = s.watch(&format!("{SERVICES}?watch=true&resourceVersion={start}"));
    for _ in 0..n {
        assert_eq!(rv(&w.next()["object"]), rev);
    }
    let r = s.get(&format!("{SERVICES}?wait=1s&resourceVersion={start}&limit=10"));
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["events"].as_array().unwrap().len(), n, "a poll must not cut a revision in two");
    assert_eq!(v["resourceVersion"], rev.to_string());
}

#[test]
fn poll_returns_at_once_with_events_or_empty_after_the_wait() {
    let s = Server::start();
    let a = s.put_json(&svc_path("a"), &service("a")).json();
    let before = rv(&a) - 1;
    let t = Instant::now();
    let r = s.get(&format!("{SERVICES}?wait=2s&resourceVersion={before}"));
    assert!(t.elapsed() < Duration::from_secs(1), "took {:?} with events waiting", t.elapsed());
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["events"].as_array().unwrap().len(), 1);
    assert_eq!(v["events"][0]["type"], "ADDED");
    assert_eq!(v["events"][0]["object"], a);
    assert_eq!(v["resourceVersion"], rv(&a).to_string());

    // Nothing new: an empty batch at the current revision, after about the wait.
    s.put_json(&deploy_path("d"), &deployment("d", 1)); // other kinds move the revision on
    let now = s.revision();
    let t = Instant::now();
    let r = s.get(&format!("{SERVICES}?wait=1s&resourceVersion={}", rv(&a)));
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(4), "took {took:?}");
    let v = r.json();
    assert_eq!(v["events"], json!([]));
    assert_eq!(v["resourceVersion"], now.to_string());

    // A change during the wait ends it early.
    let addr = s.addr.clone();
    let token = s.token.clone();
    let poll = std::thread::spawn(move || {
        let t = Instant::now();
        let r = request(
            &addr,
            "GET",
            &format!("{SERVICES}?wait=20s&resourceVersion={now}"),
            Some(&token),
            &[],
            None,
        )
        .unwrap();
        (r, t.elapsed())
    });
    // Wait until the poller is parked (the pollers gauge), then write.
    wait_for("a waiting poller", Duration::from_secs(10), || {
        let m = s.get("/metrics").text();
        m.lines().any(|l| l == "weft_api_pollers 1").then_some(())
    });
    let b = s.put_json(&svc_path("b"), &service("b")).json();
    let (r, took) = poll.join().unwrap();
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let v = r.json();
    assert_eq!(v["events"].as_array().unwrap().len(), 1);
    assert_eq!(v["events"][0]["object"], b);
    assert_eq!(v["resourceVersion"], rv(&b).to_string());
    // One object by name, by pull.
    let r = s.get(&format!("{}?wait=1s&resourceVersion={before}", svc_path("b")));
    let v = r.json();
    assert_eq!(v["events"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(name_of(&v["events"][0]["object"]), "b");
}

/// Four threads each PUT 50 new services (201 each) through the api and, with `touch`, write
/// every fifth one again (200) so MODIFIED events interleave; each thread returns what was
/// acknowledged, `(name, resourceVersion)` in order.
fn concurrent_writers(s: &Server, touch: bool) -> Vec<std::thread::JoinHandle<Vec<(String, u64)>>> {
    (0..4)
        .map(|t| {
            let addr = s.addr.clone();
            let token = s.token.clone();
            std::thread::spawn(move || {
                let put = |name: &str, body: Value, want: u16| {
                    let r = request(
                        &addr,
                        "PUT",
                        &svc_path(name),
                        Some(&token),
                        &[("Content-Type", "application/json")],
                        Some(body.to_string().as_bytes()),
                    )
                    .unwrap();
                    assert_eq!(r.status, want, "{}", r.text());
                    (name.to_string(), rv(&r.json()))
                };
                let mut acked = Vec::new();
                for i in 0..50 {
                    let name = format!("w{t}-{i:02}");
                    acked.push(put(&name, service(&name), 201));
                    if touch && i % 5 == 0 {
                        acked.push(put(
                            &name,
                            service_labeled(&name, json!({ "again": "1" })),
                            200,
                        ));
                    }
                }
                acked
            })
        })
        .collect()
}

#[test]
fn chained_polls_never_miss_or_duplicate_under_concurrent_writes() {
    let s = Server::start();
    let start = s.revision();
    let writers = concurrent_writers(&s, true);
    let mut seen: Vec<(String, String, u64)> = Vec::new();
    let mut from = start;
    let deadline = Instant::now() + Duration::from_secs(60);
    let total = 4 * (50 + 10);
    while seen.len() < total {
        assert!(Instant::now() < deadline, "only {} of {total} events after 60s", seen.len());
        let r = s.get(&format!("{SERVICES}?wait=2s&resourceVersion={from}&limit=7"));
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        for e in v["events"].as_array().unwrap() {
            seen.push((
                e["type"].as_str().unwrap().to_string(),
                name_of(&e["object"]).to_string(),
                rv(&e["object"]),
            ));
        }
        let next: u64 = v["resourceVersion"].as_str().unwrap().parse().unwrap();
        assert!(next >= from, "the poll's revision went back: {from} -> {next}");
        from = next;
    }
    let mut acked: Vec<(String, u64)> =
        writers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    acked.sort_by_key(|a| a.1);
    // Strictly increasing revisions: nothing twice, nothing out of order.
    for pair in seen.windows(2) {
        assert!(pair[0].2 < pair[1].2, "out of order or duplicated: {pair:?}");
    }
    let got: Vec<(String, u64)> = seen.iter().map(|e| (e.1.clone(), e.2)).collect();
    assert_eq!(got, acked, "the polls' events differ from the acknowledged writes");
    let added = seen.iter().filter(|e| e.0 == "ADDED").count();
    assert_eq!(added, 200);
    // Nothing more after the last one.
    let r = s.get(&format!("{SERVICES}?wait=200ms&resourceVersion={from}"));
    assert_eq!(r.json()["events"], json!([]));
}

// ---- weft_client::watcher -----------------------------------------------------------------

fn config(mode: Mode) -> Config {
    Config {
        namespace: Some("default".into()),
        selector: None,
        mode,
        poll_wait: Duration::from_secs(1),
        max_backoff: Duration::from_millis(200),
    }
}

/// What a watcher's events say exists: name -> resourceVersion.
#[derive(Default)]
struct Model {
    objects: BTreeMap<String, u64>,
    restarts: usize,
    applied: Vec<(String, u64)>,
    deleted: Vec<String>,
}

impl Model {
    fn apply(&mut self, ev: Event) {
        match ev {
            Event::Restarted(items) => {
                self.restarts += 1;
                self.objects = items.iter().map(|o| (name_of(o).to_string(), rv(o))).collect();
            }
            Event::Applied(o) => {
                let name = name_of(&o).to_string();
                let r = rv(&o);
                if let Some(old) = self.objects.get(&name) {
                    assert!(r > *old, "{name}: went back from {old} to {r}");
                }
                self.applied.push((name.clone(), r));
                self.objects.insert(name, r);
            }
            Event::Deleted(o) => {
                let name = name_of(&o).to_string();
                assert!(
                    self.objects.remove(&name).is_some(),
                    "deleted {name}, which was not there"
                );
                self.deleted.push(name);
            }
        }
    }
}

/// The server's truth: name -> resourceVersion of the default namespace's services.
fn truth(s: &Server) -> BTreeMap<String, u64> {
    let r = s.get(SERVICES);
    r.json()["items"].as_array().unwrap().iter().map(|o| (name_of(o).to_string(), rv(o))).collect()
}

async fn converge<S>(stream: &mut S, model: &mut Model, s: &Server, what: &str)
where
    S: futures::Stream<Item = Result<Event, weft_client::ClientError>> + Unpin,
{
    let want = truth(s);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while model.objects != want {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(ev))) => model.apply(ev),
            Ok(Some(Err(_))) => {} // transient (the server is down); the watcher retries
            Ok(None) => panic!("{what}: the watcher ended"),
            Err(_) => panic!("{what}: did not converge: have {:?}, want {want:?}", model.objects),
        }
    }
}

async fn watcher_scenario(mode: Mode) {
    let mut s = Server::start();
    s.put_json(&svc_path("a"), &service("a"));
    s.put_json(&svc_path("b"), &service("b"));
    let mut stream =
        Box::pin(watcher::watcher(s.client(), &weft_api::kinds::SERVICE, config(mode)));
    let mut model = Model::default();
    match tokio::time::timeout(Duration::from_secs(10), stream.next()).await.unwrap() {
        Some(Ok(Event::Restarted(items))) => {
            let names: Vec<&str> = items.iter().map(name_of).collect();
            assert_eq!(names, vec!["a", "b"]);
            model.apply(Event::Restarted(items));
        }
        other => panic!("first event should be Restarted, got {other:?}"),
    }
    let c = s.put_json(&svc_path("c"), &service("c")).json();
    assert_eq!(s.delete(&svc_path("a")).status, 200);
    converge(&mut stream, &mut model, &s, "before restart").await;
    assert_eq!(model.applied, vec![("c".to_string(), rv(&c))]);
    assert_eq!(model.deleted, vec!["a".to_string()]);

    // Kill the server, bring it back on the same port and data dir, change things at once.
    s.kill();
    let s = tokio::task::spawn_blocking(move || {
        s.restart();
        s
    })
    .await
    .unwrap();
    let d = s.put_json(&svc_path("d"), &service("d")).json();
    s.put_json(&svc_path("b"), &service_labeled("b", json!({ "v": "2" })));
    assert_eq!(s.delete(&svc_path("c")).status, 200);
    converge(&mut stream, &mut model, &s, "after restart").await;
    // Resumed (no re-list needed: the restarted server's history covers the gap), every change
    // seen one by one.
    assert_eq!(model.restarts, 1, "the watcher re-listed instead of resuming");
    assert!(model.applied.contains(&("d".to_string(), rv(&d))));
    assert_eq!(model.deleted, vec!["a".to_string(), "c".to_string()]);
    let e = s.put_json(&svc_path("e"), &service("e")).json();
    converge(&mut stream, &mut model, &s, "after restart, later").await;
    assert_eq!(model.applied.last().unwrap(), &("e".to_string(), rv(&e)));
}

#[test]
fn client_watcher_push_sees_changes_and_survives_a_restart() {
    runtime().block_on(watcher_scenario(Mode::Auto));
}

#[test]
fn client_watcher_pull_sees_changes_and_survives_a_restart() {
    runtime().block_on(watcher_scenario(Mode::Pull));
}

#[test]
fn client_watcher_converges_when_history_moves_on() {
    runtime().block_on(async {
        let s = Server::with_args(&["--history", "5"]);
        s.put_json(&svc_path("a"), &service("a"));
        let mut cfg = config(Mode::Pull);
        cfg.poll_wait = Duration::from_millis(300);
        let mut stream = Box::pin(watcher::watcher(s.client(), &weft_api::kinds::SERVICE, cfg));
        let mut model = Model::default();
        match tokio::time::timeout(Duration::from_secs(10), stream.next()).await.unwrap() {
            Some(Ok(ev @ Event::Restarted(_))) => model.apply(ev),
            other => panic!("{other:?}"),
        }
        converge(&mut stream, &mut model, &s, "start").await;
        // Many writes to another kind push the watcher's revision out of the history.
        for i in 0..20 {
            s.put_json(&deploy_path(&format!("d{i}")), &deployment(&format!("d{i}"), 1));
        }
        s.put_json(&svc_path("b"), &service("b"));
        converge(&mut stream, &mut model, &s, "after history moved on").await;
    });
}

#[test]
fn timeout_seconds_ends_a_watch() {
    let s = Server::start();
    let rev = s.revision();
    let t = Instant::now();
    let mut w = s.watch(&format!("{SERVICES}?watch=true&resourceVersion={rev}&timeoutSeconds=1"));
    assert_eq!(w.next_within(Duration::from_secs(10)), None);
    assert!(w.has_ended(), "the stream did not end cleanly");
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn sigterm_ends_watches_and_polls_and_the_server_exits() {
    let mut s = Server::start();
    s.put_json(&svc_path("a"), &service("a"));
    let rev = s.revision();
    let mut w = s.watch(&format!("{SERVICES}?watch=true&resourceVersion={rev}"));
    let addr = s.addr.clone();
    let token = s.token.clone();
    let poll = std::thread::spawn(move || {
        let t = Instant::now();
        let r = request(
            &addr,
            "GET",
            &format!("{SERVICES}?wait=60s&resourceVersion={rev}"),
            Some(&token),
            &[],
            None,
        );
        (r, t.elapsed())
    });
    wait_for("a watcher and a poller", Duration::from_secs(10), || {
        let m = s.get("/metrics").text();
        (m.lines().any(|l| l == "weft_api_pollers 1")
            && m.lines().any(|l| l == "weft_api_watchers 1"))
        .then_some(())
    });
    let status = s
        .terminate(Duration::from_secs(15))
        .expect("the server did not exit within 15s of SIGTERM");
    assert!(status.success(), "exit status {status}");
    assert_eq!(w.next_within(Duration::from_secs(5)), None);
    assert!(w.has_ended(), "the watch did not end");
    let (r, took) = poll.join().unwrap();
    let r = r.expect("the long-poll got an answer");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["events"], json!([]));
    assert!(took < Duration::from_secs(15), "{took:?}");
    assert!(s.log_text().contains("weft api server stopped"), "{}", s.log_text());
}

#[test]
fn a_watch_opened_during_writes_misses_nothing() {
    let s = Server::start();
    let writers = concurrent_writers(&s, false);
    // Open the watch while the writers are busy.
    wait_for("some writes", Duration::from_secs(30), || (s.revision() >= 40).then_some(()));
    let mut w = s.watch(&format!("{SERVICES}?watch=true"));
    let mut listed = BTreeMap::new();
    let bookmark = loop {
        let e = w.next();
        match e["type"].as_str().unwrap() {
            "ADDED" => {
                listed.insert(name_of(&e["object"]).to_string(), rv(&e["object"]));
            }
            "BOOKMARK" => break rv(&e["object"]),
            other => panic!("{other} before the initial BOOKMARK: {e}"),
        }
    };
    assert!(listed.values().all(|r| *r <= bookmark));
    assert!(listed.len() >= 30, "the list had only {} objects", listed.len());
    let acked: BTreeMap<String, u64> =
        writers.into_iter().flat_map(|t| t.join().unwrap()).collect();
    let mut last = bookmark;
    let mut seen = listed.clone();
    while seen.len() < acked.len() {
        let e = w.next_change();
        assert_eq!(e["type"], "ADDED", "{e}");
        let r = rv(&e["object"]);
        assert!(r > last, "event at {r} after {last}: out of order, duplicated or already listed");
        last = r;
        assert!(seen.insert(name_of(&e["object"]).to_string(), r).is_none(), "{e} twice");
    }
    assert_eq!(seen, acked);
    assert_eq!(w.next_within(Duration::from_millis(300)), None);
}

/// Writes `n` objects, one revision each, from 8 threads.
fn many_revisions(s: &Server, n: usize) {
    let per = n / 8;
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let addr = s.addr.clone();
            let token = s.token.clone();
            std::thread::spawn(move || {
                for i in 0..per {
                    let name = format!("h{t}-{i}");
                    let body = service(&name).to_string();
                    let r = request(
                        &addr,
                        "PUT",
                        &svc_path(&name),
                        Some(&token),
                        &[("Content-Type", "application/json")],
                        Some(body.as_bytes()),
                    )
                    .unwrap();
                    assert_eq!(r.status, 201, "{}", r.text());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn a_watch_opened_right_after_a_restart_delivers_what_is_there() {
    let mut s = Server::start();
    // History the restarted server's watch cache has to replay: more than a watch reads per
    // wake-up (512).
    many_revisions(&s, 2400);
    let mut stalls = Vec::new();
    for round in 0..5 {
        s.restart();
        let fresh = s.put_json(
            &svc_path("fresh"),
            &service_labeled("fresh", json!({ "round": round.to_string() })),
        );
        let r = rv(&fresh.json());
        let mut w = s.watch(&format!("{SERVICES}?watch=true&resourceVersion={}", r - 1));
        let e = w.next_within(Duration::from_secs(3));
        if !e.as_ref().is_some_and(|e| e["type"] != "BOOKMARK" && rv(&e["object"]) == r) {
            stalls.push(format!("round {round}: watch from {} got {e:?} within 3s", r - 1));
        }
    }
    assert!(stalls.is_empty(), "{stalls:?}");
}
