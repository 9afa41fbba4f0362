//! `switchboard bench`: the load generators behind `docs/benchmarks.md`. Each run starts its
//! own node as a child process (build with `--release`) on 127.0.0.1 with a fresh data
//! directory, so the server's CPU and memory are read apart from the generator's, which are
//! reported beside them. Every invocation prints each run, a summary table, and with
//! `--json FILE` writes all of it with the machine and the date.

pub mod arrivals;
pub mod cv;
pub mod dialer;
pub mod events;
pub mod fanout;
pub mod idle;
pub mod join;
pub mod lobby;
pub mod node;
pub mod pacer;
pub mod relay;
pub mod report;
pub mod scale;
pub mod snapshot;
pub mod wire;

use crate::cli::{BenchCommon, BenchKind};
use anyhow::{Context, Result, anyhow};
use node::BenchNode;
use relay::RelayOptions;
use report::{Report, Run};

/// Runs one benchmark command.
pub async fn run(which: BenchKind) -> Result<()> {
    if let BenchKind::ScaleClients { server, rooms, tag, sources, room_prefix, secret } = &which {
        let secret = secret.as_deref().unwrap_or(node::BENCH_SECRET);
        return scale::clients(*server, *rooms, tag, *sources, room_prefix, secret).await;
    }
    // Both ends of every connection are on this machine.
    let fds = node::raise_fd_limit(250_000);
    let mut report = Report::new();
    let common = match &which {
        BenchKind::Relay { common, .. }
        | BenchKind::Throughput { common, .. }
        | BenchKind::Fanout { common, .. }
        | BenchKind::Join { common, .. }
        | BenchKind::Lobby { common, .. }
        | BenchKind::Idle { common, .. }
        | BenchKind::Scale { common, .. }
        | BenchKind::Snapshot { common, .. }
        | BenchKind::Events { common, .. }
        | BenchKind::Suite { common, .. } => common.clone(),
        BenchKind::ScaleClients { .. } => unreachable!("handled above"),
    };
    match which {
        BenchKind::Relay { pairs, rate, seconds, ids, receipts, cross_node, common } => {
            for rate in rate {
                let opts = RelayOptions { pairs, rate, seconds, ids, receipts, sources: common.sources };
                report.runs.push(relay_run(&opts, cross_node, &common.serve).await?);
                report.runs.last().map(Run::print);
            }
        }
        BenchKind::Throughput { pairs, window, seconds, common } => {
            let node = BenchNode::start(&common.serve)?;
            report.runs.push(relay::closed_loop(&node, pairs, window, seconds, common.sources).await?);
        }
        BenchKind::Fanout { room_size, rate, seconds, common } => {
            let node = BenchNode::start(&common.serve)?;
            report.runs.push(fanout::fanout(&node, room_size, rate, seconds, common.sources).await?);
        }
        BenchKind::Join { rate, seconds, common } => {
            let node = BenchNode::start(&common.serve)?;
            report.runs.push(join::joins(&node, rate, seconds, common.sources, store_name(&common.serve)).await?);
        }
        BenchKind::Lobby { rate, seconds, common } => {
            let node = BenchNode::start(&common.serve)?;
            report.runs.push(lobby::pairing(&node, rate, seconds, common.sources, store_name(&common.serve)).await?);
        }
        BenchKind::Idle { connections, room_size, no_join, common } => {
            for n in connections {
                check_fds(n, fds)?;
                let node = BenchNode::start(&common.serve)?;
                report.runs.push(idle::idle(&node, n, room_size, no_join, common.sources).await?);
                report.runs.last().map(Run::print);
            }
        }
        BenchKind::Scale { nodes, rooms, common } => {
            report.runs.push(scale::scale(nodes, rooms, common.sources, &common.serve).await?);
        }
        BenchKind::ScaleClients { .. } => {}
        BenchKind::Snapshot { rate, seconds, width, height, common } => {
            let node = BenchNode::start(&common.serve)?;
            report.runs.push(snapshot::snapshots(&node, rate, seconds, width, height).await?);
        }
        BenchKind::Events { rate, seconds, mqtt_url, common } => {
            let mut flags = vec!["--mqtt-url".to_owned(), mqtt_url.clone()];
            flags.extend(common.serve.iter().cloned());
            let node = BenchNode::start(&flags)?;
            report.runs.push(events::events(&node, &mqtt_url, rate, seconds).await?);
        }
        BenchKind::Suite { seconds, big, common } => suite(&mut report, seconds, big, &common).await?,
    }
    for run in &report.runs {
        run.print();
    }
    report.print_table();
    if let Some(path) = &common.json {
        report.write(path)?;
    }
    Ok(())
}

/// Every figure `docs/benchmarks.md` holds against a target, one fresh node per run.
async fn suite(report: &mut Report, seconds: u64, big: bool, common: &BenchCommon) -> Result<()> {
    let postgres = common.serve.iter().any(|a| a.starts_with("postgres"));
    let relay = |rate, ids| RelayOptions { pairs: 100, rate, seconds, ids, receipts: false, sources: common.sources };
    for opts in [relay(5_000, false), relay(20_000, false), relay(50_000, false), relay(20_000, true)] {
        report.runs.push(relay_run(&opts, false, &common.serve).await?);
        report.runs.last().map(Run::print);
    }
    if postgres {
        report.runs.push(relay_run(&relay(20_000, false), true, &common.serve).await?);
        report.runs.last().map(Run::print);
    }
    let node = BenchNode::start(&common.serve)?;
    report.runs.push(relay::closed_loop(&node, 100, 4, seconds, common.sources).await?);
    drop(node);
    let node = BenchNode::start(&common.serve)?;
    report.runs.push(fanout::fanout(&node, 50, 500, seconds, common.sources).await?);
    drop(node);
    let node = BenchNode::start(&common.serve)?;
    report.runs.push(join::joins(&node, 500, seconds, common.sources, store_name(&common.serve)).await?);
    drop(node);
    for n in if big { vec![10_000, 50_000] } else { vec![10_000] } {
        if let Err(e) = check_fds(n, node::raise_fd_limit(250_000)) {
            eprintln!("idle at {n} skipped: {e}");
            continue;
        }
        let node = BenchNode::start(&common.serve)?;
        report.runs.push(idle::idle(&node, n, 2, false, common.sources).await?);
        report.runs.last().map(Run::print);
    }
    Ok(())
}

async fn relay_run(opts: &RelayOptions, cross_node: bool, serve: &[String]) -> Result<Run> {
    if !cross_node {
        let node = BenchNode::start(serve)?;
        return relay::open_loop(&node, None, opts).await;
    }
    if !serve.iter().any(|a| a.starts_with("postgres")) {
        return Err(anyhow!("a cross-node run needs PostgreSQL: add -- --database-url postgres://..."));
    }
    let mut args = serve.to_vec();
    args.extend(["--node-id", "b1", "--cluster-addr", "127.0.0.1:0"].map(String::from));
    let first = BenchNode::start(&args)?;
    let seed = first.cluster_addr.clone().context("the first node has no cluster address")?;
    let mut args = serve.to_vec();
    args.extend(["--node-id", "b2", "--cluster-addr", "127.0.0.1:0", "--seeds", &seed].map(String::from));
    let second = BenchNode::start(&args)?;
    relay::open_loop(&first, Some(&second), opts).await
}

/// Refuses a run whose connections cannot all be open at once: the node and the generator
/// each hold one descriptor per connection.
fn check_fds(connections: usize, limit: u64) -> Result<()> {
    let needed = connections as u64 + 1_000;
    if limit < needed {
        return Err(anyhow!(
            "{connections} connections need an open-file limit of at least {needed} (it is {limit}; raise the hard limit, e.g. `prlimit --nofile={needed}:{needed}` as root)"
        ));
    }
    Ok(())
}

fn store_name(serve: &[String]) -> &'static str {
    if serve.iter().any(|a| a.starts_with("postgres")) { "PostgreSQL" } else { "SQLite" }
}
