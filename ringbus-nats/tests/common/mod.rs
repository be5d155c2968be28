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

/// What a [`JsProxy`] does to the requests `$JS.API.STREAM.MSG.GET.*`
/// (reads of a stream's messages) and their answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GetFault {
    /// Answers "no message found" (code 10037), as nats-server does for
    /// any error of its store.
    NoMessage,
    /// Answers "stream not found" (code 10059), as for a deleted stream.
    StreamNotFound,
    /// Drops the request: no answer ever, as for one the user may not
    /// publish.
    Drop,
}

#[derive(Debug, Default)]
struct Faults {
    /// The fault and how many more reads get it (`None`: every one).
    fault: Option<(GetFault, Option<u64>)>,
    /// Reads seen, and reads given a fault.
    reads: u64,
    faulted: u64,
}

/// A proxy in front of a server that speaks enough of the NATS protocol
/// to fail stream reads (`$JS.API.STREAM.MSG.GET.*`) on demand, as a
/// failing store, a deleted stream or a permission would; everything else
/// passes through unchanged. It can also claim an older server version in
/// the server's INFO (a client then reads by sequence, not by subject).
pub struct JsProxy {
    pub port: u16,
    faults: Arc<Mutex<Faults>>,
}

/// The answer of a failed `STREAM.MSG.GET`.
fn get_error(code: u32, err_code: u32, description: &str) -> Vec<u8> {
    format!(
        "{{\"type\":\"io.nats.jetstream.api.v1.stream_msg_get_response\",\
         \"error\":{{\"code\":{code},\"err_code\":{err_code},\"description\":\"{description}\"}}}}"
    )
    .into_bytes()
}

impl JsProxy {
    /// `version`: what the server's INFO says it is (its own if `None`).
    pub fn to(target: u16, version: Option<&str>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let faults = Arc::new(Mutex::new(Faults::default()));
        let shared = Arc::clone(&faults);
        let version = version.map(str::to_owned);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                // Reply subjects of the reads given a fault, and the fault.
                let marked = Arc::new(Mutex::new(std::collections::HashMap::new()));
                let (up_from, up_to) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (faults, up_marked) = (Arc::clone(&shared), Arc::clone(&marked));
                std::thread::spawn(move || {
                    let _ = client_to_server(up_from, up_to, &faults, &up_marked);
                });
                let version = version.clone();
                std::thread::spawn(move || {
                    let _ = server_to_client(server, client, &marked, version.as_deref());
                });
            }
        });
        Self { port, faults }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The next `n` reads get `fault`.
    pub fn fail_next(&self, fault: GetFault, n: u64) {
        self.faults.lock().unwrap().fault = Some((fault, Some(n)));
    }

    /// Every read gets `fault` from now on.
    pub fn fail_all(&self, fault: GetFault) {
        self.faults.lock().unwrap().fault = Some((fault, None));
    }

    /// Reads pass from now on.
    pub fn heal(&self) {
        self.faults.lock().unwrap().fault = None;
    }

    /// (reads seen, reads given a fault).
    pub fn reads(&self) -> (u64, u64) {
        let f = self.faults.lock().unwrap();
        (f.reads, f.faulted)
    }
}

/// Reads one protocol line (with its CRLF) into `line`; false at the end.
fn read_line(from: &mut impl std::io::BufRead, line: &mut Vec<u8>) -> std::io::Result<bool> {
    line.clear();
    Ok(from.read_until(b'\n', line)? > 0)
}

/// The payload size a `PUB`/`HPUB`/`MSG`/`HMSG` line announces (the last
/// field: the total size), if it is one of those.
fn payload_size(fields: &[&str]) -> Option<usize> {
    match fields.first().map(|op| op.to_ascii_uppercase()).as_deref() {
        Some("PUB" | "HPUB" | "MSG" | "HMSG") => fields.last()?.parse().ok(),
        _ => None,
    }
}

fn client_to_server(
    from: TcpStream,
    to: TcpStream,
    faults: &Mutex<Faults>,
    marked: &Mutex<std::collections::HashMap<String, GetFault>>,
) -> std::io::Result<()> {
    use std::io::Read;
    let mut from = std::io::BufReader::new(from);
    let mut out = std::io::BufWriter::new(to.try_clone()?);
    let mut line = Vec::new();
    let result = (|| {
        while read_line(&mut from, &mut line)? {
            let text = String::from_utf8_lossy(&line).into_owned();
            let fields: Vec<&str> = text.split_whitespace().collect();
            let mut payload = Vec::new();
            if let Some(size) = payload_size(&fields) {
                payload.resize(size + 2, 0);
                from.read_exact(&mut payload)?;
            }
            // PUB <subject> <reply> <size> (HPUB: and a header size).
            let read = fields.len() >= 4
                && matches!(fields[0], "PUB" | "HPUB")
                && fields[1].starts_with("$JS.API.STREAM.MSG.GET.");
            let mut drop_it = false;
            if read {
                let mut f = faults.lock().unwrap();
                f.reads += 1;
                if let Some((fault, left)) = f.fault {
                    f.faulted += 1;
                    f.fault = match left {
                        Some(1) => None,
                        Some(n) => Some((fault, Some(n - 1))),
                        None => Some((fault, None)),
                    };
                    if fault == GetFault::Drop {
                        drop_it = true;
                    } else {
                        marked.lock().unwrap().insert(fields[2].to_owned(), fault);
                    }
                }
            }
            if !drop_it {
                out.write_all(&line)?;
                out.write_all(&payload)?;
            }
            if from.buffer().is_empty() {
                out.flush()?;
            }
        }
        Ok(())
    })();
    let _ = out.flush();
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.get_ref().shutdown(Shutdown::Both);
    result
}

fn server_to_client(
    from: TcpStream,
    to: TcpStream,
    marked: &Mutex<std::collections::HashMap<String, GetFault>>,
    version: Option<&str>,
) -> std::io::Result<()> {
    use std::io::Read;
    let mut from = std::io::BufReader::new(from);
    let mut out = std::io::BufWriter::new(to.try_clone()?);
    let mut line = Vec::new();
    let result = (|| {
        while read_line(&mut from, &mut line)? {
            let text = String::from_utf8_lossy(&line).into_owned();
            let fields: Vec<&str> = text.split_whitespace().collect();
            let mut payload = Vec::new();
            if let Some(size) = payload_size(&fields) {
                payload.resize(size + 2, 0);
                from.read_exact(&mut payload)?;
            }
            let fault = match fields.first() {
                Some(&"MSG") if fields.len() >= 4 => marked.lock().unwrap().remove(fields[1]),
                _ => None,
            };
            match fault {
                Some(fault) => {
                    let body = match fault {
                        GetFault::NoMessage => get_error(404, 10037, "no message found"),
                        _ => get_error(404, 10059, "stream not found"),
                    };
                    // MSG <subject> <sid> <size>: the answer, replaced.
                    write!(out, "MSG {} {} {}\r\n", fields[1], fields[2], body.len())?;
                    out.write_all(&body)?;
                    out.write_all(b"\r\n")?;
                }
                None => match (fields.first(), version) {
                    (Some(&"INFO"), Some(version)) => {
                        // `"version":"2.9.10"` -> `"version":"<version>"`.
                        let key = "\"version\":\"";
                        let at = text.find(key).expect("a version in INFO") + key.len();
                        let end = at + text[at..].find('"').unwrap();
                        out.write_all(
                            format!("{}{version}{}", &text[..at], &text[end..]).as_bytes(),
                        )?;
                    }
                    _ => {
                        out.write_all(&line)?;
                        out.write_all(&payload)?;
                    }
                },
            }
            if from.buffer().is_empty() {
                out.flush()?;
            }
        }
        Ok(())
    })();
    let _ = out.flush();
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.get_ref().shutdown(Shutdown::Both);
    result
}
