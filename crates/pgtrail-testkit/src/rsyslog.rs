//! A real rsyslogd (Debian's `rsyslog` and `rsyslog-openssl`) for the
//! tests of the syslog sink: UDP (imudp), TCP with octet counting (imptcp)
//! and TLS requiring a client certificate (imtcp, ossl) on free ports, every
//! message written as one JSON line (`app`, `msgid`, `sd`, `msg`, `raw`)
//! that [`Rsyslog::received`] reads back. Certificates from a [`TestCa`]:
//! `ca.pem`, `server.pem`/`server.key`, `client.pem`/`client.key` in
//! [`Rsyslog::path`].

use std::io::Write;
use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::TestCa;

/// APP-NAME of the message a start-up probe sends.
const PROBE_APP: &str = "testprobe";

/// Longest a test waits for rsyslog to write what it received.
const ARRIVAL: Duration = Duration::from_secs(15);

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A running rsyslogd with three inputs, writing into `received.jsonl`.
pub struct Rsyslog {
    dir: tempfile::TempDir,
    /// Port of the UDP input (imudp).
    pub udp: u16,
    /// Port of the TCP input with octet counting (imptcp).
    pub tcp: u16,
    /// Port of the TLS input (imtcp, ossl, client certificates required).
    pub tls: u16,
    child: Option<Child>,
}

impl Rsyslog {
    pub fn start() -> Rsyslog {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = TestCa::new("rsyslog test CA").expect("ca");
        let server = ca.server(&["localhost"]).expect("server cert");
        let client = ca.server(&["pgtrail-sink"]).expect("client cert");
        let path = |name: &str| dir.path().join(name);
        for (name, text) in [
            ("ca.pem", ca.cert_pem()),
            ("server.pem", server.cert_pem.clone()),
            ("server.key", server.key_pem.clone()),
            ("client.pem", client.cert_pem.clone()),
            ("client.key", client.key_pem.clone()),
        ] {
            std::fs::write(path(name), text).expect("write pem");
        }
        let mut rsyslog = Rsyslog {
            udp: 0,
            tcp: 0,
            tls: 0,
            dir,
            child: None,
        };
        // A port another process took between the choice and the bind is
        // chosen again.
        for _ in 0..3 {
            (rsyslog.udp, rsyslog.tcp, rsyslog.tls) = (free_port(), free_port(), free_port());
            rsyslog.write_config();
            if rsyslog.try_run() {
                return rsyslog;
            }
        }
        panic!("rsyslogd did not start: {}", rsyslog.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("rsyslogd.log")).unwrap_or_default()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write_config(&self) {
        let d = self.dir.path().display();
        let config = format!(
            r#"global(workDirectory="{d}" maxMessageSize="4m"
       parser.escapeControlCharactersOnReceive="off"
       defaultNetstreamDriverCAFile="{d}/ca.pem"
       defaultNetstreamDriverCertFile="{d}/server.pem"
       defaultNetstreamDriverKeyFile="{d}/server.key")
module(load="imudp")
module(load="imptcp")
module(load="imtcp" streamDriver.name="ossl" streamDriver.mode="1" streamDriver.authMode="x509/certvalid")
template(name="line" type="list") {{
  constant(value="{{\"app\":\"") property(name="app-name" format="json")
  constant(value="\",\"msgid\":\"") property(name="msgid" format="json")
  constant(value="\",\"sd\":\"") property(name="structured-data" format="json")
  constant(value="\",\"msg\":\"") property(name="msg" format="json")
  constant(value="\",\"raw\":\"") property(name="rawmsg" format="json")
  constant(value="\"}}\n")
}}
ruleset(name="out") {{
  action(type="omfile" file="{d}/received.jsonl" template="line" asyncWriting="off" flushOnTXEnd="on")
}}
input(type="imudp" address="127.0.0.1" port="{udp}" ruleset="out")
input(type="imptcp" address="127.0.0.1" port="{tcp}" ruleset="out")
input(type="imtcp" address="127.0.0.1" port="{tls}" ruleset="out")
"#,
            udp = self.udp,
            tcp = self.tcp,
            tls = self.tls,
        );
        std::fs::write(self.path("rsyslog.conf"), config).expect("write config");
    }

    /// Runs rsyslogd again on its ports (after [`Rsyslog::stop`]).
    pub fn run(&mut self) {
        assert!(self.try_run(), "rsyslogd did not restart: {}", self.log());
    }

    /// Starts rsyslogd (under `timeout`, so a test killed before its drop
    /// cannot leave it running for long) and waits until a probe sent to
    /// its TCP input was written: every input is active then, and any that
    /// could not bind its port has said so (`false`).
    fn try_run(&mut self) -> bool {
        let child = Command::new("timeout")
            .args(["--kill-after=5", "300", "rsyslogd", "-n", "-f"])
            .arg(self.path("rsyslog.conf"))
            .arg("-i")
            .arg(self.path("rsyslogd.pid"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.path("rsyslogd.log")).expect("log"))
            .spawn()
            .expect("rsyslogd (Debian package rsyslog) must be installed");
        self.child = Some(child);
        let probe = format!("probe-{}", free_port());
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut sent = false;
        while Instant::now() < deadline {
            if !sent {
                if let Ok(mut tcp) = std::net::TcpStream::connect(("127.0.0.1", self.tcp)) {
                    let message = format!("<13>1 - - {PROBE_APP} - - - {probe}");
                    sent = write!(tcp, "{} {message}", message.len()).is_ok();
                }
            } else if self.raw_lines().iter().any(|line| line.contains(&probe)) {
                let log = self.log();
                if ["Address already in use", "could not", "failed"]
                    .iter()
                    .any(|error| log.contains(error))
                {
                    self.stop();
                    return false;
                }
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop();
        false
    }

    /// Stops rsyslogd (SIGTERM through `timeout`) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    /// The complete lines of `received.jsonl`. rsyslogd may be caught
    /// halfway through writing a line (its buffer is larger than a write
    /// can be atomic for); that tail is left for the next look.
    fn raw_lines(&self) -> Vec<String> {
        let text = std::fs::read_to_string(self.path("received.jsonl")).unwrap_or_default();
        let complete = match text.rfind('\n') {
            Some(end) => &text[..end],
            None => "",
        };
        complete
            .lines()
            .filter(|line| !line.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// Every message received so far but the start-up probes, parsed.
    pub fn received(&self) -> Vec<Value> {
        self.raw_lines()
            .iter()
            .map(|line| {
                serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"))
            })
            .filter(|message| message["app"] != PROBE_APP)
            .collect()
    }

    /// Waits until at least `count` messages arrived, and returns them all.
    pub fn wait_for(&self, count: usize) -> Vec<Value> {
        let deadline = Instant::now() + ARRIVAL;
        loop {
            let received = self.received();
            if received.len() >= count || Instant::now() > deadline {
                return received;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        self.stop();
    }
}
