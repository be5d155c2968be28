//! A `user.signed_up` event fans out to welcome e-mail, CRM and onboarding
//! stages. The CRM is flaky: its stage retries each failure twice, and what
//! still fails lands in a dead-letter channel printed at the end.
//!
//! `cargo run --example user_signup [users]`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use ringbus::{Blocking, DeadLetter, FailurePolicy, Sequence};

#[derive(Debug, Default, Clone)]
struct SignedUp {
    user_id: u64,
    email: String,
}

/// A CRM client that times out on some calls.
struct Crm {
    calls: u64,
    records: u64,
}

impl Crm {
    fn upsert(&mut self, user: &SignedUp) -> Result<(), String> {
        self.calls += 1;
        // Users whose id ends in 7 hit a CRM outage that outlasts the
        // retries; every 10th call times out once and succeeds on retry.
        if user.user_id % 10 == 7 {
            return Err(format!("CRM unavailable for user {}", user.user_id));
        }
        if self.calls % 10 == 0 {
            return Err("CRM timeout".to_owned());
        }
        self.records += 1;
        Ok(())
    }
}

fn main() {
    let users: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let emails = Arc::new(AtomicU64::new(0));
    let onboarded = Arc::new(AtomicU64::new(0));
    let (e, o) = (Arc::clone(&emails), Arc::clone(&onboarded));
    let (dead_letters, letters) = mpsc::channel::<DeadLetter<SignedUp>>();
    let mut crm = Crm {
        calls: 0,
        records: 0,
    };

    // The event carries a `String`, filled in place: each slot keeps its
    // allocation across laps of the ring.
    let mut producer = ringbus::single_producer(256, SignedUp::default, Blocking)
        .thread_name("welcome-email")
        .handle_events_with(move |u: &SignedUp, _seq: Sequence, _eob: bool| {
            assert!(u.email.contains('@'));
            e.fetch_add(1, Ordering::Relaxed);
        })
        .thread_name("crm")
        .on_failure(
            FailurePolicy::dead_letter_to(dead_letters).retry(2, Duration::from_micros(200)),
        )
        .try_handle_events_with(move |u: &SignedUp, _seq: Sequence, _eob: bool| crm.upsert(u))
        .thread_name("onboarding")
        .handle_events_with(move |_u: &SignedUp, _seq: Sequence, _eob: bool| {
            o.fetch_add(1, Ordering::Relaxed);
        })
        .build();

    for user_id in 0..users {
        producer
            .publish(|u| {
                u.user_id = user_id;
                u.email.clear();
                u.email.push_str("user");
                u.email.push_str(&user_id.to_string());
                u.email.push_str("@example.com");
            })
            .expect("bus halted");
    }
    let report = producer.shutdown().expect("a stage failed");

    println!("{users} sign-ups");
    println!("  welcome e-mails sent: {}", emails.load(Ordering::Relaxed));
    println!(
        "  onboarding started:   {}",
        onboarded.load(Ordering::Relaxed)
    );
    let crm_stage = &report.stages[1];
    println!(
        "  CRM: {} recorded, {} retries, {} dead-lettered",
        crm_stage.handled, crm_stage.retried, crm_stage.dead_lettered
    );
    let letters: Vec<_> = letters.try_iter().collect();
    println!("dead letters ({}):", letters.len());
    for letter in letters.iter().take(5) {
        println!(
            "  seq {:>4} user {:>4} <{}>: {}",
            letter.sequence, letter.event.user_id, letter.event.email, letter.failure
        );
    }
    if letters.len() > 5 {
        println!("  ... and {} more", letters.len() - 5);
    }
    assert_eq!(letters.len() as u64, crm_stage.dead_lettered);
    assert_eq!(crm_stage.handled + crm_stage.dead_lettered, users);
    assert!(letters.iter().all(|l| l.event.user_id % 10 == 7));
}
