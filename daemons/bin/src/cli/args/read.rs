//! Arguments of the reading side: `query` and `admin …` (the CortexAdmin API).

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

/// `query`: an instant query, or a range query when --start is given.
#[derive(Debug, Args)]
#[command(after_long_help = "\
Times are RFC 3339 (2024-05-01T12:00:00Z, 2024-05-01T14:00:00+02:00), unix seconds \
(1714564800, 1714564800.5), `now`, or relative to now: -1h, -30m, now-2h30m.

Examples:
  opni-metrics query 'up'
  opni-metrics query 'sum by (job) (rate(http_requests_total[5m]))' --cluster prod-eu
  opni-metrics query 'up' --start -6h --step 5m -o json")]
pub struct QueryArgs {
    /// The PromQL expression.
    pub query: String,
    /// A cluster (tenant) to query; repeat for several. Omitted: every cluster the caller may
    /// read (for an admin, every registered cluster).
    #[arg(long = "cluster")]
    pub clusters: Vec<String>,
    /// Evaluation time of an instant query (default now).
    #[arg(long, allow_hyphen_values = true, conflicts_with_all = ["start", "end", "step"])]
    pub time: Option<String>,
    /// Start of a range query; makes the query a range query.
    #[arg(long, allow_hyphen_values = true)]
    pub start: Option<String>,
    /// End of a range query (default now).
    #[arg(long, allow_hyphen_values = true, requires = "start")]
    pub end: Option<String>,
    /// Resolution of a range query, e.g. 15s, 1m (default: the range divided by 250, rounded
    /// up to whole seconds, at least 1s — about 250 points per series).
    #[arg(long, requires = "start")]
    pub step: Option<String>,
    /// With a range query and `-o table`, one row per point instead of one per series.
    #[arg(long, requires = "start")]
    pub points: bool,
}

/// `admin …`: the CortexAdmin API. Readers see only the clusters their bindings grant;
/// `status`, `config` and `flush` need an admin.
#[derive(Debug, Subcommand)]
pub enum AdminCmd {
    /// Ingestion statistics per cluster (tenant): sample rates and active series.
    Stats,
    /// Readiness of every Cortex component and the state of its ring (admins only).
    Status,
    /// Flush the ingesters' in-memory blocks to long-term storage (admins only).
    Flush,
    /// The metric names of a job in one cluster, with their type and help.
    Series {
        /// The cluster (tenant).
        #[arg(long)]
        cluster: String,
        /// The value of the `job` label.
        #[arg(long)]
        job: String,
    },
    /// The label names of a metric in one cluster, with every value each takes.
    Labels {
        /// The cluster (tenant).
        #[arg(long)]
        cluster: String,
        /// The metric name.
        #[arg(long)]
        metric: String,
        /// Only series of this job.
        #[arg(long)]
        job: Option<String>,
    },
    /// The metadata of a metric: type, unit, help.
    Metadata {
        /// The metric name.
        #[arg(long)]
        metric: String,
        /// A cluster to look in; repeat for several (default: every readable cluster).
        #[arg(long = "cluster")]
        clusters: Vec<String>,
    },
    /// Recording and alerting rules in the ruler.
    #[command(subcommand)]
    Rules(RulesCmd),
    /// The running Cortex configuration as YAML (admins only).
    Config {
        /// Which view: the full configuration, only values differing from the defaults, or
        /// the defaults.
        #[arg(long, value_enum, default_value = "values")]
        mode: ConfigMode,
    },
    /// The series of one cluster that match a selector, with all their labels.
    RawSeries {
        /// The cluster (tenant).
        #[arg(long)]
        cluster: String,
        /// A series selector, e.g. 'up{job="node"}'.
        selector: String,
    },
}

/// Views of the Cortex configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConfigMode {
    /// The full running configuration.
    Values,
    /// Only what differs from the defaults.
    Diff,
    /// The defaults.
    Defaults,
}

/// Rule types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RuleType {
    /// Alerting rules.
    Alert,
    /// Recording rules.
    Record,
}

/// `admin rules …`.
#[derive(Debug, Subcommand)]
pub enum RulesCmd {
    /// Rule groups, filtered; one row per group.
    List {
        /// A cluster to list; repeat for several (default: every readable cluster).
        #[arg(long = "cluster")]
        clusters: Vec<String>,
        /// Only groups with rules of this type.
        #[arg(long = "type", value_enum)]
        rule_type: Option<RuleType>,
        /// Regular expression the whole group name must match.
        #[arg(long)]
        group_regexp: Option<String>,
        /// Regular expression the whole namespace must match.
        #[arg(long)]
        namespace_regexp: Option<String>,
        /// Regular expression over rule names; groups keep only matching rules.
        #[arg(long)]
        rule_regexp: Option<String>,
    },
    /// One rule group as YAML.
    Get {
        /// The cluster (tenant).
        #[arg(long)]
        cluster: String,
        /// The ruler namespace.
        #[arg(long)]
        namespace: String,
        /// The group name.
        #[arg(long)]
        group: String,
    },
    /// Create or replace a rule group from a YAML file holding one group (`name:` and
    /// `rules:`, not a file with `groups:`).
    Load {
        /// The cluster (tenant).
        #[arg(long)]
        cluster: String,
        /// The ruler namespace (not `opni-synced`, which holds the rules agents sync).
        #[arg(long)]
        namespace: String,
        /// The rule group file.
        #[arg(long, short = 'f')]
        file: PathBuf,
    },
    /// Delete a rule group.
    Delete {
        /// The cluster (tenant).
        #[arg(long)]
        cluster: String,
        /// The ruler namespace.
        #[arg(long)]
        namespace: String,
        /// The group name.
        #[arg(long)]
        group: String,
    },
}
