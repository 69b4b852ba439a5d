//! `feeds up`: starts a named topology from `deploy/local/` as real OS
//! processes, waits until every one reports SERVING, and stops them all.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::config;

/// The topologies shipped in `deploy/local/`, by name.
pub const NAMED: [(&str, &str); 4] = [
    ("monolith", "monolith.toml"),
    ("five-pod", "five-pod"),
    ("mixed", "mixed"),
    ("per-tenant", "per-tenant"),
];

/// Why a topology could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// The name is neither a known topology nor an existing path.
    #[error(
        "topology {0:?}: not one of monolith, five-pod, mixed, per-tenant, and no such file or directory under {1}"
    )]
    Unknown(String, String),
    /// A directory without `.toml` files.
    #[error("topology directory {0}: has no .toml files")]
    Empty(PathBuf),
    /// A config file is invalid: nothing was started.
    #[error(transparent)]
    Config(#[from] config::LoadError),
    /// Two files listen on the same address.
    #[error("{0} and {1} both listen on {2}")]
    SameListen(PathBuf, PathBuf, std::net::SocketAddr),
    /// A process could not be spawned.
    #[error("starting {file}: {source}")]
    Spawn {
        /// Its config file.
        file: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A process exited before it was ready.
    #[error("{file} exited before it was ready ({status})")]
    Died {
        /// Its config file.
        file: PathBuf,
        /// Its exit status.
        status: ExitStatus,
    },
    /// A process did not report SERVING in time.
    #[error("{file} did not report SERVING on {listen} within {timeout:?}")]
    NotReady {
        /// Its config file.
        file: PathBuf,
        /// Where it should listen.
        listen: std::net::SocketAddr,
        /// How long we waited.
        timeout: Duration,
    },
    /// Waiting on a process failed.
    #[error("waiting for {file}: {source}")]
    Wait {
        /// Its config file.
        file: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// The config files of `name` under `dir`: a named topology, a directory of
/// `.toml` files, or one file.
pub fn resolve(name: &str, dir: &Path) -> Result<Vec<PathBuf>, TopologyError> {
    let path = NAMED
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, p)| dir.join(p))
        .unwrap_or_else(|| PathBuf::from(name));
    if path.is_file() {
        return Ok(vec![path]);
    }
    if !path.is_dir() {
        return Err(TopologyError::Unknown(
            name.to_owned(),
            dir.display().to_string(),
        ));
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&path)
        .map_err(|_| TopologyError::Unknown(name.to_owned(), dir.display().to_string()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(TopologyError::Empty(path));
    }
    Ok(files)
}

/// A topology's files rewritten to listen on ports the OS picked, so it can
/// run beside another copy (a developer's `feeds serve`, a parallel test).
#[derive(Clone, Debug)]
pub struct Relocated {
    /// The rewritten files, in the order given.
    pub files: Vec<PathBuf>,
    /// Every address moved: (as in the files, where it is now).
    pub moved: Vec<(SocketAddr, SocketAddr)>,
}

/// Copies `files` into `into`, moving every `process.listen` and
/// `telemetry.metrics_listen` address (and every mention of it, such as a
/// remote endpoint) to a free port the OS picks on the same IP. The files
/// are validated first, as `start` does.
pub fn relocate(files: &[PathBuf], into: &Path) -> Result<Relocated, TopologyError> {
    let io = |file: &Path| {
        let file = file.to_owned();
        move |source| TopologyError::Spawn { file, source }
    };
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for file in files {
        let (_, plan) = config::load(Some(file))?;
        for a in std::iter::once(plan.listen).chain(plan.metrics_listen) {
            if a.port() != 0 && !addrs.contains(&a) {
                addrs.push(a);
            }
        }
    }
    let free = free_addrs(addrs.iter().map(SocketAddr::ip)).map_err(io(into))?;
    let moved: Vec<(SocketAddr, SocketAddr)> = addrs.into_iter().zip(free).collect();
    std::fs::create_dir_all(into).map_err(io(into))?;
    let mut out = Vec::new();
    for file in files {
        let mut text = std::fs::read_to_string(file).map_err(io(file))?;
        for (from, to) in &moved {
            text = replace_addr(&text, &from.to_string(), &to.to_string());
        }
        let name = file.file_name().unwrap_or(file.as_os_str());
        let target = into.join(name);
        std::fs::write(&target, text).map_err(io(&target))?;
        out.push(target);
    }
    Ok(Relocated { files: out, moved })
}

/// One free port on each of `ips`, picked by the OS. Every port is held
/// until all are picked, so none repeats.
pub fn free_addrs(
    ips: impl IntoIterator<Item = std::net::IpAddr>,
) -> std::io::Result<Vec<SocketAddr>> {
    let held = ips
        .into_iter()
        .map(|ip| std::net::TcpListener::bind(SocketAddr::new(ip, 0)))
        .collect::<std::io::Result<Vec<_>>>()?;
    held.iter().map(std::net::TcpListener::local_addr).collect()
}

/// `text` with every `from` that is not followed by another digit replaced.
fn replace_addr(text: &str, from: &str, to: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(from) {
        let after = &rest[i + from.len()..];
        out.push_str(&rest[..i]);
        match after.starts_with(|c: char| c.is_ascii_digit()) {
            true => out.push_str(from),
            false => out.push_str(to),
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// One running process of a topology.
#[derive(Debug)]
pub struct Member {
    /// Its config file.
    pub file: PathBuf,
    /// Where it serves.
    pub listen: std::net::SocketAddr,
    /// Whether it serves the entry stage (the one clients call).
    pub entry: bool,
    /// The process; killed if dropped while running.
    child: Child,
}

/// A started topology.
#[derive(Debug)]
pub struct Running {
    /// Its processes, in file order.
    pub members: Vec<Member>,
}

/// Starts one `exe serve --config FILE` per file, with `envs` added to the
/// environment, and waits until each reports SERVING. Every file is loaded and
/// validated first, so a bad file starts nothing.
pub async fn start(
    exe: &Path,
    files: &[PathBuf],
    envs: &[(String, String)],
    ready_timeout: Duration,
) -> Result<Running, TopologyError> {
    let mut planned = Vec::new();
    for file in files {
        let (_, plan) = config::load(Some(file))?;
        if let Some((other, _, _)) = planned.iter().find(|(_, l, _)| *l == plan.listen) {
            return Err(TopologyError::SameListen(
                PathBuf::clone(other),
                file.clone(),
                plan.listen,
            ));
        }
        let entry = plan.hosted.iter().any(|s| s.callers().is_empty());
        planned.push((file.clone(), plan.listen, entry));
    }
    let launches = planned
        .into_iter()
        .map(|(file, listen, entry)| Launch {
            args: vec![
                "serve".into(),
                "--config".into(),
                file.clone().into_os_string(),
            ],
            label: file,
            listen,
            entry,
        })
        .collect();
    launch(exe, launches, envs, ready_timeout).await
}

/// One process to start: `exe args...`, known by `label`, serving on `listen`.
#[derive(Clone, Debug)]
pub struct Launch {
    /// Names the process in messages (its config file, for `serve`).
    pub label: PathBuf,
    /// Arguments after the executable.
    pub args: Vec<std::ffi::OsString>,
    /// Where it will report SERVING.
    pub listen: std::net::SocketAddr,
    /// Whether it serves the entry stage (the one clients call).
    pub entry: bool,
}

/// Starts every launch with `envs` added and waits until each reports SERVING.
pub async fn launch(
    exe: &Path,
    launches: Vec<Launch>,
    envs: &[(String, String)],
    ready_timeout: Duration,
) -> Result<Running, TopologyError> {
    let mut running = Running {
        members: Vec::new(),
    };
    for Launch {
        label,
        args,
        listen,
        entry,
    } in launches
    {
        let child = Command::new(exe)
            .args(&args)
            .envs(envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| TopologyError::Spawn {
                file: label.clone(),
                source,
            })?;
        running.members.push(Member {
            file: label,
            listen,
            entry,
            child,
        });
    }
    let deadline = Instant::now() + ready_timeout;
    for i in 0..running.members.len() {
        if let Err(e) = running.wait_ready(i, deadline, ready_timeout).await {
            running.stop(Duration::from_secs(5)).await.ok();
            return Err(e);
        }
    }
    Ok(running)
}

/// Whether the process at `listen` reports SERVING for the whole server.
pub async fn is_serving(listen: std::net::SocketAddr) -> bool {
    let Ok(endpoint) = tonic::transport::Endpoint::from_shared(format!("http://{listen}")) else {
        return false;
    };
    let Ok(channel) = endpoint
        .connect_timeout(Duration::from_millis(500))
        .connect()
        .await
    else {
        return false;
    };
    let mut client = HealthClient::new(channel);
    let check = client.check(HealthCheckRequest {
        service: String::new(),
    });
    matches!(
        tokio::time::timeout(Duration::from_secs(1), check).await,
        Ok(Ok(r)) if r.get_ref().status == ServingStatus::Serving as i32
    )
}

impl Member {
    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}

impl Running {
    /// Where the entry stage is served (the first member that hosts it).
    pub fn entry(&self) -> Option<SocketAddr> {
        self.members.iter().find(|m| m.entry).map(|m| m.listen)
    }

    async fn wait_ready(
        &mut self,
        i: usize,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<(), TopologyError> {
        let member = &mut self.members[i];
        loop {
            if let Ok(Some(status)) = member.child.try_wait() {
                return Err(TopologyError::Died {
                    file: member.file.clone(),
                    status,
                });
            }
            if is_serving(member.listen).await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(TopologyError::NotReady {
                    file: member.file.clone(),
                    listen: member.listen,
                    timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The first process found to have exited, without waiting.
    pub fn exited(&mut self) -> Result<Option<(PathBuf, ExitStatus)>, TopologyError> {
        for m in &mut self.members {
            if let Some(status) = m.child.try_wait().map_err(|source| TopologyError::Wait {
                file: m.file.clone(),
                source,
            })? {
                return Ok(Some((m.file.clone(), status)));
            }
        }
        Ok(None)
    }

    /// Waits until any process exits; returns its file and status.
    pub async fn wait_any_exit(&mut self) -> Result<(PathBuf, ExitStatus), TopologyError> {
        loop {
            if let Some(exited) = self.exited()? {
                return Ok(exited);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends SIGTERM to every process, waits up to `grace` for each, then
    /// kills what is left. Returns the exit statuses in file order.
    pub async fn stop(
        mut self,
        grace: Duration,
    ) -> Result<Vec<(PathBuf, ExitStatus)>, TopologyError> {
        for m in &self.members {
            if let Some(pid) = m.child.id() {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            }
        }
        let deadline = Instant::now() + grace;
        let mut statuses = Vec::new();
        for m in &mut self.members {
            let left = deadline.saturating_duration_since(Instant::now());
            let status = match tokio::time::timeout(left, m.child.wait()).await {
                Ok(status) => status,
                Err(_) => {
                    let _ = m.child.start_kill();
                    m.child.wait().await
                }
            }
            .map_err(|source| TopologyError::Wait {
                file: m.file.clone(),
                source,
            })?;
            statuses.push((m.file.clone(), status));
        }
        Ok(statuses)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_addr_leaves_longer_ports_alone() {
        let text = "a = \"127.0.0.1:5005\"\nb = \"http://127.0.0.1:50051\"\nc = \"127.0.0.1:5005\"";
        let out = replace_addr(text, "127.0.0.1:5005", "127.0.0.1:40000");
        assert_eq!(
            out,
            "a = \"127.0.0.1:40000\"\nb = \"http://127.0.0.1:50051\"\nc = \"127.0.0.1:40000\""
        );
    }

    #[test]
    fn relocated_topology_moves_every_listen_and_endpoint() {
        let dir = std::env::temp_dir().join(format!("feeds-relocate-{}", std::process::id()));
        let files = resolve(
            "five-pod",
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/local"),
        )
        .expect("five-pod");
        let r = relocate(&files, &dir).expect("relocate");
        assert_eq!(r.files.len(), 5);
        for file in &r.files {
            let text = std::fs::read_to_string(file).expect("read");
            for (from, _) in &r.moved {
                assert!(
                    !text.contains(&format!("{from}\"")),
                    "{}: {from} left in\n{text}",
                    file.display()
                );
            }
            config::load(Some(file)).expect("still valid");
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
