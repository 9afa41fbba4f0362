//! The `switchboard` binary.

use clap::Parser;
use switchboard::cli::{Cli, Command, mint_offline, token_request};
use switchboard::{bench, server, telemetry};

fn main() -> anyhow::Result<()> {
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(n) = std::env::var("SWITCHBOARD_WORKER_THREADS").ok().and_then(|v| v.parse::<usize>().ok()) {
        runtime.worker_threads(n.max(1));
    }
    runtime.build()?.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init_logs();
    match cli.command {
        Command::Serve(common) => {
            let config = common.load()?;
            let listener = tokio::net::TcpListener::bind(config.http.addr)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.http.addr))?;
            let running = server::start(config, listener).await?;
            server::termination_signal().await;
            running.shutdown().await?;
        }
        Command::Migrate(common) => {
            let config = common.load()?;
            server::migrate(&config).await?.close().await;
            println!("migrations applied to {}", redact(&config.database_url()));
        }
        Command::Bench { which } => bench::run(which).await?,
        Command::CvWorker { mqtt_url, cluster, name } => {
            let name = name.unwrap_or_else(|| format!("cv-{}", std::process::id()));
            let bus = switchboard::bus::Bus::connect(&mqtt_url, &name).map_err(|e| anyhow::anyhow!("{e}"))?;
            let (stop, stopped) = tokio::sync::watch::channel(false);
            tracing::info!(%mqtt_url, cluster = %cluster, worker = %name, "CV worker taking jobs");
            let worker = tokio::spawn(switchboard::cv_worker::run(bus.clone(), cluster, name, stopped));
            server::termination_signal().await;
            let _ = stop.send(true);
            let _ = worker.await;
            bus.shutdown().await;
        }
        Command::VerifyReport { target, key_set, token } => {
            switchboard::verify_report::run(switchboard::verify_report::VerifyOptions { target, key_set, token })
                .await?;
        }
        Command::CvCompare { snapshot, baseline, synthetic, heatmap, repeat } => {
            let options = bench::cv::CompareOptions { snapshot, baseline, synthetic, heatmap, repeat };
            tokio::task::block_in_place(|| bench::cv::run(options))?;
        }
        Command::DevCert { out, force } => {
            let written = switchboard::tls::dev_cert::write(&out, force)?;
            let (cert, key) = (written.cert.display(), written.key.display());
            println!("wrote a self-signed certificate for localhost, 127.0.0.1 and ::1, valid for a year:");
            println!("  certificate  {cert}");
            println!("  private key  {key}");
            println!("serve HTTPS and WSS with it:");
            println!("  switchboard serve --tls-cert {cert} --tls-key {key}");
            println!("then use https://localhost:8080 and wss://localhost:8080/ws/signal. Nothing trusts it yet:");
            println!("accept the browser's warning once, or add {cert} to a client's trusted roots.");
            println!("It is for this machine only; a public address needs a certificate from a real authority.");
        }
        Command::ClusterCerts { out, nodes, force } => {
            for n in &nodes {
                switchboard_cluster::NodeId::parse(n).map_err(|e| anyhow::anyhow!("--nodes {n:?}: {e}"))?;
            }
            switchboard::tls::cluster::write_cluster_certs(&out, &nodes, force)?;
            let d = out.display();
            println!("wrote a cluster CA and a certificate per node into {d}, valid for two years:");
            println!("  {d}/ca.pem (give it to every node), {d}/ca-key.pem (keep it offline: it issues members)");
            for n in &nodes {
                println!(
                    "  {n}: --cluster-tls-cert {d}/{n}.pem --cluster-tls-key {d}/{n}-key.pem --cluster-ca {d}/ca.pem"
                );
            }
        }
        Command::Token { common, user, room, name, ttl, admin } => {
            let config = common.load()?;
            println!("{}", mint_offline(&config, token_request(user, room, name, ttl, admin))?);
        }
    }
    Ok(())
}

/// A database URL without its password, for printing.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://***@{}", &url[..scheme], &url[at + 1..]),
        _ => url.to_owned(),
    }
}
