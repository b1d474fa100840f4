//! xvsadm: ipvsadm's command line and output, for the xvs fast path. Talks to xvsd over its
//! control socket (XVSADM_SOCKET overrides the default /run/xvs/xvsd.sock).
use std::io::Read;
use std::path::PathBuf;

use lb_user::ctl::{NumberedOp, Request, Response, DEFAULT_SOCKET};
use lb_user::daemon::server::request;
use lb_user::ipvsadm::{
    format_list, format_save, parse_args, parse_restore, restore_text, usage_text, version_text,
    xvs_banner, Command,
};
use lb_user::snapshot::Snapshot;

fn socket() -> PathBuf {
    std::env::var_os("XVSADM_SOCKET")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
}

fn fail(msg: &str, code: i32) -> ! {
    eprintln!("{msg}");
    std::process::exit(code)
}

fn call(req: Request) -> Response {
    match request(&socket(), &req) {
        Ok(Response::Error(e)) => fail(&e, 1),
        Ok(r) => r,
        Err(e) => fail(&e, 1),
    }
}

fn snapshot(conns: bool) -> Snapshot {
    match call(Request::Snapshot { conns }) {
        Response::Snapshot(s) => *s,
        other => fail(&format!("unexpected answer from xvsd: {other:?}"), 1),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cmd = match parse_args(&args) {
        Ok(c) => c,
        Err(e) => fail(&e.to_string(), e.exit_code()),
    };
    match cmd {
        Command::Apply(ops) => {
            let ops = ops
                .into_iter()
                .map(|op| NumberedOp { line: None, op })
                .collect();
            call(Request::Apply(ops));
        }
        Command::Restore => {
            let mut bytes = Vec::new();
            if let Err(e) = std::io::stdin().read_to_end(&mut bytes) {
                fail(&format!("reading the rules from stdin: {e}"), 1);
            }
            match restore_text(&bytes).and_then(parse_restore) {
                Ok(ops) => {
                    call(Request::Apply(ops));
                }
                Err(e) => fail(&e.to_string(), e.exit_code()),
            }
        }
        Command::List(opts) => {
            let snap = snapshot(opts.connections);
            match format_list(&snap, &opts, &xvs_banner(snap.conn_tab_size)) {
                Ok(text) => print!("{text}"),
                Err(e) => fail(&e.to_string(), e.exit_code()),
            }
        }
        Command::Save { numeric } => print!("{}", format_save(&snapshot(false), numeric)),
        Command::Zero(key) => {
            call(Request::Zero(key));
        }
        Command::SetTimeouts { tcp, tcpfin, udp } => {
            call(Request::SetTimeouts { tcp, tcpfin, udp });
        }
        Command::Help => print!("{}", usage_text()),
        Command::Version => print!("{}", version_text()),
    }
}
