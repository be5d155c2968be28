//! Real `nats-server` processes for the tests: a single server, a 3-node
//! JetStream cluster on 127.0.0.1, servers that want credentials, and a TCP
//! proxy whose connections can be cut. Never a mock.
#![allow(dead_code)]

use std::io::Write;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The event the tests send: which producer, and its running count.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ev {
    pub producer: u32,
    pub n: u64,
}

/// A port nothing listens on now, below the kernel's ephemeral range (so an
/// outgoing connection of another test cannot take it before the server
/// binds it), and different for every call of this process.
pub fn free_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 10_000 + (std::process::id() % 400) as u16 * 50;
    loop {
        let port = base + NEXT.fetch_add(1, Ordering::Relaxed) % 20_000;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn binary() -> String {
    std::env::var("NATS_SERVER").unwrap_or_else(|_| "nats-server".into())
}

/// One `nats-server` process with its config and storage in a temp dir.
pub struct Server {
    pub name: String,
    pub port: u16,
    config: PathBuf,
    child: Option<Child>,
    _dir: Arc<tempfile::TempDir>,
}

impl Server {
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn start(name: &str, port: u16, config: PathBuf, dir: Arc<tempfile::TempDir>) -> Self {
        let mut server = Self {
            name: name.into(),
            port,
            config,
            child: None,
            _dir: dir,
        };
        server.restart();
        server
    }

    /// Starts it again (same port, same storage).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "{} is running", self.name);
        let log = self.config.with_extension("log");
        let _ = std::fs::remove_file(&log);
        let child = Command::new(binary())
            .arg("-c")
            .arg(&self.config)
            .arg("-l")
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run nats-server ({e}): install it (`apt-get install nats-server`, \
                     or `bash ci/nats-server.sh`) or point NATS_SERVER at it"
                )
            });
        self.child = Some(child);
        // Ready when it says so and is still running: a listener alone could
        // be another process on the same port.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let said = std::fs::read_to_string(&log).unwrap_or_default();
            let exited = self.child.as_mut().map(|c| c.try_wait().ok().flatten());
            if let Some(Some(status)) = exited {
                panic!(
                    "{} exited ({status}) while starting; its log:\n{said}",
                    self.name
                );
            }
            if said.contains("Server is ready")
                && TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready in 10 s; its log:\n{said}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no goodbye to clients or peers.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn write_config(dir: &tempfile::TempDir, name: &str, body: &str) -> PathBuf {
    let path = dir.path().join(format!("{name}.conf"));
    let mut file = std::fs::File::create(&path).unwrap();
    file.write_all(body.as_bytes()).unwrap();
    path
}

/// A single JetStream server; `extra` goes into its config (auth blocks).
pub fn single(extra: &str) -> Server {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let port = free_port();
    let store = dir.path().join("js");
    let body = format!(
        "server_name: single\nlisten: 127.0.0.1:{port}\njetstream {{ store_dir: {:?} }}\n{extra}\n",
        store.display()
    );
    let config = write_config(&dir, "single", &body);
    Server::start("single", port, config, dir)
}

/// A single server without JetStream (no `jetstream` block, no `-js`).
pub fn without_jetstream() -> Server {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let port = free_port();
    let body = format!("server_name: plain\nlisten: 127.0.0.1:{port}\n");
    let config = write_config(&dir, "plain", &body);
    Server::start("plain", port, config, dir)
}

/// Three JetStream servers routed into one cluster.
pub fn cluster() -> Vec<Server> {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let routes: Vec<String> = ports
        .iter()
        .map(|(_, c)| format!("nats://127.0.0.1:{c}"))
        .collect();
    let mut servers = Vec::new();
    for (i, (port, cport)) in ports.iter().enumerate() {
        let name = format!("n{}", i + 1);
        let store = dir.path().join(&name);
        let body = format!(
            "server_name: {name}\nlisten: 127.0.0.1:{port}\n\
             jetstream {{ store_dir: {:?} }}\n\
             cluster {{ name: ringbus, listen: 127.0.0.1:{cport}, routes: [{}] }}\n",
            store.display(),
            routes.join(", ")
        );
        let config = write_config(&dir, &name, &body);
        servers.push(Server::start(&name, *port, config, Arc::clone(&dir)));
    }
    servers
}

pub fn urls(servers: &[Server]) -> String {
    servers
        .iter()
        .map(Server::url)
        .collect::<Vec<_>>()
        .join(",")
}

/// A TCP proxy in front of a server whose connections can all be cut.
pub struct Proxy {
    pub port: u16,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    pub fn to(target: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = Arc::new(Mutex::new(Vec::<TcpStream>::new()));
        let tracked = Arc::clone(&open);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                // As the client and the server do: without it, a small write
                // waits for the ack of the one before (Nagle and delayed
                // acks), up to 40 ms, and connections cut more often than
                // that carry little.
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let mut t = tracked.lock().unwrap();
                t.push(client.try_clone().unwrap());
                t.push(server.try_clone().unwrap());
                drop(t);
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Both);
                        let _ = from.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Self { port, open }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Waits (up to 10 s) until `n` connections are open through it, as
    /// after the clients reconnected from an earlier cut.
    pub fn wait_for(&self, n: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let open = self.open.lock().unwrap().len() / 2;
            if open >= n || Instant::now() >= deadline {
                return open;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Cuts every open connection (both ways); returns how many.
    pub fn cut(&self) -> usize {
        let mut open = self.open.lock().unwrap();
        for s in open.iter() {
            let _ = s.shutdown(Shutdown::Both);
        }
        let n = open.len() / 2;
        open.clear();
        n
    }
}
