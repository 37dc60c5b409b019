//! Throwaway NATS servers for cluster-mode tests: one `nats-server -js` on a free loopback port
//! with its own store dir, or a real three-server cluster (routes, JetStream on each, a meta
//! leader elected) for R=3 streams. Every server is a child of this process, killed (-9) when
//! dropped and also when this process dies (`PR_SET_PDEATHSIG`). A missing `nats-server` is a
//! failure with a clear message, never a skip.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tempfile::TempDir;

pub use super::ports::free_port;

/// How long a server (or a cluster's JetStream) may take to come up on a busy machine.
const START_DEADLINE: Duration = Duration::from_secs(60);

/// The `nats-server` binary: `EDDY_TEST_NATS_SERVER` or the one on `PATH` (Debian's is in
/// /usr/sbin, which a non-root `PATH` may lack).
fn nats_server_binary() -> String {
    if let Ok(bin) = std::env::var("EDDY_TEST_NATS_SERVER") {
        return bin;
    }
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .map(|dir| dir.join("nats-server"))
        .find(|bin| bin.is_file())
        .map(|bin| bin.display().to_string())
        .unwrap_or_else(|| {
            panic!(
                "nats-server not found (on PATH or in /usr/sbin): the cluster tests need a real \
                 NATS server with JetStream. Install it (apt-get install nats-server, 2.9 or \
                 newer) or set EDDY_TEST_NATS_SERVER=/path/to/nats-server."
            )
        })
}

/// Spawns `command` so that it is killed when this process dies, even by a panic or a signal.
pub fn spawn_tied(command: &mut Command) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn()
}

/// One `nats-server` process.
struct Server {
    name: String,
    child: Option<Child>,
    port: u16,
    monitor: u16,
    log: std::path::PathBuf,
}

impl Server {
    fn spawn(store: &Path, name: &str, port: u16, monitor: u16, extra: &[String]) -> Server {
        std::fs::create_dir_all(store).expect("NATS store dir");
        let log = store.join("nats-server.log");
        let mut command = Command::new(nats_server_binary());
        command
            .args(["-js", "-a", "127.0.0.1", "-n", name])
            .arg("-p")
            .arg(port.to_string())
            .arg("-m")
            .arg(monitor.to_string())
            .arg("-sd")
            .arg(store)
            .arg("-l")
            .arg(&log)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = spawn_tied(&mut command)
            .unwrap_or_else(|e| panic!("cannot start nats-server ({command:?}): {e}"));
        Server {
            name: name.to_owned(),
            child: Some(child),
            port,
            monitor,
            log,
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Waits until the server accepts clients (its INFO line arrives) and its monitor's
    /// `/healthz` answers 200, which 2.9 gives once JetStream is up and, in a cluster, current
    /// with a meta leader.
    fn wait_healthy(&mut self) {
        let start = Instant::now();
        loop {
            if let Some(child) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "nats-server on port {} exited at start ({status}):\n{}",
                    self.port,
                    self.log_tail()
                );
            }
            if accepts_clients(self.port) && http_status(self.monitor, "/healthz") == Some(200) {
                return;
            }
            assert!(
                start.elapsed() < START_DEADLINE,
                "nats-server on port {} not healthy after {START_DEADLINE:?}:\n{}",
                self.port,
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether a NATS server on `port` greets a new connection with its INFO line.
fn accepts_clients(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut greeting = [0u8; 4];
    stream.read_exact(&mut greeting).is_ok() && &greeting == b"INFO"
}

/// The status code of a plain HTTP GET of `path` on loopback `port` (None: no answer).
fn http_status(port: u16, path: &str) -> Option<u16> {
    http_get(port, path).map(|(status, _)| status)
}

/// Status and body of a plain HTTP/1.0 GET of `path` on loopback `port` (None: no answer).
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_owned());
    Some((status, body))
}

/// A single throwaway `nats-server -js` on a free loopback port with its own store dir.
pub struct ThrowawayNats {
    server: Server,
    _dir: TempDir,
}

impl ThrowawayNats {
    /// Starts a server and waits until it (and its JetStream) is up.
    pub fn start() -> ThrowawayNats {
        let dir = TempDir::new().expect("temp dir");
        let name = format!("eddy-test-{}", free_port());
        let mut server = Server::spawn(dir.path(), &name, free_port(), free_port(), &[]);
        server.wait_healthy();
        ThrowawayNats { server, _dir: dir }
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// kill -9 of the server.
    pub fn kill(&mut self) {
        self.server.kill();
    }
}

/// The NATS server for tests that need one: `EDDY_TEST_NATS_URL` when set (scripts/test.sh
/// starts one for the whole run), else one throwaway server for this test process, started on
/// first use and killed when the process exits.
pub fn nats_url() -> String {
    if let Ok(url) = std::env::var("EDDY_TEST_NATS_URL")
        && !url.is_empty()
    {
        return url;
    }
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        // Started from a thread that lives as long as the process, so that the parent-death
        // signal comes at process exit and not when some test's runtime thread ends.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let nats = ThrowawayNats::start();
            let pid = nats.server.child.as_ref().expect("running").id();
            let _ = PROCESS_WIDE.set((pid, nats._dir.path().to_owned()));
            // SAFETY: registers a plain `extern "C"` function, once.
            unsafe { libc::atexit(stop_process_wide) };
            tx.send(nats.url()).expect("send the URL");
            loop {
                std::thread::park();
            }
        });
        rx.recv().expect("the process-wide nats-server started")
    })
    .clone()
}

/// The process-wide server's pid and store dir, for [`stop_process_wide`].
static PROCESS_WIDE: OnceLock<(u32, std::path::PathBuf)> = OnceLock::new();

/// At exit: kills the process-wide server and removes its store (no destructor of the parked
/// thread that owns it ever runs).
extern "C" fn stop_process_wide() {
    if let Some((pid, dir)) = PROCESS_WIDE.get() {
        // SAFETY: signals and reaps the child this process started.
        unsafe {
            libc::kill(*pid as libc::pid_t, libc::SIGKILL);
            libc::waitpid(*pid as libc::pid_t, std::ptr::null_mut(), 0);
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A three-server (or n-server) NATS cluster on loopback: routes between all, JetStream on
/// each, ready once an R=n stream can be created.
pub struct NatsCluster {
    servers: Vec<Server>,
    _dir: TempDir,
}

impl NatsCluster {
    /// Starts `n` servers as one cluster and waits until JetStream has a meta leader and
    /// accepts an R=`n` stream.
    pub async fn start(n: usize) -> NatsCluster {
        let dir = TempDir::new().expect("temp dir");
        let cluster_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let routes = cluster_ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let cluster_name = format!("eddy-test-{}", cluster_ports[0]);
        let servers: Vec<Server> = cluster_ports
            .iter()
            .enumerate()
            .map(|(i, cport)| {
                let extra = vec![
                    "--cluster".to_owned(),
                    format!("nats://127.0.0.1:{cport}"),
                    "--routes".to_owned(),
                    routes.clone(),
                    "--cluster_name".to_owned(),
                    cluster_name.clone(),
                ];
                let store = dir.path().join(format!("n{i}"));
                let name = format!("{cluster_name}-n{i}");
                Server::spawn(&store, &name, free_port(), free_port(), &extra)
            })
            .collect();
        let mut cluster = NatsCluster { servers, _dir: dir };
        // Blocking waits of a few seconds at most, before anything else of the test runs.
        for server in &mut cluster.servers {
            server.wait_healthy();
        }
        cluster.wait_for_replicated_streams(n).await;
        cluster
    }

    /// Retries creating (and then deletes) an R=`replicas` probe stream until JetStream takes it.
    async fn wait_for_replicated_streams(&self, replicas: usize) {
        let start = Instant::now();
        let probe = format!("eddy_probe_{}", self.servers[0].port);
        let mut last_error = String::new();
        while start.elapsed() < START_DEADLINE {
            match try_stream(&self.urls(), &probe, replicas).await {
                Ok(()) => return,
                Err(e) => last_error = e,
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let logs: Vec<String> = self.servers.iter().map(Server::log_tail).collect();
        panic!(
            "the NATS cluster never accepted an R={replicas} stream: {last_error}\n{}",
            logs.join("\n----\n")
        );
    }

    /// The client URLs of every server (killed ones included), in order.
    pub fn urls(&self) -> Vec<String> {
        self.servers.iter().map(Server::url).collect()
    }

    /// The client URLs comma-separated, as `EDDY_NATS_URL` takes them.
    pub fn url_list(&self) -> String {
        self.urls().join(",")
    }

    /// kill -9 of server `i`.
    pub fn kill(&mut self, i: usize) {
        self.servers[i].kill();
    }

    /// The server leading the first stream whose name contains `needle` (case-insensitive),
    /// as the monitor's `/jsz` of a live server tells it; `None` when none does.
    pub fn stream_leader(&self, needle: &str) -> Option<usize> {
        let needle = needle.to_lowercase();
        for server in self.servers.iter().filter(|s| s.child.is_some()) {
            let Some((200, body)) = http_get(server.monitor, "/jsz?accounts=true&streams=true")
            else {
                continue;
            };
            let Ok(jsz) = serde_json::from_str::<serde_json::Value>(&body) else {
                continue;
            };
            let streams = jsz["account_details"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|a| a["stream_detail"].as_array().into_iter().flatten());
            for stream in streams {
                let name = stream["name"].as_str().unwrap_or_default().to_lowercase();
                if name.contains(&needle)
                    && let Some(leader) = stream["cluster"]["leader"].as_str()
                {
                    return self.servers.iter().position(|s| s.name == leader);
                }
            }
        }
        None
    }

    /// The last lines of server `i`'s log.
    pub fn log_tail(&self, i: usize) -> String {
        self.servers[i].log_tail()
    }
}

/// Creates stream `name` with `replicas` replicas, publishes one message to it, and deletes it.
async fn try_stream(urls: &[String], name: &str, replicas: usize) -> Result<(), String> {
    let client = connect(urls).await?;
    let js = async_nats::jetstream::new(client);
    let _ = js.delete_stream(name).await;
    js.create_stream(async_nats::jetstream::stream::Config {
        name: name.to_owned(),
        subjects: vec![format!("{name}.>")],
        num_replicas: replicas,
        storage: async_nats::jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| format!("create stream: {e}"))?;
    js.publish(format!("{name}.probe"), "probe".into())
        .await
        .map_err(|e| format!("publish: {e}"))?
        .await
        .map_err(|e| format!("publish ack: {e}"))?;
    js.delete_stream(name)
        .await
        .map_err(|e| format!("delete stream: {e}"))?;
    Ok(())
}

/// A client of any of `urls` (tests of the harness itself use it too).
pub async fn connect(urls: &[String]) -> Result<async_nats::Client, String> {
    let addrs: Vec<async_nats::ServerAddr> = urls
        .iter()
        .map(|u| u.parse().map_err(|e| format!("{u}: {e}")))
        .collect::<Result<_, _>>()?;
    async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .request_timeout(Some(Duration::from_secs(10)))
        .connect(addrs)
        .await
        .map_err(|e| format!("connect to {urls:?}: {e}"))
}
