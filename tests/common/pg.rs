//! A private, throwaway PostgreSQL server for tests that stop and start the store: initdb into
//! a temp dir, `pg_ctl` on a free loopback port (as the `postgres` user when run as root, as
//! PostgreSQL refuses root). Stopped immediately and removed when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;
use tempfile::TempDir;

/// Where Debian keeps the server binaries.
const BIN: &str = "/usr/lib/postgresql/15/bin";

/// A running (or stopped) private PostgreSQL.
pub struct ThrowawayPostgres {
    dir: TempDir,
    port: u16,
}

impl ThrowawayPostgres {
    /// initdb and start a server; panics with its log when it cannot.
    pub fn start() -> ThrowawayPostgres {
        let dir = TempDir::new().expect("temp dir");
        if is_root() {
            run(Command::new("chown").arg("postgres").arg(dir.path()));
        }
        let data = dir.path().join("data");
        let mut initdb = as_postgres(&Path::new(BIN).join("initdb"));
        initdb.arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        ]);
        run(&mut initdb);
        let port = super::ports::free_port();
        let pg = ThrowawayPostgres { dir, port };
        pg.start_again();
        pg
    }

    /// The superuser URL of database `postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server at once, as a crash or a lost host would (`-m immediate`).
    pub fn stop(&self) {
        let mut stop = self.pg_ctl();
        stop.args(["-m", "immediate", "-w", "stop"]);
        run(&mut stop);
    }

    /// Starts the (stopped) server again on the same port and data.
    pub fn start_again(&self) {
        let options = format!(
            // fsync off: the kernel keeps its page cache through a killed server. Commits stay
            // synchronous: with `synchronous_commit=off` an immediate stop loses what the
            // server acknowledged in its last few hundred milliseconds, which a crashed real
            // server (eddy's store acknowledges checkpoints to it) does not.
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off \
             -c full_page_writes=off",
            self.port,
            self.dir.path().display()
        );
        let mut start = self.pg_ctl();
        start
            .arg("-l")
            .arg(self.log())
            .args(["-w", "-t", "60", "start", "-o", &options]);
        if !start.status().expect("pg_ctl start").success() {
            let log = std::fs::read_to_string(self.log()).unwrap_or_default();
            panic!("the throwaway PostgreSQL did not start:\n{log}");
        }
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    fn pg_ctl(&self) -> Command {
        let mut c = as_postgres(&Path::new(BIN).join("pg_ctl"));
        c.arg("-D").arg(self.dir.path().join("data"));
        c
    }
}

impl Drop for ThrowawayPostgres {
    fn drop(&mut self) {
        let mut stop = self.pg_ctl();
        stop.args(["-m", "immediate", "-w", "stop"]);
        // Already stopped is fine.
        let _ = stop.output();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// `program`, run as the postgres user when we are root.
fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn run(command: &mut Command) {
    let out = command.output().expect("run a PostgreSQL tool");
    assert!(
        out.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
