//! Tests of the topics a shard owns: seqs, epochs, replay pages, every history bound, idle
//! topics, creation limits and batch preparation.

use super::*;

fn owned_topics(config: BrokerConfig) -> OwnedTopics {
    OwnedTopics::new(&config, 130, 7)
}

fn topics_with_history(history_messages_max: usize) -> OwnedTopics {
    owned_topics(BrokerConfig {
        history_messages_max,
        topics_per_shard_max: 3,
        ..BrokerConfig::default()
    })
}

fn name(text: &str) -> TopicName {
    TopicName::copy_from(text.as_bytes(), 128).unwrap()
}

fn seqs_of(messages: &[Message]) -> Vec<u64> {
    messages
        .iter()
        .map(|message| {
            let value: serde_json::Value = serde_json::from_slice(message.body()).unwrap();
            assert_eq!(value["seq"], message.seq());
            message.seq()
        })
        .collect()
}

fn since(seq: u64) -> Option<Since> {
    Some(Since { seq, epoch: None })
}

/// Proves seqs count 1, 2, 3 per topic and each topic counts on its own.
#[test]
fn seqs_are_per_topic_without_gaps() {
    let mut owned = topics_with_history(8);
    for expected in 1..=5 {
        let published = owned.publish(&name("A"), b"1", None, 0).unwrap();
        assert_eq!(published.message.seq(), expected);
    }
    assert_eq!(
        owned
            .publish(&name("B"), b"1", None, 0)
            .unwrap()
            .message
            .seq(),
        1
    );
}

/// Proves replay at every seam: since = latest, inside history, the oldest kept, before
/// history, ahead of the topic, and none; and a snapshot without since.
#[test]
fn replay_seams() {
    let mut owned = topics_with_history(4);
    for _ in 0..10 {
        owned.publish(&name("A"), b"{}", None, 0).unwrap();
    }
    let mut answer = |since| {
        owned
            .subscribe(&name("A"), 1, since, false, None, 0)
            .unwrap()
    };
    let latest = answer(since(10));
    assert_eq!(
        (latest.latest, latest.reset, latest.messages.len()),
        (10, false, 0)
    );
    assert_eq!(seqs_of(&answer(since(7)).messages), [8, 9, 10]);
    assert_eq!(seqs_of(&answer(since(6)).messages), [7, 8, 9, 10]);
    let before = answer(since(5));
    assert!(before.reset);
    assert_eq!(
        seqs_of(&before.messages),
        [10],
        "reset comes with the latest as a snapshot"
    );
    assert!(answer(since(11)).reset);
    let plain = answer(None);
    assert_eq!(
        (plain.latest, plain.reset, plain.messages.len()),
        (10, false, 0)
    );
    let snapshot = owned.subscribe(&name("A"), 1, None, true, None, 0).unwrap();
    assert_eq!(seqs_of(&snapshot.messages), [10]);
}

/// Proves a `since` of another epoch is answered with a reset, never a replay, and a topic
/// forgotten and created again has a new epoch.
#[test]
fn a_foreign_epoch_gets_a_reset() {
    let mut owned = owned_topics(BrokerConfig {
        topic_idle_ms: 1000,
        ..BrokerConfig::default()
    });
    for _ in 0..5 {
        owned.publish(&name("A"), b"1", None, 0).unwrap();
    }
    let first = owned
        .subscribe(&name("A"), 0, None, false, None, 0)
        .unwrap();
    let same = Some(Since {
        seq: 3,
        epoch: Some(first.epoch),
    });
    let replay = owned
        .subscribe(&name("A"), 0, same, false, None, 0)
        .unwrap();
    assert_eq!(
        (replay.reset, seqs_of(&replay.messages)),
        (false, vec![4, 5])
    );
    let other = Some(Since {
        seq: 3,
        epoch: Some(Epoch(first.epoch.0 ^ 1)),
    });
    let reset = owned
        .subscribe(&name("A"), 0, other, false, None, 0)
        .unwrap();
    assert_eq!((reset.reset, seqs_of(&reset.messages)), (true, vec![5]));
    owned.unsubscribe(b"A", 0, 0);
    owned.expire_idle(5_000, 10);
    assert_eq!(owned.topic_count(), 0);
    owned.publish(&name("A"), b"1", None, 5_000).unwrap();
    let again = owned
        .subscribe(&name("A"), 0, None, false, None, 5_000)
        .unwrap();
    assert_ne!(again.epoch, first.epoch);
    assert_eq!(again.latest, 1);
}

/// Proves a long replay comes in pages, each asked for on its own, going on through what is
/// published meanwhile up to the latest, and that a page whose start left history (or of
/// another epoch) is reported lost with the latest as a snapshot.
#[test]
fn replays_come_in_pages() {
    let mut owned = topics_with_history(1024);
    for _ in 0..200 {
        owned.publish(&name("A"), b"1", None, 0).unwrap();
    }
    let answer = owned
        .subscribe(&name("A"), 0, since(10), false, None, 0)
        .unwrap();
    let mut seqs = seqs_of(&answer.messages);
    assert_eq!(seqs.len(), REPLAY_PAGE_MESSAGES_MAX);
    let mut next = answer.replay_next;
    // More are published meanwhile: the replay goes on through them.
    owned.publish(&name("A"), b"1", None, 0).unwrap();
    while let Some(from) = next {
        let page = owned.replay_page(&name("A"), answer.epoch, from);
        assert!(!page.lost);
        assert_eq!(page.latest, 201);
        seqs.extend(seqs_of(&page.messages));
        next = page.next;
    }
    assert_eq!(seqs, (11..=201).collect::<Vec<_>>());
    let page = owned.replay_page(&name("A"), answer.epoch, 1);
    assert!(!page.lost, "history keeps 1,024");
    let page = owned.replay_page(&name("A"), Epoch(answer.epoch.0 ^ 1), 11);
    assert!(page.lost, "another epoch");
    assert_eq!(seqs_of(&page.messages), [201], "the latest as a snapshot");
}

/// Proves history obeys its per-topic bounds, keeping at least the latest message.
#[test]
fn history_is_bounded_per_topic() {
    let mut owned = owned_topics(BrokerConfig {
        history_messages_max: 100,
        history_bytes_max: 1000,
        ..BrokerConfig::default()
    });
    for _ in 0..20 {
        owned.publish(&name("A"), &[b'1'; 30], None, 0).unwrap();
    }
    let answer = owned
        .subscribe(&name("A"), 0, since(0), false, None, 0)
        .unwrap();
    assert!(answer.reset);
    assert!(owned.history_bytes() <= 1000);
    let answer = owned
        .subscribe(&name("A"), 0, since(19), false, None, 0)
        .unwrap();
    assert_eq!(seqs_of(&answer.messages), [20]);
}

/// Proves the shard-wide budget counts every topic's newest message: 300 topics with one
/// 10 KiB message each stay within a 64 KiB budget by evicting the oldest topics' messages
/// (which then offer no snapshot), and the topic just published keeps its message.
#[test]
fn the_shard_budget_counts_every_newest_message() {
    let mut owned = owned_topics(BrokerConfig {
        history_shard_bytes_max: 64 * 1024,
        ..BrokerConfig::default()
    });
    let data = format!("\"{}\"", "x".repeat(10 * 1024));
    for index in 0..300 {
        owned
            .publish(&name(&format!("T{index}")), data.as_bytes(), None, 0)
            .unwrap();
        assert!(owned.history_bytes() <= 64 * 1024, "topic {index}");
    }
    let newest = owned
        .subscribe(&name("T299"), 0, None, true, None, 0)
        .unwrap();
    assert_eq!(
        seqs_of(&newest.messages),
        [1],
        "the topic just published keeps its message"
    );
    let oldest = owned
        .subscribe(&name("T0"), 0, None, true, None, 0)
        .unwrap();
    assert!(
        oldest.messages.is_empty(),
        "the oldest topic gave its message up"
    );
}

/// Proves the shard-wide budget holds under many topics of many messages, and the order it
/// evicts in stays compact.
#[test]
fn shard_history_budget_over_many_topics() {
    let mut owned = owned_topics(BrokerConfig {
        history_shard_bytes_max: 20_000,
        ..BrokerConfig::default()
    });
    for round in 0..500 {
        for topic in ["A", "B", "C"] {
            owned.publish(&name(topic), &[b'1'; 40], None, 0).unwrap();
            assert!(owned.history_bytes() <= 20_000, "round {round}");
        }
    }
    assert!(owned.eviction_order.len() <= 2 * owned.kept_count + 64);
    let answer = owned
        .subscribe(&name("C"), 0, since(499), false, None, 0)
        .unwrap();
    assert_eq!(seqs_of(&answer.messages), [500], "the latest is kept");
}

/// Proves the topic limit refuses a new topic but not an existing one, and that a topic
/// subscribed but never published is forgotten RESERVATION_MS after its last subscriber left.
#[test]
fn topic_limit_and_forgetting() {
    let mut owned = topics_with_history(0);
    for topic in ["A", "B", "C"] {
        owned
            .subscribe(&name(topic), 0, None, false, None, 0)
            .unwrap();
    }
    assert_eq!(
        owned.publish(&name("D"), b"1", None, 0).unwrap_err(),
        OwnerError::TooManyTopics
    );
    owned.publish(&name("A"), b"1", None, 0).unwrap();
    owned.unsubscribe(b"B", 0, 0);
    owned.unsubscribe(b"A", 0, 0);
    owned.expire_idle(RESERVATION_MS - 1, 100);
    assert_eq!(
        owned.topic_count(),
        3,
        "B is kept a while (a poller comes back)"
    );
    owned.expire_idle(RESERVATION_MS, 100);
    assert_eq!(owned.topic_count(), 2, "B is forgotten, A has a message");
    assert_eq!(
        owned
            .publish(&name("D"), b"1", None, 0)
            .unwrap()
            .message
            .seq(),
        1
    );
    assert_eq!(
        owned
            .publish(&name("C"), b"1", None, 0)
            .unwrap()
            .message
            .seq(),
        1
    );
}

/// Proves idle topics are forgotten (no subscribers, no publish for topic_idle_ms), busy or
/// subscribed ones are not, and the sweep visits a bounded number of topics per call.
#[test]
fn idle_topics_are_forgotten() {
    let mut owned = owned_topics(BrokerConfig {
        topic_idle_ms: 1000,
        ..BrokerConfig::default()
    });
    for index in 0..100 {
        owned
            .publish(&name(&format!("T{index}")), b"1", None, 0)
            .unwrap();
    }
    owned
        .subscribe(&name("T7"), 3, None, false, None, 0)
        .unwrap();
    owned.publish(&name("T8"), b"1", None, 900).unwrap();
    owned.expire_idle(999, 1000);
    assert_eq!(owned.topic_count(), 100, "not idle for long enough");
    owned.expire_idle(1000, 10);
    assert_eq!(owned.topic_count(), 90, "ten visited");
    owned.expire_idle(1000, 1000);
    assert_eq!(
        owned.topic_count(),
        2,
        "T7 is subscribed, T8 published at 900"
    );
    assert!(owned.history_bytes() > 0);
    assert_eq!(owned.topics_expired, 98);
}

/// Proves the topics a batch's prepare created are forgotten soon when no message came (the
/// batch was refused by another owner), not held for topic_idle_ms; a committed one stays.
#[test]
fn reservations_of_refused_batches_are_forgotten() {
    let mut owned = owned_topics(BrokerConfig::default());
    let topics = [name("R1"), name("R2"), name("R3")];
    owned.prepare(&topics, Some(1), 0).unwrap();
    owned.publish(&name("R3"), b"1", Some(1), 0).unwrap();
    assert_eq!(owned.topic_count(), 3);
    owned.expire_idle(RESERVATION_MS - 1, 100);
    assert_eq!(owned.topic_count(), 3, "a batch may still commit");
    owned.expire_idle(RESERVATION_MS, 100);
    assert_eq!(owned.topic_count(), 1, "only R3 got a message");
    assert_eq!(owned.topics_expired, 2);
}

/// Proves one client cannot create topics past its bucket (a burst, then the refill rate),
/// while another client and the server's own feed still can.
#[test]
fn topic_creation_is_limited_per_client() {
    let mut owned = owned_topics(BrokerConfig {
        topic_creations_per_second: 10,
        topic_creations_burst: 100,
        ..BrokerConfig::default()
    });
    let flooder = Some(1);
    for index in 0..100 {
        owned
            .publish(&name(&format!("F{index}")), b"1", flooder, 0)
            .unwrap();
    }
    assert_eq!(
        owned.publish(&name("F100"), b"1", flooder, 0).unwrap_err(),
        OwnerError::CreationRateExceeded
    );
    owned.publish(&name("F0"), b"1", flooder, 0).unwrap();
    owned.publish(&name("Other"), b"1", Some(2), 0).unwrap();
    owned.publish(&name("Feed"), b"1", None, 0).unwrap();
    owned.publish(&name("F100"), b"1", flooder, 100).unwrap();
    assert_eq!(owned.creations_refused, 1);
}

/// Proves preparing a batch creates all its new topics or none.
#[test]
fn preparing_a_batch_is_all_or_nothing() {
    let mut owned = topics_with_history(8);
    owned.publish(&name("A"), b"1", None, 0).unwrap();
    let batch = [name("A"), name("B"), name("C"), name("D")];
    assert_eq!(
        owned.prepare(&batch, None, 0).unwrap_err(),
        OwnerError::TooManyTopics
    );
    assert_eq!(owned.topic_count(), 1, "none created");
    owned.prepare(&batch[..3], None, 0).unwrap();
    assert_eq!(owned.topic_count(), 3);
}

/// Proves the shard set tracks shards past the first word.
#[test]
fn shard_set() {
    let mut set = ShardSet::new(130);
    for shard in [0, 63, 64, 129] {
        set.insert(shard);
    }
    assert_eq!(set.iter().collect::<Vec<_>>(), [0, 63, 64, 129]);
    set.remove(63);
    assert_eq!(set.iter().collect::<Vec<_>>(), [0, 64, 129]);
    for shard in [0, 64, 129] {
        set.remove(shard);
    }
    assert!(set.is_empty());
}

/// Proves a clustered owner keeps JetStream's seqs: every topic is of the cluster's epoch, a
/// seq seen twice is dropped, the history replays across consecutive seqs only (a hole starts
/// it anew and is counted), and a new epoch starts every topic again at 0.
#[test]
fn clustered_owner_keeps_jetstreams_seqs() {
    let mut owned = topics_with_history(8);
    owned.set_cluster_epoch(Epoch(42));
    let seq_of = |published: Option<Published<'_>>| published.map(|p| p.message.seq());
    assert_eq!(
        seq_of(owned.ingest(&name("A"), 5, b"5", 0).unwrap()),
        Some(5)
    );
    assert_eq!(
        seq_of(owned.ingest(&name("A"), 6, b"6", 0).unwrap()),
        Some(6)
    );
    assert_eq!(seq_of(owned.ingest(&name("A"), 6, b"6", 0).unwrap()), None);
    assert_eq!(seq_of(owned.ingest(&name("A"), 4, b"4", 0).unwrap()), None);
    assert_eq!(owned.ingest_gaps, 0, "the first seq seen starts the topic");
    let answer = owned
        .subscribe(&name("A"), 0, since(5), false, None, 0)
        .unwrap();
    assert_eq!((answer.epoch, answer.latest), (Epoch(42), 6));
    assert_eq!(seqs_of(&answer.messages), [6]);
    assert!(!answer.reset);

    assert_eq!(
        seq_of(owned.ingest(&name("A"), 9, b"9", 0).unwrap()),
        Some(9)
    );
    assert_eq!(owned.ingest_gaps, 1);
    let answer = owned
        .subscribe(&name("A"), 0, since(6), false, None, 0)
        .unwrap();
    assert!(answer.reset, "no replay across the hole");
    assert_eq!(seqs_of(&answer.messages), [9]);

    let restarted = owned.restart_epoch(Epoch(43));
    assert_eq!(restarted, [(name("A"), vec![0])]);
    assert_eq!(
        seq_of(owned.ingest(&name("A"), 1, b"1", 0).unwrap()),
        Some(1)
    );
    let answer = owned
        .subscribe(&name("A"), 0, None, false, None, 0)
        .unwrap();
    assert_eq!((answer.epoch, answer.latest), (Epoch(43), 1));
}
