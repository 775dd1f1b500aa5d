//! Finding and trusting the broker. Zero configuration for the local case: the broker a
//! default `quiver serve` runs in this folder (QUIC on 127.0.0.1:9093, development
//! certificate in `./quiver-data/tls/cert.pem`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use quiver_client::{Client, ClientConfig};

/// Longest wait for the QUIC handshake before saying the broker is unreachable. UDP has
/// no connection refusal we can rely on, so silence is all a missing broker produces.
const CONNECT_TIMEOUT_DEFAULT_MS: u64 = 5_000;

#[derive(clap::Args, Debug, Clone)]
pub struct ConnectArgs {
    /// Broker QUIC address (host:port). Kafka tools call this --bootstrap-server.
    #[arg(
        long,
        visible_alias = "bootstrap-server",
        default_value = "127.0.0.1:9093",
        global = true
    )]
    pub bootstrap: String,
    /// PEM CA bundle to verify the broker with. Default: <data-dir>/tls/cert.pem when it exists.
    #[arg(long, global = true)]
    pub ca_file: Option<PathBuf>,
    /// Data directory of a local broker, where its development certificate lives.
    #[arg(long, default_value = "quiver-data", global = true)]
    pub data_dir: PathBuf,
    /// Do not verify the broker's certificate (still encrypted). Development only.
    #[arg(long, global = true)]
    pub insecure: bool,
    /// Name the broker's certificate must be valid for (default: the bootstrap host).
    #[arg(long, global = true)]
    pub server_name: Option<String>,
    /// How long to wait for the broker to answer the handshake.
    #[arg(long, default_value_t = CONNECT_TIMEOUT_DEFAULT_MS, global = true)]
    pub connect_timeout_ms: u64,
}

impl ConnectArgs {
    fn client_config(&self) -> anyhow::Result<ClientConfig> {
        let mut config = ClientConfig::new(self.bootstrap.clone());
        if let Some(name) = &self.server_name {
            config = config.server_name(name.clone());
        }
        if self.insecure {
            return Ok(config.insecure());
        }
        let ca_file = match &self.ca_file {
            Some(path) => {
                anyhow::ensure!(path.is_file(), "--ca-file {}: no such file", path.display());
                path.clone()
            }
            None => {
                let dev_cert = self.data_dir.join("tls").join("cert.pem");
                anyhow::ensure!(
                    dev_cert.is_file(),
                    "no certificate to verify the broker with: {} does not exist.\n  \
                     Run this from the folder where `quiver serve` runs, or pass \
                     --data-dir <broker data dir>, --ca-file <PEM CA bundle>, or (development \
                     only) --insecure.",
                    dev_cert.display()
                );
                dev_cert
            }
        };
        Ok(config.ca_file(ca_file))
    }

    pub async fn connect(&self) -> anyhow::Result<Client> {
        let config = self.client_config()?;
        let timeout = Duration::from_millis(self.connect_timeout_ms);
        let unreachable = || {
            format!(
                "no broker reachable at {} (QUIC). Is `quiver serve` running? Start one with \
                 `quiver serve`, or point at it with --bootstrap host:port",
                self.bootstrap
            )
        };
        match tokio::time::timeout(timeout, Client::connect(config)).await {
            Err(_) => Err(anyhow::anyhow!(
                "{} (no answer within {timeout:?})",
                unreachable()
            )),
            Ok(result) => result.with_context(unreachable),
        }
    }
}
