//! Holding requests for a service with no endpoint while it scales from zero (the activator).
//!
//! A request that the gateway, an outbound listener or an upstream port routes to a service
//! with no endpoint at all (not: every endpoint ejected) waits here instead of failing at once.
//! It waits for the routes to change (`Proxy::apply` wakes every held request, which routes
//! again) and asks the control plane, through the [`Activator`], to start an instance: the api
//! records the request on the Service and the autoscaler scales its deployment from zero to
//! one at once. Held requests then flow to the first ready instance. Only a proxy with an
//! activator (dynamic sidecars and gateways) holds; a static configuration answers 503 at once.
//!
//! Both bounds answer 503 with a body that says which one was hit: at most `--hold-queue`
//! requests wait per service (the next one is refused at once, with `Retry-After`), and each
//! waits at most `--hold-timeout`, never past its own request timeout.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::watch;
// tokio's clock (the same as std's outside tests), so that tests can run on paused time.
use tokio::time::Instant;

/// How often a held request asks again while nothing changes (the first ask may be lost, or the
/// instance may have failed to start).
const ASK_EVERY: Duration = Duration::from_secs(1);

/// Asks the control plane to start an instance of a service.
pub trait Activator: Send + Sync + 'static {
    /// Must not block: spawn the request.
    fn activate(&self, namespace: &str, service: &str);
}

/// A service a request can wait for: (namespace, name).
pub(crate) type ServiceId = (String, String);

#[derive(Default)]
struct Waiting {
    held: usize,
    asked: Option<Instant>,
}

/// Held requests, by service.
pub(crate) struct Holds {
    changed: watch::Sender<u64>,
    waiting: Mutex<HashMap<ServiceId, Waiting>>,
    activator: OnceLock<Arc<dyn Activator>>,
}

impl std::fmt::Debug for Holds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Holds").finish_non_exhaustive()
    }
}

impl Default for Holds {
    fn default() -> Holds {
        Holds {
            changed: watch::Sender::new(0),
            waiting: Mutex::default(),
            activator: OnceLock::new(),
        }
    }
}

impl Holds {
    /// Wakes every held request to route again (the routes changed).
    pub(crate) fn routes_changed(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Whether requests are held at all: only where someone can be asked for an instance
    /// (a dynamic sidecar or gateway). A static configuration never changes, so holding a
    /// request there would only delay its 503.
    pub(crate) fn active(&self) -> bool {
        self.activator.get().is_some()
    }

    /// Sets who is asked to start instances (once; a second call is ignored).
    pub(crate) fn set_activator(&self, a: Arc<dyn Activator>) {
        let _ = self.activator.set(a);
    }

    /// Requests held for `id` now.
    #[cfg(test)]
    pub(crate) fn held(&self, id: &ServiceId) -> usize {
        self.lock().get(id).map_or(0, |w| w.held)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ServiceId, Waiting>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a place in `id`'s queue of at most `limit`; `Err(held)` when it is full. Changes
    /// to the routes from now on wake the returned hold.
    pub(crate) fn enter(&self, id: &ServiceId, limit: usize) -> Result<Hold<'_>, usize> {
        let rx = self.changed.subscribe();
        let mut map = self.lock();
        let w = map.entry(id.clone()).or_default();
        if w.held >= limit {
            return Err(w.held);
        }
        w.held += 1;
        Ok(Hold { holds: self, id: id.clone(), rx })
    }

    /// Asks for an instance of `id` unless someone asked within [`ASK_EVERY`]; returns when
    /// to ask next.
    fn ask(&self, id: &ServiceId, now: Instant) -> Instant {
        let due = {
            let mut map = self.lock();
            let w = map.entry(id.clone()).or_default();
            match w.asked {
                Some(at) if now < at + ASK_EVERY => return at + ASK_EVERY,
                _ => {
                    w.asked = Some(now);
                    now + ASK_EVERY
                }
            }
        };
        if let Some(a) = self.activator.get() {
            a.activate(&id.0, &id.1);
        }
        due
    }
}

/// A held request's place in its service's queue; leaving it (drop) frees the place.
pub(crate) struct Hold<'a> {
    holds: &'a Holds,
    id: ServiceId,
    rx: watch::Receiver<u64>,
}

impl Hold<'_> {
    /// Waits for the routes to change, asking for an instance when due. `false` when
    /// `deadline` passes first.
    pub(crate) async fn changed(&mut self, deadline: Instant) -> bool {
        loop {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            let ask_at = self.holds.ask(&self.id, now);
            let wake = deadline.min(ask_at);
            match tokio::time::timeout_at(wake, self.rx.changed()).await {
                Ok(Ok(())) => return true,
                // The sender lives as long as the proxy, which outlives its requests; should it
                // go, nothing will change any more.
                Ok(Err(_)) => return false,
                Err(_) => {}
            }
        }
    }
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        let mut map = self.holds.lock();
        if let Some(w) = map.get_mut(&self.id) {
            w.held -= 1;
            if w.held == 0 {
                map.remove(&self.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Activator for Count {
        fn activate(&self, _: &str, _: &str) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn id() -> ServiceId {
        ("default".into(), "catalog".into())
    }

    #[test]
    fn the_queue_is_bounded_and_places_are_freed() {
        let holds = Holds::default();
        let a = holds.enter(&id(), 2).unwrap();
        let b = holds.enter(&id(), 2).unwrap();
        assert_eq!(holds.enter(&id(), 2).err(), Some(2));
        // Another service has its own queue.
        let other = holds.enter(&("default".into(), "cart".into()), 2).unwrap();
        drop(a);
        assert_eq!(holds.held(&id()), 1);
        let _c = holds.enter(&id(), 2).unwrap();
        drop((b, other));
        assert_eq!(holds.held(&("default".into(), "cart".into())), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_route_change_wakes_held_requests_and_asks_once_per_second() {
        let holds = Arc::new(Holds::default());
        let count = Arc::new(Count::default());
        holds.set_activator(count.clone());
        let start = Instant::now();
        let (h1, h2) = (holds.clone(), holds.clone());
        let t1 = tokio::spawn(async move {
            let mut h = h1.enter(&id(), 10).unwrap();
            h.changed(start + Duration::from_secs(30)).await
        });
        let t2 = tokio::spawn(async move {
            let mut h = h2.enter(&id(), 10).unwrap();
            h.changed(start + Duration::from_secs(30)).await
        });
        tokio::time::sleep(Duration::from_millis(2500)).await;
        // Two waiters share one ask per second: at 0, 1 and 2 s.
        assert_eq!(count.0.load(Ordering::Relaxed), 3);
        holds.routes_changed();
        assert!(t1.await.unwrap());
        assert!(t2.await.unwrap());
        assert_eq!(holds.held(&id()), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_request_gives_up_at_its_deadline() {
        let holds = Holds::default();
        let mut h = holds.enter(&id(), 1).unwrap();
        let start = Instant::now();
        assert!(!h.changed(start + Duration::from_secs(3)).await);
        assert!(start.elapsed() >= Duration::from_secs(3));
        // Without an activator nothing is asked, and nothing breaks.
        assert!(!h.changed(start).await);
    }
}
