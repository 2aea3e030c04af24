//! The command line's arguments: every subcommand and flag, with the help texts `--help` shows.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

mod access;
mod read;

pub use access::{Bindings, KeysCmd, RbacCmd, Roles};
pub use read::{AdminCmd, ConfigMode, QueryArgs, RuleType, RulesCmd};

/// Manage an opni-metrics gateway: bootstrap tokens, clusters, the metrics capability, node
/// configuration, access control (roles, bindings, API keys), and read the stored metrics.
///
/// Talks to the gateway's management listener. Admins authenticate with the admin token (read
/// from --token-file, accepted from loopback only) or, with --tls-ca, a client certificate
/// (--tls-cert/--tls-key). Readers send an API key (--api-key) and may use `query` and the
/// reading `admin` commands for the clusters their role bindings grant.
#[derive(Debug, Parser)]
#[command(name = "opni-metrics", version, about, long_about)]
pub struct Cli {
    /// Management listener of the gateway, host:port.
    #[arg(
        long,
        global = true,
        help_heading = "Connection",
        env = "OPNI_METRICS_ADDRESS",
        default_value = "127.0.0.1:9091"
    )]
    pub address: String,
    /// File with the admin token (the gateway writes `<dataDir>/admin.token`). Not needed
    /// with --api-key, and optional with a client certificate.
    #[arg(
        long,
        global = true,
        help_heading = "Connection",
        env = "OPNI_METRICS_TOKEN_FILE",
        default_value = "data/gateway/admin.token"
    )]
    pub token_file: PathBuf,
    /// An API key (omk_…, from `keys create`), sent instead of the admin token: the caller is
    /// then a reader, limited to the clusters its role bindings grant. Prefer --api-key-file
    /// or the environment variable: arguments are visible to other local users.
    #[arg(
        long,
        global = true,
        help_heading = "Connection",
        env = "OPNI_METRICS_API_KEY",
        hide_env_values = true,
        conflicts_with = "api_key_file"
    )]
    pub api_key: Option<String>,
    /// File holding an API key, as for --api-key.
    #[arg(long, global = true, help_heading = "Connection", env = "OPNI_METRICS_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,
    /// CA certificate (PEM) of a management listener that serves TLS; connects with https.
    #[arg(long, global = true, help_heading = "Connection", env = "OPNI_METRICS_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Admin client certificate (PEM) presented to a TLS management listener; with it the
    /// admin token is optional.
    #[arg(long, global = true, help_heading = "Connection", env = "OPNI_METRICS_TLS_CERT", requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, global = true, help_heading = "Connection", env = "OPNI_METRICS_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Name to verify the listener's certificate against (default: the host of --address).
    #[arg(long, global = true, help_heading = "Connection", env = "OPNI_METRICS_TLS_SERVER_NAME", requires = "tls_ca")]
    pub tls_server_name: Option<String>,
    /// Output format.
    #[arg(long, short = 'o', global = true, value_enum, default_value = "table")]
    pub output: Output,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// JSON for programs.
    Json,
    /// YAML for programs and people.
    Yaml,
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Bootstrap tokens agents join with.
    #[command(subcommand)]
    Tokens(Tokens),
    /// Registered clusters.
    #[command(subcommand)]
    Clusters(Clusters),
    /// The metrics capability of a cluster.
    #[command(subcommand)]
    Capability(CapabilityCmd),
    /// Node configuration (the default, or one cluster's override).
    #[command(subcommand, name = "node-config")]
    NodeConfig(NodeConfig),
    /// The upstream Cortex: its configuration, install, uninstall and status.
    #[command(subcommand)]
    Cortex(CortexCmd),
    /// Run a PromQL query over the clusters the caller may read.
    Query(QueryArgs),
    /// Inspect and operate the upstream Cortex: statistics, status, rules, configuration.
    #[command(subcommand)]
    Admin(AdminCmd),
    /// Rule groups the ruler holds per cluster: those synced from the cluster's agent (namespace
    /// opni-synced, read-only here) and those users loaded (same as `admin rules`).
    #[command(subcommand)]
    Rules(RulesCmd),
    /// Access control: roles (which clusters), role bindings (who) and what a subject may read.
    #[command(subcommand)]
    Rbac(RbacCmd),
    /// API keys for readers (Grafana, scripts); use them with --api-key or as a bearer token.
    #[command(subcommand)]
    Keys(KeysCmd),
}

/// Cortex commands.
#[derive(Debug, Subcommand)]
pub enum CortexCmd {
    /// The Cortex configuration (the active one, or the default with --default).
    #[command(subcommand)]
    Config(CortexConfigCmd),
    /// Install Cortex with the active configuration and wait until it runs.
    Install {
        /// Return once the request is accepted.
        #[arg(long)]
        no_wait: bool,
        /// Longest wait, e.g. 10m.
        #[arg(long, default_value = "10m")]
        timeout: String,
    },
    /// Uninstall Cortex (refused while any cluster has the metrics capability) and wait until
    /// it is gone.
    Uninstall {
        /// Return once the request is accepted.
        #[arg(long)]
        no_wait: bool,
        /// Longest wait, e.g. 10m.
        #[arg(long, default_value = "10m")]
        timeout: String,
    },
    /// Install state, application state and every workload's readiness.
    Status,
}

/// Cortex configuration commands.
#[derive(Debug, Subcommand)]
pub enum CortexConfigCmd {
    /// Show the configuration (secrets redacted).
    Get {
        /// The default configuration instead of the active one.
        #[arg(long)]
        default: bool,
        /// An earlier revision.
        #[arg(long)]
        revision: Option<u64>,
    },
    /// Set the configuration from a YAML or JSON file, or from a preset.
    Set {
        /// The default configuration instead of the active one.
        #[arg(long)]
        default: bool,
        /// The configuration file (as `get -o yaml` prints it; redacted secrets are kept).
        #[arg(long, short = 'f', conflicts_with = "preset", required_unless_present = "preset")]
        file: Option<PathBuf>,
        /// A preset's id (see `presets`).
        #[arg(long)]
        preset: Option<String>,
        /// Only write if the configuration is still at this revision.
        #[arg(long)]
        revision: Option<u64>,
    },
    /// Reset the active configuration to the default (or the default to the built-in one).
    Reset {
        /// The default configuration instead of the active one.
        #[arg(long)]
        default: bool,
        /// Only reset if the configuration is still at this revision.
        #[arg(long)]
        revision: Option<u64>,
    },
    /// Every revision of the configuration, oldest first.
    History {
        /// The default configuration instead of the active one.
        #[arg(long)]
        default: bool,
        /// Include each revision's configuration.
        #[arg(long)]
        values: bool,
    },
    /// Show what a set or reset would store and every validation error and warning; stores
    /// nothing.
    DryRun {
        /// The default configuration instead of the active one.
        #[arg(long)]
        default: bool,
        /// The configuration file of a set.
        #[arg(long, short = 'f', conflicts_with_all = ["preset", "reset"])]
        file: Option<PathBuf>,
        /// A preset's id, for a set.
        #[arg(long, conflicts_with = "reset")]
        preset: Option<String>,
        /// Simulate a reset instead of a set.
        #[arg(long)]
        reset: bool,
        /// The revision the change is based on.
        #[arg(long)]
        revision: Option<u64>,
    },
    /// The presets: named starting points.
    Presets,
}

/// Token commands.
#[derive(Debug, Subcommand)]
pub enum Tokens {
    /// Create a token; prints it once.
    Create {
        /// Lifetime, e.g. 1h, 30m, 7d.
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// How many joins it allows (0: unlimited until it expires).
        #[arg(long, default_value_t = 1)]
        max_uses: u32,
        /// Labels given to clusters that join with it, as key=value.
        #[arg(long = "label")]
        labels: Vec<String>,
    },
    /// List tokens (without secrets).
    List,
    /// Revoke a token.
    Revoke {
        /// Token id.
        id: String,
    },
}

/// Cluster commands.
#[derive(Debug, Subcommand)]
pub enum Clusters {
    /// List clusters, optionally those with all the given labels.
    List {
        /// key=value labels to match.
        #[arg(long = "label")]
        labels: Vec<String>,
    },
    /// Show one cluster.
    Get {
        /// Cluster id.
        id: String,
    },
    /// Register a cluster whose agent uses certificate files issued with the gateway's CA
    /// (agents that join with a token are registered by joining).
    Create {
        /// Cluster id (also its tenant).
        id: String,
        /// key=value labels.
        #[arg(long = "label")]
        labels: Vec<String>,
    },
    /// Replace a cluster's labels.
    Label {
        /// Cluster id.
        id: String,
        /// key=value labels.
        labels: Vec<String>,
    },
    /// Delete a cluster (refused while it has a capability).
    Delete {
        /// Cluster id.
        id: String,
    },
}

/// Capability commands.
#[derive(Debug, Subcommand)]
pub enum CapabilityCmd {
    /// Install the metrics capability on a cluster.
    Install {
        /// Cluster id.
        cluster: String,
        /// Install even if the agent is offline or the backend is not installed.
        #[arg(long)]
        ignore_warnings: bool,
    },
    /// Show the capability's status on a cluster.
    Status {
        /// Cluster id.
        cluster: String,
    },
    /// Uninstall the capability; shows progress until the task ends.
    Uninstall {
        /// Cluster id.
        cluster: String,
        /// Also delete the cluster's stored metrics upstream.
        #[arg(long)]
        delete_data: bool,
        /// Wait this long after disabling the node, e.g. 30s.
        #[arg(long, default_value = "0s")]
        initial_delay: String,
        /// Return at once instead of following the task.
        #[arg(long)]
        no_wait: bool,
    },
    /// Cancel a running uninstall.
    CancelUninstall {
        /// Cluster id.
        cluster: String,
    },
}

/// Node configuration commands.
#[derive(Debug, Subcommand)]
pub enum NodeConfig {
    /// Show the default spec, or a cluster's effective spec.
    Get {
        /// Cluster id (omit for the default).
        cluster: Option<String>,
    },
    /// Set the default spec, or a cluster's override, from a YAML or JSON file.
    Set {
        /// Cluster id (omit for the default).
        cluster: Option<String>,
        /// The spec file.
        #[arg(long, short = 'f')]
        file: PathBuf,
        /// Only write if the config is still at this revision.
        #[arg(long)]
        revision: Option<u64>,
        /// Validate and show the result without writing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Reset the default spec to built-in, or drop a cluster's override.
    Reset {
        /// Cluster id (omit for the default).
        cluster: Option<String>,
    },
}
