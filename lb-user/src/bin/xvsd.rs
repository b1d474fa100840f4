//! xvsd: the xvs node daemon. Attaches the fast path to the named interfaces, loads a rules
//! file, serves xvsadm on a Unix socket, and leaves everything running when it stops so a
//! restart or an upgrade drops nothing.
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use lb_cli::xvsd::{iface_and_mode, Cli, Cmd, LogFormat, Mode, OnOff};
use lb_user::ctl::DEFAULT_SOCKET;
use lb_user::daemon::durable::{Durable, DurableState};
use lb_user::daemon::ifaces::{self, attach_iface, AttachOpts};
use lb_user::daemon::ifwatch::{LinkSocket, Patterns, Tracker, Watcher};
use lb_user::daemon::{adopt, checks, engine_of, estimator, rules, server, Mode as NodeMode, Node};
use lb_user::fastpath::{ifindex, links, AttachMode, Engine, FastPath, FastPathConfig};
use lb_user::ipvs_nl::IpvsClient;
use lb_user::model::Table;
use lb_user::snapshot::EngineKind;

/// The hook a `--mode`/`:HOOK` fixes; None for auto (`attach_iface` picks the faster one for
/// the device).
fn fixed(m: Mode) -> Option<AttachMode> {
    match m {
        Mode::Auto => None,
        Mode::Native => Some(AttachMode::Native),
        Mode::Generic => Some(AttachMode::Generic),
        Mode::Tc => Some(AttachMode::Tc),
    }
}
use tokio::signal::unix::{signal, SignalKind};

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: logs written to files and journals stay plain text.
    use std::io::IsTerminal;
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => b.init(),
        LogFormat::Json => b.json().init(),
    }
}

/// A rules file into a table; invalid UTF-8 is refused naming the line and byte.
fn read_rules(path: &Path) -> Result<Table, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let text = lb_user::ipvsadm::restore_text(&bytes).map_err(|e| e.to_string())?;
    rules::parse(text)
}

fn engine_file(state_dir: &Path) -> PathBuf {
    state_dir.join("engine.json")
}

fn table_file(state_dir: &Path) -> PathBuf {
    state_dir.join("table.json")
}

fn main() {
    let cli = Cli::parse();
    init_logs(cli.log_format);
    if let Err(e) = run(cli) {
        tracing::error!("{e}");
        eprintln!("xvsd: {e}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<(), String> {
    checks::privileges()?;
    if let Some(Cmd::Teardown) = cli.cmd {
        let _lock = checks::lock(&cli.state_dir)?;
        let removed = links::teardown(&cli.pin_dir).map_err(|e| e.to_string())?;
        // Services this xvsd put into kernel IPVS as a fallback go too (a mirror's saved table
        // is kube-proxy's, which is never touched: it is saved without kernel services).
        if let Ok(t) = std::fs::read(table_file(&cli.state_dir)) {
            if let (Ok(t), Ok(k)) = (serde_json::from_slice::<Table>(&t), IpvsClient::new()) {
                for s in t
                    .services()
                    .iter()
                    .filter(|s| engine_of(s) == EngineKind::Kernel)
                {
                    let _ = k.del_service(&s.key);
                }
            }
        }
        // The durable table too: after a teardown the next xvsd starts from --rules.
        let durable = Durable::open(&cli.state_dir)
            .ok()
            .and_then(|(_, d)| d)
            .map(|d| d.table);
        if let (Some(t), Ok(k)) = (durable, IpvsClient::new()) {
            for s in t
                .services()
                .iter()
                .filter(|s| engine_of(s) == EngineKind::Kernel)
            {
                let _ = k.del_service(&s.key);
            }
        }
        Durable::remove(&cli.state_dir);
        for f in [engine_file(&cli.state_dir), table_file(&cli.state_dir)] {
            let _ = std::fs::remove_file(f);
        }
        println!(
            "xvsd teardown: removed {} pinned objects from {}{}",
            removed.len(),
            cli.pin_dir.display(),
            if removed.is_empty() { "" } else { ": " }
        );
        for r in removed {
            println!("  {r}");
        }
        return Ok(());
    }
    if cli.ifaces.is_empty() && cli.iface_match.is_empty() {
        return Err(
            "name at least one interface: xvsd --iface IF [--iface IF ...] or --iface-match PATTERN"
                .into(),
        );
    }
    let named = cli
        .ifaces
        .iter()
        .map(|spec| iface_and_mode(spec, cli.mode).map(|(n, m)| (n.to_string(), m)))
        .collect::<Result<Vec<_>, _>>()?;
    checks::interfaces(&named.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>())?;
    let patterns = Patterns::new(
        &cli.iface_match
            .iter()
            .map(|spec| iface_and_mode(spec, cli.mode).map(|(p, m)| (p.to_string(), fixed(m))))
            .collect::<Result<Vec<_>, _>>()?,
    )?;
    if let Some(g) = &cli.list_group {
        server::lookup_group(g)?;
    }
    let _lock = checks::lock(&cli.state_dir)?;
    let desired = match &cli.rules {
        Some(p) => Some(read_rules(p).map_err(|e| format!("{}: {e}", p.display()))?),
        None => None,
    };
    let config = FastPathConfig {
        max_services: cli.max_services,
        max_dests: cli.max_dests,
        sched_slots: cli.sched_slots,
        conn_table_size: cli
            .conn_table_size
            .unwrap_or_else(lb_user::fastpath::conns::default_table_size),
        pin_dir: Some(cli.pin_dir.clone()),
        bpf_log: cli.bpf_log,
        ..Default::default()
    };
    let kernel = IpvsClient::new().map_err(|e| e.to_string());
    let mode = if cli.mirror_ipvs {
        if let Err(e) = &kernel {
            return Err(format!("--mirror-ipvs needs kernel IPVS: {e}"));
        }
        NodeMode::Mirror
    } else {
        if let Err(e) = &kernel {
            tracing::info!("no kernel IPVS fallback: {e}");
        }
        NodeMode::Own
    };
    let t0 = std::time::Instant::now();
    let (mut store, durable) = Durable::open(&cli.state_dir)?;
    tracing::debug!(took = ?t0.elapsed(), "durable table read");
    let start = start_fast_path(&cli, config, durable)?;
    let (fp, table, to_apply) = (start.fp, start.table, start.to_apply);
    let mut node = Node::new(fp, table, kernel, mode);
    match (to_apply, &desired) {
        (Some(t), _) if mode == NodeMode::Own => {
            // Fresh maps: program the table from nothing (kernel fallback services a previous
            // daemon left behind are removed first). The durable table says so first: a
            // daemon killed while it programs leaves maps no successor may take over.
            let timeouts = node.fast_path().timeouts().map_err(|e| e.to_string())?;
            store
                .snapshot(None, timeouts, &t, Vec::new())
                .map_err(|e| format!("saving the table: {e}"))?;
            node.clear_kernel_leftovers(&t);
            let n = node.reload(&t)?;
            tracing::info!(
                changes = n,
                services = t.services().len(),
                "table programmed"
            );
        }
        (None, Some(t)) if start.first => {
            node.clear_kernel_leftovers(t);
            let n = node.reload(t)?;
            tracing::info!(changes = n, services = t.services().len(), "rules applied");
        }
        (None, Some(_)) => tracing::info!(
            services = node.table().services().len(),
            "the saved table wins over --rules after a restart (SIGHUP applies the file)"
        ),
        _ => {}
    }
    // From here on every acknowledged change is on disk before its answer. The state a clean
    // stop saved has been taken over and is in the durable store now: it goes.
    node.set_durable(store, !start.from_durable)?;
    let _ = std::fs::remove_file(engine_file(&cli.state_dir));
    let _ = std::fs::remove_file(table_file(&cli.state_dir));
    // Attached only now, with the table in place: where the maps had to be created anew, the
    // previous program keeps forwarding through the pinned links until this moment.
    // Links a previous daemon pinned for interfaces this one does not serve: gone from the
    // node, or no longer named or matched. Their pins go (a deleted interface's link is
    // defunct; an unserved one would keep running the old program).
    for iface in ifaces::pinned_ifaces(&cli.pin_dir) {
        let index = ifindex(&iface).ok();
        if index.is_some() && (named.iter().any(|(n, _)| *n == iface) || patterns.matches(&iface)) {
            continue;
        }
        match ifaces::detach_iface(node.fast_path(), &iface, index) {
            Ok(_) if index.is_none() => {
                tracing::info!(
                    iface,
                    "removed the pinned link of an interface that is gone"
                )
            }
            Ok(_) => tracing::info!(
                iface,
                "detached: no longer named by --iface or --iface-match"
            ),
            Err(e) => tracing::warn!(iface, "stale pinned link: {e}"),
        }
    }
    for (iface, hook) in &named {
        let iface = iface.as_str();
        let opts = AttachOpts {
            hook: fixed(*hook),
            redirect_virtual: cli.redirect_virtual,
        };
        let r = attach_iface(node.fast_path(), &opts, iface).map_err(|e| e.to_string())?;
        if r.attached.fell_back {
            tracing::warn!(
                iface,
                "native XDP refused by the driver; attached in generic mode (slower)"
            );
        }
        tracing::info!(
            iface,
            hook = r.attached.mode.name(),
            adopted = r.attached.adopted,
            replaced_stale = r.replaced_stale,
            redirect = r.redirect,
            "attached"
        );
    }
    if cli.socket_lb == OnOff::On {
        let root = lb_user::fastpath::sockets::cgroup2_root(&cli.state_dir.join("cgroup2"))
            .map_err(|e| e.to_string())?;
        node.fast_path()
            .attach_sockets(&root)
            .map_err(|e| e.to_string())?;
        tracing::info!(
            cgroup = %root.display(),
            "balancing this node's own connections to VIPs at the socket"
        );
    }
    // Subscribed before the first scan, so an interface that appears meanwhile is not missed.
    let link_sock = if patterns.is_empty() {
        None
    } else {
        Some(LinkSocket::open()?)
    };
    if mode == NodeMode::Mirror {
        let n = node.sync_from_kernel()?;
        tracing::info!(
            changes = n,
            services = node.table().services().len(),
            "mirroring kernel IPVS"
        );
    }
    let node = Arc::new(Mutex::new(node));
    if let Some(sock) = link_sock {
        let fixed: Vec<u32> = named.iter().filter_map(|(i, _)| ifindex(i).ok()).collect();
        let mut w = Watcher {
            node: node.clone(),
            redirect_virtual: cli.redirect_virtual,
            tracker: Tracker::new(patterns, fixed),
        };
        w.scan();
        tracing::info!(
            patterns = ?cli.iface_match,
            attached = w.tracker.attached().len(),
            "following interfaces"
        );
        std::thread::Builder::new()
            .name("ifwatch".into())
            .spawn(move || w.follow(sock))
            .map_err(|e| format!("interface watcher: {e}"))?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(serve(cli, node))
}

/// Every 50 ms, makes the next hops XDP found unresolved managed neighbours (see daemon::neigh).
async fn resolve_wanted_neighbours(node: Arc<Mutex<Node>>) {
    let mut t = tokio::time::interval(Duration::from_millis(50));
    loop {
        t.tick().await;
        let wanted = node
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .fast_path()
            .take_wanted_neighbours();
        for (ifindex, addr) in wanted.unwrap_or_default() {
            match lb_user::daemon::neigh::resolve_managed(ifindex, addr) {
                Ok(()) => tracing::debug!(ifindex, %addr, "resolving a next hop for XDP"),
                Err(e) => tracing::warn!(ifindex, %addr, "cannot resolve a next hop: {e}"),
            }
        }
    }
}

async fn serve(cli: Cli, node: Arc<Mutex<Node>>) -> Result<(), String> {
    let sock = cli
        .state_dir
        .join(Path::new(DEFAULT_SOCKET).file_name().unwrap());
    // Signals are caught before the socket appears: whoever waits for the socket (systemd,
    // scripts, the tests) may stop the daemon as soon as it does.
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let mut hup = signal(SignalKind::hangup()).map_err(|e| e.to_string())?;
    let list_group = match &cli.list_group {
        Some(g) => Some((g.clone(), server::lookup_group(g)?)),
        None => None,
    };
    // Metrics before the control socket: whoever waits for the socket finds them served.
    if let Some(addr) = cli.metrics_listen {
        lb_user::metrics::serve(addr, node.clone())?;
        tracing::info!(%addr, "serving Prometheus metrics at /metrics");
    }
    let listener = server::bind(&sock, list_group.as_ref().map(|g| g.1))
        .map_err(|e| format!("{}: {e}", sock.display()))?;
    tracing::info!(
        socket = %sock.display(),
        list_group = list_group.as_ref().map(|g| g.0.as_str()).unwrap_or("none"),
        "serving xvsadm"
    );
    let cfg = server::ServerConfig {
        max_request: cli.max_request_size,
        max_clients: cli.max_clients,
        client_timeout: cli.client_timeout,
        list_group,
    };
    // Every task, to be stopped before the state is saved: a task still running when the
    // runtime shuts down would find no timer or blocking pool and panic.
    let mut tasks: Vec<tokio::task::JoinHandle<()>> = Vec::new();
    tasks.push(tokio::spawn(server::serve(listener, node.clone(), cfg)));
    let ticker = node.clone();
    tasks.push(tokio::spawn(async move {
        let mut t = tokio::time::interval(estimator::TICK);
        let mut n = 0u64;
        let mut pressure = false;
        // Refusals counted so far (the pinned counters outlive restarts: the first reading is
        // the baseline).
        let mut refused: Option<u64> = None;
        loop {
            t.tick().await;
            // The counters are read without the lock (at 50,000 services that read is the
            // tick's largest part), then folded into the estimators with it.
            let read = ticker.lock().unwrap_or_else(|p| p.into_inner()).tick_read();
            let all = match read
                .and_then(|r| tokio::task::block_in_place(|| r.read().map_err(|e| e.to_string())))
            {
                Ok(all) => Some(all),
                Err(e) => {
                    tracing::warn!("rate estimator: {e}");
                    None
                }
            };
            let mut node = ticker.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(all) = all {
                node.tick_with(all);
            }
            n += 1;
            // Expired connections are reclaimed every 10 s; with the table near full, every
            // tick, half-open ones included (a full table refuses new connections meanwhile; it
            // never evicts a live one).
            if pressure || n.is_multiple_of(5) {
                let capacity = node.fast_path().config().conn_table_size as usize;
                match node.fast_path().reclaim(pressure) {
                    Ok(r) => {
                        if r.expired > 0 || r.half_open > 0 {
                            tracing::debug!(
                                expired = r.expired,
                                half_open = r.half_open,
                                entries = r.entries,
                                "reclaimed connections"
                            );
                        }
                        pressure = r.entries * 8 > capacity * 7;
                    }
                    Err(e) => tracing::warn!("reclaiming connections: {e}"),
                }
            }
            // New connections refused for a full table: one log line per 10 s at most.
            if n.is_multiple_of(5) {
                if let Ok(p) = node.fast_path().path_stats() {
                    let full = p[lb_common::path::DROP_TABLE_FULL as usize];
                    let before = refused.unwrap_or(full);
                    if full > before {
                        tracing::warn!(
                            refused = full - before,
                            capacity = node.fast_path().config().conn_table_size,
                            "connection table full: new connections refused (established ones \
                             keep flowing); raise --conn-table-size"
                        );
                    }
                    refused = Some(full);
                }
            }
        }
    }));
    tasks.push(tokio::spawn(resolve_wanted_neighbours(node.clone())));
    if cli.bpf_log {
        tasks.push(tokio::spawn(drain_bpf_log(node.clone())));
    }
    if cli.mirror_ipvs {
        let syncer = node.clone();
        let period = cli.sync_period;
        tasks.push(tokio::spawn(async move {
            let mut t = tokio::time::interval(period);
            loop {
                t.tick().await;
                let mut node = syncer.lock().unwrap_or_else(|p| p.into_inner());
                match node.sync_from_kernel() {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(changes = n, "kernel IPVS changed; fast path updated"),
                    Err(e) => tracing::warn!("mirror sync failed, will retry: {e}"),
                }
            }
        }));
    }
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => reload(&cli, &node),
        }
    }
    // Stop: the tasks first (each ends at its next await), then leave the programs attached
    // and the maps pinned, and save what the successor needs.
    for t in &tasks {
        t.abort();
    }
    for t in tasks {
        let _ = t.await;
    }
    let mut node = node.lock().unwrap_or_else(|p| p.into_inner());
    let table = serde_json::to_vec(&node.table_to_save()).map_err(|e| e.to_string())?;
    let engine = node.fast_path().save_engine().map_err(|e| e.to_string())?;
    std::fs::write(table_file(&cli.state_dir), table).map_err(|e| e.to_string())?;
    std::fs::write(engine_file(&cli.state_dir), engine).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&sock);
    tracing::info!("stopped; the fast path keeps running (`xvsd teardown` removes it)");
    std::thread::sleep(Duration::from_millis(10));
    Ok(())
}

/// How the fast path was started.
struct Start {
    fp: FastPath,
    /// The table the maps hold (adopted) or empty (fresh maps).
    table: Table,
    /// Fresh maps for a table that existed before: program it.
    to_apply: Option<Table>,
    /// Nothing existed before (no saved or durable table): --rules is the table.
    first: bool,
    /// The maps were taken over from the durable store as it is (no snapshot needed).
    from_durable: bool,
}

/// Takes over what a previous daemon left, in this order: the state a clean stop saved (exact);
/// else the durable table, over the pinned maps when they fit this xvsd (after a crash or
/// SIGKILL: the maps are reconciled to the last acknowledged table, connections continue);
/// else fresh maps.
fn start_fast_path(
    cli: &Cli,
    config: FastPathConfig,
    durable: Option<DurableState>,
) -> Result<Start, String> {
    let fresh = |config: FastPathConfig, to_apply: Option<Table>, first: bool| {
        FastPath::load(config)
            .map(|fp| Start {
                fp,
                table: Table::new(),
                to_apply,
                first,
                from_durable: false,
            })
            .map_err(|e| e.to_string())
    };
    let incompatible = |why: &str| {
        tracing::warn!(
            pin_dir = %cli.pin_dir.display(),
            "the pinned maps cannot be taken over ({why}): starting with new maps. The running \
             program keeps forwarding with the old ones until this daemon replaces it; \
             connections through them are then lost"
        );
        adopt::unpin_maps(&cli.pin_dir);
    };
    let saved = std::fs::read(engine_file(&cli.state_dir))
        .ok()
        .zip(std::fs::read(table_file(&cli.state_dir)).ok());
    if let Some((engine, table)) = saved {
        let table: Table =
            serde_json::from_slice(&table).map_err(|e| format!("saved table: {e}"))?;
        let limits = Engine::restore(&engine)
            .map_err(|e| e.to_string())?
            .limits()
            .clone();
        match adopt::check_pins(&cli.pin_dir, &limits) {
            Ok(()) => {
                let fp = FastPath::adopt(config, &engine).map_err(|e| e.to_string())?;
                tracing::info!(
                    services = table.services().len(),
                    "adopted the running fast path"
                );
                return Ok(Start {
                    fp,
                    table,
                    to_apply: None,
                    first: false,
                    from_durable: false,
                });
            }
            Err(why) => {
                incompatible(&why);
                return fresh(config, Some(table), false);
            }
        }
    }
    let Some(mut d) = durable else {
        if adopt::any_pinned(&cli.pin_dir) {
            // Maps without a table saying what they hold (their daemon crashed before this
            // version, or the state directory was lost): nothing can be taken over.
            incompatible("no saved or durable table describes them");
        }
        return fresh(config, None, true);
    };
    let timeouts = d.timeouts;
    let start = match d.limits.clone() {
        Some(limits) if adopt::any_pinned(&cli.pin_dir) => {
            match adopt::check_pins(&cli.pin_dir, &limits) {
                Ok(()) => {
                    let services = std::mem::take(&mut d.engine).into_iter().collect();
                    match FastPath::adopt_rebuild(config.clone(), limits, services) {
                        Ok((fp, rep)) => {
                            tracing::info!(
                                services = d.table.services().len(),
                                rolled_back = rep.services_rewritten + rep.services_removed,
                                dests_revived = rep.dests_rewritten,
                                dests_dropped = rep.dests_killed,
                                tables_rewritten = rep.tables_rewritten,
                                "took the running fast path over from the durable table"
                            );
                            Start {
                                fp,
                                table: d.table,
                                to_apply: None,
                                first: false,
                                from_durable: true,
                            }
                        }
                        Err(e) => {
                            incompatible(&e.to_string());
                            fresh(config, Some(d.table), false)?
                        }
                    }
                }
                Err(why) => {
                    incompatible(&why);
                    fresh(config, Some(d.table), false)?
                }
            }
        }
        _ => fresh(config, Some(d.table), false)?,
    };
    let mut start = start;
    if start.to_apply.is_some() {
        if let Some((tcp, fin, udp)) = timeouts {
            start
                .fp
                .set_timeouts(tcp, fin, udp)
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(start)
}

/// Forwards the BPF programs' log records (aya-log's ring) to tracing as they arrive.
async fn drain_bpf_log(node: Arc<Mutex<Node>>) {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let fd = {
        let mut n = node.lock().unwrap_or_else(|p| p.into_inner());
        match n.fast_path().bpf_logger() {
            Some(l) => unsafe { libc::dup(l.as_raw_fd()) },
            None => return,
        }
    };
    if fd < 0 {
        tracing::warn!("BPF log: cannot duplicate the ring's descriptor");
        return;
    }
    // SAFETY: the descriptor is our own duplicate, owned by the AsyncFd until it is dropped.
    let Ok(afd) = (unsafe { tokio::io::unix::AsyncFd::register(OwnedFd::from_raw_fd(fd)) }) else {
        tracing::warn!("BPF log: cannot poll the ring");
        return;
    };
    loop {
        let Ok(mut ready) = afd.readable().await else {
            return;
        };
        {
            let mut n = node.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(l) = n.fast_path().bpf_logger() {
                l.flush();
            }
        }
        ready.clear_ready();
    }
}

fn reload(cli: &Cli, node: &Mutex<Node>) {
    let Some(path) = &cli.rules else {
        tracing::warn!("SIGHUP: no --rules file to reload");
        return;
    };
    let parsed = read_rules(path);
    let mut node = node.lock().unwrap_or_else(|p| p.into_inner());
    match parsed.and_then(|t| node.reload(&t)) {
        Ok(n) => tracing::info!(changes = n, file = %path.display(), "rules reloaded"),
        Err(e) => tracing::error!(file = %path.display(), "reload refused, table unchanged: {e}"),
    }
}
