//! The control socket: one JSON request, one JSON response per connection. Requests are
//! handled one at a time under the node's lock, so concurrent xvsadm calls and reloads each
//! see a consistent table.
use std::path::Path;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;

use super::Node;
use crate::ctl::{Request, Response};

pub fn handle(node: &Mutex<Node>, req: Request) -> Response {
    let mut node = node.lock().unwrap_or_else(|p| p.into_inner());
    match req {
        Request::Apply(ops) => match node.apply(&ops) {
            Ok(()) => {
                tracing::info!(ops = ops.len(), "table changed");
                Response::Ok
            }
            Err(e) => {
                tracing::warn!(error = %e, "change refused");
                Response::Error(e)
            }
        },
        Request::Snapshot { conns } => match node.snapshot(conns) {
            Ok(s) => Response::Snapshot(Box::new(s)),
            Err(e) => Response::Error(e),
        },
        Request::Zero(key) => match node.zero(key.as_ref()) {
            Ok(()) => Response::Ok,
            Err(e) => Response::Error(e),
        },
        Request::SetTimeouts { tcp, tcpfin, udp } => match node.set_timeouts(tcp, tcpfin, udp) {
            Ok(()) => Response::Ok,
            Err(e) => Response::Error(e),
        },
    }
}

/// Requests (or answers) above this size leave enough freed memory behind to hand back.
const LARGE_REQUEST: usize = 1 << 20;

/// Hands the allocator's free memory back to the kernel. A 50,000-service `xvsadm -R` or
/// listing allocates hundreds of MiB transiently (the JSON, the operations, the listing)
/// that glibc would otherwise keep in the daemon's resident set for good.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks and trims glibc's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The control socket at `path`, listening before its file appears there: it is bound and
/// listening under a temporary name, then renamed into place. Clients (xvsadm, scripts, tests)
/// wait for the file to exist; with a plain bind they could find it in the moment between
/// bind(2) and listen(2) and be refused.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".new");
    let tmp = std::path::PathBuf::from(tmp);
    // The node lock is held: socket files left here are stale.
    let _ = std::fs::remove_file(&tmp);
    let listener = std::os::unix::net::UnixListener::bind(&tmp)?;
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    listener.set_nonblocking(true)?;
    UnixListener::from_std(listener)
}

pub async fn serve(listener: UnixListener, node: Arc<Mutex<Node>>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let node = node.clone();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            if stream.read_to_end(&mut buf).await.is_err() {
                return;
            }
            let resp = match serde_json::from_slice::<Request>(&buf) {
                Ok(req) => tokio::task::spawn_blocking(move || handle(&node, req))
                    .await
                    .unwrap_or_else(|e| Response::Error(format!("internal error: {e}"))),
                Err(e) => Response::Error(format!("bad request: {e}")),
            };
            let out = serde_json::to_vec(&resp).unwrap_or_default();
            let _ = stream.write_all(&out).await;
            let _ = stream.shutdown().await;
            let large = buf.len() + out.len() > LARGE_REQUEST;
            drop((buf, out, resp));
            if large {
                tokio::task::spawn_blocking(release_freed_memory);
            }
        });
    }
}

/// The client side (xvsadm): sends one request and waits for the answer.
pub fn request(socket: &Path, req: &Request) -> Result<Response, String> {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket).map_err(|e| {
        format!(
            "cannot reach xvsd at {} ({e}): is it running? Start it with `xvsd --iface IF`",
            socket.display()
        )
    })?;
    let body = serde_json::to_vec(req).map_err(|e| e.to_string())?;
    s.write_all(&body).map_err(|e| e.to_string())?;
    s.shutdown(std::net::Shutdown::Write)
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).map_err(|e| e.to_string())?;
    serde_json::from_slice(&out).map_err(|e| format!("bad answer from xvsd: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// bind() leaves a listening socket at the path, no temporary file beside it, and replaces
    /// a stale socket file (a daemon that was killed leaves one).
    #[test]
    fn bind_replaces_a_stale_socket_and_leaves_no_temporary_file() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        let dir = std::env::temp_dir().join(format!("xvs-bind-{}", std::process::id()));
        let path = dir.join("xvsd.sock");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // A stale socket file: bound once, its listener gone.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(std::os::unix::net::UnixStream::connect(&path).is_err());
        let listener = rt.block_on(async { bind(&path) }).unwrap();
        assert!(std::os::unix::net::UnixStream::connect(&path).is_ok());
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["xvsd.sock"]);
        drop(listener);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
