//! The `Log` interface, checked the same way on both implementations: the local WAL and a
//! JetStream stream on a real nats-server. Records are durable before their after-actions
//! run, after-actions run in LSN order (records and bare actions interleaved as queued), and
//! a reopened log hands back every record after the requested LSN. Then what only the stream
//! does: a leader that takes over fences the old one (JetStream refuses its publishes), a
//! restore's discard empties it, and a missing stream fails the open instead of being made up.

mod common;

use bytes::Bytes;
use common::cluster::unique_name;
use common::nats::nats_url;
use eddy::log::Log;
use eddy::log::stream::Streams;
use eddy::store::Fence;
use eddy::wal::{Record, Wal, WalFailed, WalOptions};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

/// What the after-actions saw, in the order they ran: (tag, outcome).
type Seen = Arc<Mutex<Vec<(u64, Result<(), WalFailed>)>>>;

fn events(n: u64) -> Record {
    Record::Events {
        arrival: n as i64,
        format: 0,
        idempotency_key: Some(format!("key-{n}")),
        first_offset: n,
        body: Bytes::from(format!("[{{\"n\":{n}}}]")),
    }
}

/// Appends `records` (tags 1..) with an after-action each, and a bare action after every
/// second one (tags 1000+); waits until every action ran; answers what they saw.
async fn append_all(log: &dyn Log, records: &[Record]) -> Vec<(u64, Result<(), WalFailed>)> {
    let seen: Seen = Arc::default();
    let mut waits = Vec::new();
    let mut action = |tag: u64| {
        let (done, wait) = oneshot::channel();
        waits.push(wait);
        let seen = seen.clone();
        Box::new(move |outcome: Result<(), WalFailed>| {
            seen.lock().unwrap().push((tag, outcome));
            let _ = done.send(());
        }) as eddy::wal::After
    };
    for (i, record) in records.iter().enumerate() {
        let tag = i as u64 + 1;
        log.append(record, action(tag));
        if tag % 2 == 0 {
            log.after_queued(action(1000 + tag));
        }
    }
    for wait in waits {
        tokio::time::timeout(Duration::from_secs(30), wait)
            .await
            .expect("every after-action runs")
            .expect("after-action ran");
    }
    seen.lock().unwrap().clone()
}

/// The order every log must run actions in: each record's, with the bare action queued after
/// every second record right after it.
fn expected_order(n: u64) -> Vec<u64> {
    let mut order = Vec::new();
    for tag in 1..=n {
        order.push(tag);
        if tag % 2 == 0 {
            order.push(1000 + tag);
        }
    }
    order
}

fn assert_in_order_and_ok(seen: &[(u64, Result<(), WalFailed>)], n: u64) {
    let tags: Vec<u64> = seen.iter().map(|(t, _)| *t).collect();
    assert_eq!(tags, expected_order(n), "after-actions in queue order");
    assert!(
        seen.iter().all(|(_, o)| o.is_ok()),
        "every append succeeded: {seen:?}"
    );
}

/// Records of a reopened log, without the stream's epoch marks.
fn without_epochs(records: Vec<(u64, Record)>) -> Vec<(u64, Record)> {
    records
        .into_iter()
        .filter(|(_, r)| !matches!(r, Record::Epoch { .. }))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_runs_actions_in_order_and_hands_records_back() {
    let dir = tempfile::TempDir::new().unwrap();
    let path = dir.path().join("p");
    let records: Vec<Record> = (1..=9).map(events).collect();
    let opened = Wal::open(&path, WalOptions::default(), 1).unwrap();
    let wal: Box<dyn Log> = Box::new(opened.wal);
    let seen = append_all(&*wal, &records).await;
    assert_in_order_and_ok(&seen, 9);
    assert_eq!(wal.last_lsn(), 9);
    drop(wal);
    let again = Wal::open(&path, WalOptions::default(), 4).unwrap();
    let lsns: Vec<u64> = again.records.iter().map(|(l, _)| *l).collect();
    assert_eq!(lsns, (1..=9).collect::<Vec<_>>());
    assert_eq!(again.records[3].1, records[3]);
}

async fn streams(prefix: &str) -> Streams {
    Streams::connect(&nats_url(), &unique_name(prefix), 1)
        .await
        .expect("connect to the throwaway nats-server")
}

fn fence(epoch: i64) -> Fence {
    Fence {
        node: format!("n{epoch}"),
        epoch,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_runs_actions_in_order_and_hands_records_back() {
    let streams = streams("logc").await;
    streams.create("p").await.unwrap();
    let records: Vec<Record> = (1..=9).map(events).collect();
    let opened = streams.open("p", 1, &fence(1), false).await.unwrap();
    assert!(opened.records.is_empty(), "a new stream holds nothing");
    let log: Box<dyn Log> = Box::new(opened.log);
    // The epoch mark took LSN 1.
    assert_eq!(log.last_lsn(), 1);
    let seen = append_all(&*log, &records).await;
    assert_in_order_and_ok(&seen, 9);
    assert_eq!(log.last_lsn(), 10);
    drop(log);
    let again = streams.open("p", 5, &fence(2), false).await.unwrap();
    let got = without_epochs(again.records);
    let lsns: Vec<u64> = got.iter().map(|(l, _)| *l).collect();
    assert_eq!(lsns, (5..=10).collect::<Vec<_>>(), "records from LSN 5 on");
    assert_eq!(got[0].1, records[3], "LSN 5 is the fourth record");
    streams.delete("p").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_takes_over_fences_the_old_one() {
    let streams = streams("fence").await;
    streams.create("p").await.unwrap();
    let old = streams.open("p", 1, &fence(1), false).await.unwrap().log;
    assert_in_order_and_ok(&append_all(&old, &[events(1), events(2)]).await, 2);

    let new = streams.open("p", 1, &fence(2), false).await.unwrap();
    assert_eq!(
        without_epochs(new.records).len(),
        2,
        "the new leader read the old one's records"
    );
    let new = new.log;
    // The old leader wakes up and appends: JetStream refuses it (its expected last sequence
    // is not the stream's any more); it is answered as failed, and so is all after it.
    let stale = append_all(&old, &[events(3), events(4)]).await;
    assert!(
        stale.iter().all(|(_, o)| o.is_err()),
        "the stale leader's appends fail: {stale:?}"
    );
    assert_in_order_and_ok(&append_all(&new, &[events(5)]).await, 1);
    drop((old, new));

    let all = streams
        .open("p", 1, &fence(3), false)
        .await
        .unwrap()
        .records;
    let kept: Vec<Record> = without_epochs(all.clone())
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    assert_eq!(
        kept,
        vec![events(1), events(2), events(5)],
        "nothing stale in the log"
    );
    let epochs: Vec<Record> = all
        .into_iter()
        .map(|(_, r)| r)
        .filter(|r| matches!(r, Record::Epoch { .. }))
        .collect();
    assert_eq!(
        epochs,
        vec![Record::Epoch { epoch: 1 }, Record::Epoch { epoch: 2 }]
    );
    streams.delete("p").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restores_discard_empties_the_stream_and_lsns_go_on() {
    let streams = streams("discard").await;
    streams.create("p").await.unwrap();
    let log = streams.open("p", 1, &fence(1), false).await.unwrap().log;
    assert_in_order_and_ok(&append_all(&log, &[events(1), events(2)]).await, 2);
    drop(log);
    let opened = streams.open("p", 2, &fence(2), true).await.unwrap();
    assert!(
        without_epochs(opened.records).is_empty(),
        "a discard leaves nothing to replay"
    );
    // LSNs are never reused: the epoch mark follows the discarded records.
    assert_eq!(opened.log.last_lsn(), 4);
    streams.delete("p").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_short_stream_fails_the_open() {
    let streams = streams("missing").await;
    let missing = streams.open("gone", 1, &fence(1), false).await;
    let e = missing.err().expect("a missing stream fails the open");
    assert!(e.to_string().contains("missing"), "{e}");
    // A partition's owner follows the log; a deleted pipeline's stream is gone.
    let followed = streams.follow("gone", 1).await;
    let e = followed.err().expect("a missing stream fails the follow");
    assert!(e.to_string().contains("the stream is missing"), "{e}");
    streams.create("short").await.unwrap();
    // A checkpoint said LSN 7 was covered, but the stream ends before it.
    let short = streams.open("short", 8, &fence(1), false).await;
    let e = short
        .err()
        .expect("a stream that ends early fails the open");
    assert!(
        e.to_string().contains("before the latest checkpoint"),
        "{e}"
    );
    streams.delete("short").await.unwrap();
}
