//! iceoryx2's publish-subscribe as a peer of `benches/ipc.rs`: this binary
//! runs the bench's roles (`common/ipc_roles.rs`: the same environment,
//! events, pacing and recorder) over an iceoryx2 service, so the bench
//! starts, paces and times its processes exactly as it does ringbus's.
//!
//! Configured for what the bench asks of every transport, no event lost:
//! no safe overflow, a publisher that retries until delivered, and room for
//! the ring's 4,096 events in each subscriber's buffer. Events are loaned
//! from the publisher's shared memory, written there and sent (`loan_uninit`,
//! `write_payload`, `send`); the subscriber reads them in place. The shapes
//! with more processes than cores poll and yield, as ringbus's yielding
//! wait does; 1P->1C busy-polls. (Pub-sub has no blocking receive of its
//! own: a sleeping subscriber needs iceoryx2's event service beside it.)
//!
//! Run by the bench, never by hand: `RINGBUS_IPC_BENCH_ROLE` names the role.

#[path = "../../../benches/common/ipc_roles.rs"]
mod ipc_roles;

use std::fmt::Debug;
use std::time::{Duration, Instant};

use iceoryx2::prelude::*;
use ipc_roles::*;

fn main() {
    let role = std::env::var(ROLE).expect("run by benches/ipc.rs (--peer iceoryx2=BINARY)");
    let (what, r) = parse_role(&role);
    // iceoryx2 logs at info by default; the bench reads this process's
    // stdout line by line.
    set_log_level(LogLevel::Error);
    match r.size {
        8 => child::<[u64; 1]>(&what, &r),
        64 => child::<[u64; 8]>(&what, &r),
        _ => child::<[u64; 128]>(&what, &r),
    }
}

fn child<E: Ev + Debug + ZeroCopySend + 'static>(what: &str, r: &Role) {
    let per_producer = r.events / r.shape.producers();
    let total = per_producer * r.shape.producers();
    let node = NodeBuilder::new().create::<ipc::Service>().unwrap();
    // One service per run: the bench's temporary directory names it.
    let name = format!(
        "ringbus-bench/{}",
        r.dir.file_name().unwrap().to_string_lossy()
    );
    let service = node
        .service_builder(&name.as_str().try_into().unwrap())
        .publish_subscribe::<E>()
        .enable_safe_overflow(false)
        .subscriber_max_buffer_size(CAPACITY)
        .max_subscribers(r.shape.consumers())
        .max_publishers(r.shape.producers() as usize)
        .history_size(0)
        .open_or_create()
        .unwrap();
    let spin = r.shape.spins();
    match what {
        "producer" => {
            let publisher = service
                .publisher_builder()
                .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
                .create()
                .unwrap();
            println!("READY");
            wait_for_go(&r.dir);
            for i in 0..per_producer {
                if r.latency {
                    pace(spin);
                }
                let mut ev = E::zeroed();
                ev.stamp(stamp_ns(r.latency), r.id << 40 | i);
                let sample = publisher.loan_uninit().unwrap().write_payload(ev);
                sample.send().unwrap();
            }
        }
        "consumer" => {
            let subscriber = service
                .subscriber_builder()
                .buffer_size(CAPACITY)
                .create()
                .unwrap();
            println!("READY");
            let mut rec = Recorder::new(total, r.latency);
            // A sample that never comes (seen here once in a fan-out run)
            // must not hang the bench: after 3 s without one, report what
            // came and say what did not.
            let mut last = Instant::now();
            let mut empty = 0u32;
            while !rec.done() {
                match subscriber.receive().unwrap() {
                    Some(sample) => {
                        rec.see(sample.payload().ts());
                        empty = 0;
                    }
                    None => {
                        empty += 1;
                        if empty % 4096 == 0 {
                            if empty == 4096 {
                                last = Instant::now();
                            } else if last.elapsed() > Duration::from_secs(3) {
                                let lost = rec.give_up();
                                eprintln!(
                                    "iceoryx2 consumer {}: {lost} of {total} samples never \
                                     came (3 s without one); the rate is over the rest",
                                    r.id
                                );
                                break;
                            }
                        }
                        if spin {
                            std::hint::spin_loop()
                        } else {
                            std::thread::yield_now()
                        }
                    }
                }
            }
            rec.print();
        }
        other => panic!("unknown role {other:?}"),
    }
}
