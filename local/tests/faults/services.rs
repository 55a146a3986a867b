//! Stopping, freezing and restoring the machine's services, one fault at a time: each
//! by its own control (`rabbitmqctl`, `redis-cli shutdown`) or its process id.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

/// One fault at a time: the services are the machine's.
pub(crate) static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub(crate) fn sh(command: &str) -> bool {
    Command::new("bash").arg("-c").arg(command).status().is_ok_and(|s| s.success())
}

/// Starts the services again when dropped, whatever happened in between.
pub(crate) struct Restore(&'static str);

impl Drop for Restore {
    fn drop(&mut self) {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        if !sh(&format!("cd {root} && bash scripts/services >/dev/null 2>&1")) {
            eprintln!("faults: could not restore {} with scripts/services", self.0);
        }
    }
}

pub(crate) fn stop_rabbitmq() -> Restore {
    assert!(sh("rabbitmqctl -q stop_app"), "rabbitmqctl stop_app failed");
    Restore("rabbitmq")
}

pub(crate) fn start_rabbitmq() {
    assert!(sh("rabbitmqctl -q start_app && rabbitmqctl -q await_startup"), "rabbitmqctl start_app failed");
}

pub(crate) fn stop_redis() -> Restore {
    let stopped = sh("redis-cli -h 127.0.0.1 -p 6379 shutdown nosave >/dev/null 2>&1; ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1");
    assert!(stopped, "could not stop Redis");
    Restore("redis")
}

/// The process id of a service that `scripts/services` runs (`redis` or `mongodb`): the
/// one it started, else the one listening on the service's port. Signals go to that
/// process only, never to whatever else matches a name.
pub(crate) fn service_pid(name: &str) -> u32 {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let out = Command::new("bash").arg(format!("{root}/scripts/services")).args(["--pid", name]).output().unwrap();
    let pid = String::from_utf8_lossy(&out.stdout).trim().parse();
    pid.unwrap_or_else(|_| panic!("no {name} process: {}", String::from_utf8_lossy(&out.stderr)))
}

pub(crate) fn signal(pid: u32, signal: &str) -> bool {
    sh(&format!("kill -{signal} {pid}"))
}

pub(crate) fn stop_mongodb() -> Restore {
    let pid = service_pid("mongodb");
    let stopped = signal(pid, "TERM")
        && sh(&format!("for i in $(seq 50); do kill -0 {pid} 2>/dev/null || exit 0; sleep 0.1; done; exit 1"));
    assert!(stopped, "could not stop SecantusDB (pid {pid})");
    Restore("mongodb")
}

/// Freezes SecantusDB in turns (SIGSTOP, SIGCONT) until dropped: a database that is slow
/// rather than gone, so that requests time out in the middle of their transactions.
pub(crate) struct Stalls {
    pub(crate) done: Arc<std::sync::atomic::AtomicBool>,
    pub(crate) pid: u32,
    pub(crate) cycler: Option<std::thread::JoinHandle<()>>,
}

pub(crate) fn stall_mongodb(frozen: Duration, running: Duration) -> Stalls {
    let pid = service_pid("mongodb");
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = done.clone();
    let cycler = std::thread::spawn(move || {
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            assert!(signal(pid, "STOP"), "could not freeze SecantusDB (pid {pid})");
            std::thread::sleep(frozen);
            signal(pid, "CONT");
            std::thread::sleep(running);
        }
    });
    Stalls { done, pid, cycler: Some(cycler) }
}

impl Drop for Stalls {
    fn drop(&mut self) {
        self.done.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(cycler) = self.cycler.take() {
            let _ = cycler.join();
        }
        // Whatever happened in the cycler, the server runs again.
        if !signal(self.pid, "CONT") {
            eprintln!("faults: could not resume SecantusDB");
        }
    }
}
