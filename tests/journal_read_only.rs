//! The journal under a directory that turns read-only. On its own test
//! binary: as root it forks a child (run as `nobody`), and a fork while
//! another test's journal is open hands the child that journal's lock until
//! the child's `exec`, so a test reopening its journal at that moment would
//! find it locked.
#![cfg(feature = "journal")]

#[path = "common/journal.rs"]
mod fixtures;

use std::fs;
use std::path::Path;

use fixtures::*;
use ringbus::journal::{Journal, JournalError, JournalOptions, Postcard};
use ringbus::Blocking;

/// A directory where files cannot be created: refused at `Journal::open`
/// with an error naming the file (a read-only open still reads it), and a
/// directory that turns read-only under a running bus stops it through the
/// failure policy. Root ignores permission bits, so as root the check runs
/// in a child process as user `nobody`, in a directory it owns.
#[test]
fn a_read_only_directory_halts_the_bus_with_a_clear_error() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    if let Ok(dir) = std::env::var("RINGBUS_READ_ONLY_DIR") {
        return read_only_child(Path::new(&dir));
    }
    let root = tempfile::Builder::new()
        .prefix("ringbus-ro")
        .tempdir()
        .unwrap();
    let dir = root.path().join("journal");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(root.path(), fs::Permissions::from_mode(0o755)).unwrap();
    // SAFETY: geteuid has no preconditions.
    let as_root = unsafe { libc::geteuid() } == 0;
    if !as_root {
        return read_only_child(&dir);
    }
    std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
    // `nobody` may not reach this binary (CI clones into a private
    // directory): run a copy from the world-readable temporary directory.
    let exe = root.path().join("journal-tests");
    fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
    let output = std::process::Command::new(&exe)
        .args([
            "--exact",
            "a_read_only_directory_halts_the_bus_with_a_clear_error",
            "--nocapture",
        ])
        .env("RINGBUS_READ_ONLY_DIR", &dir)
        .uid(65534)
        .gid(65534)
        .output()
        .expect("run the check as nobody");
    let out = String::from_utf8_lossy(&output.stdout);
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "child failed:\n{out}\n{err}");
    assert!(
        out.contains("READ-ONLY CHECK PASSED"),
        "the child did not run the check:\n{out}\n{err}"
    );
}

fn read_only_child(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    // A journal written earlier, then the directory made read-only.
    write_orders(dir, 5, JournalOptions::default());
    fs::remove_file(dir.join("LOCK")).unwrap();
    fs::set_permissions(dir, fs::Permissions::from_mode(0o555)).unwrap();
    match Journal::open(dir) {
        Err(e @ JournalError::Io { .. }) => {
            let message = e.to_string();
            assert!(
                message.contains("LOCK") && message.contains("Permission denied"),
                "{message}"
            );
        }
        other => panic!("expected a refusal naming the lock file, got {other:?}"),
    }
    let reader = Journal::open_read_only(dir).unwrap();
    assert_eq!(read_all(&reader).len(), 5);
    assert!(matches!(
        reader.writer::<Order, _>(Postcard, JournalOptions::default()),
        Err(JournalError::ReadOnly)
    ));
    // Now the directory turns read-only under a bus about to start a new
    // segment.
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    let journal = Journal::open(dir).unwrap();
    fs::set_permissions(dir, fs::Permissions::from_mode(0o555)).unwrap();
    let options = JournalOptions::default().segment_bytes(64);
    let mut producer = ringbus::single_producer(16, Order::default, Blocking)
        .journal_to(journal.writer(Postcard, options).unwrap())
        .build();
    let mut refused = false;
    for n in 5..1000 {
        if producer.publish(|o| *o = Order::new(0, n)).is_err() {
            refused = true;
            break;
        }
    }
    let report = failed_report(producer.shutdown());
    let failure = report.stages[0]
        .failure
        .as_ref()
        .expect("the journal failed");
    let message = failure.to_string();
    assert!(refused);
    assert!(
        message.contains("create segment") && message.contains("Permission denied"),
        "{message}"
    );
    println!("READ-ONLY CHECK PASSED: {message}");
}
