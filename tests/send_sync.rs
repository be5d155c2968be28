//! The thread-safety the crate docs state for every handle ("Threads and
//! handles"), checked at compile time.

use ringbus::{
    Blocking, BusySpin, EventPoller, Metrics, MultiProducer, MultiProducerSequencer,
    ShutdownReport, SingleProducer, SingleProducerSequencer, Subscription,
};

fn send<T: Send>() {}
fn sync<T: Sync>() {}
fn clone<T: Clone>() {}

/// An event type that is `Send + Sync` (every bus requires it).
type E = String;

#[test]
fn handles_are_send_and_sync_as_documented() {
    send::<SingleProducer<E, BusySpin>>();
    sync::<SingleProducer<E, BusySpin>>();
    send::<MultiProducer<E, Blocking>>();
    sync::<MultiProducer<E, Blocking>>();
    clone::<MultiProducer<E, Blocking>>();
    send::<EventPoller<E, SingleProducerSequencer, Blocking>>();
    sync::<EventPoller<E, MultiProducerSequencer, Blocking>>();
    send::<Subscription<fn(&E, i64, bool)>>();
    sync::<Subscription<fn(&E, i64, bool)>>();
    send::<Metrics>();
    sync::<Metrics>();
    clone::<Metrics>();
    send::<ShutdownReport>();
    send::<ringbus::Failure>();
    sync::<ringbus::Failure>();
    send::<ringbus::SubscribeError>();
    sync::<ringbus::BuildError>();
}
