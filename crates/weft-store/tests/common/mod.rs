//! Helpers shared by the backends' test files: values, puts and reading watch events with a
//! deadline, for any [`Store`].

#![allow(dead_code)]

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use weft_store::{Event, KeyValue, Precondition, Store, StoreError, WatchStream};

/// How long a test waits for an expected watch event.
pub const WAIT: Duration = Duration::from_secs(20);

pub fn val(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

pub async fn put<S: Store + ?Sized>(store: &S, key: &str, value: &str) -> KeyValue {
    store
        .put(key, val(value), Precondition::None)
        .await
        .unwrap_or_else(|e| panic!("put {key}: {e}"))
}

pub async fn next(watch: &mut WatchStream) -> Option<Result<Event, StoreError>> {
    tokio::time::timeout(WAIT, watch.next()).await.expect("watch produced nothing in time")
}

pub async fn next_event(watch: &mut WatchStream) -> Event {
    match next(watch).await {
        Some(Ok(event)) => event,
        other => panic!("expected an event, got {other:?}"),
    }
}
