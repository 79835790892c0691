//! A real `nats-server` with JetStream (Debian's `nats-server`) for the
//! tests of the NATS sink: a free port, its own store directory, restarted
//! where a test says, and stopped on drop.

use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A nats-server with JetStream, its store kept across restarts.
pub struct NatsServer {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts a server; `config` is nats-server configuration text (e.g.
    /// an `authorization` block), or empty. A port another process took
    /// between the choice and the bind is chosen again.
    pub fn start(config: &str) -> NatsServer {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("nats.conf"), config).expect("config");
        let mut server = NatsServer {
            dir,
            port: 0,
            child: None,
        };
        for _ in 0..3 {
            server.port = free_port();
            if server.try_run() {
                return server;
            }
        }
        panic!("nats-server did not start: {}", server.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("nats-server.log")).unwrap_or_default()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Runs nats-server again on its port (after [`NatsServer::stop`]).
    pub fn run(&mut self) {
        assert!(
            self.try_run(),
            "nats-server did not restart: {}",
            self.log()
        );
    }

    /// Runs nats-server under `timeout` (a test killed before its drop
    /// cannot leave it running for long) and waits until it says it is
    /// ready; `false` when it exited (its port taken).
    fn try_run(&mut self) -> bool {
        let mut child = Command::new("timeout")
            .args([
                "--kill-after=5",
                "300",
                "nats-server",
                "-js",
                "-a",
                "127.0.0.1",
            ])
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-sd")
            .arg(self.path("jetstream"))
            .arg("-c")
            .arg(self.path("nats.conf"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.path("nats-server.log")).expect("log"))
            .spawn()
            .expect("nats-server (Debian package nats-server) must be installed");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.log().contains("Server is ready") {
                self.child = Some(child);
                return true;
            }
            if matches!(child.try_wait(), Ok(Some(_))) || Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process id of the running server (`timeout`'s child).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops the server (SIGTERM: JetStream writes its state) and waits.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}
